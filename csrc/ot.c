/*
 * IKNP oblivious-transfer extension kernels (used by runtime/ot.py).
 *
 * Data layout
 *   - "Columns": the 128 x n bit matrix of IKNP, one row per base OT j, each
 *     row a packed bit stream of n = 64 * n_words bits (bit i of row j is bit
 *     i % 64 of word i / 64), rows stored back to back with a given stride.
 *   - "Rows": the transposed matrix, one 128-bit value per OT i, stored as two
 *     uint64 words (lo = bits j < 64, hi = bits j >= 64): rows[2i], rows[2i+1].
 *     As an AES block the 16 bytes are lo then hi, little endian.
 *
 * PRG: column j of an extension is the ChaCha20 keystream of the 32-byte key
 * keys[32j .. 32j+32) and the given stream id, read from word 'pos' on
 * (mixc_chacha20_fill, csrc/prg.c), so successive batches continue the
 * keystream and never reuse it.
 *
 * Hash: the tweakable circular-correlation-robust hash of Guo-Kolesnikov-
 * Katz-Wang-Yang (GKWY20, "Efficient and Secure Multiparty Computation from
 * Fixed-Key Block Ciphers", S&P 2020, section 7.4), H(i, x) = pi(pi(x) ^ i) ^
 * pi(x) with pi = AES-128 under a fixed public key (the first 128 bits of the
 * fraction of pi) and a 128-bit tweak i.  Every OT hashes under its own
 * tweak: (prefix_lo + j mod 2^64, prefix_hi) for OT j of an IKNP instance
 * (j counts the instance's OTs over the whole session), the prefix being
 * derived from the session (runtime/ot.py).  GKWY20 show that without the
 * tweak the same fixed-key hash across many OTs is not enough (an adversary
 * gets n tries at once); with distinct tweaks H(j, q_j), H(j, q_j ^ s) are
 * pseudorandom in the ideal-permutation model.  Two AES calls per hash.
 * AES runs on VAES (4 blocks per instruction)
 * or AES-NI, picked at run time; a portable table-based AES is the fallback
 * for CPUs without AES-NI (not constant time: the inputs are secret).
 *
 * Transpose: 64x64 bit blocks by Eklundh's recursive block swap; with
 * AVX-512 the three outer stages work on whole zmm registers (8 rows each),
 * and the three inner ones (8x8 sub-blocks) are one byte permutation
 * (vpermb), one GF(2) affine transform (vgf2p8affineqb, which transposes an
 * 8x8 bit matrix held in a qword) and the inverse byte permutation.
 * Portable scalar code is the fallback.
 */
#include <string.h>
#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OT_X86 1
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------
 * AES-128: key expansion (portable) and a portable block cipher
 * ------------------------------------------------------------------------ */

static const uint8_t FIXED_KEY[16] = {
    0x24, 0x3f, 0x6a, 0x88, 0x85, 0xa3, 0x08, 0xd3,
    0x13, 0x19, 0x8a, 0x2e, 0x03, 0x70, 0x73, 0x44,
};

static const uint8_t SBOX[256] = {
    0x63, 0x7c, 0x77, 0x7b, 0xf2, 0x6b, 0x6f, 0xc5, 0x30, 0x01, 0x67, 0x2b, 0xfe, 0xd7, 0xab, 0x76,
    0xca, 0x82, 0xc9, 0x7d, 0xfa, 0x59, 0x47, 0xf0, 0xad, 0xd4, 0xa2, 0xaf, 0x9c, 0xa4, 0x72, 0xc0,
    0xb7, 0xfd, 0x93, 0x26, 0x36, 0x3f, 0xf7, 0xcc, 0x34, 0xa5, 0xe5, 0xf1, 0x71, 0xd8, 0x31, 0x15,
    0x04, 0xc7, 0x23, 0xc3, 0x18, 0x96, 0x05, 0x9a, 0x07, 0x12, 0x80, 0xe2, 0xeb, 0x27, 0xb2, 0x75,
    0x09, 0x83, 0x2c, 0x1a, 0x1b, 0x6e, 0x5a, 0xa0, 0x52, 0x3b, 0xd6, 0xb3, 0x29, 0xe3, 0x2f, 0x84,
    0x53, 0xd1, 0x00, 0xed, 0x20, 0xfc, 0xb1, 0x5b, 0x6a, 0xcb, 0xbe, 0x39, 0x4a, 0x4c, 0x58, 0xcf,
    0xd0, 0xef, 0xaa, 0xfb, 0x43, 0x4d, 0x33, 0x85, 0x45, 0xf9, 0x02, 0x7f, 0x50, 0x3c, 0x9f, 0xa8,
    0x51, 0xa3, 0x40, 0x8f, 0x92, 0x9d, 0x38, 0xf5, 0xbc, 0xb6, 0xda, 0x21, 0x10, 0xff, 0xf3, 0xd2,
    0xcd, 0x0c, 0x13, 0xec, 0x5f, 0x97, 0x44, 0x17, 0xc4, 0xa7, 0x7e, 0x3d, 0x64, 0x5d, 0x19, 0x73,
    0x60, 0x81, 0x4f, 0xdc, 0x22, 0x2a, 0x90, 0x88, 0x46, 0xee, 0xb8, 0x14, 0xde, 0x5e, 0x0b, 0xdb,
    0xe0, 0x32, 0x3a, 0x0a, 0x49, 0x06, 0x24, 0x5c, 0xc2, 0xd3, 0xac, 0x62, 0x91, 0x95, 0xe4, 0x79,
    0xe7, 0xc8, 0x37, 0x6d, 0x8d, 0xd5, 0x4e, 0xa9, 0x6c, 0x56, 0xf4, 0xea, 0x65, 0x7a, 0xae, 0x08,
    0xba, 0x78, 0x25, 0x2e, 0x1c, 0xa6, 0xb4, 0xc6, 0xe8, 0xdd, 0x74, 0x1f, 0x4b, 0xbd, 0x8b, 0x8a,
    0x70, 0x3e, 0xb5, 0x66, 0x48, 0x03, 0xf6, 0x0e, 0x61, 0x35, 0x57, 0xb9, 0x86, 0xc1, 0x1d, 0x9e,
    0xe1, 0xf8, 0x98, 0x11, 0x69, 0xd9, 0x8e, 0x94, 0x9b, 0x1e, 0x87, 0xe9, 0xce, 0x55, 0x28, 0xdf,
    0x8c, 0xa1, 0x89, 0x0d, 0xbf, 0xe6, 0x42, 0x68, 0x41, 0x99, 0x2d, 0x0f, 0xb0, 0x54, 0xbb, 0x16,
};

/* FIPS-197 key expansion: rk = 11 round keys of 16 bytes */
static void aes128_expand(const uint8_t key[16], uint8_t rk[176])
{
    uint8_t rcon = 1;
    memcpy(rk, key, 16);
    for (int i = 16; i < 176; i += 4) {
        uint8_t t[4];
        memcpy(t, rk + i - 4, 4);
        if (i % 16 == 0) {
            uint8_t u = t[0];
            t[0] = (uint8_t)(SBOX[t[1]] ^ rcon);
            t[1] = SBOX[t[2]];
            t[2] = SBOX[t[3]];
            t[3] = SBOX[u];
            rcon = (uint8_t)((rcon << 1) ^ ((rcon >> 7) * 0x1b));
        }
        for (int j = 0; j < 4; j++)
            rk[i + j] = (uint8_t)(rk[i - 16 + j] ^ t[j]);
    }
}

static inline uint8_t xtime(uint8_t x)
{
    return (uint8_t)((x << 1) ^ ((x >> 7) * 0x1b));
}

static void aes128_encrypt_sw(const uint8_t rk[176], const uint8_t in[16], uint8_t out[16])
{
    uint8_t s[16], t[16];
    for (int i = 0; i < 16; i++)
        s[i] = (uint8_t)(in[i] ^ rk[i]);
    for (int round = 1; round <= 10; round++) {
        /* SubBytes + ShiftRows (state is column major: s[4c + r]) */
        for (int c = 0; c < 4; c++)
            for (int r = 0; r < 4; r++)
                t[4 * c + r] = SBOX[s[4 * ((c + r) & 3) + r]];
        if (round != 10) {
            for (int c = 0; c < 4; c++) {
                uint8_t a0 = t[4 * c], a1 = t[4 * c + 1], a2 = t[4 * c + 2], a3 = t[4 * c + 3];
                uint8_t e = (uint8_t)(a0 ^ a1 ^ a2 ^ a3);
                t[4 * c] = (uint8_t)(a0 ^ e ^ xtime((uint8_t)(a0 ^ a1)));
                t[4 * c + 1] = (uint8_t)(a1 ^ e ^ xtime((uint8_t)(a1 ^ a2)));
                t[4 * c + 2] = (uint8_t)(a2 ^ e ^ xtime((uint8_t)(a2 ^ a3)));
                t[4 * c + 3] = (uint8_t)(a3 ^ e ^ xtime((uint8_t)(a3 ^ a0)));
            }
        }
        for (int i = 0; i < 16; i++)
            s[i] = (uint8_t)(t[i] ^ rk[16 * round + i]);
    }
    memcpy(out, s, 16);
}

/* ------------------------------------------------------------------------
 * run-time CPU dispatch
 * ------------------------------------------------------------------------ */

enum { AES_SW = 0, AES_NI = 1, AES_VAES = 2 };

static int aes_level(void)
{
#ifdef OT_X86
    __builtin_cpu_init(); /* idempotent; safe however the library was loaded */
    if (__builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("aes"))
        return AES_VAES;
    if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1"))
        return AES_NI;
#endif
    return AES_SW;
}

static int have_gfni_transpose(void)
{
#ifdef OT_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------------
 * the hash: out[i] = H(i', y) = pi(pi(y) ^ i') ^ pi(y), y = in[i] ^ delta,
 * tweak i' = (tw[0] + i mod 2^64, tw[1]) as an AES block (lo word, hi word).
 * in, out: n rows of 2 words; delta: 2 words or NULL (zero); out may equal in.
 * ------------------------------------------------------------------------ */

static void bytes_of(const uint64_t w[2], uint8_t b[16])
{
    for (int k = 0; k < 8; k++) {
        b[k] = (uint8_t)(w[0] >> (8 * k));
        b[8 + k] = (uint8_t)(w[1] >> (8 * k));
    }
}

static void words_of(const uint8_t b[16], uint64_t w[2])
{
    w[0] = w[1] = 0;
    for (int k = 7; k >= 0; k--) {
        w[0] = (w[0] << 8) | b[k];
        w[1] = (w[1] << 8) | b[8 + k];
    }
}

static void hash_rows_sw(const uint8_t *rk, const uint64_t *in, const uint64_t *delta,
                         const uint64_t *tw, uint64_t *out, size_t n)
{
    uint64_t d0 = delta ? delta[0] : 0, d1 = delta ? delta[1] : 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t y[2] = {in[2 * i] ^ d0, in[2 * i + 1] ^ d1}, py[2], z[2];
        uint8_t blk[16], enc[16];
        bytes_of(y, blk);
        aes128_encrypt_sw(rk, blk, enc);
        words_of(enc, py);
        uint64_t x[2] = {py[0] ^ (tw[0] + (uint64_t)i), py[1] ^ tw[1]};
        bytes_of(x, blk);
        aes128_encrypt_sw(rk, blk, enc);
        words_of(enc, z);
        out[2 * i] = z[0] ^ py[0];
        out[2 * i + 1] = z[1] ^ py[1];
    }
}

#ifdef OT_X86
#define AES10_NI(v, k)                                   \
    do {                                                 \
        for (int m_ = 0; m_ < 8; m_++)                   \
            v[m_] = _mm_xor_si128(v[m_], k[0]);          \
        for (int r_ = 1; r_ < 10; r_++)                  \
            for (int m_ = 0; m_ < 8; m_++)               \
                v[m_] = _mm_aesenc_si128(v[m_], k[r_]);  \
        for (int m_ = 0; m_ < 8; m_++)                   \
            v[m_] = _mm_aesenclast_si128(v[m_], k[10]);  \
    } while (0)

__attribute__((target("aes,sse4.1")))
static inline __m128i aes_one_ni(__m128i v, const __m128i k[11])
{
    v = _mm_xor_si128(v, k[0]);
    for (int r = 1; r < 10; r++)
        v = _mm_aesenc_si128(v, k[r]);
    return _mm_aesenclast_si128(v, k[10]);
}

__attribute__((target("aes,sse4.1")))
static void hash_rows_ni(const uint8_t *rk, const uint64_t *in, const uint64_t *delta,
                         const uint64_t *tw, uint64_t *out, size_t n)
{
    __m128i k[11];
    for (int r = 0; r < 11; r++)
        k[r] = _mm_loadu_si128((const __m128i *)(rk + 16 * r));
    const __m128i dl = delta ? _mm_loadu_si128((const __m128i *)delta) : _mm_setzero_si128();
    const __m128i one = _mm_set_epi64x(0, 1);
    __m128i t = _mm_loadu_si128((const __m128i *)tw);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i p[8], z[8];
        for (int m = 0; m < 8; m++)
            p[m] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + 2 * (i + m))), dl);
        AES10_NI(p, k);
        for (int m = 0; m < 8; m++) {
            z[m] = _mm_xor_si128(p[m], t);
            t = _mm_add_epi64(t, one);
        }
        AES10_NI(z, k);
        for (int m = 0; m < 8; m++)
            _mm_storeu_si128((__m128i *)(out + 2 * (i + m)), _mm_xor_si128(z[m], p[m]));
    }
    for (; i < n; i++) {
        __m128i p = aes_one_ni(
            _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + 2 * i)), dl), k);
        __m128i z = aes_one_ni(_mm_xor_si128(p, t), k);
        t = _mm_add_epi64(t, one);
        _mm_storeu_si128((__m128i *)(out + 2 * i), _mm_xor_si128(z, p));
    }
}

#define VW 4 /* zmm registers (4 blocks each) per pass: 16 rows in flight */
#define AES10_VAES(v, k)                                       \
    do {                                                       \
        for (int m_ = 0; m_ < VW; m_++)                         \
            v[m_] = _mm512_xor_si512(v[m_], k[0]);             \
        for (int r_ = 1; r_ < 10; r_++)                        \
            for (int m_ = 0; m_ < VW; m_++)                     \
                v[m_] = _mm512_aesenc_epi128(v[m_], k[r_]);    \
        for (int m_ = 0; m_ < VW; m_++)                         \
            v[m_] = _mm512_aesenclast_epi128(v[m_], k[10]);    \
    } while (0)

__attribute__((target("aes,sse4.1,avx2,avx512f,avx512bw,vaes")))
static void hash_rows_vaes(const uint8_t *rk, const uint64_t *in, const uint64_t *delta,
                           const uint64_t *tw, uint64_t *out, size_t n)
{
    __m512i k[11];
    for (int r = 0; r < 11; r++)
        k[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(rk + 16 * r)));
    const __m512i dl = delta ? _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)delta))
                             : _mm512_setzero_si512();
    /* lane l of register m holds the tweak of row i + 4m + l */
    const __m512i step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
    __m512i t = _mm512_add_epi64(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tw)),
                                 _mm512_set_epi64(0, 3, 0, 2, 0, 1, 0, 0));
    size_t i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        __m512i p[VW], z[VW];
        for (int m = 0; m < VW; m++)
            p[m] = _mm512_xor_si512(_mm512_loadu_si512(in + 2 * i + 8 * m), dl);
        AES10_VAES(p, k);
        for (int m = 0; m < VW; m++) {
            z[m] = _mm512_xor_si512(p[m], t);
            t = _mm512_add_epi64(t, step);
        }
        AES10_VAES(z, k);
        for (int m = 0; m < VW; m++)
            _mm512_storeu_si512(out + 2 * i + 8 * m, _mm512_xor_si512(z[m], p[m]));
    }
    if (i < n) {
        uint64_t rest[2] = {tw[0] + (uint64_t)i, tw[1]};
        hash_rows_ni(rk, in + 2 * i, delta, rest, out + 2 * i, n - i);
    }
}
#endif

typedef struct {
    uint8_t rk[176];
    int level;
} hasher;

static void hasher_init(hasher *h, int force_portable)
{
    aes128_expand(FIXED_KEY, h->rk);
    h->level = force_portable ? AES_SW : aes_level();
}

/* rows in[0..n) with the tweaks of OTs tw0 + off .. tw0 + off + n - 1 */
static void hash_rows(const hasher *h, const uint64_t *in, const uint64_t *delta,
                      const uint64_t *tw, size_t off, uint64_t *out, size_t n)
{
    const uint64_t t[2] = {tw[0] + (uint64_t)off, tw[1]};
#ifdef OT_X86
    if (h->level == AES_VAES) {
        hash_rows_vaes(h->rk, in, delta, t, out, n);
        return;
    }
    if (h->level == AES_NI) {
        hash_rows_ni(h->rk, in, delta, t, out, n);
        return;
    }
#endif
    hash_rows_sw(h->rk, in, delta, t, out, n);
}

/* rows are hashed HB at a time into a stack buffer */
#define HB 256

void mixc_ot_hash(const uint64_t *rows, size_t n, const uint64_t *delta, const uint64_t *tweak,
                  uint64_t *out, unsigned out_words, int portable)
{
    hasher h;
    hasher_init(&h, portable);
    if (out_words == 2) {
        hash_rows(&h, rows, delta, tweak, 0, out, n);
        return;
    }
    uint64_t buf[2 * HB];
    for (size_t i0 = 0; i0 < n; i0 += HB) {
        size_t m = n - i0 < HB ? n - i0 : HB;
        hash_rows(&h, rows + 2 * i0, delta, tweak, i0, buf, m);
        for (size_t i = 0; i < m; i++)
            out[i0 + i] = buf[2 * i];
    }
}

/* ------------------------------------------------------------------------
 * 128 x (64 n_words) bit transpose
 * ------------------------------------------------------------------------ */

/* in place: afterwards a[c] bit r = (before) a[r] bit c */
static void transpose64_sw(uint64_t a[64])
{
    uint64_t m = 0x00000000FFFFFFFFull;
    for (int j = 32; j; j >>= 1, m ^= m << j) {
        for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
            uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
            a[k] ^= t << j;
            a[k | j] ^= t;
        }
    }
}

static void transpose128_sw(const uint64_t *in, size_t stride, size_t n_words, uint64_t *out)
{
    uint64_t lo[64], hi[64];
    for (size_t w = 0; w < n_words; w++) {
        for (int r = 0; r < 64; r++) {
            lo[r] = in[(size_t)r * stride + w];
            hi[r] = in[(size_t)(r + 64) * stride + w];
        }
        transpose64_sw(lo);
        transpose64_sw(hi);
        uint64_t *o = out + 128 * w;
        for (int c = 0; c < 64; c++) {
            o[2 * c] = lo[c];
            o[2 * c + 1] = hi[c];
        }
    }
}

#ifdef OT_X86
#define TR_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vbmi,gfni")))

/* one outer Eklundh stage between two registers: rows k (in a) and k + j (in b) */
#define TR_PAIR(a, b, j, m)                                                        \
    do {                                                                           \
        __m512i t_ = _mm512_and_si512(_mm512_xor_si512(_mm512_srli_epi64(a, j), b), m); \
        a = _mm512_xor_si512(a, _mm512_slli_epi64(t_, j));                         \
        b = _mm512_xor_si512(b, t_);                                               \
    } while (0)

/* z[0..7]: z[v] lane l = row 8v + l of a 64x64 bit matrix; transposed in place */
TR_TARGET static inline void transpose64_zmm(__m512i z[8], __m512i p1, __m512i p2, __m512i gx)
{
    const __m512i m32 = _mm512_set1_epi64(0x00000000FFFFFFFFll);
    const __m512i m16 = _mm512_set1_epi64(0x0000FFFF0000FFFFll);
    const __m512i m8 = _mm512_set1_epi64(0x00FF00FF00FF00FFll);
    for (int v = 0; v < 4; v++)
        TR_PAIR(z[v], z[v + 4], 32, m32);
    TR_PAIR(z[0], z[2], 16, m16);
    TR_PAIR(z[1], z[3], 16, m16);
    TR_PAIR(z[4], z[6], 16, m16);
    TR_PAIR(z[5], z[7], 16, m16);
    for (int v = 0; v < 8; v += 2)
        TR_PAIR(z[v], z[v + 1], 8, m8);
    /* inner stages: transpose every 8x8 block (8 rows = 8 lanes, 8 bits = a byte) */
    for (int v = 0; v < 8; v++) {
        __m512i y = _mm512_permutexvar_epi8(p1, z[v]);
        y = _mm512_gf2p8affine_epi64_epi8(gx, y, 0);
        z[v] = _mm512_permutexvar_epi8(p2, y);
    }
}

/* r[0..7] (8 rows, 8 words each) -> r[i] = word i of the 8 rows */
TR_TARGET static inline void transpose8x8_q(__m512i r[8])
{
    const __m512i ia = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    const __m512i ib = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    const __m512i ic = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
    const __m512i id = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
    __m512i t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm512_unpacklo_epi64(r[2 * k], r[2 * k + 1]);     /* words 0,2,4,6 */
        t[2 * k + 1] = _mm512_unpackhi_epi64(r[2 * k], r[2 * k + 1]); /* words 1,3,5,7 */
    }
    /* u[0]: rows 0-3 words 0|4, u[1]: rows 0-3 words 1|5, u[2]: 2|6, u[3]: 3|7; u[4..7] rows 4-7 */
    for (int h = 0; h < 2; h++) {
        __m512i *tt = t + 4 * h;
        u[4 * h + 0] = _mm512_permutex2var_epi64(tt[0], ia, tt[2]);
        u[4 * h + 1] = _mm512_permutex2var_epi64(tt[1], ia, tt[3]);
        u[4 * h + 2] = _mm512_permutex2var_epi64(tt[0], ib, tt[2]);
        u[4 * h + 3] = _mm512_permutex2var_epi64(tt[1], ib, tt[3]);
    }
    for (int w = 0; w < 4; w++) {
        r[w] = _mm512_permutex2var_epi64(u[w], ic, u[4 + w]);
        r[w + 4] = _mm512_permutex2var_epi64(u[w], id, u[4 + w]);
    }
}

TR_TARGET static void transpose128_gfni(const uint64_t *in, size_t stride, size_t n_words,
                                        uint64_t *out)
{
    /* vpermb indices: p1[8b + 7 - l] = 8l + b (gather byte b of each lane into
     * qword b, rows reversed), p2[8c + b] = 8b + c (scatter back) */
    uint8_t i1[64], i2[64];
    for (int b = 0; b < 8; b++)
        for (int l = 0; l < 8; l++) {
            i1[8 * b + 7 - l] = (uint8_t)(8 * l + b);
            i2[8 * l + b] = (uint8_t)(8 * b + l);
        }
    const __m512i p1 = _mm512_loadu_si512(i1), p2 = _mm512_loadu_si512(i2);
    const __m512i gx = _mm512_set1_epi64(0x8040201008040201ll);
    const __m512i ilo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i ihi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    size_t w0 = 0;
    __m512i blk[8][16]; /* blk[i][v]: word w0 + i of rows 8v .. 8v + 7 */
    for (; w0 + 8 <= n_words; w0 += 8) {
        for (int v = 0; v < 16; v++) {
            __m512i r[8];
            for (int l = 0; l < 8; l++)
                r[l] = _mm512_loadu_si512(in + (size_t)(8 * v + l) * stride + w0);
            transpose8x8_q(r);
            for (int i = 0; i < 8; i++)
                blk[i][v] = r[i];
        }
        for (int i = 0; i < 8; i++) {
            __m512i *lo = blk[i], *hi = blk[i] + 8;
            transpose64_zmm(lo, p1, p2, gx);
            transpose64_zmm(hi, p1, p2, gx);
            uint64_t *o = out + 128 * (w0 + i);
            for (int v = 0; v < 8; v++) {
                _mm512_storeu_si512(o + 16 * v, _mm512_permutex2var_epi64(lo[v], ilo, hi[v]));
                _mm512_storeu_si512(o + 16 * v + 8, _mm512_permutex2var_epi64(lo[v], ihi, hi[v]));
            }
        }
    }
    for (; w0 < n_words; w0++) {
        __m512i z[16];
        for (int v = 0; v < 16; v++) {
            uint64_t a[8];
            for (int l = 0; l < 8; l++)
                a[l] = in[(size_t)(8 * v + l) * stride + w0];
            z[v] = _mm512_loadu_si512(a);
        }
        transpose64_zmm(z, p1, p2, gx);
        transpose64_zmm(z + 8, p1, p2, gx);
        uint64_t *o = out + 128 * w0;
        for (int v = 0; v < 8; v++) {
            _mm512_storeu_si512(o + 16 * v, _mm512_permutex2var_epi64(z[v], ilo, z[8 + v]));
            _mm512_storeu_si512(o + 16 * v + 8, _mm512_permutex2var_epi64(z[v], ihi, z[8 + v]));
        }
    }
}
#endif

static void transpose128(const uint64_t *in, size_t stride, size_t n_words, uint64_t *out,
                         int portable)
{
#ifdef OT_X86
    if (!portable && have_gfni_transpose()) {
        transpose128_gfni(in, stride, n_words, out);
        return;
    }
#endif
    transpose128_sw(in, stride, n_words, out);
}

void mixc_ot_transpose128(const uint64_t *in, size_t stride, size_t n_words, uint64_t *out,
                          int portable)
{
    transpose128(in, stride, n_words, out, portable);
}

/* ------------------------------------------------------------------------
 * IKNP column expansion
 * ------------------------------------------------------------------------ */

#define CW 128 /* words per column per chunk (8192 OTs); multiple of 8 */

size_t mixc_iknp_ws_words(void)
{
    return (size_t)128 * CW + CW;
}

void mixc_iknp_recv_ext(const uint8_t *keys0, const uint8_t *keys1, uint64_t stream,
                        uint64_t pos, const uint64_t *choice, size_t n_words, uint64_t *u,
                        uint64_t *t, uint64_t *ws, size_t ws_words)
{
    if (ws_words < mixc_iknp_ws_words())
        return;
    uint64_t *cols = ws, *tmp = ws + (size_t)128 * CW;
    for (size_t c0 = 0; c0 < n_words; c0 += CW) {
        size_t cw = n_words - c0 < CW ? n_words - c0 : CW;
        uint64_t p = pos + c0;
        for (int j = 0; j < 128; j++) {
            uint64_t *col = cols + (size_t)j * CW;
            mixc_chacha20_fill(keys0 + 32 * j, stream, p >> 3, (unsigned)(p & 7), col, cw);
            mixc_chacha20_fill(keys1 + 32 * j, stream, p >> 3, (unsigned)(p & 7), tmp, cw);
            uint64_t *uj = u + (size_t)j * n_words + c0;
            const uint64_t *r = choice + c0;
            for (size_t w = 0; w < cw; w++)
                uj[w] = col[w] ^ tmp[w] ^ r[w];
        }
        transpose128(cols, CW, cw, t + 128 * c0, 0);
    }
}

void mixc_iknp_send_ext(const uint8_t *keys, const uint64_t *s, uint64_t stream, uint64_t pos,
                        const uint64_t *u, size_t n_words, uint64_t *q, uint64_t *ws,
                        size_t ws_words)
{
    if (ws_words < mixc_iknp_ws_words())
        return;
    uint64_t *cols = ws;
    for (size_t c0 = 0; c0 < n_words; c0 += CW) {
        size_t cw = n_words - c0 < CW ? n_words - c0 : CW;
        uint64_t p = pos + c0;
        for (int j = 0; j < 128; j++) {
            uint64_t *col = cols + (size_t)j * CW;
            mixc_chacha20_fill(keys + 32 * j, stream, p >> 3, (unsigned)(p & 7), col, cw);
            if ((s[j >> 6] >> (j & 63)) & 1) {
                const uint64_t *uj = u + (size_t)j * n_words + c0;
                for (size_t w = 0; w < cw; w++)
                    col[w] ^= uj[w];
            }
        }
        transpose128(cols, CW, cw, q + 128 * c0, 0);
    }
}

/* ------------------------------------------------------------------------
 * finishing kernels
 * ------------------------------------------------------------------------ */

/* out[w] bit i = bit 0 of H(rows[64w + i] ^ delta) */
void mixc_ot_hash_bits(const uint64_t *rows, size_t n_words, const uint64_t *delta,
                       const uint64_t *tweak, uint64_t *out)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t buf[2 * HB];
    for (size_t w0 = 0; w0 < n_words; w0 += HB / 64) {
        size_t nw = n_words - w0 < HB / 64 ? n_words - w0 : HB / 64;
        hash_rows(&h, rows + 128 * w0, delta, tweak, 64 * w0, buf, 64 * nw);
        for (size_t w = 0; w < nw; w++) {
            uint64_t acc = 0;
            for (int i = 0; i < 64; i++)
                acc |= (buf[2 * (64 * w + i)] & 1) << i;
            out[w0 + w] = acc;
        }
    }
}

/* bit COT (GF(2)) sender: m0 = hash bits of q, m1 = of q ^ s, d = m0 ^ m1 ^ x */
void mixc_bitcot_send(const uint64_t *q, size_t n_words, const uint64_t *s, const uint64_t *x,
                      const uint64_t *tweak, uint64_t *m0, uint64_t *d)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * HB], b1[2 * HB];
    for (size_t w0 = 0; w0 < n_words; w0 += HB / 64) {
        size_t nw = n_words - w0 < HB / 64 ? n_words - w0 : HB / 64;
        hash_rows(&h, q + 128 * w0, NULL, tweak, 64 * w0, b0, 64 * nw);
        hash_rows(&h, q + 128 * w0, s, tweak, 64 * w0, b1, 64 * nw);
        for (size_t w = 0; w < nw; w++) {
            uint64_t a0 = 0, a1 = 0;
            for (int i = 0; i < 64; i++) {
                a0 |= (b0[2 * (64 * w + i)] & 1) << i;
                a1 |= (b1[2 * (64 * w + i)] & 1) << i;
            }
            m0[w0 + w] = a0;
            d[w0 + w] = a0 ^ a1 ^ x[w0 + w];
        }
    }
}

/* COT over Z_2^64, sender: x = H(q)_lo, d = x + delta_i - H(q ^ s)_lo
 * (delta_i = delta[i] if delta_per_ot else delta[0]) */
void mixc_cot_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *delta,
                   int delta_per_ot, const uint64_t *tweak, uint64_t *x, uint64_t *d)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * HB], b1[2 * HB];
    for (size_t i0 = 0; i0 < n; i0 += HB) {
        size_t m = n - i0 < HB ? n - i0 : HB;
        hash_rows(&h, q + 2 * i0, NULL, tweak, i0, b0, m);
        hash_rows(&h, q + 2 * i0, s, tweak, i0, b1, m);
        for (size_t i = 0; i < m; i++) {
            uint64_t dl = delta_per_ot ? delta[i0 + i] : delta[0];
            x[i0 + i] = b0[2 * i];
            d[i0 + i] = b0[2 * i] + dl - b1[2 * i];
        }
    }
}

/* COT receiver finish: y[i] = h[i] + c_i * d[i], c_i = bit i of the packed choices */
void mixc_cot_recv_fix(const uint64_t *h, const uint64_t *choice, const uint64_t *d, size_t n,
                       uint64_t *y)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t c = (choice[i >> 6] >> (i & 63)) & 1;
        y[i] = h[i] + (d[i] & (0 - c));
    }
}

/* Gilboa multiplication, 64 COTs per product p (OT 64p + k for bit k of b_p),
 * correction d_k truncated to 64 - k bits and packed LSB first at bit offset
 * 64k - k(k-1)/2 of a GILBOA_WORDS-word record per product. */
#define GILBOA_WORDS 33

size_t mixc_gilboa_words(void)
{
    return GILBOA_WORDS;
}

static inline void put_bits(uint64_t *rec, unsigned off, uint64_t v, unsigned width)
{
    /* v < 2^width, 1 <= width <= 64 */
    unsigned w = off >> 6, b = off & 63;
    rec[w] |= v << b;
    if (b && b + width > 64)
        rec[w + 1] |= v >> (64 - b);
}

static inline uint64_t get_bits(const uint64_t *rec, unsigned off, unsigned width)
{
    unsigned w = off >> 6, b = off & 63;
    uint64_t v = rec[w] >> b;
    if (b && b + width > 64)
        v |= rec[w + 1] << (64 - b);
    return width == 64 ? v : v & ((1ull << width) - 1);
}

/* sender (holds a): share[p] = -sum_k 2^k H(q_{p,k})_lo;
 * d_{p,k} = (H(q)_lo + a_p - H(q ^ s)_lo) mod 2^(64-k) */
void mixc_gilboa_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *a,
                      const uint64_t *tweak, uint64_t *share, uint64_t *dpack)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * 64], b1[2 * 64];
    for (size_t p = 0; p < n; p++) {
        hash_rows(&h, q + 128 * p, NULL, tweak, 64 * p, b0, 64);
        hash_rows(&h, q + 128 * p, s, tweak, 64 * p, b1, 64);
        uint64_t *rec = dpack + GILBOA_WORDS * p;
        memset(rec, 0, GILBOA_WORDS * sizeof(uint64_t));
        uint64_t acc = 0, ap = a[p];
        unsigned off = 0;
        for (unsigned k = 0; k < 64; k++) {
            uint64_t h0 = b0[2 * k], h1 = b1[2 * k];
            unsigned width = 64 - k;
            uint64_t dk = h0 + ap - h1;
            if (width < 64)
                dk &= (1ull << width) - 1;
            put_bits(rec, off, dk, width);
            off += width;
            acc += h0 << k;
        }
        share[p] = 0 - acc;
    }
}

/* receiver, before the corrections arrive: share[p] = sum_k 2^k H(t_{p,k})_lo */
void mixc_gilboa_recv_hash(const uint64_t *t, size_t n, const uint64_t *tweak, uint64_t *share)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * HB];
    for (size_t p0 = 0; p0 < n; p0 += HB / 64) {
        size_t np = n - p0 < HB / 64 ? n - p0 : HB / 64;
        hash_rows(&h, t + 128 * p0, NULL, tweak, 64 * p0, b0, 64 * np);
        for (size_t p = 0; p < np; p++) {
            uint64_t acc = 0;
            for (unsigned k = 0; k < 64; k++)
                acc += b0[2 * (64 * p + k)] << k;
            share[p0 + p] = acc;
        }
    }
}

/* receiver, after: share[p] += sum_k 2^k b_{p,k} d_{p,k} */
void mixc_gilboa_recv_fix(const uint64_t *b, const uint64_t *dpack, size_t n, uint64_t *share)
{
    for (size_t p = 0; p < n; p++) {
        const uint64_t *rec = dpack + GILBOA_WORDS * p;
        uint64_t acc = 0, bp = b[p];
        unsigned off = 0;
        for (unsigned k = 0; k < 64; k++) {
            unsigned width = 64 - k;
            uint64_t dk = get_bits(rec, off, width);
            off += width;
            acc += (dk & (0 - ((bp >> k) & 1))) << k;
        }
        share[p] += acc;
    }
}

/* ------------------------------------------------------------------------
 * 128-bit messages (``ring: 128`` devices): the COT messages are the whole
 * 128-bit hash H(i, x) instead of its low word.  u128 values are two words,
 * low first (the u128 ring's layout, csrc/ring128.c).
 * ------------------------------------------------------------------------ */

typedef unsigned __int128 ot_u128;

static inline ot_u128 load128(const uint64_t *w)
{
    return (ot_u128)w[0] | ((ot_u128)w[1] << 64);
}

static inline void store128(uint64_t *w, ot_u128 v)
{
    w[0] = (uint64_t)v;
    w[1] = (uint64_t)(v >> 64);
}

/* v < 2^width, 1 <= width <= 128 */
static inline void put_bits128(uint64_t *rec, unsigned off, ot_u128 v, unsigned width)
{
    if (width > 64) {
        put_bits(rec, off, (uint64_t)v, 64);
        put_bits(rec, off + 64, (uint64_t)(v >> 64), width - 64);
    } else {
        put_bits(rec, off, (uint64_t)v, width);
    }
}

static inline ot_u128 get_bits128(const uint64_t *rec, unsigned off, unsigned width)
{
    if (width > 64)
        return (ot_u128)get_bits(rec, off, 64) |
               ((ot_u128)get_bits(rec, off + 64, width - 64) << 64);
    return get_bits(rec, off, width);
}

/* Gilboa over Z_2^128: 128 COTs per product p (OT 128p + k for bit k of b_p),
 * correction d_k truncated to 128 - k bits, packed LSB first at bit offset
 * 128k - k(k-1)/2 of a GILBOA128_WORDS-word record (8256 bits exactly). */
#define GILBOA128_WORDS 129

size_t mixc_gilboa128_words(void)
{
    return GILBOA128_WORDS;
}

void mixc_gilboa128_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *a,
                         const uint64_t *tweak, uint64_t *share, uint64_t *dpack)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * 128], b1[2 * 128];
    for (size_t p = 0; p < n; p++) {
        hash_rows(&h, q + 256 * p, NULL, tweak, 128 * p, b0, 128);
        hash_rows(&h, q + 256 * p, s, tweak, 128 * p, b1, 128);
        uint64_t *rec = dpack + GILBOA128_WORDS * p;
        memset(rec, 0, GILBOA128_WORDS * sizeof(uint64_t));
        ot_u128 acc = 0, ap = load128(a + 2 * p);
        unsigned off = 0;
        for (unsigned k = 0; k < 128; k++) {
            ot_u128 h0 = load128(b0 + 2 * k), dk = h0 + ap - load128(b1 + 2 * k);
            unsigned width = 128 - k;
            if (width < 128)
                dk &= ((ot_u128)1 << width) - 1;
            put_bits128(rec, off, dk, width);
            off += width;
            acc += h0 << k;
        }
        store128(share + 2 * p, 0 - acc);
    }
}

void mixc_gilboa128_recv_hash(const uint64_t *t, size_t n, const uint64_t *tweak,
                              uint64_t *share)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * HB];
    for (size_t p0 = 0; p0 < n; p0 += HB / 128) {
        size_t np = n - p0 < HB / 128 ? n - p0 : HB / 128;
        hash_rows(&h, t + 256 * p0, NULL, tweak, 128 * p0, b0, 128 * np);
        for (size_t p = 0; p < np; p++) {
            ot_u128 acc = 0;
            for (unsigned k = 0; k < 128; k++)
                acc += load128(b0 + 2 * (128 * p + k)) << k;
            store128(share + 2 * (p0 + p), acc);
        }
    }
}

void mixc_gilboa128_recv_fix(const uint64_t *b, const uint64_t *dpack, size_t n,
                             uint64_t *share)
{
    for (size_t p = 0; p < n; p++) {
        const uint64_t *rec = dpack + GILBOA128_WORDS * p;
        ot_u128 acc = 0;
        unsigned off = 0;
        for (unsigned k = 0; k < 128; k++) {
            unsigned width = 128 - k;
            ot_u128 dk = get_bits128(rec, off, width);
            off += width;
            if ((b[2 * p + (k >> 6)] >> (k & 63)) & 1)
                acc += dk << k;
        }
        store128(share + 2 * p, load128(share + 2 * p) + acc);
    }
}

/* bit-OLE over Z_2^128 (one COT per bit, delta_i = the sender's bit a_i), sender:
 * share_i = -H(q_i), d_i = H(q_i) + a_i - H(q_i ^ s) */
void mixc_bitole128_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *a,
                         const uint64_t *tweak, uint64_t *share, uint64_t *d)
{
    hasher h;
    hasher_init(&h, 0);
    uint64_t b0[2 * HB], b1[2 * HB];
    for (size_t i0 = 0; i0 < n; i0 += HB) {
        size_t m = n - i0 < HB ? n - i0 : HB;
        hash_rows(&h, q + 2 * i0, NULL, tweak, i0, b0, m);
        hash_rows(&h, q + 2 * i0, s, tweak, i0, b1, m);
        for (size_t i = 0; i < m; i++) {
            ot_u128 h0 = load128(b0 + 2 * i);
            store128(share + 2 * (i0 + i), 0 - h0);
            store128(d + 2 * (i0 + i), h0 + a[i0 + i] - load128(b1 + 2 * i));
        }
    }
}

/* receiver finish: share_i += c_i d_i (c_i = bit i of the packed choices; share = H(t)) */
void mixc_bitole128_recv_fix(const uint64_t *choice, const uint64_t *d, size_t n,
                             uint64_t *share)
{
    for (size_t i = 0; i < n; i++)
        if ((choice[i >> 6] >> (i & 63)) & 1)
            store128(share + 2 * i, load128(share + 2 * i) + load128(d + 2 * i));
}
