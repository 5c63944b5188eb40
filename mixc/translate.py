"""JAX equations into IR ops on MPC and HE devices.

``PRIMITIVES`` maps a JAX primitive's name to its rule: a function of the
equation and its operands' IR values that emits the IR ops computing it on the
device. The walker ``_translate`` reads only that table; each primitive family
lives in a module of its own, which registers its rules when imported here, so
importing this module completes the table:

- ``translate_core``: the walker, the table and ``register``, constants and
  constant folding, the author-frame helpers that make every error name the
  author's line, and the ways a rule emits IR (one op, or a JAX function of
  supported ops traced and inlined);
- ``translate_control``: scan, while and cond (``loop`` ops with a trip count
  known when compiling; a secret cond index runs every branch and selects);
- ``translate_arith``: elementwise arithmetic, comparisons, logic, selects,
  shifts, conversions, and the products (dot_general, convolutions);
- ``translate_nonlinear``: ``mixc.approx``'s approximations, powers, rounding;
- ``translate_division``: division and remainder, exact for integers;
- ``translate_reduce``: reductions, argmax/argmin, cumulative ops, sort and top_k;
- ``translate_movement``: layout ops, gathers, scatters and dynamic slices by
  known or run-time positions, pooling windows;
- ``translate_secret_index``: gathers and scatters at secret indices (one-hot
  products);
- ``translate_linalg``: LU, triangular solves, Cholesky, linear solves.
"""
from __future__ import annotations

# imported for the rules they register
from . import (translate_arith, translate_control, translate_division,  # noqa: F401
               translate_linalg, translate_movement, translate_nonlinear, translate_reduce)
from .translate_control import keeps_loops
from .translate_core import (_NP, HE_PRIMITIVES, PRIMITIVES, _author_frame, _constant, _loc,
                             _translate, _where)

__all__ = ["HE_PRIMITIVES", "PRIMITIVES", "keeps_loops", "_NP", "_author_frame", "_constant",
           "_loc", "_translate", "_where"]
