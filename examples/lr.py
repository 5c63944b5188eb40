"""The seed's LR demo: logistic regression trained under 2-party MPC.

alice (p1) holds 10 features x1; bob (p2) holds 10 more features x2 and the
labels y. The training is plain JAX (the same function trains in the clear);
mixc runs it on secret shares, with the sigmoid approximated (see
mixc/approx.py), and reveals the weights to alice only.

    python examples/lr.py                      # simulate, compare with plain JAX
    mixc build examples/lr.py -o build/lr
    python examples/lr.py --make-data build/lr_data
    mixc run build/lr --local --input x1=build/lr_data/x1.npy \\
        --input x2=build/lr_data/x2.npy --input y=build/lr_data/y.npy --output build/lr_out
    python examples/lr.py --check build/lr_data build/lr_out/alice
"""
import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

import mixc
from mixc import device, reveal

HERE = os.path.dirname(os.path.abspath(__file__))
cluster = mixc.init_device(os.path.join(HERE, "two_party.devices"))
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

N, D, EPOCHS, BATCH, LR = 10000, 10, 5, 1000, 0.5


def train(x1, x2, y):
    x = jnp.concatenate((x1, x2), axis=1)
    w = jnp.zeros(x.shape[1])
    b = 0.0
    for _ in range(EPOCHS):
        for i in range(0, x.shape[0], BATCH):
            xb, yb = x[i:i + BATCH], y[i:i + BATCH]
            g = jax.nn.sigmoid(xb @ w + b) - yb
            w = w - LR * xb.T @ g / BATCH
            b = b - LR * jnp.mean(g)
    return w, b


@mixc.program
def lr(x1: mixc.Input(p1, (N, D)), x2: mixc.Input(p2, (N, D)), y: mixc.Input(p2, (N,))):
    w, b = device(mpc)(train)(x1, x2, y)
    return {"w": reveal(w, p1), "b": reveal(b, p1)}


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 2 * D)).astype(np.float32)
    w_true = rng.standard_normal(2 * D)
    y = (x @ w_true + 0.1 * rng.standard_normal(N) > 0).astype(np.float32)
    return {"x1": x[:, :D], "x2": x[:, D:], "y": y}


def accuracy(data, w, b):
    x = np.concatenate((data["x1"], data["x2"]), axis=1)
    return float(((x @ np.asarray(w) + np.asarray(b) > 0) == data["y"]).mean())


def report(data, w, b):
    w_ref, b_ref = train(**data)
    print(f"accuracy under MPC: {accuracy(data, w, b):.4f}   plain JAX: "
          f"{accuracy(data, w_ref, b_ref):.4f}")
    print(f"max |w - w_plain| = {np.abs(np.asarray(w) - np.asarray(w_ref)).max():.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-data", metavar="DIR")
    ap.add_argument("--check", nargs=2, metavar=("DATA_DIR", "OUTPUT_DIR"))
    args = ap.parse_args()
    if args.make_data:
        os.makedirs(args.make_data, exist_ok=True)
        for name, value in make_data().items():
            np.save(os.path.join(args.make_data, f"{name}.npy"), value)
        print(f"wrote x1.npy, x2.npy, y.npy to {args.make_data}")
    elif args.check:
        data = {k: np.load(os.path.join(args.check[0], f"{k}.npy")) for k in ("x1", "x2", "y")}
        report(data, np.load(os.path.join(args.check[1], "w.npy")),
               np.load(os.path.join(args.check[1], "b.npy")))
    else:
        data = make_data()
        out = lr.simulate(**data)
        report(data, out["w"], out["b"])


if __name__ == "__main__":
    main()
