"""The jnp coverage table: every public function of jax.numpy (with jnp.linalg and
jnp.fft), jax.nn, and the jax.lax functions an author meets, run on small secret
inputs on a two-party MPC device under ``simulate`` and compared with plain JAX.

    python3 scripts/jnp_coverage.py [--devices FILE] [-o OUT.md] [NAME ...]
    python3 scripts/jnp_coverage.py --summary OUT.md [OUT.md ...]

``--devices`` runs the sweep on another device file's MPC device (default
examples/two_party.devices, whose table is docs/jnp_coverage.md); its table goes
to ``-o`` (nowhere without it). ``--summary`` reads tables written so, one per
device file, and writes their counts as the header table of docs/jnp_coverage.md.

Each function ends in exactly one class:
- supported: the secret result matches plain JAX (eigen- and singular vectors up to
  their signs); the table gives the largest absolute error seen and, where it is not
  ~0, the relative one;
- compile error: mixc refuses it while building, naming the op and the line;
- does not apply: it takes no array values (array creation from shapes, dtype
  and shape queries, printing, files), or needs values JAX itself only has
  when not tracing (results whose shape depends on the data);
- BUG: anything else (a wrong result, a crash, an error without a line, a built
  program failing while it runs). The
  script exits non-zero if there is one: each is a bug to fix or a clear error
  to add, never a row of the table.

Inputs are (3, 4) float32 arrays from N(0, 1) unless a function needs others:
the sweep tries, in order, normal values, positive ones (0.5 to 3), values in
(-0.9, 0.9), small integers and booleans, one to three operands, and takes the
first domain where plain JAX gives finite values. ``SPECS`` below fixes the call
of every function that needs more than arrays (axes, shapes, indices, ...).
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mixc  # noqa: E402
from mixc.bundle import build, simulate  # noqa: E402
from mixc.errors import MixcError  # noqa: E402

_lax = jax.lax
SHAPE = (3, 4)


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


DOMAINS = {
    "normal": lambda shape, seed: _normal(shape, seed),
    "positive": lambda shape, seed: np.random.default_rng(seed).uniform(0.5, 3, shape)
    .astype(np.float32),
    "unit": lambda shape, seed: np.random.default_rng(seed).uniform(-0.9, 0.9, shape)
    .astype(np.float32),
    "int": lambda shape, seed: np.random.default_rng(seed).integers(1, 9, shape)
    .astype(np.int32),
    "bool": lambda shape, seed: np.random.default_rng(seed).standard_normal(shape) > 0,
}


def arrays(*shapes, domain="normal"):
    return lambda: [DOMAINS[domain](s, seed) for seed, s in enumerate(shapes)]


def sorted_vector(n=5):
    return lambda: [np.sort(_normal((n,), 7))]


# name -> (function of the secret arrays, maker of those arrays); the rest are tried as
# fn(x), fn(x, y), fn(x, y, z) over the domains above.
IDX = np.array([2, 0, 1], np.int32)
SPECS = {
    # layout and movement with static arguments
    "append": (lambda x, y: jnp.append(x, y, axis=0), arrays(SHAPE, SHAPE)),
    "apply_along_axis": (lambda x: jnp.apply_along_axis(jnp.sum, 1, x), arrays(SHAPE)),
    "apply_over_axes": (lambda x: jnp.apply_over_axes(jnp.sum, x, [0]), arrays(SHAPE)),
    "array_split": (lambda x: jnp.array_split(x, 3, axis=1), arrays(SHAPE)),
    "broadcast_to": (lambda x: jnp.broadcast_to(x, (2, 3, 4)), arrays(SHAPE)),
    "choose": (lambda x, y: jnp.choose(np.array([[0, 1, 0, 1]] * 3), [x, y]),
               arrays(SHAPE, SHAPE)),
    "compress": (lambda x: jnp.compress(np.array([True, False, True]), x, axis=0),
                 arrays(SHAPE)),
    "delete": (lambda x: jnp.delete(x, 1, axis=1), arrays(SHAPE)),
    "diag": (lambda x: jnp.diag(x), arrays((4,))),
    "diagflat": (lambda x: jnp.diagflat(x), arrays((3,))),
    "dsplit": (lambda x: jnp.dsplit(x, 2), arrays((2, 2, 4))),
    "einsum": (lambda x, y: jnp.einsum("ij,kj->ik", x, y), arrays(SHAPE, SHAPE)),
    "expand_dims": (lambda x: jnp.expand_dims(x, 1), arrays(SHAPE)),
    "extract": (lambda x: jnp.extract(np.eye(3, 4, dtype=bool), x), arrays(SHAPE)),
    "fill_diagonal": (lambda x: jnp.fill_diagonal(x, 0.0, inplace=False), arrays((3, 3))),
    "hsplit": (lambda x: jnp.hsplit(x, 2), arrays(SHAPE)),
    "insert": (lambda x: jnp.insert(x, 1, 5.0, axis=1), arrays(SHAPE)),
    "moveaxis": (lambda x: jnp.moveaxis(x, 0, 1), arrays(SHAPE)),
    "pad": (lambda x: jnp.pad(x, ((1, 0), (0, 2))), arrays(SHAPE)),
    "partition": (lambda x: jnp.partition(x, 1), arrays(SHAPE)),
    "argpartition": (lambda x: jnp.argpartition(x, 1), arrays(SHAPE)),
    "place": (lambda x: jnp.place(x, np.eye(3, 4, dtype=bool), np.float32(2), inplace=False),
              arrays(SHAPE)),
    "put": (lambda x: jnp.put(x, np.array([0, 5]), np.float32(2), inplace=False),
            arrays(SHAPE)),
    "put_along_axis": (lambda x, v: jnp.put_along_axis(x, IDX[:, None], v, axis=1,
                                                       inplace=False),
                       arrays(SHAPE, (3, 1))),
    "repeat": (lambda x: jnp.repeat(x, 2, axis=0), arrays(SHAPE)),
    "reshape": (lambda x: jnp.reshape(x, (4, 3)), arrays(SHAPE)),
    "resize": (lambda x: jnp.resize(x, (2, 7)), arrays(SHAPE)),
    "roll": (lambda x: jnp.roll(x, 1, axis=1), arrays(SHAPE)),
    "rollaxis": (lambda x: jnp.rollaxis(x, 1), arrays(SHAPE)),
    "split": (lambda x: jnp.split(x, 2, axis=1), arrays(SHAPE)),
    "swapaxes": (lambda x: jnp.swapaxes(x, 0, 1), arrays(SHAPE)),
    "take": (lambda x: jnp.take(x, IDX, axis=0), arrays(SHAPE)),
    "take_along_axis": (lambda x: jnp.take_along_axis(x, np.argsort(np.arange(12).reshape(
        SHAPE) % 5, axis=1), axis=1), arrays(SHAPE)),
    "tile": (lambda x: jnp.tile(x, (2, 1)), arrays(SHAPE)),
    "unstack": (lambda x: jnp.unstack(x), arrays(SHAPE)),
    "vsplit": (lambda x: jnp.vsplit(x, 3), arrays(SHAPE)),
    "block": (lambda x, y: jnp.block([[x, y]]), arrays(SHAPE, SHAPE)),
    "stack": (lambda x, y: jnp.stack([x, y]), arrays(SHAPE, SHAPE)),
    "hstack": (lambda x, y: jnp.hstack([x, y]), arrays(SHAPE, SHAPE)),
    "vstack": (lambda x, y: jnp.vstack([x, y]), arrays(SHAPE, SHAPE)),
    "dstack": (lambda x, y: jnp.dstack([x, y]), arrays(SHAPE, SHAPE)),
    "column_stack": (lambda x, y: jnp.column_stack([x, y]), arrays(SHAPE, SHAPE)),
    "concatenate": (lambda x, y: jnp.concatenate([x, y]), arrays(SHAPE, SHAPE)),
    "concat": (lambda x, y: jnp.concat([x, y]), arrays(SHAPE, SHAPE)),
    "broadcast_arrays": (lambda x, y: jnp.broadcast_arrays(x, y), arrays(SHAPE, (4,))),
    "meshgrid": (lambda x, y: jnp.meshgrid(x, y), arrays((3,), (4,))),
    "ix_": (lambda x: jnp.ix_(x), arrays((4,))),
    "where": (lambda c, x, y: jnp.where(c > 0, x, y), arrays(SHAPE, SHAPE, SHAPE)),
    "select": (lambda x: jnp.select([x < -0.5, x < 0.5], [x * 2, -x], x), arrays(SHAPE)),
    "piecewise": (lambda x: jnp.piecewise(x, [x < 0, x >= 0], [lambda v: -v, lambda v: v * v]),
                  arrays(SHAPE)),
    "lexsort": (lambda x, y: jnp.lexsort((x, y)), arrays((6,), (6,))),
    "trim_zeros": (lambda x: jnp.trim_zeros(x), arrays((5,))),
    # products
    "dot": (lambda x, y: jnp.dot(x, y), arrays(SHAPE, (4, 2))),
    "matmul": (lambda x, y: jnp.matmul(x, y), arrays(SHAPE, (4, 2))),
    "matvec": (lambda x, y: jnp.matvec(x, y), arrays(SHAPE, (4,))),
    "vecmat": (lambda x, y: jnp.vecmat(x, y), arrays((3,), SHAPE)),
    "tensordot": (lambda x, y: jnp.tensordot(x, y, axes=1), arrays(SHAPE, (4, 2))),
    "cross": (lambda x, y: jnp.cross(x, y), arrays((4, 3), (4, 3))),
    "convolve": (lambda x, y: jnp.convolve(x, y), arrays((6,), (3,))),
    "correlate": (lambda x, y: jnp.correlate(x, y, mode="full"), arrays((6,), (3,))),
    "polyval": (lambda p, x: jnp.polyval(p, x), arrays((3,), SHAPE)),
    "polyadd": (lambda p, q: jnp.polyadd(p, q), arrays((3,), (4,))),
    "polysub": (lambda p, q: jnp.polysub(p, q), arrays((3,), (4,))),
    "polymul": (lambda p, q: jnp.polymul(p, q), arrays((3,), (4,))),
    "polyder": (lambda p: jnp.polyder(p), arrays((4,))),
    "polyint": (lambda p: jnp.polyint(p), arrays((4,))),
    "polydiv": (lambda p, q: jnp.polydiv(p, q), lambda: [_normal((4,), 0),
                                                        np.array([1.0, 2.0], np.float32)]),
    "polyfit": (lambda x, y: jnp.polyfit(x, y, 1), arrays((6,), (6,))),
    "poly": (lambda x: jnp.poly(x), arrays((3,))),
    "roots": (lambda p: jnp.roots(p, strip_zeros=False), arrays((3,))),
    "vander": (lambda x: jnp.vander(x, 3), arrays((4,))),
    "trapezoid": (lambda y: jnp.trapezoid(y), arrays(SHAPE)),
    "gradient": (lambda x: jnp.gradient(x, axis=1), arrays(SHAPE)),
    "diff": (lambda x: jnp.diff(x, axis=1), arrays(SHAPE)),
    "ediff1d": (lambda x: jnp.ediff1d(x), arrays((5,))),
    "unwrap": (lambda x: jnp.unwrap(x * 3), arrays((6,))),
    # statistics with parameters
    "percentile": (lambda x: jnp.percentile(x, 30.0, axis=1), arrays(SHAPE)),
    "nanpercentile": (lambda x: jnp.nanpercentile(x, 30.0, axis=1), arrays(SHAPE)),
    "quantile": (lambda x: jnp.quantile(x, 0.3, axis=1), arrays(SHAPE)),
    "nanquantile": (lambda x: jnp.nanquantile(x, 0.3, axis=1), arrays(SHAPE)),
    "histogram": (lambda x: jnp.histogram(x, bins=4, range=(-2.0, 2.0)), arrays((12,))),
    "histogram_bin_edges": (lambda x: jnp.histogram_bin_edges(x, bins=4, range=(-2.0, 2.0)),
                            arrays((12,))),
    "histogram2d": (lambda x, y: jnp.histogram2d(x, y, bins=2, range=((-2, 2), (-2, 2))),
                    arrays((12,), (12,))),
    "histogramdd": (lambda x: jnp.histogramdd(x, bins=2, range=((-2, 2), (-2, 2))),
                    arrays((12, 2))),
    "bincount": (lambda x: jnp.bincount(x, length=9), arrays((6,), domain="int")),
    "average": (lambda x, w: jnp.average(x, axis=1, weights=w), lambda: [
        _normal(SHAPE, 0), DOMAINS["positive"](SHAPE, 1)]),
    "cov": (lambda x: jnp.cov(x), arrays(SHAPE)),
    "corrcoef": (lambda x: jnp.corrcoef(x), arrays(SHAPE)),
    "searchsorted": (lambda a, v: jnp.searchsorted(a, v), lambda: sorted_vector()()
                     + [_normal(SHAPE, 1)]),
    "digitize": (lambda x: jnp.digitize(x, np.array([-1.0, 0.0, 1.0], np.float32)),
                 arrays(SHAPE)),
    "interp": (lambda x, xp, fp: jnp.interp(x, xp, fp),
               lambda: [_normal(SHAPE, 0) * 2, np.linspace(-2, 2, 5).astype(np.float32),
                        _normal((5,), 2)]),
    "isin": (lambda x, y: jnp.isin(jnp.round(x), jnp.round(y)), arrays(SHAPE, (4,))),
    # functions with a required scalar
    "round": (lambda x: jnp.round(x, 2), arrays(SHAPE)),
    "around": (lambda x: jnp.around(x, 1), arrays(SHAPE)),
    "full_like": (lambda x: jnp.full_like(x, 2.5), arrays(SHAPE)),
    "astype": (lambda x: jnp.astype(x, jnp.int32), arrays(SHAPE)),
    "ldexp": (lambda x: jnp.ldexp(x, np.int32(3)), arrays(SHAPE)),
    "left_shift": (lambda x: jnp.left_shift(x, 2), arrays(SHAPE, domain="int")),
    "right_shift": (lambda x: jnp.right_shift(x, 1), arrays(SHAPE, domain="int")),
    "bitwise_left_shift": (lambda x: jnp.bitwise_left_shift(x, 2), arrays(SHAPE, domain="int")),
    "bitwise_right_shift": (lambda x: jnp.bitwise_right_shift(x, 1),
                            arrays(SHAPE, domain="int")),
    "packbits": (lambda x: jnp.packbits(x), arrays((16,), domain="bool")),
    "unpackbits": (lambda x: jnp.unpackbits(x), lambda: [np.array([3, 200], np.uint8)]),
    "linalg.matrix_power": (lambda x: jnp.linalg.matrix_power(x, 3), arrays((3, 3))),
    "linalg.tensorsolve": (lambda a, b: jnp.linalg.tensorsolve(a, b),
                           lambda: [np.eye(4, dtype=np.float32).reshape(2, 2, 4) * 2
                                    + _normal((2, 2, 4), 0) * 0.1, _normal((2, 2), 1)]),
    "linalg.tensorinv": (lambda a: jnp.linalg.tensorinv(a, ind=1),
                         lambda: [np.eye(4, dtype=np.float32) * 2 + _normal((4, 4), 0) * 0.1]),
    "linalg.solve": (lambda a, b: jnp.linalg.solve(a, b), lambda: [
        np.eye(3, dtype=np.float32) * 2 + _normal((3, 3), 0) * 0.3, _normal((3,), 1)]),
    "linalg.cholesky": (lambda a: jnp.linalg.cholesky(a @ a.T + 3 * jnp.eye(3)),
                        arrays((3, 3))),
    "linalg.multi_dot": (lambda a, b, c: jnp.linalg.multi_dot([a, b, c]),
                         arrays((2, 3), (3, 4), (4, 2))),
    "linalg.cross": (lambda x, y: jnp.linalg.cross(x, y), arrays((4, 3), (4, 3))),
    "linalg.vecdot": (lambda x, y: jnp.linalg.vecdot(x, y), arrays(SHAPE, SHAPE)),
    "linalg.diagonal": (lambda x: jnp.linalg.diagonal(x), arrays((3, 3))),
    "linalg.trace": (lambda x: jnp.linalg.trace(x), arrays((3, 3))),
    "linalg.matmul": (lambda x, y: jnp.linalg.matmul(x, y), arrays(SHAPE, (4, 2))),
    "linalg.tensordot": (lambda x, y: jnp.linalg.tensordot(x, y, axes=1),
                         arrays(SHAPE, (4, 2))),
    "linalg.outer": (lambda x, y: jnp.linalg.outer(x, y), arrays((3,), (4,))),
    "linalg.matrix_transpose": (lambda x: jnp.linalg.matrix_transpose(x), arrays(SHAPE)),
    "linalg.det": (lambda a: jnp.linalg.det(a), lambda: [
        np.eye(3, dtype=np.float32) * 2 + _normal((3, 3), 0) * 0.3]),
    "linalg.slogdet": (lambda a: jnp.linalg.slogdet(a), lambda: [
        np.eye(3, dtype=np.float32) * 2 + _normal((3, 3), 0) * 0.3]),
    "linalg.inv": (lambda a: jnp.linalg.inv(a), lambda: [
        np.eye(3, dtype=np.float32) * 2 + _normal((3, 3), 0) * 0.3]),
    "linalg.eigh": (lambda a: jnp.linalg.eigh(a + a.T), arrays((3, 3))),
    "linalg.eigvalsh": (lambda a: jnp.linalg.eigvalsh(a + a.T), arrays((3, 3))),
    "linalg.eig": (lambda a: jnp.linalg.eig(a), arrays((3, 3))),
    "linalg.eigvals": (lambda a: jnp.linalg.eigvals(a), arrays((3, 3))),
    "cumulative_sum": (lambda x: jnp.cumulative_sum(x, axis=1), arrays(SHAPE)),
    "cumulative_prod": (lambda x: jnp.cumulative_prod(x, axis=1), arrays(SHAPE)),
    "permute_dims": (lambda x: jnp.permute_dims(x, (1, 0)), arrays(SHAPE)),
    "sort_complex": (lambda x: jnp.sort_complex(x), arrays((5,))),
    # jax.nn with parameters
    "nn.one_hot": (lambda x: jax.nn.one_hot(x, 9), arrays((5,), domain="int")),
    "nn.glu": (lambda x: jax.nn.glu(x), arrays(SHAPE)),
    "nn.dot_product_attention": (lambda q, k, v: jax.nn.dot_product_attention(q, k, v),
                                 arrays((1, 3, 2, 4), (1, 3, 2, 4), (1, 3, 2, 4))),
    "nn.scaled_dot_general": (lambda x, y: jax.nn.scaled_dot_general(
        x, y, (((1,), (0,)), ((), ()))), arrays(SHAPE, (4, 2))),
    "nn.scaled_matmul": (lambda x, y, a, b: jax.nn.scaled_matmul(x, y, a, b),
                         arrays((1, 3, 4), (1, 2, 4), (1, 3, 1), (1, 2, 1))),
    # jax.lax
    "lax.dot_general": (lambda x, y: _lax.dot_general(x, y, (((1,), (0,)), ((), ()))),
                        arrays(SHAPE, (4, 2))),
    "lax.dot": (lambda x, y: _lax.dot(x, y), arrays(SHAPE, (4, 2))),
    "lax.conv": (lambda x, w: _lax.conv(x, w, (1, 1), "SAME"),
                 arrays((1, 2, 5, 5), (3, 2, 3, 3))),
    "lax.conv_general_dilated": (lambda x, w: _lax.conv_general_dilated(
        x, w, (2, 1), ((1, 1), (0, 1)), rhs_dilation=(1, 2)), arrays((1, 2, 6, 6), (3, 2, 2, 2))),
    "lax.reduce_window": (lambda x: _lax.reduce_window(x, -jnp.inf, _lax.max, (2, 2), (1, 2),
                                                       "VALID"), arrays(SHAPE)),
    "lax.slice": (lambda x: _lax.slice(x, (0, 1), (2, 4)), arrays(SHAPE)),
    "lax.dynamic_slice": (lambda x, i: _lax.dynamic_slice(x, (i, 0), (2, 2)),
                          lambda: [_normal(SHAPE, 0), np.int32(1)]),
    "lax.dynamic_update_slice": (lambda x, u, i: _lax.dynamic_update_slice(x, u, (i, 1)),
                                 lambda: [_normal(SHAPE, 0), _normal((2, 2), 1), np.int32(1)]),
    "lax.pad": (lambda x: _lax.pad(x, np.float32(0), ((1, 0, 1), (0, 1, 0))), arrays(SHAPE)),
    "lax.rev": (lambda x: _lax.rev(x, (1,)), arrays(SHAPE)),
    "lax.transpose": (lambda x: _lax.transpose(x, (1, 0)), arrays(SHAPE)),
    "lax.broadcast_in_dim": (lambda x: _lax.broadcast_in_dim(x, (2, 3, 4), (1, 2)),
                             arrays(SHAPE)),
    "lax.reshape": (lambda x: _lax.reshape(x, (2, 6)), arrays(SHAPE)),
    "lax.concatenate": (lambda x, y: _lax.concatenate([x, y], 1), arrays(SHAPE, SHAPE)),
    "lax.integer_pow": (lambda x: _lax.integer_pow(x, 3), arrays(SHAPE)),
    "lax.top_k": (lambda x: _lax.top_k(x, 2), arrays(SHAPE)),
    "lax.argmax": (lambda x: _lax.argmax(x, 1, jnp.int32), arrays(SHAPE)),
    "lax.argmin": (lambda x: _lax.argmin(x, 0, jnp.int32), arrays(SHAPE)),
    "lax.sort": (lambda x: _lax.sort(x, dimension=1), arrays(SHAPE)),
    "lax.sort_key_val": (lambda k, v: _lax.sort_key_val(k, v), arrays(SHAPE, SHAPE)),
    "lax.clamp": (lambda x: _lax.clamp(np.float32(-0.5), x, np.float32(0.5)), arrays(SHAPE)),
    "lax.select": (lambda c, x, y: _lax.select(c > 0, x, y), arrays(SHAPE, SHAPE, SHAPE)),
    "lax.select_n": (lambda i, x, y, z: _lax.select_n(i, x, y, z),
                     lambda: [np.random.default_rng(0).integers(0, 3, SHAPE).astype(np.int32),
                              _normal(SHAPE, 1), _normal(SHAPE, 2), _normal(SHAPE, 3)]),
    "lax.cumsum": (lambda x: _lax.cumsum(x, axis=1), arrays(SHAPE)),
    "lax.cumprod": (lambda x: _lax.cumprod(x, axis=1), arrays(SHAPE)),
    "lax.cummax": (lambda x: _lax.cummax(x, axis=1), arrays(SHAPE)),
    "lax.cummin": (lambda x: _lax.cummin(x, axis=1), arrays(SHAPE)),
    "lax.cumlogsumexp": (lambda x: _lax.cumlogsumexp(x, axis=1), arrays(SHAPE)),
    "lax.shift_left": (lambda x: _lax.shift_left(x, np.int32(2)), arrays(SHAPE, domain="int")),
    "lax.shift_right_arithmetic": (lambda x: _lax.shift_right_arithmetic(x, np.int32(1)),
                                   arrays(SHAPE, domain="int")),
    "lax.shift_right_logical": (lambda x: _lax.shift_right_logical(x, np.int32(1)),
                                arrays(SHAPE, domain="int")),
    "lax.convert_element_type": (lambda x: _lax.convert_element_type(x, jnp.int32),
                                 arrays(SHAPE)),
    "lax.bitcast_convert_type": (lambda x: _lax.bitcast_convert_type(x, jnp.int32),
                                 arrays(SHAPE)),
    "lax.reduce_precision": (lambda x: _lax.reduce_precision(x, 5, 10), arrays(SHAPE)),
    "lax.round": (lambda x: _lax.round(x), arrays(SHAPE)),
    "lax.acosh": (lambda x: _lax.acosh(x + 1), arrays(SHAPE, domain="positive")),
    "lax.expand_dims": (lambda x: _lax.expand_dims(x, (0,)), arrays(SHAPE)),
    "lax.squeeze": (lambda x: _lax.squeeze(x, (0,)), arrays((1, 4))),
    "lax.fori_loop": (lambda x: _lax.fori_loop(0, 3, lambda i, v: v * 0.5 + i, x),
                      arrays(SHAPE)),
    "lax.scan": (lambda x: _lax.scan(lambda c, r: (c + r, c * r), jnp.zeros(4), x),
                 arrays(SHAPE)),
    "lax.while_loop": (lambda x: _lax.while_loop(lambda s: s[0] < 3,
                                                 lambda s: (s[0] + 1, s[1] * 0.5), (0, x))[1],
                       arrays(SHAPE)),
    "lax.cond": (lambda p, x: _lax.cond(p[0, 0] > 0, lambda v: v + 1, lambda v: v * 2, x),
                 arrays(SHAPE, SHAPE)),
    "lax.switch": (lambda i, x: _lax.switch(i, [jnp.sin, jnp.cos, jnp.negative], x),
                   lambda: [np.int32(1), _normal(SHAPE, 0)]),
    "lax.map": (lambda x: _lax.map(jnp.sum, x), arrays(SHAPE)),
    "lax.associative_scan": (lambda x: _lax.associative_scan(jnp.add, x, axis=1),
                             arrays(SHAPE)),
    "lax.reduce": (lambda x: _lax.reduce(x, np.float32(0), _lax.add, (1,)), arrays(SHAPE)),
    "lax.gather": (lambda x: x.at[IDX].get(), arrays(SHAPE)),
    "lax.scatter_add": (lambda x, u: x.at[IDX].add(u), arrays(SHAPE, SHAPE)),
    "lax.stop_gradient": (lambda x: _lax.stop_gradient(x), arrays(SHAPE)),
    "lax.erf_inv": (lambda x: _lax.erf_inv(x), arrays(SHAPE, domain="unit")),
    "lax.population_count": (lambda x: _lax.population_count(x), arrays(SHAPE, domain="int")),
}

# jax.lax functions an author meets that take only arrays (SPECS has those with more)
LAX_ARRAY_FUNCTIONS = (
    "abs acos acosh add asin asinh atan atan2 atanh cbrt ceil cos cosh digamma div erf "
    "erfc exp exp2 expm1 floor igamma is_finite lgamma log log1p logistic max min mul neg "
    "nextafter pow rem rsqrt sign sin sinh sqrt square sub tan tanh bessel_i0e bessel_i1e"
).split()

# no array values in, or none out that depend on them (creation, dtypes, shapes, I/O)
NOT_APPLICABLE = {
    "arange", "array", "asarray", "bartlett", "blackman", "broadcast_shapes", "can_cast",
    "diag_indices", "empty", "eye", "from_dlpack", "frombuffer", "fromfile", "fromfunction",
    "fromiter", "frompyfunc", "fromstring", "full", "geomspace", "get_printoptions", "hamming",
    "hanning", "identity", "indices", "isdtype", "issubdtype", "iterable", "kaiser", "linspace",
    "load", "logspace", "mask_indices", "ones", "printoptions", "promote_types", "result_type",
    "save", "savez", "set_printoptions", "tri", "tril_indices", "triu_indices", "zeros",
    "array_repr", "array_str", "einsum_path", "ndim", "shape", "size", "isscalar",
    "iscomplexobj", "isrealobj", "vectorize", "diag_indices_from", "tril_indices_from",
    "triu_indices_from", "empty_like", "ones_like", "zeros_like", "unravel_index",
    "ravel_multi_index", "nn.initializers", "nn.get_scaled_dot_general_config",
    "fft.fftfreq", "fft.rfftfreq",
    # block-scaled matrix products of float8 operands: no float8 on any device
    "nn.scaled_matmul",
}


def catalogue(only=()):
    """(qualified name, callable) of every function the table covers."""
    entries = []
    for prefix, module in (("", jnp), ("linalg.", jnp.linalg), ("fft.", jnp.fft),
                           ("nn.", jax.nn)):
        for name in sorted(dir(module)):
            obj = getattr(module, name)
            if name.startswith("_") or inspect.isclass(obj) or inspect.ismodule(obj) \
                    or not callable(obj):
                continue
            entries.append((prefix + name, obj))
    lax_names = set(LAX_ARRAY_FUNCTIONS) | {n[4:] for n in SPECS if n.startswith("lax.")}
    entries += [("lax." + n, getattr(_lax, n)) for n in sorted(lax_names)]
    return [(n, f) for n, f in entries if not only or n in only]


def _calls(name, fn):
    """Candidate (function of arrays, inputs) pairs, in the order tried."""
    if name in SPECS:
        call, make = SPECS[name]
        yield call, make()
        return
    for domain in DOMAINS:
        for arity in (1, 2, 3):
            inputs = arrays(*[SHAPE] * arity, domain=domain)()
            yield (lambda *xs, _f=fn: _f(*xs)), inputs


def _leaves(out):
    return [np.asarray(v) for v in jax.tree_util.tree_leaves(out)]


def _plain(call, inputs):
    """Plain JAX's result, or None where it fails, gives no arrays or non-finite values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            leaves = _leaves(call(*[jnp.asarray(x) for x in inputs]))
    except Exception:  # noqa: BLE001 - JAX refusing these operands: try the next ones
        return None
    if not leaves or any(v.dtype == object for v in leaves):
        return None
    if any(np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all() for v in leaves):
        return None
    return leaves


def _program(cluster, call, inputs):
    names = [f"x{i}" for i in range(len(inputs))]
    specs = {n: mixc.Input(cluster.p1 if i % 2 == 0 else cluster.p2, np.shape(x),
                           np.asarray(x).dtype)
             for i, (n, x) in enumerate(zip(names, inputs))}

    def body(**kw):
        out = mixc.device(cluster.mpc)(call)(*[kw[n] for n in names])
        return jax.tree_util.tree_leaves(mixc.reveal(out, cluster.p1))

    def fn(**kwargs):
        return body(**kwargs)
    fn.__name__ = "coverage"
    fn.__signature__ = inspect.Signature([
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=s)
        for n, s in specs.items()])
    return mixc.program(fn), dict(zip(names, [np.asarray(x) for x in inputs]))


_LINE = re.compile(r"[\w./<>-]+\.py:\d+")


def _short(message):
    """An error's first line, paths cut to the file name."""
    line = str(message).strip().splitlines()[0] if str(message).strip() else ""
    return re.sub(r"/[\w./-]*/([\w.-]+\.py)", r"\1", line)


def classify(cluster, name, fn):
    """(status, detail) of one function: supported / compile error / does not apply / BUG."""
    if name in NOT_APPLICABLE:
        return "does not apply", "takes no array values, or returns none that depend on them"
    for call, inputs in _calls(name, fn):
        ref = _plain(call, inputs)
        if ref is not None:
            break
    else:
        return "does not apply", "no array inputs plain JAX takes here (see SPECS)"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            prog, values = _program(cluster, call, inputs)
            bundle = build(prog)
        except MixcError as e:
            if not _LINE.search(str(e)):
                return "BUG", f"error without a line: {type(e).__name__}: {_short(e)}"
            return "compile error", _short(e)
        except Exception as e:  # noqa: BLE001 - every crash is reported as a bug to fix
            return "BUG", f"crash: {type(e).__name__}: {_short(e)}"
        try:
            out = _leaves(simulate(bundle, values))
        except Exception as e:  # noqa: BLE001 - a built program that fails to run is a bug
            return "BUG", f"run-time error: {type(e).__name__}: {_short(e)}"
    warned = sorted({_short(w.message) for w in seen if w.category.__name__ == "RangeWarning"})
    for index, axis in SIGN_FREE.get(name, ()):
        out = _signs_as(out, ref, index, axis)
    return _compare(out, ref, warned)


# Outputs made of vectors unique only up to their sign (eigenvectors, singular vectors:
# LAPACK fixes none either): (output index, the axis along which a vector runs), each
# vector compared after taking the sign that best matches the reference's.
SIGN_FREE = {"linalg.eigh": ((1, -2),), "linalg.svd": ((0, -2), (2, -1))}


def _signs_as(out, ref, index, axis):
    out = list(out)
    if out[index].shape == ref[index].shape:
        sign = np.sign(np.sum(out[index] * ref[index], axis=axis, keepdims=True))
        out[index] = out[index] * np.where(sign == 0, 1, sign)
    return out


def _compare(out, ref, warned):
    if len(out) != len(ref) or any(o.shape != r.shape for o, r in zip(out, ref)):
        return "BUG", f"wrong shapes {[o.shape for o in out]} vs {[r.shape for r in ref]}"
    abs_err, rel_err = 0.0, 0.0
    for o, r in zip(out, ref):
        if r.dtype == np.bool_ or np.issubdtype(r.dtype, np.integer):
            wrong = int(np.sum(o.astype(np.int64) != r.astype(np.int64)))
            if wrong:
                return "BUG", f"{wrong} of {r.size} exact values wrong"
            continue
        err = np.abs(o.astype(np.float64) - r.astype(np.float64))
        abs_err = max(abs_err, float(err.max(initial=0.0)))
        rel_err = max(rel_err, float((err / np.maximum(np.abs(r), 1.0)).max(initial=0.0)))
    note = f"; warns: {warned[0]}" if warned else ""
    if rel_err > 2e-3:
        return "BUG", f"wrong: max abs error {abs_err:.2g} (rel {rel_err:.2g}){note}"
    return "supported", (f"{abs_err:.1e}" if abs_err else "exact") + note


DEFAULT_DEVICES = "examples/two_party.devices"
DEFAULT_TABLE = REPO / "docs" / "jnp_coverage.md"
SUMMARY_START, SUMMARY_END = "<!-- summary: start -->", "<!-- summary: end -->"
STATUSES = ("supported", "compile error", "BUG", "does not apply")


def describe(device):
    """How the sweep's MPC device shares its values, for the table's header."""
    sharing = ("replicated sharing" if len(device.parties) == 3
               else f"{device.offline} offline")
    return (f"{len(device.parties)}-party, {sharing}, {device.ring}-bit ring, "
            f"f = {device.fraction_bits} fraction bits")


def render(rows, seconds, devices=DEFAULT_DEVICES, device_text="", summary=""):
    counts = {}
    for _, status, _ in rows:
        counts[status] = counts.get(status, 0) + 1
    lines = [
        "# jnp / jax.nn / jax.lax on secrets: the coverage table",
        "",
        f"Generated by `python3 scripts/jnp_coverage.py --devices {devices}`",
        "(do not edit by hand): each function runs on small secret inputs ((3, 4) float32",
        "from N(0, 1) unless it needs others; see the script's `SPECS` and `DOMAINS`) on the",
        f"MPC device of `{devices}` ({device_text})",
        "under `simulate`, and is compared with plain JAX on the same inputs.",
        "",
        *([summary, ""] if summary else []),
        "- **supported**: the largest absolute error seen on those inputs (integer and",
        "  bool results: exact). Approximated functions keep the errors and ranges of",
        "  `mixc/approx.py`'s table; outside them they saturate (see the README).",
        "- **compile error**: `mixc build` refuses it with the message shown, naming the",
        "  op and the author's line (here, the script's).",
        "- **does not apply**: no array values in, or none out that depend on them.",
        "",
        "Fixed point has no NaN, infinity or -0.0: `isnan` is False, `isinf` False,",
        "`nan_to_num` is the identity (within the fixed-point range), `signbit(-0.0)` is",
        "False, and the nan-functions (`nansum`, ...) are their plain versions.",
        "",
        "Totals: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f" ({len(rows)} functions, {seconds:.0f} s, on `{devices}`).",
        "",
        "| function | status | error vs plain JAX, or the message |",
        "|---|---|---|",
    ]
    for name, status, detail in rows:
        detail = detail.replace("|", "\\|")
        lines.append(f"| `{name}` | {status} | {detail} |")
    return "\n".join(lines) + "\n"


TABLE_ROW = re.compile(r"^\| `([^`]+)` \| (" + "|".join(STATUSES) + r") \|", re.M)
_SWEPT_ON = re.compile(r"on `([^`]+)`\)\.$", re.M)


def summarize(tables):
    """The header table: per device file, how many functions of each status."""
    lines = ["The same sweep on every kind of MPC device: the counts of each device file's",
             "table (`--summary`; BUG: a wrong result or a crash, none allowed):", "",
             "| device file | functions | " + " | ".join(STATUSES) + " |",
             "|---" * (len(STATUSES) + 2) + "|"]
    for table in tables:
        text = Path(table).read_text()
        swept_on = _SWEPT_ON.search(text)
        if not swept_on:
            raise SystemExit(f"{table}: not a table written by this script (no 'Totals' line)")
        statuses = [status.strip() for _, status in TABLE_ROW.findall(text)]
        counts = [str(statuses.count(s)) for s in STATUSES]
        lines.append(f"| `{swept_on.group(1)}` | {len(statuses)} | " + " | ".join(counts) + " |")
    return "\n".join([SUMMARY_START, *lines, SUMMARY_END])


def _kept_summary(path):
    """The summary block of the table at ``path``, kept when the table is rewritten."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(SUMMARY_START), text.find(SUMMARY_END)
    return text[start:end + len(SUMMARY_END)] if 0 <= start < end else ""


def write_summary(tables, target=DEFAULT_TABLE):
    text, block = target.read_text(), summarize(tables)
    kept = _kept_summary(target)
    if kept:
        text = text.replace(kept, block)
    else:
        first_list = text.index("\n- **supported**")
        text = text[:first_list] + "\n" + block + "\n" + text[first_list:]
    target.write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these functions (e.g. cbrt lax.scan)")
    parser.add_argument("--devices", default=DEFAULT_DEVICES,
                        help="device file whose MPC device runs the sweep")
    parser.add_argument("-o", "--output", help="where the table goes (default: "
                        "docs/jnp_coverage.md for a whole sweep on the default devices)")
    parser.add_argument("--summary", nargs="+", metavar="TABLE",
                        help="write these tables' counts into docs/jnp_coverage.md's header")
    args = parser.parse_args(argv)
    if args.summary:
        write_summary(args.summary)
        return 0
    output = args.output
    if output is None and not args.names and args.devices == DEFAULT_DEVICES:
        output = str(DEFAULT_TABLE)
    devices = Path(args.devices)
    cluster = mixc.init_device(str(devices if devices.is_absolute() else REPO / devices))
    rows, start = [], time.time()
    for name, fn in catalogue(args.names):
        status, detail = classify(cluster, name, fn)
        rows.append((name, status, detail))
        print(f"{name:32s} {status:15s} {detail}", flush=True)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(render(rows, time.time() - start, args.devices,
                                       describe(cluster.mpc), _kept_summary(Path(output))))
    bugs = [r for r in rows if r[1] == "BUG"]
    print(f"{len(rows)} functions, {len(bugs)} bugs", file=sys.stderr)
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
