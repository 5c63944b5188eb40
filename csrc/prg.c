/*
 * ChaCha20 keystream generator (RFC 8439 block function, 20 rounds).
 *
 * State layout (the original 64-bit counter / 64-bit nonce variant):
 *   words 0..3   "expand 32-byte k"
 *   words 4..11  key (little endian)
 *   words 12,13  64-bit block counter (low, high)
 *   words 14,15  64-bit stream id     (low, high)
 * With counter = c_lo | (n0 << 32) and stream = n1 | (n2 << 32) this is
 * exactly the RFC 8439 block function with 32-bit counter c_lo and 96-bit
 * nonce (n0, n1, n2), so the RFC test vectors apply.
 *
 * Keystream block j (64 bytes) is read as 8 little-endian uint64 words.
 * Blocks are computed LANES at a time: every state word is a vector holding
 * that word for LANES consecutive blocks, so the rounds vectorise with GCC
 * vector extensions (vprold/vpaddd/vpxord on AVX-512).
 */
#include <string.h>
#include "kernels.h"

#define LANES 16
typedef uint32_t vu32 __attribute__((vector_size(4 * LANES)));

static inline uint32_t load32_le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void init_state(const uint8_t *key, uint64_t stream, uint32_t st[16])
{
    st[0] = 0x61707865u;
    st[1] = 0x3320646eu;
    st[2] = 0x79622d32u;
    st[3] = 0x6b206574u;
    for (int i = 0; i < 8; i++)
        st[4 + i] = load32_le(key + 4 * i);
    st[12] = 0;
    st[13] = 0;
    st[14] = (uint32_t)stream;
    st[15] = (uint32_t)(stream >> 32);
}

#define ROTV(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define QRV(a, b, c, d)                   \
    do {                                  \
        a += b; d ^= a; d = ROTV(d, 16);  \
        c += d; b ^= c; b = ROTV(b, 12);  \
        a += b; d ^= a; d = ROTV(d, 8);   \
        c += d; b ^= c; b = ROTV(b, 7);   \
    } while (0)

/* Compute LANES consecutive blocks starting at block 'counter' into
 * out[LANES * 8] uint64 words (block-major). */
static void chacha20_lanes(const uint32_t st[16], uint64_t counter, uint64_t *restrict out)
{
    vu32 x[16], in[16];
    for (int w = 0; w < 16; w++)
        for (int l = 0; l < LANES; l++)
            in[w][l] = st[w];
    for (int l = 0; l < LANES; l++) {
        uint64_t c = counter + (uint64_t)l; /* wraps mod 2^64 */
        in[12][l] = (uint32_t)c;
        in[13][l] = (uint32_t)(c >> 32);
    }
    for (int w = 0; w < 16; w++)
        x[w] = in[w];

    for (int r = 0; r < 10; r++) {
        QRV(x[0], x[4], x[8], x[12]);
        QRV(x[1], x[5], x[9], x[13]);
        QRV(x[2], x[6], x[10], x[14]);
        QRV(x[3], x[7], x[11], x[15]);
        QRV(x[0], x[5], x[10], x[15]);
        QRV(x[1], x[6], x[11], x[12]);
        QRV(x[2], x[7], x[8], x[13]);
        QRV(x[3], x[4], x[9], x[14]);
    }
    for (int w = 0; w < 16; w++)
        x[w] += in[w];

    /* transpose: block l, uint64 word j = x[2j][l] | x[2j+1][l] << 32 */
    for (int l = 0; l < LANES; l++)
        for (int j = 0; j < 8; j++)
            out[l * 8 + j] = (uint64_t)x[2 * j][l] | ((uint64_t)x[2 * j + 1][l] << 32);
}

void mixc_chacha20_fill(const uint8_t *key, uint64_t stream, uint64_t counter,
                        unsigned skip, uint64_t *out, size_t n)
{
    uint32_t st[16];
    uint64_t buf[LANES * 8] __attribute__((aligned(64)));
    const size_t group = LANES * 8;
    init_state(key, stream, st);
    counter += skip / 8; /* tolerate skip >= 8 */
    size_t pos = skip % 8;  /* word offset into the current group */

    while (n > 0) {
        if (pos == 0 && n >= group) {
            chacha20_lanes(st, counter, out);
            out += group;
            n -= group;
        } else {
            chacha20_lanes(st, counter, buf);
            size_t take = group - pos;
            if (take > n)
                take = n;
            memcpy(out, buf + pos, take * sizeof(uint64_t));
            out += take;
            n -= take;
            pos = 0;
        }
        counter += LANES;
    }
}

void mixc_chacha20_block(const uint8_t *key, uint64_t stream, uint64_t counter, uint32_t *out16)
{
    uint32_t st[16];
    uint64_t buf[LANES * 8] __attribute__((aligned(64)));
    init_state(key, stream, st);
    chacha20_lanes(st, counter, buf);
    for (int j = 0; j < 8; j++) {
        out16[2 * j] = (uint32_t)buf[j];
        out16[2 * j + 1] = (uint32_t)(buf[j] >> 32);
    }
}
