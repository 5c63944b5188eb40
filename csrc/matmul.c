/*
 * Blocked uint64 matrix multiply mod 2^64:  C (+)= A . B  (row-major).
 *
 * Goto/BLIS-style structure:
 *   for jc in N step NC:            B block (KC x NC) packed into panels of NR
 *     for pc in K step KC:            columns, zero padded (lives in L2/L3)
 *       pack B[pc:pc+KC, jc:jc+NC]
 *       for ic in M step MC:        A block (MC x KC) packed into panels of MR
 *         pack A[ic:ic+MC, pc:pc+KC]  rows, k-major, zero padded (lives in L2)
 *         for jr, ir: micro-kernel on an MR x NR tile of C
 *
 * The micro-kernel keeps an MR x NR tile of C in registers and, per k,
 * loads NR/8 vectors of B and broadcasts MR scalars of A.  It is written
 * with GCC vector extensions (8 x uint64 = 512 bits), which gcc lowers to
 * AVX-512 vpmullq/vpaddq with -march=native on AVX-512DQ machines and to
 * narrower (slower but correct) code elsewhere.
 *
 * All scratch memory comes from the caller (ws).
 */
#include <string.h>
#include "kernels.h"

#ifndef MIXC_MR
#define MIXC_MR 12         /* rows of the register tile */
#endif
#ifndef MIXC_NV
#define MIXC_NV 2          /* 8-lane vectors per row of the register tile */
#endif
#define MIXC_NR (8 * MIXC_NV)
#ifndef MIXC_KC
#define MIXC_KC 384
#endif
#ifndef MIXC_MC
#define MIXC_MC 96         /* multiple of MR */
#endif
#ifndef MIXC_NC
#define MIXC_NC 2048       /* multiple of NR */
#endif

#define MR MIXC_MR
#define NV MIXC_NV
#define NR MIXC_NR
#define KC MIXC_KC
#define MC MIXC_MC
#define NC MIXC_NC

typedef uint64_t v8u __attribute__((vector_size(64)));
/* same vector type, but only 8-byte aligned: for loads/stores on C */
typedef uint64_t v8u_u __attribute__((vector_size(64), aligned(8)));

static inline size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }
static inline size_t round_up(size_t a, size_t m) { return (a + m - 1) / m * m; }

size_t mixc_ring_matmul_ws_words(size_t M, size_t K, size_t N)
{
    if (M == 0 || K == 0 || N == 0)
        return 0;
    size_t kc = min_sz(K, KC);
    size_t nc = round_up(min_sz(N, NC), NR);
    size_t mc = round_up(min_sz(M, MC), MR);
    /* packed B + packed A + 8 words of slack for 64-byte alignment */
    return kc * nc + mc * kc + 8;
}

/* Pack B[0:kc, 0:nc] (row stride ldb) into ceil(nc/NR) panels, each kc x NR
 * row-major, zero padding the columns past nc. */
static void pack_b(const uint64_t *B, size_t ldb, size_t kc, size_t nc, uint64_t *restrict bp)
{
    for (size_t j = 0; j < nc; j += NR) {
        size_t w = min_sz(NR, nc - j);
        uint64_t *dst = bp + j * kc;
        if (w == NR) {
            for (size_t k = 0; k < kc; k++)
                memcpy(dst + k * NR, B + k * ldb + j, NR * sizeof(uint64_t));
        } else {
            for (size_t k = 0; k < kc; k++) {
                memcpy(dst + k * NR, B + k * ldb + j, w * sizeof(uint64_t));
                memset(dst + k * NR + w, 0, (NR - w) * sizeof(uint64_t));
            }
        }
    }
}

/* Pack A[0:mc, 0:kc] (row stride lda) into ceil(mc/MR) panels, each kc x MR
 * (k-major: the MR values of one k are contiguous), zero padding rows past mc. */
static void pack_a(const uint64_t *A, size_t lda, size_t mc, size_t kc, uint64_t *restrict ap)
{
    for (size_t i = 0; i < mc; i += MR) {
        size_t h = min_sz(MR, mc - i);
        uint64_t *dst = ap + i * kc;
        if (h == MR) {
            for (size_t k = 0; k < kc; k++)
                for (size_t r = 0; r < MR; r++)
                    dst[k * MR + r] = A[(i + r) * lda + k];
        } else {
            for (size_t k = 0; k < kc; k++) {
                for (size_t r = 0; r < h; r++)
                    dst[k * MR + r] = A[(i + r) * lda + k];
                for (size_t r = h; r < MR; r++)
                    dst[k * MR + r] = 0;
            }
        }
    }
}

/* acc = sum_k ap[k, :]^T * bp[k, :]; then C (+)= acc on the valid mr x nr part. */
static inline __attribute__((always_inline)) void
micro_kernel(size_t kc, const uint64_t *restrict ap, const uint64_t *restrict bp,
             uint64_t *restrict C, size_t ldc, int beta, size_t mr, size_t nr)
{
    v8u acc[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = (v8u){0, 0, 0, 0, 0, 0, 0, 0};

    const v8u *bv = (const v8u *)bp; /* packed panels are 64-byte aligned */
#pragma GCC unroll 2
    for (size_t k = 0; k < kc; k++) {
        v8u b[NV];
        for (int v = 0; v < NV; v++)
            b[v] = bv[k * NV + v];
        for (int i = 0; i < MR; i++) {
            uint64_t a = ap[k * MR + i];
            for (int v = 0; v < NV; v++)
                acc[i][v] += b[v] * a;
        }
    }

    if (mr == MR && nr == NR) {
        if (beta) {
            for (int i = 0; i < MR; i++)
                for (int v = 0; v < NV; v++) {
                    v8u_u *p = (v8u_u *)(C + i * ldc + 8 * v);
                    *p = *p + acc[i][v];
                }
        } else {
            for (int i = 0; i < MR; i++)
                for (int v = 0; v < NV; v++)
                    *(v8u_u *)(C + i * ldc + 8 * v) = acc[i][v];
        }
    } else {
        uint64_t tmp[MR * NR] __attribute__((aligned(64)));
        for (int i = 0; i < MR; i++)
            for (int v = 0; v < NV; v++)
                *(v8u *)(tmp + i * NR + 8 * v) = acc[i][v];
        for (size_t i = 0; i < mr; i++) {
            uint64_t *c = C + i * ldc;
            const uint64_t *t = tmp + i * NR;
            if (beta)
                for (size_t j = 0; j < nr; j++) c[j] += t[j];
            else
                for (size_t j = 0; j < nr; j++) c[j] = t[j];
        }
    }
}

/* Portable scalar path for tiny products where packing does not pay off. */
static void matmul_small(const uint64_t *A, size_t lda, const uint64_t *B, size_t ldb,
                         uint64_t *C, size_t ldc, size_t M, size_t K, size_t N, int beta)
{
    for (size_t i = 0; i < M; i++) {
        uint64_t *c = C + i * ldc;
        if (!beta)
            for (size_t j = 0; j < N; j++) c[j] = 0;
        for (size_t k = 0; k < K; k++) {
            const uint64_t a = A[i * lda + k];
            const uint64_t *b = B + k * ldb;
            for (size_t j = 0; j < N; j++)
                c[j] += a * b[j];
        }
    }
}

void mixc_ring_matmul(const uint64_t *A, size_t lda,
                      const uint64_t *B, size_t ldb,
                      uint64_t *C, size_t ldc,
                      size_t M, size_t K, size_t N,
                      int accumulate, uint64_t *ws, size_t ws_words)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        if (!accumulate)
            for (size_t i = 0; i < M; i++)
                memset(C + i * ldc, 0, N * sizeof(uint64_t));
        return;
    }
    if (M * K * N <= 4096 || ws == NULL || ws_words < mixc_ring_matmul_ws_words(M, K, N)) {
        matmul_small(A, lda, B, ldb, C, ldc, M, K, N, accumulate != 0);
        return;
    }

    const size_t kcmax = min_sz(K, KC);
    const size_t ncmax = round_up(min_sz(N, NC), NR);
    uint64_t *base = (uint64_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    uint64_t *bp = base;                  /* kcmax * ncmax words */
    uint64_t *ap = base + kcmax * ncmax;  /* round_up(MC) * kcmax words */

    for (size_t jc = 0; jc < N; jc += NC) {
        const size_t nc = min_sz(NC, N - jc);
        for (size_t pc = 0; pc < K; pc += KC) {
            const size_t kc = min_sz(KC, K - pc);
            const int beta = (pc == 0) ? (accumulate != 0) : 1;
            pack_b(B + pc * ldb + jc, ldb, kc, nc, bp);
            for (size_t ic = 0; ic < M; ic += MC) {
                const size_t mc = min_sz(MC, M - ic);
                pack_a(A + ic * lda + pc, lda, mc, kc, ap);
                for (size_t jr = 0; jr < nc; jr += NR) {
                    const size_t nr = min_sz(NR, nc - jr);
                    const uint64_t *bpan = bp + jr * kc;
                    for (size_t ir = 0; ir < mc; ir += MR) {
                        const size_t mr = min_sz(MR, mc - ir);
                        micro_kernel(kc, ap + ir * kc, bpan,
                                     C + (ic + ir) * ldc + jc + jr, ldc, beta, mr, nr);
                    }
                }
            }
        }
    }
}
