/*
 * Bit-level kernels for boolean (XOR) shares packed 64 bits per uint64 word:
 * even/odd unzip of a bit stream, pack / unpack between one-bit-per-element
 * arrays and packed words, elementwise XOR / AND / NOT and popcount.
 *
 * Bit order: stream bit 64*i + j is bit j (LSB = 0) of word i.
 *
 * With BMI2 (-march=native on the build machine) unzip and u8 pack use
 * _pext_u64; with AVX-512F the u64 pack / unpack use mask registers, and
 * with AVX-512 VBMI + GFNI unzip runs 16 words at a time in vector registers.  Each
 * has a portable fallback (shift-and-mask) compiled when the instruction set
 * is not available, with identical results.
 */
#include <string.h>
#include "kernels.h"

#if defined(__BMI2__) || defined(__AVX512F__) || defined(__GFNI__)
#include <immintrin.h>
#endif

#define M_EVEN UINT64_C(0x5555555555555555)
#define M_ODD  UINT64_C(0xAAAAAAAAAAAAAAAA)

/* ---- compress the even bits of x into its low 32 bits ---- */
static inline uint64_t even32(uint64_t x)
{
#ifdef __BMI2__
    return _pext_u64(x, M_EVEN);
#else
    x &= M_EVEN;
    x = (x | (x >> 1)) & UINT64_C(0x3333333333333333);
    x = (x | (x >> 2)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    x = (x | (x >> 4)) & UINT64_C(0x00FF00FF00FF00FF);
    x = (x | (x >> 8)) & UINT64_C(0x0000FFFF0000FFFF);
    x = (x | (x >> 16)) & UINT64_C(0x00000000FFFFFFFF);
    return x;
#endif
}

static inline uint64_t odd32(uint64_t x)
{
#ifdef __BMI2__
    return _pext_u64(x, M_ODD);
#else
    return even32(x >> 1);
#endif
}

#if defined(__AVX512F__) && defined(__AVX512VBMI__) && defined(__GFNI__)
#define MIXC_UNZIP_AVX512 1
/* 16 input words -> 8 even + 8 odd words.
 * 1. gf2p8affine permutes the bits of every byte to [evens | odds << 4];
 * 2. byte i of E = low nibble of byte i | low nibble of byte i+1 << 4
 *    (select between x and x >> 4 with 0x0F), likewise O from x >> 4, x >> 8;
 *    the even-indexed bytes of E / O hold the 8 even / odd bits of 16 stream bits;
 * 3. vpermt2b gathers the even-indexed bytes of both halves. */
static inline void unzip16(const uint64_t *in, uint64_t *even, uint64_t *odd)
{
    const __m512i perm = _mm512_set1_epi64((long long)UINT64_C(0x0104104002082080));
    const __m512i lo = _mm512_set1_epi8(0x0F);
    const __m512i idx = _mm512_set_epi8(
        126, 124, 122, 120, 118, 116, 114, 112, 110, 108, 106, 104, 102, 100, 98, 96,
        94, 92, 90, 88, 86, 84, 82, 80, 78, 76, 74, 72, 70, 68, 66, 64,
        62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32,
        30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512i a = _mm512_gf2p8affine_epi64_epi8(_mm512_loadu_si512((const void *)in), perm, 0);
    __m512i b = _mm512_gf2p8affine_epi64_epi8(_mm512_loadu_si512((const void *)(in + 8)), perm, 0);
    __m512i a4 = _mm512_srli_epi64(a, 4), a8 = _mm512_srli_epi64(a, 8);
    __m512i b4 = _mm512_srli_epi64(b, 4), b8 = _mm512_srli_epi64(b, 8);
    /* 0xCA: lo ? x : y, bitwise */
    __m512i ea = _mm512_ternarylogic_epi64(lo, a, a4, 0xCA);
    __m512i eb = _mm512_ternarylogic_epi64(lo, b, b4, 0xCA);
    __m512i oa = _mm512_ternarylogic_epi64(lo, a4, a8, 0xCA);
    __m512i ob = _mm512_ternarylogic_epi64(lo, b4, b8, 0xCA);
    _mm512_storeu_si512((void *)even, _mm512_permutex2var_epi8(ea, idx, eb));
    _mm512_storeu_si512((void *)odd, _mm512_permutex2var_epi8(oa, idx, ob));
}
#endif

void mixc_bits_unzip(const uint64_t *in, size_t n_words, uint64_t *even, uint64_t *odd)
{
    size_t half = n_words / 2;
    size_t k = 0;
#ifdef MIXC_UNZIP_AVX512
    for (; k + 8 <= half; k += 8)
        unzip16(in + 2 * k, even + k, odd + k);
#endif
    for (; k < half; k++) {
        uint64_t lo = in[2 * k], hi = in[2 * k + 1];
        even[k] = even32(lo) | (even32(hi) << 32);
        odd[k] = odd32(lo) | (odd32(hi) << 32);
    }
    if (n_words & 1) {
        uint64_t lo = in[n_words - 1];
        even[half] = even32(lo);
        odd[half] = odd32(lo);
    }
}

/* ---- pack: bit 0 of each element -> one bit ---- */

/* bit 0 of n <= 64 uint64 elements into one word (bits >= n are zero) */
static inline uint64_t pack_word_u64(const uint64_t *b, size_t n)
{
    uint64_t w = 0;
    for (size_t j = 0; j < n; j++)
        w |= (b[j] & 1) << j;
    return w;
}

void mixc_bits_pack_u64(const uint64_t *bits, size_t n, uint64_t *out)
{
    size_t full = n / 64;
    for (size_t i = 0; i < full; i++) {
        const uint64_t *b = bits + 64 * i;
#ifdef __AVX512F__
        const __m512i one = _mm512_set1_epi64(1);
        uint64_t w = 0;
        for (int j = 0; j < 8; j++) {
            __mmask8 k = _mm512_test_epi64_mask(_mm512_loadu_si512((const void *)(b + 8 * j)), one);
            w |= (uint64_t)k << (8 * j);
        }
        out[i] = w;
#else
        out[i] = pack_word_u64(b, 64);
#endif
    }
    if (n % 64)
        out[full] = pack_word_u64(bits + 64 * full, n % 64);
}

/* bit 0 of 8 bytes (little-endian load) -> 8 bits */
static inline uint64_t pack8_u8(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#ifdef __BMI2__
    return _pext_u64(v, UINT64_C(0x0101010101010101));
#else
    /* gather bit 0 of every byte into the top byte: byte k's bit 0 (at bit
     * 8k) is moved to bit 56 + k by the multiplier's term 2^(56 - 7k); no
     * carries because the partial products hit distinct bit positions. */
    v &= UINT64_C(0x0101010101010101);
    return (v * UINT64_C(0x0102040810204080)) >> 56;
#endif
}

void mixc_bits_pack_u8(const uint8_t *bits, size_t n, uint64_t *out)
{
    size_t full = n / 64;
    for (size_t i = 0; i < full; i++) {
        const uint8_t *b = bits + 64 * i;
        uint64_t w = 0;
        for (int j = 0; j < 8; j++)
            w |= pack8_u8(b + 8 * j) << (8 * j);
        out[i] = w;
    }
    size_t rem = n % 64;
    if (rem) {
        uint64_t w = 0;
        const uint8_t *b = bits + 64 * full;
        for (size_t j = 0; j < rem; j++)
            w |= (uint64_t)(b[j] & 1) << j;
        out[full] = w;
    }
}

/* ---- unpack: bit k of the stream -> out[k] in {0, 1} ---- */

void mixc_bits_unpack(const uint64_t *words, size_t n, uint64_t *out)
{
    size_t full = n / 64;
    for (size_t i = 0; i < full; i++) {
        uint64_t w = words[i];
        uint64_t *o = out + 64 * i;
#ifdef __AVX512F__
        const __m512i one = _mm512_set1_epi64(1);
        for (int j = 0; j < 8; j++)
            _mm512_storeu_si512((void *)(o + 8 * j),
                                _mm512_maskz_mov_epi64((__mmask8)(w >> (8 * j)), one));
#else
        for (int j = 0; j < 64; j++)
            o[j] = (w >> j) & 1;
#endif
    }
    size_t rem = n % 64;
    if (rem) {
        uint64_t w = words[full];
        for (size_t j = 0; j < rem; j++)
            out[64 * full + j] = (w >> j) & 1;
    }
}

/* ---- elementwise boolean ops ---- */

void mixc_ring_xor(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] ^ b[i];
}

void mixc_ring_and(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] & b[i];
}

void mixc_ring_xor_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] ^ s;
}

void mixc_ring_and_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] & s;
}

void mixc_ring_not(const uint64_t *a, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = ~a[i];
}

void mixc_popcount(const uint64_t *a, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint64_t)__builtin_popcountll(a[i]);
}
