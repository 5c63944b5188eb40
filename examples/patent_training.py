"""The seed patent's training claim: a third node trains the server's model,
DP on the linear component w, HE on the bias b.

The server (bob) holds a linear model (w, b); a third node (carol) holds the
training data. Each round the server sends w to the third node, which computes
the gradient on its own data. The update of w travels back to the server with
Gaussian DP noise (``mixc.dp.gaussian``), so the server learns the data only
through differentially private updates. The bias never leaves the HE device:
the server's b is encrypted under the server's own key, the third node
applies its private updates to the ciphertext, and only the final b is
decrypted, by the server. The audit lists the DP budget (basic composition
over the rounds) and the HE trust assumptions.

The third node centres its features, so the gradient of w does not need b,
and b's update is linear in b: with m_k = mean(x w_k - y) in round k,
b' = (1 - lr) b - lr m_k, so after R rounds
b = (1 - lr)^R b0 - lr sum_k (1 - lr)^(R-1-k) m_k. The third node keeps the
sum in the clear (its own statistics) and the HE device combines it with the
server's encrypted b0 once: ciphertexts are not truncated, so one product
by a public constant per ciphertext keeps them within the ring.

    python examples/patent_training.py          # simulate, compare with noiseless plain JAX
"""
import os

import jax.numpy as jnp
import numpy as np

import mixc
from mixc import device, reveal, to

HERE = os.path.dirname(os.path.abspath(__file__))
cluster = mixc.init_device(os.path.join(HERE, "server_trainer.devices"))
server, trainer, he = cluster.server, cluster.trainer, cluster.he

N, D, ROUNDS, LR = 2000, 8, 10, 0.3
EPSILON, DELTA = 0.5, 1e-6          # per round, for the w update
CLIP = 1.0                          # gradient rows are clipped: the L2 sensitivity is CLIP / N


def gradients(w, x, y):
    """The third node's step on its centred data: (DP-noised grad w, mean residual)."""
    xc = x - x.mean(axis=0)
    residual = xc @ w - (y - y.mean())
    rows = xc * residual[:, None]
    norms = jnp.maximum(jnp.linalg.norm(rows, axis=1, keepdims=True) / CLIP, 1.0)
    grad_w = jnp.sum(rows / norms, axis=0) / x.shape[0]
    noisy = mixc.dp.gaussian(grad_w, sensitivity=CLIP / x.shape[0], epsilon=EPSILON, delta=DELTA)
    return noisy, jnp.mean(x @ w - y)


@mixc.program
def train(x: mixc.Input(trainer, (N, D)), y: mixc.Input(trainer, (N,)),
          w0: mixc.Input(server, (D,)), b0: mixc.Input(server, ())):
    w, bias_updates = w0, None
    for _ in range(ROUNDS):
        grad_w, mean_residual = device(trainer)(gradients)(to(w, trainer), x, y)
        w = device(server)(lambda w, g: w - LR * g)(w, to(grad_w, server))
        bias_updates = mean_residual if bias_updates is None else device(trainer)(
            lambda acc, m: (1 - LR) * acc + m)(bias_updates, mean_residual)
    b = device(he)(lambda b0, acc: (1 - LR) ** ROUNDS * b0 - LR * acc)(to(b0, he),
                                                                        to(bias_updates, he))
    return {"w": w, "b": reveal(b, server)}


def plain(x, y, w0, b0):
    """The same training in the clear, without noise."""
    w, b = jnp.asarray(w0), jnp.asarray(b0)
    xc, yc = x - x.mean(axis=0), y - y.mean()
    for _ in range(ROUNDS):
        residual = xc @ w - yc
        rows = xc * residual[:, None]
        norms = jnp.maximum(jnp.linalg.norm(rows, axis=1, keepdims=True) / CLIP, 1.0)
        m = jnp.mean(x @ w - y)
        w = w - LR * jnp.sum(rows / norms, axis=0) / x.shape[0]
        b = (1 - LR) * b - LR * m
    return np.asarray(w), np.asarray(b)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    w_true = rng.standard_normal(D).astype(np.float32) * 0.5
    y = (x @ w_true + 0.7 + 0.05 * rng.standard_normal(N)).astype(np.float32)
    return {"x": x, "y": y, "w0": np.zeros(D, np.float32), "b0": np.zeros((), np.float32)}


if __name__ == "__main__":
    data = make_data()
    out = train.simulate(**data)
    w_ref, b_ref = plain(**data)
    print(f"max |w - w_plain| = {np.abs(out['w'] - w_ref).max():.3e} (DP noise)")
    print(f"|b - b_plain| = {abs(float(out['b']) - float(b_ref)):.3e} (HE, fixed point)")
    budget = [line for line in train.build().audit().splitlines() if "total budget" in line]
    print(budget[0].strip() if budget else "no DP budget in the audit")
