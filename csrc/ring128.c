/*
 * Ring ops over Z_2^128 (the ``ring: 128`` MPC devices).
 *
 * Layout: element i of an array of n ring elements is the two uint64 words
 * [2i] (bits 0..63) and [2i+1] (bits 64..127) -- the memory of a little-endian
 * unsigned __int128, and of numpy's structured dtype [("lo", "<u8"), ("hi", "<u8")]
 * that the Python side uses.  Sizes count ring elements, not words.
 * unsigned __int128 arithmetic wraps modulo 2^128 by definition of C.
 * out may alias an input exactly (elementwise kernels), as in ring.c.
 */
#include <math.h>
#include <string.h>
#include "kernels.h"

typedef unsigned __int128 u128;
typedef __int128 i128;

static inline u128 ld(const uint64_t *p, size_t i)
{
    return (u128)p[2 * i] | ((u128)p[2 * i + 1] << 64);
}

static inline void st(uint64_t *p, size_t i, u128 v)
{
    p[2 * i] = (uint64_t)v;
    p[2 * i + 1] = (uint64_t)(v >> 64);
}

void mixc_r128_add(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st(out, i, ld(a, i) + ld(b, i));
}

void mixc_r128_sub(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st(out, i, ld(a, i) - ld(b, i));
}

void mixc_r128_mul(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st(out, i, ld(a, i) * ld(b, i));
}

void mixc_r128_neg(const uint64_t *a, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st(out, i, (u128)0 - ld(a, i));
}

void mixc_r128_shl(const uint64_t *a, uint64_t *out, size_t n, unsigned bits)
{
    for (size_t i = 0; i < n; i++)
        st(out, i, ld(a, i) << bits);
}

void mixc_r128_lrshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits)
{
    for (size_t i = 0; i < n; i++)
        st(out, i, ld(a, i) >> bits);
}

void mixc_r128_arshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits)
{
    /* gcc defines >> of a negative signed value as arithmetic, as ring.c relies on */
    for (size_t i = 0; i < n; i++)
        st(out, i, (u128)((i128)ld(a, i) >> bits));
}

void mixc_r128_rowsum(const uint64_t *a, uint64_t *out, size_t m, size_t k)
{
    for (size_t r = 0; r < m; r++) {
        u128 acc = 0;
        for (size_t j = 0; j < k; j++)
            acc += ld(a, r * k + j);
        st(out, r, acc);
    }
}

size_t mixc_r128_encode(const double *x, uint64_t *out, size_t n, unsigned frac_bits)
{
    const double scale = ldexp(1.0, (int)frac_bits);
    const double lim = ldexp(1.0, 127);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = nearbyint(x[i] * scale); /* round half to even */
        int ok = (v >= -lim) & (v < lim);   /* NaN fails both */
        bad += (size_t)!ok;
        st(out, i, (u128)(i128)(ok ? v : 0.0));
    }
    return bad;
}

void mixc_r128_decode(const uint64_t *u, double *out, size_t n, unsigned frac_bits)
{
    const double inv = ldexp(1.0, -(int)frac_bits);
    for (size_t i = 0; i < n; i++)
        out[i] = (double)(i128)ld(u, i) * inv;
}

void mixc_r128_beaver_finish(const uint64_t *c, const uint64_t *e, const uint64_t *f,
                             const uint64_t *a, const uint64_t *b, uint64_t *out,
                             size_t n, int first)
{
    for (size_t i = 0; i < n; i++) {
        u128 ei = ld(e, i), fi = ld(f, i);
        u128 z = ld(c, i) + ei * ld(b, i) + fi * ld(a, i);
        st(out, i, first ? z + ei * fi : z);
    }
}

void mixc_r128_truncpr_finish(const uint64_t *c, const uint64_t *msb, const uint64_t *low,
                              uint64_t *out, size_t n, unsigned bits, int first)
{
    const u128 offset = (u128)1 << (126 - bits);
    for (size_t i = 0; i < n; i++) {
        u128 ci = ld(c, i), mi = ld(msb, i);
        u128 c_msb = ci >> 127;
        u128 t = mi - 2 * c_msb * mi + (first ? c_msb : 0);
        u128 y = (t << (127 - bits)) - ld(low, i);
        if (first)
            y += ((ci << 1) >> (bits + 1)) - offset;
        st(out, i, y);
    }
}

/* C (+)= A . B^T with the full 128-bit products of uint64 words: the low words'
 * part of a Z_2^128 matrix product (the cross terms are 64-bit GEMMs, see
 * runtime/kernels.py r128_matmul).  2x2 register tiles over contiguous rows of
 * A and BT (four 64x64->128 multiplies per k, each one mulx), K in blocks of
 * R128_KB so that the block of BT a row pair sweeps stays in cache. */
#define R128_KB 128

static void matmul_low_block(const uint64_t *A, size_t lda, const uint64_t *BT, size_t ldb,
                             uint64_t *C, size_t M, size_t K, size_t N, int accumulate)
{
    for (size_t i = 0; i < M; i += 2) {
        const uint64_t *a0 = A + i * lda;
        const uint64_t *a1 = (i + 1 < M) ? a0 + lda : a0;
        for (size_t j = 0; j < N; j += 2) {
            const uint64_t *b0 = BT + j * ldb;
            const uint64_t *b1 = (j + 1 < N) ? b0 + ldb : b0;
            u128 s00 = 0, s01 = 0, s10 = 0, s11 = 0;
            for (size_t k = 0; k < K; k++) {
                u128 x0 = a0[k], x1 = a1[k], y0 = b0[k], y1 = b1[k];
                s00 += x0 * y0;
                s01 += x0 * y1;
                s10 += x1 * y0;
                s11 += x1 * y1;
            }
            u128 s[2][2] = {{s00, s01}, {s10, s11}};
            for (size_t di = 0; di < 2 && i + di < M; di++)
                for (size_t dj = 0; dj < 2 && j + dj < N; dj++) {
                    size_t at = (i + di) * N + j + dj;
                    st(C, at, accumulate ? ld(C, at) + s[di][dj] : s[di][dj]);
                }
        }
    }
}

void mixc_r128_matmul_low(const uint64_t *A, size_t lda, const uint64_t *BT, size_t ldb,
                          uint64_t *C, size_t M, size_t K, size_t N, int accumulate)
{
    if (K == 0 && !accumulate)
        memset(C, 0, M * N * 2 * sizeof(uint64_t));
    for (size_t k0 = 0; k0 < K; k0 += R128_KB) {
        size_t kb = K - k0 < R128_KB ? K - k0 : R128_KB;
        matmul_low_block(A + k0, lda, BT + k0, ldb, C, M, kb, N, accumulate || k0 > 0);
    }
}

/* ---- the Z_2^128 GEMM: C (+)= A . B over full u128 elements ----
 *
 * With AVX-512 IFMA (vpmadd52luq/huq: the low and high 52 bits of a 52x52-bit
 * product, added to 64-bit lanes) an element is three limbs of 52, 52 and 24
 * bits, a = a0 + a1 2^52 + a2 2^104. Mod 2^128 the product keeps a0b0 (low
 * and high halves), a0b1 + a1b0 (both halves) and the low halves of a0b2 +
 * a1b1 + a2b0: 9 IFMA per 8 products, summed in three lane accumulators of
 * weight 1, 2^52 and 2^104. The weight-1 and 2^52 sums must not wrap: at
 * most 3 terms below 2^52 per k, so a K block of R128_IFMA_KB <= 1365. The
 * 2^104 sum is only needed mod 2^24, so it may wrap. A and B are packed into
 * limb planes (B's columns padded to 16) in the caller's workspace; 2 rows x
 * 16 columns of C per micro-kernel (12 accumulators, 24 of 32 zmm).
 * Without IFMA: the scalar kernel above for the low words, and 64-bit
 * products for the cross terms. */
#define R128_IFMA_KB 256
#define R128_IFMA_NB 128
#define M52 ((1ULL << 52) - 1)

size_t mixc_r128_matmul_ws_words(size_t M, size_t K, size_t N)
{
    size_t npad = (N + 15) / 16 * 16;
    return 3 * M * K + 3 * K * npad;
}

static void limbs(const uint64_t *x, size_t i, uint64_t *l0, uint64_t *l1, uint64_t *l2)
{
    uint64_t lo = x[2 * i], hi = x[2 * i + 1];
    *l0 = lo & M52;
    *l1 = ((lo >> 52) | (hi << 12)) & M52;
    *l2 = hi >> 40;
}

#if defined(__AVX512IFMA__) && defined(__AVX512F__)
#include <immintrin.h>

static void store_tile(const __m512i acc[3], uint64_t *C, size_t row, size_t col,
                       size_t N, size_t width, int accumulate)
{
    uint64_t w0[8], w52[8], w104[8];
    _mm512_storeu_si512(w0, acc[0]);
    _mm512_storeu_si512(w52, acc[1]);
    _mm512_storeu_si512(w104, acc[2]);
    for (size_t l = 0; l < width; l++) {
        u128 v = (u128)w0[l] + ((u128)w52[l] << 52) + ((u128)w104[l] << 104);
        size_t at = row * N + col + l;
        st(C, at, accumulate ? ld(C, at) + v : v);
    }
}

static void ifma_block(const uint64_t *Ap, size_t M, size_t K, const uint64_t *Bp,
                       size_t npad, uint64_t *C, size_t N, size_t k0, size_t kb,
                       size_t j0, size_t jb, int accumulate)
{
    const size_t MK = M * K, KN = K * npad;
    for (size_t i = 0; i < M; i += 2) {
        size_t i1 = i + 1 < M ? i + 1 : i;
        const uint64_t *ar[2] = {Ap + i * K + k0, Ap + i1 * K + k0};
        for (size_t j = j0; j < j0 + jb; j += 16) {
            __m512i acc[2][2][3];
            for (int r = 0; r < 2; r++)
                for (int v = 0; v < 2; v++)
                    for (int w = 0; w < 3; w++)
                        acc[r][v][w] = _mm512_setzero_si512();
            const uint64_t *bk = Bp + k0 * npad + j;
            for (size_t k = 0; k < kb; k++, bk += npad) {
                __m512i b[2][3];
                for (int v = 0; v < 2; v++)
                    for (int w = 0; w < 3; w++)
                        b[v][w] = _mm512_loadu_si512(bk + w * KN + 8 * v);
                for (int r = 0; r < 2; r++) {
                    __m512i a0 = _mm512_set1_epi64((long long)ar[r][k]);
                    __m512i a1 = _mm512_set1_epi64((long long)ar[r][k + MK]);
                    __m512i a2 = _mm512_set1_epi64((long long)ar[r][k + 2 * MK]);
                    for (int v = 0; v < 2; v++) {
                        __m512i *c = acc[r][v];
                        c[0] = _mm512_madd52lo_epu64(c[0], a0, b[v][0]);
                        c[1] = _mm512_madd52hi_epu64(c[1], a0, b[v][0]);
                        c[1] = _mm512_madd52lo_epu64(c[1], a0, b[v][1]);
                        c[1] = _mm512_madd52lo_epu64(c[1], a1, b[v][0]);
                        c[2] = _mm512_madd52hi_epu64(c[2], a0, b[v][1]);
                        c[2] = _mm512_madd52hi_epu64(c[2], a1, b[v][0]);
                        c[2] = _mm512_madd52lo_epu64(c[2], a0, b[v][2]);
                        c[2] = _mm512_madd52lo_epu64(c[2], a1, b[v][1]);
                        c[2] = _mm512_madd52lo_epu64(c[2], a2, b[v][0]);
                    }
                }
            }
            for (int r = 0; r < 2 && i + r < M; r++)
                for (int v = 0; v < 2; v++) {
                    size_t col = j + 8 * v;
                    if (col < N)
                        store_tile(acc[r][v], C, i + r, col, N, N - col < 8 ? N - col : 8,
                                   accumulate);
                }
        }
    }
}

int mixc_r128_matmul(const uint64_t *A, const uint64_t *B, uint64_t *C,
                     size_t M, size_t K, size_t N, uint64_t *ws, size_t ws_words)
{
    if (ws_words < mixc_r128_matmul_ws_words(M, K, N))
        return -1;
    size_t npad = (N + 15) / 16 * 16;
    uint64_t *Ap = ws, *Bp = ws + 3 * M * K;
    const size_t MK = M * K, KN = K * npad;
    for (size_t i = 0; i < MK; i++)
        limbs(A, i, Ap + i, Ap + MK + i, Ap + 2 * MK + i);
    for (size_t k = 0; k < K; k++) {
        for (size_t j = 0; j < N; j++) {
            size_t at = k * npad + j;
            limbs(B, k * N + j, Bp + at, Bp + KN + at, Bp + 2 * KN + at);
        }
        for (size_t j = N; j < npad; j++)
            Bp[k * npad + j] = Bp[KN + k * npad + j] = Bp[2 * KN + k * npad + j] = 0;
    }
    if (K == 0)
        memset(C, 0, M * N * 2 * sizeof(uint64_t));
    for (size_t k0 = 0; k0 < K; k0 += R128_IFMA_KB) {
        size_t kb = K - k0 < R128_IFMA_KB ? K - k0 : R128_IFMA_KB;
        for (size_t j0 = 0; j0 < npad; j0 += R128_IFMA_NB) {
            size_t jb = npad - j0 < R128_IFMA_NB ? npad - j0 : R128_IFMA_NB;
            ifma_block(Ap, M, K, Bp, npad, C, N, k0, kb, j0, jb, k0 > 0);
        }
    }
    return 1;
}
#else
int mixc_r128_matmul(const uint64_t *A, const uint64_t *B, uint64_t *C,
                     size_t M, size_t K, size_t N, uint64_t *ws, size_t ws_words)
{
    (void)A; (void)B; (void)C; (void)M; (void)K; (void)N; (void)ws; (void)ws_words;
    return 0; /* no IFMA here: the caller runs the portable path */
}
#endif
