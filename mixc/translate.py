"""JAX equations into IR ops on MPC and HE devices.

``PRIMITIVES`` maps a JAX primitive's name to its rule: a function of the
equation and its operands' IR values that emits the IR ops computing it on
the device (``_simple`` for a one-op translation, ``_macro`` for a JAX
function of supported ops that is traced and inlined). Around the table:
constants and constant folding (values computed from constants are known
while compiling), control flow (loops with a trip count known then unroll; a
cond with a secret index runs every branch and selects), data movement (a
``take`` of known positions; a one-hot product for a secret index), and the
author-frame helpers that make every error name the author's line.
"""
from __future__ import annotations

import functools
import inspect
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .ir.core import TensorType
from .ir.ops import dtype_name

_MIXC_DIR = os.path.dirname(os.path.abspath(__file__))


def _author_frame():
    """The innermost stack frame outside mixc and JAX: the author's line."""
    for info in inspect.stack(0):
        path = os.path.abspath(info.filename)
        if path.startswith(_MIXC_DIR) or os.sep + "jax" + os.sep in path:
            continue
        return path, info.lineno
    return "<unknown>", 0


def _loc(frame=None) -> str:
    path, line = frame or _author_frame()
    return f"{os.path.basename(path)}:{line}"


def _where(frame=None) -> str:
    path, line = frame or _author_frame()
    return f"{path}:{line}"



_NP = {"f32": np.float32, "i32": np.int32, "bool": np.bool_, "f64": np.float64,
       "i64": np.int64, "u64": np.uint64, "u32": np.uint32, "u8": np.uint8}


def _aval_type(aval, device):
    return TensorType(dtype_name(aval.dtype), tuple(aval.shape), device.name)


def _constant(trace, value, dev, loc):
    value = np.asarray(value)
    if value.dtype == np.float64:
        value = value.astype(np.float32)
    if value.dtype == np.int64:
        value = value.astype(np.int32)
    t = TensorType(dtype_name(value.dtype), value.shape, dev.name)
    return trace.emit("constant", (), [t], {"value": value}, loc).result


def _read(trace, env, var, dev, loc):
    from jax.extend.core import Literal
    if isinstance(var, Literal):
        return _constant(trace, np.asarray(var.val, dtype=var.aval.dtype), dev, loc)
    return env[var]


def _eqn_frame(eqn, frame):
    from jax._src import source_info_util
    f = source_info_util.user_frame(eqn.source_info.traceback)
    if f is None:
        return frame
    return f.file_name, f.start_line


def _translate(trace, jaxpr, env, dev, frame, pinned=False):
    """IR for a jaxpr's equations; ``pinned``: every op gets ``frame`` as its location
    (for mixc's own expansions, whose lines mean nothing to the author)."""
    for eqn in jaxpr.eqns:
        eframe = frame if pinned else _eqn_frame(eqn, frame)
        loc = _loc(eframe)
        ins = [_read(trace, env, v, dev, loc) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _inner_jaxpr(eqn)
        if sub is not None:
            inner, consts = sub
            inner_env = dict(zip(inner.invars, ins))
            for var, c in zip(inner.constvars, consts):
                inner_env[var] = _constant(trace, np.asarray(c), dev, loc)
            outs = _translate(trace, inner, inner_env, dev, eframe, pinned)
        else:
            rule = PRIMITIVES.get(name)
            if (rule is None or name in _APPROXIMATED) and ins and _all_known(trace, ins):
                rule = _folded_constant    # exact, where an approximation would be used
            if dev.kind == "HE" and name not in HE_PRIMITIVES \
                    and not all(v in trace.public for v in ins):
                raise TraceError(f"{_where(eframe)}: '{name}' is not a linear op: HE device "
                                 f"{dev.name!r} evaluates only linear functions of its "
                                 f"ciphertexts ({', '.join(sorted(HE_PRIMITIVES))}); compute "
                                 "it on an MPC device or at the key owner")
            if rule is None:
                raise TraceError(f"{_where(eframe)}: jnp op '{name}' is not supported on MPC "
                                 f"device {dev.name!r} yet: no protocol computes it on secret "
                                 "values (it runs on a PYU, and on values known when "
                                 "compiling; mixc.translate.PRIMITIVES lists the MPC ops)")
            trace.frame = eframe
            outs = rule(trace, eqn, ins, dev, loc)
        for var, v in zip(eqn.outvars, outs):
            env[var] = v
    return [_read(trace, env, v, dev, _loc(frame)) for v in jaxpr.outvars]


# rules that approximate (or expand into approximations): on known values, folded exactly
_APPROXIMATED = frozenset(("exp", "log", "logistic", "tanh", "sqrt", "rsqrt", "erf", "erfc",
                           "sin", "cos", "log1p", "expm1", "exp2", "pow", "integer_pow", "div",
                           "tan", "atan", "atan2", "asin", "acos", "sinh", "cosh", "asinh",
                           "acosh", "atanh"))


def _all_known(trace, ins):
    return all(_known_value(trace, v) is not None for v in ins)


def _folded_constant(trace, eqn, ins, dev, loc):
    """Any op on values known when compiling (a positional encoding's sin of positions):
    JAX computes it now, and its result is a public constant."""
    args = [_known_value(trace, v).astype(var.aval.dtype) for v, var in zip(ins, eqn.invars)]
    out = eqn.primitive.bind(*args, **eqn.params)
    outs = out if eqn.primitive.multiple_results else [out]
    return [_constant(trace, np.asarray(o), dev, loc) for o in outs]


def _inner_jaxpr(eqn):
    """The body of call-like primitives (jit, custom_jvp/vjp) that are inlined."""
    if eqn.primitive.name in ("while", "scan", "cond"):
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is None:
            continue
        if hasattr(j, "jaxpr"):
            return j.jaxpr, j.consts
        return j, ()
    return None


# Control flow. Secret values cannot steer the program, so a loop runs a trip count
# known when tracing (its body is copied that many times) and every branch of a cond
# runs, the index selecting among the results.

def _inline(trace, closed, ins, dev, pinned=False):
    """The IR of a closed jaxpr applied to ``ins``: its ops at the author's lines, or all
    at the current one (``pinned``: mixc's own expansions)."""
    env = dict(zip(closed.jaxpr.invars, ins))
    for var, c in zip(closed.jaxpr.constvars, closed.consts):
        env[var] = _constant(trace, np.asarray(c), dev, _loc(trace.frame))
    return _translate(trace, closed.jaxpr, env, dev, trace.frame, pinned)


def _avals(ins):
    return [jax.ShapeDtypeStruct(v.type.shape, _NP[v.type.dtype]) for v in ins]


def keeps_loops(dev):
    """Whether loops on ``dev`` stay ``loop`` ops: on 2-party MPC devices with a dealer.
    (Dealer-free correlations are hoisted to the program's start and HE values carry
    per-step fraction bits, so loops there still unroll.)"""
    return dev.kind == "MPC" and dev.offline != "he"


def _i32(trace, value, dev, loc):
    return _constant(trace, np.asarray(value, np.int32), dev, loc)


def _public_op(trace, op, a, b, dev, loc):
    return trace.emit(op, [a, b], [TensorType("i32", (), dev.name)], {}, loc).result


def _step_index(trace, index, k, j, length, reverse, dev, loc):
    """The scan step that unrolled copy ``j`` of iteration ``index`` runs (public)."""
    step = index
    if k > 1:
        step = _public_op(trace, "mul", step, _i32(trace, k, dev, loc), dev, loc)
    if j:
        step = _public_op(trace, "add", step, _i32(trace, j, dev, loc), dev, loc)
    if reverse:
        step = _public_op(trace, "sub", _i32(trace, length - 1, dev, loc), step, dev, loc)
    return step


def _scan(trace, eqn, ins, dev, loc):
    """lax.scan, and fori_loop with Python-int bounds (which JAX makes a scan): a loop
    op whose body reads row ``i`` of each xs at run time and writes row ``i`` of each ys
    (carried buffers); ``unroll=k`` copies the body k times per iteration. Where loops
    do not stay loops (``keeps_loops``), or ``unroll`` covers the whole length, the
    body is copied once per step."""
    p = eqn.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    unroll = 1 if p["unroll"] is False else length if p["unroll"] is True else int(p["unroll"])
    if not keeps_loops(dev) or length <= 1 or unroll >= length:
        return _scan_unrolled(trace, eqn, ins, dev, loc)
    k = unroll if unroll > 0 and length % unroll == 0 else 1
    frame = trace.frame
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    ys_types = [_aval_type(var.aval, dev) for var in eqn.outvars[n_carry:]]
    buffers = [_constant(trace, np.zeros(t.shape, _NP[t.dtype]), dev, loc) for t in ys_types]
    zero = None

    def body(args):
        nonlocal zero
        carried, ys_bufs = list(args[:n_carry]), list(args[n_carry:])
        index = trace.emit("loop_index", (), [TensorType("i32", (), dev.name)], {}, loc).result
        zero = _i32(trace, 0, dev, loc)
        for j in range(k):
            step = _step_index(trace, index, k, j, length, p["reverse"], dev, loc)
            rows = []
            for x in xs:
                shape = x.type.shape
                row_t = x.type.with_(shape=(1,) + shape[1:], place=dev.name)
                row = trace.emit("dynamic_slice", [x, step] + [zero] * (len(shape) - 1), [row_t],
                                 {"sizes": (1,) + shape[1:]}, loc).result
                rows.append(trace.emit("reshape", [row], [row.type.with_(shape=shape[1:])],
                                       {"new_sizes": shape[1:]}, loc).result)
            outs = _inline(trace, p["jaxpr"], consts + carried + rows, dev)
            trace.frame = frame
            carried, ys = outs[:n_carry], outs[n_carry:]
            for b, (buf, y) in enumerate(zip(ys_bufs, ys)):
                row = trace.emit("reshape", [y], [y.type.with_(shape=(1,) + y.type.shape,
                                                               place=dev.name)],
                                 {"new_sizes": (1,) + y.type.shape}, loc).result
                ys_bufs[b] = trace.emit("dynamic_update_slice",
                                        [buf, row, step] + [zero] * len(y.type.shape),
                                        [buf.type], {}, loc).result
        return carried + ys_bufs

    return trace.loop(length // k, list(carry) + buffers, body, loc, place=dev.name)


def _scan_unrolled(trace, eqn, ins, dev, loc):
    p = eqn.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    frame = trace.frame
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    per_step = []
    for i in (reversed(range(length)) if p["reverse"] else range(length)):
        x_i = []
        for x in xs:
            shape = x.type.shape
            row = trace.emit("slice", [x], [x.type.with_(shape=(1,) + shape[1:], place=dev.name)],
                             {"start": (i,) + (0,) * (len(shape) - 1),
                              "limit": (i + 1,) + shape[1:],
                              "strides": (1,) * len(shape)}, loc).result
            x_i.append(trace.emit("reshape", [row], [row.type.with_(shape=shape[1:])],
                                  {"new_sizes": shape[1:]}, loc).result)
        outs = _inline(trace, p["jaxpr"], consts + carry + x_i, dev)
        trace.frame = frame
        carry, ys = outs[:n_carry], outs[n_carry:]
        per_step.append(ys)
    if p["reverse"]:
        per_step.reverse()
    stacked = []
    for j, var in enumerate(eqn.outvars[n_carry:]):
        t = _aval_type(var.aval, dev)
        if length == 0:
            stacked.append(_constant(trace, np.zeros(t.shape, _NP[t.dtype]), dev, loc))
            continue
        rows = [trace.emit("reshape", [ys[j]], [t.with_(shape=(1,) + t.shape[1:])],
                           {"new_sizes": (1,) + t.shape[1:]}, loc).result
                for ys in per_step]
        stacked.append(trace.emit("concatenate", rows, [t], {"dimension": 0}, loc).result
                       if len(rows) > 1 else rows[0])
    return list(carry) + stacked


_LONGEST_WHILE = 100_000


def _depends_on(jaxpr, outputs):
    """Indices of ``jaxpr``'s inputs that the outputs numbered ``outputs`` read."""
    from jax.extend.core import Literal
    needed = {jaxpr.outvars[i] for i in outputs if not isinstance(jaxpr.outvars[i], Literal)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    return {i for i, v in enumerate(jaxpr.invars) if v in needed}


def _while_trip_count(trace, p, ins, frame, dev):
    """How many times a while loop runs, from the carried values its condition reads
    (and those they are computed from), which must be known when compiling."""
    from jax.extend.core import jaxpr_as_fun
    nc, nb = int(p["cond_nconsts"]), int(p["body_nconsts"])
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]
    n_carry = len(ins) - nc - nb
    steering = {i - nc for i in _depends_on(cond.jaxpr, [0]) if i >= nc}
    while True:
        more = {i - nb for i in _depends_on(body.jaxpr, sorted(steering)) if i >= nb}
        if more <= steering:
            break
        steering |= more
    reads = set(range(nc)) & _depends_on(cond.jaxpr, [0])
    reads |= {nc + i for i in _depends_on(body.jaxpr, sorted(steering)) if i < nb}
    needed = sorted(reads | {nc + nb + i for i in steering})
    values = {}
    for i in needed:
        values[i] = _known_value(trace, ins[i])
        if values[i] is None:
            raise TraceError(f"{_where(frame)}: lax.while_loop (or fori_loop with traced "
                             f"bounds) on {dev.kind} device {dev.name!r}: its condition depends "
                             "on secret data, so the trip count would too; use a Python loop, "
                             "lax.scan, or fori_loop with int bounds")

    def arg(i):
        if i in values:
            return values[i]
        return np.zeros(ins[i].type.shape, _NP[ins[i].type.dtype])

    order = sorted(steering)
    go = jax.jit(lambda *a: jaxpr_as_fun(cond)(*a)[0])
    step = jax.jit(lambda *a: [jaxpr_as_fun(body)(*a)[i] for i in order])
    cond_args = [arg(i) for i in range(nc)]
    body_args = [arg(nc + i) for i in range(nb)]
    carry = [arg(nc + nb + i) for i in range(n_carry)]
    for count in range(_LONGEST_WHILE + 1):
        if not bool(go(*cond_args, *carry)):
            return count
        for i, v in zip(order, step(*body_args, *carry)):
            carry[i] = np.asarray(v)
    raise TraceError(f"{_where(frame)}: lax.while_loop ran more than {_LONGEST_WHILE} steps "
                     "while compiling")


def _while(trace, eqn, ins, dev, loc):
    """lax.while_loop whose condition is known when compiling at every step (a counter
    from constants): a loop op with the trip count that condition gives (unrolled where
    loops do not stay loops, ``keeps_loops``). A condition on secret data cannot steer
    the program."""
    p = eqn.params
    nc, nb = int(p["cond_nconsts"]), int(p["body_nconsts"])
    body_consts, carry = ins[nc:nc + nb], list(ins[nc + nb:])
    frame = trace.frame
    count = _while_trip_count(trace, p, ins, frame, dev)
    if count == 0:
        return carry
    if not keeps_loops(dev) or count == 1:
        for _ in range(count):
            carry = _inline(trace, p["body_jaxpr"], body_consts + carry, dev)
            trace.frame = frame
        return carry

    def body(args):
        outs = _inline(trace, p["body_jaxpr"], body_consts + list(args), dev)
        trace.frame = frame
        return outs

    return trace.loop(count, carry, body, loc, place=dev.name)


def _known_value(trace, value):
    """The value of a public (constants-only) IR value; None if not known when compiling."""
    return trace.known.get(value)


def _cond(trace, eqn, ins, dev, loc):
    """lax.cond / lax.switch: a branch index known when tracing picks its branch; a
    secret one runs every branch and selects the results obliviously."""
    index, operands = ins[0], list(ins[1:])
    branches = eqn.params["branches"]
    frame = trace.frame
    known = _known_value(trace, index)
    if known is not None:
        k = min(max(int(known), 0), len(branches) - 1)
        return _inline(trace, branches[k], operands, dev)
    made_by = trace.producer.get(index)
    if dev.kind == "HE":
        raise TraceError(f"{_where(frame)}: lax.cond on a ciphertext index selects between "
                         f"branches, which is not linear: HE device {dev.name!r} cannot run it")
    results = []
    for branch in branches:
        results.append(_inline(trace, branch, operands, dev))
        trace.frame = frame
    scalar_bool = TensorType("bool", (), dev.name)
    source = made_by.operands[0] if made_by is not None and made_by.op == "convert_element_type" \
        else None
    chosen = results[0]
    for k in range(1, len(branches)):
        if len(branches) == 2 and source is not None and source.type.dtype == "bool":
            pick = source               # lax.cond's own bool predicate: no comparison needed
        else:
            key = _constant(trace, np.asarray(k, _NP[index.type.dtype]), dev, loc)
            pick = trace.emit("eq", [index, key], [scalar_bool], {}, loc).result
        merged = []
        for old, new, var in zip(chosen, results[k], eqn.outvars):
            t = _aval_type(var.aval, dev)
            where = pick if t.shape == () else trace.emit(
                "broadcast_in_dim", [pick], [pick.type.with_(shape=t.shape)],
                {"shape": t.shape, "broadcast_dimensions": ()}, loc).result
            merged.append(trace.emit("select_n", [where, old, new], [t], {}, loc).result)
        chosen = merged
    return chosen


# Translation of JAX primitives into IR ops on an MPC device.

def _ints(xs):
    return tuple(int(x) for x in xs)


def _simple(op, attr_fn=lambda p: {}):
    def rule(trace, eqn, ins, dev, loc):
        t = [_aval_type(v.aval, dev) for v in eqn.outvars]
        return trace.emit(op, ins, t, attr_fn(eqn.params), loc).results
    return rule


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
    return ins


def _convert(trace, eqn, ins, dev, loc):
    new = dtype_name(eqn.params["new_dtype"])
    if new == ins[0].type.dtype:
        return ins
    if new == "bool" and ins[0] not in trace.public:   # as in JAX: nonzero is true
        return _inline_function(trace, lambda x: x != 0, ins, dev)
    return _simple("convert_element_type",
                   lambda p: {"new_dtype": dtype_name(p["new_dtype"])})(trace, eqn, ins, dev, loc)


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


def _reshape_attrs(p):
    if p.get("dimensions") is not None:
        raise NotImplementedError("reshape with a dimensions permutation")
    return {"new_sizes": _ints(p["new_sizes"])}


def _slice_attrs(p):
    start, limit = _ints(p["start_indices"]), _ints(p["limit_indices"])
    strides = _ints(p["strides"]) if p.get("strides") else (1,) * len(start)
    return {"start": start, "limit": limit, "strides": strides}


def _macro(build):
    """An op written as a JAX function of ops mixc runs natively, traced and inlined.
    Traces are cached per (params, operand types): a training loop reuses them."""
    traced = {}

    def rule(trace, eqn, ins, dev, loc):
        avals = _avals(ins)
        key = (repr(sorted(eqn.params.items())), tuple((a.shape, a.dtype) for a in avals))
        if key not in traced:
            traced[key] = jax.make_jaxpr(build(eqn.params))(*avals)
        return _inline(trace, traced[key], ins, dev, pinned=True)
    return rule


def _approximation(name):
    def build(params):
        from . import approx
        return approx.APPROXIMATIONS[name]
    return _macro(build)


def _inline_function(trace, fn, ins, dev):
    """The IR of a JAX function of ops mixc runs natively, applied to ``ins``."""
    return _inline(trace, jax.make_jaxpr(fn)(*_avals(ins)), ins, dev, pinned=True)


def _int_quotient(x, d):
    """trunc(x / d) for int32 x and a known nonzero int d (JAX's lax.div), exactly for
    |x| < 2^f: a fixed-point product with 1/|d| and a cast give q0 within one of the
    quotient; the exact remainder x - q0 |d| says which way to correct it."""
    size = np.abs(d).astype(np.int32)
    q0 = (x.astype(jnp.float32) * (1.0 / size).astype(np.float32)).astype(jnp.int32)
    return _corrected_quotient(x, q0, x - q0 * size, size) * np.sign(d).astype(np.int32)


def _corrected_quotient(x, q, r, size):
    """trunc(x / size) from a q within one of it and its exact remainder r = x - q size,
    which must have the sign of x and stay below size in magnitude (four comparisons)."""
    up = jnp.where(x >= 0, r >= size, r > 0).astype(jnp.int32)
    down = jnp.where(x >= 0, r < 0, r <= -size).astype(jnp.int32)
    return q + up - down


def _secret_int_quotient(x, y):
    """trunc(x / y) for int32 x and a secret int32 y (JAX's lax.div), exactly for
    |x| < 2^22 and 1 <= |y| <= 2^12 (approx.div's ranges). approx's reciprocal of |y|,
    computed once, makes q0 = trunc(x / |y|) off by up to 1.5e-5 |x/y| + 1 (64 at
    |x/y| = 2^22); the exact remainder x - q0 |y| over the same reciprocal refines
    q0 to within one, and the exact remainder after that corrects it as for a known
    divisor. y = 0 gives an unspecified quotient (and so the remainder x, as in XLA)."""
    from . import approx
    negative = y < 0
    size = jnp.where(negative, -y, y)
    scale, factor = approx.reciprocal_parts(size.astype(jnp.float32))

    def approximate(n):  # approx.div's order: the small factor last keeps the precision
        return (n.astype(jnp.float32) * scale * factor).astype(jnp.int32)
    q0 = approximate(x)
    q1 = q0 + approximate(x - q0 * size)
    q = _corrected_quotient(x, q1, x - q1 * size, size)
    return jnp.where(negative, -q, q)


def _integer_division(remainder):
    """lax.div / lax.rem of secret integers by a divisor known when compiling, or by a
    secret one (``_secret_int_quotient``: a narrower range, two approximate divisions)."""
    def rule(trace, eqn, ins, dev, loc):
        d = _known_value(trace, ins[1])
        if d is None:
            quotients = trace.int_quotients
            if tuple(ins) not in quotients:
                (quotients[tuple(ins)],) = _inline_function(trace, _secret_int_quotient, ins, dev)
            q = quotients[tuple(ins)]
            if not remainder:
                return [q]
            return _inline_function(trace, lambda x, y, q: x - q * y, [*ins, q], dev)
        if not np.all(d):
            raise TraceError(f"{loc}: integer division by zero")
        d = np.broadcast_to(d, eqn.outvars[0].aval.shape) if d.ndim else d

        def fn(x):
            q = _int_quotient(x, d)
            return x - q * d.astype(np.int32) if remainder else q
        return _inline_function(trace, fn, ins[:1], dev)
    return rule


def _div(trace, eqn, ins, dev, loc):
    """Division by a public value is a product with its reciprocal; by a secret, the
    reciprocal is approximated, before any broadcast of the divisor (softmax divides a
    row by its broadcast sum: one reciprocal per row, not per element)."""
    if np.issubdtype(eqn.outvars[0].aval.dtype, np.integer):
        return _integer_division(remainder=False)(trace, eqn, ins, dev, loc)
    if ins[1] in trace.public:
        return _elementwise("div")(trace, eqn, ins, dev, loc)
    divisor = ins[1]
    made_by = trace.producer.get(divisor)
    if made_by is not None and made_by.op == "broadcast_in_dim":
        (small,) = made_by.operands
        parts = _RECIPROCAL_PARTS(trace, eqn, [small], dev, loc)
        q, g = (trace.emit("broadcast_in_dim", [v], [divisor.type], dict(made_by.attrs),
                           loc).result for v in parts)
        (scaled,) = _elementwise("mul")(trace, eqn, [ins[0], q], dev, loc)
        return _elementwise("mul")(trace, eqn, [scaled, g], dev, loc)
    return _SECRET_DIV(trace, eqn, ins, dev, loc)


def _fmod(x, size, quotient):
    """C's fmod(x, y) from size = |y| and a ``quotient`` within one of |x| / size: its
    floor t is within one of the true one, so r = |x| - t size lies in [-size, 2 size)
    and one correction each way brings it into [0, size); the result has the sign of x.
    t size, an integer times a value on the grid, is a multiple of 2^f before its
    truncation, which both TruncPr and the dealer-free truncation keep exact: r is exact."""
    negative = x < 0
    magnitude = jnp.where(negative, -x, x)
    r = magnitude - jnp.floor(quotient(magnitude)) * size
    r = r + jnp.where(r < 0, size, 0.0) - jnp.where(r >= size, size, 0.0)
    return jnp.where(negative, -r, r)


def _rem(trace, eqn, ins, dev, loc):
    """lax.rem, which jnp.fmod is and jnp.remainder (float %) fixes up the sign of:
    integers by ``_integer_division``; floats by ``_fmod``, exactly the fmod of the
    operands as encoded on the 2^-f grid (of float32 operands off the grid: within
    2^-(f+1) (1 + |x/y|), or that close to the other end of the period where fmod is
    that close to 0 or |y|), for
    - y known when compiling: |x| < 2^f and |x/y| < 2^22; the quotient is a product
      with 1/|y| computed from y as encoded (error < |x| 2^-(f+1) + 2^-f + |x/y| 2^-24);
    - a secret y: |x| < 2^22, 2^-8 <= |y| <= 2^12 and |x/y| < 2^16 (approx.div, whose
      error 1.5e-5 |x/y| + 2^-17 (1 + 1/(4|y|)) stays below one there).
    A zero divisor, or one that encodes to 0, gives x (JAX: NaN)."""
    if np.issubdtype(eqn.outvars[0].aval.dtype, np.integer):
        return _integer_division(remainder=True)(trace, eqn, ins, dev, loc)
    d = _known_value(trace, ins[1])
    if d is None:
        def by_secret(x, y):
            size = jnp.abs(y)
            return _fmod(x, size, lambda magnitude: magnitude / size)
        return _inline_function(trace, by_secret, ins, dev)
    step = 2.0 ** -dev.fraction_bits
    size = np.round(np.abs(d.astype(np.float64)) / step) * step
    inverse = np.divide(1.0, size, out=np.zeros_like(size), where=size != 0)
    size, inverse = size.astype(np.float32), inverse.astype(np.float32)
    return _inline_function(trace, lambda x: _fmod(x, size, lambda m: m * inverse),
                            ins[:1], dev)


def _approx_attr(name):
    def build(params):
        from . import approx
        return getattr(approx, name)
    return build


_RECIPROCAL_PARTS = _macro(_approx_attr("reciprocal_parts"))
_SECRET_DIV = _macro(_approx_attr("div"))


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


def _reduce_tree(combine):
    """max/min over axes as a log-depth tree of pairwise combines of halves."""
    def build(params):
        axes = sorted(params["axes"], reverse=True)

        def fn(x):
            for axis in axes:
                while x.shape[axis] > 1:
                    half = x.shape[axis] // 2
                    lo = jax.lax.slice_in_dim(x, 0, half, axis=axis)
                    hi = jax.lax.slice_in_dim(x, half, 2 * half, axis=axis)
                    rest = jax.lax.slice_in_dim(x, 2 * half, x.shape[axis], axis=axis)
                    x = jnp.concatenate([combine(lo, hi), rest], axis=axis)
                x = jnp.squeeze(x, axis)
            return x
        return fn
    return _macro(build)


def _arg_tree(pick_hi):
    """argmax/argmin: a log-depth tree carrying (value, index); ties keep the first index.

    Each level combines adjacent pairs (positions 2k, 2k+1), so every position
    always covers a contiguous run of indices and the left one of a pair the
    earlier run: keeping the left on a tie keeps the first index, as JAX does."""
    def build(params):
        (axis,) = params["axes"]
        index_dtype = params["index_dtype"]

        def fn(x):
            idx = jax.lax.broadcasted_iota(index_dtype, x.shape, axis)
            while x.shape[axis] > 1:
                n = x.shape[axis]
                paired = 2 * (n // 2)
                parts = []
                for arr in (x, idx):
                    parts.append((jax.lax.slice_in_dim(arr, 0, paired, stride=2, axis=axis),
                                  jax.lax.slice_in_dim(arr, 1, paired, stride=2, axis=axis),
                                  jax.lax.slice_in_dim(arr, paired, n, axis=axis)))
                (xl, xh, xr), (il, ih, ir) = parts
                take_hi = pick_hi(xl, xh)
                x = jnp.concatenate([jax.lax.select(take_hi, xh, xl), xr], axis=axis)
                idx = jnp.concatenate([jax.lax.select(take_hi, ih, il), ir], axis=axis)
            return jnp.squeeze(idx, axis)
        return fn
    return _macro(build)


def _stack(trace, eqn, ins, dev, loc):
    """jnp.stack: each operand gets the new unit axis, then one concatenate."""
    axis = int(eqn.params["axis"])
    expanded = []
    for v in ins:
        shape = v.type.shape[:axis] + (1,) + v.type.shape[axis:]
        expanded.append(trace.emit("reshape", [v], [v.type.with_(shape=shape, place=dev.name)],
                                   {"new_sizes": shape}, loc).result)
    t = [_aval_type(v.aval, dev) for v in eqn.outvars]
    return trace.emit("concatenate", expanded, t, {"dimension": axis}, loc).results


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



class _Params:
    """Stands in for a jaxpr equation where a rule reads only ``params``."""

    def __init__(self, **params):
        self.params = params


# Data movement with indices known when tracing: every output element is one input
# element (or a padding value), so the whole op is one ``take`` of known positions,
# local on shares and on ciphertexts alike.

def _known_indices(trace, eqn, value, loc):
    known = _known_value(trace, value)
    if known is None:
        raise TraceError(f"{loc}: {eqn.primitive.name} with indices computed from secret "
                         "values: mixc moves data only by indices known when compiling (use a "
                         "one-hot product or jnp.where for a secret index)")
    return known.astype(_NP[value.type.dtype])


def _flat(trace, v, dev, loc):
    return trace.emit("reshape", [v], [v.type.with_(shape=(v.type.size,), place=dev.name)],
                      {"new_sizes": (v.type.size,)}, loc).result


def _take(trace, source, positions, t, loc):
    if positions.size and (positions.min() < 0 or positions.max() >= source.type.size):
        raise TraceError(f"{loc}: index out of range (mixc does not fill or drop "
                         "out-of-range elements)")
    return trace.emit("take", [source], [t], {"indices": positions.reshape(-1).astype(np.int32),
                                              "shape": tuple(positions.shape)}, loc).result


def _movement(data):
    """A primitive that only moves elements of the operands numbered in ``data``."""
    def rule(trace, eqn, ins, dev, loc):
        secret = [i for i, v in enumerate(ins) if i not in data and _known_value(trace, v) is None]
        if secret and eqn.primitive.name in _RUN_TIME_SLICES \
                and all(ins[i] in trace.public for i in secret):
            return _run_time_slice(trace, eqn, ins, dev, loc)
        if secret and eqn.primitive.name == "gather":
            return _secret_gather(trace, eqn, ins, dev, loc)
        if secret and eqn.primitive.name == "dynamic_slice":
            return _secret_dynamic_slice(trace, eqn, ins, dev, loc)
        if secret and eqn.primitive.name == "scatter":
            return _secret_scatter(trace, eqn, ins, dev, loc)
        if secret and eqn.primitive.name == "dynamic_update_slice":
            return _secret_dynamic_update_slice(trace, eqn, ins, dev, loc)
        args, flats, offset = [], [], 0
        for i, v in enumerate(ins):
            if i in data:
                args.append(np.arange(offset, offset + v.type.size, dtype=np.int32)
                            .reshape(v.type.shape))
                flats.append(_flat(trace, v, dev, loc))
                offset += v.type.size
            else:
                args.append(_known_indices(trace, eqn, v, loc))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")    # jnp.take's NaN fill value cast to int
            positions = np.asarray(eqn.primitive.bind(*args, **eqn.params))
        source = flats[0] if len(flats) == 1 else trace.emit(
            "concatenate", flats, [flats[0].type.with_(shape=(offset,))], {"dimension": 0},
            loc).result
        return [_take(trace, source, positions, _aval_type(eqn.outvars[0].aval, dev), loc)]
    return rule


_RUN_TIME_SLICES = ("dynamic_slice", "dynamic_update_slice")


def _run_time_slice(trace, eqn, ins, dev, loc):
    """dynamic_slice / dynamic_update_slice at starts every party knows only at run time
    (a loop's counter): the op itself, local on shares (no per-step ``take``)."""
    name = eqn.primitive.name
    n_data = 1 if name == "dynamic_slice" else 2
    starts = []
    for v in ins[n_data:]:
        if v.type.dtype != "i32":
            v = trace.emit("convert_element_type", [v], [v.type.with_(dtype="i32")],
                           {"new_dtype": "i32"}, loc).result
        starts.append(v)
    attrs = {"sizes": _ints(eqn.params["slice_sizes"])} if name == "dynamic_slice" else {}
    t = _aval_type(eqn.outvars[0].aval, dev)
    return [trace.emit(name, list(ins[:n_data]) + starts, [t], attrs, loc).result]


_LARGEST_ONE_HOT = 1 << 24     # index positions x candidate starts of a secret gather/scatter


def _one_hot_starts(idx, counts, clip, dtype):
    """[batch, prod(counts)]: for each index vector (last axis of ``idx``) a one-hot of its
    start among all candidate starts, row-major over the indexed dims: one equality test
    per index and candidate of each dim, one product per extra dim. Out of range (no
    ``clip``) matches no candidate."""
    joint = None
    for k, count in enumerate(counts):
        start = idx[..., k]
        if clip:
            start = jnp.clip(start, 0, count - 1)
        hot = (start[..., None] == jnp.arange(count, dtype=idx.dtype)).astype(dtype)
        joint = hot if joint is None else (joint[..., :, None] * hot[..., None, :]).reshape(
            joint.shape[:-1] + (-1,))
    return joint


def _check_one_hot_size(loc, what, batch, counts):
    if batch * int(np.prod(counts)) > _LARGEST_ONE_HOT:
        raise TraceError(f"{loc}: {what} with secret indices: {batch} indices x "
                         f"{int(np.prod(counts))} candidate positions is more than "
                         f"{_LARGEST_ONE_HOT} equality tests")


def _secret_gather(trace, eqn, ins, dev, loc):
    """A gather whose indices are secret (x[idx], x[i, j], jnp.take, take_along_axis):
    every candidate window of the indexed dims is taken at known positions, and a one-hot
    of each index vector among the candidates picks its window by one (batched) matrix
    product. Out-of-range indices are clamped (mode clip) or select zeros."""
    dn, sizes = eqn.params["dimension_numbers"], tuple(eqn.params["slice_sizes"])
    clip = eqn.params["mode"] == jax.lax.GatherScatterMode.CLIP
    shape = tuple(ins[0].type.shape)
    index_batch = tuple(ins[1].type.shape[:-1])
    indexed = tuple(dn.start_index_map)
    counts = [shape[d] - sizes[d] + 1 for d in indexed]
    _check_one_hot_size(loc, "gather", int(np.prod(index_batch)), counts)
    paired = tuple(dn.start_indices_batching_dims)      # index dims matched to operand dims
    free = [j for j in range(len(index_batch)) if j not in paired]
    kept = [d for d in range(len(shape)) if d not in dn.operand_batching_dims]
    window = [sizes[d] for d in kept]
    out_rank = len(eqn.outvars[0].aval.shape)
    batch_at = [j for j in range(out_rank) if j not in dn.offset_dims]

    def fn(x, idx):
        as_int = x.dtype == np.bool_
        if as_int:
            x = x.astype(jnp.int32)
        # axes: operand batching dims, candidate starts, window (kept dims, operand order);
        # last dim first, so the axis numbers of the dims still to do hold
        for d in reversed(range(len(shape))):
            if d in indexed:
                count = shape[d] - sizes[d] + 1
                x = jnp.take(x, np.arange(count)[:, None] + np.arange(sizes[d])[None, :], axis=d)
            elif d in kept:
                x = jax.lax.slice_in_dim(x, 0, sizes[d], axis=d)
        axis_of = np.cumsum([0] + [2 if d in indexed else 1 for d in range(len(shape))])
        order = ([axis_of[d] for d in dn.operand_batching_dims] + [axis_of[d] for d in indexed]
                 + [axis_of[d] + (d in indexed) for d in kept])
        paired_size = int(np.prod([shape[d] for d in dn.operand_batching_dims]))
        windows = jnp.transpose(x, order).reshape(paired_size, int(np.prod(counts)), -1)
        idx = jnp.transpose(idx, list(paired) + free + [idx.ndim - 1])
        idx = idx.reshape(paired_size, -1, len(indexed))
        picked = jnp.matmul(_one_hot_starts(idx, counts, clip, x.dtype), windows)
        batch_dims = [index_batch[j] for j in paired + tuple(free)]
        picked = picked.reshape(batch_dims + [w for d, w in zip(kept, window)
                                              if d not in dn.collapsed_slice_dims])
        # result axes: index batch dims (paired first) then offset dims, in operand order
        source = {j: n for n, j in enumerate(list(paired) + free)}
        perm = [0] * out_rank
        for n, j in enumerate(batch_at):
            perm[j] = source[n]
        for n, j in enumerate(sorted(dn.offset_dims)):
            perm[j] = len(index_batch) + n
        out = jnp.transpose(picked, perm)
        return out > 0 if as_int else out
    return _inline_function(trace, fn, ins, dev)


def _secret_scatter(trace, eqn, ins, dev, loc):
    """x.at[idx].set(v) / .add(v) with secret indices: a one-hot of each index vector
    among the candidate starts (for set, only the last update per start: JAX leaves the
    winner unspecified) weighs the updates in one matrix product; placing the weighted
    windows at the candidates is public, so local. Out-of-range updates are dropped
    (clamped in mode clip)."""
    dn = eqn.params["dimension_numbers"]
    if dn.operand_batching_dims:
        raise TraceError(f"{loc}: {eqn.primitive.name} with secret indices and batching "
                         "dims is not implemented")
    sets = eqn.primitive.name == "scatter"
    clip = eqn.params["mode"] == jax.lax.GatherScatterMode.CLIP
    last_wins = sets and not eqn.params["unique_indices"]
    shape = tuple(ins[0].type.shape)
    update_shape = tuple(ins[2].type.shape)
    indexed = tuple(dn.scatter_dims_to_operand_dims)
    window_axes = iter(dn.update_window_dims)
    window = [1 if d in dn.inserted_window_dims else update_shape[next(window_axes)]
              for d in range(len(shape))]
    counts = [shape[d] - window[d] + 1 for d in indexed]
    scatter_axes = [j for j in range(len(update_shape)) if j not in dn.update_window_dims]
    batch = int(np.prod([update_shape[j] for j in scatter_axes]))
    _check_one_hot_size(loc, eqn.primitive.name, batch, counts)
    join, identity, reduce = _SCATTER_COMBINERS.get(eqn.primitive.name, (None, 0, None))
    if reduce is not None and any(window[d] != 1 for d in indexed):
        raise TraceError(f"{loc}: {eqn.primitive.name} of windows with secret indices is "
                         "not implemented (only of single elements along the indexed axes)")

    def place(weighted):
        """[candidates..., window...] -> operand shape: window w of candidate c lands at c + w."""
        axes = [("start", d) for d in indexed] + [("window", d) for d in range(len(shape))]
        for k, d in enumerate(indexed):
            at_start, at_window = axes.index(("start", d)), axes.index(("window", d))
            if window[d] == 1:      # the candidate start is the position
                weighted = jnp.squeeze(weighted, at_window)
                axes.pop(at_window)
                axes[axes.index(("start", d))] = ("window", d)
                continue
            lands = (np.arange(counts[k])[:, None, None] + np.arange(window[d])[None, :, None]
                     == np.arange(shape[d])[None, None, :]).astype(weighted.dtype)
            weighted = jnp.tensordot(weighted, lands, axes=((at_start, at_window), (0, 1)))
            axes = [a for a in axes if a not in (("start", d), ("window", d))] + [("window", d)]
        weighted = jnp.transpose(weighted, [axes.index(("window", d)) for d in range(len(shape))])
        return jnp.pad(weighted, [(0, n - w) for n, w in zip(shape, weighted.shape)])

    def fn(x, idx, updates):
        as_int = x.dtype == np.bool_
        if as_int:
            x, updates = x.astype(jnp.int32), updates.astype(jnp.int32)
        windows = jnp.transpose(updates, scatter_axes + list(dn.update_window_dims))
        windows = windows.reshape((batch,) + tuple(window[d] for d in range(len(shape))))
        # a reduction picks by a select (a bit times a value), not by a fixed-point
        # product with the identity, whose 2^30 would overflow the ring
        hot = _one_hot_starts(idx.reshape(batch, len(indexed)), counts, clip,
                              jnp.bool_ if reduce is not None else x.dtype)
        if last_wins:
            later = jnp.sum(hot, axis=0) - jnp.cumsum(hot, axis=0)
            hot = hot * (later == 0).astype(x.dtype)
        if reduce is not None:
            # every update where its one-hot is set, the identity elsewhere: then one
            # reduction over the updates (a log-depth tree) and one combine with x
            unit = np.asarray(identity, x.dtype)
            spread = jnp.where(hot.reshape(hot.shape + (1,) * (windows.ndim - 1)),
                               windows[:, None], unit)
            reduced = reduce(spread, axis=0).reshape(counts + window)
            out = join(x, place(reduced - unit) + unit)
            return out > 0 if as_int else out
        moved = jnp.tensordot(hot, windows, axes=((0,), (0,))).reshape(counts + window)
        out = x + place(moved)
        if sets:
            covered = jnp.tensordot(hot, np.ones(windows.shape, x.dtype), axes=((0,), (0,)))
            out = out - x * place(covered.reshape(moved.shape))
        return out > 0 if as_int else out
    return _inline_function(trace, fn, ins, dev)


def _secret_dynamic_slice(trace, eqn, ins, dev, loc):
    """lax.dynamic_slice (x[i] for a scalar i) with secret starts: along each such axis
    the candidate windows (known positions) are contracted with a one-hot of the
    start, clamped into range as JAX does."""
    sizes = tuple(eqn.params["slice_sizes"])
    known = [_known_value(trace, v) is not None for v in ins[1:]]

    def fn(x, *starts):
        for axis, (start, size, is_known) in enumerate(zip(starts, sizes, known)):
            n = x.shape[axis]
            if is_known or size == n:
                x = jax.lax.dynamic_slice_in_dim(x, start, size, axis)
                continue
            count = n - size + 1
            windows = jnp.take(x, np.arange(count)[:, None] + np.arange(size)[None, :], axis=axis)
            one_hot = (jnp.clip(start, 0, count - 1) == jnp.arange(count, dtype=start.dtype))
            x = jnp.tensordot(one_hot.astype(x.dtype), jnp.moveaxis(windows, axis, 0),
                              axes=((0,), (0,)))
        return x
    return _inline_function(trace, fn, ins, dev)


def _secret_dynamic_update_slice(trace, eqn, ins, dev, loc):
    """lax.dynamic_update_slice with secret starts: a scatter of its one window, starts
    clamped so that the window fits, as JAX does."""
    def fn(x, update, *starts):
        start = jnp.stack([s.astype(jnp.int32) for s in starts])[None, :]
        numbers = jax.lax.ScatterDimensionNumbers(
            update_window_dims=tuple(range(1, update.ndim + 1)), inserted_window_dims=(),
            scatter_dims_to_operand_dims=tuple(range(x.ndim)))
        return jax.lax.scatter(x, start, update[None], numbers, unique_indices=True,
                               mode=jax.lax.GatherScatterMode.CLIP)
    return _inline_function(trace, fn, ins, dev)


_LARGEST_SCATTER = 1 << 24    # output x update elements: where each update lands


def _scatter_combining(trace, eqn, ins, dev, loc):
    """operand combined (+, *, max, min) with the updates at their (known) positions: each
    update element's target is found by scattering one-hot rows; updates that share a
    target go in successive layers, one take per layer (padding slot m holds the
    combine's identity)."""
    operand, indices, updates = ins
    join, identity, _ = _SCATTER_COMBINERS[eqn.primitive.name]
    start = _known_value(trace, operand)
    if start is not None and np.isinf(start).any():   # segment_max's -inf: no fixed point
        operand = _constant(trace, np.clip(start, _POOL_FLOOR, -_POOL_FLOOR).astype(start.dtype),
                            dev, loc)
        ins = [operand, indices, updates]
    if _known_value(trace, indices) is None:
        return _secret_scatter(trace, eqn, ins, dev, loc)
    n, m = operand.type.size, updates.type.size
    if n * m > _LARGEST_SCATTER:
        raise TraceError(f"{loc}: {eqn.primitive.name} of {m} updates into {n} elements on "
                         f"MPC: at most {_LARGEST_SCATTER} pairs")
    known = _known_indices(trace, eqn, indices, loc)
    dtype = eqn.invars[0].aval.dtype      # the update_jaxpr combines values of this dtype
    one_hot = np.eye(m, dtype=dtype).reshape((m,) + updates.type.shape)
    zeros = np.zeros(operand.type.shape, dtype)
    numbers, mode = eqn.params["dimension_numbers"], eqn.params["mode"]
    hits = np.asarray(jax.vmap(lambda row: jax.lax.scatter_add(zeros, known, row, numbers,
                                                               mode=mode))(one_hot)).reshape(m, n)
    layers = []
    for j in range(m):
        landed = np.nonzero(hits[j])[0]
        if landed.size:
            target = landed[0]
            layer = next((ly for ly in layers if ly[target] == m), None)
            if layer is None:
                layer = np.full(n, m, np.int64)
                layers.append(layer)
            layer[target] = j
    t = _aval_type(eqn.outvars[0].aval, dev)
    if not layers:
        return [operand]
    padding = _constant(trace, np.asarray(identity, _NP[updates.type.dtype]), dev, loc)
    flat = _flat(trace, updates, dev, loc)
    padded = trace.emit("pad", [flat, padding], [flat.type.with_(shape=(m + 1,))],
                        {"config": ((0, 1, 0),)}, loc).result
    total = operand
    for layer in layers:
        moved = _take(trace, padded, layer.reshape(t.shape), t, loc)
        (total,) = _inline_function(trace, join, [total, moved], dev)
    return [total]


def _window_positions(shape, p):
    """(window size, *output shape): the flat input element each output reads at each
    window offset; -1 where the window covers padding."""
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    for axis, d in enumerate(p["base_dilation"]):
        if d > 1:
            n = index.shape[axis]
            spread = np.full(index.shape[:axis] + ((n - 1) * d + 1,) + index.shape[axis + 1:], -1)
            spread[(slice(None),) * axis + (slice(None, None, d),)] = index
            index = spread
    if any(lo < 0 or hi < 0 for lo, hi in p["padding"]):
        raise NotImplementedError("reduce_window with negative padding")
    index = np.pad(index, p["padding"], constant_values=-1)
    dims, strides, dil = p["window_dimensions"], p["window_strides"], p["window_dilation"]
    out = tuple((n - (w - 1) * d - 1) // st + 1
                for n, w, st, d in zip(index.shape, dims, strides, dil))
    reads = []
    for offset in np.ndindex(*dims):
        reads.append(index[tuple(slice(o * d, o * d + (k - 1) * st + 1, st)
                                 for o, d, k, st in zip(offset, dil, out, strides))])
    return np.stack(reads)


# max-pooling pads with this instead of -inf (no fixed-point encoding); inputs stay far above
_POOL_FLOOR = -2.0 ** 30
# scatter primitive -> (combine, its identity, the reduction over updates that share a
# target when their positions are secret; None: a weighted sum does it)
_SCATTER_COMBINERS = {"scatter-add": (jnp.add, 0, None), "scatter-mul": (jnp.multiply, 1, jnp.prod),
                      "scatter-max": (jnp.maximum, _POOL_FLOOR, jnp.max),
                      "scatter-min": (jnp.minimum, -_POOL_FLOOR, jnp.min)}


def _reduce_window(reduce, padding_value):
    """Pooling: one take gathers every window offset along a new leading axis, which
    ``reduce`` (a reduce_* rule) then folds."""
    def rule(trace, eqn, ins, dev, loc):
        (x,) = ins
        reads = _window_positions(x.type.shape, eqn.params)
        fill = _constant(trace, np.asarray(padding_value, _NP[x.type.dtype]), dev, loc)
        flat = _flat(trace, x, dev, loc)
        padded = trace.emit("pad", [flat, fill], [flat.type.with_(shape=(x.type.size + 1,))],
                            {"config": ((0, 1, 0),)}, loc).result
        reads = np.where(reads < 0, x.type.size, reads)
        stacked = _take(trace, padded, reads, x.type.with_(shape=reads.shape, place=dev.name),
                        loc)
        return reduce(trace, _Params(axes=(0,)), [stacked], dev, loc)
    return rule


def _cumulative(combine):
    """cumsum/cumprod/cummax/cummin: a log-depth associative scan of supported ops."""
    def build(params):
        return lambda x: jax.lax.associative_scan(combine, x, reverse=params["reverse"],
                                                  axis=params["axis"])
    return _macro(build)


# keys are padded to a power of two with this, above any input a sort should see
_SORT_CEILING = 2.0 ** 30


def _bitonic_sort(params):
    """lax.sort as a bitonic network: log2(n)(log2(n)+1)/2 layers of n/2 compare-exchanges,
    each pair moved by known positions. With payload operands (argsort) the comparison
    breaks ties by original position, so the order is the stable one JAX returns."""
    dim, num_keys = params["dimension"], params["num_keys"]

    def fn(*operands):
        ops = [jnp.moveaxis(o, dim, -1) for o in operands]
        n = ops[0].shape[-1]
        size = 1 << max(0, (n - 1).bit_length())
        stable = len(ops) > num_keys
        if stable:
            ops.append(jax.lax.broadcasted_iota(jnp.int32, ops[0].shape, ops[0].ndim - 1))
        if size > n:
            widths = [(0, 0)] * (ops[0].ndim - 1) + [(0, size - n)]
            ops = [jnp.pad(o, widths, constant_values=(_SORT_CEILING if i < num_keys else 0)
                           if not stable or i < len(ops) - 1 else size)
                   for i, o in enumerate(ops)]
        ties = list(range(num_keys)) + ([len(ops) - 1] if stable else [])
        k = 2
        while k <= size:
            j = k // 2
            while j >= 1:
                i = np.arange(size)
                lo = i[i < (i ^ j)]
                hi = lo ^ j
                ascending = (lo & k) == 0
                first, second = np.where(ascending, lo, hi), np.where(ascending, hi, lo)
                a = [o[..., first] for o in ops]
                b = [o[..., second] for o in ops]
                swap = None
                for t in reversed(ties):            # lexicographic: (keys..., position)
                    less = b[t] < a[t]
                    swap = less if swap is None else less | ((b[t] == a[t]) & swap)
                order = np.argsort(np.concatenate([first, second]))
                new_ops = []
                for x, y in zip(a, b):
                    low = jnp.where(swap, y, x)
                    high = x + y - low if x.dtype != jnp.bool_ else jnp.where(swap, x, y)
                    new_ops.append(jnp.concatenate([low, high], axis=-1)[..., order])
                ops = new_ops
                j //= 2
            k *= 2
        outs = [jnp.moveaxis(o[..., :n], -1, dim) for o in ops[:len(operands)]]
        return tuple(outs)
    return fn


def _top_k(params):
    """lax.top_k: a stable sort of the negated values along the last axis, first k."""
    k = params["k"]

    def fn(x):
        index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
        neg, idx = jax.lax.sort((-x, index), dimension=x.ndim - 1, num_keys=1)
        return -neg[..., :k], idx[..., :k]
    return fn


def _always_finite(trace, eqn, ins, dev, loc):
    """Fixed-point values have no infinities or NaNs."""
    return [_constant(trace, np.ones(eqn.outvars[0].aval.shape, np.bool_), dev, loc)]


def _pow(trace, eqn, ins, dev, loc):
    """x ** y: a known integer y is a product chain; y = +-1/2 is sqrt/rsqrt; otherwise
    exp(y log x), for x > 0 (log's range and error apply)."""
    y = _known_value(trace, ins[1])
    if y is not None and y.size and np.all(y == y.flat[0]):
        e = float(y.flat[0])
        if e == int(e) and abs(e) <= 64:
            return _integer_pow(trace, _Params(y=int(e)), ins[:1], dev, loc)
        if e in (0.5, -0.5):
            return PRIMITIVES["sqrt" if e > 0 else "rsqrt"](trace, eqn, ins[:1], dev, loc)
    return _POW_BY_LOGS(trace, eqn, ins, dev, loc)


_lax = jax.lax


def _broadcasting(fn):
    """JAX's elementwise primitives take scalars beside arrays; the expansions want equal shapes."""
    return lambda params: lambda *xs: fn(*jnp.broadcast_arrays(*xs))


_MACROS = {
    "gt": _broadcasting(lambda a, b: _lax.lt(b, a)),
    "le": _broadcasting(lambda a, b: _lax.bitwise_not(_lax.lt(b, a))),
    "ge": _broadcasting(lambda a, b: _lax.bitwise_not(_lax.lt(a, b))),
    "ne": _broadcasting(lambda a, b: _lax.bitwise_not(_lax.eq(a, b))),
    "max": _broadcasting(lambda a, b: _lax.select(_lax.lt(a, b), b, a)),
    "min": _broadcasting(lambda a, b: _lax.select(_lax.lt(b, a), b, a)),
    "abs": _broadcasting(lambda x: _lax.select(_lax.lt(x, jnp.zeros_like(x)), -x, x)),
    "sign": _broadcasting(lambda x: (_lax.lt(jnp.zeros_like(x), x).astype(x.dtype)
                                     - _lax.lt(x, jnp.zeros_like(x)).astype(x.dtype))),
    "clamp": _broadcasting(lambda lo, x, hi: jnp.minimum(jnp.maximum(x, lo), hi)),
    "square": _broadcasting(lambda x: x * x),
}

PRIMITIVES = {
    "add": _elementwise("add"), "sub": _elementwise("sub"), "mul": _elementwise("mul"),
    "neg": _simple("neg"), "div": _elementwise("div"),
    "add_any": _elementwise("add"), "iota": _iota,
    "dot_general": _simple("dot_general", _dot_attrs),
    "conv_general_dilated": _simple("conv_general_dilated", _conv_attrs),
    "reduce_sum": _simple("reduce_sum", lambda p: {"axes": _ints(p["axes"])}),
    "broadcast_in_dim": _simple("broadcast_in_dim", lambda p: {
        "shape": _ints(p["shape"]), "broadcast_dimensions": _ints(p["broadcast_dimensions"])}),
    "reshape": _simple("reshape", _reshape_attrs),
    "transpose": _simple("transpose", lambda p: {"permutation": _ints(p["permutation"])}),
    "squeeze": _simple("squeeze", lambda p: {"dimensions": _ints(p["dimensions"])}),
    "slice": _simple("slice", _slice_attrs),
    "concatenate": _simple("concatenate", lambda p: {"dimension": int(p["dimension"])}),
    "pad": _simple("pad", lambda p: {"config": tuple(_ints(c) for c in p["padding_config"])}),
    "convert_element_type": _convert,
    "integer_pow": _integer_pow,
    "copy": _alias, "copy_p": _alias, "stop_gradient": _alias,
    "lt": _elementwise("lt"), "eq": _elementwise("eq"),
    "and": _elementwise("and"), "or": _elementwise("or"), "xor": _elementwise("xor"),
    "not": _simple("not"), "select_n": _select_n, "stack": _stack,
    "scan": _scan, "cond": _cond, "while": _while,
    "shift_left": _shift("shl"), "shift_right_logical": _shift("lshr"),
    "shift_right_arithmetic": _shift("ashr"),
    "reduce_max": _reduce_tree(jnp.maximum), "reduce_min": _reduce_tree(jnp.minimum),
    "argmax": _arg_tree(lambda lo, hi: _lax.lt(lo, hi)),
    "argmin": _arg_tree(lambda lo, hi: _lax.lt(hi, lo)),
}
PRIMITIVES.update({name: _macro(build) for name, build in _MACROS.items()})
PRIMITIVES.update({name: _approximation(name)
                   for name in ("exp", "log", "logistic", "tanh", "sqrt", "rsqrt", "erf")})
PRIMITIVES["erfc"] = _macro(lambda params: lambda x: 1.0 - jax.scipy.special.erf(x))
PRIMITIVES["sin"] = _macro(_approx_attr("sin"))
PRIMITIVES["cos"] = _macro(_approx_attr("cos"))
PRIMITIVES["tan"] = _macro(_approx_attr("tan"))
PRIMITIVES["atan2"] = _macro(_approx_attr("atan2"))   # broadcasts a scalar operand itself
PRIMITIVES.update({name: _approximation(name) for name in (
    "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh")})
PRIMITIVES.update({  # exact on the fixed-point value; ceil(x) = -floor(-x) costs one floor
    "floor": _simple("floor"), "ceil": _macro(lambda params: lambda x: -_lax.floor(-x)),
    "round": _simple("round", lambda p: {
        "rounding_method": _lax.RoundingMethod(p["rounding_method"]).name.lower()})})
PRIMITIVES["div"] = _div

# What an HE device evaluates: functions linear in its ciphertexts (a product needs one
# plaintext side; the protocol refuses a product of two ciphertexts by name and line).
HE_PRIMITIVES = frozenset((
    "add", "sub", "neg", "mul", "div", "add_any", "iota", "dot_general", "conv_general_dilated",
    "reduce_sum", "broadcast_in_dim", "reshape", "transpose", "squeeze", "slice", "concatenate",
    "pad", "convert_element_type", "copy", "copy_p", "stop_gradient", "scan", "cond",
    "gather", "dynamic_slice", "rev", "tile", "dynamic_update_slice", "scatter", "scatter-add",
    "reduce_window_sum", "cumsum"))
PRIMITIVES["max"] = _identity_bound(PRIMITIVES["max"], -np.inf)


def _self_comparison(rule, answer):
    """x == x (jnp.isnan writes x != x) is known without comparing: fixed point has no NaN."""
    def folded(trace, eqn, ins, dev, loc):
        if ins[0] is ins[1]:
            return [_constant(trace, np.full(eqn.outvars[0].aval.shape, answer), dev, loc)]
        return rule(trace, eqn, ins, dev, loc)
    return folded


for _name, _answer in (("eq", True), ("le", True), ("ge", True),
                       ("ne", False), ("lt", False), ("gt", False)):
    PRIMITIVES[_name] = _self_comparison(PRIMITIVES[_name], _answer)
_RECIPROCAL = _approximation("reciprocal")
_POW_BY_LOGS = _macro(lambda params: lambda x, y: jnp.exp(y * jnp.log(x)))


def _sum_leading(trace, eqn, ins, dev, loc):
    (x,) = ins
    return trace.emit("reduce_sum", [x], [x.type.with_(shape=x.type.shape[1:])], {"axes": (0,)},
                      loc).results


PRIMITIVES.update({
    "gather": _movement({0}), "dynamic_slice": _movement({0}), "rev": _movement({0}),
    "tile": _movement({0}), "dynamic_update_slice": _movement({0, 1}),
    "scatter": _movement({0, 2}), "scatter-add": _scatter_combining,
    "scatter-mul": _scatter_combining, "scatter-max": _scatter_combining,
    "scatter-min": _scatter_combining,
    "reduce_window_sum": _reduce_window(_sum_leading, 0),
    "reduce_window_max": _reduce_window(PRIMITIVES["reduce_max"], _POOL_FLOOR),
    "reduce_window_min": _reduce_window(PRIMITIVES["reduce_min"], -_POOL_FLOOR),
    "cumsum": _cumulative(jnp.add), "cumprod": _cumulative(jnp.multiply),
    "cummax": _cumulative(jnp.maximum), "cummin": _cumulative(jnp.minimum),
    "reduce_prod": _reduce_tree(jnp.multiply),
    "is_finite": _always_finite, "pow": _pow, "rem": _rem,
    "sort": _macro(_bitonic_sort), "top_k": _macro(_top_k),
    "reduce_or": _reduce_tree(jnp.logical_or), "reduce_and": _reduce_tree(jnp.logical_and),
    "log1p": _macro(lambda params: lambda x: jnp.log(1.0 + x)),
    "expm1": _macro(lambda params: lambda x: jnp.exp(x) - 1.0),
    "exp2": _macro(lambda params: lambda x: jnp.exp(x * np.float32(np.log(2.0)))),
})
PRIMITIVES["min"] = _identity_bound(PRIMITIVES["min"], np.inf)


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


# what an infinity known when compiling stands for in a select on secrets (slogdet's
# -inf for a singular matrix), which has no fixed-point encoding: beyond any value, yet
# small enough for fixed-point products (exp's clamp multiplies it by 0 or 1)
_INFINITY = 2.0 ** 20


def _finite_cases(rule):
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


def _linalg(name):
    def build(params):
        from . import linalg
        return functools.partial(getattr(linalg, name), **params)
    return _macro(build)


PRIMITIVES.update({
    "lu": _linalg("lu"), "triangular_solve": _linalg("triangular_solve"),
    "cholesky": _linalg("cholesky"), "custom_linear_solve": _custom_linear_solve,
    "platform_index": _platform_index,
})
PRIMITIVES["select_n"] = _finite_cases(PRIMITIVES["select_n"])
# on matrices known when compiling, JAX factorizes exactly
_APPROXIMATED = _APPROXIMATED | {"lu", "triangular_solve", "cholesky"}
