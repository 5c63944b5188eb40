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
    return range_marked(name, _macro(build))


def range_marked(name, rule, operand=0):
    """``rule`` with operand ``operand`` first passed through a same-shape reshape whose
    ``approx_range`` is approximation ``name``'s input range: ``simulate``'s range
    sanitizer checks the value there (``mixc.sanitize``), and the IR shows the range."""
    def marked(trace, eqn, ins, dev, loc):
        from .sanitize import approximation_range
        bounds = approximation_range(name)
        if bounds is None or dev.kind != "MPC":
            return rule(trace, eqn, ins, dev, loc)
        x = ins[operand]
        attrs = {"new_sizes": tuple(x.type.shape), "approx_range": (name,) + bounds}
        marker = trace.emit("reshape", [x], [x.type.with_(place=dev.name)], attrs, loc).result
        ins = list(ins)
        ins[operand] = marker
        return rule(trace, eqn, ins, dev, loc)
    return marked


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
    exp(y log x), what jnp.power's lax.pow is: for every x in [2^-18, 2^45) with
    y log x <= 30 (x^y <= e^30, beyond which exp saturates), relative error
    <= 1e-4 + 4e-5 |y| (exp's, and |y| times log's absolute error); x < 2^-18 is taken
    as 2^-18 (JAX: 0, inf or nan)."""
    y = _known_value(trace, ins[1])
    if y is not None and y.size and np.all(y == y.flat[0]):
        e = float(y.flat[0])
        if e == int(e) and abs(e) <= 64:
            return _integer_pow(trace, _Params(y=int(e)), ins[:1], dev, loc)
        if e in (0.5, -0.5):
            return _APPROXIMATIONS["sqrt" if e > 0 else "rsqrt"](trace, eqn, ins[:1], dev, loc)
    if y is not None and y.size and np.all(y == np.round(y)) and np.abs(y).max() <= 64:
        return [_integer_powers(trace, eqn, ins[0], y, dev, loc)]
    return _POW_BY_LOGS(trace, eqn, ins, dev, loc)


def _integer_powers(trace, eqn, x, y, dev, loc):
    """x ** y for a known integer y that differs by position (jnp.vander): each distinct
    power's product chain, picked at the known positions by one take."""
    from .translate_arith import _select_known
    shape = tuple(eqn.outvars[0].aval.shape)
    exponents, which = np.unique(np.broadcast_to(y, shape), return_inverse=True)
    powers = [_integer_pow(trace, _Params(y=int(e)), [x], dev, loc)[0] for e in exponents]
    return _select_known(trace, which.reshape(shape), powers, shape, dev, loc)


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
    # the sign times |x|^(1/3) by exp and log (their ranges and errors); sign(0) = 0
    "cbrt": _macro(lambda params: lambda x: jnp.sign(x) * jnp.exp(jnp.log(jnp.abs(x)) / 3)),
}
register({
    **_FUNCTIONS,
    # exact on the fixed-point value; ceil(x) = -floor(-x) costs one floor
    "floor": _simple("floor"), "ceil": _macro(lambda params: lambda x: -_lax.floor(-x)),
    "round": _simple("round", lambda p: {
        "rounding_method": _lax.RoundingMethod(p["rounding_method"]).name.lower()}),
}, approximated=tuple(_FUNCTIONS))
