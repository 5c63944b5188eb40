"""Micro-benchmarks of mixc's C kernels; prints one JSON line per measurement.

    python benchmarks/kernels.py [--repeat N]

Each line: {"bench": name, "seconds": best-of-N wall time, ...extra fields}.
"""

import argparse
import json
import time

import numpy as np

from mixc.runtime import kernels as K


def best_of(fn, repeat):
    fn()  # warm up (workspace allocation, page faults)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def emit(name, seconds, **extra):
    print(json.dumps({"bench": name, "seconds": round(seconds, 6), **extra}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)

    def u64(shape):
        return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)

    for n in (1024, 512):
        a, b = u64((n, n)), u64((n, n))
        out = np.empty((n, n), np.uint64)
        s = best_of(lambda: K.ring_matmul(a, b, out=out), args.repeat)
        emit(f"ring_matmul_{n}^3", s, gmacs_per_s=round(n**3 / s / 1e9, 3))

    n = 10**6
    a, b = u64(n), u64(n)
    out = np.empty(n, np.uint64)
    s = best_of(lambda: K.ring_mul(a, b, out=out), args.repeat)
    emit("ring_mul_1e6", s, gb_per_s=round(3 * 8 * n / s / 1e9, 3))
    s = best_of(lambda: np.multiply(a, b, out=out), args.repeat)
    emit("numpy_mul_1e6", s, gb_per_s=round(3 * 8 * n / s / 1e9, 3))

    words = 1 << 20  # 8 MB
    buf = np.empty(words, np.uint64)
    prg = K.Prg(bytes(range(32)), 1)
    s = best_of(lambda: prg.fill(buf), args.repeat)
    emit("prg_chacha20_8MB", s, gb_per_s=round(8 * words / s / 1e9, 3))

    x = rng.standard_normal(n)
    s = best_of(lambda: K.encode_fixed(x, 16), args.repeat)
    emit("encode_fixed_1e6", s)


if __name__ == "__main__":
    main()
