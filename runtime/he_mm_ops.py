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
"""
from __future__ import annotations

import os

import numpy as np

from . import he
from .he_ops import PARAMS, SEEDED, _pk, _sk, extracted_bytes, join, matmul_plan, split
from .kernels import Prg


def output_sizes(plan):
    """Byte size of each sanitised output of a plan."""
    p = matmul_plan(plan)
    return [extracted_bytes(len(p.positions(o))) for o in range(p.n_outputs)]


def input_bytes(plan):
    return matmul_plan(plan).n_inputs * SEEDED


def _prg():
    return Prg(os.urandom(32), 0)


def encrypt(a, sk, x):
    p = matmul_plan(a["plan"])
    return [join(he.encrypt_input(_sk(sk), p, np.ascontiguousarray(x, dtype=np.uint64), _prg()))]


def evaluate(a, pk, ct, w, mask):
    p = matmul_plan(a["plan"])
    outs = he.evaluate_masked(p, np.ascontiguousarray(w, dtype=np.uint64), split(ct),
                              np.ascontiguousarray(mask, dtype=np.uint64), _pk(pk), _prg())
    return [join(outs)]


def decrypt(a, sk, ext):
    p = matmul_plan(a["plan"])
    return [np.asarray(he.decrypt_output(_sk(sk), p, split(ext)), dtype=np.uint64)]


OPS = {"he_mm.encrypt": encrypt, "he_mm.eval": evaluate, "he_mm.decrypt": decrypt}


def run(op, attrs, args):
    return OPS[op](attrs, *args)


__all__ = ["OPS", "run", "output_sizes", "input_bytes", "PARAMS"]
