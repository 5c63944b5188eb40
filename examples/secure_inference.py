"""Secure inference with the seed patent's masking protocol: client input, server weights.

The client (alice) holds an input; the server (bob) holds a model. Two
programs, both on the dealer-free 2-party MPC device of ``client_server.devices``
(``offline: he``: the bundle has exactly the two parties):

- ``mlp``: a 784-128-10 MLP (relu), returning the logits and the argmax label;
- ``cnn``: a 1x8x8 image, a 3x3 convolution with 4 channels, relu, a dense
  144 -> 10 layer.

The server's weights never leave it: each dense/conv layer runs the masking
protocol (``mixc/protocols/masking.py``): offline the client sends Enc(r)
under its own RLWE key and gets back W.r - s, online it sends only x - r and
the server computes W.(x - r) + s; the two are additive shares of W.x, which
the server's bias add, relu and argmax continue on (with correlations made by
the two parties themselves: OT and HE, ``mixc/protocols/dealerfree.py``).
The selection pass picks the masking protocol by declared cost on every
layer: Beaver would need HE-made matrix triples in both directions plus the
opening of W - b. (With a dealer, ``two_party.devices``, Beaver is cheaper
for small layers; ``@mixc.program(prefer=("masking",))`` or ``mixc build
--prefer masking`` then asks for masking wherever it applies.)

    python examples/secure_inference.py              # simulate both, compare to plain JAX
    mixc build examples/secure_inference.py --program mlp -o build/mlp
    python examples/secure_inference.py --save-inputs build/mlp_inputs mlp
    mixc run build/mlp --local --output build/mlp_out \\
        $(for f in build/mlp_inputs/*.npy; do echo --input $(basename $f .npy)=$f; done)
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import mixc
from mixc import device, reveal

HERE = os.path.dirname(os.path.abspath(__file__))
cluster = mixc.init_device(os.path.join(HERE, "client_server.devices"))
client, server, mpc = cluster.client, cluster.server, cluster.mpc

IN, HIDDEN, OUT = 784, 128, 10
IMAGE, CHANNELS, KERNEL = (1, 1, 8, 8), 4, 3
FLAT = CHANNELS * (IMAGE[2] - KERNEL + 1) * (IMAGE[3] - KERNEL + 1)


def mlp_model(x, w1, b1, w2, b2):
    h = jax.nn.relu(x @ w1 + b1)
    logits = h @ w2 + b2
    return logits, jnp.argmax(logits, axis=-1)


def cnn_model(x, k, kb, w, b):
    h = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID") + kb[None, :, None, None]
    h = jax.nn.relu(h).reshape(x.shape[0], -1)
    logits = h @ w + b
    return logits, jnp.argmax(logits, axis=-1)


@mixc.program
def mlp(x: mixc.Input(client, (1, IN)),
        w1: mixc.Input(server, (IN, HIDDEN)), b1: mixc.Input(server, (HIDDEN,)),
        w2: mixc.Input(server, (HIDDEN, OUT)), b2: mixc.Input(server, (OUT,))):
    logits, label = device(mpc)(mlp_model)(x, w1, b1, w2, b2)
    return {"logits": reveal(logits, client), "label": reveal(label, client)}


@mixc.program
def cnn(x: mixc.Input(client, IMAGE),
        k: mixc.Input(server, (CHANNELS, IMAGE[1], KERNEL, KERNEL)),
        kb: mixc.Input(server, (CHANNELS,)),
        w: mixc.Input(server, (FLAT, OUT)), b: mixc.Input(server, (OUT,))):
    logits, label = device(mpc)(cnn_model)(x, k, kb, w, b)
    return {"logits": reveal(logits, client), "label": reveal(label, client)}


def mlp_data(seed=0):
    rng = np.random.default_rng(seed)
    n = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"x": n(1, IN), "w1": n(IN, HIDDEN) * 0.05, "b1": n(HIDDEN) * 0.1,
            "w2": n(HIDDEN, OUT) * 0.1, "b2": n(OUT) * 0.1}


def cnn_data(seed=0):
    rng = np.random.default_rng(seed)
    n = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"x": n(*IMAGE), "k": n(CHANNELS, IMAGE[1], KERNEL, KERNEL) * 0.3,
            "kb": n(CHANNELS) * 0.1, "w": n(FLAT, OUT) * 0.1, "b": n(OUT) * 0.1}


MODELS = {"mlp": (mlp, mlp_model, mlp_data), "cnn": (cnn, cnn_model, cnn_data)}


def check(name):
    program, model, data = MODELS[name]
    inputs = data()
    out = program.simulate(**inputs)
    logits, label = (np.asarray(v) for v in model(**inputs))
    err = np.abs(out["logits"] - logits).max()
    print(f"{name}: max |logits - plain JAX| = {err:.2e}; label {out['label']} "
          f"(plain JAX: {label})")
    return err


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--save-inputs":
        os.makedirs(sys.argv[2], exist_ok=True)
        for key, value in MODELS[sys.argv[3]][2]().items():
            np.save(os.path.join(sys.argv[2], f"{key}.npy"), value)
    else:
        for name in MODELS:
            check(name)
