"""Gathers and scatters at secret indices: one-hot products.

No party may learn where a secret index points, so every candidate position is
touched: the candidate windows are taken at known positions (local on shares),
and a one-hot of each index among the candidates (one equality test per index
and candidate) picks or places the windows by a matrix product. The cost grows
with indices x candidates, bounded by ``_LARGEST_ONE_HOT``.
``mixc.translate_movement`` sends an op here when one of its index operands is
secret (``SECRET_INDEX``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .translate_core import _inline_function, _known_value

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


# gather

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
    paired_size = int(np.prod([shape[d] for d in dn.operand_batching_dims]))
    perm = _gather_result_order(dn, len(eqn.outvars[0].aval.shape), paired, free,
                                len(index_batch))

    def fn(x, idx):
        as_int = x.dtype == np.bool_
        if as_int:
            x = x.astype(jnp.int32)
        windows = _candidate_windows(x, shape, sizes, indexed, kept, dn.operand_batching_dims)
        windows = windows.reshape(paired_size, int(np.prod(counts)), -1)
        idx = jnp.transpose(idx, list(paired) + free + [idx.ndim - 1])
        idx = idx.reshape(paired_size, -1, len(indexed))
        picked = jnp.matmul(_one_hot_starts(idx, counts, clip, x.dtype), windows)
        batch_dims = [index_batch[j] for j in paired + tuple(free)]
        picked = picked.reshape(batch_dims + [w for d, w in zip(kept, window)
                                              if d not in dn.collapsed_slice_dims])
        out = jnp.transpose(picked, perm)
        return out > 0 if as_int else out
    return _inline_function(trace, fn, ins, dev)


def _candidate_windows(x, shape, sizes, indexed, kept, batching):
    """``x`` as [operand batching dims, candidate starts, window (kept dims, operand
    order)]: the windows of every start along the ``indexed`` dims, at known positions."""
    # last dim first, so the axis numbers of the dims still to do hold
    for d in reversed(range(len(shape))):
        if d in indexed:
            count = shape[d] - sizes[d] + 1
            x = jnp.take(x, np.arange(count)[:, None] + np.arange(sizes[d])[None, :], axis=d)
        elif d in kept:
            x = jax.lax.slice_in_dim(x, 0, sizes[d], axis=d)
    axis_of = np.cumsum([0] + [2 if d in indexed else 1 for d in range(len(shape))])
    order = ([axis_of[d] for d in batching] + [axis_of[d] for d in indexed]
             + [axis_of[d] + (d in indexed) for d in kept])
    return jnp.transpose(x, order)


def _gather_result_order(dn, out_rank, paired, free, n_batch):
    """The transpose from the picked windows' axes (index batch dims, paired first, then
    the window's offset dims in operand order) to the gather's result axes."""
    batch_at = [j for j in range(out_rank) if j not in dn.offset_dims]
    source = {j: n for n, j in enumerate(list(paired) + free)}
    perm = [0] * out_rank
    for n, j in enumerate(batch_at):
        perm[j] = source[n]
    for n, j in enumerate(sorted(dn.offset_dims)):
        perm[j] = n_batch + n
    return perm


# scatter

def _secret_scatter(trace, eqn, ins, dev, loc, combiner=(None, 0, None)):
    """x.at[idx].set(v) / .add(v) / .mul, .max, .min with secret indices: a one-hot of
    each index vector among the candidate starts (for set, only the last update per start:
    JAX leaves the winner unspecified) weighs the updates in one matrix product, or, for
    ``combiner`` (combine, its identity, the reduction over updates sharing a target;
    None: a weighted sum does it), selects them for that reduction; placing the windows
    at the candidates is public, so local. Out-of-range updates are dropped (clamped in
    mode clip)."""
    dn = eqn.params["dimension_numbers"]
    if dn.operand_batching_dims:
        raise TraceError(f"{loc}: {eqn.primitive.name} with secret indices and batching "
                         "dims is not implemented")
    sets = eqn.primitive.name == "scatter"
    clip = eqn.params["mode"] == jax.lax.GatherScatterMode.CLIP
    last_wins = sets and not eqn.params["unique_indices"]
    shape, update_shape = tuple(ins[0].type.shape), tuple(ins[2].type.shape)
    indexed = tuple(dn.scatter_dims_to_operand_dims)
    window_axes = iter(dn.update_window_dims)
    window = [1 if d in dn.inserted_window_dims else update_shape[next(window_axes)]
              for d in range(len(shape))]
    counts = [shape[d] - window[d] + 1 for d in indexed]
    scatter_axes = [j for j in range(len(update_shape)) if j not in dn.update_window_dims]
    batch = int(np.prod([update_shape[j] for j in scatter_axes]))
    _check_one_hot_size(loc, eqn.primitive.name, batch, counts)
    reduce = combiner[2]
    if reduce is not None and any(window[d] != 1 for d in indexed):
        raise TraceError(f"{loc}: {eqn.primitive.name} of windows with secret indices is "
                         "not implemented (only of single elements along the indexed axes)")

    def place(weighted):
        return _place(weighted, shape, indexed, window, counts)

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
            out = _scatter_reduced(x, hot, windows, counts + window, combiner, place)
        else:
            out = _scatter_weighted(x, hot, windows, counts + window, sets, place)
        return out > 0 if as_int else out
    return _inline_function(trace, fn, ins, dev)


def _place(weighted, shape, indexed, window, counts):
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


def _scatter_reduced(x, hot, windows, placed_shape, combiner, place):
    """x combined with the updates' reduction per target: every update where its one-hot
    (bool) is set, the identity elsewhere, then one reduction over the updates (a
    log-depth tree) and one combine with x."""
    join, identity, reduce = combiner
    unit = np.asarray(identity, x.dtype)
    spread = jnp.where(hot.reshape(hot.shape + (1,) * (windows.ndim - 1)),
                       windows[:, None], unit)
    reduced = reduce(spread, axis=0).reshape(placed_shape)
    return join(x, place(reduced - unit) + unit)


def _scatter_weighted(x, hot, windows, placed_shape, sets, place):
    """x plus the updates weighed by their one-hots; a set also takes away x where an
    update lands."""
    moved = jnp.tensordot(hot, windows, axes=((0,), (0,))).reshape(placed_shape)
    out = x + place(moved)
    if sets:
        covered = jnp.tensordot(hot, np.ones(windows.shape, x.dtype), axes=((0,), (0,)))
        out = out - x * place(covered.reshape(moved.shape))
    return out


# dynamic slices

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


# primitive -> its rule where an index operand is secret
SECRET_INDEX = {"gather": _secret_gather, "dynamic_slice": _secret_dynamic_slice,
                "scatter": _secret_scatter,
                "dynamic_update_slice": _secret_dynamic_update_slice}
