"""Control flow: lax.scan, lax.while_loop and lax.cond / lax.switch.

Secret values cannot steer the program. A loop runs a trip count known when
compiling: a scan's length, or the count a while loop's condition gives on
values known then. Where loops stay loops (``keeps_loops``) that becomes one
``loop`` op whose body the runtime repeats, reading and writing the scanned
rows at the run-time step index; elsewhere the body is copied once per step.
A cond whose index is known runs its branch; with a secret index every branch
runs and the index selects among the results.
"""
from __future__ import annotations

import jax
import numpy as np

from .errors import TraceError
from .ir.core import TensorType
from .translate_core import (_NP, _aval_type, _constant, _inline, _known_value, _where,
                             register)


def keeps_loops(dev):
    """Whether loops on ``dev`` stay ``loop`` ops: on MPC devices, with a dealer or
    dealer-free (``offline: he``: each iteration makes its own correlations at the start
    of the body, ``dealerfree``), on three parties (a replicated share's pair carried,
    ``protocols.rep3``), and on HE devices, where a carried ciphertext keeps one layout
    and fraction bits in every iteration (``protocols.he.HeCarry`` normalises what enters
    and what goes round). A scan's row of a ciphertext (xs, ys) at the run-time step is a
    refresh per iteration, since a ciphertext's elements sit at positions fixed when
    compiling; ``unroll=True`` trades that traffic for a copy of the body per step."""
    return dev.kind in ("MPC", "HE")


def _i32(trace, value, dev, loc):
    return _constant(trace, np.asarray(value, np.int32), dev, loc)


def _public_op(trace, op, a, b, dev, loc):
    return trace.emit(op, [a, b], [TensorType("i32", (), dev.name)], {}, loc).result


# lax.scan

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

    def body(args):
        carried, ys_bufs = list(args[:n_carry]), list(args[n_carry:])
        index = trace.emit("loop_index", (), [TensorType("i32", (), dev.name)], {}, loc).result
        zero = _i32(trace, 0, dev, loc)
        for j in range(k):
            step = _step_index(trace, index, k, j, length, p["reverse"], dev, loc)
            rows = [_row_at(trace, x, step, zero, dev, loc) for x in xs]
            outs = _inline(trace, p["jaxpr"], consts + carried + rows, dev)
            trace.frame = frame
            carried, ys = outs[:n_carry], outs[n_carry:]
            ys_bufs = [_write_row_at(trace, buf, y, step, zero, dev, loc)
                       for buf, y in zip(ys_bufs, ys)]
        return carried + ys_bufs

    return trace.loop(length // k, list(carry) + buffers, body, loc, place=dev.name)


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


def _row_at(trace, x, step, zero, dev, loc):
    """Row ``step`` (known at run time) of ``x``, without its leading axis."""
    shape = x.type.shape
    row_t = x.type.with_(shape=(1,) + shape[1:], place=dev.name)
    row = trace.emit("dynamic_slice", [x, step] + [zero] * (len(shape) - 1), [row_t],
                     {"sizes": (1,) + shape[1:]}, loc).result
    return trace.emit("reshape", [row], [row.type.with_(shape=shape[1:])],
                      {"new_sizes": shape[1:]}, loc).result


def _write_row_at(trace, buf, y, step, zero, dev, loc):
    """``buf`` with ``y`` as its row ``step`` (known at run time)."""
    row = trace.emit("reshape", [y], [y.type.with_(shape=(1,) + y.type.shape, place=dev.name)],
                     {"new_sizes": (1,) + y.type.shape}, loc).result
    return trace.emit("dynamic_update_slice", [buf, row, step] + [zero] * len(y.type.shape),
                      [buf.type], {}, loc).result


def _scan_unrolled(trace, eqn, ins, dev, loc):
    """A scan as one copy of its body per step, each reading its rows at known positions."""
    p = eqn.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    frame = trace.frame
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    per_step = []
    for i in (reversed(range(length)) if p["reverse"] else range(length)):
        x_i = [_row(trace, x, i, dev, loc) for x in xs]
        outs = _inline(trace, p["jaxpr"], consts + carry + x_i, dev)
        trace.frame = frame
        carry, ys = outs[:n_carry], outs[n_carry:]
        per_step.append(ys)
    if p["reverse"]:
        per_step.reverse()
    stacked = [_stacked(trace, [ys[j] for ys in per_step], _aval_type(var.aval, dev), dev, loc)
               for j, var in enumerate(eqn.outvars[n_carry:])]
    return list(carry) + stacked


def _row(trace, x, i, dev, loc):
    """Row ``i`` (known when compiling) of ``x``, without its leading axis."""
    shape = x.type.shape
    row = trace.emit("slice", [x], [x.type.with_(shape=(1,) + shape[1:], place=dev.name)],
                     {"start": (i,) + (0,) * (len(shape) - 1), "limit": (i + 1,) + shape[1:],
                      "strides": (1,) * len(shape)}, loc).result
    return trace.emit("reshape", [row], [row.type.with_(shape=shape[1:])],
                      {"new_sizes": shape[1:]}, loc).result


def _stacked(trace, ys, t, dev, loc):
    """One scan output of type ``t``: its per-step values ``ys`` along a new leading axis."""
    if not ys:
        return _constant(trace, np.zeros(t.shape, _NP[t.dtype]), dev, loc)
    rows = [trace.emit("reshape", [y], [t.with_(shape=(1,) + t.shape[1:])],
                       {"new_sizes": (1,) + t.shape[1:]}, loc).result for y in ys]
    return trace.emit("concatenate", rows, [t], {"dimension": 0}, loc).result \
        if len(rows) > 1 else rows[0]


# lax.while_loop

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


_LONGEST_WHILE = 100_000


def _while_trip_count(trace, p, ins, frame, dev):
    """How many times a while loop runs, from the carried values its condition reads
    (and those they are computed from), which must be known when compiling: the
    condition and those values' updates run in JAX, step by step."""
    from jax.extend.core import jaxpr_as_fun
    nc, nb = int(p["cond_nconsts"]), int(p["body_nconsts"])
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]
    n_carry = len(ins) - nc - nb
    steering, needed = _steering(cond.jaxpr, body.jaxpr, nc, nb)
    values = {}
    for i in needed:
        values[i] = _known_value(trace, ins[i])
        if values[i] is None:
            raise TraceError(f"{_where(frame)}: lax.while_loop (or fori_loop with traced "
                             f"bounds) on {dev.kind} device {dev.name!r}: its condition depends "
                             "on secret data, so the trip count would too; use a Python loop, "
                             "lax.scan, or fori_loop with int bounds")

    def arg(i):   # the unread ones only fill their places
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


def _steering(cond, body, nc, nb):
    """(carried values that steer the loop, indices of the while's operands they need):
    those the condition reads, closed over the body's updates, and the constants of the
    condition and of those updates."""
    steering = {i - nc for i in _depends_on(cond, [0]) if i >= nc}
    while True:
        more = {i - nb for i in _depends_on(body, sorted(steering)) if i >= nb}
        if more <= steering:
            break
        steering |= more
    reads = set(range(nc)) & _depends_on(cond, [0])
    reads |= {nc + i for i in _depends_on(body, sorted(steering)) if i < nb}
    return steering, sorted(reads | {nc + nb + i for i in steering})


def _depends_on(jaxpr, outputs):
    """Indices of ``jaxpr``'s inputs that the outputs numbered ``outputs`` read."""
    from jax.extend.core import Literal
    needed = {jaxpr.outvars[i] for i in outputs if not isinstance(jaxpr.outvars[i], Literal)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    return {i for i, v in enumerate(jaxpr.invars) if v in needed}


# lax.cond / lax.switch

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
    if dev.kind == "HE":
        raise TraceError(f"{_where(frame)}: lax.cond on a ciphertext index selects between "
                         f"branches, which is not linear: HE device {dev.name!r} cannot run it")
    results = []
    for branch in branches:
        results.append(_inline(trace, branch, operands, dev))
        trace.frame = frame
    return _select_branch(trace, eqn, index, results, dev, loc)


def _select_branch(trace, eqn, index, results, dev, loc):
    """The results of the branch a secret ``index`` picks: one select per later branch."""
    made_by = trace.producer.get(index)
    scalar_bool = TensorType("bool", (), dev.name)
    source = made_by.operands[0] if made_by is not None and made_by.op == "convert_element_type" \
        else None
    chosen = results[0]
    for k in range(1, len(results)):
        if len(results) == 2 and source is not None and source.type.dtype == "bool":
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


register({"scan": _scan, "while": _while, "cond": _cond}, linear=("scan", "while", "cond"))
