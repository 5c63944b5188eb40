"""Elementwise and linear ops: arithmetic, comparisons, logic, selects, shifts,
conversions, and the products (dot_general, convolutions).

Most are one IR op each, with JAX's implicit broadcasting of size-1 operands
made explicit. The comparisons the IR lacks (gt, le, ge, ne) and max, min, abs,
sign, clamp and square are small JAX functions of lt, eq, select and products,
traced and inlined. Cases decided when compiling are folded here: x == x on
fixed point (which has no NaN), max(x, -inf), a select whose predicate is
known, and an infinity known then standing in a select on secrets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .ir.ops import dtype_name
from .translate_core import (_all_known, _aval_type, _constant, _inline_function, _ints,
                             _known_value, _macro, _simple, register)

_lax = jax.lax


def _elementwise(op):
    """An elementwise op; JAX broadcasts size-1 dims implicitly, the IR wants it explicit."""
    simple = _simple(op)

    def rule(trace, eqn, ins, dev, loc):
        shape = tuple(eqn.outvars[0].aval.shape)
        fixed = []
        for v in ins:
            if tuple(v.type.shape) not in ((), shape):
                t = v.type.with_(shape=shape)
                v = trace.emit("broadcast_in_dim", [v], [t],
                               {"shape": shape,
                                "broadcast_dimensions": tuple(range(len(shape)))}, loc).result
            fixed.append(v)
        return simple(trace, eqn, fixed, dev, loc)
    return rule


def _iota(trace, eqn, ins, dev, loc):
    """jnp.arange and friends: a constant known at trace time."""
    p = eqn.params
    shape, dim = _ints(p["shape"]), int(p["dimension"])
    ramp = np.arange(shape[dim]).reshape([-1 if i == dim else 1 for i in range(len(shape))])
    value = np.broadcast_to(ramp, shape).astype(np.dtype(p["dtype"]))
    return [_constant(trace, value, dev, loc)]


def _alias(trace, eqn, ins, dev, loc):
    """Copies and stop_gradient: the operand itself."""
    return ins


def _convert(trace, eqn, ins, dev, loc):
    new = dtype_name(eqn.params["new_dtype"])
    if new == ins[0].type.dtype:
        return ins
    if new == "bool" and ins[0] not in trace.public:   # as in JAX: nonzero is true
        return _inline_function(trace, lambda x: x != 0, ins, dev)
    return _simple("convert_element_type",
                   lambda p: {"new_dtype": dtype_name(p["new_dtype"])})(trace, eqn, ins, dev, loc)


def _dot_attrs(p):
    (lc, rc), (lb, rb) = p["dimension_numbers"]
    return {"contract": (_ints(lc), _ints(rc)), "batch": (_ints(lb), _ints(rb))}


def _conv_attrs(p):
    if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        raise NotImplementedError("grouped convolutions (feature_group_count or "
                                  "batch_group_count > 1)")
    dn = p["dimension_numbers"]
    return {"window_strides": _ints(p["window_strides"]),
            "padding": tuple(_ints(q) for q in p["padding"]),
            "lhs_dilation": _ints(p["lhs_dilation"]), "rhs_dilation": _ints(p["rhs_dilation"]),
            "dimension_numbers": (_ints(dn.lhs_spec), _ints(dn.rhs_spec), _ints(dn.out_spec)),
            "feature_group_count": 1, "batch_group_count": 1}


def _shift(op):
    """Shifts by a constant amount (the amount becomes an attribute)."""
    def rule(trace, eqn, ins, dev, loc):
        amount = eqn.invars[1]
        from jax.extend.core import Literal
        if not isinstance(amount, Literal) or np.ndim(amount.val) != 0:
            raise TraceError(f"{loc}: {eqn.primitive.name} on MPC needs a constant shift amount")
        t = [_aval_type(v.aval, dev) for v in eqn.outvars]
        return trace.emit(op, ins[:1], t, {"bits": int(amount.val)}, loc).results
    return rule


def _select_n(trace, eqn, ins, dev, loc):
    if len(ins) != 3 or ins[0].type.dtype != "bool":
        raise TraceError(f"{loc}: select_n on MPC takes a bool predicate and two cases")
    known = _known_value(trace, ins[0])
    if known is not None and (known.all() or not known.any()):
        # decided when tracing: the other case (jnp.var's NaN, say) is never computed
        chosen = ins[2] if known.all() else ins[1]
        if tuple(chosen.type.shape) == tuple(eqn.outvars[0].aval.shape):
            return [chosen]
    return _simple("select_n")(trace, eqn, ins, dev, loc)


# what an infinity known when compiling stands for in a select on secrets (slogdet's
# -inf for a singular matrix), which has no fixed-point encoding: beyond any value, yet
# small enough for fixed-point products (exp's clamp multiplies it by 0 or 1)
_INFINITY = 2.0 ** 20


def _finite_cases(rule):
    """``rule`` with the infinities of operands known when compiling clipped to
    +-``_INFINITY``, unless every operand is known (then JAX's own values stand)."""
    def finite(trace, eqn, ins, dev, loc):
        if _all_known(trace, ins):
            return rule(trace, eqn, ins, dev, loc)
        cases = []
        for v in ins:
            known = _known_value(trace, v)
            if known is not None and np.isinf(known).any():
                v = _constant(trace, np.clip(known, -_INFINITY, _INFINITY).astype(known.dtype),
                              dev, loc)
            cases.append(v)
        return rule(trace, eqn, cases, dev, loc)
    return finite


def _identity_bound(fn, identity):
    """max(x, -inf) and min(x, +inf) are x: fold them (softmax writes max(-inf, m)),
    since an infinity has no fixed-point encoding."""
    def rule(trace, eqn, ins, dev, loc):
        from jax.extend.core import Literal
        for var, other in ((eqn.invars[0], ins[1]), (eqn.invars[1], ins[0])):
            if isinstance(var, Literal) and np.all(np.asarray(var.val) == identity) \
                    and tuple(other.type.shape) == tuple(eqn.outvars[0].aval.shape):
                return [other]
        return fn(trace, eqn, ins, dev, loc)
    return rule


def _self_comparison(rule, answer):
    """x == x (jnp.isnan writes x != x) is known without comparing: fixed point has no NaN."""
    def folded(trace, eqn, ins, dev, loc):
        if ins[0] is ins[1]:
            return [_constant(trace, np.full(eqn.outvars[0].aval.shape, answer), dev, loc)]
        return rule(trace, eqn, ins, dev, loc)
    return folded


def _always_finite(trace, eqn, ins, dev, loc):
    """Fixed-point values have no infinities or NaNs."""
    return [_constant(trace, np.ones(eqn.outvars[0].aval.shape, np.bool_), dev, loc)]


def _broadcasting(fn):
    """The ``_macro`` of ``fn``, its operands broadcast first: JAX's elementwise
    primitives take scalars beside arrays, the expansions want equal shapes."""
    return _macro(lambda params: lambda *xs: fn(*jnp.broadcast_arrays(*xs)))


register({
    "add": _elementwise("add"), "sub": _elementwise("sub"), "mul": _elementwise("mul"),
    "neg": _simple("neg"), "add_any": _elementwise("add"), "iota": _iota,
    "dot_general": _simple("dot_general", _dot_attrs),
    "conv_general_dilated": _simple("conv_general_dilated", _conv_attrs),
    "convert_element_type": _convert,
    "copy": _alias, "copy_p": _alias, "stop_gradient": _alias,
    "lt": _self_comparison(_elementwise("lt"), False),
    "eq": _self_comparison(_elementwise("eq"), True),
    "gt": _self_comparison(_broadcasting(lambda a, b: _lax.lt(b, a)), False),
    "le": _self_comparison(_broadcasting(lambda a, b: _lax.bitwise_not(_lax.lt(b, a))), True),
    "ge": _self_comparison(_broadcasting(lambda a, b: _lax.bitwise_not(_lax.lt(a, b))), True),
    "ne": _self_comparison(_broadcasting(lambda a, b: _lax.bitwise_not(_lax.eq(a, b))), False),
    "and": _elementwise("and"), "or": _elementwise("or"), "xor": _elementwise("xor"),
    "not": _simple("not"), "select_n": _finite_cases(_select_n),
    "shift_left": _shift("shl"), "shift_right_logical": _shift("lshr"),
    "shift_right_arithmetic": _shift("ashr"),
    "max": _identity_bound(_broadcasting(lambda a, b: _lax.select(_lax.lt(a, b), b, a)),
                           -np.inf),
    "min": _identity_bound(_broadcasting(lambda a, b: _lax.select(_lax.lt(b, a), b, a)),
                           np.inf),
    "abs": _broadcasting(lambda x: _lax.select(_lax.lt(x, jnp.zeros_like(x)), -x, x)),
    "sign": _broadcasting(lambda x: (_lax.lt(jnp.zeros_like(x), x).astype(x.dtype)
                                     - _lax.lt(x, jnp.zeros_like(x)).astype(x.dtype))),
    "clamp": _broadcasting(lambda lo, x, hi: jnp.minimum(jnp.maximum(x, lo), hi)),
    "square": _broadcasting(lambda x: x * x),
    "is_finite": _always_finite,
}, linear=("add", "sub", "neg", "mul", "add_any", "iota", "dot_general", "conv_general_dilated",
           "convert_element_type", "copy", "copy_p", "stop_gradient"))
