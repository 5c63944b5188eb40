"""Scale checks for loops (issue "Loops stay loops"): build cost against trip count,
and memory of a long training run.

    python benchmarks/loops.py [build] [memory] [dealer_free] [he_device]

Prints one JSON line per check:

- ``build``: the same minibatch LR (2000x10, batch 20, ``lax.fori_loop`` with
  ``dynamic_slice``) built at 10 and at 5000 steps: ``build_s`` and the total
  size of the party programs' text (``program_bytes``) of each, and their
  ratios (target: time within 2x, size within 1.5x).
- ``memory``: 1000 steps of that LR under ``simulate`` in a fresh process:
  ``peak_rss_mb`` of that process (target < 1536), ``wall_s``, the largest
  |mixc weights - plain JAX weights| (target < 0.05) and both accuracies.
- ``dealer_free``: the same LR on a dealer-free MPC device (``offline: he``,
  ``examples/two_party_he.devices``: correlations made by the two parties per
  iteration, by OT and HE) built at 10 and at 500 steps (``build_s_*``,
  ``program_bytes_*``, their ratios: about 1), and a 20-step run under
  ``simulate`` (``wall_s_20``, ``weights_max_abs_err_20`` against plain JAX).
- ``he_device``: minibatch linear regression on an HE device (alice's model
  encrypted under her key, bob's rows in the clear), the same four figures.
"""
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import mixc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, BS = 2000, 10, 20


def train(steps):
    def fn(x, y):
        def step(i, w):
            j = i % (x.shape[0] // BS)
            xb = lax.dynamic_slice(x, (j * BS, 0), (BS, x.shape[1]))
            yb = lax.dynamic_slice(y, (j * BS,), (BS,))
            return w - 0.5 * xb.T @ (jax.nn.sigmoid(xb @ w) - yb) / BS
        return lax.fori_loop(0, steps, step, jnp.zeros(x.shape[1]))
    return fn


def program(steps, devices="two_party.devices"):
    cluster = mixc.init_device(os.path.join(ROOT, "examples", devices))

    @mixc.program
    def lr(x: mixc.Input(cluster.p1, (N, D)), y: mixc.Input(cluster.p2, (N,))):
        return {"w": mixc.reveal(mixc.device(cluster.mpc)(train(steps))(x, y), cluster.p1)}
    return lr


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x @ rng.standard_normal(D) > 0).astype(np.float32)
    return x, y


def build_ratios(rec, make, steps):
    """``rec`` with the build time and party-program bytes of ``make(10)`` and
    ``make(steps)`` and their ratios (after a warm-up build: JAX's first traces)."""
    make(10).build()
    for n in (10, steps):
        t = time.perf_counter()
        bundle = make(n).build()
        rec[f"build_s_{n}"] = round(time.perf_counter() - t, 4)
        rec[f"program_bytes_{n}"] = sum(len(bundle.text(p)) for p in bundle.parties)
    rec["build_ratio"] = round(rec[f"build_s_{steps}"] / rec["build_s_10"], 3)
    rec["size_ratio"] = round(rec[f"program_bytes_{steps}"] / rec["program_bytes_10"], 3)
    return rec


def build_check():
    return build_ratios({"check": "build"}, program, 5000)


def memory_check(steps=1000):
    x, y = data()
    prog = program(steps)
    t = time.perf_counter()
    w = prog.simulate(x=x, y=y, check_ranges=False)["w"]  # the parties' own cost
    wall = time.perf_counter() - t
    ref = np.asarray(train(steps)(jnp.asarray(x), jnp.asarray(y)))
    acc = lambda v: float(np.mean(((x @ v) > 0) == (y > 0.5)))  # noqa: E731
    return {"check": "memory", "steps": steps, "wall_s": round(wall, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "weights_max_abs_err": float(np.abs(w - ref).max()),
            "accuracy": acc(w), "plain_accuracy": acc(ref)}


def dealer_free_check(run_steps=20):
    rec = {"check": "dealer_free"}
    devices = "two_party_he.devices"
    program(10, devices).build()  # warm-up
    for steps in (10, 500):
        t = time.perf_counter()
        bundle = program(steps, devices).build()
        rec[f"build_s_{steps}"] = round(time.perf_counter() - t, 4)
        rec[f"program_bytes_{steps}"] = sum(len(bundle.text(p)) for p in bundle.parties)
    rec["build_ratio"] = round(rec["build_s_500"] / rec["build_s_10"], 3)
    rec["size_ratio"] = round(rec["program_bytes_500"] / rec["program_bytes_10"], 3)
    x, y = data()
    prog = program(run_steps, devices)
    t = time.perf_counter()
    w = prog.simulate(x=x, y=y, check_ranges=False)["w"]  # the parties' own cost
    rec[f"wall_s_{run_steps}"] = round(time.perf_counter() - t, 3)
    ref = np.asarray(train(run_steps)(jnp.asarray(x), jnp.asarray(y)))
    rec[f"weights_max_abs_err_{run_steps}"] = float(np.abs(w - ref).max())
    return rec


HE_DEVICE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                         "two_party_he_device.devices")


def he_train(steps):
    """Minibatch linear regression on an HE device: alice's model under her own key,
    bob's rows in the clear at bob."""
    def fn(w0, x, y):
        def step(i, w):
            j = i % (x.shape[0] // BS)
            xb = lax.dynamic_slice(x, (j * BS, 0), (BS, x.shape[1]))
            yb = lax.dynamic_slice(y, (j * BS,), (BS,))
            return w - 0.1 * xb.T @ (xb @ w - yb) / BS
        return lax.fori_loop(0, steps, step, w0)
    return fn


def he_program(steps):
    cluster = mixc.init_device(HE_DEVICE)

    @mixc.program
    def lr(w0: mixc.Input(cluster.p1, (D,)), x: mixc.Input(cluster.p2, (N, D)),
           y: mixc.Input(cluster.p2, (N,))):
        return {"w": mixc.reveal(mixc.device(cluster.he)(he_train(steps))(w0, x, y), cluster.p1)}
    return lr


def he_device_check(run_steps=20):
    """``he_device``: that regression built at 10 and 500 steps (ratios about 1) and run
    for ``run_steps`` under ``simulate`` against plain JAX."""
    rec = build_ratios({"check": "he_device"}, he_program, 500)
    x, y = data()
    w0 = np.zeros(D, np.float32)
    t = time.perf_counter()
    w = he_program(run_steps).simulate(w0=w0, x=x, y=y, check_ranges=False)["w"]
    rec[f"wall_s_{run_steps}"] = round(time.perf_counter() - t, 3)
    ref = np.asarray(he_train(run_steps)(jnp.asarray(w0), jnp.asarray(x), jnp.asarray(y)))
    rec[f"weights_max_abs_err_{run_steps}"] = float(np.abs(w - ref).max())
    return rec


def main(argv):
    checks = argv or ["build", "memory", "dealer_free", "he_device"]
    for check in checks:
        if check == "build":
            print(json.dumps(build_check()), flush=True)
        elif check == "memory":  # a process of its own, so its peak RSS is its own
            out = subprocess.run([sys.executable, __file__, "_memory"], check=True,
                                 capture_output=True, text=True).stdout
            print(out.strip(), flush=True)
        elif check == "_memory":
            print(json.dumps(memory_check()), flush=True)
        elif check == "dealer_free":
            print(json.dumps(dealer_free_check()), flush=True)
        elif check == "he_device":
            print(json.dumps(he_device_check()), flush=True)
        else:
            raise SystemExit(f"unknown check {check!r}: build, memory, dealer_free, he_device")


if __name__ == "__main__":
    main(sys.argv[1:])
