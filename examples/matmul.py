"""The seed's MPC demo in its smallest form: a secret matrix product.

alice holds A, bob holds B; the product is computed on secret shares and
revealed to alice only.
"""
import os

import numpy as np

import mixc
from mixc import device, reveal

HERE = os.path.dirname(os.path.abspath(__file__))
cluster = mixc.init_device(os.path.join(HERE, "two_party.devices"))
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


@mixc.program
def matmul(a: mixc.Input(p1, (64, 32)), b: mixc.Input(p2, (32, 16))):
    return reveal(device(mpc)(lambda x, y: x @ y)(a, b), p1)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal((32, 16)).astype(np.float32)
    out = matmul.simulate(a=a, b=b)
    print(f"max |secure - plain| = {np.abs(out - a @ b).max():.2e}")
