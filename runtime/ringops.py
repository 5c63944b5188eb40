"""Ring (Z_2^64) tensor ops built on the C kernels.

``dot_general`` brings any contraction into a batch of 2-D products so the
blocked C matmul does the work; numpy's uint64 matmul is far too slow.
"""
import numpy as np

from . import kernels


def dot_general(x, y, lc, rc, lb, rb):
    """lax.dot_general on uint64 arrays, wrapping mod 2^64."""
    xf = [i for i in range(x.ndim) if i not in lc and i not in lb]
    yf = [j for j in range(y.ndim) if j not in rc and j not in rb]
    batch = [x.shape[i] for i in lb]
    m = int(np.prod([x.shape[i] for i in xf], dtype=np.int64))
    k = int(np.prod([x.shape[i] for i in lc], dtype=np.int64))
    n = int(np.prod([y.shape[j] for j in yf], dtype=np.int64))
    b = int(np.prod(batch, dtype=np.int64))
    xm = np.ascontiguousarray(np.transpose(x, list(lb) + xf + list(lc))).reshape(b, m, k)
    ym = np.ascontiguousarray(np.transpose(y, list(rb) + list(rc) + yf)).reshape(b, k, n)
    out = np.empty((b, m, n), dtype=np.uint64)
    for i in range(b):
        kernels.ring_matmul(xm[i], ym[i], out=out[i])
    return out.reshape(batch + [x.shape[i] for i in xf] + [y.shape[j] for j in yf])
