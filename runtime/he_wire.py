"""Keys, plaintexts and ciphertexts of ``runtime.he`` and their wire format: bit-packed
limbs, headers, ``from_bytes`` and ``ciphertext_bytes`` (the format: ``runtime.he``)."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from mixc.runtime.kernels import Prg
from mixc.runtime.kernels import ffi, lib
from mixc.runtime.he_params import (DEFAULT, HEError, HEParams, KIND_EXTRACTED, KIND_FULL,
                                    KIND_PUBKEY, KIND_SEEDED, _Ctx, _HDR, _MAGIC, _U64,
                                    _VERSION, _check_plain, _ctx, _p64, _pad)


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
    """A plaintext polynomial with Z_t coefficients, lifted to the centred
    integers (-t/2, t/2], in the NTT domain, with its l1 norm."""

    __slots__ = ("params", "ntt", "l1", "length")

    def __init__(self, params, ntt, l1, length):
        self.params, self.ntt, self.l1, self.length = params, ntt, l1, length


def encode_plain(poly, params: HEParams = DEFAULT) -> Plaintext:
    """Encode a coefficient vector (length <= n; uint64, or U128 for t = 2^128) for
    ``mul_plain`` (reuse it to multiply several ciphertexts by the same polynomial)."""
    c = _ctx(params)
    v = _check_plain(poly, params, "encode_plain", max_len=c.n)
    full = _pad(v, c.n)
    return Plaintext(params, c.ntt(c.from_plain(full)), centred_l1(full), v.size)


def centred_l1(v) -> float:
    """An upper bound on the l1 norm of plaintext values lifted to (-t/2, t/2]."""
    if v.dtype == _U64:
        mags = np.abs(v.view(np.int64).astype(np.float64))
    else:  # U128: |hi 2^64 + lo| from the signed high word, within float rounding
        words = v.view(_U64).reshape(-1, 2)
        signed = words[:, 1].view(np.int64).astype(np.float64) * 2.0 ** 64 \
            + words[:, 0].astype(np.float64)
        mags = np.abs(signed)
    return float(mags.sum()) * (1 + 2.0 ** -40)


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
