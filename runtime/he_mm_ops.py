"""The executor's ``he_mm.*`` ops: HE matrix products addressed by their packing plan.

The dealer-free matrix-product triples (``mixc.protocols.dealerfree``) use the
Cheetah-style packing of ``runtime.he.MatmulPlan`` end to end, so their ops
name the plan (``(M, K, N, mw, kw, nw)``) instead of listing every element's
coefficient position, and the evaluator's product never goes through bytes
before it is sanitised:

- ``he_mm.encrypt(sk, X)``: the key owner encrypts X (K x N ring values) in
  the plan's input packing (``encrypt_input``; seeded ciphertexts);
- ``he_mm.eval(pk, ct, W, mask)``: the evaluator computes W . X + mask on the
  ciphertexts, each output sanitised as soon as it is complete
  (``evaluate_masked``: re-randomised, noise flooded, modulus switched, only
  the result coefficients kept);
- ``he_mm.decrypt(sk, ext)``: the key owner decrypts them to the M x N values
  (``decrypt_output``).

Byte layouts and keys are those of ``runtime.he_ops`` (same wire format), and
every op that draws randomness seeds a fresh ChaCha20 stream from ``os.urandom``.
A plan with a seventh entry 128 runs with plaintext modulus 2^128
(``runtime.he.DEFAULT_128``): X, W, the mask and the result are u128 ring values.
"""
from __future__ import annotations

import os

import numpy as np

from . import he
from .he_ops import PARAMS, _pk, _sk, extracted_bytes, join, matmul_plan, split
from .kernels import Prg


def output_sizes(plan):
    """Byte size of each sanitised output of a plan."""
    p = matmul_plan(plan)
    return [extracted_bytes(len(p.positions(o)), p.params) for o in range(p.n_outputs)]


def input_bytes(plan):
    p = matmul_plan(plan)
    return p.n_inputs * he.ciphertext_bytes(p.params, "seeded")


def _plain(p, x):
    return np.ascontiguousarray(x, dtype=p.params.plain_dtype)


def _prg():
    return Prg(os.urandom(32), 0)


def encrypt(a, sk, x):
    p = matmul_plan(a["plan"])
    return [join(he.encrypt_input(_sk(sk, p.params), p, _plain(p, x), _prg()))]


def evaluate(a, pk, ct, w, mask):
    p = matmul_plan(a["plan"])
    outs = he.evaluate_masked(p, _plain(p, w), split(ct, p.params), _plain(p, mask),
                              _pk(pk, p.params), _prg())
    return [join(outs)]


def decrypt(a, sk, ext):
    p = matmul_plan(a["plan"])
    return [_plain(p, he.decrypt_output(_sk(sk, p.params), p, split(ext, p.params)))]


OPS = {"he_mm.encrypt": encrypt, "he_mm.eval": evaluate, "he_mm.decrypt": decrypt}


def run(op, attrs, args):
    return OPS[op](attrs, *args)


__all__ = ["OPS", "run", "output_sizes", "input_bytes", "PARAMS"]
