"""Pure-numpy / Python-int references for mixc.runtime.he (tests only).

Written for clarity, sharing no code with the C kernels of csrc/he.c:

* negacyclic products in Z_p[X]/(X^n + 1) by exact O(n^2) integer
  convolution (numpy int64 on 25-bit limbs), and in Z_2^64[X]/(X^n + 1)
  with wrapping uint64 arithmetic;
* the NTT by direct evaluation at the odd powers of psi (bit-reversed order);
* BFV encoding/decoding for t = 2^64 and t = 2^128 and modulus switching via
  Python-int CRT (128-bit plaintexts are Python ints, e.g. object arrays);
* bit packing via Python ints.
"""

from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1


def _as_int_list(a):
    if isinstance(a, (list, tuple)):  # numpy would read a list of big ints as floats
        return [int(v) for v in a]
    return [int(v) for v in np.asarray(a).reshape(-1)]


# ---- negacyclic products ----

def _conv_i64(a, b):
    """Exact linear convolution of non-negative int64 arrays whose products
    sum below 2^63 (numpy's integer correlate sums exactly)."""
    return np.convolve(a, b)


def negacyclic_mod_p(a, b, p: int) -> np.ndarray:
    """a * b in Z_p[X]/(X^n + 1): Python ints for n <= 256, otherwise exact
    int64 convolutions on 25-bit limbs (needs p < 2^50, n <= 8192)."""
    if len(a) != len(b):
        raise ValueError("negacyclic_mod_p: lengths differ")
    if len(a) <= 256:
        return np.array([v % p for v in _negacyclic_ints(a, b)], dtype=np.uint64)
    a = np.asarray(a, dtype=np.uint64).astype(np.int64)
    b = np.asarray(b, dtype=np.uint64).astype(np.int64)
    n = a.size
    if p >= 1 << 50 or n > 8192:
        raise ValueError("negacyclic_mod_p: needs p < 2^50 and n <= 8192 for n > 256")
    m25 = (1 << 25) - 1
    a0, a1 = a & m25, a >> 25
    b0, b1 = b & m25, b >> 25
    # each partial convolution sums <= n products < 2^50: exact in int64
    parts = {
        0: _conv_i64(a0, b0),
        25: _conv_i64(a0, b1) % p + _conv_i64(a1, b0) % p,
        50: _conv_i64(a1, b1),
    }
    full = np.zeros(2 * n - 1, dtype=object)
    for sh, c in parts.items():
        full = full + (c.astype(object) % p) * (pow(2, sh, p))
    lo = full[:n].copy()
    lo[: n - 1] = lo[: n - 1] - full[n:]
    return np.array([int(v) % p for v in lo], dtype=np.uint64)


def negacyclic_mod_2_64(a, b) -> np.ndarray:
    """a * b in Z_2^64[X]/(X^n + 1) by the schoolbook O(n^2) sum."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    n = a.size
    out = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            if a[i] == 0:
                continue
            # a_i X^i * b: coefficients shift by i, the wrapped ones negate
            shifted = np.empty(n, dtype=np.uint64)
            shifted[i:] = b[: n - i]
            shifted[:i] = np.uint64(0) - b[n - i:]
            out += a[i] * shifted
    return out


def negacyclic_mod_2k(a, b, bits: int) -> list[int]:
    """a * b in Z_2^bits[X]/(X^n + 1) by the schoolbook O(n^2) sum over Python ints."""
    return [v % (1 << bits) for v in _negacyclic_ints(a, b)]


def _negacyclic_ints(a, b) -> list[int]:
    """a * b in Z[X]/(X^n + 1) over Python ints, schoolbook."""
    a, b = _as_int_list(a), _as_int_list(b)
    n = len(a)
    out = [0] * n
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                k = i + j
                if k < n:
                    out[k] += x * y
                else:
                    out[k - n] -= x * y
    return out


def negacyclic_coeff_mod_2_64(a, b, k: int) -> int:
    """Coefficient k of a * b in Z_2^64[X]/(X^n + 1)."""
    a = _as_int_list(a)
    b = _as_int_list(b)
    n = len(a)
    s = 0
    for i in range(n):
        j = k - i
        s += a[i] * b[j] if j >= 0 else -a[i] * b[j + n]
    return s & MASK64


# ---- NTT by evaluation ----

def bitrev(x: int, bits: int) -> int:
    return int(format(x, f"0{bits}b")[::-1], 2) if bits else 0


def ntt_direct(a, p: int, psi: int) -> np.ndarray:
    """Output k = a(psi^(2 brv(k) + 1)): the order the C forward NTT produces."""
    a = _as_int_list(a)
    n = len(a)
    lg = n.bit_length() - 1
    out = []
    for k in range(n):
        x = pow(psi, 2 * bitrev(k, lg) + 1, p)
        acc, xp = 0, 1
        for c in a:
            acc = (acc + c * xp) % p
            xp = xp * x % p
        out.append(acc)
    return np.array(out, dtype=np.uint64)


# ---- BFV plaintext encoding for t = 2^64 and 2^128 ----

def crt(residues, primes) -> list[int]:
    """Integers in [0, Q) from residues (L x n)."""
    Q = math.prod(primes)
    rows = [_as_int_list(r) for r in residues]
    n = len(rows[0])
    out = []
    for j in range(n):
        v = 0
        for i, p in enumerate(primes):
            qi = Q // p
            v += rows[i][j] * qi * pow(qi, -1, p)
        out.append(v % Q)
    return out


def encode_scaled(m, primes, t_bits: int = 64) -> np.ndarray:
    """round(Q m / 2^t_bits) mod p_i (L x n); ties round up."""
    Q = math.prod(primes)
    vals = [(Q * int(x) + (1 << (t_bits - 1))) >> t_bits for x in _as_int_list(m)]
    return np.array([[v % p for v in vals] for p in primes], dtype=np.uint64)


def decode(residues, primes, t_bits: int = 64):
    """(m, residual): m = round(2^t_bits v / Q) mod 2^t_bits with v = CRT(residues) in
    [0, Q) (uint64 for t = 2^64, Python ints for 2^128); residual = 2^t_bits v / Q -
    round(...) as a float in [-1/2, 1/2)."""
    Q = math.prod(primes)
    ms, fr = [], []
    for v in crt(residues, primes):
        num = v << t_bits
        r = (num + Q // 2) // Q  # round half up (ties are impossible: Q odd)
        ms.append(r % (1 << t_bits))
        fr.append((num - r * Q) / Q)
    if t_bits == 64:
        return np.array(ms, dtype=np.uint64), np.array(fr)
    return np.array(ms, dtype=object), np.array(fr)


def residues_of_signed(x, primes, bits: int) -> np.ndarray:
    """Residues (L x n) of the values x in [0, 2^bits) read as two's complement."""
    vals = [v - (1 << bits) if v >> (bits - 1) else v for v in _as_int_list(x)]
    return np.array([[v % p for v in vals] for p in primes], dtype=np.uint64)


def drop_last(residues, primes) -> np.ndarray:
    """round(c / p_last) as residues mod the remaining primes (centred rounding)."""
    Q = math.prod(primes)
    pl = primes[-1]
    out = []
    for v in crt(residues, primes):
        if v > Q // 2:
            v -= Q  # any representative works; centring keeps the example natural
        r = v % pl
        if r > pl // 2:
            r -= pl
        w = (v - r) // pl
        out.append(w)
    return np.array([[w % p for w in out] for p in primes[:-1]], dtype=np.uint64)


# ---- bit packing ----

def pack(values, bits: int) -> bytes:
    acc = 0
    vals = _as_int_list(values)
    for i, v in enumerate(vals):
        acc |= (v & ((1 << bits) - 1)) << (i * bits)
    return acc.to_bytes((len(vals) * bits + 7) // 8, "little")


def unpack(data: bytes, cnt: int, bits: int) -> np.ndarray:
    acc = int.from_bytes(data, "little")
    return np.array([(acc >> (i * bits)) & ((1 << bits) - 1) for i in range(cnt)], dtype=np.uint64)
