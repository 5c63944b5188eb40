"""Ring (Z_2^64 and Z_2^128) tensor ops built on the C kernels.

``dot_general`` brings any contraction into a batch of 2-D products so the
blocked C matmul does the work; numpy's uint64 matmul is far too slow.
``U128_OPS`` evaluates the IR's arithmetic ops on u128 values (numpy cannot
add its structured dtype): ``mixc.ir.ops`` hands them here.
"""
import math

import numpy as np

from . import kernels


def dot_general(x, y, lc, rc, lb, rb):
    """lax.dot_general on uint64 (or U128) arrays, wrapping mod 2^64 (2^128)."""
    xf = [i for i in range(x.ndim) if i not in lc and i not in lb]
    yf = [j for j in range(y.ndim) if j not in rc and j not in rb]
    batch = [x.shape[i] for i in lb]
    m = math.prod([x.shape[i] for i in xf])
    k = math.prod([x.shape[i] for i in lc])
    n = math.prod([y.shape[j] for j in yf])
    b = math.prod(batch)
    xm = np.ascontiguousarray(np.transpose(x, list(lb) + xf + list(lc))).reshape(b, m, k)
    ym = np.ascontiguousarray(np.transpose(y, list(rb) + list(rc) + yf)).reshape(b, k, n)
    if x.dtype == kernels.U128:
        # a plain matmul's one product is the result as it is, not copied into a batch
        products = [kernels.r128_matmul(xm[i], ym[i])[None] for i in range(b)]
        out = np.concatenate(products) if b > 1 else products[0] if b else \
            np.empty((0, m, n), dtype=x.dtype)
    else:
        out = np.empty((b, m, n), dtype=x.dtype)
        for i in range(b):
            kernels.ring_matmul(xm[i], ym[i], out=out[i])
    return out.reshape(batch + [x.shape[i] for i in xf] + [y.shape[j] for j in yf])


# ---------------------------------------------------------------- Z_2^128

def _same_shape(*xs):
    """Operands of an elementwise op, a scalar broadcast to the others' shape (C order;
    np.ascontiguousarray would make a 0-d value 1-d)."""
    return [v if v.flags.c_contiguous else np.array(v, order="C")
            for v in np.broadcast_arrays(*xs)]


def _reduce_sum(a, x):
    axes = tuple(a["axes"])
    keep = [i for i in range(x.ndim) if i not in axes]
    rows = np.transpose(x, keep + list(axes)).reshape(
        math.prod(x.shape[i] for i in keep), math.prod(x.shape[i] for i in axes))
    return kernels.r128_rowsum(rows).reshape([x.shape[i] for i in keep])


def _bitwise(fn):
    """A bitwise op on the words of U128 values."""
    def impl(a, *xs):
        words = [kernels.r128_words(v) for v in _same_shape(*xs)]
        return kernels.r128_from_words(np.ascontiguousarray(fn(*words)))
    return impl


def _conv(a, x, w):
    """lax.conv_general_dilated on U128 values: im2col (numpy moves and zero-pads the
    structured elements), then one u128 GEMM of the kernel matrix by the patches."""
    from mixc.ir import ops
    if a["feature_group_count"] != 1 or a["batch_group_count"] != 1:
        raise NotImplementedError("grouped convolution")
    lhs, rhs, _ = (tuple(int(i) for i in s) for s in a["dimension_numbers"])
    window = tuple(w.shape[i] for i in rhs[2:])
    patches, out_sp = ops.conv_patches(x, a, window)
    km = ops.conv_kernel_matrix(w, a)
    z = kernels.r128_matmul(km, patches).reshape((km.shape[0], x.shape[lhs[0]]) + out_sp)
    return np.transpose(z, ops.conv_output_perm(a, len(out_sp)))


U128_OPS = {
    "add": lambda a, x, y: kernels.r128_add(*_same_shape(x, y)),
    "sub": lambda a, x, y: kernels.r128_sub(*_same_shape(x, y)),
    "mul": lambda a, x, y: kernels.r128_mul(*_same_shape(x, y)),
    "neg": lambda a, x: kernels.r128_neg(x),
    "shl": lambda a, x: kernels.r128_shl(x, a["bits"]),
    "lshr": lambda a, x: kernels.r128_lrshift(x, a["bits"]),
    "ashr": lambda a, x: kernels.r128_arshift(x, a["bits"]),
    "reduce_sum": _reduce_sum,
    "dot_general": lambda a, x, y: dot_general(x, y, *a["contract"], *a["batch"]),
    "and": _bitwise(np.bitwise_and),
    "or": _bitwise(np.bitwise_or),
    "xor": _bitwise(np.bitwise_xor),
    "not": _bitwise(np.invert),
    "beaver_finish": lambda a, *xs: kernels.r128_beaver_finish(*xs, a["first"]),
    "truncpr_finish": lambda a, *xs: kernels.r128_truncpr_finish(*xs, a["bits"], a["first"]),
    "conv_general_dilated": _conv,
}
