"""Data movement: layout ops, gathers and scatters, dynamic slices, and pooling windows.

Reshapes, transposes, broadcasts, slices, concatenation and padding are one IR op
each. An op that moves elements by indices known when compiling (a gather, a
scatter, rev, tile, a dynamic slice at known starts) has every output element one
input element (or a padding value), so JAX computes, on element numbers instead of
values, which input each output reads, and the whole op is one ``take`` of those
known positions: local on shares and on ciphertexts alike. Starts every party
learns only at run time (a loop's counter) keep the dynamic slice op itself;
secret indices go to ``mixc.translate_secret_index``. Scatters that combine
(+, *, max, min) and pooling (``reduce_window``) take their operands in layers of
known positions and combine or reduce them; so does the gradient of max pooling
(``select_and_scatter_add``), after a one-hot of each window's maximum.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .translate_core import (_NP, _aval_type, _constant, _inline_function, _ints,
                             _known_value, _Params, _simple, register)
from .translate_reduce import _REDUCE_MAX, _REDUCE_MIN
from .translate_secret_index import SECRET_INDEX, _secret_scatter

# Layout: one IR op each.


def _reshape_attrs(p):
    if p.get("dimensions") is not None:
        raise NotImplementedError("reshape with a dimensions permutation")
    return {"new_sizes": _ints(p["new_sizes"])}


def _slice_attrs(p):
    start, limit = _ints(p["start_indices"]), _ints(p["limit_indices"])
    strides = _ints(p["strides"]) if p.get("strides") else (1,) * len(start)
    return {"start": start, "limit": limit, "strides": strides}


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


def _split(trace, eqn, ins, dev, loc):
    """jnp.split / array_split: one slice per piece."""
    (x,) = ins
    axis, start, pieces = int(eqn.params["axis"]), 0, []
    for size, var in zip(eqn.params["sizes"], eqn.outvars):
        begin, end = [0] * len(x.type.shape), list(x.type.shape)
        begin[axis], end[axis] = start, start + int(size)
        pieces.append(trace.emit("slice", [x], [_aval_type(var.aval, dev)],
                                 {"start": tuple(begin), "limit": tuple(end),
                                  "strides": (1,) * len(begin)}, loc).result)
        start += int(size)
    return pieces


def _unstack(trace, eqn, ins, dev, loc):
    """jnp.unstack: one slice per index along the axis, without that axis."""
    (x,) = ins
    axis, shape = int(eqn.params["axis"]), tuple(x.type.shape)
    pieces = []
    for i, var in enumerate(eqn.outvars):
        begin, end = [0] * len(shape), list(shape)
        begin[axis], end[axis] = i, i + 1
        piece = trace.emit("slice", [x], [x.type.with_(shape=tuple(b - a for a, b in zip(
            begin, end)), place=dev.name)], {"start": tuple(begin), "limit": tuple(end),
                                            "strides": (1,) * len(shape)}, loc).result
        t = _aval_type(var.aval, dev)
        pieces.append(trace.emit("reshape", [piece], [t], {"new_sizes": t.shape}, loc).result)
    return pieces


# Movement by indices known when compiling: one ``take``.

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


def _flat_with(trace, v, fill, dev, loc):
    """``v`` flattened, one element ``fill`` after it: the position a take reads where
    an output has nothing of ``v`` (a window's padding, no update)."""
    fill = _constant(trace, np.asarray(fill, _NP[v.type.dtype]), dev, loc)
    flat = _flat(trace, v, dev, loc)
    return trace.emit("pad", [flat, fill], [flat.type.with_(shape=(v.type.size + 1,))],
                      {"config": ((0, 1, 0),)}, loc).result


def _take(trace, source, positions, t, loc):
    if positions.size and (positions.min() < 0 or positions.max() >= source.type.size):
        raise TraceError(f"{loc}: index out of range (mixc does not fill or drop "
                         "out-of-range elements)")
    return trace.emit("take", [source], [t], {"indices": positions.reshape(-1).astype(np.int32),
                                              "shape": tuple(positions.shape)}, loc).result


def _movement(data):
    """A primitive that only moves elements of the operands numbered in ``data``; its
    other operands are indices."""
    def rule(trace, eqn, ins, dev, loc):
        name = eqn.primitive.name
        secret = [i for i, v in enumerate(ins) if i not in data and _known_value(trace, v) is None]
        if secret and name in _RUN_TIME_SLICES and all(ins[i] in trace.public for i in secret):
            return _run_time_slice(trace, eqn, ins, dev, loc)
        if secret and name in SECRET_INDEX:
            return SECRET_INDEX[name](trace, eqn, ins, dev, loc)
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


# Scatters that combine.

# max-pooling pads with this instead of -inf (no fixed-point encoding); inputs stay far above
_POOL_FLOOR = -2.0 ** 30
# scatter primitive -> (combine, its identity, the reduction over updates that share a
# target when their positions are secret; None: a weighted sum does it)
_SCATTER_COMBINERS = {"scatter-add": (jnp.add, 0, None), "scatter-mul": (jnp.multiply, 1, jnp.prod),
                      "scatter-max": (jnp.maximum, _POOL_FLOOR, jnp.max),
                      "scatter-min": (jnp.minimum, -_POOL_FLOOR, jnp.min)}
_LARGEST_SCATTER = 1 << 24    # output x update elements: where each update lands


def _scatter_combining(trace, eqn, ins, dev, loc):
    """operand combined (+, *, max, min) with the updates at their (known) positions: each
    update element's target is found by scattering one-hot rows; updates that share a
    target go in successive layers, one take per layer (padding slot m holds the
    combine's identity)."""
    operand, indices, updates = ins
    combiner = _SCATTER_COMBINERS[eqn.primitive.name]
    join, identity, _ = combiner
    start = _known_value(trace, operand)
    if start is not None and np.isinf(start).any():   # segment_max's -inf: no fixed point
        operand = _constant(trace, np.clip(start, _POOL_FLOOR, -_POOL_FLOOR).astype(start.dtype),
                            dev, loc)
        ins = [operand, indices, updates]
    if _known_value(trace, indices) is None:
        return _secret_scatter(trace, eqn, ins, dev, loc, combiner)
    n, m = operand.type.size, updates.type.size
    if n * m > _LARGEST_SCATTER:
        raise TraceError(f"{loc}: {eqn.primitive.name} of {m} updates into {n} elements on "
                         f"MPC: at most {_LARGEST_SCATTER} pairs")
    layers = _layers(_targets(eqn, _known_indices(trace, eqn, indices, loc), operand, updates),
                     n, m)
    if not layers:
        return [operand]
    t = _aval_type(eqn.outvars[0].aval, dev)
    padded = _flat_with(trace, updates, identity, dev, loc)
    total = operand
    for layer in layers:
        moved = _take(trace, padded, layer.reshape(t.shape), t, loc)
        (total,) = _inline_function(trace, join, [total, moved], dev)
    return [total]


def _targets(eqn, known, operand, updates):
    """[updates, operand elements]: where each update element lands (a row of zeros:
    dropped), from scattering a one-hot of each at the ``known`` indices."""
    m = updates.type.size
    dtype = eqn.invars[0].aval.dtype      # the update_jaxpr combines values of this dtype
    one_hot = np.eye(m, dtype=dtype).reshape((m,) + updates.type.shape)
    zeros = np.zeros(operand.type.shape, dtype)
    numbers, mode = eqn.params["dimension_numbers"], eqn.params["mode"]
    hits = jax.vmap(lambda row: jax.lax.scatter_add(zeros, known, row, numbers, mode=mode))
    return np.asarray(hits(one_hot)).reshape(m, operand.type.size)


def _layers(hits, n, m):
    """Take positions, one array of ``n`` per layer: the update each element receives in
    that layer, or ``m`` (the padding slot) for none. An update goes in the first layer
    whose slot for its target is still free."""
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
    return layers


# Pooling windows.

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


def _reduce_window(reduce, padding_value):
    """Pooling: one take gathers every window offset along a new leading axis, which
    ``reduce`` (a reduce_* rule) then folds."""
    def rule(trace, eqn, ins, dev, loc):
        (x,) = ins
        reads = _window_positions(x.type.shape, eqn.params)
        padded = _flat_with(trace, x, padding_value, dev, loc)
        reads = np.where(reads < 0, x.type.size, reads)
        stacked = _take(trace, padded, reads, x.type.with_(shape=reads.shape, place=dev.name),
                        loc)
        return reduce(trace, _Params(axes=(0,)), [stacked], dev, loc)
    return rule


def _select_and_scatter_add(trace, eqn, ins, dev, loc):
    """The gradient of max (min) pooling: each window's source value is added at the
    window's first largest (smallest) element, as XLA selects it. The windows are taken
    at known positions as pooling takes them; argmax's tree and one equality test per
    window element make a one-hot of each window's choice, which weighs the source
    value (one product); the weighted values go back to their known positions by
    layers of takes (one per window overlapping an element)."""
    source, operand = ins
    p = eqn.params
    rank = len(operand.type.shape)
    reads = _window_positions(operand.type.shape, {
        "window_dimensions": p["window_dimensions"], "window_strides": p["window_strides"],
        "padding": p["padding"], "base_dilation": (1,) * rank, "window_dilation": (1,) * rank})
    largest = p["select_prim"] is jax.lax.ge_p
    n = operand.type.size
    reads = np.where(reads < 0, n, reads)
    padded = _flat_with(trace, operand, _POOL_FLOOR if largest else -_POOL_FLOOR, dev, loc)
    windows = _take(trace, padded, reads, operand.type.with_(shape=reads.shape, place=dev.name),
                    loc)

    def weigh(windows, source):
        first = jnp.argmax(windows, axis=0) if largest else jnp.argmin(windows, axis=0)
        offsets = np.arange(reads.shape[0]).reshape((-1,) + (1,) * source.ndim)
        return jnp.where(first[None] == offsets, source[None], jnp.zeros_like(windows))
    (weighted,) = _inline_function(trace, weigh, [windows, source], dev)
    flat = _flat_with(trace, weighted, 0, dev, loc)
    t = _aval_type(eqn.outvars[0].aval, dev)
    total = None
    for layer in _layers_back(reads, n):
        moved = _take(trace, flat, layer.reshape(t.shape), t, loc)
        total = moved if total is None else trace.emit("add", [total, moved], [t], {}, loc).result
    if total is None:
        return [_constant(trace, np.zeros(t.shape, _NP[t.dtype]), dev, loc)]
    return [total]


def _layers_back(reads, n):
    """Take positions, one array of ``n`` per layer, that add the values read at
    ``reads`` (flat positions in [0, n]; n is padding) back where they were read: in
    layer l, each element takes its l-th reader, or ``reads.size`` (a zero) if none."""
    flat = reads.reshape(-1)
    order = np.argsort(flat, kind="stable")
    targets = flat[order]
    rank = np.arange(flat.size) - np.searchsorted(targets, targets, side="left")
    layers = []
    for layer_number in range(int(rank.max()) + 1 if flat.size else 0):
        chosen = (rank == layer_number) & (targets < n)
        if chosen.any():
            layer = np.full(n, flat.size, np.int64)
            layer[targets[chosen]] = order[chosen]
            layers.append(layer)
    return layers


def _sum_leading(trace, eqn, ins, dev, loc):
    """The sum over the leading axis: reduce_sum is one op, no tree."""
    (x,) = ins
    return trace.emit("reduce_sum", [x], [x.type.with_(shape=x.type.shape[1:])], {"axes": (0,)},
                      loc).results


register({
    "broadcast_in_dim": _simple("broadcast_in_dim", lambda p: {
        "shape": _ints(p["shape"]), "broadcast_dimensions": _ints(p["broadcast_dimensions"])}),
    "reshape": _simple("reshape", _reshape_attrs),
    "transpose": _simple("transpose", lambda p: {"permutation": _ints(p["permutation"])}),
    "squeeze": _simple("squeeze", lambda p: {"dimensions": _ints(p["dimensions"])}),
    "slice": _simple("slice", _slice_attrs),
    "concatenate": _simple("concatenate", lambda p: {"dimension": int(p["dimension"])}),
    "pad": _simple("pad", lambda p: {"config": tuple(_ints(c) for c in p["padding_config"])}),
    "stack": _stack, "split": _split, "unstack": _unstack,
    "gather": _movement({0}), "dynamic_slice": _movement({0}), "rev": _movement({0}),
    "tile": _movement({0}), "dynamic_update_slice": _movement({0, 1}),
    "scatter": _movement({0, 2}), "scatter-add": _scatter_combining,
    "scatter-mul": _scatter_combining, "scatter-max": _scatter_combining,
    "scatter-min": _scatter_combining,
    "reduce_window_sum": _reduce_window(_sum_leading, 0),
    "reduce_window_max": _reduce_window(_REDUCE_MAX, _POOL_FLOOR),
    "reduce_window_min": _reduce_window(_REDUCE_MIN, -_POOL_FLOOR),
    "select_and_scatter_add": _select_and_scatter_add,
}, linear=("broadcast_in_dim", "reshape", "transpose", "squeeze", "slice", "concatenate", "pad",
           "split", "unstack", "gather", "dynamic_slice", "rev", "tile", "dynamic_update_slice", "scatter",
           "scatter-add", "reduce_window_sum"))
