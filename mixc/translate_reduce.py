"""Reductions, scans along an axis, and sorting.

A sum is one IR op (local on shares). Every other reduction needs comparisons
or products, which cost a round each: max, min, product, any/all and
argmax/argmin are log-depth trees of pairwise combines, cumulative ops a
log-depth associative scan, and sort a bitonic network whose compare-exchanges
move elements by known positions; all are JAX functions of supported ops,
traced and inlined. ``jnp.searchsorted`` (and so ``jnp.interp``, ``jnp.digitize``)
counts the sorted array's elements below each query: one layer of comparisons.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .translate_core import _inline_function, _ints, _macro, _simple, register, register_calls

_lax = jax.lax


def _reduce_tree(combine):
    """A reduction over axes (max, min, product, any, all) as a log-depth tree of
    pairwise combines of halves."""
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
                ops = _compare_exchange(ops, ties, size, k, j)
                j //= 2
            k *= 2
        outs = [jnp.moveaxis(o[..., :n], -1, dim) for o in ops[:len(operands)]]
        return tuple(outs)
    return fn


def _compare_exchange(ops, ties, size, k, j):
    """One layer of the bitonic network (merge width ``k``, pair distance ``j``): each
    pair ordered ascending or descending by the operands numbered ``ties``, compared
    lexicographically; every operand moves along."""
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
    return new_ops


def _top_k(params):
    """lax.top_k: a stable sort of the negated values along the last axis, first k."""
    k = params["k"]

    def fn(x):
        index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
        neg, idx = jax.lax.sort((-x, index), dimension=x.ndim - 1, num_keys=1)
        return -neg[..., :k], idx[..., :k]
    return fn


def _searchsorted(side):
    """jnp.searchsorted(a, v, side) of a sorted ``a``: how many elements of ``a`` lie
    below each ``v`` (left), or not above it (right). JAX's binary search would read
    ``a`` at secret positions in each of its log n steps; counting costs n comparisons
    per query, all in one layer, and a local sum."""
    def rule(trace, eqn, ins, dev, loc):
        dtype = eqn.outvars[0].aval.dtype

        def count(a, v):
            below = a < v[..., None] if side == "left" else a <= v[..., None]
            return jnp.sum(below, axis=-1, dtype=dtype)
        return _inline_function(trace, count, ins, dev)
    return rule


# the rules pooling (mixc.translate_movement) folds its windows with
_REDUCE_MAX = _reduce_tree(jnp.maximum)
_REDUCE_MIN = _reduce_tree(jnp.minimum)

register({
    "reduce_sum": _simple("reduce_sum", lambda p: {"axes": _ints(p["axes"])}),
    "reduce_max": _REDUCE_MAX, "reduce_min": _REDUCE_MIN,
    "reduce_prod": _reduce_tree(jnp.multiply),
    "reduce_or": _reduce_tree(jnp.logical_or), "reduce_and": _reduce_tree(jnp.logical_and),
    "argmax": _arg_tree(lambda lo, hi: _lax.lt(lo, hi)),
    "argmin": _arg_tree(lambda lo, hi: _lax.lt(hi, lo)),
    "cumsum": _cumulative(jnp.add), "cumprod": _cumulative(jnp.multiply),
    "cummax": _cumulative(jnp.maximum), "cummin": _cumulative(jnp.minimum),
    "cumlogsumexp": _cumulative(jnp.logaddexp),
    "sort": _macro(_bitonic_sort), "top_k": _macro(_top_k),
}, linear=("reduce_sum", "cumsum"), approximated=("cumlogsumexp",))
register_calls({"searchsorted": [
    (functools.partial(jnp.searchsorted, side=side), _searchsorted(side))
    for side in ("left", "right")]})
