/*
 * mixc C kernels: small pure functions over flat arrays with explicit sizes.
 *
 * Conventions
 *   - Ring elements are uint64_t and all arithmetic wraps modulo 2^64.
 *   - The caller (Python) owns every buffer.  No kernel allocates memory;
 *     kernels that need scratch space take a caller-provided workspace
 *     whose size is reported by a *_ws_words() helper.
 *   - Kernels are single-threaded and reentrant (no global state), so
 *     several parties may call them concurrently from different threads.
 *   - Elementwise kernels allow out to alias an input exactly (in place),
 *     but not partial overlaps.
 *
 * The block between CDEF-BEGIN and CDEF-END is fed verbatim to
 * cffi's cdef() by csrc/build_kernels.py: keep it free of macros and
 * preprocessor directives.
 */
#ifndef MIXC_KERNELS_H
#define MIXC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
/* ---- elementwise ring ops (mod 2^64) ---- */
void mixc_ring_add(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_ring_sub(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_ring_neg(const uint64_t *a, uint64_t *out, size_t n);
void mixc_ring_mul(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_ring_add_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n);
void mixc_ring_mul_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n);

/* ---- matmul: C(MxN) (+)= A(MxK) . B(KxN), row-major, mod 2^64 ----
 * lda/ldb/ldc are row strides in elements (>= K, N, N respectively).
 * accumulate != 0: C += A.B, otherwise C = A.B.
 * ws must hold at least mixc_ring_matmul_ws_words(M, K, N) uint64 words;
 * C must not overlap A, B or ws. */
size_t mixc_ring_matmul_ws_words(size_t M, size_t K, size_t N);
void mixc_ring_matmul(const uint64_t *A, size_t lda,
                      const uint64_t *B, size_t ldb,
                      uint64_t *C, size_t ldc,
                      size_t M, size_t K, size_t N,
                      int accumulate, uint64_t *ws, size_t ws_words);

/* ---- fixed point ----
 * encode: out[i] = (uint64) round_half_even(x[i] * 2^frac_bits).
 * Elements that are NaN/inf or whose scaled value does not fit in int64
 * are written as 0 and counted; the return value is that count. */
size_t mixc_encode_fixed(const double *x, uint64_t *out, size_t n, unsigned frac_bits);
/* decode: out[i] = (double)(int64)u[i] / 2^frac_bits. */
void mixc_decode_fixed(const uint64_t *u, double *out, size_t n, unsigned frac_bits);
/* arithmetic right shift of the int64 view: out[i] = (uint64)((int64)a[i] >> bits),
 * 0 <= bits <= 63. */
void mixc_arshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits);
/* logical right shift: out[i] = a[i] >> bits, 0 <= bits <= 63. */
void mixc_lrshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits);

/* ---- ChaCha20 PRG ----
 * RFC 8439 block function (20 rounds) with the original 64-bit counter /
 * 64-bit nonce layout: state words 12,13 = block counter (lo, hi),
 * words 14,15 = stream id (lo, hi).  Keystream block j is 64 bytes =
 * 8 little-endian uint64 words.
 * mixc_chacha20_fill writes n words starting at word 'skip' (0..7) of block
 * 'counter', i.e. words [counter*8 + skip, counter*8 + skip + n) of the
 * keystream of (key, stream).  The block counter wraps modulo 2^64. */
void mixc_chacha20_fill(const uint8_t *key, uint64_t stream, uint64_t counter,
                        unsigned skip, uint64_t *out, size_t n);
/* single block, out = 16 uint32 words (for test vectors) */
void mixc_chacha20_block(const uint8_t *key, uint64_t stream, uint64_t counter,
                         uint32_t *out16);
/* ---- packed bits (boolean shares, 64 bits per uint64 word) ----
 * Bit order: bit k of a packed stream is bit (k % 64) (LSB = 0) of word k / 64.
 * Outputs must not overlap inputs (except the elementwise ops below, which
 * follow the elementwise aliasing rule above).
 *
 * unzip: split the n_words*64-bit stream in into its even-indexed bits
 * (stream bits 0, 2, 4, ...) and odd-indexed bits (1, 3, 5, ...), each packed
 * contiguously into (n_words + 1) / 2 words; if n_words is odd the high 32
 * bits of the last even/odd word are zero. */
void mixc_bits_unzip(const uint64_t *in, size_t n_words, uint64_t *even, uint64_t *odd);
/* pack: bit 0 of element k of bits (n elements; other bits ignored) -> bit k
 * of out, which holds (n + 63) / 64 words; bits >= n of the last word are 0. */
void mixc_bits_pack_u64(const uint64_t *bits, size_t n, uint64_t *out);
void mixc_bits_pack_u8(const uint8_t *bits, size_t n, uint64_t *out);
/* unpack: out[k] = bit k of words (0 or 1) for k < n; reads (n + 63) / 64 words. */
void mixc_bits_unpack(const uint64_t *words, size_t n, uint64_t *out);
/* elementwise boolean ops and popcount (out[i] = number of set bits of a[i]) */
void mixc_ring_xor(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_ring_and(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_ring_xor_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n);
void mixc_ring_and_scalar(const uint64_t *a, uint64_t s, uint64_t *out, size_t n);
void mixc_ring_not(const uint64_t *a, uint64_t *out, size_t n);
void mixc_popcount(const uint64_t *a, uint64_t *out, size_t n);
/* ---- RLWE / BFV-style HE kernels (csrc/he.c; used by runtime/he.py) ----
 * RNS polynomials: L rows ("limbs") of n residues, row i modulo p_i; several
 * polynomials (count / ncomp) are stored back to back.  mods = L descriptors of
 * 8 words {p, bits(p), floor(2^(2k)/p), floor(2^64/p), 2^64 mod p,
 * 2^-64 mod p, its Shoup companion, 0}; tabs = L NTT tables of
 * mixc_he_ntt_tab_words(n) words each (filled by mixc_he_ntt_init, psi a
 * primitive 2n-th root of unity mod p; returns -1 on bad arguments).
 * Residues in and out are reduced to [0, p); outputs may alias inputs exactly.
 * ntt_fwd leaves its output in bit-reversed order, ntt_inv consumes it. */
size_t mixc_he_ntt_tab_words(size_t n);
int mixc_he_ntt_init(const uint64_t *desc, uint64_t psi, size_t n, uint64_t *tab);
void mixc_he_ntt_fwd(uint64_t *a, const uint64_t *mods, const uint64_t *tabs,
                     size_t L, size_t n, size_t count);
void mixc_he_ntt_inv(uint64_t *a, const uint64_t *mods, const uint64_t *tabs,
                     size_t L, size_t n, size_t count);
void mixc_he_add(const uint64_t *a, const uint64_t *b, uint64_t *out,
                 const uint64_t *mods, size_t L, size_t n);
void mixc_he_sub(const uint64_t *a, const uint64_t *b, uint64_t *out,
                 const uint64_t *mods, size_t L, size_t n);
void mixc_he_neg(const uint64_t *a, uint64_t *out, const uint64_t *mods, size_t L, size_t n);
/* pointwise a*b; mulacc: acc[c] (+)= a[c] * w for c < ncomp (a, acc: ncomp*L*n) */
void mixc_he_mul(const uint64_t *a, const uint64_t *b, uint64_t *out,
                 const uint64_t *mods, size_t L, size_t n);
void mixc_he_mulacc(const uint64_t *a, const uint64_t *w, uint64_t *acc,
                    const uint64_t *mods, size_t L, size_t n, size_t ncomp, int accumulate);
/* out row i = a row i * s[i] (s[i] any uint64, reduced mod p_i) */
void mixc_he_mul_scalar(const uint64_t *a, const uint64_t *s, uint64_t *out,
                        const uint64_t *mods, size_t L, size_t n);
/* residues of signed integers: out[i][j] = x[j] mod p_i */
void mixc_he_from_i64(const int64_t *x, const uint64_t *mods, size_t L, size_t n, uint64_t *out);
/* out[i][j] = round(Q * m[j] / 2^64) mod p_i, Q = p_0 ... p_{L-1}, q_lo = Q mod 2^64 */
void mixc_he_encode_scaled(const uint64_t *m, uint64_t q_lo, const uint64_t *mods,
                           size_t L, size_t n, uint64_t *out);
/* m[j] = round(2^64 * v[j] / Q) mod 2^64 from the residues v (L x n);
 * frac[j] (if not NULL) = the rounding residual * 2^64 as int64 (|.| < 2^63).
 * crt = 5 words per limb: (Q/p_i)^-1 mod p_i, its Shoup companion, and
 * floor(2^192 / p_i) as 3 little-endian words. */
void mixc_he_decode(const uint64_t *v, const uint64_t *mods, const uint64_t *crt,
                    size_t L, size_t n, uint64_t *m_out, int64_t *frac_out);
/* modulus switching: out ((L-1) x n) = round(in / p_{L-1}) mod p_i;
 * inv_last = 2 words per i < L-1: p_{L-1}^-1 mod p_i and its Shoup companion */
void mixc_he_drop_last(const uint64_t *in, const uint64_t *mods, const uint64_t *inv_last,
                       size_t L, size_t n, uint64_t *out);
/* samplers over caller-supplied uniform words:
 * cbd: one word per sample, popcount(w & (2^eta-1)) - popcount((w >> 32) & (2^eta-1)), eta <= 32;
 * ternary: one word per sample, floor(3 w / 2^64) - 1;
 * uniform: residues uniform mod p_i by rejection on the low bits(p_i) bits of
 *   each word; returns the number of words used or (size_t)-1 if nrnd is too small;
 * wide: ceil(bits/64) words per coefficient, integer uniform in
 *   [-2^(bits-1), 2^(bits-1)), 1 <= bits <= 256, written as residues (L x n). */
void mixc_he_sample_cbd(const uint64_t *rnd, int64_t *out, size_t n, unsigned eta);
void mixc_he_sample_ternary(const uint64_t *rnd, int64_t *out, size_t n);
size_t mixc_he_sample_uniform(const uint64_t *rnd, size_t nrnd, const uint64_t *mods,
                              size_t L, size_t n, uint64_t *out);
void mixc_he_sample_wide(const uint64_t *rnd, unsigned bits, const uint64_t *mods,
                         size_t L, size_t n, uint64_t *out);
/* little-endian bit stream of cnt values of 'bits' bits (1..64) each;
 * out holds (cnt * bits + 7) / 8 bytes */
void mixc_he_pack(const uint64_t *in, size_t cnt, unsigned bits, uint8_t *out);
void mixc_he_unpack(const uint8_t *in, size_t cnt, unsigned bits, uint64_t *out);
/* plaintext modulus t = 2^128; a value is two uint64 words (low first), as the u128 ring:
 * from_i128: residues of signed (two's complement) 128-bit integers x (2 words each);
 * encode_scaled128: out[i][j] = round(Q * m[j] / 2^128) mod p_i, q_lo = Q mod 2^128 (2 words);
 * decode128: m[j] = round(2^128 * v[j] / Q) mod 2^128 (2 words each), frac as in decode;
 *   crt = 6 words per limb: (Q/p_i)^-1 mod p_i, its Shoup companion, floor(2^256 / p_i)
 *   as 4 little-endian words. */
void mixc_he_from_i128(const uint64_t *x, const uint64_t *mods, size_t L, size_t n,
                       uint64_t *out);
void mixc_he_encode_scaled128(const uint64_t *m, const uint64_t *q_lo, const uint64_t *mods,
                              size_t L, size_t n, uint64_t *out);
void mixc_he_decode128(const uint64_t *v, const uint64_t *mods, const uint64_t *crt,
                       size_t L, size_t n, uint64_t *m_out, int64_t *frac_out);
/* ---- fused protocol finish kernels (csrc/fused.c), elementwise, mod 2^64 ----
 * first is 0 or 1; out may alias an input exactly (elementwise rule above).
 * beaver: out = c + e*b + f*a (+ e*f if first)
 * and:    out = c ^ (e & b) ^ (f & a) (^ (e & f) if first)
 * truncpr (1 <= bits <= 62): c_low = (c << 1) >> (bits + 1), c_msb = c >> 63,
 *   t = msb - 2*c_msb*msb (+ c_msb if first),
 *   out = (t << (63 - bits)) - low (+ c_low - 2^(62 - bits) if first) */
void mixc_beaver_finish(const uint64_t *c, const uint64_t *e, const uint64_t *f,
                        const uint64_t *a, const uint64_t *b, uint64_t *out,
                        size_t n, int first);
void mixc_and_finish(const uint64_t *c, const uint64_t *e, const uint64_t *f,
                     const uint64_t *a, const uint64_t *b, uint64_t *out,
                     size_t n, int first);
void mixc_truncpr_finish(const uint64_t *c, const uint64_t *msb, const uint64_t *low,
                         uint64_t *out, size_t n, unsigned bits, int first);
/* ---- IKNP OT extension (csrc/ot.c; used by runtime/ot.py) ----
 * Rows: one 128-bit value per OT, two words (lo = bits 0..63, hi = 64..127).
 * Columns: 128 packed bit streams of n_words words, row j at in + j*stride.
 * H(i, x) = pi(pi(x) ^ i) ^ pi(x), pi = AES-128 under a fixed public key (GKWY20 tccr);
 * tweak: 2 words (lo, hi); the row r of a call hashes under (tweak[0] + r, tweak[1]).
 * portable != 0 forces the portable C paths (tests); otherwise VAES / AES-NI /
 * AVX-512+GFNI are picked at run time.
 * transpose128: out (64*n_words rows): row i bit j = column j bit i.
 * ot_hash: out = H(tweak + r, rows ^ delta) (delta: 2 words or NULL), out_words 1 (lo) or 2.
 * iknp_*_ext: ChaCha20 column j from key keys[32j..], stream, keystream word pos;
 *   recv: t_j = G(k0_j), u_j = t_j ^ G(k1_j) ^ choice, t transposed to rows;
 *   send: q_j = G(k_j) ^ (s_j ? u_j : 0) transposed to rows (s: 2 words);
 *   u is 128 x n_words (stride n_words); ws >= mixc_iknp_ws_words() words.
 * hash_bits: out[w] bit i = bit 0 of H(rows[64w+i] ^ delta).
 * bitcot_send: m0 = hash_bits(q), d = m0 ^ hash_bits(q ^ s) ^ x.
 * cot_send: x = H(q)_lo, d = x + delta_i - H(q ^ s)_lo (delta_i = delta[i] or delta[0]);
 * cot_recv_fix: y = h + (choice bit i) * d.
 * gilboa: product p uses rows 64p..64p+63 (bit k of b_p chooses OT 64p+k);
 *   send: share = -sum 2^k H(q)_lo, corrections (H(q)_lo + a_p - H(q^s)_lo) mod 2^(64-k)
 *   packed LSB first into mixc_gilboa_words() words per product;
 *   recv_hash: share = sum 2^k H(t)_lo; recv_fix: share += sum 2^k b_k d_k. */
void mixc_ot_transpose128(const uint64_t *in, size_t stride, size_t n_words, uint64_t *out,
                          int portable);
void mixc_ot_hash(const uint64_t *rows, size_t n, const uint64_t *delta, const uint64_t *tweak,
                  uint64_t *out, unsigned out_words, int portable);
size_t mixc_iknp_ws_words(void);
void mixc_iknp_recv_ext(const uint8_t *keys0, const uint8_t *keys1, uint64_t stream,
                        uint64_t pos, const uint64_t *choice, size_t n_words, uint64_t *u,
                        uint64_t *t, uint64_t *ws, size_t ws_words);
void mixc_iknp_send_ext(const uint8_t *keys, const uint64_t *s, uint64_t stream, uint64_t pos,
                        const uint64_t *u, size_t n_words, uint64_t *q, uint64_t *ws,
                        size_t ws_words);
void mixc_ot_hash_bits(const uint64_t *rows, size_t n_words, const uint64_t *delta,
                       const uint64_t *tweak, uint64_t *out);
void mixc_bitcot_send(const uint64_t *q, size_t n_words, const uint64_t *s, const uint64_t *x,
                      const uint64_t *tweak, uint64_t *m0, uint64_t *d);
void mixc_cot_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *delta,
                   int delta_per_ot, const uint64_t *tweak, uint64_t *x, uint64_t *d);
void mixc_cot_recv_fix(const uint64_t *h, const uint64_t *choice, const uint64_t *d, size_t n,
                       uint64_t *y);
size_t mixc_gilboa_words(void);
void mixc_gilboa_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *a,
                      const uint64_t *tweak, uint64_t *share, uint64_t *dpack);
void mixc_gilboa_recv_hash(const uint64_t *t, size_t n, const uint64_t *tweak, uint64_t *share);
void mixc_gilboa_recv_fix(const uint64_t *b, const uint64_t *dpack, size_t n, uint64_t *share);
/* 128-bit messages (ring: 128): u128 values are 2 words, low first; messages are the full
 * 128-bit hash. gilboa128: as gilboa with 128 COTs per product (rows 128p..128p+127, bit k
 *   of b_p chooses OT 128p+k; a, b, share: 2 words per product), corrections mod 2^(128-k)
 *   packed into mixc_gilboa128_words() words per product.
 * bitole128_send: share_i = -H(q_i), d_i = H(q_i) + a_i - H(q_i ^ s) (a_i: a 0/1 word);
 * bitole128_recv_fix: share_i += (choice bit i) * d_i (share = H(t) beforehand). */
size_t mixc_gilboa128_words(void);
void mixc_gilboa128_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *a,
                         const uint64_t *tweak, uint64_t *share, uint64_t *dpack);
void mixc_gilboa128_recv_hash(const uint64_t *t, size_t n, const uint64_t *tweak,
                              uint64_t *share);
void mixc_gilboa128_recv_fix(const uint64_t *b, const uint64_t *dpack, size_t n,
                             uint64_t *share);
void mixc_bitole128_send(const uint64_t *q, size_t n, const uint64_t *s, const uint64_t *a,
                         const uint64_t *tweak, uint64_t *share, uint64_t *d);
void mixc_bitole128_recv_fix(const uint64_t *choice, const uint64_t *d, size_t n,
                             uint64_t *share);
/* ---- ring Z_2^128 (csrc/ring128.c), for ``ring: 128`` MPC devices ----
 * Element i of n is words [2i] (bits 0..63) and [2i+1] (bits 64..127); sizes
 * count elements.  Elementwise kernels follow the aliasing rule above.
 * Shifts take 0 <= bits <= 127.  rowsum: out[r] = sum of row r of an m x k array.
 * encode/decode: as mixc_encode_fixed/decode_fixed with |round(x 2^f)| < 2^127.
 * beaver_finish/truncpr_finish: the fused kernels below over Z_2^128; truncpr
 *   (1 <= bits <= 126): c_low = (c << 1) >> (bits + 1), c_msb = c >> 127,
 *   t = msb - 2*c_msb*msb (+ c_msb if first),
 *   out = (t << (127 - bits)) - low (+ c_low - 2^(126 - bits) if first).
 * matmul_low: C (M x N elements) (+)= A . BT^T with full 128-bit products, A
 *   (M x K) and BT (N x K) uint64 words with row strides lda, ldb; C must not
 *   overlap A or BT. */
void mixc_r128_add(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_r128_sub(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_r128_mul(const uint64_t *a, const uint64_t *b, uint64_t *out, size_t n);
void mixc_r128_neg(const uint64_t *a, uint64_t *out, size_t n);
void mixc_r128_shl(const uint64_t *a, uint64_t *out, size_t n, unsigned bits);
void mixc_r128_lrshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits);
void mixc_r128_arshift(const uint64_t *a, uint64_t *out, size_t n, unsigned bits);
void mixc_r128_rowsum(const uint64_t *a, uint64_t *out, size_t m, size_t k);
size_t mixc_r128_encode(const double *x, uint64_t *out, size_t n, unsigned frac_bits);
void mixc_r128_decode(const uint64_t *u, double *out, size_t n, unsigned frac_bits);
void mixc_r128_beaver_finish(const uint64_t *c, const uint64_t *e, const uint64_t *f,
                             const uint64_t *a, const uint64_t *b, uint64_t *out,
                             size_t n, int first);
void mixc_r128_truncpr_finish(const uint64_t *c, const uint64_t *msb, const uint64_t *low,
                              uint64_t *out, size_t n, unsigned bits, int first);
/* matmul: C (M x N) = A (M x K) . B (K x N), all Z_2^128 elements, row-major;
 * C must not overlap A or B; ws >= mixc_r128_matmul_ws_words(M, K, N) words.
 * Returns 1 when done (AVX-512 IFMA kernel), 0 when this build has no IFMA
 * kernel (then nothing is written: use matmul_low and 64-bit GEMMs), -1 when
 * ws is too small. */
size_t mixc_r128_matmul_ws_words(size_t M, size_t K, size_t N);
int mixc_r128_matmul(const uint64_t *A, const uint64_t *B, uint64_t *C,
                     size_t M, size_t K, size_t N, uint64_t *ws, size_t ws_words);
void mixc_r128_matmul_low(const uint64_t *A, size_t lda, const uint64_t *BT, size_t ldb,
                          uint64_t *C, size_t M, size_t K, size_t N, int accumulate);
/* CDEF-END */

#endif /* MIXC_KERNELS_H */
