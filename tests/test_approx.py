"""Tests of mixc.approx: error bounds (float32 and emulated 18-bit fixed point),
saturation outside the stated ranges, allowed primitives and MPC cost.

``FixedPoint`` below interprets a function's jaxpr the way mixc's arith2pc
protocol computes it: values are int64 ring elements round(v * 2^18); inputs
and constants are encoded with round-to-nearest; add/sub/neg/select/min/max/
comparisons/sums are exact; every product (secret or by a public constant)
is followed by a truncation by 2^18 -- TruncPr's stochastic rounding (error
< 1 unit), or floor/nearest for comparison runs; division by a public c is a
product by the encoded float32 1/c. It also checks TruncPr's precondition
that every product stays below 2^62 in the ring (2^26 in value).

``mpc_cost`` walks the jaxpr and counts secret x secret products (a select
with a secret predicate and a secret branch is one), their depth, and secret
comparisons (and their sequential layers).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from mixc import approx as A

F = 18
ONE = 1 << F


# ----------------------------------------------------------------- references

def _sigmoid64(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


REFERENCE = {
    "exp": np.exp,
    "log": np.log,
    "logistic": _sigmoid64,
    "tanh": np.tanh,
    "erf": np.vectorize(math.erf, otypes=[np.float64]),
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "reciprocal": lambda x: 1 / x,
    "atan": np.arctan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
}


def _top(hi):
    """hi, or for a range up to the ring's top 2^45 (which fixed point cannot hold) the
    float32 just below it."""
    return hi * (1 - 2.0 ** -20) if hi >= 2.0 ** 45 else hi


def _grid(name, n):
    lo, hi, _, _ = A.ERROR_BOUNDS[name]
    hi = _top(hi)
    if lo > 0:
        g = np.geomspace(lo, hi, n)
    elif name in ("logistic", "tanh", "erf", "atan", "asinh"):  # dense where it bends
        g = np.concatenate([np.linspace(-12, 12, n), np.geomspace(12, hi, 200), -np.geomspace(12, -lo, 200)])
    else:
        g = np.linspace(lo, hi, n)
    g = g.astype(np.float32)
    if name == "reciprocal":
        g = np.concatenate([g, -g])
    return g


# ----------------------------------------------------------------- fixed-point emulation

class FixedPointOverflow(AssertionError):
    pass


class FixedPoint:
    """Evaluate a jaxpr in emulated 2PC fixed point (see the module docstring)."""

    def __init__(self, rounding="stochastic", seed=0):
        self.rounding = rounding
        self.rng = np.random.default_rng(seed)
        self.max_product = 0.0

    @staticmethod
    def encode(v):
        return np.round(np.asarray(v, np.float64) * ONE).astype(np.int64)

    @staticmethod
    def decode(v):
        return np.asarray(v, np.float64) / ONE

    def _trunc(self, p):
        if self.rounding == "stochastic":
            u = self.rng.integers(0, ONE, size=np.shape(p), dtype=np.int64)
            return np.floor_divide(p + u, ONE)
        if self.rounding == "floor":
            return np.floor_divide(p, ONE)
        return np.floor_divide(p + ONE // 2, ONE)

    def _product(self, a, b):
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        mag = np.abs(a.astype(np.float64)) * np.abs(b.astype(np.float64))
        peak = float(mag.max()) if mag.size else 0.0
        self.max_product = max(self.max_product, peak / ONE / ONE)
        if peak >= 2.0 ** 62:
            raise FixedPointOverflow(f"product of magnitude 2^{math.log2(peak) - 2 * F:.1f} "
                                     f"exceeds TruncPr's 2^{62 - 2 * F}")
        return self._trunc(a * b)

    def _read(self, env, v):
        if hasattr(v, "val") and not hasattr(v, "count"):       # Literal
            val = np.asarray(v.val)
            return val if val.dtype == np.bool_ else self.encode(val)
        return env[v]

    def run(self, closed, *args):
        """Run a ClosedJaxpr on float64 inputs; returns decoded float64 outputs."""
        ins = [self.encode(a) for a in args]
        outs = self._eval(closed.jaxpr, [self.encode(c) for c in closed.consts], ins)
        return [self.decode(o) if np.asarray(o).dtype != np.bool_ else o for o in outs]

    def _eval(self, jaxpr, consts, args):
        env = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [self._read(env, v) for v in eqn.invars]
            outs = self._apply(eqn, ins)
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [self._read(env, v) for v in jaxpr.outvars]

    def _apply(self, eqn, ins):
        name, p = eqn.primitive.name, eqn.params
        out_shape = tuple(eqn.outvars[0].aval.shape) if eqn.outvars else ()
        if name in ("jit", "pjit", "closed_call", "core_call"):
            sub = p["jaxpr"]
            return self._eval(sub.jaxpr, [self.encode(c) for c in sub.consts], ins)
        if name == "custom_jvp_call":
            sub = p["call_jaxpr"]
            return self._eval(sub.jaxpr, [self.encode(c) for c in sub.consts], ins)
        x = ins[0] if ins else None
        if name == "add":
            r = ins[0] + ins[1]
        elif name == "sub":
            r = ins[0] - ins[1]
        elif name == "neg":
            r = -x
        elif name == "mul":
            r = self._product(ins[0], ins[1])
        elif name == "div":
            c = np.float32(1.0) / np.float32(self.decode(ins[1]))
            r = self._product(ins[0], self.encode(c))
        elif name == "integer_pow":
            r = x
            for _ in range(p["y"] - 1):
                r = self._product(r, x)
        elif name in ("lt", "gt", "le", "ge", "eq", "ne"):
            r = {"lt": np.less, "gt": np.greater, "le": np.less_equal, "ge": np.greater_equal,
                 "eq": np.equal, "ne": np.not_equal}[name](ins[0], ins[1])
        elif name == "xor":             # of comparison bits: local on boolean shares
            r = np.logical_xor(ins[0], ins[1])
        elif name == "select_n":
            pred, cases = np.asarray(ins[0]), [np.asarray(c) for c in ins[1:]]
            r = np.choose(pred.astype(np.int64), np.broadcast_arrays(*cases))
        elif name == "max":
            r = np.maximum(ins[0], ins[1])
        elif name == "min":
            r = np.minimum(ins[0], ins[1])
        elif name == "abs":
            r = np.abs(x)
        elif name == "sign":
            r = np.sign(x) * ONE
        elif name == "reduce_sum":
            r = np.sum(x, axis=tuple(p["axes"]))
        elif name == "reduce_max":
            r = np.max(x, axis=tuple(p["axes"]))
        elif name == "broadcast_in_dim":
            shape, dims = tuple(p["shape"]), tuple(p["broadcast_dimensions"])
            src = np.asarray(x)
            expanded = [1] * len(shape)
            for d, s in zip(dims, src.shape):
                expanded[d] = s
            r = np.broadcast_to(src.reshape(expanded), shape)
        elif name in ("reshape", "squeeze", "expand_dims"):
            r = np.reshape(x, out_shape)
        elif name == "slice":
            strides = p["strides"] or (1,) * np.ndim(x)
            r = np.asarray(x)[tuple(slice(a, b, c) for a, b, c in
                                    zip(p["start_indices"], p["limit_indices"], strides))]
        elif name == "floor":           # exact on the fixed-point value (bool2pc)
            r = np.floor_divide(x, ONE) * ONE
        elif name == "convert_element_type":
            src = np.asarray(x)
            new = np.dtype(p["new_dtype"])
            if src.dtype == np.bool_ and new != np.bool_:
                r = src.astype(np.int64) * ONE
            elif np.issubdtype(new, np.floating):
                r = src
            else:
                raise NotImplementedError(f"convert_element_type to {new}")
        elif name in ("copy", "copy_p", "stop_gradient", "optimization_barrier"):
            r = x
        elif name == "stack":
            r = np.stack(ins, axis=p["axis"])
        elif name == "concatenate":
            r = np.concatenate(ins, axis=p["dimension"])
        elif name == "dot_general":
            # powers @ public coefficients: one product, one truncation (as arith2pc does)
            (lc, rc), _ = p["dimension_numbers"]
            summed = np.tensordot(ins[0], ins[1], axes=(tuple(lc), tuple(rc)))
            peak = float(np.max(np.abs(summed))) if summed.size else 0.0
            self.max_product = max(self.max_product, peak / ONE / ONE)
            r = self._trunc(summed)
        else:
            raise NotImplementedError(f"fixed-point emulation of {name}")
        return [np.asarray(r)]


_JAXPRS = {}


def fixed_point(fn, *args, rounding="stochastic", seed=0, emulator=None):
    """fn evaluated in emulated 18-bit fixed point on float64 arrays ``args``."""
    key = (fn, tuple(np.shape(a) for a in args))
    if key not in _JAXPRS:
        _JAXPRS[key] = jax.make_jaxpr(fn)(*[np.asarray(a, np.float32) for a in args])
    closed = _JAXPRS[key]
    fp = emulator or FixedPoint(rounding, seed)
    (out,) = fp.run(closed, *args)
    return out


def encoded(x):
    """x as the MPC sees it: rounded to a multiple of 2^-18."""
    return np.round(np.asarray(x, np.float64) * ONE) / ONE


# ----------------------------------------------------------------- jaxpr checks and costs

ALLOWED = {"add", "sub", "mul", "neg", "div", "lt", "gt", "le", "ge", "eq", "ne", "select_n",
           "max", "min", "abs", "sign", "reduce_sum", "reduce_max", "broadcast_in_dim", "reshape",
           "squeeze", "expand_dims", "convert_element_type", "integer_pow", "pjit", "jit",
           "custom_jvp_call", "stop_gradient", "copy", "copy_p",
           "stack", "dot_general",  # stack + dot with public coefficients: one truncation
           "concatenate", "slice",  # one approximation on [x, -x] stacked
           "xor"}                   # of comparison bits (exp's clamp): local
COMPARISONS = {"lt", "gt", "le", "ge", "eq", "ne"}


def _is_literal(v):
    return hasattr(v, "val") and not hasattr(v, "count")


def _subjaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr"):
        if key in eqn.params:
            sub = eqn.params[key]
            return getattr(sub, "jaxpr", sub)
    return None


def mpc_cost(fn, *args):
    """{'products', 'depth', 'comparisons', 'layers', 'primitives'} of fn's jaxpr with
    the arguments secret (literals and constants public). Counts are per element of the
    first argument: an op on k stacked copies of it (exp of [x, -x]) counts k times."""
    closed = jax.make_jaxpr(fn)(*args)
    elements = max(1, int(np.prod(np.shape(args[0]))))
    stats = {"products": 0, "comparisons": 0, "primitives": set()}

    def walk(jaxpr, in_info):
        info = {}
        for v, i in zip(jaxpr.invars, in_info):
            info[v] = i
        for v in jaxpr.constvars:
            info[v] = (False, 0, 0)

        def get(v):
            return (False, 0, 0) if _is_literal(v) else info[v]

        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            stats["primitives"].add(name)
            ins = [get(v) for v in eqn.invars]
            secret = any(i[0] for i in ins)
            depth = max((i[1] for i in ins), default=0)
            layer = max((i[2] for i in ins), default=0)
            sub = _subjaxpr(eqn)
            if sub is not None:
                outs = walk(sub, ins)
                for v, o in zip(eqn.outvars, outs):
                    info[v] = o
                continue
            if name == "div":
                assert not ins[1][0], "div by a secret value"
            copies = max(1, int(np.prod(eqn.outvars[0].aval.shape)) // elements)
            if secret and name == "mul" and ins[0][0] and ins[1][0]:
                stats["products"] += copies
                depth += 1
            elif secret and name == "select_n" and ins[0][0] and any(i[0] for i in ins[1:]):
                stats["products"] += copies
                depth += 1
            elif secret and name in COMPARISONS | {"sign"}:
                stats["comparisons"] += copies
                layer += 1
            elif secret and name in ("min", "max", "abs"):
                stats["comparisons"] += 1
                stats["products"] += 1
                layer += 1
                depth += 1
            elif secret and name == "reduce_max":
                n = int(np.prod(eqn.invars[0].aval.shape)) // max(1, int(np.prod(eqn.outvars[0].aval.shape)))
                levels = math.ceil(math.log2(n)) if n > 1 else 0
                stats["comparisons"] += n - 1
                stats["products"] += n - 1
                layer += levels
                depth += levels
            for v in eqn.outvars:
                info[v] = (secret, depth, layer)
        return [get(v) for v in jaxpr.outvars]

    outs = walk(closed.jaxpr, [(True, 0, 0)] * len(closed.jaxpr.invars))
    stats["depth"] = max(o[1] for o in outs)
    stats["layers"] = max(o[2] for o in outs)
    return stats


# documented (products, depth, comparisons, comparison layers)
DOCUMENTED_COST = {
    "exp": (10, 8, 4, 1),
    "log": (8, 5, 32, 1),
    "reciprocal": (10, 7, 21, 2),
    "sqrt": (9, 6, 32, 1),
    "rsqrt": (8, 6, 32, 1),
    "logistic": (7, 6, 3, 1),
    "tanh": (7, 6, 3, 1),
    "erf": (7, 6, 3, 1),
    "atan": (17, 13, 11, 2),
    "asin": (15, 12, 12, 2),
    "acos": (15, 12, 12, 2),
    "sinh": (23, 8, 6, 1),
    "cosh": (16, 7, 4, 1),
    "asinh": (15, 12, 21, 3),
    "acosh": (20, 11, 31, 3),
    "atanh": (11, 6, 12, 2),
}


@pytest.mark.parametrize("name", sorted(A.APPROXIMATIONS))
def test_documented_cost(name):
    cost = mpc_cost(A.APPROXIMATIONS[name], jnp.ones((4,), jnp.float32))
    got = (cost["products"], cost["depth"], cost["comparisons"], cost["layers"])
    assert got == DOCUMENTED_COST[name], cost


def test_div_cost():
    cost = mpc_cost(A.div, jnp.ones((4,), jnp.float32), jnp.ones((4,), jnp.float32))
    assert (cost["products"], cost["depth"], cost["comparisons"], cost["layers"]) == (32, 11, 39, 3)
    narrow = mpc_cost(lambda a, b: A.div(a, b, lo=2.0 ** -8, hi=2.0 ** 12),
                      jnp.ones((4,), jnp.float32), jnp.ones((4,), jnp.float32))
    assert (narrow["products"], narrow["depth"], narrow["comparisons"]) == (10, 8, 12)


def test_atan2_and_tan_cost():
    cost = mpc_cost(A.atan2, jnp.ones((4,), jnp.float32), jnp.ones((4,), jnp.float32))
    assert (cost["products"], cost["depth"], cost["comparisons"], cost["layers"]) == (20, 14, 25, 3)
    cost = mpc_cost(A.tan, jnp.ones((4,), jnp.float32))   # plus sin's two floors
    assert (cost["products"], cost["depth"], cost["comparisons"], cost["layers"]) == (22, 14, 6, 2)


def test_softmax_cost_after_max():
    # row of 10: 9 comparisons for the max, 1 for exp's clamp, 1 for the sum's reduction
    cost = mpc_cost(A.softmax, jnp.ones((3, 10), jnp.float32))
    assert cost["comparisons"] == 9 + 1 + 1
    assert cost["depth"] == math.ceil(math.log2(10)) + 14
    cost = mpc_cost(A.log_softmax, jnp.ones((3, 10), jnp.float32))
    assert cost["depth"] == math.ceil(math.log2(10)) + 11
    assert mpc_cost(A.softmax, jnp.ones((2, 3), jnp.float32))["comparisons"] == 2 + 1


BINARY = {"div", "atan2"}


def _all_functions():
    fns = dict(A.APPROXIMATIONS)
    fns["div"] = A.div
    fns["atan2"] = A.atan2
    fns["softmax"] = A.softmax
    fns["log_softmax"] = A.log_softmax
    fns["softmax_axis0"] = lambda x: A.softmax(x, axis=0)
    return fns


@pytest.mark.parametrize("name", sorted(_all_functions()))
def test_only_mpc_friendly_primitives(name):
    fn = _all_functions()[name]
    args = [jnp.ones((3, 5), jnp.float32)] * (2 if name in BINARY else 1)
    cost = mpc_cost(fn, *args)          # asserts no div by a secret
    assert cost["primitives"] <= ALLOWED, cost["primitives"] - ALLOWED


def test_tan_adds_only_sins_floor():
    assert mpc_cost(A.tan, jnp.ones((3, 5), jnp.float32))["primitives"] <= ALLOWED | {"floor"}


def test_poly_depth_and_products():
    for deg, (products, depth) in {2: (1, 1), 4: (3, 2), 6: (4, 3), 8: (4, 3), 12: (5, 4)}.items():
        coeffs = [1.0 / (k + 1) for k in range(deg + 1)]
        cost = mpc_cost(lambda t: A._poly(t, coeffs), jnp.ones((2,), jnp.float32))
        assert (cost["products"], cost["depth"]) == (products, depth), (deg, cost)
        t = np.linspace(-1, 1, 11).astype(np.float32)
        np.testing.assert_allclose(A._poly(jnp.asarray(t), coeffs), np.polyval(coeffs[::-1], t),
                                   rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- error bounds, float32

_JIT = {name: jax.jit(fn) for name, fn in A.APPROXIMATIONS.items()}


def _check(name, x, y, fixed_point=False):
    ref = REFERENCE[name](np.asarray(x, np.float64))
    err = np.abs(np.asarray(y, np.float64) - ref)
    tol = A.allowed_error(name, ref, fixed_point=fixed_point)
    bad = err > tol
    assert not bad.any(), (f"{name}: error {err[bad][0]:.3g} > {tol[bad][0]:.3g} at x={np.asarray(x)[bad][0]!r}"
                           f" ({int(bad.sum())} points)")


@pytest.mark.parametrize("name", sorted(A.ERROR_BOUNDS))
def test_dense_grid_float32(name):
    x = _grid(name, 200_001)
    y = _JIT[name](x)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    _check(name, x, y)


@pytest.mark.parametrize("name", sorted(A.ERROR_BOUNDS))
@pytest.mark.parametrize("rounding", ["stochastic", "floor"])
def test_dense_grid_fixed_point(name, rounding):
    x = encoded(_grid(name, 40_001))
    y = fixed_point(A.APPROXIMATIONS[name], x, rounding=rounding)
    _check(name, x, y, fixed_point=True)


def test_cores_at_every_fixed_point_value():
    """The [1, 4) polynomial cores at every fourth representable m (3 * 2^16 values)."""
    m = np.arange(ONE, 4 * ONE, 4, dtype=np.int64) / ONE
    for name, f in (("log", np.log), ("reciprocal", lambda v: 1 / v), ("sqrt", np.sqrt),
                    ("rsqrt", lambda v: 1 / np.sqrt(v))):
        y = fixed_point(A.APPROXIMATIONS[name], m, rounding="stochastic")
        ref = f(m)
        _check(name, m, y, fixed_point=True)
        assert np.abs(y - ref).max() <= A.allowed_error(name, ref, fixed_point=True).max()


def _div_bound(a, b, fixed_point):
    q = np.abs(a / b)
    extra = 2.0 ** -17 * (1 + 1 / (4 * np.abs(b))) if fixed_point else 0.0
    return 1.5e-5 * q + extra


def _div_inputs(seed, n=40_000):
    """|b| log-uniform over every nonzero fixed-point magnitude, either sign; |a| log-uniform
    on [1e-3, 2^45) with |a/b| < 2^44 (div's domain; as encoded), and the ends of a's tiers
    (2^21, 2^39, 2^44, the ring's top) and just below them."""
    rng = np.random.default_rng(seed)
    b = np.geomspace(2.0 ** -18, _top(2.0 ** 45), n) * rng.choice([-1.0, 1.0], n)
    a = rng.choice([-1.0, 1.0], n) * np.exp(rng.uniform(math.log(1e-3), math.log(_top(2.0 ** 45)), n))
    edges = np.array([2.0 ** 21, 2.0 ** 39, 2.0 ** 44, _top(2.0 ** 45)])
    at_edges = rng.choice(np.concatenate([edges, edges - 2.0 ** -18 * edges / 2 ** 22]), n // 8)
    a[: n // 8] = at_edges * rng.choice([-1.0, 1.0], n // 8)
    keep = np.abs(encoded(a) / encoded(b)) < 2.0 ** 43.9
    return a[keep], b[keep]


@pytest.mark.parametrize("rounding", ["stochastic", "floor"])
def test_div(rounding):
    a, b = _div_inputs(seed=3)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    y = np.asarray(jax.jit(A.div)(a32, b32), np.float64)
    ref = a32.astype(np.float64) / b32
    assert (np.abs(y - ref) <= _div_bound(a32, b32.astype(np.float64), False)).all()
    ae, be = encoded(a), encoded(b)
    yf = fixed_point(A.div, ae, be, rounding=rounding)
    assert (np.abs(yf - ae / be) <= _div_bound(ae, be, True)).all()
    # 1000/4000: a * reciprocal(b) would multiply reciprocal's rounding (1/4000 is 66 units
    # of 2^-18) by 1000; div keeps the quotient to a few units
    a, b = encoded([1000.0] * 64), encoded([4000.0] * 64)
    assert np.abs(fixed_point(A.div, a, b) - 0.25).max() < 2e-5
    naive = fixed_point(lambda u, v: u * A.reciprocal(v), a, b)
    assert np.abs(naive - 0.25).max() > 5e-4


# ----------------------------------------------------------------- hypothesis

def _in_range(name):
    lo, hi, _, _ = A.ERROR_BOUNDS[name]
    if lo > 0:   # log-uniform
        return st.floats(math.log2(lo), math.log2(hi)).map(
            lambda e: float(np.float32(min(2.0 ** e, _top(hi)))))
    # XLA flushes float32 subnormals to zero: sinh's relative bound would not hold at 1e-40
    return st.floats(lo, hi, width=32, allow_subnormal=False)


@pytest.mark.parametrize("name", sorted(A.ERROR_BOUNDS))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_random_inputs_in_range(name, data):
    xs = data.draw(st.lists(_in_range(name), min_size=16, max_size=16))
    x = np.asarray(xs, np.float32)
    if name == "reciprocal" and data.draw(st.booleans()):
        x = -x
    _check(name, x, _JIT[name](x))
    xe = encoded(x)
    _check(name, xe, fixed_point(A.APPROXIMATIONS[name], xe, seed=data.draw(st.integers(0, 2**31))),
           fixed_point=True)


# ----------------------------------------------------------------- outside the ranges

WIDE = np.concatenate([np.linspace(-2.0 ** 15, 2.0 ** 15, 40_001), [-2.0 ** 15, 2.0 ** 15, 0.0],
                       np.geomspace(1e-6, 2 ** 15, 2001), -np.geomspace(1e-6, 2 ** 15, 2001)]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(_all_functions()))
def test_no_nan_or_inf_and_no_fixed_point_overflow(name):
    fn = _all_functions()[name]
    rows = WIDE[: WIDE.size // 6 * 6].reshape(-1, 6)
    args = (WIDE, WIDE[::-1]) if name in BINARY else ((rows,) if "softmax" in name else (WIDE,))
    if name == "div":   # its domain: a quotient above 2^26 cannot be a product's result
        a, b = encoded(args[0]), encoded(args[1])
        keep = (np.abs(a) < 2.0 ** 26 * np.abs(b)) | (b == 0)
        args = (args[0][keep], args[1][keep])
    y = np.asarray(jax.jit(fn)(*args))
    assert np.isfinite(y).all()
    emu = FixedPoint()
    fixed_point(fn, *[encoded(a) for a in args], emulator=emu)   # raises on TruncPr overflow
    assert emu.max_product < 2.0 ** 26


# every representable magnitude, either sign, and the float32 just below 2^45
RING = np.concatenate([[0.0], np.geomspace(2.0 ** -18, _top(2.0 ** 45), 4001)])
RING = np.concatenate([RING, -RING])


@pytest.mark.parametrize("name", ["exp", "log", "reciprocal", "sqrt", "rsqrt", "div"])
def test_no_fixed_point_overflow_up_to_the_ring_top(name):
    """The full-range reductions keep every product below 2^26 (and every intermediate in
    the ring) for any input fixed point holds; exp's clamp, too."""
    args = (np.linspace(-1.0, 1.0, RING.size), RING) if name == "div" else (RING,)
    fn = _all_functions()[name]
    assert np.isfinite(np.asarray(jax.jit(fn)(*[a.astype(np.float32) for a in args]))).all()
    emu = FixedPoint()
    fixed_point(fn, *[encoded(a) for a in args], emulator=emu)
    assert emu.max_product < 2.0 ** 26


@pytest.mark.parametrize("x,expected", [
    (-100.0, 0.0), (-1e4, 0.0), (-2.0 ** 15, 0.0), (-16.5, 0.0), (30.5, math.exp(30)),
    (100.0, math.exp(30)), (2.0 ** 15, math.exp(30)), (-2.0 ** 44, 0.0), (2.0 ** 44, math.exp(30)),
    # in range, either side of the shifts by 13 ln 2 at 11 and 20
    (10.99, math.exp(10.99)), (11.0, math.exp(11)), (19.99, math.exp(19.99)), (20.0, math.exp(20)),
])
def test_exp_saturates(x, expected):
    y = float(A.exp(np.float32(x)))
    assert abs(y - expected) <= 1e-4 * expected + 2e-7
    yf = float(fixed_point(A.exp, np.array([x]))[0])
    assert abs(yf - expected) <= 1e-4 * expected + A.FIXED_POINT_ATOL


@pytest.mark.parametrize("name,x,expected", [
    # below 2^-18 (in fixed point: 0 or negative), the value at 2^-18 (sqrt: 0)
    ("log", 0.0, -18 * math.log(2)), ("log", -5.0, -18 * math.log(2)),
    ("log", 1e-6, -18 * math.log(2)), ("log", -2.0 ** 44, -18 * math.log(2)),
    ("reciprocal", 0.0, 2.0 ** 18), ("reciprocal", 1e-6, 2.0 ** 18),
    ("sqrt", 0.0, 0.0), ("sqrt", -4.0, 0.0), ("sqrt", -2.0 ** 44, 0.0), ("sqrt", 1e-7, 0.0),
    ("rsqrt", 0.0, 2.0 ** 9), ("rsqrt", -3.0, 2.0 ** 9), ("rsqrt", 1e-7, 2.0 ** 9),
    # in range, at the ends and beyond 2^-16 in the results: reciprocal and rsqrt within 2^-17
    ("log", 2.0 ** -18, -18 * math.log(2)), ("log", 2.0 ** 44, 44 * math.log(2)),
    ("sqrt", 2.0 ** -18, 2.0 ** -9), ("sqrt", 2.0 ** 44, 2.0 ** 22), ("sqrt", 2.0 ** 15, 2.0 ** 7.5),
    ("reciprocal", 2.0 ** -18, 2.0 ** 18), ("reciprocal", -2.0 ** 20, -(2.0 ** -20)),
    ("reciprocal", 1e5, 1e-5), ("reciprocal", -2.0 ** 44, 0.0),
    ("rsqrt", 2.0 ** -18, 2.0 ** 9), ("rsqrt", 2.0 ** 31, 2.0 ** -15.5), ("rsqrt", 2.0 ** 44, 2.0 ** -22),
    ("logistic", 1e4, 1.0), ("logistic", -1e4, 0.0), ("logistic", 2.0 ** 15, 1.0), ("logistic", 9.0, 1.0),
    ("tanh", 1e4, 1.0), ("tanh", -1e4, -1.0), ("tanh", -2.0 ** 15, -1.0),
    ("erf", 1e4, 1.0), ("erf", -3.0, -1.0), ("erf", -2.0 ** 15, -1.0),
    ("atan", 2.0 ** 20, math.atan(2.0 ** 20)), ("atan", -1e6, math.atan(-1e6)), ("atan", 0.0, 0.0),
    ("asin", 1.0, math.pi / 2), ("asin", -1.0, -math.pi / 2), ("asin", 1.5, math.pi / 2),
    ("asin", -2.0 ** 15, -math.pi / 2), ("asin", 0.0, 0.0),
    ("acos", 1.0, 0.0), ("acos", -1.0, math.pi), ("acos", 3.0, 0.0), ("acos", -2.0 ** 15, math.pi),
    ("sinh", 13.0, math.exp(12) / 2), ("sinh", -2.0 ** 15, -math.exp(12) / 2),
    ("sinh", 0.0, 0.0),
    ("cosh", -13.0, math.exp(12) / 2), ("cosh", 2.0 ** 15, math.exp(12) / 2),
    ("asinh", 2.0 ** 20, 20 * math.log(2)), ("asinh", -2.0 ** 22, -20 * math.log(2)),
    ("acosh", 1.0, 0.0), ("acosh", 0.5, 0.0), ("acosh", -2.0 ** 15, 0.0),
    ("acosh", 2.0 ** 21, 20 * math.log(2)),
    ("atanh", 1.0, 9.5 * math.log(2)), ("atanh", -1.0, -9.5 * math.log(2)),
    ("atanh", 2.0 ** 15, 9.5 * math.log(2)), ("atanh", 0.0, 0.0),
])
def test_saturation_outside_range(name, x, expected):
    fn = A.APPROXIMATIONS[name]
    tol = float(A.allowed_error(name, [expected])[0])
    assert abs(float(fn(np.float32(x))) - expected) <= tol + 1e-7
    yf = float(fixed_point(fn, encoded([x]))[0])
    assert abs(yf - expected) <= float(A.allowed_error(name, [expected], fixed_point=True)[0])


def test_narrowed_sqrt_below_range_is_the_chord():
    x = np.geomspace(1e-6, 2.0 ** -8, 1001).astype(np.float32)
    y = np.asarray(jax.jit(lambda v: A.sqrt(v, lo=2.0 ** -8, hi=2.0 ** 14))(x))
    np.testing.assert_allclose(y, 16 * x.astype(np.float64), rtol=1e-5, atol=1e-7)
    assert np.abs(y - np.sqrt(x.astype(np.float64))).max() <= 2.0 ** -6


def test_sigmoid_and_tanh_symmetry():
    x = np.concatenate([[0.0, -0.0, 1e-6], np.linspace(-20, 20, 4001)]).astype(np.float32)
    s, t = np.asarray(_JIT["logistic"](x)), np.asarray(_JIT["tanh"](x))
    assert s[0] == 0.5 and t[0] == 0.0 and s[1] == 0.5
    np.testing.assert_allclose(s + np.asarray(_JIT["logistic"](-x)), 1.0, atol=1e-6)
    np.testing.assert_allclose(t, -np.asarray(_JIT["tanh"](-x)), atol=1e-6)
    assert np.all(np.diff(s[3:]) >= -1e-5)     # monotone but for 5e-6 wiggles near the clamp
    for fn, zero in ((A.sigmoid, 0.5), (A.tanh, 0.0)):
        assert fixed_point(fn, np.zeros(3))[0] == zero


def test_sigmoid_and_tanh_on_all_of_r_in_fixed_point():
    x = encoded(np.concatenate([np.linspace(-40, 40, 80_001), [-1e6, 1e6]]))
    _check("logistic", x, fixed_point(A.sigmoid, x), fixed_point=True)
    _check("tanh", x, fixed_point(A.tanh, x), fixed_point=True)


# ----------------------------------------------------------------- trigonometric and hyperbolic

ATAN2_ERROR = 2.5e-5


def _angle_error(got, y, x):
    d = np.abs(np.asarray(got, np.float64) - np.arctan2(y, x))
    return np.minimum(d, 2 * np.pi - d)      # -pi and pi are the same angle


def _in_atan2_box(y, x):
    """max(|x|, |y|) in [2^-18, 2^18], or both 0."""
    big = np.maximum(np.abs(y), np.abs(x))
    keep = ((big >= 2.0 ** -18) & (big <= 2.0 ** 18)) | (big == 0)
    return y[keep], x[keep]


def _atan2_inputs(n, seed):
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-np.pi, np.pi, n)
    radius = np.exp(rng.uniform(np.log(2.0 ** -18), np.log(2.0 ** 18), n))
    y, x = radius * np.sin(angle), radius * np.cos(angle)
    axes = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0], [3.0, 3.0],
                     [-3.0, -3.0], [2.0 ** 18, -2.0 ** 18], [-2.0 ** -18, 2.0 ** -18]])
    return np.concatenate([y, axes[:, 0]]), np.concatenate([x, axes[:, 1]])


@pytest.mark.parametrize("rounding", ["stochastic", "floor"])
def test_atan2(rounding):
    y, x = _atan2_inputs(40_000, seed=5)
    y32, x32 = _in_atan2_box(y.astype(np.float32), x.astype(np.float32))
    got = jax.jit(A.atan2)(y32, x32)
    assert (_angle_error(got, y32.astype(np.float64), x32) <= ATAN2_ERROR).all()
    ye, xe = _in_atan2_box(encoded(y), encoded(x))
    assert (_angle_error(fixed_point(A.atan2, ye, xe, rounding=rounding), ye, xe)
            <= ATAN2_ERROR).all()


def test_atan2_axes_and_clamping():
    y = np.array([0.0, 0.0, 1.0, -1.0, 0.0, 2.0 ** 20, 2.0 ** 20, -1e6], np.float32)
    x = np.array([0.0, -5.0, 0.0, 0.0, 7.0, 2.0 ** 20, -3.0, -1e6], np.float32)
    # beyond +-2^18 the clamped pair's angle: (2^18, -3) and (-2^18, -2^18)
    want = [0.0, math.pi, math.pi / 2, -math.pi / 2, 0.0, math.pi / 4,
            math.atan2(2.0 ** 18, -3.0), -3 * math.pi / 4]
    for got in (jax.jit(A.atan2)(y, x), fixed_point(A.atan2, encoded(y), encoded(x))):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=ATAN2_ERROR)
    assert float(A.atan2(np.float32(0.0), np.float32(0.0))) == 0.0


def _tan_bound(x):
    return (2.5e-5 + 2.0 ** -17 * np.abs(x)) * (1 + np.abs(np.tan(x))) / np.abs(np.cos(x))


@pytest.mark.parametrize("rounding", ["stochastic", "floor"])
def test_tan_within_its_bound_away_from_poles(rounding):
    x = np.linspace(-10, 10, 40_001)
    x32 = x.astype(np.float32)
    for got, at in ((jax.jit(A.tan)(x32), x32.astype(np.float64)),
                    (fixed_point(A.tan, encoded(x), rounding=rounding), encoded(x))):
        err = np.abs(np.asarray(got, np.float64) - np.tan(at))
        away = np.abs(np.cos(at)) >= 2.0 ** -8
        assert (err[away] <= _tan_bound(at[away])).all()
        assert np.isfinite(got).all() and np.abs(got).max() <= 256 * (1 + 1e-4)


def test_tan_saturates_at_the_poles():
    poles = np.array([math.pi / 2, -math.pi / 2, 3 * math.pi / 2])
    pole = poles + np.array([[0.0], [1e-3], [-1e-3]])
    got = fixed_point(A.tan, encoded(pole.ravel()))
    assert np.isfinite(got).all() and np.abs(got).max() <= 256 * (1 + 1e-4)
    assert np.abs(got).min() > 200          # |tan| > 1000 there, cut at 256


def test_tan_keeps_products_in_range_up_to_2_20():
    x = np.linspace(-2.0 ** 20, 2.0 ** 20, 20_001)
    assert np.isfinite(jax.jit(A.tan)(x.astype(np.float32))).all()
    emu = FixedPoint()
    fixed_point(A.tan, encoded(x), emulator=emu)   # raises on TruncPr overflow
    assert emu.max_product < 2.0 ** 26


@pytest.mark.parametrize("rounding", ["stochastic", "floor"])
def test_steep_ends_at_every_fixed_point_value(rounding):
    """asin, acos and atanh at +-(1 - k 2^-18), acosh at 1 + k 2^-18 (k = 0 .. 4096):
    where they are steepest, each within its bound of the function at the encoded input."""
    k = np.arange(0, 4097) / ONE
    for name, x in (("asin", 1 - k), ("asin", k - 1), ("acos", 1 - k), ("acos", k - 1),
                    ("atanh", 1 - k[1:]), ("atanh", k[1:] - 1), ("acosh", 1 + k)):
        _check(name, x, fixed_point(A.APPROXIMATIONS[name], x, rounding=rounding),
               fixed_point=True)


def test_symmetries():
    x = np.concatenate([np.linspace(-20, 20, 4001), [0.0, 1e-6, 2.0 ** 15]]).astype(np.float32)
    unit = np.linspace(-1, 1, 4001).astype(np.float32)
    # odd (cosh even) by construction, up to float32's rounding of exp in another lane; at 0
    # sign(0) = +1: asinh(0) and atanh(0) are log's error at 1 (abs bound), the others 0
    for name, inputs in (("atan", x), ("sinh", x), ("asinh", x), ("asin", unit), ("atanh", unit)):
        fn = _JIT[name]
        inputs = inputs[inputs != 0]
        np.testing.assert_allclose(fn(-inputs), -fn(inputs), rtol=3e-7, atol=0, err_msg=name)
    np.testing.assert_allclose(_JIT["cosh"](-x), _JIT["cosh"](x), rtol=3e-7, atol=0)
    for name in ("atan", "asin", "sinh"):
        assert float(_JIT[name](np.float32(0.0))) == 0.0, name
        assert fixed_point(A.APPROXIMATIONS[name], np.zeros(3))[0] == 0.0, name


def test_ranges_are_adjustable():
    x = np.geomspace(0.5, 60.0, 2001).astype(np.float32)
    narrow = jax.jit(lambda v: A.reciprocal(v, lo=0.5, hi=64.0))
    assert mpc_cost(narrow, jnp.ones(3, jnp.float32))["comparisons"] == 1 + 5   # sign + 4^-1 .. 4^3
    _check("reciprocal", x, narrow(x))
    assert abs(float(narrow(np.float32(1000.0))) - 1 / 64) < 1e-6
    _check("log", x, jax.jit(lambda v: A.log(v, lo=0.25, hi=64.0))(x))
    np.testing.assert_allclose(A.div(np.float32(3.0), np.float32(-4.0)), -0.75, rtol=2e-5)
    with pytest.raises(ValueError):
        A.log(x, lo=0.0)
    with pytest.raises(ValueError):            # 4^-j / 16 would fall below 2^-18
        jax.make_jaxpr(lambda v: A.reciprocal(v, hi=4.0 ** 9))(x)
    with pytest.raises(ValueError):
        jax.make_jaxpr(A.softmax)(jax.ShapeDtypeStruct((1, 70_000), jnp.float32))


def test_shapes_and_dtypes():
    x = jnp.full((2, 3, 4), 0.75, jnp.float32)
    for name in A.APPROXIMATIONS:
        y = _JIT[name](x)
        assert y.shape == x.shape and y.dtype == jnp.float32, name
    for name in ("exp", "logistic"):
        y = A.APPROXIMATIONS[name](0.75)                                # Python scalar, eager
        assert y.shape == () and y.dtype == jnp.float32, name
        assert np.isclose(float(y), REFERENCE[name](0.75), rtol=1e-3), name


# ----------------------------------------------------------------- softmax

def _softmax64(x, axis):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax64(x, axis, z_dtype=np.float64):
    """(z_dtype: float32 rounds x - max(x) as the float32 computation does)"""
    x = np.asarray(x)
    z = (x - x.max(axis=axis, keepdims=True)).astype(z_dtype).astype(np.float64)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("shape,axis,scale", [
    ((64, 10), 0, 3.0), ((4, 3, 7), 1, 20.0), ((32, 2), -1, 1e4), ((5,), 0, 0.0),
    ((16, 4096), -1, 2.0),
])
def test_softmax_matches_reference(shape, axis, scale):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    ref = _softmax64(x, axis)
    y = np.asarray(jax.jit(lambda v: A.softmax(v, axis=axis))(x), np.float64)
    assert np.abs(y - ref).max() <= A.SOFTMAX_ERROR
    assert np.abs(y - np.asarray(jax.nn.softmax(x, axis=axis))).max() <= A.SOFTMAX_ERROR + 1e-6
    n = shape[axis]
    assert np.abs(y.sum(axis=axis) - 1).max() <= max(n * 1e-5, A.SOFTMAX_ERROR)
    xe = encoded(x)
    yf = fixed_point(lambda v: A.softmax(v, axis=axis), xe)
    ref = _softmax64(xe, axis)
    assert np.abs(yf - ref).max() <= A.SOFTMAX_ERROR
    assert np.abs(yf.sum(axis=axis) - 1).max() <= max(n * 2e-5, 4 * A.SOFTMAX_ERROR)
    lsm = np.asarray(jax.jit(lambda v: A.log_softmax(v, axis=axis))(x), np.float64)
    assert np.abs(lsm - _log_softmax64(x, axis, np.float32)).max() <= A.LOG_SOFTMAX_ERROR
    lsf = fixed_point(lambda v: A.log_softmax(v, axis=axis), xe)
    assert np.abs(lsf - _log_softmax64(xe, axis)).max() <= A.LOG_SOFTMAX_ERROR


_SOFTMAX = jax.jit(A.softmax)


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float32, (4, 6), elements=st.floats(-50, 50, width=32)))
def test_softmax_random(x):
    y = np.asarray(_SOFTMAX(x), np.float64)
    assert np.abs(y - _softmax64(x, -1)).max() <= A.SOFTMAX_ERROR
    assert np.abs(y.sum(-1) - 1).max() <= 6 * 1e-5


# ----------------------------------------------------------------- end to end, full ranges

def _within(name, x, got, fixed_point=True, extra_units=2):
    """``got`` within ``name``'s bound (plus a truncation unit or two of the last products)
    of the function at the encoded input."""
    x = encoded(x)
    ref = REFERENCE[name](x)
    bound = A.allowed_error(name, ref, fixed_point=fixed_point) + extra_units * 2.0 ** -18
    err = np.abs(np.asarray(got, np.float64) - ref)
    assert (err <= bound).all(), (name, x[np.argmax(err - bound)], float(np.max(err - bound)))


def test_full_ranges_under_mpc(secure, plain):
    """exp, log, 1/x, sqrt, rsqrt, a / b (elementwise and by a broadcast sum) and jnp.power
    on an MPC device, at magnitudes beyond the old ranges, against plain JAX at the inputs
    as fixed point encodes them."""
    x_exp = np.array([20.0, 25.5, 29.9, 11.0, 19.99, -3.0, -15.9, -40.0], np.float32)
    x_pos = np.array([1e6, 1e12, 3.0e13, 3e-6, 2.0 ** -18, 0.7, 1e9, 1e-4], np.float32)
    x_rec = np.array([3e5, -3e5, 1e-5, -7e-4, 1.5, 2e4, -6e10, 0.37], np.float32)
    den = np.array([3e9, -2e11, 5e-5, 70.0, -1e13, 2e7, 0.01, -3.0], np.float32)
    x_pow = np.array([1e6, 2.5, 1e-3, 4e8, 0.3, 7e7, 1.0, 123.0], np.float32)
    nums = np.array([4e6, -3e6, 2e6, 1e6, 5e5, -4e6, 3e6, 4.1e6], np.float32)   # |a| < 2^22
    inputs = [encoded(v).astype(np.float32) for v in (x_exp, x_pos, x_rec, den, x_pow, nums)]

    def fn(e, p, r, d, w, n):
        return (jnp.exp(e), jnp.log(p), 1.0 / r, jnp.sqrt(p), jax.lax.rsqrt(p),
                1e3 * r[4:5] / d, n / jnp.sum(w), jnp.power(w, 1.5), jnp.power(w, -0.25))
    got = [np.asarray(g, np.float64) for g in secure(fn, *inputs)]
    want = [np.asarray(w, np.float64) for w in plain(fn, *inputs)]
    for i, (name, x) in enumerate((("exp", x_exp), ("log", x_pos), ("reciprocal", x_rec),
                                   ("sqrt", x_pos), ("rsqrt", x_pos))):
        _within(name, x, got[i])
        # and plain JAX (float32), within the bound and float32's own rounding
        bound = A.allowed_error(name, want[i], fixed_point=True) + 2.0 ** -17
        assert (np.abs(got[i] - want[i]) <= bound + 1e-6 * np.abs(want[i])).all(), name
    # quotients keep their relative precision whatever the divisor's magnitude; the sum
    # (4.7e8) is one divisor, reduced once and broadcast
    for g, w in zip(got[5:7], want[5:7]):
        np.testing.assert_allclose(g, w, rtol=1.6e-5, atol=2.0 ** -16)
    # x^y = exp(y log x): relative error <= 1e-4 + 4e-5 |y| (exp's and y times log's)
    for g, w, y in ((got[7], want[7], 1.5), (got[8], want[8], -0.25)):
        np.testing.assert_allclose(g, w, rtol=1.0e-4 + 4e-5 * abs(y), atol=2.0 ** -16)


def test_division_by_a_select_of_known_values_is_exact(secure, plain):
    """The gradient of max/min divides by a select of 1 and 2: a select of two products by
    known reciprocals (no comparison, no approximation), exact as JAX; and a float
    remainder by a divisor far beyond the old 2^12."""
    rng = np.random.default_rng(11)
    x = encoded(rng.uniform(-100, 100, 64)).astype(np.float32)
    y = encoded(rng.uniform(-1, 1, 64)).astype(np.float32)

    def fn(a, b):
        relu_grad = jax.grad(lambda v: jnp.sum(jnp.maximum(v, 0.0) * a))(b)
        return a / jnp.where(b > 0, 2.0, -4.0), relu_grad, jnp.fmod(a * 1e4, 3e9 + b)
    got, want = secure(fn, x, y), plain(fn, x, y)
    # within two units: the approximate division's 1.5e-5 would be up to 4e-4 here
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=2.0 ** -17)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=2.0 ** -17)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-6, atol=2.0 ** -16)


def test_rsqrt_parts_keep_a_small_inverse_root_precise():
    """1/sqrt(x) as q * g (g a power of two): over [2^-16, 2^20] in fixed point, q g is
    within rsqrt's 3e-5 and, refined by the Newton step, within 2.5e-6 relative, where
    the single product rsqrt gives is a multiple of 2^-18 (4e-4 relative at x = 2^20)."""
    x = encoded(np.geomspace(2.0 ** -16, 2.0 ** 20, 4001))
    ref = 1 / np.sqrt(x)
    for refine, bound in ((False, 3e-5), (True, 2.5e-6)):
        def parts(v, refine=refine):
            q, g = A.rsqrt_parts(v, lo=2.0 ** -16, hi=2.0 ** 20, refine=refine)
            return jnp.stack([q, g])
        q, g = fixed_point(parts, x)
        assert np.all(np.log2(g) == np.round(np.log2(g)))   # a power of two: exact
        assert np.abs(q * g / ref - 1).max() <= bound, (refine, np.abs(q * g / ref - 1).max())
    single = fixed_point(lambda v: A.rsqrt(v, lo=2.0 ** -16, hi=2.0 ** 20), x)
    assert np.abs(single / ref - 1).max() > 1e-4
