"""The executor's HE ops: ciphertexts in the IR are u8 byte arrays.

An HE value in a party's program is the concatenation of serialised
ciphertexts (``runtime.he`` wire format: every ciphertext starts with its
own header, so a byte array splits back into its ciphertexts). Its elements
live at *flat positions*: element i is coefficient ``pos[i] % n`` of
ciphertext ``pos[i] // n``. The compiler knows every position (they are op
attributes), so the byte sizes of all HE values are static and print in the
IR types: a fresh secret-key encryption is ``SEEDED`` bytes, any result of
an HE op ``FULL`` bytes, a sanitised result ``extracted_bytes(r)``.

The ops (declared in ``mixc.ir.ops``, run by ``runtime.executor``):

- ``he.keygen() -> (sk, pk)`` at the key owner (the public key goes to the
  evaluator in a message labelled ``HE public key``);
- ``he.encrypt(sk, x)``: the key owner encrypts ring values at positions;
- ``he.add``/``he.sub`` (ciphertext pairs), ``he.neg``,
  ``he.add_plain(ct, y)`` (y at positions), ``he.mul_scalar(ct, c)``,
  ``he.matmul(ct, W)`` (``runtime.he.MatmulPlan``, coefficient encoding),
  ``he.mul_elementwise(ct, y)`` (``runtime.he.ElementwisePlan``);
- ``he.extract(pk, ct[, mask])``: the evaluator sanitises (re-randomise,
  flood, switch modulus, keep only the positions) and adds the mask;
- ``he.decrypt(sk, ext)``: the key owner decrypts the extracted values.

Every op that draws randomness seeds a fresh ChaCha20 stream from
``os.urandom``.

The plaintext modulus is 2^64 (``PARAMS``) unless an op says otherwise: a
``he.keygen`` with ``t_bits: 128`` makes keys of ``runtime.he.DEFAULT_128``,
and a matrix-product plan with a seventh entry 128 (``(M, K, N, mw, kw, nw,
128)``, ``plan_matmul(..., t_bits=128)``) runs on those parameters with u128
plaintexts (the 128-bit MPC ring's dealer-free triples, ``runtime.he_mm_ops``).
"""
from __future__ import annotations

import os

import numpy as np

from . import he
from .kernels import Prg

PARAMS = he.DEFAULT
N = PARAMS.n
SK_BYTES = 20 + N // 4
PK_BYTES = he.ciphertext_bytes(PARAMS, "seeded")  # b at every limb + the seed of a
SEEDED = he.ciphertext_bytes(PARAMS, "seeded")
FULL = he.ciphertext_bytes(PARAMS, "full")


def extracted_bytes(r, params=PARAMS):
    return he.ciphertext_bytes(params, "extracted", positions=int(r))


def key_bytes(t_bits=64):
    """(secret key bytes, public key bytes) of the parameters of plaintext modulus 2^t_bits."""
    params = he.params_for(int(t_bits))
    return 20 + params.n // 4, he.ciphertext_bytes(params, "seeded")


def _prg():
    return Prg(os.urandom(32), 0)


# ------------------------------------------------------------ layouts (compile time too)

def groups(positions, count):
    """For each of ``count`` ciphertexts, the (sorted) element indices and coefficients
    that live in it. ``positions``: flat positions of unique elements."""
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    ct = pos // N
    order = np.argsort(pos, kind="stable")
    out = []
    for c in range(int(count)):
        idx = order[ct[order] == c]
        out.append((idx, pos[idx] - c * N))
    return out


def extract_sizes(positions, count):
    """Byte size of each extracted ciphertext (only ciphertexts holding positions)."""
    return [extracted_bytes(len(idx)) for idx, _ in groups(positions, count) if len(idx)]


def matmul_plan(plan):
    """The MatmulPlan of a plan attribute (M, K, N, mw, kw, nw[, t_bits])."""
    M, K, Nn, mw, kw, nw, *t = (int(v) for v in plan)
    return he.MatmulPlan(M, K, Nn, mw, kw, nw, he.params_for(t[0]) if t else PARAMS)


def matmul_input_positions(plan):
    """(K, N) flat positions of X in the plan's input ciphertexts."""
    p = matmul_plan(plan)
    j = np.arange(p.K)[:, None]
    l = np.arange(p.N)[None, :]
    ct = (j // p.kw) * p.Nb + (l // p.nw)
    return ct * N + (j % p.kw) + (l % p.nw) * p.kw


def matmul_output_positions(plan):
    """(M, N) flat positions of W . X in the plan's output ciphertexts."""
    p = matmul_plan(plan)
    i = np.arange(p.M)[:, None]
    l = np.arange(p.N)[None, :]
    ct = (i // p.mw) * p.Nb + (l // p.nw)
    return ct * N + (p.kw - 1) + (l % p.nw) * p.kw + (i % p.mw) * p.kw * p.nw


def elementwise_d():
    return int(np.sqrt(N))


def elementwise_input_positions(size):
    d = elementwise_d()
    i = np.arange(size)
    return (i // d) * N + (i % d)


def elementwise_output_positions(size):
    d = elementwise_d()
    i = np.arange(size)
    return (i // d) * N + (i % d) * (d + 1)


def plan_matmul(M, K, Nn, t_bits=64):
    """A plan attribute; t = 2^128 plans carry their t_bits as a seventh entry."""
    p = he.plan_matmul(int(M), int(K), int(Nn), he.params_for(int(t_bits)))
    return (p.M, p.K, p.N, p.mw, p.kw, p.nw) + (() if t_bits == 64 else (int(t_bits),))


def plan_cost(plan):
    """(bytes of Enc inputs, bytes of extracted outputs) of a matmul plan."""
    p = matmul_plan(plan)
    return (p.n_inputs * he.ciphertext_bytes(p.params, "seeded"),
            p.n_outputs * extracted_bytes(p.mw * p.nw, p.params))


# ------------------------------------------------------------ (de)serialisation

def split(buf, params=PARAMS):
    """A u8 array of concatenated serialised ciphertexts -> list of parsed objects."""
    data = np.ascontiguousarray(buf, dtype=np.uint8).tobytes()
    out, off = [], 0
    while off < len(data):
        if len(data) - off < he._HDR.size:
            raise he.HEError("malformed HE value: truncated ciphertext header")
        _m, _v, kind, level, _f, _p, _k, _noise, length = he._HDR.unpack_from(data, off)
        if kind in (he.KIND_SEEDED, he.KIND_PUBKEY):
            size = he.ciphertext_bytes(params, "seeded")  # a public key: b + the seed of a
        elif kind == he.KIND_FULL:
            size = he.ciphertext_bytes(params, "full", level=level)
        elif kind == he.KIND_EXTRACTED:
            size = he.ciphertext_bytes(params, "extracted", level=level, positions=length)
        else:
            raise he.HEError(f"malformed HE value: unknown kind {kind}")
        out.append(he.from_bytes(data[off:off + size], params))
        off += size
    return out


def join(objs):
    return np.frombuffer(b"".join(o.to_bytes() for o in objs), dtype=np.uint8).copy()


def _sk(buf, params=PARAMS):
    return he.SecretKey.from_bytes(np.asarray(buf, dtype=np.uint8).tobytes(), params)


def _pk(buf, params=PARAMS):
    return he.PublicKey.from_bytes(np.asarray(buf, dtype=np.uint8).tobytes(), params)


# ------------------------------------------------------------ the ops

def keygen(a):
    sk, pk = he.keygen(_prg(), he.params_for(int(a.get("t_bits", 64))))
    return [np.frombuffer(sk.to_bytes(), dtype=np.uint8).copy(),
            np.frombuffer(pk.to_bytes(), dtype=np.uint8).copy()]


def encrypt(a, sk, x):
    key = _sk(sk)
    pos = np.asarray(a["positions"], dtype=np.int64).reshape(-1)
    vals = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    if vals.size != pos.size:
        raise he.HEError(f"he.encrypt: {vals.size} values for {pos.size} positions")
    count = int(a["count"])
    polys = np.zeros(count * N, dtype=np.uint64)
    polys[pos] = vals
    prg = _prg()
    cts = [he.encrypt(key, polys[c * N:(c + 1) * N], prg) for c in range(count)]
    return [join(cts)]


def _binary(fn):
    def run(a, x, y):
        xs, ys = split(x), split(y)
        return [join([fn(xs[i], ys[j]) for i, j in a["pairs"]])]
    return run


add = _binary(he.add)
sub = _binary(he.sub)


def neg(a, x):
    return [join([he.neg(c) for c in split(x)])]


def add_plain(a, x, y):
    cts = split(x)
    pos = np.asarray(a["positions"], dtype=np.int64).reshape(-1)
    vals = np.ascontiguousarray(y, dtype=np.uint64).reshape(-1)
    polys = np.zeros(len(cts) * N, dtype=np.uint64)
    polys[pos] = vals
    return [join([he.add_plain(c, polys[i * N:(i + 1) * N]) for i, c in enumerate(cts)])]


def mul_scalar(a, x, c):
    value = np.uint64(np.asarray(c, dtype=np.uint64).reshape(-1)[0])
    bound = float(a["bound"])
    signed = abs(float(np.int64(value.view(np.int64))))
    poly = np.array([value], dtype=np.uint64)
    # an evaluator hiding its scalar passes a public bound; a public scalar its own size
    bound = max(bound, signed * (1 + 2.0 ** -30), 1.0)
    return [join([he.mul_plain(ct, poly, norm_bound=bound) for ct in split(x)])]


def matmul(a, x, w):
    plan = matmul_plan(a["plan"])
    W = np.ascontiguousarray(w, dtype=np.uint64).reshape(plan.M, plan.K)
    return [join(plan.evaluate(W, split(x)))]


def mul_elementwise(a, x, y):
    plan = he.plan_elementwise(int(a["size"]), PARAMS)
    vals = np.ascontiguousarray(y, dtype=np.uint64).reshape(-1)
    return [join(plan.evaluate(vals, split(x)))]


def extract(a, pk, x, mask=None):
    key = _pk(pk)
    cts = split(x)
    prg = _prg()
    out = []
    m = None if mask is None else np.ascontiguousarray(mask, dtype=np.uint64).reshape(-1)
    for c, (idx, coeffs) in enumerate(groups(a["positions"], a["count"])):
        if not len(idx):
            continue
        out.append(he.mask_and_extract(cts[c], coeffs, None if m is None else m[idx], key, prg))
    return [join(out)]


def decrypt(a, sk, x):
    key = _sk(sk)
    exts = split(x)
    pos = np.asarray(a["positions"], dtype=np.int64).reshape(-1)
    out = np.zeros(pos.size, dtype=np.uint64)
    k = 0
    for c, (idx, coeffs) in enumerate(groups(pos, a["count"])):
        if not len(idx):
            continue
        if k >= len(exts):
            raise he.HEError("he.decrypt: fewer ciphertexts than positions need")
        ext = exts[k]
        k += 1
        if not np.array_equal(np.asarray(ext.positions), coeffs):
            raise he.HEError("he.decrypt: a ciphertext holds other positions than the program's")
        out[idx] = he.decrypt(key, ext)
    if k != len(exts):
        raise he.HEError("he.decrypt: more ciphertexts than positions need")
    return [out]


OPS = {"he.keygen": keygen, "he.encrypt": encrypt, "he.add": add, "he.sub": sub, "he.neg": neg,
       "he.add_plain": add_plain, "he.mul_scalar": mul_scalar, "he.matmul": matmul,
       "he.mul_elementwise": mul_elementwise, "he.extract": extract, "he.decrypt": decrypt}


def run(op, attrs, args):
    return OPS[op](attrs, *args)
