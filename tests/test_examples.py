"""The examples run as their docstrings say, and match plain JAX."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mixc(*args):
    done = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_seed_lr_demo_as_party_processes(tmp_path):
    """The seed's LR demo: accuracy within 1 point of plain JAX via simulate and via
    three party processes over TCP (mixc run --local)."""
    lr = _load("lr")
    data = lr.make_data()
    w_ref, b_ref = lr.train(**data)
    plain = lr.accuracy(data, w_ref, b_ref)

    simulated = lr.lr.simulate(**data)
    assert abs(lr.accuracy(data, simulated["w"], simulated["b"]) - plain) <= 0.01

    for name, value in data.items():
        np.save(tmp_path / f"{name}.npy", value)
    _mixc("build", EXAMPLES / "lr.py", "-o", tmp_path / "bundle")
    _mixc("run", tmp_path / "bundle", "--local", "--timeout", "120",
          *[f"--input={k}={tmp_path / f'{k}.npy'}" for k in data], "--output", tmp_path / "out")
    w = np.load(tmp_path / "out" / "alice" / "w.npy")
    b = np.load(tmp_path / "out" / "alice" / "b.npy")
    assert abs(lr.accuracy(data, w, b) - plain) <= 0.01
    np.testing.assert_allclose(w, np.asarray(w_ref), atol=5e-3)


def test_mlp_inference_example():
    mlp = _load("mlp_inference")
    data = mlp.make_data()
    probs = mlp.infer.simulate(**data)["probs"]
    ref = np.asarray(mlp.mlp(**data))
    np.testing.assert_allclose(probs, ref, atol=1e-3)
    assert (probs.argmax(1) == ref.argmax(1)).all()


def test_linear_regression_and_matmul_examples():
    linreg = _load("linear_regression")
    data = linreg.make_data()
    w = linreg.linear_regression.simulate(**data)["w"]
    np.testing.assert_allclose(w, np.asarray(linreg.train(**data)), atol=2e-3)
    matmul = _load("matmul")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal((32, 16)).astype(np.float32)
    np.testing.assert_allclose(matmul.matmul.simulate(a=a, b=b), a @ b, atol=1e-3)
