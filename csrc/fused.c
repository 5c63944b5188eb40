/*
 * Fused elementwise "finish" kernels for the online phase of 2PC protocols
 * (Beaver multiplication, AND gates, probabilistic truncation).
 *
 * Each kernel is one pass over memory: it reads every operand once and writes
 * out once, instead of the 4-8 temporaries a numpy expression would make.
 * The loops are plain C for gcc's auto-vectoriser (-O3 -march=native gives
 * 8-lane AVX-512 loops, vpmullq for the 64-bit products); unsigned arithmetic
 * wraps modulo 2^64 by definition of C.
 *
 * Branching on 'first' is hoisted out of the loops (one loop per value), so
 * every loop body is straight-line code.
 *
 * Aliasing: out may alias any input exactly.  Element i of out depends only
 * on element i of the inputs, so there is no loop-carried dependence even
 * when out == an input; '#pragma GCC ivdep' tells gcc so, which spares it the
 * runtime overlap checks (10 pointer pairs here) and the scalar fallback it
 * would otherwise take for the exact-alias case.  Partial overlaps are not
 * allowed (the Python wrappers reject them).
 */
#include "kernels.h"

#if defined(__GNUC__) && !defined(__clang__)
#define MIXC_IVDEP _Pragma("GCC ivdep")
#elif defined(__clang__)
#define MIXC_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define MIXC_IVDEP
#endif

/* z = c + e*b + f*a (+ e*f if first); e*b + e*f is computed as e*(b + f). */
void mixc_beaver_finish(const uint64_t *c, const uint64_t *e, const uint64_t *f,
                        const uint64_t *a, const uint64_t *b, uint64_t *out,
                        size_t n, int first)
{
    if (first) {
        MIXC_IVDEP
        for (size_t i = 0; i < n; i++) {
            const uint64_t ei = e[i], fi = f[i];
            out[i] = c[i] + ei * (b[i] + fi) + fi * a[i];
        }
    } else {
        MIXC_IVDEP
        for (size_t i = 0; i < n; i++)
            out[i] = c[i] + e[i] * b[i] + f[i] * a[i];
    }
}

/* z = c ^ (e & b) ^ (f & a) (^ (e & f) if first); (e&b) ^ (e&f) = e & (b ^ f). */
void mixc_and_finish(const uint64_t *c, const uint64_t *e, const uint64_t *f,
                     const uint64_t *a, const uint64_t *b, uint64_t *out,
                     size_t n, int first)
{
    if (first) {
        MIXC_IVDEP
        for (size_t i = 0; i < n; i++) {
            const uint64_t ei = e[i], fi = f[i];
            out[i] = c[i] ^ (ei & (b[i] ^ fi)) ^ (fi & a[i]);
        }
    } else {
        MIXC_IVDEP
        for (size_t i = 0; i < n; i++)
            out[i] = c[i] ^ (e[i] & b[i]) ^ (f[i] & a[i]);
    }
}

/*
 * c_low = (c << 1) >> (bits + 1), c_msb = c >> 63,
 * t = msb - 2*c_msb*msb (+ c_msb if first),
 * y = (t << (63 - bits)) - low (+ c_low - 2^(62 - bits) if first).
 *
 * c_msb is 0 or 1, so msb - 2*c_msb*msb = c_msb ? -msb : msb
 * = (msb ^ m) - m with m = -c_msb (all ones or zero): no multiply.
 * Requires 1 <= bits <= 62 (checked by the Python side), so every shift
 * count is in [1, 63].
 */
void mixc_truncpr_finish(const uint64_t *c, const uint64_t *msb, const uint64_t *low,
                         uint64_t *out, size_t n, unsigned bits, int first)
{
    const unsigned up = 63u - bits, down = bits + 1u;
    if (first) {
        const uint64_t half = (uint64_t)1 << (62u - bits);
        MIXC_IVDEP
        for (size_t i = 0; i < n; i++) {
            const uint64_t ci = c[i];
            const uint64_t cm = ci >> 63;
            const uint64_t m = (uint64_t)0 - cm;
            const uint64_t t = ((msb[i] ^ m) - m) + cm;
            out[i] = (t << up) - low[i] + (((ci << 1) >> down) - half);
        }
    } else {
        MIXC_IVDEP
        for (size_t i = 0; i < n; i++) {
            const uint64_t m = (uint64_t)0 - (c[i] >> 63);
            const uint64_t t = (msb[i] ^ m) - m;
            out[i] = (t << up) - low[i];
        }
    }
}
