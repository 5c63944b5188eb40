"""The cost model: declared costs match what runs, and the choice follows the network."""
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import mixc
import mixc.bundle
from mixc import device, reveal

from conftest import make_program

REPO_DEVICES = mixc.init_device(__import__("pathlib").Path(__file__).resolve().parents[1]
                                / "examples" / "two_party.devices")
P1, P2, MPC = REPO_DEVICES.p1, REPO_DEVICES.p2, REPO_DEVICES.mpc


def _two_input(fn, shape_a, shape_b, dtype=jnp.float32):
    return make_program(
        lambda a, b: reveal(device(MPC)(fn)(a, b), P1),
        {"a": mixc.Input(P1, shape_a, dtype), "b": mixc.Input(P2, shape_b, dtype)})


def _run(prog, a, b, network="lan"):
    bundle = mixc.bundle.build(prog, verify_between=True, network=network)
    stats = {}
    out = mixc.bundle.simulate(bundle, {"a": a, "b": b}, stats=stats)
    sent = sum(s["bytes_sent_total"] for s in stats.values())
    return bundle, out, sent


def _lr_step(x, y):
    w = jnp.zeros(x.shape[1])
    for _ in range(2):
        g = jnp.maximum(x @ w, 0.0) - y[:, 0]
        w = w - 0.1 * x.T @ g / x.shape[0]
    return w


CASES = [
    ("mul", lambda a, b: a * b, (300,), (300,)),
    ("matmul", lambda a, b: a @ b, (20, 30), (30, 10)),
    ("less", lambda a, b: a < b, (5000,), (5000,)),
    ("relu_where", lambda a, b: jnp.where(a > b, jnp.maximum(a, 0.0), b * 2.0), (700,), (700,)),
    ("equal_and", lambda a, b: (a == b) & (a < 1.0), (900,), (900,)),
    ("lr_step", _lr_step, (64, 5), (64, 1)),
    ("rounding", lambda a, b: jnp.floor(a) + jnp.round(b) - a.astype(jnp.int32), (300,), (300,)),
]


@pytest.mark.parametrize("name,fn,sa,sb", CASES, ids=[c[0] for c in CASES])
def test_estimated_bytes_match_the_run(name, fn, sa, sb):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    bundle, out, sent = _run(_two_input(fn, sa, sb), a, b)
    estimate = bundle.cost_report.total.bytes
    assert abs(sent - estimate) <= 0.10 * estimate, (sent, estimate)
    ref = np.asarray(fn(a, b))
    assert np.allclose(np.asarray(out, np.float64), ref.astype(np.float64), atol=1e-2)


def test_choice_flips_with_the_network():
    """A comparison on 30k elements: on a LAN bytes dominate, so the radix-2 carry tree
    (7 rounds, fewer bytes) wins; on a WAN rounds dominate, so radix-4 (4 rounds) wins."""
    n = 30000
    rng = np.random.default_rng(2)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    chosen = {}
    for network in ("lan", "wan"):
        bundle, out, sent = _run(_two_input(lambda x, y: x < y, (n,), (n,)), a, b, network)
        chosen[network] = [row[2] for row in bundle.cost_report.rows if row[1] == "lt"]
        np.testing.assert_array_equal(out, a < b)
        assert f'protocol="{chosen[network][0]}"' in bundle.stages["select_protocols"]
    assert chosen == {"lan": ["bool2pc"], "wan": ["bool2pc.radix4"]}


def test_selection_is_whole_graph_not_greedy():
    """A predicate feeding both boolean logic and an arithmetic select is converted once,
    and the logic stays boolean: the min cut sees every consumer."""
    prog = _two_input(lambda a, b: jnp.where((a < b) & (b < 0.5), a, b), (100,), (100,))
    bundle = mixc.bundle.build(prog, verify_between=True)
    text = bundle.stages["select_protocols"]
    assert text.count("= b2a(") == 1
    assert 'and(' in text and 'protocol="bool2pc"' in text


def test_cli_cost_report(tmp_path):
    prog_file = tmp_path / "prog.py"
    prog_file.write_text(
        "import mixc\nfrom mixc import device, reveal\n"
        f"c = mixc.init_device({str(REPO_DEVICES.source or '')!r})\n"
        "@mixc.program\n"
        "def p(a: mixc.Input(c.p1, (100,)), b: mixc.Input(c.p2, (100,))):\n"
        "    return reveal(device(c.mpc)(lambda x, y: x * y < y)(a, b), c.p1)\n")
    done = subprocess.run([sys.executable, "-m", "mixc", "build", str(prog_file), "-o",
                           str(tmp_path / "out"), "--cost-report"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "arith2pc" in done.stdout and "bool2pc" in done.stdout
    assert "total" in done.stdout.lower()
