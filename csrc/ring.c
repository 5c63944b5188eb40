/*
 * Elementwise ring ops over Z_2^64, fixed-point encode/decode and shifts.
 * Plain loops written for gcc's auto-vectoriser (-O3 -march=native):
 * unsigned arithmetic wraps modulo 2^64 by definition of C.
 * out may alias an input exactly (gcc adds a runtime alias check).
 */
#include <math.h>
#include "kernels.h"

void mixc_ring_add(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void mixc_ring_sub(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] - b[i];
}

void mixc_ring_neg(const uint64_t *a, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint64_t)0 - a[i];
}

void mixc_ring_mul(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] * b[i];
}

void mixc_ring_add_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + s;
}

void mixc_ring_mul_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] * s;
}

size_t mixc_encode_fixed(const double *x, uint64_t *out, size_t n, unsigned frac_bits)
{
    /* 2^frac_bits exactly (frac_bits <= 62 is checked by the Python side;
     * ldexp keeps it exact for any value). */
    const double scale = ldexp(1.0, (int)frac_bits);
    const double lim = 9223372036854775808.0; /* 2^63 */
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = nearbyint(x[i] * scale); /* round half to even */
        /* NaN fails both comparisons -> counted as bad. */
        int ok = (v >= -lim) & (v < lim);
        bad += (size_t)!ok;
        double c = ok ? v : 0.0; /* never convert an out-of-range value */
        out[i] = (uint64_t)(int64_t)c;
    }
    return bad;
}

void mixc_decode_fixed(const uint64_t *u, double *out, size_t n, unsigned frac_bits)
{
    const double inv = ldexp(1.0, -(int)frac_bits);
    for (size_t i = 0; i < n; i++)
        out[i] = (double)(int64_t)u[i] * inv;
}

void mixc_arshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits)
{
    /* right shift of a negative signed value is implementation-defined in
     * C; gcc defines it as arithmetic (sign-extending), which we rely on. */
    for (size_t i = 0; i < n; i++)
        out[i] = (uint64_t)((int64_t)a[i] >> bits);
}

void mixc_lrshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] >> bits;
}
