"""The seed's federated-learning demo: local training, secure aggregation, local update.

Three clients (PYU devices worker[0..2] on Client[0..2]) each train a
logistic-regression model on their own data, in plain JAX. Every round each
worker sends its weights `to` the aggregator, the aggregator averages them,
and the mean is revealed (`plaintext_to`) to every worker, which continues
training from it. Two programs, one per aggregator:

- ``fl_mpc``: the aggregator is an MPC device over Server[0] and Server[1]
  (examples/fl_mpc.devices): weights are secret-shared, the mean is computed
  on shares (plus a dealer for the fixed-point division), no server sees a
  client's weights. 6 processes: Client[0..2], Server[0], Server[1], dealer.
- ``fl_tee``: the aggregator is a TEE at Server (examples/fl_tee.devices):
  the clients send their weights in plaintext to the trusted (here only
  simulated) enclave. 4 processes: Client[0..2], Server.

    python examples/fl.py --make-data build/fl_data
    mixc build examples/fl.py --program fl_tee -o build/fl_tee
    mixc run build/fl_tee --local $(python examples/fl.py --inputs build/fl_data) \\
        --output build/fl_tee_out
    python examples/fl.py --check build/fl_data build/fl_tee_out
    mixc audit build/fl_tee

(the same with ``fl_mpc``); ``python examples/fl.py [--variant mpc|tee]``
simulates in this process and compares with the same algorithm in plain JAX.
"""
import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import mixc
from mixc import device, plaintext_to, to

HERE = os.path.dirname(os.path.abspath(__file__))
N, D = 64, 4           # samples per client, features
WORKERS, ROUNDS, LOCAL_STEPS, LR = 3, 100, 5, 0.5


# ------------------------------------------------------------ the algorithm (plain JAX)

def init_weights(x):
    """Zero weights (the last entry is the bias)."""
    return jnp.zeros(x.shape[1] + 1, dtype=jnp.float32)


def local_train(w, x, y):
    """A few steps of gradient descent on the logistic loss, on one client's data."""
    xb = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    for _ in range(LOCAL_STEPS):
        p = jax.nn.sigmoid(xb @ w)
        w = w - LR * xb.T @ (p - y) / x.shape[0]
    return w


def average(*ws):
    """The aggregator's job: the mean of the workers' weights."""
    return sum(ws) / len(ws)


def reference(data):
    """The same federated algorithm in plain JAX, without mixc."""
    xs = [jnp.asarray(data[f"x{i}"]) for i in range(WORKERS)]
    ys = [jnp.asarray(data[f"y{i}"]) for i in range(WORKERS)]
    w = [init_weights(x) for x in xs]
    for _ in range(ROUNDS):
        w = [local_train(w[i], xs[i], ys[i]) for i in range(WORKERS)]
        mean = average(*w)
        w = [mean] * WORKERS
    return {f"w{i}": np.asarray(w[i]) for i in range(WORKERS)}


# ------------------------------------------------------------ the mixc programs

def make_program(devices_file, name):
    cluster = mixc.init_device(os.path.join(HERE, devices_file))
    worker = [cluster[f"worker[{i}]"] for i in range(WORKERS)]
    aggregator = cluster.aggregator

    def fl(x0=mixc.Input(worker[0], (N, D)), y0=mixc.Input(worker[0], (N,)),
           x1=mixc.Input(worker[1], (N, D)), y1=mixc.Input(worker[1], (N,)),
           x2=mixc.Input(worker[2], (N, D)), y2=mixc.Input(worker[2], (N,))):
        x, y = [x0, x1, x2], [y0, y1, y2]
        w = [device(worker[i])(init_weights)(x[i]) for i in range(WORKERS)]

        def fl_round(_, w):
            w, w_ = list(w), []
            for i in range(WORKERS):                      # local train
                w[i] = device(worker[i])(local_train)(w[i], x[i], y[i])
                w_.append(to(w[i], aggregator))
            mean_w_ = device(aggregator)(average)(*w_)    # secure aggregation
            return [plaintext_to(mean_w_, worker[i])      # local update
                    for i in range(WORKERS)]
        # one loop op in every party's program, however many rounds
        w = mixc.fori_loop(0, ROUNDS, fl_round, w)
        return {f"w{i}": w[i] for i in range(WORKERS)}

    fl.__name__ = fl.__qualname__ = name
    return mixc.program(fl)


fl_mpc = make_program("fl_mpc.devices", "fl_mpc")
fl_tee = make_program("fl_tee.devices", "fl_tee")
PROGRAMS = {"mpc": fl_mpc, "tee": fl_tee}


# ------------------------------------------------------------ data and checks

def make_data(seed=0):
    """Three clients' data from one logistic model, each client's x shifted a little."""
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(D).astype(np.float32)
    data = {}
    for i in range(WORKERS):
        x = (rng.standard_normal((N, D)) + 0.3 * i).astype(np.float32)
        p = 1 / (1 + np.exp(-(x @ w_true - 0.5)))
        data[f"x{i}"] = x
        data[f"y{i}"] = (rng.random(N) < p).astype(np.float32)
    return data


def load_data(directory):
    return {f"{k}{i}": np.load(os.path.join(directory, f"{k}{i}.npy"))
            for i in range(WORKERS) for k in ("x", "y")}


def compare(out, ref):
    """max |mixc - plain JAX| over every worker's weights."""
    return max(float(np.abs(np.asarray(out[k]) - ref[k]).max()) for k in ref)


TOLERANCE = 1e-3  # fixed point (18 fraction bits) in the MPC mean, a few rounds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=sorted(PROGRAMS), default="mpc",
                    help="aggregator: mpc (Server[0], Server[1]) or tee (Server); default mpc")
    ap.add_argument("--make-data", metavar="DIR", help="write x<i>.npy, y<i>.npy to DIR")
    ap.add_argument("--inputs", metavar="DIR",
                    help="print the --input NAME=FILE arguments of mixc run for DIR's data")
    ap.add_argument("--check", nargs=2, metavar=("DATA_DIR", "OUTPUT_DIR"),
                    help="compare mixc run --local outputs (OUTPUT_DIR/<party>/w<i>.npy) "
                         "with plain JAX")
    args = ap.parse_args(argv)
    if args.make_data:
        os.makedirs(args.make_data, exist_ok=True)
        for name, value in make_data().items():
            np.save(os.path.join(args.make_data, f"{name}.npy"), value)
        print(f"wrote x0..x{WORKERS - 1}.npy, y0..y{WORKERS - 1}.npy to {args.make_data}")
        return 0
    if args.inputs:
        print(" ".join(f"--input {k}{i}={os.path.join(args.inputs, f'{k}{i}.npy')}"
                       for i in range(WORKERS) for k in ("x", "y")))
        return 0
    if args.check:
        ref = reference(load_data(args.check[0]))
        out = {f"w{i}": np.load(os.path.join(args.check[1], f"Client[{i}]", f"w{i}.npy"))
               for i in range(WORKERS)}
        err = compare(out, ref)
        print("mixc     w0:", np.round(out["w0"], 4))
        print("plain JAX w0:", np.round(ref["w0"], 4))
        print(f"max |mixc - plain JAX| = {err:.2e} (tolerance {TOLERANCE:g})")
        return 0 if err <= TOLERANCE else 1
    data = make_data()
    out = PROGRAMS[args.variant].simulate(**data)
    ref = reference(data)
    err = compare(out, ref)
    print(f"{args.variant}: w0 = {np.round(out['w0'], 4)}")
    print(f"max |mixc - plain JAX| = {err:.2e} (tolerance {TOLERANCE:g})")
    return 0 if err <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
