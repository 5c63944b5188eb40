"""RLWE parameters for ``runtime.he``: the security check, the precomputed NTT
contexts per parameter set and level, the NTT entry points and the input checks and
noise-budget check every other part uses. (The scheme's description: ``runtime.he``.)"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from dataclasses import dataclass, field

import numpy as np

from mixc.errors import MixcError
from mixc.runtime.kernels import Prg, U128
from mixc.runtime.kernels import ffi, lib


class HEError(MixcError):
    """An HE failure: noise budget exceeded, wrong key, malformed or
    mismatched ciphertext, insecure parameters."""


MASK64 = (1 << 64) - 1
_U64 = np.dtype(np.uint64)
T_BITS = 64  # the default plaintext modulus 2^64; ``HEParams.t_bits`` may be 128
T_CHOICES = (64, 128)

# HomomorphicEncryption.org standard, ternary secret, 128-bit classical:
# maximal log2 q per ring dimension.
STD_128_TERNARY = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

DEFAULT_PRIMES = (4398046150657, 4398045708289, 35184371613697, 35184371417089, 17592186028033)
# t = 2^128 (``DEFAULT_128``): seven 50-bit primes = 1 mod 2n at n = 16384, log2 q = 350
PRIMES_128 = (1125899904679937, 1125899903991809, 1125899903827969, 1125899903795201,
              1125899903500289, 1125899903107073, 1125899902124033)

_A_STREAM = 0x6D697863_48450001  # Prg stream id for expanding public seeds
_MAGIC = b"MXHE"
_VERSION = 1
_HDR = struct.Struct("<4sBBBB8s8sdI")
KIND_FULL, KIND_SEEDED, KIND_EXTRACTED, KIND_PUBKEY = 0, 1, 2, 3


# --------------------------------------------------------------------------
# parameters and precomputation
# --------------------------------------------------------------------------

def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class HEParams:
    """An RLWE parameter set: ring dimension n, RNS primes (q = product),
    CBD error parameter eta, the number of primes ``keep`` that results are
    switched down to, the statistical security ``stat_sec`` of noise flooding
    and the plaintext modulus t = 2^t_bits (64 or 128; plaintext values are
    uint64 arrays for 64, ``U128`` arrays -- the u128 ring's -- for 128)."""

    n: int
    primes: tuple
    eta: int = 21
    keep: int = 2
    stat_sec: int = 40
    t_bits: int = T_BITS
    insecure_ok: bool = field(default=False, compare=False)

    def __post_init__(self):
        n, primes = self.n, tuple(int(p) for p in self.primes)
        object.__setattr__(self, "primes", primes)
        if n < 4 or n & (n - 1):
            raise HEError(f"HEParams: n must be a power of two, got {n}")
        if not primes or len(set(primes)) != len(primes):
            raise HEError("HEParams: need one or more distinct primes")
        for p in primes:
            if not (1 << 20) < p < (1 << 62) or (p - 1) % (2 * n) or not _is_prime(p):
                raise HEError(f"HEParams: {p} is not a prime = 1 mod 2n in (2^20, 2^62)")
        if not 1 <= self.keep <= len(primes):
            raise HEError("HEParams: keep must be in [1, number of primes]")
        if not 1 <= self.eta <= 32:
            raise HEError("HEParams: eta must be in [1, 32]")
        if self.t_bits not in T_CHOICES:
            raise HEError(f"HEParams: t_bits must be 64 or 128, got {self.t_bits}")
        if not self.secure and not self.insecure_ok:
            bound = STD_128_TERNARY.get(n)
            raise HEError(
                f"HEParams: n = {n}, log2 q = {self.logq:.1f} is not 128-bit secure "
                f"(HE standard bound for ternary secrets: "
                f"{'none' if bound is None else f'log2 q <= {bound}'})"
            )

    @property
    def L(self) -> int:
        return len(self.primes)

    @property
    def q(self) -> int:
        return math.prod(self.primes)

    @property
    def logq(self) -> float:
        return math.log2(self.q)

    @property
    def secure(self) -> bool:
        bound = STD_128_TERNARY.get(self.n)
        return bound is not None and self.q < (1 << bound)

    @property
    def params_id(self) -> bytes:
        h = hashlib.blake2b(digest_size=8, person=b"mixc-he-params")
        fields = (self.n, self.primes, self.eta, self.keep, self.stat_sec)
        # t = 2^64 keeps the id it had before t became a parameter
        h.update(repr(fields if self.t_bits == T_BITS else fields + (self.t_bits,)).encode())
        return h.digest()

    def describe(self) -> str:
        return (
            f"n = {self.n}, q = {' * '.join(str(p.bit_length()) + 'b' for p in self.primes)} "
            f"(log2 q = {self.logq:.7f}), t = 2^{self.t_bits}, ternary secret, CBD eta = {self.eta}; "
            + ("128-bit classical (HE standard, ternary, "
               f"n = {self.n}: log q <= {STD_128_TERNARY[self.n]})" if self.secure else "INSECURE")
        )

    @staticmethod
    def toy(n: int, bits=(40, 41), keep: int = 1, t_bits: int = T_BITS) -> "HEParams":
        """Insecure parameters with primes below 2^b = 1 mod 2n (tests only)."""
        primes = []
        for b in bits:
            k = ((1 << b) - 1) // (2 * n)
            while True:
                p = k * 2 * n + 1
                if p < (1 << b) and _is_prime(p) and p not in primes:
                    primes.append(p)
                    break
                k -= 1
        return HEParams(n, tuple(primes), keep=keep, t_bits=t_bits, insecure_ok=True)

    @property
    def plain_dtype(self):
        """numpy dtype of a plaintext value: uint64 (t = 2^64) or U128 (t = 2^128)."""
        return _U64 if self.t_bits == 64 else U128


DEFAULT = HEParams(8192, DEFAULT_PRIMES)
# t = 2^128 (the u128 ring): a product by a plaintext with 127-bit coefficients needs
# log2 q ~ 334 (see runtime.he), hence n = 16384 (HE standard: log2 q <= 438); results
# are switched down to 3 primes (150 bits > 128 + 2 + log2 n + 1)
DEFAULT_128 = HEParams(16384, PRIMES_128, keep=3, t_bits=128)


def params_for(t_bits: int) -> HEParams:
    """The default parameter set of plaintext modulus 2^t_bits."""
    if t_bits not in T_CHOICES:
        raise HEError(f"no HE parameters for t = 2^{t_bits} (64 or 128)")
    return DEFAULT if t_bits == 64 else DEFAULT_128


def _p64(arr):
    return ffi.from_buffer("uint64_t[]", arr)


def _pi64(arr):
    return ffi.from_buffer("int64_t[]", arr)


class _Level:
    """Constants for the modulus q_l = p_0 ... p_{l-1}."""

    def __init__(self, primes, l, t_bits=T_BITS):
        ps = primes[:l]
        self.l = l
        self.q = math.prod(ps)
        self.q_lo = self.q & MASK64
        self.q_lo128 = np.array([self.q & MASK64, (self.q >> 64) & MASK64], dtype=_U64)
        self.log2q = math.log2(self.q)
        # budget for the worst-case noise bound: half of q / (2t)
        self.budget = float(self.q) / 2.0 ** (t_bits + 2)
        # decoding: (Q/p)^-1 mod p, its Shoup companion, floor(2^(t_bits + 128) / p) in words
        crt = []
        for p in ps:
            qh = self.q // p
            inv = pow(qh % p, -1, p)
            R = (1 << (t_bits + 128)) // p
            crt += [inv, (inv << 64) // p] + [(R >> (64 * w)) & MASK64
                                              for w in range(t_bits // 64 + 2)]
        self.crt = np.array(crt, dtype=_U64)
        inv_last = []
        if l > 1:
            pl = ps[-1]
            for p in ps[:-1]:
                inv = pow(pl % p, -1, p)
                inv_last += [inv, (inv << 64) // p]
        self.inv_last = np.array(inv_last or [0], dtype=_U64)


class _Ctx:
    def __init__(self, params: HEParams):
        self.params = params
        n, primes = params.n, params.primes
        L = len(primes)
        self.n, self.L = n, L
        desc = []
        for p in primes:
            k = p.bit_length()
            inv64 = pow(1 << 64, -1, p)
            desc += [p, k, (1 << (2 * k)) // p, (1 << 64) // p, (1 << 64) % p, inv64,
                     (inv64 << 64) // p, 0]
        self.mods = np.array(desc, dtype=_U64)
        self.tw = lib.mixc_he_ntt_tab_words(n)
        self.tabs = np.empty(L * self.tw, dtype=_U64)
        self.psi = [_find_psi(p, n) for p in primes]
        for i, p in enumerate(primes):
            psi = self.psi[i]
            rc = lib.mixc_he_ntt_init(_p64(self.mods[8 * i:8 * i + 8]), psi, n,
                                      _p64(self.tabs[i * self.tw:(i + 1) * self.tw]))
            if rc != 0:  # pragma: no cover - parameters are validated above
                raise HEError(f"NTT table setup failed for p = {p}")
        self.t_bits = params.t_bits
        self.levels = {l: _Level(primes, l, params.t_bits) for l in range(1, L + 1)}
        self.bits = [p.bit_length() for p in primes]
        self._tls = threading.local()

    def scratch(self, name, shape):
        """Per-thread temporary buffer (never hand it out): avoids the page
        faults of allocating and freeing ~MB arrays on every operation."""
        d = getattr(self._tls, "bufs", None)
        if d is None:
            d = self._tls.bufs = {}
        shape = tuple(shape)
        buf = d.get(name)
        size = math.prod(shape)
        if buf is None or buf.size < size:
            buf = d[name] = np.empty(max(size, 1), dtype=_U64)
        return buf[:size].reshape(shape)

    # --- kernel wrappers (a: C-contiguous uint64 arrays, l limbs) ---
    def ntt(self, a, l=None):
        l = self.L if l is None else l
        cnt = a.size // (l * self.n)
        lib.mixc_he_ntt_fwd(_p64(a), _p64(self.mods), _p64(self.tabs), l, self.n, cnt)
        return a

    def intt(self, a, l=None):
        l = self.L if l is None else l
        cnt = a.size // (l * self.n)
        lib.mixc_he_ntt_inv(_p64(a), _p64(self.mods), _p64(self.tabs), l, self.n, cnt)
        return a

    def _ew(self, fn, arrays, out, l):
        """Elementwise kernel over arrays of shape (..., l, cnt): every
        leading component is an l-limb block of cnt residues."""
        l = self.L if l is None else l
        a0 = arrays[0]
        out = np.empty_like(a0) if out is None else out
        cnt = a0.shape[-1]
        if a0.ndim < 2 or a0.shape[-2] != l:
            raise ValueError(f"expected residues of shape (..., {l}, {cnt}), got {a0.shape}")
        flat = [x.reshape(-1) for x in arrays]
        fo = out.reshape(-1)
        step = l * cnt
        for k in range(a0.size // step if step else 0):
            sl = slice(k * step, (k + 1) * step)
            fn(*[_p64(x[sl]) for x in flat], _p64(fo[sl]), _p64(self.mods), l, cnt)
        return out

    def add(self, a, b, out=None, l=None):
        return self._ew(lib.mixc_he_add, (a, b), out, l)

    def sub(self, a, b, out=None, l=None):
        return self._ew(lib.mixc_he_sub, (a, b), out, l)

    def neg(self, a, out=None, l=None):
        return self._ew(lib.mixc_he_neg, (a,), out, l)

    def mul(self, a, b, out=None, l=None):
        return self._ew(lib.mixc_he_mul, (a, b), out, l)

    def mulacc(self, a, w, acc, l, ncomp, accumulate):
        lib.mixc_he_mulacc(_p64(a), _p64(w), _p64(acc), _p64(self.mods), l, self.n, ncomp,
                           1 if accumulate else 0)

    def from_i64(self, x, l=None, out=None):
        l = self.L if l is None else l
        x = np.ascontiguousarray(x, dtype=np.int64)
        out = np.empty((l, x.size), dtype=_U64) if out is None else out
        lib.mixc_he_from_i64(_pi64(x), _p64(self.mods), l, x.size, _p64(out))
        return out

    def from_plain(self, x, l=None, out=None):
        """Residues of plaintext values lifted to the centred integers (-t/2, t/2]:
        uint64 (t = 2^64, read as int64) or U128 (t = 2^128) arrays."""
        if self.t_bits == 64:
            return self.from_i64(np.ascontiguousarray(x).view(np.int64), l, out)
        l = self.L if l is None else l
        x = np.ascontiguousarray(x, dtype=U128)
        out = np.empty((l, x.size), dtype=_U64) if out is None else out
        lib.mixc_he_from_i128(_p64(x.view(_U64)), _p64(self.mods), l, x.size, _p64(out))
        return out

    def encode(self, m, l=None, out=None):
        """round(q m / t) for plaintext values m (the plain dtype of the parameters)."""
        l = self.L if l is None else l
        m = np.ascontiguousarray(m, dtype=self.params.plain_dtype)
        out = np.empty((l, m.size), dtype=_U64) if out is None else out
        if self.t_bits == 64:
            lib.mixc_he_encode_scaled(_p64(m), self.levels[l].q_lo, _p64(self.mods), l, m.size,
                                      _p64(out))
        else:
            lib.mixc_he_encode_scaled128(_p64(m.view(_U64)), _p64(self.levels[l].q_lo128),
                                         _p64(self.mods), l, m.size, _p64(out))
        return out

    def decode(self, v, l):
        """(round(t v / q) mod t in the plain dtype, rounding residual * 2^64 as int64)."""
        cnt = v.size // l
        m = np.empty(cnt, dtype=self.params.plain_dtype)
        frac = np.empty(cnt, dtype=np.int64)
        decode = lib.mixc_he_decode if self.t_bits == 64 else lib.mixc_he_decode128
        decode(_p64(v), _p64(self.mods), _p64(self.levels[l].crt), l, cnt,
               _p64(m.view(_U64)), _pi64(frac))
        return m, frac

    def drop_last(self, a, l):
        cnt = a.size // l
        out = np.empty((l - 1, cnt), dtype=_U64)
        lib.mixc_he_drop_last(_p64(a), _p64(self.mods), _p64(self.levels[l].inv_last), l, cnt,
                              _p64(out))
        return out

    # --- samplers ---
    def cbd(self, prg: Prg, cnt):
        out = np.empty(cnt, dtype=np.int64)
        lib.mixc_he_sample_cbd(_p64(prg.random_u64(cnt)), _pi64(out), cnt, self.params.eta)
        return out

    def ternary(self, prg: Prg, cnt):
        out = np.empty(cnt, dtype=np.int64)
        lib.mixc_he_sample_ternary(_p64(prg.random_u64(cnt)), _pi64(out), cnt)
        return out

    def uniform(self, prg: Prg, l=None, out=None):
        """Uniform residues (l x n), deterministic in the Prg's state."""
        l = self.L if l is None else l
        out = np.empty((l, self.n), dtype=_U64) if out is None else out
        start = prg.position
        size = l * self.n + 1024
        while True:
            prg.position = start
            rnd = prg.fill(self.scratch("rnd", (size,)))
            used = lib.mixc_he_sample_uniform(_p64(rnd), size, _p64(self.mods), l, self.n,
                                              _p64(out))
            if used <= size:  # (size_t)-1 when the buffer ran out
                prg.position = start + int(used)
                return out
            size *= 2  # pragma: no cover - rejection rate ~2^-28 per word

    def wide(self, prg: Prg, bits, cnt, l=None):
        l = self.L if l is None else l
        if not 1 <= bits <= 256:
            raise HEError(f"flooding noise of {bits} bits is out of range")
        words = (bits + 63) // 64
        out = np.empty((l, cnt), dtype=_U64)
        lib.mixc_he_sample_wide(_p64(prg.random_u64(cnt * words)), bits, _p64(self.mods), l, cnt,
                                _p64(out))
        return out

    def expand_seed(self, seed: bytes, out=None):
        return self.uniform(Prg(seed, stream=_A_STREAM), out=out)


def _find_psi(p: int, n: int) -> int:
    e = (p - 1) // (2 * n)
    for g in range(2, 1000):
        psi = pow(g, e, p)
        if pow(psi, n, p) == p - 1:
            return psi
    raise HEError(f"no primitive 2n-th root of unity mod {p}")  # pragma: no cover


_ctx_lock = threading.Lock()
_ctx_cache: dict = {}


def _ctx(params: HEParams) -> _Ctx:
    c = _ctx_cache.get(params)
    if c is None:
        with _ctx_lock:
            c = _ctx_cache.get(params)
            if c is None:
                c = _Ctx(params)
                _ctx_cache[params] = c
    return c


def _ntt_arg(a, prime_index, params, fn):
    c = _ctx(params)
    if not isinstance(prime_index, (int, np.integer)) or not 0 <= prime_index < c.L:
        raise ValueError(f"{fn}: prime_index must be in [0, {c.L})")
    a = _check_u64(a, fn, (c.n,)).copy()
    if np.any(a >= np.uint64(params.primes[prime_index])):
        raise ValueError(f"{fn}: residues must be reduced modulo p_{prime_index}")
    return c, a, int(prime_index)


def ntt_forward(a, prime_index: int = 0, params: HEParams = DEFAULT) -> np.ndarray:
    """Forward negacyclic NTT of one polynomial (residues < p_i, length n)
    modulo prime ``prime_index``: output k is a(psi^(2 brv(k) + 1)), i.e. in
    bit-reversed order (for tests and callers building their own routines)."""
    c, a, i = _ntt_arg(a, prime_index, params, "ntt_forward")
    lib.mixc_he_ntt_fwd(_p64(a), _p64(c.mods[8 * i:]), _p64(c.tabs[i * c.tw:]), 1, c.n, 1)
    return a


def ntt_inverse(a, prime_index: int = 0, params: HEParams = DEFAULT) -> np.ndarray:
    """Inverse of ``ntt_forward``."""
    c, a, i = _ntt_arg(a, prime_index, params, "ntt_inverse")
    lib.mixc_he_ntt_inv(_p64(a), _p64(c.mods[8 * i:]), _p64(c.tabs[i * c.tw:]), 1, c.n, 1)
    return a


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

def _check_u64(x, fn, shape=None, max_len=None):
    return _check_array(x, _U64, "uint64", fn, shape, max_len)


def _check_array(x, dtype, dtype_name, fn, shape, max_len):
    arr = np.asarray(x)
    if arr.dtype != dtype:
        raise ValueError(f"{fn}: values must have dtype {dtype_name}, got {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{fn}: expected shape {tuple(shape)}, got {arr.shape}")
    if max_len is not None and (arr.ndim != 1 or arr.size > max_len):
        raise ValueError(f"{fn}: expected a 1-D array of at most {max_len} values, got {arr.shape}")
    return np.ascontiguousarray(arr)


def _pad(v, n):
    out = np.zeros(n, dtype=v.dtype)
    out[: v.size] = v
    return out


def _check_plain(x, params, fn, shape=None, max_len=None):
    """Plaintext values for ``params``: uint64 (t = 2^64) or U128 (t = 2^128)."""
    if params.t_bits == 64:
        return _check_u64(x, fn, shape, max_len)
    return _check_array(x, U128, "u128 (t = 2^128)", fn, shape, max_len)


def _bits_for(x: float) -> float:
    return math.log2(x) if x > 0 else float("-inf")


def _check_budget(noise: float, ctx: _Ctx, level: int, op: str):
    lv = ctx.levels[level]
    if not noise <= lv.budget:
        raise HEError(
            f"{op}: noise bound 2^{_bits_for(noise):.1f} exceeds the noise budget "
            f"2^{_bits_for(lv.budget):.1f} of a {lv.log2q:.0f}-bit modulus; the result "
            f"would not decrypt correctly (fewer chained mul_plain, smaller plaintext norms "
            f"or larger parameters)"
        )
