"""Numpy-friendly wrappers around mixc's C kernels (``mixc._ckernels``).

Ring elements are ``np.uint64`` arrays; all arithmetic wraps modulo 2^64.

Conventions shared by every function here:

* Array inputs must already have dtype ``uint64`` (``float64``-convertible for
  ``encode_fixed``); anything else raises ``ValueError`` rather than being
  silently converted.  Non-contiguous inputs are copied to contiguous ones.
* ``out=`` (optional) must be a writeable, C-contiguous array of the right
  dtype and shape (``ring_matmul`` also accepts row-strided views).  It may be
  one of the inputs (in-place) for elementwise kernels, but must not partially
  overlap them; ``ring_matmul``'s ``out`` must not overlap its inputs at all.
* The C calls release the GIL and share no state, so parties running in
  concurrent threads can call them in parallel.  A ``Prg`` instance is not
  itself thread-safe: give each thread/party its own.
"""

from __future__ import annotations

import threading
from numbers import Integral

import numpy as np

try:
    from mixc._ckernels import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "mixc's C kernels (mixc._ckernels) are not built; install the package "
        "with `pip install -e .` (or `pip install .`) from the repository root"
    ) from exc

__all__ = [
    "MASK64",
    "ring_add",
    "ring_sub",
    "ring_neg",
    "ring_mul",
    "ring_matmul",
    "ring_xor",
    "ring_and",
    "ring_not",
    "popcount",
    "bits_unzip",
    "bits_pack",
    "bits_unpack",
    "encode_fixed",
    "decode_fixed",
    "arshift",
    "lrshift",
    "prg_fill",
    "Prg",
    "U128",
    "r128_from_int",
    "r128_to_int",
    "r128_add",
    "r128_sub",
    "r128_mul",
    "r128_neg",
    "r128_shl",
    "r128_lrshift",
    "r128_arshift",
    "r128_rowsum",
    "r128_matmul",
    "r128_encode",
    "r128_decode",
    "r128_beaver_finish",
    "r128_truncpr_finish",
    "r128_keystream",
]

MASK64 = (1 << 64) - 1
_U64 = np.dtype(np.uint64)
_F64 = np.dtype(np.float64)


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

def _u64_in(x, fn: str, name: str) -> np.ndarray:
    """Return x as a C-contiguous uint64 ndarray (copying only if needed)."""
    arr = np.asarray(x)
    if arr.dtype != _U64:
        raise ValueError(f"{fn}: {name} must have dtype uint64, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        arr = np.asarray(arr, order="C")
    return arr


def _is_scalar_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, (bool, np.bool_))


def _out(out, shape, dtype, fn: str, inputs=()) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{fn}: out must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"{fn}: out must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out has shape {out.shape}, expected {tuple(shape)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    for a in inputs:
        if (
            a is not None
            and np.may_share_memory(out, a)
            and not (a.ctypes.data == out.ctypes.data and a.shape == out.shape
                     and a.dtype.itemsize == out.dtype.itemsize)
        ):
            raise ValueError(f"{fn}: out partially overlaps an input")
    return out


_from_buffer = ffi.from_buffer


def _p64(arr: np.ndarray):
    """uint64_t* view of a C-contiguous uint64 array (the cdata keeps arr alive)."""
    return _from_buffer("uint64_t[]", arr)


def _pf64(arr: np.ndarray):
    return _from_buffer("double[]", arr)


def _p64_strided(arr: np.ndarray):
    """uint64_t* to the first element of a possibly row-strided array; the
    caller must keep arr alive during the call."""
    if arr.flags.c_contiguous:
        return _from_buffer("uint64_t[]", arr)
    return ffi.cast("uint64_t *", arr.ctypes.data)


# --------------------------------------------------------------------------
# elementwise ring ops
# --------------------------------------------------------------------------

def _binary(a, b, out, fn: str, c_vec, c_scalar, scalar_map):
    a = _u64_in(a, fn, "a")
    if _is_scalar_int(b):
        s = scalar_map(int(b)) & MASK64
        res = _out(out, a.shape, _U64, fn, (a,))
        if a.size:
            c_scalar(_p64(a), s, _p64(res), a.size)
        return res
    b = _u64_in(b, fn, "b")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: shape mismatch {a.shape} vs {b.shape}")
    res = _out(out, a.shape, _U64, fn, (a, b))
    if a.size:
        c_vec(_p64(a), _p64(b), _p64(res), a.size)
    return res


def _unary(a, out, fn: str, c_fn, *c_args, name: str = "a"):
    a = _u64_in(a, fn, name)
    res = _out(out, a.shape, _U64, fn, (a,))
    if a.size:
        c_fn(_p64(a), _p64(res), a.size, *c_args)
    return res


def ring_add(a, b, out=None) -> np.ndarray:
    """a + b mod 2^64.  b may be an int scalar (taken mod 2^64)."""
    return _binary(a, b, out, "ring_add", lib.mixc_ring_add, lib.mixc_ring_add_scalar,
                   lambda s: s)


def ring_sub(a, b, out=None) -> np.ndarray:
    """a - b mod 2^64.  b may be an int scalar (taken mod 2^64)."""
    return _binary(a, b, out, "ring_sub", lib.mixc_ring_sub, lib.mixc_ring_add_scalar,
                   lambda s: -s)


def ring_mul(a, b, out=None) -> np.ndarray:
    """Elementwise a * b mod 2^64.  b may be an int scalar (taken mod 2^64)."""
    return _binary(a, b, out, "ring_mul", lib.mixc_ring_mul, lib.mixc_ring_mul_scalar,
                   lambda s: s)


def ring_neg(a, out=None) -> np.ndarray:
    """-a mod 2^64."""
    return _unary(a, out, "ring_neg", lib.mixc_ring_neg)


# --------------------------------------------------------------------------
# boolean ops and packed bits (XOR shares, 64 bits per uint64 word)
#
# Packed bit streams are 1-D uint64 arrays: stream bit k is bit k % 64
# (LSB = 0) of word k // 64.
# --------------------------------------------------------------------------

def ring_xor(a, b, out=None) -> np.ndarray:
    """Elementwise a ^ b.  b may be an int scalar (taken mod 2^64, so -1 is all ones)."""
    return _binary(a, b, out, "ring_xor", lib.mixc_ring_xor, lib.mixc_ring_xor_scalar,
                   lambda s: s)


def ring_and(a, b, out=None) -> np.ndarray:
    """Elementwise a & b.  b may be an int scalar (taken mod 2^64, so -1 is all ones)."""
    return _binary(a, b, out, "ring_and", lib.mixc_ring_and, lib.mixc_ring_and_scalar,
                   lambda s: s)


def ring_not(a, out=None) -> np.ndarray:
    """Elementwise bitwise complement ~a (= a ^ (2^64 - 1))."""
    return _unary(a, out, "ring_not", lib.mixc_ring_not)


def popcount(a, out=None) -> np.ndarray:
    """Number of set bits of each uint64 word, as uint64 (same shape as a)."""
    return _unary(a, out, "popcount", lib.mixc_popcount)


def _words_in(x, fn: str, name: str) -> np.ndarray:
    arr = _u64_in(x, fn, name)
    if arr.ndim != 1:
        raise ValueError(f"{fn}: {name} must be a 1-D array of packed words, got shape {arr.shape}")
    return arr


def _no_overlap(out: np.ndarray, others, fn: str) -> None:
    for o in others:
        if o is not None and np.may_share_memory(out, o):
            raise ValueError(f"{fn}: out overlaps an input or another output")


def bits_unzip(words, out=None) -> tuple[np.ndarray, np.ndarray]:
    """Split a packed bit stream into its even- and odd-indexed bits.

    words is a 1-D uint64 array of n words, read as the stream of 64*n bits.
    Returns (even, odd), two uint64 arrays of (n + 1) // 2 words: even packs
    stream bits 0, 2, 4, ... and odd packs bits 1, 3, 5, ..., contiguously in
    stream order.  If n is odd the high 32 bits of the last word of each are 0.
    out=(even, odd) (optional) are C-contiguous uint64 arrays of that length;
    they must not overlap words or each other.
    """
    fn = "bits_unzip"
    w = _words_in(words, fn, "words")
    m = (w.size + 1) // 2
    if out is None:
        even, odd = np.empty(m, dtype=_U64), np.empty(m, dtype=_U64)
    else:
        if not isinstance(out, tuple) or len(out) != 2:
            raise ValueError(f"{fn}: out must be a tuple (even, odd)")
        even = _out(out[0], (m,), _U64, fn)
        odd = _out(out[1], (m,), _U64, fn)
        _no_overlap(even, (w, odd), fn)
        _no_overlap(odd, (w,), fn)
    if w.size:
        lib.mixc_bits_unzip(_p64(w), w.size, _p64(even), _p64(odd))
    return even, odd


_U8 = np.dtype(np.uint8)
_BOOL = np.dtype(np.bool_)


def bits_pack(bits, out=None) -> np.ndarray:
    """Pack one bit per element into uint64 words.

    bits: uint64, uint8 or bool array of any shape (read in C order), n
    elements; only bit 0 of each element is used.  Returns a 1-D uint64 array
    of (n + 63) // 64 words with element k in bit k % 64 of word k // 64;
    bits past n in the last word are 0.
    """
    fn = "bits_pack"
    arr = np.asarray(bits)
    if arr.dtype not in (_U64, _U8, _BOOL):
        raise ValueError(f"{fn}: bits must have dtype uint64, uint8 or bool, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        arr = np.asarray(arr, order="C")
    n = arr.size
    res = _out(out, ((n + 63) // 64,), _U64, fn)
    _no_overlap(res, (arr,), fn)
    if n:
        if arr.dtype == _U64:
            lib.mixc_bits_pack_u64(_p64(arr), n, _p64(res))
        else:
            lib.mixc_bits_pack_u8(_from_buffer("uint8_t[]", arr), n, _p64(res))
    return res


def bits_unpack(words, n: int, out=None) -> np.ndarray:
    """The first n bits of a packed stream as a 1-D uint64 array of 0/1 values.

    words is a 1-D uint64 array of at least (n + 63) // 64 words (extra words
    and bits past n are ignored).  out (optional): C-contiguous uint64 of
    shape (n,), not overlapping words.
    """
    fn = "bits_unpack"
    w = _words_in(words, fn, "words")
    if not _is_scalar_int(n) or int(n) < 0:
        raise ValueError(f"{fn}: n must be a non-negative int, got {n!r}")
    n = int(n)
    if w.size < (n + 63) // 64:
        raise ValueError(f"{fn}: {n} bits need {(n + 63) // 64} words, got {w.size}")
    res = _out(out, (n,), _U64, fn)
    _no_overlap(res, (w,), fn)
    if n:
        lib.mixc_bits_unpack(_p64(w), n, _p64(res))
    return res


# --------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------

_tls = threading.local()


def _workspace(words: int) -> np.ndarray:
    """Per-thread scratch buffer for packing (reused across calls)."""
    ws = getattr(_tls, "ws", None)
    if ws is None or ws.size < words:
        ws = np.empty(words, dtype=_U64)
        _tls.ws = ws
    return ws


def _row_strided(arr: np.ndarray) -> bool:
    """True if arr is 2-D with unit column stride and a row stride the C
    kernel can express (non-negative multiple of 8 bytes, >= row length)."""
    s0, s1 = arr.strides
    return (
        (s1 == 8 or arr.shape[1] <= 1)
        and s0 % 8 == 0
        and s0 >= 8 * arr.shape[1]
    )


def _mat_in(x, fn: str, name: str) -> tuple[np.ndarray, int]:
    arr = np.asarray(x)
    if arr.dtype != _U64:
        raise ValueError(f"{fn}: {name} must have dtype uint64, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{fn}: {name} must be 2-D, got shape {arr.shape}")
    if arr.flags.c_contiguous:
        return arr, arr.shape[1]
    if arr.size and _row_strided(arr):
        return arr, arr.strides[0] // 8
    arr = np.asarray(arr, order="C")
    return arr, arr.shape[1]


def ring_matmul(a, b, out=None, accumulate: bool = False) -> np.ndarray:
    """Matrix product a (M x K) . b (K x N) mod 2^64 (uint64, 2-D).

    accumulate=True computes out += a . b and requires out.  out may be a
    row-strided view (unit column stride), e.g. a block of a larger matrix;
    it must not overlap a or b.
    """
    fn = "ring_matmul"
    a, lda = _mat_in(a, fn, "a")
    b, ldb = _mat_in(b, fn, "b")
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"{fn}: inner dimensions differ: {a.shape} . {b.shape}")
    if out is None:
        if accumulate:
            raise ValueError(f"{fn}: accumulate=True needs out")
        out = np.empty((M, N), dtype=_U64)
        ldc = N
    else:
        if not isinstance(out, np.ndarray):
            raise ValueError(f"{fn}: out must be a numpy array, got {type(out).__name__}")
        if out.dtype != _U64:
            raise ValueError(f"{fn}: out must have dtype uint64, got {out.dtype}")
        if out.shape != (M, N):
            raise ValueError(f"{fn}: out has shape {out.shape}, expected {(M, N)}")
        if not out.flags.writeable:
            raise ValueError(f"{fn}: out is read-only")
        if out.size and not (out.flags.c_contiguous or _row_strided(out)):
            raise ValueError(f"{fn}: out must be C-contiguous or row-strided with unit column stride")
        if np.may_share_memory(out, a) or np.may_share_memory(out, b):
            raise ValueError(f"{fn}: out overlaps an input")
        ldc = N if out.flags.c_contiguous else out.strides[0] // 8
    if M == 0 or N == 0:
        return out
    words = lib.mixc_ring_matmul_ws_words(M, K, N)
    ws = _workspace(words) if words else None
    lib.mixc_ring_matmul(
        _p64_strided(a), lda, _p64_strided(b), ldb, _p64_strided(out), ldc, M, K, N,
        1 if accumulate else 0,
        _p64(ws) if ws is not None else ffi.NULL, ws.size if ws is not None else 0,
    )
    return out


# --------------------------------------------------------------------------
# fixed point and shifts
# --------------------------------------------------------------------------

def _check_bits(bits, fn: str, name: str, hi: int) -> int:
    if not _is_scalar_int(bits) or not 0 <= int(bits) <= hi:
        raise ValueError(f"{fn}: {name} must be an int in [0, {hi}], got {bits!r}")
    return int(bits)


def encode_fixed(x, frac_bits: int, out=None) -> np.ndarray:
    """Fixed-point encode: uint64 two's complement of round(x * 2^frac_bits).

    Rounds half to even (like np.rint).  Raises ValueError if any value is
    NaN/inf or |round(x * 2^frac_bits)| does not fit in int64.
    """
    fn = "encode_fixed"
    f = _check_bits(frac_bits, fn, "frac_bits", 63)
    xa = np.asarray(x)
    if xa.dtype.kind not in "fiub":
        raise ValueError(f"{fn}: x must be a real number array, got dtype {xa.dtype}")
    xa = np.asarray(xa, dtype=_F64, order="C")
    res = _out(out, xa.shape, _U64, fn)
    if xa.size:
        bad = lib.mixc_encode_fixed(_pf64(xa), _p64(res), xa.size, f)
        if bad:
            raise ValueError(
                f"{fn}: {bad} value(s) are NaN/inf or out of range "
                f"(|x| * 2^{f} must be < 2^63)"
            )
    return res


def decode_fixed(u, frac_bits: int, out=None) -> np.ndarray:
    """Fixed-point decode: (u viewed as int64) / 2^frac_bits as float64."""
    fn = "decode_fixed"
    f = _check_bits(frac_bits, fn, "frac_bits", 63)
    u = _u64_in(u, fn, "u")
    res = _out(out, u.shape, _F64, fn)
    if u.size:
        lib.mixc_decode_fixed(_p64(u), _pf64(res), u.size, f)
    return res


def arshift(u, bits: int, out=None) -> np.ndarray:
    """Arithmetic right shift of the int64 view by bits (0..63), as uint64."""
    fn = "arshift"
    s = _check_bits(bits, fn, "bits", 63)
    return _unary(u, out, fn, lib.mixc_arshift, s, name="u")


def lrshift(u, bits: int, out=None) -> np.ndarray:
    """Logical right shift of uint64 values by bits (0..63)."""
    fn = "lrshift"
    s = _check_bits(bits, fn, "bits", 63)
    return _unary(u, out, fn, lib.mixc_lrshift, s, name="u")


# --------------------------------------------------------------------------
# ChaCha20 PRG
# --------------------------------------------------------------------------

def _check_key(key, fn: str) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ValueError(f"{fn}: key must be 32 bytes, got {type(key).__name__}")
    key = bytes(key)
    if len(key) != 32:
        raise ValueError(f"{fn}: key must be 32 bytes, got {len(key)}")
    return key


def _check_u64(v, fn: str, name: str) -> int:
    if not _is_scalar_int(v) or not 0 <= int(v) <= MASK64:
        raise ValueError(f"{fn}: {name} must be an int in [0, 2^64), got {v!r}")
    return int(v)


def prg_fill(key: bytes, stream: int, counter: int, out: np.ndarray, skip: int = 0) -> np.ndarray:
    """Fill out (uint64, C-contiguous) with ChaCha20 keystream words.

    Writes words [counter*8 + skip, counter*8 + skip + out.size) of the
    keystream of (key, stream): counter is the 64-bit block counter (8 words
    per 64-byte block), stream the 64-bit stream id (nonce).
    """
    fn = "prg_fill"
    key = _check_key(key, fn)
    stream = _check_u64(stream, fn, "stream")
    counter = _check_u64(counter, fn, "counter")
    if not _is_scalar_int(skip) or not 0 <= int(skip) <= 7:
        raise ValueError(f"{fn}: skip must be an int in [0, 7], got {skip!r}")
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{fn}: out must be a numpy array")
    _out(out, out.shape, _U64, fn)
    if out.size:
        lib.mixc_chacha20_fill(ffi.from_buffer("uint8_t[]", key), stream, counter,
                               int(skip), _p64(out), out.size)
    return out


class PrgKey:
    """A ChaCha20 key checked and copied to C memory once, for ``keystream_words``."""

    __slots__ = ("ckey",)

    def __init__(self, key: bytes):
        self.ckey = ffi.new("uint8_t[32]", _check_key(key, "PrgKey"))


def keystream_words(key: PrgKey, stream: int, shape) -> np.ndarray:
    """The first words of the keystream of (key, stream) in an array of ``shape``: the
    same as ``Prg(key, stream).random_u64(shape)``, without its per-call checks (a
    party's program draws tens of thousands of short streams)."""
    out = np.empty(shape, dtype=_U64)
    if out.size:
        lib.mixc_chacha20_fill(key.ckey, stream, 0, 0, _p64(out), out.size)
    return out


class Prg:
    """ChaCha20 keystream for (key, stream) as a source of uniform uint64 words.

    Successive calls consume successive keystream words, so they never repeat
    values; independent streams come from distinct (key, stream) pairs.
    ``position`` is the index (in uint64 words) of the next word to be drawn;
    it can be set to address any range.  Not thread-safe: one per thread.
    """

    __slots__ = ("_key", "_ckey", "stream", "position")

    def __init__(self, key: bytes, stream: int = 0, position: int = 0):
        self._key = _check_key(key, "Prg")
        self._ckey = ffi.new("uint8_t[32]", self._key)
        self.stream = _check_u64(stream, "Prg", "stream")
        if not _is_scalar_int(position) or position < 0:
            raise ValueError(f"Prg: position must be a non-negative int, got {position!r}")
        self.position = int(position)

    @property
    def key(self) -> bytes:
        return self._key

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Fill a C-contiguous uint64 array with fresh words; returns out."""
        if not isinstance(out, np.ndarray):
            raise ValueError("Prg.fill: out must be a numpy array")
        _out(out, out.shape, _U64, "Prg.fill")
        n = out.size
        if n:
            pos = self.position
            lib.mixc_chacha20_fill(self._ckey, self.stream, (pos >> 3) & MASK64, pos & 7,
                                   _p64(out), n)
            self.position = pos + n
        return out

    def random_u64(self, shape=()) -> np.ndarray:
        """Uniform uint64 values of the given shape (fresh on every call)."""
        return self.fill(np.empty(shape, dtype=_U64))

    def random_bits(self, shape=()) -> np.ndarray:
        """Uniform bits (uint64 values in {0, 1}) of the given shape.

        Bit i is bit (i % 64) of word i // 64 of the drawn words."""
        shape = (shape,) if isinstance(shape, Integral) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        words = self.random_u64(((n + 63) // 64,))
        bits = np.unpackbits(words.astype("<u8", copy=False).view(np.uint8), bitorder="little")[:n]
        return bits.astype(_U64).reshape(shape)


# --------------------------------------------------------------------------
# fused protocol "finish" kernels (csrc/fused.c)
#
# One pass over memory each, instead of the chain of numpy temporaries a
# protocol would otherwise build.  Every operand is a uint64 array and all
# operands share one shape (any shape, including 0-d and empty); the result
# has that shape.  first (0/1 or bool) marks the party that adds the public
# terms.  out= follows the elementwise rule: it may be one of the operands.
# --------------------------------------------------------------------------

__all__ += ["beaver_finish", "and_finish", "truncpr_finish", "finish_verified"]


def _check_first(first, fn: str) -> int:
    if isinstance(first, (bool, np.bool_)):
        return int(first)
    if isinstance(first, Integral) and int(first) in (0, 1):
        return int(first)
    raise ValueError(f"{fn}: first must be 0, 1 or a bool, got {first!r}")


def _same_shape_u64(fn: str, **arrays) -> list:
    res = []
    shape = None
    for name, x in arrays.items():
        arr = _u64_in(x, fn, name)
        if shape is None:
            shape, first_name = arr.shape, name
        elif arr.shape != shape:
            raise ValueError(
                f"{fn}: shape mismatch: {first_name} has shape {shape}, {name} has {arr.shape}")
        res.append(arr)
    return res


def _fused(fn: str, c_fn, out, c_args, **operands) -> np.ndarray:
    ops = _same_shape_u64(fn, **operands)
    res = _out(out, ops[0].shape, _U64, fn, ops)
    if res.size:
        c_fn(*[_p64(x) for x in ops], _p64(res), res.size, *c_args)
    return res


def finish_verified(name, operands, *scalars) -> np.ndarray:
    """The fused kernel ``name`` ("beaver_finish", "and_finish", "truncpr_finish") on
    operands the IR verifier has already checked (uint64, one shape; ``scalars``:
    the kernel's bits/first), without the public functions' per-call checks: the
    executor runs thousands of these per training step."""
    ops = [x if x.flags.c_contiguous else np.ascontiguousarray(x) for x in operands]
    res = np.empty(ops[0].shape, dtype=_U64)
    if res.size:
        getattr(lib, "mixc_" + name)(*[_p64(x) for x in ops], _p64(res), res.size,
                                     *[int(v) for v in scalars])
    return res


def beaver_finish(c, e, f, a, b, first, out=None) -> np.ndarray:
    """Beaver multiplication, last local step: c + e*b + f*a (+ e*f if first), mod 2^64.

    With a triple share (a, b, c) and opened masks e = x - a, f = y - b, the
    parties' outputs sum to x*y; exactly one party passes first=1.
    """
    fn = "beaver_finish"
    fst = _check_first(first, fn)
    return _fused(fn, lib.mixc_beaver_finish, out, (fst,), c=c, e=e, f=f, a=a, b=b)


def and_finish(c, e, f, a, b, first, out=None) -> np.ndarray:
    """Boolean Beaver (AND) last step: c ^ (e & b) ^ (f & a) (^ (e & f) if first).

    Bitwise over packed uint64 words (64 independent AND gates per word).
    """
    fn = "and_finish"
    fst = _check_first(first, fn)
    return _fused(fn, lib.mixc_and_finish, out, (fst,), c=c, e=e, f=f, a=a, b=b)


def truncpr_finish(c, msb, low, bits, first, out=None) -> np.ndarray:
    """Probabilistic truncation by bits (1..62), last local step, mod 2^64:

        c_low = (c << 1) >> (bits + 1);  c_msb = c >> 63
        t = msb - 2*c_msb*msb (+ c_msb if first)
        y = (t << (63 - bits)) - low (+ c_low - 2^(62 - bits) if first)

    c is the opened (public) value; msb and low are this party's shares.
    """
    fn = "truncpr_finish"
    if not _is_scalar_int(bits) or not 1 <= int(bits) <= 62:
        raise ValueError(f"{fn}: bits must be an int in [1, 62], got {bits!r}")
    fst = _check_first(first, fn)
    return _fused(fn, lib.mixc_truncpr_finish, out, (int(bits), fst), c=c, msb=msb, low=low)


# --------------------------------------------------------------------------
# ring Z_2^128 (``ring: 128`` MPC devices; csrc/ring128.c)
#
# A u128 array has the numpy dtype ``U128`` (mixc.ir.ops): two little-endian
# uint64 words per element, low first -- the memory of the C kernels'
# unsigned __int128. numpy refuses arithmetic on it, so nothing computes on
# ring-128 values by accident; these functions do, modulo 2^128, with the
# conventions above (inputs must already be U128, out as for the u64 kernels).
# --------------------------------------------------------------------------

from mixc.ir.ops import U128  # noqa: E402  (the IR's dtype table owns the dtype)

MASK128 = (1 << 128) - 1


def _u128_in(x, fn: str, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != U128:
        raise ValueError(f"{fn}: {name} must have dtype u128, got {arr.dtype}")
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def _p128(arr: np.ndarray):
    """uint64_t* to the words of a C-contiguous U128 array."""
    return ffi.cast("uint64_t *", ffi.from_buffer(arr))


def r128_from_int(values) -> np.ndarray:
    """Python ints (any shape, any sign) as U128 ring elements, taken mod 2^128."""
    ints = np.asarray(values, dtype=object)
    out = np.empty(ints.shape, dtype=U128)
    flat = [int(v) & MASK128 for v in ints.reshape(-1)]
    out["lo"].reshape(-1)[...] = [v & MASK64 for v in flat]
    out["hi"].reshape(-1)[...] = [v >> 64 for v in flat]
    return out


def r128_to_int(a) -> np.ndarray:
    """U128 ring elements as Python ints in [0, 2^128) (object array)."""
    a = _u128_in(a, "r128_to_int", "a")
    lo, hi = a["lo"].astype(object), a["hi"].astype(object)
    return (hi << 64) | lo


def r128_words(a) -> np.ndarray:
    """The uint64 words of U128 elements: shape + (2,), low word first (a view when it can)."""
    a = _u128_in(a, "r128_words", "a")
    # numpy cannot view a 0-d array as a dtype of another size: view it as 1-d
    return a.reshape(-1).view(_U64).reshape(a.shape + (2,))


def r128_from_words(words) -> np.ndarray:
    """U128 elements from uint64 words of shape s + (2,) (low word first)."""
    w = _u64_in(words, "r128_from_words", "words")
    if w.ndim == 0 or w.shape[-1] != 2:
        raise ValueError(f"r128_from_words: words must have a last axis of 2, got {w.shape}")
    return w.view(U128).reshape(w.shape[:-1])


def r128_widen(a) -> np.ndarray:
    """uint64 words zero-extended to U128 elements."""
    a = _u64_in(a, "r128_widen", "a")
    out = np.zeros(a.shape, dtype=U128)
    out["lo"] = a
    return out


def _r128_operand(b, shape, fn: str) -> np.ndarray:
    if _is_scalar_int(b):
        return np.broadcast_to(r128_from_int(int(b)), shape)
    b = _u128_in(b, fn, "b")
    if b.shape != shape:
        raise ValueError(f"{fn}: shape mismatch {shape} vs {b.shape}")
    return b


def _r128_elementwise(fn: str, c_fn, out, c_args, *operands) -> np.ndarray:
    ops = [o if o.flags.c_contiguous else np.ascontiguousarray(o) for o in operands]
    res = _out(out, ops[0].shape, U128, fn, ops)
    if res.size:
        c_fn(*[_p128(x) for x in ops], _p128(res), res.size, *c_args)
    return res


def _r128_binary(fn, c_fn, a, b, out):
    a = _u128_in(a, fn, "a")
    return _r128_elementwise(fn, c_fn, out, (), a, _r128_operand(b, a.shape, fn))


def r128_add(a, b, out=None) -> np.ndarray:
    """a + b mod 2^128 (b may be an int scalar)."""
    return _r128_binary("r128_add", lib.mixc_r128_add, a, b, out)


def r128_sub(a, b, out=None) -> np.ndarray:
    """a - b mod 2^128 (b may be an int scalar)."""
    return _r128_binary("r128_sub", lib.mixc_r128_sub, a, b, out)


def r128_mul(a, b, out=None) -> np.ndarray:
    """Elementwise a * b mod 2^128 (b may be an int scalar)."""
    return _r128_binary("r128_mul", lib.mixc_r128_mul, a, b, out)


def r128_neg(a, out=None) -> np.ndarray:
    """-a mod 2^128."""
    return _r128_elementwise("r128_neg", lib.mixc_r128_neg, out, (), _u128_in(a, "r128_neg", "a"))


def _r128_shift(fn, c_fn, a, bits, out):
    s = _check_bits(bits, fn, "bits", 127)
    return _r128_elementwise(fn, c_fn, out, (s,), _u128_in(a, fn, "a"))


def r128_shl(a, bits: int, out=None) -> np.ndarray:
    """a << bits mod 2^128 (0..127)."""
    return _r128_shift("r128_shl", lib.mixc_r128_shl, a, bits, out)


def r128_lrshift(a, bits: int, out=None) -> np.ndarray:
    """Logical right shift by bits (0..127)."""
    return _r128_shift("r128_lrshift", lib.mixc_r128_lrshift, a, bits, out)


def r128_arshift(a, bits: int, out=None) -> np.ndarray:
    """Arithmetic right shift of the int128 view by bits (0..127)."""
    return _r128_shift("r128_arshift", lib.mixc_r128_arshift, a, bits, out)


def r128_rowsum(a) -> np.ndarray:
    """Sums of the rows of a 2-D U128 array, mod 2^128 (shape (m,))."""
    a = _u128_in(a, "r128_rowsum", "a")
    if a.ndim != 2:
        raise ValueError(f"r128_rowsum: a must be 2-D, got shape {a.shape}")
    out = np.empty(a.shape[0], dtype=U128)
    if out.size:
        lib.mixc_r128_rowsum(_p128(a), _p128(out), a.shape[0], a.shape[1])
    return out


def r128_matmul(a, b) -> np.ndarray:
    """Matrix product a (M x K) . b (K x N) mod 2^128 (U128, 2-D).

    Where the build has AVX-512 IFMA, one C kernel on 52-bit limbs
    (csrc/ring128.c). Elsewhere: with a = al + 2^64 ah and b = bl + 2^64 bh: al.bl in full 128 bits (the C
    kernel, one 64x64->128 multiply per term) plus 2^64 (al.bh + ah.bl), whose
    low 64 bits are two blocked uint64 GEMMs (``ring_matmul``)."""
    fn = "r128_matmul"
    a, b = _u128_in(a, fn, "a"), _u128_in(b, fn, "b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"{fn}: cannot multiply shapes {a.shape} . {b.shape}")
    (M, K), N = a.shape, b.shape[1]
    out = np.empty((M, N), dtype=U128)
    if out.size == 0:
        return out
    ws = _workspace(lib.mixc_r128_matmul_ws_words(M, K, N))
    if lib.mixc_r128_matmul(_p128(a), _p128(b), _p128(out), M, K, N, _p64(ws), ws.size) == 1:
        return out  # the AVX-512 IFMA kernel
    return _r128_matmul_portable(a, b, out)


def _r128_matmul_portable(a, b, out):
    """r128_matmul without IFMA: the low words' full products and two 64-bit GEMMs."""
    (M, K), N = a.shape, b.shape[1]
    al, ah = np.ascontiguousarray(a["lo"]), np.ascontiguousarray(a["hi"])
    bl, bh = np.ascontiguousarray(b["lo"]), np.ascontiguousarray(b["hi"])
    blt = np.ascontiguousarray(bl.T)
    lib.mixc_r128_matmul_low(_p64(al), K, _p64(blt), K, _p128(out), M, K, N, 0)
    cross = ring_matmul(al, bh)
    ring_matmul(ah, bl, out=cross, accumulate=True)
    high = out["hi"]
    ring_add(np.ascontiguousarray(high), cross, out=cross)
    high[...] = cross
    return out


def r128_encode(x, frac_bits: int) -> np.ndarray:
    """Fixed-point encode into Z_2^128: round(x * 2^frac_bits) (half to even); ValueError
    if a value is NaN/inf or does not fit int128."""
    fn = "r128_encode"
    f = _check_bits(frac_bits, fn, "frac_bits", 126)
    xa = np.asarray(x)
    if xa.dtype.kind not in "fiub":
        raise ValueError(f"{fn}: x must be a real number array, got dtype {xa.dtype}")
    xa = np.asarray(xa, dtype=_F64, order="C")
    res = np.empty(xa.shape, dtype=U128)
    if xa.size and lib.mixc_r128_encode(_pf64(xa), _p128(res), xa.size, f):
        raise ValueError(f"{fn}: value(s) are NaN/inf or out of range (|x| * 2^{f} must be < 2^127)")
    return res


def r128_decode(u, frac_bits: int) -> np.ndarray:
    """Fixed-point decode: (u as int128) / 2^frac_bits as float64."""
    fn = "r128_decode"
    f = _check_bits(frac_bits, fn, "frac_bits", 126)
    u = _u128_in(u, fn, "u")
    res = np.empty(u.shape, dtype=_F64)
    if u.size:
        lib.mixc_r128_decode(_p128(u), _pf64(res), u.size, f)
    return res


def r128_beaver_finish(c, e, f, a, b, first) -> np.ndarray:
    """``beaver_finish`` over Z_2^128: c + e*b + f*a (+ e*f if first)."""
    fn = "r128_beaver_finish"
    ops = [_u128_in(x, fn, n) for x, n in zip((c, e, f, a, b), "cefab")]
    if len({o.shape for o in ops}) != 1:
        raise ValueError(f"{fn}: operands have different shapes")
    return _r128_elementwise(fn, lib.mixc_r128_beaver_finish, None,
                             (_check_first(first, fn),), *ops)


def r128_truncpr_finish(c, msb, low, bits, first) -> np.ndarray:
    """``truncpr_finish`` over Z_2^128 (bits 1..126): the top bit is bit 127 and the
    offset 2^126 (see csrc/kernels.h)."""
    fn = "r128_truncpr_finish"
    if not _is_scalar_int(bits) or not 1 <= int(bits) <= 126:
        raise ValueError(f"{fn}: bits must be an int in [1, 126], got {bits!r}")
    ops = [_u128_in(x, fn, n) for x, n in zip((c, msb, low), ("c", "msb", "low"))]
    if len({o.shape for o in ops}) != 1:
        raise ValueError(f"{fn}: operands have different shapes")
    return _r128_elementwise(fn, lib.mixc_r128_truncpr_finish, None,
                             (int(bits), _check_first(first, fn)), *ops)


def r128_keystream(key: PrgKey, stream: int, shape) -> np.ndarray:
    """Uniform U128 elements: the words of ``keystream_words`` two by two (low first)."""
    shape = tuple(shape)
    return keystream_words(key, stream, shape + (2,)).view(U128).reshape(shape)
