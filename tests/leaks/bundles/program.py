"""The program every edited bundle in this directory starts from (tests/test_leaks.py
builds it): alice's a and bob's b, a product and a loop on the MPC device, the product
revealed to alice and the loop's result to bob."""
import os

import jax.numpy as jnp
from jax import lax

import mixc
from mixc import device, reveal

cluster = mixc.init_device(os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                        "examples", "two_party.devices"))
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def product(a, b):
    return a * b + a


def rounds(a, b):
    return lax.fori_loop(0, 3, lambda i, c: c * b + a, jnp.zeros_like(a))


@mixc.program
def leaky(a: mixc.Input(p1, (3,)), b: mixc.Input(p2, (3,))):
    c = device(mpc)(product)(a, b)
    d = device(mpc)(rounds)(a, b)
    return {"c": reveal(c, p1), "d": reveal(d, p2)}
