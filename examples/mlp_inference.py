"""MLP inference under 2-party MPC: the client's input, the server's weights.

The client (alice, p1) holds a batch of inputs; the server (bob, p2) holds a
784-128-10 MLP. The forward pass (relu, then softmax) runs on secret shares
and only the client learns the class probabilities.

    python examples/mlp_inference.py
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

import mixc
from mixc import device, reveal

HERE = os.path.dirname(os.path.abspath(__file__))
cluster = mixc.init_device(os.path.join(HERE, "two_party.devices"))
client, server, mpc = cluster.p1, cluster.p2, cluster.mpc

BATCH, IN, HIDDEN, OUT = 16, 784, 128, 10


def mlp(x, w1, b1, w2, b2):
    h = jax.nn.relu(x @ w1 + b1)
    return jax.nn.softmax(h @ w2 + b2, axis=-1)


@mixc.program
def infer(x: mixc.Input(client, (BATCH, IN)),
          w1: mixc.Input(server, (IN, HIDDEN)), b1: mixc.Input(server, (HIDDEN,)),
          w2: mixc.Input(server, (HIDDEN, OUT)), b2: mixc.Input(server, (OUT,))):
    return {"probs": reveal(device(mpc)(mlp)(x, w1, b1, w2, b2), client)}


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    n = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"x": n(BATCH, IN), "w1": n(IN, HIDDEN) * 0.05, "b1": n(HIDDEN) * 0.1,
            "w2": n(HIDDEN, OUT) * 0.1, "b2": n(OUT) * 0.1}


if __name__ == "__main__":
    data = make_data()
    probs = infer.simulate(**data)["probs"]
    ref = np.asarray(mlp(**data))
    print(f"max |probs - plain JAX| = {np.abs(probs - ref).max():.2e}; "
          f"same argmax on {np.mean(probs.argmax(1) == ref.argmax(1)):.0%} of the batch")
