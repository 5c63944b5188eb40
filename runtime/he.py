"""Additively homomorphic RLWE encryption (BFV-style) over the plaintext ring Z_2^64.

The heavy loops (NTT, RNS arithmetic, sampling, encoding, modulus switching,
bit packing) are the C kernels of ``csrc/he.c``; this module holds the
scheme, the noise accounting, the packings and the wire format.  Numpy
references for the kernels are in ``mixc.runtime.he_ref``.

Parameters (``DEFAULT``)
------------------------
* Ring R = Z[X]/(X^n + 1), **n = 8192**.
* Ciphertext modulus q = p0 p1 p2 p3 p4, five NTT-friendly primes
  (p = 1 mod 2n) of 42, 42, 45, 45 and 44 bits: **log2 q = 217.9999996**
  (q < 2^218).  Primes below 2^50 so the NTT and products run on AVX-512 IFMA
  (52-bit lanes); each limb is a separate 8192-point negacyclic NTT.
* Plaintext modulus **t = 2^64**: a plaintext is a polynomial with Z_2^64
  coefficients (coefficient encoding), i.e. n shares of the MPC ring.
* Secret: uniform ternary {-1, 0, 1}; errors: centred binomial with
  eta = 21 (sigma = sqrt(10.5) = 3.24 >= the standard's 3.19, |e| <= 21), as
  in SEAL.  All randomness comes from ``mixc.runtime.kernels.Prg`` (ChaCha20).
* **Security: >= 128 bits classical**, by the HomomorphicEncryption.org
  Security Standard (Albrecht et al., Nov 2018), table for ternary secrets
  and sigma ~ 3.2 at 128-bit classical security: n = 8192 -> log q <= 218
  (the same numbers as SEAL's ``seal_he_std_parms_128_tc``).  ``HEParams``
  checks every parameter set against that table and refuses insecure ones
  unless built with ``insecure_ok=True`` (tests of the NTT at tiny n).

Why these sizes.  Multiplying an encryption of x (coefficients in Z_2^64)
by a plaintext polynomial w with arbitrary Z_2^64 coefficients must give
x * w mod (2^64, X^n + 1) *exactly*, so nothing can be split into small
digits: the noise grows by ||w||_1 <= n 2^63 = 2^76.  Decryption needs
|noise| < q / (2t), and before a result goes back to the key owner it is
flooded with 2^40 * r times its noise (r = revealed coefficients, <= 2^13).
A fresh secret-key encryption (noise <= 21.5) times w then flooded needs
  2^4.4 (fresh) * 2^76 (||w||_1) * 2^3.7 (13 summed blocks) * 2^53 (flood)
  * 2^65 (t, 1/2) * 2 (margin) ~= 2^203 <= q ~ 2^218,
which rules out n = 4096 (log q <= 109) and needs four-plus primes at
n = 8192.  Splitting w into 16-bit limbs would fit n = 4096 only without
flooding and with 4x the products, so we use the large modulus instead.

Encoding.  m in Z_2^64[X] is encoded as round(q m / t) (not floor(q/t) m):
with that scaling a product by any w in Z[X] keeps the message exactly
(q/t (m w) = q/t [m w]_t + q K == q/t [m w]_t mod q) and the noise becomes
e * w with no q mod t cross term, and modulus switching maps the message
part q m / t to q' m / t exactly.  Decryption computes
round(t (c0 + c1 s) / q) mod t with a CRT-free fixed-point sum
(``mixc_he_decode``).

Noise budget check
------------------
Every ciphertext carries ``noise``: a worst-case bound on |c0 + c1 s - q m/t|
(infinity norm, integer units), updated by every operation: fresh secret-key
encryption eta + 1/2; public-key encryption eta (2n + 1) + 1/2;
add: sum; add_plain: + 1/2; mul_plain(w): times ||w||_1; flooding: + F;
dropping a prime p: / p + (n + 1)/2.  Each operation that would push the bound
above the budget q / 2^66 (half of the decryption bound q / (2t)) raises
``HEError`` before producing anything.  Decryption also *measures* the noise
(the rounding residual of every coefficient) and raises ``HEError`` if it
exceeds the ciphertext's bound: this catches a wrong key (residuals are then
uniform: every coefficient of a fresh ciphertext fails the check with
probability 1 - 2^-59, each revealed coefficient of a sanitised result, whose
flooded noise fills ~2^-8 of the range, with probability ~1 - 2^-7) or a
corrupted ciphertext, instead of returning garbage.  A key
id (public, from the public key's seed) in every ciphertext makes a key
mix-up fail even earlier with a clear message.

Packings (coefficient encoding, as in Cheetah)
----------------------------------------------
*Matrix product* ``W (M x K, plaintext) . X (K x N, encrypted)`` and the
matrix-vector case N = 1 (``plan_matvec``).  Block sizes (mw, kw, nw) with
mw kw nw <= n: an input ciphertext holds a kw x nw block of X with X[j, l] at
coefficient j + l kw; a plaintext polynomial holds an mw x kw block of W with
W[i, j] at (kw - 1 - j) + i kw nw (rows reversed); their product has

    coefficient (kw - 1) + l kw + i kw nw  =  sum_j W[i, j] X[j, l]

and no other term lands on those coefficients (a cross term W[i, j'] X[j, l]
lands at offset j - j' from a result, |j - j'| < kw, and the negacyclic
wrap-around only reaches coefficients < kw - 1).  One ciphertext product
yields mw nw inner products of length kw; K is split into ceil(K / kw)
blocks whose products are summed in the NTT domain.  Counts: inputs
ceil(K/kw) ceil(N/nw), plaintext NTTs ceil(M/mw) ceil(K/kw), products
ceil(M/mw) ceil(K/kw) ceil(N/nw), outputs ceil(M/mw) ceil(N/nw).
``plan_matmul`` picks (mw, kw, nw) to minimise estimated compute time plus
bytes / bandwidth (default 1 Gbit/s).  E.g. 128 x 784 at n = 8192: kw = 262,
mw = 26: 3 input and 5 output ciphertexts, 15 products; 512 x 512: kw = 128,
mw = 64: 4 inputs, 8 outputs, 32 products.

*Elementwise* product x (encrypted) * y (plaintext) over Z_2^64: Z_2^64[X] /
(X^n + 1) has no CRT slots, and a coefficient packing with a unique-sum
position for every x_i y_i needs |S| |T| <= n, so one ciphertext product
yields d = floor(sqrt(n)) = 90 elementwise products: x_i at coefficient i,
y_i at i d, result at i (d + 1).  Cost per 90 elements: one input
ciphertext, one plaintext NTT, one product, one output (~1/90 of a dense
ciphertext's efficiency; use OT-based multiplication when elementwise
volume dominates).

Sanitisation (``mask_and_extract``)
-----------------------------------
Before a result ciphertext goes back to the key owner the evaluator
(1) adds the mask (e.g. -s for additive shares, b - s in the patent's
protocol) at the result coefficients; (2) re-randomises with a fresh
public-key encryption of zero (c1 becomes c1 w + a u + e2, an RLWE sample
in the fresh u: pseudorandom and independent of w); (3) floods the noise of
the r revealed coefficients with a uniform integer in [-F, F),
F = 2^ceil(log2(r B) + 40) >= 2^40 r B where B bounds everything else in the
noise (e w, e u, e1, e2 s), so by the smudging lemma the statistical distance
from a simulated result is <= 2^-40; (4) switches the modulus down to the
first ``keep`` = 2 primes (84 bits; rounding adds <= (n + 1)/2 noise); and
(5) sends only c1 and the r needed coefficients of c0 (the others are never
sent, so they reveal nothing).  The key owner thus learns only the masked
values.  The noise bound B (hence the flooding size and the noise field in
the header) must depend on public data only: the plans bound ||w||_1 by
(number of plaintext coefficients) * 2^63 instead of the exact norm of the
evaluator's weights.

Wire format
-----------
Header (36 bytes): b"MXHE", version, kind, level, flags, params id (8),
key id (8), noise bound (float64), length (uint32); then residues bit-packed
limb by limb at bits(p_i) bits each (218 bits per coefficient at full level).
Kinds: 0 full ciphertext (2 polys), 1 seeded (secret-key encryption: c0 and
the 32-byte seed of c1 = a, half size), 2 extracted (c1 at ``keep`` limbs +
positions (uint16) + c0 at those positions), 3 public key (b + seed of a).
Sizes at n = 8192: seeded 223 300 B, full 446 500 B, public key 223 300 B,
extracted with r results 86 052 + 12.5 r B (2-byte position + 2 x 42 bits).
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from dataclasses import dataclass, field

import numpy as np

from mixc.errors import MixcError
from mixc.runtime.kernels import Prg

try:
    from mixc._ckernels import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "mixc's C kernels (mixc._ckernels) are not built; run `pip install -e .` "
        "or `python csrc/build_kernels.py` from the repository root"
    ) from exc

__all__ = [
    "HEError",
    "HEParams",
    "DEFAULT",
    "SecretKey",
    "PublicKey",
    "Plaintext",
    "Ciphertext",
    "ExtractedCiphertext",
    "keygen",
    "encrypt",
    "decrypt",
    "add",
    "sub",
    "neg",
    "add_plain",
    "encode_plain",
    "mul_plain",
    "mod_switch",
    "mask_and_extract",
    "from_bytes",
    "ciphertext_bytes",
    "MatmulPlan",
    "ElementwisePlan",
    "plan_matmul",
    "plan_matvec",
    "plan_elementwise",
    "encrypt_input",
    "evaluate",
    "evaluate_masked",
    "decrypt_output",
    "matmul",
    "matvec",
    "elementwise",
    "ntt_forward",
    "ntt_inverse",
]


class HEError(MixcError):
    """An HE failure: noise budget exceeded, wrong key, malformed or
    mismatched ciphertext, insecure parameters."""


MASK64 = (1 << 64) - 1
_U64 = np.dtype(np.uint64)
T_BITS = 64

# HomomorphicEncryption.org standard, ternary secret, 128-bit classical:
# maximal log2 q per ring dimension.
STD_128_TERNARY = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

DEFAULT_PRIMES = (4398046150657, 4398045708289, 35184371613697, 35184371417089, 17592186028033)

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
    plaintext modulus t = 2^64, CBD error parameter eta, the number of primes
    ``keep`` that results are switched down to, and the statistical security
    ``stat_sec`` of noise flooding."""

    n: int
    primes: tuple
    eta: int = 21
    keep: int = 2
    stat_sec: int = 40
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
        h.update(repr((self.n, self.primes, self.eta, self.keep, self.stat_sec)).encode())
        return h.digest()

    def describe(self) -> str:
        return (
            f"n = {self.n}, q = {' * '.join(str(p.bit_length()) + 'b' for p in self.primes)} "
            f"(log2 q = {self.logq:.7f}), t = 2^64, ternary secret, CBD eta = {self.eta}; "
            + ("128-bit classical (HE standard, ternary, "
               f"n = {self.n}: log q <= {STD_128_TERNARY[self.n]})" if self.secure else "INSECURE")
        )

    @staticmethod
    def toy(n: int, bits=(40, 41), keep: int = 1) -> "HEParams":
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
        return HEParams(n, tuple(primes), keep=keep, insecure_ok=True)


DEFAULT = HEParams(8192, DEFAULT_PRIMES)


def _p64(arr):
    return ffi.from_buffer("uint64_t[]", arr)


def _pi64(arr):
    return ffi.from_buffer("int64_t[]", arr)


class _Level:
    """Constants for the modulus q_l = p_0 ... p_{l-1}."""

    def __init__(self, primes, l):
        ps = primes[:l]
        self.l = l
        self.q = math.prod(ps)
        self.q_lo = self.q & MASK64
        self.log2q = math.log2(self.q)
        # budget for the worst-case noise bound: half of q / (2t)
        self.budget = float(self.q) / 2.0 ** (T_BITS + 2)
        crt = []
        for p in ps:
            qh = self.q // p
            inv = pow(qh % p, -1, p)
            R = (1 << 192) // p
            crt += [inv, (inv << 64) // p, R & MASK64, (R >> 64) & MASK64, R >> 128]
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
        self.levels = {l: _Level(primes, l) for l in range(1, L + 1)}
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

    def encode(self, m, l=None, out=None):
        l = self.L if l is None else l
        m = np.ascontiguousarray(m, dtype=_U64)
        out = np.empty((l, m.size), dtype=_U64) if out is None else out
        lib.mixc_he_encode_scaled(_p64(m), self.levels[l].q_lo, _p64(self.mods), l, m.size,
                                  _p64(out))
        return out

    def decode(self, v, l):
        cnt = v.size // l
        m = np.empty(cnt, dtype=_U64)
        frac = np.empty(cnt, dtype=np.int64)
        lib.mixc_he_decode(_p64(v), _p64(self.mods), _p64(self.levels[l].crt), l, cnt,
                           _p64(m), _pi64(frac))
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
        if not 1 <= bits <= 192:
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
# validation and packing helpers
# --------------------------------------------------------------------------

def _check_u64(x, fn, shape=None, max_len=None):
    arr = np.asarray(x)
    if arr.dtype != _U64:
        raise ValueError(f"{fn}: values must have dtype uint64, got {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{fn}: expected shape {tuple(shape)}, got {arr.shape}")
    if max_len is not None and (arr.ndim != 1 or arr.size > max_len):
        raise ValueError(f"{fn}: expected a 1-D array of at most {max_len} values, got {arr.shape}")
    return np.ascontiguousarray(arr)


def _pad(v, n):
    out = np.zeros(n, dtype=_U64)
    out[: v.size] = v
    return out


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


def _pack_limbs(a, bits) -> bytes:
    """a: (l, cnt) residues -> limb-by-limb bit-packed bytes."""
    a = np.ascontiguousarray(a, dtype=_U64)
    l, cnt = a.shape
    sizes = [(cnt * bits[i] + 7) // 8 for i in range(l)]
    buf = bytearray(sum(sizes))
    if cnt:
        mv = memoryview(buf)
        off = 0
        for i in range(l):
            lib.mixc_he_pack(_p64(a[i]), cnt, bits[i],
                             ffi.from_buffer("uint8_t[]", mv[off:off + sizes[i]]))
            off += sizes[i]
    return bytes(buf)


def _packed_size(bits, l, cnt) -> int:
    return sum((cnt * b + 7) // 8 for b in bits[:l])


def _unpack_limbs(buf, off, ctx: _Ctx, l, cnt, out=None):
    out = np.empty((l, cnt), dtype=_U64) if out is None else out
    buf = memoryview(buf)
    for i in range(l):
        nb = (cnt * ctx.bits[i] + 7) // 8
        chunk = buf[off:off + nb]
        if len(chunk) != nb:
            raise HEError("malformed HE message: truncated")
        if cnt:
            lib.mixc_he_unpack(ffi.from_buffer("uint8_t[]", chunk), cnt, ctx.bits[i],
                               _p64(out[i]))
            if np.any(out[i] >= np.uint64(ctx.params.primes[i])):
                raise HEError("malformed HE message: residue out of range")
        off += nb
    return out, off


# --------------------------------------------------------------------------
# keys and ciphertexts
# --------------------------------------------------------------------------

class SecretKey:
    """Ternary secret s (int8, length n) and its NTT form at every limb."""

    __slots__ = ("params", "s", "s_ntt", "key_id")

    def __init__(self, params, s, key_id):
        self.params = params
        self.s = s
        c = _ctx(params)
        self.s_ntt = c.ntt(c.from_i64(s.astype(np.int64)))
        self.key_id = key_id

    def to_bytes(self) -> bytes:
        """Secret key (keep it private): params id, key id, s at 2 bits/coefficient."""
        v = (self.s.astype(np.int64) + 1).astype(np.uint8).reshape(-1, 4)
        packed = v[:, 0] | v[:, 1] << 2 | v[:, 2] << 4 | v[:, 3] << 6
        return b"MXSK" + self.params.params_id + self.key_id + packed.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, params: HEParams = DEFAULT) -> "SecretKey":
        data = bytes(data)
        n = params.n
        if len(data) != 20 + n // 4 or data[:4] != b"MXSK" or data[4:12] != params.params_id:
            raise HEError("malformed secret key or different HE parameters")
        b = np.frombuffer(data[20:], dtype=np.uint8)
        v = np.stack([(b >> (2 * k)) & 3 for k in range(4)], axis=1).reshape(-1).astype(np.int64)
        if np.any(v > 2):
            raise HEError("malformed secret key")
        return cls(params, (v - 1).astype(np.int8), data[12:20])


class PublicKey:
    """pk = (b, a) with b = -a s + e; a is expanded from a public 32-byte seed.
    Both stored in the NTT domain."""

    __slots__ = ("params", "ba", "b", "a", "seed", "key_id")

    def __init__(self, params, b, seed, key_id, a=None):
        c = _ctx(params)
        self.params = params
        self.ba = np.empty((2, c.L, c.n), dtype=_U64)
        self.ba[0] = b
        if a is None:
            c.expand_seed(seed, out=self.ba[1])
        else:
            self.ba[1] = a
        self.b, self.a = self.ba[0], self.ba[1]
        self.seed = seed
        self.key_id = key_id

    def to_bytes(self) -> bytes:
        c = _ctx(self.params)
        hdr = _HDR.pack(_MAGIC, _VERSION, KIND_PUBKEY, c.L, 1, self.params.params_id,
                        self.key_id, 0.0, 0)
        return hdr + _pack_limbs(self.b, c.bits) + self.seed

    @classmethod
    def from_bytes(cls, data: bytes, params: HEParams = DEFAULT) -> "PublicKey":
        return _from_bytes_as(data, params, PublicKey, "a public key")

    @property
    def nbytes(self) -> int:
        c = _ctx(self.params)
        return _HDR.size + _packed_size(c.bits, c.L, c.n) + 32


def _key_id(params: HEParams, seed: bytes) -> bytes:
    return hashlib.blake2b(params.params_id + seed, digest_size=8, person=b"mixc-he-keyid").digest()


def keygen(prg: Prg, params: HEParams = DEFAULT):
    """(SecretKey, PublicKey): s uniform ternary, pk = (-a s + e, a), a from a
    fresh public seed; all randomness from ``prg``."""
    if not isinstance(prg, Prg):
        raise ValueError("keygen: prg must be a mixc.runtime.kernels.Prg")
    c = _ctx(params)
    s = c.ternary(prg, c.n).astype(np.int8)
    seed = prg.random_u64(4).tobytes()
    kid = _key_id(params, seed)
    sk = SecretKey(params, s, kid)
    a = c.expand_seed(seed)
    e = c.ntt(c.from_i64(c.cbd(prg, c.n)))
    b = c.sub(e, c.mul(a, sk.s_ntt))
    return sk, PublicKey(params, b, seed, kid, a=a)


class Plaintext:
    """A plaintext polynomial with Z_2^64 coefficients, lifted to the
    centred integers (-2^63, 2^63], in the NTT domain, with its l1 norm."""

    __slots__ = ("params", "ntt", "l1", "length")

    def __init__(self, params, ntt, l1, length):
        self.params, self.ntt, self.l1, self.length = params, ntt, l1, length


def encode_plain(poly, params: HEParams = DEFAULT) -> Plaintext:
    """Encode a uint64 coefficient vector (length <= n) for ``mul_plain``
    (reuse it to multiply several ciphertexts by the same polynomial)."""
    c = _ctx(params)
    v = _check_u64(poly, "encode_plain", max_len=c.n)
    return _plain_from_i64(c, _pad(v, c.n).view(np.int64), v.size)


def _plain_from_i64(c: _Ctx, x, length):
    l1 = float(np.abs(x.astype(np.float64)).sum()) * (1 + 2.0 ** -40)
    return Plaintext(c.params, c.ntt(c.from_i64(x)), l1, length)


class Ciphertext:
    """An RLWE ciphertext (c0, c1): ``data`` is uint64 (2, level, n) residues,
    in the NTT domain if ``ntt``.  ``noise`` is a worst-case bound on the
    decryption noise, ``length`` the number of meaningful leading
    coefficients, ``seed`` the public seed of c1 for fresh secret-key
    encryptions (serialised in half the size)."""

    __slots__ = ("params", "data", "ntt", "noise", "key_id", "length", "seed")

    def __init__(self, params, data, ntt, noise, key_id, length, seed=None):
        self.params, self.data, self.ntt = params, data, ntt
        self.noise, self.key_id, self.length, self.seed = float(noise), key_id, int(length), seed

    @property
    def level(self) -> int:
        return self.data.shape[1]

    def copy(self) -> "Ciphertext":
        return Ciphertext(self.params, self.data.copy(), self.ntt, self.noise, self.key_id,
                          self.length, self.seed)

    def to_ntt(self) -> "Ciphertext":
        return self._in_domain(True)

    def to_coeff(self) -> "Ciphertext":
        return self._in_domain(False)

    def _in_domain(self, ntt: bool) -> "Ciphertext":
        if self.ntt == ntt:
            return self
        c = _ctx(self.params)
        transform = c.ntt if ntt else c.intt
        return Ciphertext(self.params, transform(self.data.copy(), self.level), ntt, self.noise,
                          self.key_id, self.length)

    @property
    def seeded(self) -> bool:
        return self.seed is not None and self.ntt and self.level == self.params.L

    def to_bytes(self) -> bytes:
        c = _ctx(self.params)
        l = self.level
        kind = KIND_SEEDED if self.seeded else KIND_FULL
        hdr = _HDR.pack(_MAGIC, _VERSION, kind, l, 1 if self.ntt else 0, self.params.params_id,
                        self.key_id, self.noise, self.length)
        if kind == KIND_SEEDED:
            return hdr + _pack_limbs(self.data[0], c.bits) + self.seed
        return hdr + _pack_limbs(self.data[0], c.bits) + _pack_limbs(self.data[1], c.bits)

    @classmethod
    def from_bytes(cls, data: bytes, params: HEParams = DEFAULT) -> "Ciphertext":
        return _from_bytes_as(data, params, Ciphertext, "a ciphertext")

    @property
    def nbytes(self) -> int:
        """Serialised size in bytes."""
        return ciphertext_bytes(self.params, "seeded" if self.seeded else "full", level=self.level)


class ExtractedCiphertext:
    """A sanitised result: c1 (level x n, coefficient domain) and c0 only at
    ``positions`` (level x r).  Decrypts to the values at those positions."""

    __slots__ = ("params", "c1", "c0", "positions", "noise", "key_id")

    def __init__(self, params, c1, c0, positions, noise, key_id):
        self.params, self.c1, self.c0 = params, c1, c0
        self.positions = positions
        self.noise, self.key_id = float(noise), key_id

    @property
    def level(self) -> int:
        return self.c1.shape[0]

    def to_bytes(self) -> bytes:
        c = _ctx(self.params)
        l, r = self.level, self.positions.size
        hdr = _HDR.pack(_MAGIC, _VERSION, KIND_EXTRACTED, l, 0, self.params.params_id,
                        self.key_id, self.noise, r)
        pos_dt = "<u2" if c.n <= 65536 else "<u4"
        return (hdr + self.positions.astype(pos_dt).tobytes() + _pack_limbs(self.c1, c.bits)
                + _pack_limbs(self.c0, c.bits))

    @classmethod
    def from_bytes(cls, data: bytes, params: HEParams = DEFAULT) -> "ExtractedCiphertext":
        return _from_bytes_as(data, params, ExtractedCiphertext, "an extracted ciphertext")

    @property
    def nbytes(self) -> int:
        return ciphertext_bytes(self.params, "extracted", level=self.level,
                                positions=self.positions.size)


def ciphertext_bytes(params: HEParams = DEFAULT, kind: str = "seeded", *, level=None,
                     positions: int = 0) -> int:
    """Serialised size of a ciphertext: kind 'seeded' (fresh secret-key
    encryption), 'full', or 'extracted' (with ``positions`` coefficients of
    c0; level defaults to params.keep)."""
    c = _ctx(params)
    if kind == "extracted":
        l = params.keep if level is None else level
        pos = positions * (2 if c.n <= 65536 else 4)
        return (_HDR.size + pos + _packed_size(c.bits, l, c.n)
                + _packed_size(c.bits, l, positions))
    l = params.L if level is None else level
    body = _packed_size(c.bits, l, c.n)
    if kind == "seeded":
        return _HDR.size + body + 32
    if kind == "full":
        return _HDR.size + 2 * body
    raise ValueError(f"ciphertext_bytes: unknown kind {kind!r}")


def _from_bytes_as(data, params, kind, what):
    obj = from_bytes(data, params)
    if not isinstance(obj, kind):
        raise HEError(f"expected {what}")
    return obj


def from_bytes(data, params: HEParams = DEFAULT):
    """Parse a serialised Ciphertext, ExtractedCiphertext or PublicKey."""
    buf = bytes(data)
    if len(buf) < _HDR.size:
        raise HEError("malformed HE message: too short")
    magic, ver, kind, l, flags, pid, kid, noise, length = _HDR.unpack_from(buf)
    if magic != _MAGIC or ver != _VERSION:
        raise HEError("malformed HE message: bad magic or version")
    if pid != params.params_id:
        raise HEError("HE message was made with different HE parameters")
    c = _ctx(params)
    if not 1 <= l <= c.L or not math.isfinite(noise) or noise < 0:
        raise HEError("malformed HE message: bad header")
    off = _HDR.size
    if kind == KIND_PUBKEY:
        b, off = _unpack_limbs(buf, off, c, c.L, c.n)
        seed = buf[off:off + 32]
        if len(seed) != 32 or off + 32 != len(buf) or l != c.L or kid != _key_id(params, seed):
            raise HEError("malformed public key")
        return PublicKey(params, b, seed, kid)
    if kind in (KIND_FULL, KIND_SEEDED):
        if length > c.n:
            raise HEError("malformed ciphertext: length > n")
        data = np.empty((2, l, c.n), dtype=_U64)
        _, off = _unpack_limbs(buf, off, c, l, c.n, out=data[0])
        if kind == KIND_SEEDED:
            seed = buf[off:off + 32]
            if len(seed) != 32 or off + 32 != len(buf) or l != c.L or not flags & 1:
                raise HEError("malformed seeded ciphertext")
            c.expand_seed(seed, out=data[1])
            return Ciphertext(params, data, True, noise, kid, length, seed=seed)
        _, off = _unpack_limbs(buf, off, c, l, c.n, out=data[1])
        if off != len(buf):
            raise HEError("malformed ciphertext: trailing bytes")
        return Ciphertext(params, data, bool(flags & 1), noise, kid, length)
    if kind == KIND_EXTRACTED:
        r = length
        pos_dt, pw = ("<u2", 2) if c.n <= 65536 else ("<u4", 4)
        pb = buf[off:off + pw * r]
        if len(pb) != pw * r or r > c.n:
            raise HEError("malformed extracted ciphertext")
        positions = np.frombuffer(pb, dtype=pos_dt).astype(np.int64)
        off += pw * r
        if np.any(positions >= c.n) or np.unique(positions).size != r:
            raise HEError("malformed extracted ciphertext: bad positions")
        c1, off = _unpack_limbs(buf, off, c, l, c.n)
        c0, off = _unpack_limbs(buf, off, c, l, r)
        if off != len(buf):
            raise HEError("malformed extracted ciphertext: trailing bytes")
        return ExtractedCiphertext(params, c1, c0, positions, noise, kid)
    raise HEError(f"malformed HE message: unknown kind {kind}")


# --------------------------------------------------------------------------
# encryption / decryption
# --------------------------------------------------------------------------

def _encrypt_poly(key, m, prg: Prg, length: int) -> Ciphertext:
    params = key.params
    c = _ctx(params)
    n = c.n
    L = c.L
    data = np.empty((2, L, n), dtype=_U64)
    t1 = c.scratch("enc1", (L, n))
    t2 = c.scratch("enc2", (L, n))
    if isinstance(key, SecretKey):
        seed = prg.random_u64(4).tobytes()
        a = c.expand_seed(seed, out=data[1])
        c.from_i64(c.cbd(prg, n), out=t1)
        c.add(t1, c.encode(m, out=t2), out=data[0])
        c.ntt(data[0])
        c.sub(data[0], c.mul(a, key.s_ntt, out=t1), out=data[0])
        noise = params.eta + 0.5
        return Ciphertext(params, data, True, noise, key.key_id, length, seed=seed)
    if isinstance(key, PublicKey):
        u = c.ternary(prg, n)
        u_ntt = c.ntt(c.from_i64(u, out=c.scratch("enc3", (L, n))))
        c.from_i64(c.cbd(prg, n), out=t1)
        c.add(t1, c.encode(m, out=t2), out=data[0])
        c.from_i64(c.cbd(prg, n), out=data[1])
        c.ntt(data)
        c.add(data[0], c.mul(key.b, u_ntt, out=t1), out=data[0])
        c.add(data[1], c.mul(key.a, u_ntt, out=t1), out=data[1])
        # ||u||_1, ||s||_1 <= n (public worst case: the header must not
        # reveal anything about the fresh u)
        noise = params.eta * (2 * n + 1) + 0.5
        return Ciphertext(params, data, True, noise, key.key_id, length)
    raise ValueError(f"encrypt: key must be a SecretKey or PublicKey, got {type(key).__name__}")


def encrypt(key, values, prg: Prg):
    """Encrypt a uint64 vector (Z_2^64 coefficients) under a secret key
    (seeded, compact) or a public key.  Up to n values give one Ciphertext;
    longer vectors are split into a list of ceil(len / n) ciphertexts."""
    if not isinstance(prg, Prg):
        raise ValueError("encrypt: prg must be a mixc.runtime.kernels.Prg")
    if not isinstance(key, (SecretKey, PublicKey)):
        raise ValueError(f"encrypt: key must be a SecretKey or PublicKey, got {type(key).__name__}")
    n = key.params.n
    v = _check_u64(values, "encrypt").reshape(-1)
    if v.size <= n:
        return _encrypt_poly(key, _pad(v, n), prg, v.size)
    return [_encrypt_poly(key, _pad(v[i:i + n], n), prg, min(n, v.size - i))
            for i in range(0, v.size, n)]


def _noise_threshold(noise: float, level: _Level) -> float:
    # residual * 2^64 = 2^64 t e / q (t = 2^64); the decoder's fixed-point
    # error is < L 2^-78 of a unit, i.e. < 1 here: allow a few units
    return min(noise * 2.0 ** 128 / float(level.q) * (1 + 2.0 ** -20) + 8.0, 2.0 ** 62)


def _check_residual(frac, noise, lv, what):
    if frac.size == 0:
        return
    worst = float(np.abs(frac.astype(np.float64)).max())
    thr = _noise_threshold(noise, lv)
    if worst > thr:
        measured = worst / 2.0 ** 128 * float(lv.q)
        raise HEError(
            f"decrypt: measured noise 2^{_bits_for(measured):.1f} exceeds the {what}'s bound "
            f"2^{_bits_for(noise):.1f}: wrong secret key or corrupted ciphertext"
        )


def _check_key(sk: SecretKey, obj):
    if not isinstance(sk, SecretKey):
        raise ValueError(f"decrypt: need a SecretKey, got {type(sk).__name__}")
    if obj.params != sk.params:
        raise HEError("decrypt: ciphertext and key use different HE parameters")
    if obj.key_id != sk.key_id:
        raise HEError(
            f"decrypt: ciphertext was encrypted under key {obj.key_id.hex()}, "
            f"not this key ({sk.key_id.hex()})"
        )


def decrypt(sk: SecretKey, ct, *, check_key_id: bool = True) -> np.ndarray:
    """Decrypt a Ciphertext (its ``length`` leading coefficients), an
    ExtractedCiphertext (its positions, in order) or a list of either
    (concatenated).  Raises HEError on a key mismatch or if the measured noise
    exceeds the ciphertext's bound."""
    if isinstance(ct, (list, tuple)):
        parts = [decrypt(sk, x, check_key_id=check_key_id) for x in ct]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=_U64)
    if isinstance(ct, ExtractedCiphertext):
        return _decrypt_extracted(sk, ct, check_key_id)
    if not isinstance(ct, Ciphertext):
        raise ValueError(f"decrypt: expected a Ciphertext, got {type(ct).__name__}")
    if check_key_id:
        _check_key(sk, ct)
    elif ct.params != sk.params:
        raise HEError("decrypt: ciphertext and key use different HE parameters")
    c = _ctx(sk.params)
    l = ct.level
    lv = c.levels[l]
    _check_budget(ct.noise, c, l, "decrypt")
    s = sk.s_ntt[:l]
    v = c.scratch("dec1", (l, c.n))
    if ct.ntt:
        c.add(ct.data[0], c.mul(ct.data[1], s, out=v, l=l), out=v, l=l)
        c.intt(v, l)
    else:
        v[...] = ct.data[1]
        c.ntt(v, l)
        c.add(ct.data[0], c.intt(c.mul(v, s, out=v, l=l), l), out=v, l=l)
    m, frac = c.decode(v, l)
    _check_residual(frac, ct.noise, lv, "ciphertext")
    return m[: ct.length].copy()


def _decrypt_extracted(sk, ct: ExtractedCiphertext, check_key_id):
    if check_key_id:
        _check_key(sk, ct)
    c = _ctx(sk.params)
    l = ct.level
    lv = c.levels[l]
    _check_budget(ct.noise, c, l, "decrypt")
    t = c.scratch("dec1", (l, c.n))
    t[...] = ct.c1
    c.ntt(t, l)
    cs = c.intt(c.mul(t, sk.s_ntt[:l], out=t, l=l), l)
    v = c.add(np.ascontiguousarray(ct.c0), np.ascontiguousarray(cs[:, ct.positions]), l=l)
    m, frac = c.decode(v, l)
    _check_residual(frac, ct.noise, lv, "ciphertext")
    return m


# --------------------------------------------------------------------------
# homomorphic operations
# --------------------------------------------------------------------------

def _same(a: Ciphertext, b: Ciphertext, op):
    if not isinstance(a, Ciphertext) or not isinstance(b, Ciphertext):
        raise ValueError(f"{op}: expected Ciphertexts")
    if a.params != b.params or a.key_id != b.key_id:
        raise HEError(f"{op}: ciphertexts under different keys or parameters")
    if a.level != b.level:
        raise HEError(f"{op}: ciphertexts at different levels ({a.level} vs {b.level})")


def _add_or_sub(a: Ciphertext, b: Ciphertext, op: str, residue_op) -> Ciphertext:
    _same(a, b, op)
    c = _ctx(a.params)
    b = b.to_ntt() if a.ntt else b.to_coeff()
    noise = a.noise + b.noise
    _check_budget(noise, c, a.level, op)
    return Ciphertext(a.params, residue_op(c, a.data, b.data, l=a.level), a.ntt, noise,
                      a.key_id, max(a.length, b.length))


def add(a: Ciphertext, b: Ciphertext) -> Ciphertext:
    """Enc(x) + Enc(y) = Enc(x + y mod 2^64)."""
    return _add_or_sub(a, b, "add", _Ctx.add)


def sub(a: Ciphertext, b: Ciphertext) -> Ciphertext:
    """Enc(x) - Enc(y) = Enc(x - y mod 2^64)."""
    return _add_or_sub(a, b, "sub", _Ctx.sub)


def neg(a: Ciphertext) -> Ciphertext:
    """-Enc(x) = Enc(-x mod 2^64)."""
    c = _ctx(a.params)
    return Ciphertext(a.params, c.neg(a.data, l=a.level), a.ntt, a.noise, a.key_id, a.length)


def add_plain(ct: Ciphertext, values) -> Ciphertext:
    """Enc(x) + y for a uint64 vector y (length <= n), coefficientwise mod 2^64."""
    c = _ctx(ct.params)
    v = _check_u64(values, "add_plain", max_len=c.n)
    l = ct.level
    enc = c.encode(_pad(v, c.n), l)
    if ct.ntt:
        c.ntt(enc, l)
    noise = ct.noise + 0.5
    _check_budget(noise, c, l, "add_plain")
    data = ct.data.copy()
    c.add(data[0], enc, out=data[0], l=l)
    return Ciphertext(ct.params, data, ct.ntt, noise, ct.key_id, max(ct.length, v.size))


def mul_plain(ct: Ciphertext, poly, *, norm_bound: float | None = None) -> Ciphertext:
    """Enc(x) * w in Z_2^64[X]/(X^n + 1) (negacyclic convolution mod 2^64) for
    a plaintext polynomial w: a uint64 coefficient vector (length <= n) or a
    Plaintext from ``encode_plain``.  The noise bound grows by ||w||_1
    (centred), or by ``norm_bound`` (>= ||w||_1) if given: the bound ends up
    in the result's header and sets the flooding size of
    ``mask_and_extract``, so an evaluator hiding w should pass a public bound
    such as (number of coefficients) * 2^63 (the plans do)."""
    c = _ctx(ct.params)
    pt = poly if isinstance(poly, Plaintext) else encode_plain(poly, ct.params)
    if pt.params != ct.params:
        raise HEError("mul_plain: plaintext encoded for different HE parameters")
    l = ct.level
    if norm_bound is not None and not norm_bound >= pt.l1:
        raise ValueError("mul_plain: norm_bound is below ||w||_1")
    noise = ct.noise * (pt.l1 if norm_bound is None else float(norm_bound))
    _check_budget(noise, c, l, "mul_plain")
    src = ct.to_ntt()
    out = np.empty_like(src.data)
    c.mulacc(src.data, np.ascontiguousarray(pt.ntt[:l]), out, l, 2, False)
    length = c.n if ct.length + pt.length - 1 > c.n else max(ct.length + pt.length - 1, 0)
    return Ciphertext(ct.params, out, True, noise, ct.key_id, length)


def mod_switch(ct: Ciphertext, level: int) -> Ciphertext:
    """Switch to the modulus p_0 ... p_{level-1} (drops the last primes;
    smaller ciphertext, same relative noise plus (n + 1)/2 per prime)."""
    c = _ctx(ct.params)
    if not 1 <= level <= ct.level:
        raise HEError(f"mod_switch: level must be in [1, {ct.level}]")
    x = ct.to_coeff()
    data = x.data
    noise = ct.noise
    for l in range(ct.level, level, -1):
        data = np.stack([c.drop_last(np.ascontiguousarray(data[k]), l) for k in range(2)])
        noise = noise / ct.params.primes[l - 1] + (c.n + 1) / 2
    _check_budget(noise, c, level, "mod_switch")
    return Ciphertext(ct.params, data, False, noise, ct.key_id, ct.length)


def mask_and_extract(ct: Ciphertext, positions, mask, pk: PublicKey, prg: Prg, *,
                     level: int | None = None) -> ExtractedCiphertext:
    """Sanitised result for the key owner: adds ``mask`` (uint64, one per
    position, or None) at ``positions``, re-randomises with a fresh public-key
    encryption of zero, floods the revealed coefficients' noise (2^-stat_sec
    statistical distance), switches down to ``level`` (default params.keep)
    primes and keeps c1 plus c0 at ``positions`` only.  Decrypts to
    values[positions] + mask."""
    params = ct.params
    c = _ctx(params)
    n = c.n
    if not isinstance(pk, PublicKey) or pk.key_id != ct.key_id or pk.params != params:
        raise HEError("mask_and_extract: public key does not match the ciphertext")
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if np.any(pos < 0) or np.any(pos >= n) or np.unique(pos).size != pos.size:
        raise ValueError("mask_and_extract: positions must be distinct and in [0, n)")
    r = pos.size
    level = params.keep if level is None else level
    if not 1 <= level <= ct.level:
        raise HEError(f"mask_and_extract: level must be in [1, {ct.level}]")
    l = ct.level
    src = ct.to_ntt()
    # re-randomise: + (b u + e1, a u + e2)
    u = c.ternary(prg, n)
    t1 = c.scratch("mx1", (l, n))
    u_ntt = c.ntt(c.from_i64(u, l, out=c.scratch("mx2", (l, n))), l)
    data = c.scratch("mx3", (2, l, n))
    c.mulacc(pk.ba if l == c.L else np.ascontiguousarray(pk.ba[:, :l]), u_ntt, data, l, 2, False)
    c.add(data, src.data, out=data, l=l)
    c.intt(data, l)
    c.add(data[1], c.from_i64(c.cbd(prg, n), l, out=t1), out=data[1], l=l)
    noise = ct.noise + params.eta * (2 * n + 1)  # e u + e1 + e2 s, ||u||_1, ||s||_1 <= n
    # only the revealed coefficients of c0 are kept: its fresh error e1 and
    # the mask are only needed there
    c0 = np.ascontiguousarray(data[0][:, pos])
    if r:
        c.add(c0, c.from_i64(c.cbd(prg, r), l), out=c0, l=l)
    if mask is not None:
        mv = _check_u64(mask, "mask_and_extract").reshape(-1)
        if mv.size != r:
            raise ValueError(f"mask_and_extract: mask has {mv.size} values for {r} positions")
        if r:
            c.add(c0, c.encode(mv, l), out=c0, l=l)
        noise += 0.5
    # flood the revealed coefficients
    if r:
        fbits = max(1, math.ceil(math.log2(noise * r) + params.stat_sec))
        noise += 2.0 ** fbits
        _check_budget(noise, c, l, "mask_and_extract (noise flooding)")
        c.add(c0, c.wide(prg, fbits + 1, r, l), out=c0, l=l)
    c1 = np.ascontiguousarray(data[1])
    for k in range(l, level, -1):
        c1 = c.drop_last(c1, k)
        c0 = c.drop_last(c0, k) if r else np.empty((k - 1, 0), dtype=_U64)
        noise = noise / params.primes[k - 1] + (n + 1) / 2
    _check_budget(noise, c, level, "mask_and_extract (modulus switch)")
    return ExtractedCiphertext(params, c1, c0, pos, noise, ct.key_id)


# --------------------------------------------------------------------------
# packings: matrix products and elementwise products
# --------------------------------------------------------------------------

# rough single-core costs (seconds) of the pieces, for plan selection,
# measured on the AVX-512 IFMA build at n = 8192 (2-core EPYC)
_COST_NTT = 1.3e-4     # encode + 5-limb NTT of one plaintext block (evaluator)
_COST_MUL = 4.5e-5     # one two-component multiply-accumulate (evaluator)
_COST_OUT = 8.5e-4     # mask_and_extract + (de)serialise + decrypt of one output
_COST_IN = 8.5e-4      # encrypt + (de)serialise one input (key owner + evaluator)
DEFAULT_BANDWIDTH = 125e6  # bytes / s (1 Gbit/s)


def _cdiv(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class MatmulPlan:
    """Packing of W (M x K, plaintext) . X (K x N, encrypted) into blocks of
    mw x kw x nw (mw kw nw <= n).  Input ciphertext (bk, bn) is number
    bk * Nb + bn; output (bi, bn) is bi * Nb + bn."""

    M: int
    K: int
    N: int
    mw: int
    kw: int
    nw: int
    params: HEParams = DEFAULT
    vector: bool = False  # X / result given as vectors (N = 1)

    @property
    def Mb(self):
        return _cdiv(self.M, self.mw)

    @property
    def Kb(self):
        return _cdiv(self.K, self.kw)

    @property
    def Nb(self):
        return _cdiv(self.N, self.nw)

    @property
    def n_inputs(self):
        return self.Kb * self.Nb

    @property
    def n_outputs(self):
        return self.Mb * self.Nb

    @property
    def n_products(self):
        return self.Mb * self.Kb * self.Nb

    def _x(self, X):
        X = _check_u64(X, "matmul")
        if self.vector and X.ndim == 1:
            X = X.reshape(-1, 1)
        if X.shape != (self.K, self.N):
            raise ValueError(f"matmul: X must have shape {(self.K, self.N)}, got {X.shape}")
        return X

    def input_polys(self, X):
        """Coefficient vectors of the input ciphertexts (X[j, l] at j + l kw)."""
        X = self._x(X)
        n, kw, nw = self.params.n, self.kw, self.nw
        out = []
        for bk in range(self.Kb):
            for bn in range(self.Nb):
                blk = X[bk * kw:(bk + 1) * kw, bn * nw:(bn + 1) * nw]
                kj, nl = blk.shape
                poly = np.zeros(n, dtype=_U64)
                idx = np.arange(kj)[:, None] + (np.arange(nl) * kw)[None, :]
                poly[idx] = blk
                out.append(poly)
        return out

    def weight_poly(self, W, bi, bk):
        """W block (bi, bk) as centred integers, W[i, j] at (kw-1-j) + i kw nw."""
        n, mw, kw, nw = self.params.n, self.mw, self.kw, self.nw
        blk = W[bi * mw:(bi + 1) * mw, bk * kw:(bk + 1) * kw]
        mi, kj = blk.shape
        poly = np.zeros(n, dtype=np.int64)
        idx = (kw - 1 - np.arange(kj))[None, :] + (np.arange(mi) * kw * nw)[:, None]
        poly[idx] = blk.view(np.int64)
        return poly

    def positions(self, out_index):
        """Result coefficients of output ``out_index``, row-major over its
        (rows, cols) block."""
        bi, bn = divmod(out_index, self.Nb)
        mi = min(self.mw, self.M - bi * self.mw)
        nl = min(self.nw, self.N - bn * self.nw)
        kw, nw = self.kw, self.nw
        return ((kw - 1) + (np.arange(nl) * kw)[None, :]
                + (np.arange(mi) * kw * nw)[:, None]).reshape(-1)

    def evaluate(self, W, cts):
        """Raw result ciphertexts, output by output."""
        return list(self.iter_outputs(W, cts))

    def iter_outputs(self, W, cts):
        W = _check_u64(W, "matmul")
        if W.shape != (self.M, self.K):
            raise ValueError(f"matmul: W must have shape {(self.M, self.K)}, got {W.shape}")
        cts = _check_inputs(cts, self.n_inputs, self.params, "matmul")
        c = _ctx(self.params)
        L, n, Nb = c.L, c.n, self.Nb
        for bi in range(self.Mb):
            acc = np.empty((Nb, 2, L, n), dtype=_U64)  # the outputs are views of it
            noise = [0.0] * Nb
            for bk in range(self.Kb):
                poly = self.weight_poly(W, bi, bk)
                pt = c.ntt(c.from_i64(poly, out=c.scratch("mm1", (L, n))))
                # public bound on ||w||_1 (entries * 2^63): the exact norm
                # would leak through the noise header and the flooding size
                l1 = float(min(self.mw, self.M - bi * self.mw)
                           * min(self.kw, self.K - bk * self.kw)) * 2.0 ** 63
                for bn in range(Nb):
                    ct = cts[bk * Nb + bn]
                    c.mulacc(ct.data, pt, acc[bn], L, 2, bk > 0)
                    noise[bn] += ct.noise * l1
            for bn in range(Nb):
                _check_budget(noise[bn], c, L, "matmul")
                yield Ciphertext(self.params, acc[bn], True, noise[bn], cts[0].key_id, n)

    def assemble(self, values):
        out = np.zeros((self.M, self.N), dtype=_U64)
        for o, v in enumerate(values):
            bi, bn = divmod(o, self.Nb)
            mi = min(self.mw, self.M - bi * self.mw)
            nl = min(self.nw, self.N - bn * self.nw)
            out[bi * self.mw:bi * self.mw + mi, bn * self.nw:bn * self.nw + nl] = \
                np.asarray(v).reshape(mi, nl)
        return out[:, 0].copy() if self.vector else out

    def split_mask(self, mask):
        mask = _check_u64(mask, "matmul mask")
        if self.vector and mask.ndim == 1:
            mask = mask.reshape(-1, 1)
        if mask.shape != (self.M, self.N):
            raise ValueError(f"matmul: mask must have shape {(self.M, self.N)}, got {mask.shape}")
        res = []
        for o in range(self.n_outputs):
            bi, bn = divmod(o, self.Nb)
            res.append(np.ascontiguousarray(
                mask[bi * self.mw:(bi + 1) * self.mw, bn * self.nw:(bn + 1) * self.nw]).reshape(-1))
        return res

    def cost(self, bandwidth=DEFAULT_BANDWIDTH):
        """(estimated seconds of compute, bytes on the wire)."""
        p = self.params
        r = self.mw * self.nw
        nbytes = (self.n_inputs * ciphertext_bytes(p, "seeded")
                  + self.n_outputs * ciphertext_bytes(p, "extracted", positions=r))
        secs = (self.Mb * self.Kb * _COST_NTT + self.n_products * _COST_MUL
                + self.n_outputs * _COST_OUT + self.n_inputs * _COST_IN)
        return secs, nbytes


def _check_inputs(cts, count, params, op):
    if isinstance(cts, Ciphertext):
        cts = [cts]
    cts = list(cts)
    if len(cts) != count:
        raise ValueError(f"{op}: expected {count} input ciphertexts, got {len(cts)}")
    for ct in cts:
        if not isinstance(ct, Ciphertext) or ct.params != params:
            raise HEError(f"{op}: inputs must be Ciphertexts with the plan's parameters")
        if ct.key_id != cts[0].key_id:
            raise HEError(f"{op}: inputs under different keys")
        if ct.level != params.L:
            raise HEError(f"{op}: inputs must be at the full level")
    return [ct.to_ntt() for ct in cts]


def _divisor_sizes(total, cap):
    """Distinct block sizes ceil(total / b) (<= cap) for b = 1..total."""
    sizes = set()
    b = 1
    while b <= total:
        s = _cdiv(total, b)
        if s <= cap:
            sizes.add(s)
        # jump to the next b with a different ceil
        b = max(b + 1, _cdiv(total, s - 1) if s > 1 else total + 1)
    return sorted(sizes)


def plan_matmul(M, K, N, params: HEParams = DEFAULT, *, bandwidth=DEFAULT_BANDWIDTH,
                vector=False) -> MatmulPlan:
    """Choose (mw, kw, nw) for W (M x K) . X (K x N) minimising estimated
    compute time + bytes / bandwidth."""
    for name, v in (("M", M), ("K", K), ("N", N)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"plan_matmul: {name} must be a positive int, got {v!r}")
    n = params.n
    best = None
    for kw in _divisor_sizes(K, n):
        for nw in _divisor_sizes(N, n // kw):
            mcap = n // (kw * nw)
            if mcap < 1:
                continue
            mw = _cdiv(M, _cdiv(M, min(M, mcap)))  # balanced row blocks
            plan = MatmulPlan(int(M), int(K), int(N), mw, kw, nw, params, vector)
            secs, nbytes = plan.cost(bandwidth)
            score = secs + nbytes / bandwidth
            if best is None or score < best[0]:
                best = (score, plan)
    return best[1]


def plan_matvec(m, k, params: HEParams = DEFAULT, *, bandwidth=DEFAULT_BANDWIDTH) -> MatmulPlan:
    """Plan for W (m x k) . x (k,) (vectors in, vector out)."""
    return plan_matmul(m, k, 1, params, bandwidth=bandwidth, vector=True)


@dataclass(frozen=True)
class ElementwisePlan:
    """x (encrypted) * y (plaintext) elementwise over Z_2^64, d = floor(sqrt(n))
    elements per ciphertext: x_i at i, y_i at i d, x_i y_i at i (d + 1)."""

    size: int
    d: int
    params: HEParams = DEFAULT

    @property
    def n_inputs(self):
        return _cdiv(self.size, self.d)

    n_outputs = n_products = n_inputs

    def _chunk(self, v, b):
        return v[b * self.d:(b + 1) * self.d]

    def input_polys(self, x):
        x = _check_u64(x, "elementwise", shape=(self.size,))
        out = []
        for b in range(self.n_inputs):
            poly = np.zeros(self.params.n, dtype=_U64)
            ch = self._chunk(x, b)
            poly[: ch.size] = ch
            out.append(poly)
        return out

    def positions(self, out_index):
        cnt = min(self.d, self.size - out_index * self.d)
        return np.arange(cnt) * (self.d + 1)

    def evaluate(self, y, cts):
        """Raw result ciphertexts, output by output."""
        return list(self.iter_outputs(y, cts))

    def iter_outputs(self, y, cts):
        y = _check_u64(y, "elementwise", shape=(self.size,))
        cts = _check_inputs(cts, self.n_inputs, self.params, "elementwise")
        c = _ctx(self.params)
        for b, ct in enumerate(cts):
            ch = self._chunk(y, b)
            poly = np.zeros(c.n, dtype=np.int64)
            poly[np.arange(ch.size) * self.d] = ch.view(np.int64)
            pt = c.ntt(c.from_i64(poly, out=c.scratch("mm1", (c.L, c.n))))
            noise = ct.noise * float(ch.size) * 2.0 ** 63  # public bound on ||w||_1
            _check_budget(noise, c, c.L, "elementwise")
            out = np.empty_like(ct.data)
            c.mulacc(ct.data, pt, out, c.L, 2, False)
            yield Ciphertext(self.params, out, True, noise, ct.key_id, c.n)

    def assemble(self, values):
        return np.concatenate([np.asarray(v, dtype=_U64) for v in values]) if values else \
            np.zeros(0, dtype=_U64)

    def split_mask(self, mask):
        mask = _check_u64(mask, "elementwise mask", shape=(self.size,))
        return [self._chunk(mask, b) for b in range(self.n_outputs)]


def plan_elementwise(size, params: HEParams = DEFAULT) -> ElementwisePlan:
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"plan_elementwise: size must be a positive int, got {size!r}")
    return ElementwisePlan(int(size), math.isqrt(params.n), params)


def encrypt_input(key, plan, x, prg: Prg) -> list:
    """Key owner: encrypt the operand x (K x N matrix / length-K vector for a
    MatmulPlan, length-size vector for an ElementwisePlan) in the plan's packing."""
    return [encrypt(key, poly, prg) for poly in plan.input_polys(x)]


def evaluate(plan, y, cts) -> list:
    """Evaluator: the plan's product of its plaintext y with the encrypted
    inputs; raw result ciphertexts (not sanitised: use evaluate_masked before
    sending them to the key owner)."""
    return plan.evaluate(y, cts)


def evaluate_masked(plan, y, cts, mask, pk: PublicKey, prg: Prg) -> list:
    """Evaluator: product + mask (same shape as the result, or None),
    sanitised and extracted for the key owner (see ``mask_and_extract``)."""
    masks = plan.split_mask(mask) if mask is not None else [None] * plan.n_outputs
    # streamed: each raw output is sanitised as soon as it is complete
    return [mask_and_extract(ct, plan.positions(o), masks[o], pk, prg)
            for o, ct in enumerate(plan.iter_outputs(y, cts))]


def decrypt_output(sk: SecretKey, plan, outs) -> np.ndarray:
    """Key owner: decrypt the plan's results (raw or extracted ciphertexts)."""
    outs = list(outs)
    if len(outs) != plan.n_outputs:
        raise ValueError(f"decrypt_output: expected {plan.n_outputs} ciphertexts, got {len(outs)}")
    vals = []
    for o, ct in enumerate(outs):
        if isinstance(ct, ExtractedCiphertext):
            want = plan.positions(o)
            if not np.array_equal(ct.positions, want):
                raise HEError("decrypt_output: result ciphertext has unexpected positions")
            vals.append(decrypt(sk, ct))
        else:
            full = decrypt(sk, ct)
            vals.append(_pad(full, plan.params.n)[plan.positions(o)])
    return plan.assemble(vals)


def _evaluate_maybe_masked(op, plan, y, cts, mask, pk, prg):
    if pk is None:
        if mask is not None:
            raise ValueError(f"{op}: a mask needs pk and prg (use evaluate_masked)")
        return evaluate(plan, y, cts)
    return evaluate_masked(plan, y, cts, mask, pk, prg)


def matmul(plan: MatmulPlan, W, cts, mask=None, pk=None, prg=None) -> list:
    """W . X for the encrypted X of ``encrypt_input``: raw ciphertexts, or
    sanitised ExtractedCiphertexts decrypting to W . X + mask when pk and prg
    are given."""
    return _evaluate_maybe_masked("matmul", plan, W, cts, mask, pk, prg)


matvec = matmul


def elementwise(plan: ElementwisePlan, y, cts, mask=None, pk=None, prg=None) -> list:
    """x * y elementwise (mod 2^64) for the encrypted x of ``encrypt_input``."""
    return _evaluate_maybe_masked("elementwise", plan, y, cts, mask, pk, prg)
