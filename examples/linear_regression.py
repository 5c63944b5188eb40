"""Linear regression trained by gradient descent under 2-party MPC.

alice (p1) holds 5 features, bob (p2) holds 5 more features and the target.
The training runs on secret shares; only alice learns the weights.

    mixc build examples/linear_regression.py -o build/lr
    python examples/linear_regression.py --make-data build/lr_data
    mixc run build/lr --local --input x1=build/lr_data/x1.npy \
        --input x2=build/lr_data/x2.npy --input y=build/lr_data/y.npy --output build/lr_out
    python examples/linear_regression.py --check build/lr_data build/lr_out/alice
"""
import argparse
import os

import jax.numpy as jnp
import numpy as np

import mixc
from mixc import device, reveal

HERE = os.path.dirname(os.path.abspath(__file__))
cluster = mixc.init_device(os.path.join(HERE, "two_party.devices"))
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

N, D1, D2, STEPS, LR = 1000, 5, 5, 20, 0.1


def train(x1, x2, y):
    x = jnp.concatenate((x1, x2), axis=1)
    w = jnp.zeros(x.shape[1])
    for _ in range(STEPS):
        grad = x.T @ (x @ w - y) / x.shape[0]
        w = w - LR * grad
    return w


@mixc.program
def linear_regression(x1: mixc.Input(p1, (N, D1)),
                      x2: mixc.Input(p2, (N, D2)),
                      y: mixc.Input(p2, (N,))):
    w = device(mpc)(train)(x1, x2, y)
    return {"w": reveal(w, p1)}


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D1 + D2)).astype(np.float32)
    w_true = rng.standard_normal(D1 + D2).astype(np.float32)
    y = (x @ w_true + 0.1 * rng.standard_normal(N)).astype(np.float32)
    return {"x1": x[:, :D1], "x2": x[:, D1:], "y": y}


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
        w = np.load(os.path.join(args.check[1], "w.npy"))
        ref = np.asarray(train(**data))
        print("secure w :", np.round(w, 4))
        print("plain JAX:", np.round(ref, 4))
        print(f"max |secure - plain| = {np.abs(w - ref).max():.2e}")
    else:
        data = make_data()
        out = linear_regression.simulate(**data)
        ref = np.asarray(train(**data))
        print("secure w:", np.round(out["w"], 4))
        print(f"max |secure - plain JAX| = {np.abs(out['w'] - ref).max():.2e}")


if __name__ == "__main__":
    main()
