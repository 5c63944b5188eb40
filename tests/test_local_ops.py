"""Every MPC op of the foundation, end to end as separate party processes (mixc run --local)."""
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]

PROGRAM = f'''
import jax
import jax.numpy as jnp
import mixc
from mixc import device, reveal

c = mixc.init_device({str(REPO / "examples" / "two_party.devices")!r})


def ops(a, b, k):
    return {{
        "add_sub_neg": a + b - (-a),
        "mul": a * b,
        "scale": a * 3.0,
        "matmul": a @ b.T,
        "batched": jnp.einsum("bij,bjk->bik", a.reshape(2, 2, 3), b.reshape(2, 3, 2)),
        "sum_mean": jnp.sum(a, axis=0) + jnp.mean(b),
        "broadcast": a + b[0][None, :],
        "reshape_transpose": a.reshape(6, 2).T,
        "slice": a[1:3, ::2],
        "concatenate": jnp.concatenate([a, jnp.ones((1, 3))], axis=0),
        "pad": jnp.pad(a, ((1, 0), (0, 2)), constant_values=0.5),
        "div_public": a / 4.0,
        "int_ops": k * 3 + k.sum(),
        # later additions, whose attributes (take's index arrays, round's method)
        # must survive the text each party process parses
        "gather_flip": jnp.flip(a, 0)[jnp.array([3, 0, 0])],
        "scatter_add": a.at[jnp.array([0, 0, 2]), 1].add(b[:3, 0]),
        "sort": jnp.sort(a * b, axis=1),
        "pool": jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (2, 2), (1, 1), "SAME"),
        "cumsum": jnp.cumsum(a, axis=1),
        "rounding": jnp.floor(a * 4) + jnp.round(b * 4) - jax.lax.round(a * 2),
        "to_int": (a * 10).astype(jnp.int32),
        "scan_cond": jax.lax.scan(lambda c, r: (jax.lax.cond(r.sum() > 0, lambda: c + r,
                                                             lambda: c - r), c), a[0], b)[1],
    }}


@mixc.program
def every_op(a: mixc.Input(c.p1, (4, 3)), b: mixc.Input(c.p2, (4, 3)),
             k: mixc.Input(c.p2, (5,), jnp.int32)):
    out = device(c.mpc)(ops)(a, b, k)
    return {{name: reveal(v, c.p1) for name, v in out.items()}}
'''


def test_every_op_as_party_processes(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    rng = np.random.default_rng(0)
    inputs = {"a": rng.standard_normal((4, 3)).astype(np.float32),
              "b": rng.standard_normal((4, 3)).astype(np.float32),
              "k": rng.integers(-100, 100, 5).astype(np.int32)}
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)

    def mixc_cli(*args):
        done = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    mixc_cli("build", tmp_path / "prog.py", "-o", tmp_path / "bundle")
    mixc_cli("run", tmp_path / "bundle", "--local", "--timeout", "60", "--output", tmp_path / "out",
             *[f"--input={n}={tmp_path / f'{n}.npy'}" for n in inputs])

    namespace = {}
    exec(compile(PROGRAM, "prog.py", "exec"), namespace)
    expected = namespace["ops"](*(jnp.asarray(inputs[n]) for n in ("a", "b", "k")))
    for name, ref in expected.items():
        got = np.load(tmp_path / "out" / "alice" / f"{name}.npy")
        ref = np.asarray(ref)
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        if np.issubdtype(ref.dtype, np.integer):
            np.testing.assert_array_equal(got, ref, err_msg=name)
        else:
            np.testing.assert_allclose(got, ref, atol=2e-4, err_msg=name)
