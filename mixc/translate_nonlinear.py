"""Nonlinear functions: the approximations of ``mixc.approx``, powers, and rounding.

exp, log, the sigmoid, tanh, sqrt, erf, the trigonometric and hyperbolic
functions and their inverses are ``mixc.approx``'s JAX functions of supported
ops, traced and inlined; on values known when compiling JAX computes them
exactly instead (they are registered as approximated). An integer power is a
chain of products; floor and round are exact on the fixed-point value.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .translate_core import _NP, _Params, _constant, _known_value, _macro, _simple, register

_lax = jax.lax


def _approximation(name):
    """The rule of ``mixc.approx.APPROXIMATIONS[name]``."""
    def build(params):
        from . import approx
        return approx.APPROXIMATIONS[name]
    return _macro(build)


def _approx_attr(name):
    """A ``_macro`` builder of ``mixc.approx``'s function ``name``."""
    def build(params):
        from . import approx
        return getattr(approx, name)
    return build


_RECIPROCAL = _approximation("reciprocal")
_POW_BY_LOGS = _macro(lambda params: lambda x, y: jnp.exp(y * jnp.log(x)))


def _integer_pow(trace, eqn, ins, dev, loc):
    """x**y as a chain of products (square-and-multiply), so protocols see only mul;
    a negative y is the reciprocal of that."""
    y = eqn.params["y"]
    t = ins[0].type.with_(place=dev.name)
    if y == 0:
        return [_constant(trace, np.ones(t.shape, _NP[t.dtype]), dev, loc)]
    if y < 0:
        (positive,) = _integer_pow(trace, _Params(y=-y), ins, dev, loc)
        return _RECIPROCAL(trace, eqn, [positive], dev, loc)
    result, base = None, ins[0]
    while y:
        if y & 1:
            result = base if result is None else trace.emit("mul", [result, base], [t], {}, loc).result
        y >>= 1
        if y:
            base = trace.emit("mul", [base, base], [t], {}, loc).result
    return [result]


_APPROXIMATIONS = {name: _approximation(name) for name in (
    "exp", "log", "logistic", "tanh", "sqrt", "rsqrt", "erf",
    "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh")}


def _pow(trace, eqn, ins, dev, loc):
    """x ** y: a known integer y is a product chain; y = +-1/2 is sqrt/rsqrt; otherwise
    exp(y log x), for x > 0 (log's range and error apply)."""
    y = _known_value(trace, ins[1])
    if y is not None and y.size and np.all(y == y.flat[0]):
        e = float(y.flat[0])
        if e == int(e) and abs(e) <= 64:
            return _integer_pow(trace, _Params(y=int(e)), ins[:1], dev, loc)
        if e in (0.5, -0.5):
            return _APPROXIMATIONS["sqrt" if e > 0 else "rsqrt"](trace, eqn, ins[:1], dev, loc)
    return _POW_BY_LOGS(trace, eqn, ins, dev, loc)


_FUNCTIONS = {
    **_APPROXIMATIONS,
    "erfc": _macro(lambda params: lambda x: 1.0 - jax.scipy.special.erf(x)),
    "sin": _macro(_approx_attr("sin")), "cos": _macro(_approx_attr("cos")),
    "tan": _macro(_approx_attr("tan")),
    "atan2": _macro(_approx_attr("atan2")),   # broadcasts a scalar operand itself
    "log1p": _macro(lambda params: lambda x: jnp.log(1.0 + x)),
    "expm1": _macro(lambda params: lambda x: jnp.exp(x) - 1.0),
    "exp2": _macro(lambda params: lambda x: jnp.exp(x * np.float32(np.log(2.0)))),
    "integer_pow": _integer_pow, "pow": _pow,
}
register({
    **_FUNCTIONS,
    # exact on the fixed-point value; ceil(x) = -floor(-x) costs one floor
    "floor": _simple("floor"), "ceil": _macro(lambda params: lambda x: -_lax.floor(-x)),
    "round": _simple("round", lambda p: {
        "rounding_method": _lax.RoundingMethod(p["rounding_method"]).name.lower()}),
}, approximated=tuple(_FUNCTIONS))
