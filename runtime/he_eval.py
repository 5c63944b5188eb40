"""Encryption, decryption and the homomorphic operations of ``runtime.he``: add, sub,
neg, add_plain, mul_plain, mod_switch and the sanitising ``mask_and_extract``."""

from __future__ import annotations

import math

import numpy as np

from mixc.runtime.kernels import Prg
from mixc.runtime.he_params import (HEError, _Ctx, _Level, _U64, _bits_for, _check_budget,
                                    _check_plain, _ctx, _pad)
from mixc.runtime.he_wire import (Ciphertext, ExtractedCiphertext, Plaintext, PublicKey,
                                  SecretKey, encode_plain)


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
    """Encrypt a vector of Z_t coefficients (uint64 for t = 2^64, U128 for
    t = 2^128) under a secret key (seeded, compact) or a public key.  Up to n values give one Ciphertext;
    longer vectors are split into a list of ceil(len / n) ciphertexts."""
    if not isinstance(prg, Prg):
        raise ValueError("encrypt: prg must be a mixc.runtime.kernels.Prg")
    if not isinstance(key, (SecretKey, PublicKey)):
        raise ValueError(f"encrypt: key must be a SecretKey or PublicKey, got {type(key).__name__}")
    n = key.params.n
    v = _check_plain(values, key.params, "encrypt").reshape(-1)
    if v.size <= n:
        return _encrypt_poly(key, _pad(v, n), prg, v.size)
    return [_encrypt_poly(key, _pad(v[i:i + n], n), prg, min(n, v.size - i))
            for i in range(0, v.size, n)]


def _noise_threshold(noise: float, level: _Level, t_bits: int) -> float:
    # residual * 2^64 = 2^64 t e / q; the decoder's fixed-point
    # error is < L 2^-78 of a unit, i.e. < 1 here: allow a few units
    return min(noise * 2.0 ** (64 + t_bits) / float(level.q) * (1 + 2.0 ** -20) + 8.0,
               2.0 ** 62)


def _check_residual(frac, noise, lv, what, t_bits):
    if frac.size == 0:
        return
    worst = float(np.abs(frac.astype(np.float64)).max())
    thr = _noise_threshold(noise, lv, t_bits)
    if worst > thr:
        measured = worst / 2.0 ** (64 + t_bits) * float(lv.q)
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
        return np.concatenate(parts) if parts else np.zeros(0, dtype=sk.params.plain_dtype)
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
    _check_residual(frac, ct.noise, lv, "ciphertext", sk.params.t_bits)
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
    _check_residual(frac, ct.noise, lv, "ciphertext", sk.params.t_bits)
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
    """Enc(x) + Enc(y) = Enc(x + y mod t)."""
    return _add_or_sub(a, b, "add", _Ctx.add)


def sub(a: Ciphertext, b: Ciphertext) -> Ciphertext:
    """Enc(x) - Enc(y) = Enc(x - y mod t)."""
    return _add_or_sub(a, b, "sub", _Ctx.sub)


def neg(a: Ciphertext) -> Ciphertext:
    """-Enc(x) = Enc(-x mod t)."""
    c = _ctx(a.params)
    return Ciphertext(a.params, c.neg(a.data, l=a.level), a.ntt, a.noise, a.key_id, a.length)


def add_plain(ct: Ciphertext, values) -> Ciphertext:
    """Enc(x) + y for a plaintext vector y (length <= n), coefficientwise mod t."""
    c = _ctx(ct.params)
    v = _check_plain(values, ct.params, "add_plain", max_len=c.n)
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
    """Enc(x) * w in Z_t[X]/(X^n + 1) (negacyclic convolution mod t) for
    a plaintext polynomial w: a coefficient vector (length <= n) or a
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
    """Sanitised result for the key owner: adds ``mask`` (plaintext values, one per
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
        mv = _check_plain(mask, params, "mask_and_extract").reshape(-1)
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
