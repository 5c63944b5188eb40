/*
 * RLWE (BFV-style) kernels for mixc's additively homomorphic encryption:
 * RNS polynomial arithmetic modulo q = p_0 ... p_{L-1} in Z_q[X]/(X^n + 1),
 * negacyclic NTT, samplers, plaintext encoding/decoding for t = 2^64 and 2^128,
 * modulus switching and bit packing.  Key generation, encryption and the
 * protocol logic live in runtime/he.py on top of these kernels.
 *
 * Layouts
 *   - A polynomial in RNS form is L rows of n uint64 residues ("limbs"),
 *     row i reduced modulo p_i: L*n words, row-major.  Several polynomials
 *     (e.g. the two components of a ciphertext) are "count" such blocks back
 *     to back.
 *   - mods: L descriptors of HE_DESC_WORDS = 8 words each, built by
 *     runtime/he.py (see desc_* below):
 *       [0] p            odd prime, 2^20 < p < 2^62 (2^50 for the IFMA path)
 *       [1] k            bit length of p
 *       [2] mu           floor(2^(2k) / p)         (Barrett for a*b, a,b < p)
 *       [3] mu64         floor(2^64 / p)           (reduction of a uint64)
 *       [4] r64          2^64 mod p
 *       [5] inv64        2^-64 mod p
 *       [6] inv64_shoup  floor(inv64 * 2^64 / p)
 *       [7] 0
 *   - NTT tables: mixc_he_ntt_tab_words(n) words per prime, filled by
 *     mixc_he_ntt_init; L tables back to back for an RNS polynomial.
 *
 * All residues passed in and returned are fully reduced (in [0, p)) unless
 * stated otherwise.  Outputs may alias inputs exactly (in place).
 *
 * The NTT is the negacyclic Cooley-Tukey / Gentleman-Sande pair of Longa and
 * Naehrig (psi = primitive 2n-th root of unity, powers stored in bit-reversed
 * order), with Harvey's lazy butterflies (values kept in [0, 4p)) and Shoup
 * multiplication by precomputed twiddles.  The forward transform leaves its
 * output in bit-reversed order, which the inverse consumes; products in the
 * NTT domain are pointwise, so the order never matters to callers.
 *
 * With AVX-512 IFMA (vpmadd52{l,h}uq) and p < 2^50 the NTTs and pointwise
 * products run 8 lanes wide with 52-bit Shoup/Barrett arithmetic (as in Intel
 * HEXL); otherwise portable scalar code with unsigned __int128 is used.
 */
#include <string.h>
#include "kernels.h"

#if defined(__AVX512F__) && defined(__AVX512IFMA__)
#include <immintrin.h>
#define HE_IFMA 1
#else
#define HE_IFMA 0
#endif

typedef unsigned __int128 u128;

#define DESC_WORDS 8
#define D_P 0
#define D_K 1
#define D_MU 2
#define D_MU64 3
#define D_R64 4
#define D_INV64 5
#define D_INV64S 6

/* NTT table layout (per prime), offsets in multiples of n words */
#define T_W 0        /* psi^brv(k)                       */
#define T_WS 1       /* floor(w * 2^64 / p)              */
#define T_W52 2      /* floor(w * 2^52 / p)              */
#define T_IW 3       /* psi^-brv(k)                      */
#define T_IWS 4
#define T_IW52 5
/* after 6n: n^-1, its 64- and 52-bit Shoup companions, p, log2 n */

/* ------------------------------------------------------------------ */
/* scalar modular helpers                                              */
/* ------------------------------------------------------------------ */

static inline uint64_t mulhi64(uint64_t a, uint64_t b)
{
    return (uint64_t)(((u128)a * b) >> 64);
}

/* a * w mod p in [0, 2p) for any a < 2^64; ws = floor(w 2^64 / p), w < p */
static inline uint64_t shoup_lazy(uint64_t a, uint64_t w, uint64_t ws, uint64_t p)
{
    return a * w - mulhi64(a, ws) * p;
}

static inline uint64_t shoup(uint64_t a, uint64_t w, uint64_t ws, uint64_t p)
{
    uint64_t r = shoup_lazy(a, w, ws, p);
    return r >= p ? r - p : r;
}

/* x mod p for any x < 2^64 */
static inline uint64_t red64(uint64_t x, uint64_t p, uint64_t mu64)
{
    uint64_t r = x - mulhi64(x, mu64) * p; /* in [0, 2p) */
    return r >= p ? r - p : r;
}

/* a * b mod p for a, b < p (classic Barrett, base 2) */
static inline uint64_t mulmod(uint64_t a, uint64_t b, uint64_t p, unsigned k, uint64_t mu)
{
    u128 x = (u128)a * b;
    uint64_t xs = (uint64_t)(x >> (k - 1));           /* < 2^(k+1) */
    uint64_t q = (uint64_t)(((u128)xs * mu) >> (k + 1));
    uint64_t r = (uint64_t)x - q * p;                  /* < 3p */
    r = r >= p ? r - p : r;
    return r >= p ? r - p : r;
}

static uint64_t powmod(uint64_t b, uint64_t e, uint64_t p)
{
    uint64_t r = 1 % p;
    b %= p;
    while (e) {
        if (e & 1)
            r = (uint64_t)(((u128)r * b) % p);
        b = (uint64_t)(((u128)b * b) % p);
        e >>= 1;
    }
    return r;
}

/* signed 64-bit integer -> residue mod p */
static inline uint64_t from_i64(int64_t v, uint64_t p, uint64_t mu64)
{
    if (v >= 0)
        return red64((uint64_t)v, p, mu64);
    uint64_t r = red64((uint64_t)0 - (uint64_t)v, p, mu64);
    return r ? p - r : 0;
}

static inline unsigned ilog2(size_t n)
{
    unsigned l = 0;
    while (((size_t)1 << l) < n)
        l++;
    return l;
}

static inline size_t brv(size_t x, unsigned bits)
{
    size_t r = 0;
    for (unsigned i = 0; i < bits; i++)
        r |= ((x >> i) & 1) << (bits - 1 - i);
    return r;
}

/* ------------------------------------------------------------------ */
/* NTT tables                                                          */
/* ------------------------------------------------------------------ */

size_t mixc_he_ntt_tab_words(size_t n)
{
    return 6 * n + 8;
}

int mixc_he_ntt_init(const uint64_t *desc, uint64_t psi, size_t n, uint64_t *tab)
{
    uint64_t p = desc[D_P];
    if (n < 2 || (n & (n - 1)) || p < 3 || p >= ((uint64_t)1 << 62))
        return -1;
    if ((p - 1) % (2 * n))
        return -1;
    /* psi must have order exactly 2n: psi^n = -1 */
    if (psi == 0 || psi >= p || powmod(psi, n, p) != p - 1)
        return -1;
    unsigned lg = ilog2(n);
    uint64_t ipsi = powmod(psi, p - 2, p);
    uint64_t *W = tab + T_W * n, *WS = tab + T_WS * n, *W52 = tab + T_W52 * n;
    uint64_t *IW = tab + T_IW * n, *IWS = tab + T_IWS * n, *IW52 = tab + T_IW52 * n;
    uint64_t w = 1, iw = 1;
    for (size_t j = 0; j < n; j++) {
        size_t r = brv(j, lg);
        W[r] = w;
        IW[r] = iw;
        w = (uint64_t)(((u128)w * psi) % p);
        iw = (uint64_t)(((u128)iw * ipsi) % p);
    }
    for (size_t j = 0; j < n; j++) {
        WS[j] = (uint64_t)(((u128)W[j] << 64) / p);
        IWS[j] = (uint64_t)(((u128)IW[j] << 64) / p);
        W52[j] = (uint64_t)(((u128)W[j] << 52) / p);
        IW52[j] = (uint64_t)(((u128)IW[j] << 52) / p);
    }
    uint64_t ninv = powmod(n % p, p - 2, p);
    uint64_t *x = tab + 6 * n;
    x[0] = ninv;
    x[1] = (uint64_t)(((u128)ninv << 64) / p);
    x[2] = (uint64_t)(((u128)ninv << 52) / p);
    x[3] = p;
    x[4] = lg;
    x[5] = x[6] = x[7] = 0;
    return 0;
}

static void ntt_fwd_scalar(uint64_t *a, size_t n, uint64_t p, const uint64_t *tab)
{
    const uint64_t *W = tab + T_W * n, *WS = tab + T_WS * n;
    const uint64_t p2 = 2 * p;
    size_t t = n;
    for (size_t m = 1; m < n; m <<= 1) {
        t >>= 1;
        for (size_t i = 0; i < m; i++) {
            const uint64_t w = W[m + i], ws = WS[m + i];
            uint64_t *x = a + 2 * i * t, *y = x + t;
            for (size_t j = 0; j < t; j++) {
                uint64_t u = x[j];
                u = u >= p2 ? u - p2 : u;
                uint64_t v = shoup_lazy(y[j], w, ws, p);
                x[j] = u + v;
                y[j] = u - v + p2;
            }
        }
    }
    for (size_t j = 0; j < n; j++) {
        uint64_t u = a[j];
        u = u >= p2 ? u - p2 : u;
        a[j] = u >= p ? u - p : u;
    }
}

static void ntt_inv_scalar(uint64_t *a, size_t n, uint64_t p, const uint64_t *tab)
{
    const uint64_t *IW = tab + T_IW * n, *IWS = tab + T_IWS * n;
    const uint64_t p2 = 2 * p;
    size_t t = 1;
    for (size_t m = n; m > 1; m >>= 1) {
        size_t h = m >> 1;
        for (size_t i = 0; i < h; i++) {
            const uint64_t w = IW[h + i], ws = IWS[h + i];
            uint64_t *x = a + 2 * i * t, *y = x + t;
            for (size_t j = 0; j < t; j++) {
                uint64_t u = x[j], v = y[j];
                uint64_t s = u + v;
                x[j] = s >= p2 ? s - p2 : s;
                y[j] = shoup_lazy(u - v + p2, w, ws, p);
            }
        }
        t <<= 1;
    }
    const uint64_t *x = tab + 6 * n;
    for (size_t j = 0; j < n; j++)
        a[j] = shoup(a[j], x[0], x[1], p);
}

/* ------------------------------------------------------------------ */
/* AVX-512 IFMA NTT (p < 2^50, n >= 16)                                 */
/* ------------------------------------------------------------------ */
#if HE_IFMA

#define M52 ((1ULL << 52) - 1)

/* y * w mod p in [0, 2p) for y < 2^52; wp = floor(w 2^52 / p); negp = 2^52 - p */
static inline __m512i v_shoup52(__m512i y, __m512i w, __m512i wp, __m512i negp, __m512i m52)
{
    const __m512i z = _mm512_setzero_si512();
    __m512i q = _mm512_madd52hi_epu64(z, y, wp);
    __m512i r = _mm512_madd52lo_epu64(z, y, w);
    r = _mm512_madd52lo_epu64(r, q, negp);
    return _mm512_and_si512(r, m52);
}

/* x - c if x >= c else x (unsigned), for x < 2^63 */
static inline __m512i v_csub(__m512i x, __m512i c)
{
    return _mm512_min_epu64(x, _mm512_sub_epi64(x, c));
}

typedef struct {
    __m512i p, p2, negp, m52;
} vmod;

static inline void v_fwd_bf(__m512i *X, __m512i *Y, __m512i w, __m512i wp, const vmod *M)
{
    __m512i x = v_csub(*X, M->p2);
    __m512i t = v_shoup52(*Y, w, wp, M->negp, M->m52);
    *X = _mm512_add_epi64(x, t);
    *Y = _mm512_add_epi64(_mm512_sub_epi64(x, t), M->p2);
}

static inline void v_inv_bf(__m512i *X, __m512i *Y, __m512i w, __m512i wp, const vmod *M)
{
    __m512i x = *X, y = *Y;
    __m512i s = v_csub(_mm512_add_epi64(x, y), M->p2);
    __m512i d = _mm512_add_epi64(_mm512_sub_epi64(x, y), M->p2);
    *X = s;
    *Y = v_shoup52(d, w, wp, M->negp, M->m52);
}

/* permutation indices for butterfly distance t in {1, 2, 4} over a pair of
 * 8-lane vectors (16 consecutive elements) */
typedef struct {
    __m512i ix, iy, ib0, ib1, iw;
    unsigned groups; /* groups per 16 elements = 8 / t */
} vperm;

static void make_perm(size_t t, vperm *P)
{
    int64_t ix[8], iy[8], ib0[8], ib1[8], iw[8];
    for (int l = 0; l < 8; l++) {
        int e = (int)((l / t) * 2 * t + (l % t));
        ix[l] = e;
        iy[l] = e + (int)t;
        iw[l] = (int)(l / t);
    }
    for (int e = 0; e < 16; e++) {
        int g = (int)(e / (2 * t)), r = (int)(e % (2 * t));
        int src = r < (int)t ? (int)(g * t + r) : 8 + (int)(g * t + r - t);
        if (e < 8)
            ib0[e] = src;
        else
            ib1[e - 8] = src;
    }
    P->ix = _mm512_loadu_si512(ix);
    P->iy = _mm512_loadu_si512(iy);
    P->ib0 = _mm512_loadu_si512(ib0);
    P->ib1 = _mm512_loadu_si512(ib1);
    P->iw = _mm512_loadu_si512(iw);
    P->groups = (unsigned)(8 / t);
}

static inline __m512i load_tw(const uint64_t *w, const vperm *P)
{
    __mmask8 k = (__mmask8)((1u << P->groups) - 1);
    __m512i v = _mm512_maskz_loadu_epi64(k, w);
    return _mm512_permutexvar_epi64(P->iw, v);
}

static void ntt_fwd_ifma(uint64_t *a, size_t n, uint64_t p, const uint64_t *tab)
{
    const uint64_t *W = tab + T_W * n, *W52 = tab + T_W52 * n;
    vmod M = {_mm512_set1_epi64((long long)p), _mm512_set1_epi64((long long)(2 * p)),
              _mm512_set1_epi64((long long)((1ULL << 52) - p)), _mm512_set1_epi64((long long)M52)};
    size_t t = n;
    size_t m = 1;
    for (; m < n; m <<= 1) {
        t >>= 1;
        if (t < 8)
            break;
        for (size_t i = 0; i < m; i++) {
            __m512i w = _mm512_set1_epi64((long long)W[m + i]);
            __m512i wp = _mm512_set1_epi64((long long)W52[m + i]);
            uint64_t *x = a + 2 * i * t, *y = x + t;
            for (size_t j = 0; j < t; j += 8) {
                __m512i X = _mm512_loadu_si512(x + j), Y = _mm512_loadu_si512(y + j);
                v_fwd_bf(&X, &Y, w, wp, &M);
                _mm512_storeu_si512(x + j, X);
                _mm512_storeu_si512(y + j, Y);
            }
        }
    }
    /* remaining stages t = 4, 2, 1 (m = n/8, n/4, n/2) */
    for (; m < n; m <<= 1, t >>= 1) {
        vperm P;
        make_perm(t, &P);
        for (size_t b = 0; b < n / 16; b++) {
            uint64_t *blk = a + 16 * b;
            __m512i v0 = _mm512_loadu_si512(blk), v1 = _mm512_loadu_si512(blk + 8);
            __m512i X = _mm512_permutex2var_epi64(v0, P.ix, v1);
            __m512i Y = _mm512_permutex2var_epi64(v0, P.iy, v1);
            size_t g = m + b * P.groups;
            __m512i w = load_tw(W + g, &P), wp = load_tw(W52 + g, &P);
            v_fwd_bf(&X, &Y, w, wp, &M);
            _mm512_storeu_si512(blk, _mm512_permutex2var_epi64(X, P.ib0, Y));
            _mm512_storeu_si512(blk + 8, _mm512_permutex2var_epi64(X, P.ib1, Y));
        }
    }
    for (size_t j = 0; j < n; j += 8) {
        __m512i x = _mm512_loadu_si512(a + j);
        x = v_csub(v_csub(x, M.p2), M.p);
        _mm512_storeu_si512(a + j, x);
    }
}

static void ntt_inv_ifma(uint64_t *a, size_t n, uint64_t p, const uint64_t *tab)
{
    const uint64_t *IW = tab + T_IW * n, *IW52 = tab + T_IW52 * n;
    vmod M = {_mm512_set1_epi64((long long)p), _mm512_set1_epi64((long long)(2 * p)),
              _mm512_set1_epi64((long long)((1ULL << 52) - p)), _mm512_set1_epi64((long long)M52)};
    size_t t = 1, m = n;
    /* first stages t = 1, 2, 4 (h = n/2, n/4, n/8) */
    for (; m > 1 && t < 8; m >>= 1, t <<= 1) {
        size_t h = m >> 1;
        vperm P;
        make_perm(t, &P);
        for (size_t b = 0; b < n / 16; b++) {
            uint64_t *blk = a + 16 * b;
            __m512i v0 = _mm512_loadu_si512(blk), v1 = _mm512_loadu_si512(blk + 8);
            __m512i X = _mm512_permutex2var_epi64(v0, P.ix, v1);
            __m512i Y = _mm512_permutex2var_epi64(v0, P.iy, v1);
            size_t g = h + b * P.groups;
            __m512i w = load_tw(IW + g, &P), wp = load_tw(IW52 + g, &P);
            v_inv_bf(&X, &Y, w, wp, &M);
            _mm512_storeu_si512(blk, _mm512_permutex2var_epi64(X, P.ib0, Y));
            _mm512_storeu_si512(blk + 8, _mm512_permutex2var_epi64(X, P.ib1, Y));
        }
    }
    for (; m > 1; m >>= 1, t <<= 1) {
        size_t h = m >> 1;
        for (size_t i = 0; i < h; i++) {
            __m512i w = _mm512_set1_epi64((long long)IW[h + i]);
            __m512i wp = _mm512_set1_epi64((long long)IW52[h + i]);
            uint64_t *x = a + 2 * i * t, *y = x + t;
            for (size_t j = 0; j < t; j += 8) {
                __m512i X = _mm512_loadu_si512(x + j), Y = _mm512_loadu_si512(y + j);
                v_inv_bf(&X, &Y, w, wp, &M);
                _mm512_storeu_si512(x + j, X);
                _mm512_storeu_si512(y + j, Y);
            }
        }
    }
    const uint64_t *xt = tab + 6 * n;
    __m512i ni = _mm512_set1_epi64((long long)xt[0]), nip = _mm512_set1_epi64((long long)xt[2]);
    for (size_t j = 0; j < n; j += 8) {
        __m512i x = _mm512_loadu_si512(a + j);
        x = v_csub(v_shoup52(x, ni, nip, M.negp, M.m52), M.p);
        _mm512_storeu_si512(a + j, x);
    }
}

/* a * b mod p, a, b < p < 2^50, k = bits(p), mu = floor(2^(2k)/p) */
static inline __m512i v_mulmod(__m512i a, __m512i b, __m512i mu, __m128i sh_hi_x,
                               __m128i sh_lo_x, __m128i sh_hi_q, __m128i sh_lo_q,
                               const vmod *M)
{
    const __m512i z = _mm512_setzero_si512();
    __m512i lo = _mm512_madd52lo_epu64(z, a, b);
    __m512i hi = _mm512_madd52hi_epu64(z, a, b);
    /* xs = floor(x / 2^(k-1)) */
    __m512i xs = _mm512_or_si512(_mm512_sll_epi64(hi, sh_hi_x), _mm512_srl_epi64(lo, sh_lo_x));
    __m512i qlo = _mm512_madd52lo_epu64(z, xs, mu);
    __m512i qhi = _mm512_madd52hi_epu64(z, xs, mu);
    /* q = floor(xs * mu / 2^(k+1)) */
    __m512i q = _mm512_or_si512(_mm512_sll_epi64(qhi, sh_hi_q), _mm512_srl_epi64(qlo, sh_lo_q));
    __m512i r = _mm512_and_si512(_mm512_madd52lo_epu64(lo, q, M->negp), M->m52); /* < 3p */
    return v_csub(v_csub(r, M->p), M->p);
}

#endif /* HE_IFMA */

/* the IFMA transforms need p < 2^50 (lazy values < 4p < 2^52) and n >= 16 */
static void ntt_fwd_one(uint64_t *a, size_t n, const uint64_t *d, const uint64_t *tab)
{
#if HE_IFMA
    if (d[D_K] <= 50 && n >= 16) {
        ntt_fwd_ifma(a, n, d[D_P], tab);
        return;
    }
#endif
    ntt_fwd_scalar(a, n, d[D_P], tab);
}

static void ntt_inv_one(uint64_t *a, size_t n, const uint64_t *d, const uint64_t *tab)
{
#if HE_IFMA
    if (d[D_K] <= 50 && n >= 16) {
        ntt_inv_ifma(a, n, d[D_P], tab);
        return;
    }
#endif
    ntt_inv_scalar(a, n, d[D_P], tab);
}

void mixc_he_ntt_fwd(uint64_t *a, const uint64_t *mods, const uint64_t *tabs,
                     size_t L, size_t n, size_t count)
{
    const size_t tw = mixc_he_ntt_tab_words(n);
    for (size_t c = 0; c < count; c++)
        for (size_t i = 0; i < L; i++)
            ntt_fwd_one(a + (c * L + i) * n, n, mods + DESC_WORDS * i, tabs + i * tw);
}

void mixc_he_ntt_inv(uint64_t *a, const uint64_t *mods, const uint64_t *tabs,
                     size_t L, size_t n, size_t count)
{
    const size_t tw = mixc_he_ntt_tab_words(n);
    for (size_t c = 0; c < count; c++)
        for (size_t i = 0; i < L; i++)
            ntt_inv_one(a + (c * L + i) * n, n, mods + DESC_WORDS * i, tabs + i * tw);
}

/* ------------------------------------------------------------------ */
/* pointwise RNS arithmetic                                            */
/* ------------------------------------------------------------------ */

void mixc_he_add(const uint64_t *a, const uint64_t *b, uint64_t *out,
                 const uint64_t *mods, size_t L, size_t n)
{
    for (size_t i = 0; i < L; i++) {
        const uint64_t p = mods[DESC_WORDS * i + D_P];
        const uint64_t *x = a + i * n, *y = b + i * n;
        uint64_t *o = out + i * n;
        for (size_t j = 0; j < n; j++) {
            uint64_t s = x[j] + y[j];
            o[j] = s >= p ? s - p : s;
        }
    }
}

void mixc_he_sub(const uint64_t *a, const uint64_t *b, uint64_t *out,
                 const uint64_t *mods, size_t L, size_t n)
{
    for (size_t i = 0; i < L; i++) {
        const uint64_t p = mods[DESC_WORDS * i + D_P];
        const uint64_t *x = a + i * n, *y = b + i * n;
        uint64_t *o = out + i * n;
        for (size_t j = 0; j < n; j++) {
            uint64_t s = x[j] + p - y[j];
            o[j] = s >= p ? s - p : s;
        }
    }
}

void mixc_he_neg(const uint64_t *a, uint64_t *out, const uint64_t *mods, size_t L, size_t n)
{
    for (size_t i = 0; i < L; i++) {
        const uint64_t p = mods[DESC_WORDS * i + D_P];
        const uint64_t *x = a + i * n;
        uint64_t *o = out + i * n;
        for (size_t j = 0; j < n; j++)
            o[j] = x[j] ? p - x[j] : 0;
    }
}

static void mul_row(const uint64_t *x, const uint64_t *y, uint64_t *o, const uint64_t *d,
                    size_t n, int acc)
{
    const uint64_t p = d[D_P], mu = d[D_MU];
    const unsigned k = (unsigned)d[D_K];
    size_t j = 0;
#if HE_IFMA
    if (k <= 50) {
        vmod M = {_mm512_set1_epi64((long long)p), _mm512_set1_epi64((long long)(2 * p)),
                  _mm512_set1_epi64((long long)((1ULL << 52) - p)),
                  _mm512_set1_epi64((long long)M52)};
        __m512i vmu = _mm512_set1_epi64((long long)mu);
        __m128i shx = _mm_cvtsi32_si128((int)(53 - k)), slx = _mm_cvtsi32_si128((int)(k - 1));
        __m128i shq = _mm_cvtsi32_si128((int)(51 - k)), slq = _mm_cvtsi32_si128((int)(k + 1));
        for (; j + 8 <= n; j += 8) {
            __m512i r = v_mulmod(_mm512_loadu_si512(x + j), _mm512_loadu_si512(y + j), vmu,
                                 shx, slx, shq, slq, &M);
            if (acc)
                r = v_csub(_mm512_add_epi64(r, _mm512_loadu_si512(o + j)), M.p);
            _mm512_storeu_si512(o + j, r);
        }
    }
#endif
    for (; j < n; j++) {
        uint64_t r = mulmod(x[j], y[j], p, k, mu);
        if (acc) {
            r += o[j];
            r = r >= p ? r - p : r;
        }
        o[j] = r;
    }
}

void mixc_he_mul(const uint64_t *a, const uint64_t *b, uint64_t *out,
                 const uint64_t *mods, size_t L, size_t n)
{
    for (size_t i = 0; i < L; i++)
        mul_row(a + i * n, b + i * n, out + i * n, mods + DESC_WORDS * i, n, 0);
}

void mixc_he_mulacc(const uint64_t *a, const uint64_t *w, uint64_t *acc,
                    const uint64_t *mods, size_t L, size_t n, size_t ncomp, int accumulate)
{
    for (size_t c = 0; c < ncomp; c++)
        for (size_t i = 0; i < L; i++)
            mul_row(a + (c * L + i) * n, w + i * n, acc + (c * L + i) * n,
                    mods + DESC_WORDS * i, n, accumulate != 0);
}

void mixc_he_mul_scalar(const uint64_t *a, const uint64_t *s, uint64_t *out,
                        const uint64_t *mods, size_t L, size_t n)
{
    for (size_t i = 0; i < L; i++) {
        const uint64_t *d = mods + DESC_WORDS * i;
        const uint64_t p = d[D_P], w = s[i] % p;
        const uint64_t ws = (uint64_t)(((u128)w << 64) / p);
        const uint64_t *x = a + i * n;
        uint64_t *o = out + i * n;
        for (size_t j = 0; j < n; j++)
            o[j] = shoup(x[j], w, ws, p);
    }
}

/* ------------------------------------------------------------------ */
/* conversions, encoding, decoding                                     */
/* ------------------------------------------------------------------ */

void mixc_he_from_i64(const int64_t *x, const uint64_t *mods, size_t L, size_t n, uint64_t *out)
{
    for (size_t i = 0; i < L; i++) {
        const uint64_t *d = mods + DESC_WORDS * i;
        const uint64_t p = d[D_P];
        uint64_t *o = out + i * n;
        if (p < ((uint64_t)1 << 20) || p >= ((uint64_t)1 << 62)) {
            for (size_t j = 0; j < n; j++)
                o[j] = from_i64(x[j], p, d[D_MU64]);
            continue;
        }
        /* q = floor(x / p) estimated in double precision: |x| <= 2^63 so
         * (double)x is off by <= 2^10 < p / 2^10 and the product by 1/p by
         * < 2^-9 in absolute terms; the estimate is within 1 of the true
         * quotient and r = x - q p lies in [-p, 2p).  Vectorises (AVX-512DQ). */
        const double pinv = 1.0 / (double)p;
        const int64_t ps = (int64_t)p;
        size_t j = 0;
#if HE_IFMA && defined(__AVX512DQ__)
        {
            const __m512d vpinv = _mm512_set1_pd(pinv);
            const __m512i vp = _mm512_set1_epi64(ps), z = _mm512_setzero_si512();
            for (; j + 8 <= n; j += 8) {
                __m512i xv = _mm512_loadu_si512(x + j);
                __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(_mm512_cvtepi64_pd(xv), vpinv),
                                                 _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
                __m512i r = _mm512_sub_epi64(xv, _mm512_mullo_epi64(_mm512_cvtpd_epi64(q), vp));
                r = _mm512_mask_add_epi64(r, _mm512_cmplt_epi64_mask(r, z), r, vp);
                _mm512_storeu_si512(o + j, v_csub(r, vp));
            }
        }
#endif
        for (; j < n; j++) {
            double q = __builtin_floor((double)x[j] * pinv);
            int64_t r = (int64_t)((uint64_t)x[j] - (uint64_t)(int64_t)q * p);
            r += r < 0 ? ps : 0;
            r -= r >= ps ? ps : 0;
            o[j] = (uint64_t)r;
        }
    }
}

void mixc_he_encode_scaled(const uint64_t *m, uint64_t q_lo, const uint64_t *mods,
                           size_t L, size_t n, uint64_t *out)
{
    for (size_t j = 0; j < n; j++) {
        /* Q*m = 2^64 K + r;  round(Q m / 2^64) = K + [r >= 2^63]
         * == (-r + 2^64 [r >= 2^63]) * 2^-64  (mod p_i), as Q == 0 mod p_i */
        uint64_t r = q_lo * m[j];
        int up = (int)(r >> 63);
        uint64_t mag = up ? (uint64_t)0 - r : r;
        for (size_t i = 0; i < L; i++) {
            const uint64_t *d = mods + DESC_WORDS * i;
            const uint64_t p = d[D_P];
            uint64_t v = red64(mag, p, d[D_MU64]);
            if (!up)
                v = v ? p - v : 0;
            out[i * n + j] = shoup(v, d[D_INV64], d[D_INV64S], p);
        }
    }
}

void mixc_he_decode(const uint64_t *v, const uint64_t *mods, const uint64_t *crt,
                    size_t L, size_t n, uint64_t *m_out, int64_t *frac_out)
{
    for (size_t j = 0; j < n; j++) {
        uint64_t ipart = 0;
        u128 F = 0;
        for (size_t i = 0; i < L; i++) {
            const uint64_t p = mods[DESC_WORDS * i + D_P];
            const uint64_t *c = crt + 5 * i;
            uint64_t y = shoup(v[i * n + j], c[0], c[1], p);
            /* y * floor(2^192 / p) / 2^128  ~  y * 2^64 / p */
            u128 t0 = (u128)y * c[2];
            u128 t1 = (u128)y * c[3] + (t0 >> 64);
            u128 t2 = (u128)y * c[4] + (t1 >> 64);
            F += (uint64_t)t1;
            ipart += (uint64_t)t2;
        }
        F += (u128)1 << 63;
        m_out[j] = ipart + (uint64_t)(F >> 64);
        if (frac_out)
            frac_out[j] = (int64_t)((uint64_t)F - ((uint64_t)1 << 63));
    }
}

void mixc_he_drop_last(const uint64_t *in, const uint64_t *mods, const uint64_t *inv_last,
                       size_t L, size_t n, uint64_t *out)
{
    const uint64_t pl = mods[DESC_WORDS * (L - 1) + D_P];
    const uint64_t half = pl >> 1;
    const uint64_t *last = in + (L - 1) * n;
    for (size_t i = 0; i + 1 < L; i++) {
        const uint64_t *d = mods + DESC_WORDS * i;
        const uint64_t p = d[D_P], mu64 = d[D_MU64];
        const uint64_t w = inv_last[2 * i], ws = inv_last[2 * i + 1];
        const uint64_t pl_mod = red64(pl, p, mu64);
        const uint64_t *x = in + i * n;
        uint64_t *o = out + i * n;
        size_t j = 0;
#if HE_IFMA
        if (d[D_K] <= 50 && mods[DESC_WORDS * (L - 1) + D_K] <= 50) {
            vmod M = {_mm512_set1_epi64((long long)p), _mm512_set1_epi64((long long)(2 * p)),
                      _mm512_set1_epi64((long long)((1ULL << 52) - p)),
                      _mm512_set1_epi64((long long)M52)};
            const __m512i one = _mm512_set1_epi64(1);
            const __m512i onep = _mm512_set1_epi64((long long)(((u128)1 << 52) / p));
            const __m512i vw = _mm512_set1_epi64((long long)w);
            const __m512i vwp = _mm512_set1_epi64((long long)(((u128)w << 52) / p));
            const __m512i vhalf = _mm512_set1_epi64((long long)half);
            const __m512i vplm = _mm512_set1_epi64((long long)(p - pl_mod)); /* -pl mod p */
            for (; j + 8 <= n; j += 8) {
                __m512i cl = _mm512_loadu_si512(last + j);
                __m512i r = v_csub(v_shoup52(cl, one, onep, M.negp, M.m52), M.p);
                __mmask8 hi = _mm512_cmpgt_epu64_mask(cl, vhalf);
                r = _mm512_mask_add_epi64(r, hi, r, vplm);
                r = v_csub(r, M.p);
                __m512i diff = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(x + j), M.p), r);
                diff = v_csub(diff, M.p);
                _mm512_storeu_si512(o + j, v_csub(v_shoup52(diff, vw, vwp, M.negp, M.m52), M.p));
            }
        }
#endif
        for (; j < n; j++) {
            /* c' = (c - [c]_pl) / pl with [c]_pl centred in (-pl/2, pl/2] */
            uint64_t cl = last[j];
            uint64_t r = red64(cl, p, mu64);
            if (cl > half) { /* [c]_pl = cl - pl */
                r = r + p - pl_mod;
                r = r >= p ? r - p : r;
            }
            uint64_t diff = x[j] + p - r;
            diff = diff >= p ? diff - p : diff;
            o[j] = shoup(diff, w, ws, p);
        }
    }
}

/* ------------------------------------------------------------------ */
/* samplers (randomness supplied by the caller, e.g. ChaCha20 words)    */
/* ------------------------------------------------------------------ */

void mixc_he_sample_cbd(const uint64_t *rnd, int64_t *out, size_t n, unsigned eta)
{
    const uint64_t msk = eta >= 32 ? 0xFFFFFFFFULL : ((1ULL << eta) - 1);
    for (size_t j = 0; j < n; j++) {
        uint64_t w = rnd[j];
        out[j] = (int64_t)__builtin_popcountll(w & msk) - (int64_t)__builtin_popcountll((w >> 32) & msk);
    }
}

void mixc_he_sample_ternary(const uint64_t *rnd, int64_t *out, size_t n)
{
    for (size_t j = 0; j < n; j++)
        out[j] = (int64_t)(((u128)rnd[j] * 3) >> 64) - 1;
}

size_t mixc_he_sample_uniform(const uint64_t *rnd, size_t nrnd, const uint64_t *mods,
                              size_t L, size_t n, uint64_t *out)
{
    size_t used = 0;
    for (size_t i = 0; i < L; i++) {
        const uint64_t *d = mods + DESC_WORDS * i;
        const uint64_t p = d[D_P];
        const unsigned k = (unsigned)d[D_K];
        const uint64_t msk = k >= 64 ? ~(uint64_t)0 : ((1ULL << k) - 1);
        uint64_t *o = out + i * n;
        for (size_t j = 0; j < n;) {
            if (used >= nrnd)
                return (size_t)-1;
            uint64_t v = rnd[used++] & msk;
            if (v < p)
                o[j++] = v;
        }
    }
    return used;
}

void mixc_he_sample_wide(const uint64_t *rnd, unsigned bits, const uint64_t *mods,
                         size_t L, size_t n, uint64_t *out)
{
    /* value = (uniform integer in [0, 2^bits)) - 2^(bits-1), bits in [1, 256];
     * words per coefficient: w = ceil(bits / 64), the top word masked. */
    const unsigned w = (bits + 63) / 64;
    const unsigned topbits = bits - 64 * (w - 1);
    const uint64_t topmask = topbits >= 64 ? ~(uint64_t)0 : ((1ULL << topbits) - 1);
    for (size_t i = 0; i < L; i++) {
        const uint64_t *d = mods + DESC_WORDS * i;
        const uint64_t p = d[D_P], mu64 = d[D_MU64], r64 = d[D_R64];
        const unsigned k = (unsigned)d[D_K];
        const uint64_t mu = d[D_MU];
        uint64_t pw[4];
        pw[0] = 1 % p;
        pw[1] = r64;
        pw[2] = mulmod(r64, r64, p, k, mu);
        pw[3] = mulmod(pw[2], r64, p, k, mu);
        /* 2^(bits-1) mod p */
        uint64_t off = powmod(2, bits - 1, p);
        uint64_t *o = out + i * n;
        for (size_t j = 0; j < n; j++) {
            const uint64_t *r = rnd + (size_t)w * j;
            uint64_t acc = 0;
            for (unsigned q = 0; q < w; q++) {
                uint64_t word = q == w - 1 ? (r[q] & topmask) : r[q];
                acc += mulmod(red64(word, p, mu64), pw[q], p, k, mu);
                acc = acc >= p ? acc - p : acc;
            }
            acc = acc + p - off;
            o[j] = acc >= p ? acc - p : acc;
        }
    }
}

/* ------------------------------------------------------------------ */
/* bit packing (little-endian bit stream)                              */
/* ------------------------------------------------------------------ */

void mixc_he_pack(const uint64_t *in, size_t cnt, unsigned bits, uint8_t *out)
{
    const uint64_t msk = bits >= 64 ? ~(uint64_t)0 : ((1ULL << bits) - 1);
    u128 acc = 0;
    unsigned nb = 0;
    for (size_t j = 0; j < cnt; j++) {
        acc |= (u128)(in[j] & msk) << nb;
        nb += bits;
        while (nb >= 64) {
            uint64_t word = (uint64_t)acc;
            for (int b = 0; b < 8; b++)
                *out++ = (uint8_t)(word >> (8 * b));
            acc >>= 64;
            nb -= 64;
        }
    }
    while (nb > 0) {
        *out++ = (uint8_t)acc;
        acc >>= 8;
        nb = nb > 8 ? nb - 8 : 0;
    }
}

void mixc_he_unpack(const uint8_t *in, size_t cnt, unsigned bits, uint64_t *out)
{
    const uint64_t msk = bits >= 64 ? ~(uint64_t)0 : ((1ULL << bits) - 1);
    const size_t nbytes = (cnt * (size_t)bits + 7) / 8;
    size_t pos = 0;
    u128 acc = 0;
    unsigned nb = 0;
    for (size_t j = 0; j < cnt; j++) {
        while (nb < bits) {
            if (pos + 8 <= nbytes) {
                uint64_t word = 0;
                for (int b = 0; b < 8; b++)
                    word |= (uint64_t)in[pos + b] << (8 * b);
                acc |= (u128)word << nb;
                pos += 8;
                nb += 64;
            } else {
                acc |= (u128)in[pos++] << nb;
                nb += 8;
            }
        }
        out[j] = (uint64_t)acc & msk;
        acc >>= bits;
        nb -= bits;
    }
}

/* ------------------------------------------------------------------ */
/* plaintext modulus t = 2^128: values are (lo, hi) uint64 word pairs   */
/* ------------------------------------------------------------------ */

/* (hi 2^64 + lo) mod p */
static inline uint64_t red128(uint64_t lo, uint64_t hi, const uint64_t *d)
{
    const uint64_t p = d[D_P];
    uint64_t h = mulmod(red64(hi, p, d[D_MU64]), d[D_R64], p, (unsigned)d[D_K], d[D_MU]);
    uint64_t s = h + red64(lo, p, d[D_MU64]);
    return s >= p ? s - p : s;
}

void mixc_he_from_i128(const uint64_t *x, const uint64_t *mods, size_t L, size_t n,
                       uint64_t *out)
{
    for (size_t i = 0; i < L; i++) {
        const uint64_t *d = mods + DESC_WORDS * i;
        const uint64_t p = d[D_P];
        for (size_t j = 0; j < n; j++) {
            u128 v = (u128)x[2 * j + 1] << 64 | x[2 * j];
            int neg = (int)(x[2 * j + 1] >> 63);
            u128 mag = neg ? (u128)0 - v : v; /* -2^127 -> 2^127: still exact */
            uint64_t r = red128((uint64_t)mag, (uint64_t)(mag >> 64), d);
            out[i * n + j] = neg && r ? p - r : r;
        }
    }
}

void mixc_he_encode_scaled128(const uint64_t *m, const uint64_t *q_lo, const uint64_t *mods,
                              size_t L, size_t n, uint64_t *out)
{
    const u128 q = (u128)q_lo[1] << 64 | q_lo[0];
    for (size_t j = 0; j < n; j++) {
        /* Q*m = 2^128 K + r;  round(Q m / 2^128) = K + [r >= 2^127]
         * == (-r + 2^128 [r >= 2^127]) * 2^-128  (mod p_i), as Q == 0 mod p_i */
        u128 r = q * ((u128)m[2 * j + 1] << 64 | m[2 * j]);
        int up = (int)(r >> 127);
        u128 mag = up ? (u128)0 - r : r;
        for (size_t i = 0; i < L; i++) {
            const uint64_t *d = mods + DESC_WORDS * i;
            const uint64_t p = d[D_P];
            uint64_t v = red128((uint64_t)mag, (uint64_t)(mag >> 64), d);
            if (!up)
                v = v ? p - v : 0;
            v = shoup(v, d[D_INV64], d[D_INV64S], p);
            out[i * n + j] = shoup(v, d[D_INV64], d[D_INV64S], p);
        }
    }
}

void mixc_he_decode128(const uint64_t *v, const uint64_t *mods, const uint64_t *crt,
                       size_t L, size_t n, uint64_t *m_out, int64_t *frac_out)
{
    for (size_t j = 0; j < n; j++) {
        u128 ipart = 0, F = 0;
        for (size_t i = 0; i < L; i++) {
            const uint64_t p = mods[DESC_WORDS * i + D_P];
            const uint64_t *c = crt + 6 * i;
            uint64_t y = shoup(v[i * n + j], c[0], c[1], p);
            /* y * floor(2^256 / p) / 2^128  ~  y * 2^128 / p: words 2, 3 are the
             * integer part (mod 2^128), word 1 the top of the fraction */
            u128 t0 = (u128)y * c[2];
            u128 t1 = (u128)y * c[3] + (t0 >> 64);
            u128 t2 = (u128)y * c[4] + (t1 >> 64);
            u128 t3 = (u128)y * c[5] + (t2 >> 64);
            F += (uint64_t)t1;
            ipart += (u128)(uint64_t)t3 << 64 | (uint64_t)t2;
        }
        F += (u128)1 << 63;
        ipart += F >> 64;
        m_out[2 * j] = (uint64_t)ipart;
        m_out[2 * j + 1] = (uint64_t)(ipart >> 64);
        if (frac_out)
            frac_out[j] = (int64_t)((uint64_t)F - ((uint64_t)1 << 63));
    }
}
