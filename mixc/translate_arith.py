"""Elementwise and linear ops: arithmetic, comparisons, logic, selects, shifts,
conversions, and the products (dot_general, convolutions).

Most are one IR op each, with JAX's implicit broadcasting of size-1 operands
made explicit. The comparisons the IR lacks (gt, le, ge, ne) and max, min, abs,
sign, clamp and square are small JAX functions of lt, eq, select and products,
traced and inlined. Cases decided when compiling are folded here: x == x on
fixed point (which has no NaN), a comparison with a known infinity,
max(x, -inf), a select whose predicate is known, and an infinity known then
standing in a select on secrets. An int32 index selecting among n cases
(jnp.select) is n - 1 equality tests and one round of products. Products whose
operands JAX lets differ in dtype from the result convert them first (an int32
operand gets its fraction bits). ``jnp.signbit`` (and so ``jnp.copysign``),
which reads the float's bits, is x < 0 on fixed point.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .ir.ops import dtype_name
from .translate_core import (_all_known, _aval_type, _constant, _inline_function, _ints,
                             _known_value, _macro, _simple, register, register_calls)

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
    return [_cast(trace, ins[0], dtype_name(eqn.params["new_dtype"]), dev, loc)]


def _cast(trace, x, new, dev, loc):
    """``x`` as dtype ``new`` (an IR dtype name), as JAX converts it."""
    if new == x.type.dtype:
        return x
    if new == "bool" and x not in trace.public:   # as in JAX: nonzero is true
        return _inline_function(trace, lambda v: v != 0, [x], dev)[0]
    t = x.type.with_(dtype=new, place=dev.name)
    return trace.emit("convert_element_type", [x], [t], {"new_dtype": new}, loc).result


def _promoting(op, attr_fn):
    """dot_general and convolutions, whose operands JAX lets differ in dtype from the
    result (``preferred_element_type``: ``x.T @ y`` with int32 labels is a float32
    product): each operand is converted to the result's dtype first, as JAX computes
    it, so an int32 operand gets its fraction bits before the fixed-point product."""
    simple = _simple(op, attr_fn)

    def rule(trace, eqn, ins, dev, loc):
        dtype = dtype_name(eqn.outvars[0].aval.dtype)
        promoted = [_cast(trace, v, dtype, dev, loc) for v in ins]
        return simple(trace, eqn, promoted, dev, loc)
    return rule


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
    """lax.select_n: a bool predicate picks one of two cases; an int32 index one of n
    (jnp.select, lax.switch's index, JAX's own expansions)."""
    which, cases = ins[0], ins[1:]
    shape = tuple(eqn.outvars[0].aval.shape)
    known = _known_value(trace, which)
    if known is not None:
        picked = np.unique(known)
        if picked.size == 1 and tuple(cases[int(picked[0])].type.shape) == shape:
            # decided when tracing: the other cases (jnp.var's NaN, say) are never computed
            return [cases[int(picked[0])]]
        if which.type.dtype != "bool":
            return [_select_known(trace, np.broadcast_to(known, shape), cases, shape, dev, loc)]
    if which.type.dtype == "bool":
        return _simple("select_n")(trace, eqn, ins, dev, loc)
    return _SELECT_BY_INDEX(trace, eqn, ins, dev, loc)


def _select_known(trace, which, cases, shape, dev, loc):
    """select_n at an index known when compiling: one take from the cases laid end to
    end (each broadcast to the result's shape), local on shares."""
    from .translate_movement import _flat, _take
    flats = []
    for v in cases:
        if tuple(v.type.shape) != shape:     # a scalar, or size-1 dims of the same rank
            dims = tuple(range(len(shape))) if v.type.shape else ()
            v = trace.emit("broadcast_in_dim", [v], [v.type.with_(shape=shape, place=dev.name)],
                           {"shape": shape, "broadcast_dimensions": dims}, loc).result
        flats.append(_flat(trace, v, dev, loc))
    size = int(np.prod(shape, dtype=np.int64))
    joined = trace.emit("concatenate", flats, [flats[0].type.with_(shape=(size * len(flats),))],
                        {"dimension": 0}, loc).result
    positions = which.astype(np.int64) * size + np.arange(size).reshape(shape)
    return _take(trace, joined, positions, joined.type.with_(shape=shape), loc)


def _select_by_index(params):
    """select_n at a secret int32 index among n cases: one equality test per case after
    the first (one comparison layer), then the first case plus each other case's
    difference from it where the index names it (independent products: one round);
    bool cases combine by XOR of ANDs alike (at most one index test holds)."""
    def fn(which, *cases):
        which, *cases = jnp.broadcast_arrays(which, *cases)
        first, rest = cases[0], cases[1:]
        if first.dtype == jnp.bool_:
            out = first
            for k, case in enumerate(rest, 1):
                out = out ^ ((which == k) & (case ^ first))
            return out
        return first + sum(jnp.where(which == k, case - first, jnp.zeros_like(first))
                           for k, case in enumerate(rest, 1))
    return fn


_SELECT_BY_INDEX = _macro(_select_by_index)


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


def _comparison(rule, order):
    """A comparison rule with what is known without comparing folded: x == x (jnp.isnan
    writes x != x), since fixed point has no NaN; and a value against a known infinity
    (jnp.hypot and jnp.nan_to_num test ``x == inf``), since fixed-point values are
    finite. ``order`` names the comparison: "less", "less_equal", "greater",
    "greater_equal", "eq" or "ne". An operand only partly infinite compares as
    +-``_INFINITY`` there."""
    def folded(trace, eqn, ins, dev, loc):
        shape = eqn.outvars[0].aval.shape
        if ins[0] is ins[1]:
            return [_constant(trace, np.full(shape, order in ("eq", "less_equal",
                                                              "greater_equal")), dev, loc)]
        if not _all_known(trace, ins):
            for position, v in enumerate(ins):
                known = _known_value(trace, v)
                if known is not None and known.size and np.isinf(known).all() \
                        and len(np.unique(known)) == 1:
                    answer = _against_infinity(order, position, known.flat[0] > 0)
                    return [_constant(trace, np.full(shape, answer), dev, loc)]
        return _finite_cases(rule)(trace, eqn, ins, dev, loc)
    return folded


def _against_infinity(order, position, positive):
    """The value of a comparison whose operand at ``position`` is +inf (``positive``) or
    -inf and the other finite."""
    if order in ("eq", "ne"):
        return order == "ne"
    below = order in ("less", "less_equal")        # op(a, b) asks whether a is below b
    return (position == 1) == positive if below else (position == 0) == positive


def _always_finite(trace, eqn, ins, dev, loc):
    """Fixed-point values have no infinities or NaNs."""
    return [_constant(trace, np.ones(eqn.outvars[0].aval.shape, np.bool_), dev, loc)]


def _broadcasting(fn):
    """The ``_macro`` of ``fn``, its operands broadcast first: JAX's elementwise
    primitives take scalars beside arrays, the expansions want equal shapes."""
    return _macro(lambda params: lambda *xs: fn(*jnp.broadcast_arrays(*xs)))


def _signbit(trace, eqn, ins, dev, loc):
    """jnp.signbit, which JAX computes from the float's bits (a bitcast), and so
    jnp.copysign: x < 0, as fixed point has no -0.0 (JAX: signbit(-0.0) is True)."""
    return _inline_function(trace, lambda x: x < 0, ins, dev)


_LESS_EQUAL = _broadcasting(lambda a, b: _lax.bitwise_not(_lax.lt(b, a)))
_COMPARISONS = {
    "lt": _comparison(_elementwise("lt"), "less"),
    "le": _comparison(_LESS_EQUAL, "less_equal"),
    "gt": _comparison(_broadcasting(lambda a, b: _lax.lt(b, a)), "greater"),
    "ge": _comparison(_broadcasting(lambda a, b: _lax.bitwise_not(_lax.lt(a, b))),
                      "greater_equal"),
    "eq": _comparison(_elementwise("eq"), "eq"),
    "ne": _comparison(_broadcasting(lambda a, b: _lax.bitwise_not(_lax.eq(a, b))), "ne"),
    # the total orders jnp.sort and jnp.searchsorted compare by differ from < and <= only
    # at NaN and -0.0, which fixed point does not have
    "lt_to": _comparison(_elementwise("lt"), "less"),
    "le_to": _comparison(_LESS_EQUAL, "less_equal"),
}

register({
    "add": _elementwise("add"), "sub": _elementwise("sub"), "mul": _elementwise("mul"),
    "neg": _simple("neg"), "add_any": _elementwise("add"), "iota": _iota,
    "dot_general": _promoting("dot_general", _dot_attrs),
    "conv_general_dilated": _promoting("conv_general_dilated", _conv_attrs),
    "convert_element_type": _convert,
    "copy": _alias, "copy_p": _alias, "stop_gradient": _alias,
    **_COMPARISONS,
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
register_calls({"signbit": [(jnp.signbit, _signbit)]})
