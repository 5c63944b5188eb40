"""Pure-numpy reference implementations of mixc.runtime.kernels (tests only).

Same names and semantics as ``kernels`` but written for clarity, not speed,
and sharing no code with the C kernels:

* matmul: exact float64 GEMMs on 16-bit limbs (``matmul_limbs``) or Python
  ints (``matmul_pyint``, small sizes only);
* ChaCha20: the RFC 8439 block function vectorised over blocks with numpy
  uint32 arithmetic.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
_U64 = np.uint64


def _u64(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.uint64:
        raise ValueError(f"expected uint64, got {a.dtype}")
    return a


def _scalar_or_array(b):
    if isinstance(b, (int, np.integer)) and not isinstance(b, (bool, np.bool_)):
        return np.uint64(int(b) & MASK64)
    return _u64(b)


# ---- elementwise (numpy's uint64 array arithmetic wraps mod 2^64) ----

def ring_add(a, b):
    with np.errstate(over="ignore"):
        return (_u64(a) + _scalar_or_array(b)).astype(np.uint64)


def ring_sub(a, b):
    with np.errstate(over="ignore"):
        return (_u64(a) - _scalar_or_array(b)).astype(np.uint64)


def ring_neg(a):
    with np.errstate(over="ignore"):
        return (np.uint64(0) - _u64(a)).astype(np.uint64)


def ring_mul(a, b):
    with np.errstate(over="ignore"):
        return (_u64(a) * _scalar_or_array(b)).astype(np.uint64)


# ---- matmul ----

def matmul_pyint(a, b) -> np.ndarray:
    """Exact product with Python ints (object dtype), reduced mod 2^64."""
    ao = _u64(a).astype(object)
    bo = _u64(b).astype(object)
    c = ao.dot(bo) if ao.size and bo.size else np.zeros((ao.shape[0], bo.shape[1]), dtype=object)
    return np.array([[int(v) & MASK64 for v in row] for row in c], dtype=np.uint64).reshape(
        a.shape[0], b.shape[1]
    )


def matmul_limbs(a, b) -> np.ndarray:
    """a . b mod 2^64 via float64 GEMMs on 16-bit limbs.

    With a = sum_i a_i 2^(16 i), b = sum_j b_j 2^(16 j) (limbs < 2^16), each
    limb product sum over K terms is < K * 2^32, exact in float64 while
    K <= 2^20.  Only limb pairs with i + j <= 3 contribute mod 2^64.
    """
    a = _u64(a)
    b = _u64(b)
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError("inner dimensions differ")
    if K > (1 << 20):
        raise ValueError("K too large for the exact float64 limb reference")
    al = [((a >> np.uint64(16 * i)) & np.uint64(0xFFFF)).astype(np.float64) for i in range(4)]
    bl = [((b >> np.uint64(16 * j)) & np.uint64(0xFFFF)).astype(np.float64) for j in range(4)]
    acc = np.zeros((M, N), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(4):
            for j in range(4 - i):
                p = (al[i] @ bl[j]).astype(np.uint64)  # exact, < 2^52
                acc += p << np.uint64(16 * (i + j))
    return acc


def ring_matmul(a, b, out=None, accumulate=False):
    c = matmul_limbs(a, b)
    if accumulate:
        with np.errstate(over="ignore"):
            c = c + _u64(out)
    return c


# ---- fixed point / shifts ----

def encode_fixed(x, frac_bits):
    v = np.rint(np.asarray(x, dtype=np.float64) * 2.0 ** frac_bits)
    if not np.all(np.isfinite(v)) or np.any(v >= 2.0 ** 63) or np.any(v < -(2.0 ** 63)):
        raise ValueError("value out of range")
    return v.astype(np.int64).view(np.uint64)


def decode_fixed(u, frac_bits):
    return _u64(u).view(np.int64).astype(np.float64) / 2.0 ** frac_bits


def arshift(u, bits):
    return (_u64(u).view(np.int64) >> np.int64(bits)).view(np.uint64)


def lrshift(u, bits):
    return _u64(u) >> np.uint64(bits)


# ---- ChaCha20 ----

_CONST = np.array([0x61707865, 0x3320646E, 0x79622D32, 0x6B206574], dtype=np.uint32)


def _rotl(x, n):
    return (x << np.uint32(n)) | (x >> np.uint32(32 - n))


def chacha20_blocks(key: bytes, stream: int, counters) -> np.ndarray:
    """ChaCha20 blocks for the given 64-bit block counters: uint32 (n, 16).

    State: constants, key, counter (lo, hi), stream (lo, hi)."""
    if len(key) != 32:
        raise ValueError("key must be 32 bytes")
    ctr = np.asarray(counters, dtype=np.uint64).reshape(-1)
    n = ctr.size
    init = np.empty((16, n), dtype=np.uint32)
    init[0:4] = _CONST[:, None]
    init[4:12] = np.frombuffer(key, dtype="<u4").astype(np.uint32)[:, None]
    init[12] = (ctr & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    init[13] = (ctr >> np.uint64(32)).astype(np.uint32)
    init[14] = np.uint32(stream & 0xFFFFFFFF)
    init[15] = np.uint32((stream >> 32) & 0xFFFFFFFF)
    x = [init[i].copy() for i in range(16)]

    def qr(a, b, c, d):
        x[a] += x[b]; x[d] ^= x[a]; x[d] = _rotl(x[d], 16)
        x[c] += x[d]; x[b] ^= x[c]; x[b] = _rotl(x[b], 12)
        x[a] += x[b]; x[d] ^= x[a]; x[d] = _rotl(x[d], 8)
        x[c] += x[d]; x[b] ^= x[c]; x[b] = _rotl(x[b], 7)

    with np.errstate(over="ignore"):
        for _ in range(10):
            qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
            qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
        out = np.stack([x[i] + init[i] for i in range(16)], axis=1)
    return out.astype(np.uint32)


def chacha20_block(key: bytes, stream: int, counter: int) -> np.ndarray:
    """One block as 16 uint32 words."""
    return chacha20_blocks(key, stream, [counter])[0]


def prg_words(key: bytes, stream: int, word_offset: int, n: int) -> np.ndarray:
    """n keystream uint64 words starting at word index word_offset."""
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    first = word_offset // 8
    last = (word_offset + n - 1) // 8
    ctrs = [(c & MASK64) for c in range(first, last + 1)]
    blocks = chacha20_blocks(key, stream, np.array(ctrs, dtype=np.uint64))
    words = blocks.astype("<u4").tobytes()
    w64 = np.frombuffer(words, dtype="<u8").astype(np.uint64)
    skip = word_offset - first * 8
    return w64[skip : skip + n].copy()


def prg_fill(key, stream, counter, out, skip=0):
    out[...] = prg_words(key, stream, counter * 8 + skip, out.size).reshape(out.shape)
    return out


class Prg:
    def __init__(self, key: bytes, stream: int = 0, position: int = 0):
        self.key = bytes(key)
        self.stream = stream
        self.position = position

    def random_u64(self, shape=()):
        n = int(np.prod(shape, dtype=np.int64)) if shape != () else 1
        w = prg_words(self.key, self.stream, self.position, n)
        self.position += n
        return w.reshape(shape)


# ---- boolean ops and packed bits (bit k of a stream = bit k % 64 of word k // 64) ----

def ring_xor(a, b):
    return _u64(a) ^ _scalar_or_array(b)


def ring_and(a, b):
    return _u64(a) & _scalar_or_array(b)


def ring_not(a):
    return ~_u64(a)


def popcount(a):
    a = _u64(a)
    bits = np.unpackbits(np.ascontiguousarray(a.astype("<u8").reshape(-1)).view(np.uint8))
    bits = bits.reshape(-1, 64)
    return bits.sum(axis=1, dtype=np.uint64).reshape(a.shape)


def stream_bits(words) -> np.ndarray:
    """All 64*len(words) stream bits of 1-D uint64 words, as uint8 0/1."""
    w = np.ascontiguousarray(_u64(words).astype("<u8", copy=False).reshape(-1))
    return np.unpackbits(w.view(np.uint8), bitorder="little")


def words_from_bits(bits) -> np.ndarray:
    """Pack a 0/1 sequence into uint64 words (zero padded to a multiple of 64)."""
    b = np.asarray(bits, dtype=np.uint8).reshape(-1)
    nw = (b.size + 63) // 64
    padded = np.zeros(nw * 64, dtype=np.uint8)
    padded[: b.size] = b
    return np.packbits(padded, bitorder="little").view("<u8").astype(np.uint64)


def bits_unzip(words):
    s = stream_bits(words)
    m = (_u64(words).size + 1) // 2
    even, odd = words_from_bits(s[0::2]), words_from_bits(s[1::2])
    # an odd word count leaves 32 bits per half: pad to m words
    return (np.concatenate([even, np.zeros(m - even.size, np.uint64)]),
            np.concatenate([odd, np.zeros(m - odd.size, np.uint64)]))


def bits_pack(bits):
    b = np.asarray(bits)
    if b.dtype == np.bool_:
        b = b.view(np.uint8)
    return words_from_bits((b.reshape(-1) & 1).astype(np.uint8))


def bits_unpack(words, n):
    return stream_bits(words)[:n].astype(np.uint64)


# ---- fused protocol finish kernels (straight transcriptions of the formulas) ----

def _first01(first):
    if int(first) not in (0, 1):
        raise ValueError("first must be 0 or 1")
    return int(first)


def beaver_finish(c, e, f, a, b, first):
    c, e, f, a, b = (_u64(x) for x in (c, e, f, a, b))
    with np.errstate(over="ignore"):
        z = c + e * b + f * a
        if _first01(first):
            z = z + e * f
    return np.asarray(z, dtype=np.uint64)


def and_finish(c, e, f, a, b, first):
    c, e, f, a, b = (_u64(x) for x in (c, e, f, a, b))
    z = c ^ (e & b) ^ (f & a)
    if _first01(first):
        z = z ^ (e & f)
    return np.asarray(z, dtype=np.uint64)


def truncpr_finish(c, msb, low, bits, first):
    if not 1 <= int(bits) <= 62:
        raise ValueError("bits must be in [1, 62]")
    c, msb, low = (_u64(x) for x in (c, msb, low))
    one, two = np.uint64(1), np.uint64(2)
    with np.errstate(over="ignore"):
        c_low = (c << one) >> np.uint64(bits + 1)
        c_msb = c >> np.uint64(63)
        t = msb - two * c_msb * msb
        if _first01(first):
            t = t + c_msb
        y = (t << np.uint64(63 - bits)) - low
        if _first01(first):
            y = y + (c_low - np.uint64(1 << (62 - bits)))
    return np.asarray(y, dtype=np.uint64)


# ---- ring Z_2^128: Python ints (object arrays), sharing nothing with csrc/ring128.c ----
# Inputs and outputs are object arrays of ints in [0, 2^128); tests convert with
# kernels.r128_to_int / r128_from_int.

MASK128 = (1 << 128) - 1


def _ints(x) -> np.ndarray:
    return np.vectorize(lambda v: int(v) & MASK128, otypes=[object])(np.asarray(x, dtype=object))


def r128_add(a, b):
    return _ints(_ints(a) + _ints(b))


def r128_sub(a, b):
    return _ints(_ints(a) - _ints(b))


def r128_mul(a, b):
    return _ints(_ints(a) * _ints(b))


def r128_neg(a):
    return _ints(-_ints(a))


def _signed128(v):
    v = int(v)
    return v - (1 << 128) if v >> 127 else v


def r128_shl(a, bits):
    return _ints(np.vectorize(lambda v: int(v) << bits, otypes=[object])(_ints(a)))


def r128_lrshift(a, bits):
    return np.vectorize(lambda v: int(v) >> bits, otypes=[object])(_ints(a))


def r128_arshift(a, bits):
    return _ints(np.vectorize(lambda v: _signed128(v) >> bits, otypes=[object])(_ints(a)))


def r128_rowsum(a):
    return _ints(_ints(a).sum(axis=1))


def r128_matmul(a, b):
    a, b = _ints(a), _ints(b)
    return _ints(a.dot(b)) if a.size and b.size else np.zeros((a.shape[0], b.shape[1]), object)


def r128_encode(x, frac_bits):
    """round(x * 2^f) half to even, exactly: from the float's exact rational value."""
    from fractions import Fraction
    out = []
    for v in np.asarray(x, dtype=np.float64).reshape(-1):
        if not np.isfinite(v):
            raise ValueError("value out of range")
        q = round(Fraction(float(v)) * (1 << frac_bits))  # Fraction rounds half to even
        if not -(1 << 127) <= q < (1 << 127):
            raise ValueError("value out of range")
        out.append(q & MASK128)
    return np.array(out, dtype=object).reshape(np.shape(x))


def r128_decode(u, frac_bits):
    return np.vectorize(lambda v: float(_signed128(v)) / 2.0 ** frac_bits,
                        otypes=[np.float64])(_ints(u))


def r128_beaver_finish(c, e, f, a, b, first):
    c, e, f, a, b = (_ints(x) for x in (c, e, f, a, b))
    return _ints(c + e * b + f * a + (e * f if _first01(first) else 0))


def r128_truncpr_finish(c, msb, low, bits, first):
    def one(ci, mi, li):
        c_low = ((ci << 1) & MASK128) >> (bits + 1)
        c_msb = ci >> 127
        t = mi - 2 * c_msb * mi + (c_msb if first else 0)
        y = (t << (127 - bits)) - li
        if first:
            y += c_low - (1 << (126 - bits))
        return y & MASK128
    return np.vectorize(one, otypes=[object])(_ints(c), _ints(msb), _ints(low))
