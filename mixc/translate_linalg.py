"""Linear algebra: the primitives jnp.linalg is made of.

LU, triangular solves, Cholesky, QR, eigh and svd are ``mixc.linalg``'s JAX functions of
supported ops (their divisions and square roots approximated), traced and
inlined; on matrices known when compiling JAX factorizes exactly instead.
custom_linear_solve (jnp.linalg.solve) runs its solve jaxpr, and
platform_index (jnp.diagonal) picks the CPU branch.
"""
from __future__ import annotations

import functools

import numpy as np

from .translate_core import _constant, _inline, _macro, register


def _linalg(name):
    """The rule of ``mixc.linalg``'s function ``name``, the primitive's params its keywords."""
    def build(params):
        from . import linalg
        return functools.partial(getattr(linalg, name), **params)
    return _macro(build)


def _custom_linear_solve(trace, eqn, ins, dev, loc):
    """lax.custom_linear_solve (jnp.linalg.solve's): its ``solve`` jaxpr on the
    right-hand side; the other jaxprs only serve differentiation."""
    sizes = eqn.params["const_lengths"]
    start = sizes.matvec + sizes.vecmat
    return _inline(trace, eqn.params["jaxprs"].solve,
                   ins[start:start + sizes.solve] + ins[sum(sizes):], dev)


def _platform_index(trace, eqn, ins, dev, loc):
    """lax.platform_dependent's branch (jnp.diagonal has one): the default, as on a CPU."""
    index = next(i for i, names in enumerate(eqn.params["platforms"])
                 if names is None or "cpu" in names)
    return [_constant(trace, np.int32(index), dev, loc)]


_FACTORIZATIONS = {name: _linalg(name)
                   for name in ("lu", "triangular_solve", "cholesky", "qr", "eigh", "svd")}

register({**_FACTORIZATIONS, "custom_linear_solve": _custom_linear_solve,
          "platform_index": _platform_index}, approximated=tuple(_FACTORIZATIONS))
