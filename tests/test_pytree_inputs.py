"""The author-facing API: tree inputs, simulate's build cache, moves that do nothing.

- ``mixc.Input(p, {"w": (3, 2), "b": (2,)})``: the program receives the same tree
  of device values; each leaf is one input named ``<parameter>/<path>``;
  ``simulate(params={...})`` takes the tree of arrays, and ``mixc run --input
  params=params.npz`` one array per leaf path. Results are compared with JAX.
- ``Program.simulate`` builds once per set of build options (counted by patching
  ``mixc.bundle.build``).
- ``reveal(x, d)`` / ``to(x, d)`` of a value already on ``d`` emit no op.
"""
# No `from __future__ import annotations`: mixc.program reads the annotations as objects.
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixc
from mixc import bundle as bundles
from mixc.bundle import inputs_by_party
from mixc.errors import InputError, TraceError
from mixc.frontend import DeviceValue

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "examples" / "two_party.devices"


def dense(params, x):
    """A two-layer model in plain JAX: the reference and the MPC body."""
    h = jnp.maximum(x @ params["layers"][0]["w"] + params["layers"][0]["b"], 0.0)
    return h @ params["layers"][1]["w"] * params["scale"].astype(jnp.float32)


SHAPES = {"layers": [{"w": (3, 4), "b": (4,)}, {"w": (4, 2)}],
          "scale": jax.ShapeDtypeStruct((), jnp.int32)}
LEAVES = ["layers.0.b", "layers.0.w", "layers.1.w", "scale"]


def make_params(seed):
    rng = np.random.default_rng(seed)
    return {"layers": [{"w": rng.normal(size=(3, 4)).astype(np.float32),
                        "b": rng.normal(size=(4,)).astype(np.float32)},
                       {"w": rng.normal(size=(4, 2)).astype(np.float32)}],
            "scale": np.int32(seed % 3 + 1)}


@pytest.fixture(scope="module")
def model(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def infer(params: mixc.Input(p2, SHAPES), x: mixc.Input(p1, (5, 3))):
        return {"y": mixc.reveal(mixc.device(mpc)(dense)(params, x), p1)}
    return infer


def test_tree_input_matches_jax(model):
    x = np.random.default_rng(9).normal(size=(5, 3)).astype(np.float32)
    for seed in (1, 2):
        params = make_params(seed)
        got = model.simulate(params=params, x=x)["y"]
        np.testing.assert_allclose(got, dense(params, x), atol=1e-3)


def test_leaves_are_inputs_named_by_path(model):
    b = model.build()
    records = b.manifest["inputs"]
    assert sorted(records) == sorted([f"params/{p}" for p in LEAVES] + ["x"])
    assert records["params/layers.0.w"] == {"party": "bob", "dtype": "f32", "shape": [3, 4],
                                            "tree": "params", "leaf": "layers.0.w",
                                            "frac_bits": 18, "ring_bits": 64}
    assert records["params/scale"]["dtype"] == "i32"
    assert 'name="params/layers.1.w"' in b.text("bob")
    assert "params/layers.1.w" not in b.text("alice")
    assert "= input params/layers.0.w [plaintext]: bob sees plaintext" in b.audit()


def test_leaf_may_be_given_alone(model):
    params, x = make_params(1), np.ones((5, 3), np.float32)
    flat = {f"params/{p}": v for p, v in zip(LEAVES, [params["layers"][0]["b"],
                                                     params["layers"][0]["w"],
                                                     params["layers"][1]["w"], params["scale"]])}
    got = model.simulate({**flat, "x": x})["y"]
    np.testing.assert_allclose(got, dense(params, x), atol=1e-3)


@pytest.mark.parametrize("change,pattern", [
    (lambda p: p.pop("scale"), r"input 'params' has no leaf 'scale'"),
    (lambda p: p["layers"][1].update(b=np.ones(2, np.float32)),
     r"input 'params' has leaf 'layers.1.b', which the program does not declare"),
    (lambda p: p["layers"][0].update(w=np.ones((4, 3), np.float32)),
     r"input 'params/layers.0.w' has shape \(4, 3\), the program declares \(3, 4\)"),
    (lambda p: p["layers"][0].update(b=np.array([1, np.inf, 2, 3], np.float32)),
     r"input 'params/layers.0.b' of party 'bob' holds inf at index \[1\]"),
])
def test_bad_tree_refused_naming_the_leaf(model, change, pattern):
    params = make_params(1)
    change(params)
    with pytest.raises(InputError, match=pattern) as e:
        model.simulate(params=params, x=np.ones((5, 3), np.float32))
    assert "\n" not in str(e.value)


def test_array_for_tree_and_missing_tree(model):
    with pytest.raises(InputError, match=r"'params' is a tree with leaves .*not one ndarray"):
        model.simulate(params=np.ones(3), x=np.ones((5, 3), np.float32))
    with pytest.raises(InputError, match=r"missing input\(s\) params$"):
        model.simulate(x=np.ones((5, 3), np.float32))


@st.composite
def trees(draw, depth=0):
    """A tree of shapes (dict/list/tuple nodes) with at least one leaf."""
    shape = st.lists(st.integers(0, 3), max_size=2).map(tuple)
    if depth == 2 or draw(st.booleans()):
        return draw(shape)
    children = draw(st.lists(trees(depth=depth + 1), min_size=1, max_size=3))
    kind = draw(st.sampled_from(["dict", "list", "tuple"]))
    if kind == "dict":
        return {f"k{i}": c for i, c in enumerate(children)}
    return list(children) if kind == "list" else tuple(children)


@settings(max_examples=40, deadline=None)
@given(tree=trees())
def test_any_tree_of_shapes_traces_to_its_leaves(cluster, tree):
    """Each leaf is one input, named by its path; the same tree of arrays is split
    into exactly those inputs."""
    @mixc.program
    def ident(t: mixc.Input(cluster.p1, tree)):
        leaves = jax.tree_util.tree_leaves(t, is_leaf=lambda v: isinstance(v, DeviceValue))
        return {f"o{i}": v for i, v in enumerate(leaves)}

    module = ident.trace()
    inputs = [n for n in module.nodes if n.op == "input"]
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda s: isinstance(s, tuple)
                                                and all(isinstance(d, int) for d in s))[0]
    if isinstance(tree, tuple) and all(isinstance(d, int) for d in tree):
        assert [n.attrs["name"] for n in inputs] == ["t"]
        return
    paths = [".".join(str(getattr(k, "key", getattr(k, "idx", None))) for k in p)
             for p, _ in flat]
    assert [n.attrs["name"] for n in inputs] == [f"t/{p}" for p in paths]
    assert [tuple(n.attrs["shape"]) for n in inputs] == [s for _, s in flat]
    manifest = {"parties": ["alice", "bob"],
                "inputs": {f"t/{p}": {"party": "alice", "tree": "t", "leaf": p} for p in paths}}
    arrays = jax.tree_util.tree_map(np.zeros, tree, is_leaf=lambda s: isinstance(s, tuple)
                                    and all(isinstance(d, int) for d in s))
    assert list(inputs_by_party(manifest, {"t": arrays})["alice"]) == [f"t/{p}" for p in paths]


@pytest.mark.parametrize("spec,pattern", [
    ({"w": (3, "a")}, r"leaf 'w' of an Input is \(3, 'a'\); a shape is a tuple of ints"),
    ({"w": (3,), "b": jax.ShapeDtypeStruct((2,), jnp.float64)},
     r"float32, int32 or bool, not float64 \(leaf 'b'\)"),
    ({}, r"tree of shapes has no leaves"),
    ({"a.b": (1,), "a": {"b": (2,)}}, r"two leaves .* both named 'a.b'"),
])
def test_bad_tree_of_shapes_names_the_leaf_and_line(cluster, spec, pattern):
    with pytest.raises(TraceError, match=pattern) as e:
        mixc.Input(cluster.p1, spec)
    assert f"{Path(__file__).name}:" in str(e.value)


# -------------------------------------------------------------- mixc run --input X.npz

PROGRAM = f'''
import jax.numpy as jnp
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


@mixc.program
def affine(params: mixc.Input(p2, {{"w": (3, 2), "b": (2,)}}), x: mixc.Input(p1, (4, 3))):
    y = device(mpc)(lambda p, x: x @ p["w"] + p["b"])(params, x)
    return {{"y": reveal(y, p1)}}
'''


def test_run_local_reads_one_array_per_leaf(tmp_path):
    (tmp_path / "affine.py").write_text(PROGRAM)
    run = lambda *a: subprocess.run([sys.executable, "-m", "mixc", *map(str, a)],  # noqa: E731
                                    cwd=tmp_path, capture_output=True, text=True, timeout=180)
    res = run("build", tmp_path / "affine.py", "-o", tmp_path / "b")
    assert res.returncode == 0, res.stderr
    assert "params/w (bob, f32[3, 2])" in res.stdout
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    np.savez(tmp_path / "params.npz", w=w, b=b)
    np.save(tmp_path / "x.npy", x)
    res = run("run", tmp_path / "b", "--local", "--input", f"params={tmp_path / 'params.npz'}",
              "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out" / "alice" / "y.npy"), x @ w + b,
                               atol=1e-3)
    res = run("show", tmp_path / "b", "--party", "bob")
    assert 'name="params/w"' in res.stdout and 'name="params/b"' in res.stdout


# ------------------------------------------------------------------- simulate's cache

@pytest.fixture
def builds(monkeypatch):
    """The number of times mixc.bundle.build ran."""
    count = []
    real = bundles.build

    def counting(*args, **kwargs):
        count.append(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(bundles, "build", counting)
    return count


def make_square(cluster):
    @mixc.program
    def square(x: mixc.Input(cluster.p1, (64,)), y: mixc.Input(cluster.p2, (64,))):
        z = mixc.device(cluster.mpc)(lambda a, b: jnp.tanh(a * b) + jnp.exp(a / 8))(x, y)
        return mixc.reveal(z, cluster.p1)
    return square


def test_simulate_builds_once_per_options(cluster, builds):
    square = make_square(cluster)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(2):
        x, y = rng.uniform(-2, 2, (2, 64)).astype(np.float32)
        start = time.perf_counter()
        got = square.simulate(x=x, y=y)
        times.append(time.perf_counter() - start)
        np.testing.assert_allclose(got, np.tanh(x * y) + np.exp(x / 8), atol=2e-2)
    assert len(builds) == 1
    assert times[1] < times[0] / 2, times     # no retrace, no rebuild
    square.simulate(x=x, y=y, network="wan")
    square.simulate(x=x, y=y, network="wan")
    assert len(builds) == 2 and builds[-1]["network"] == "wan"
    square.simulate(x=x, y=y, passes=None, verify_between=True)
    assert len(builds) == 3
    make_square(cluster).simulate(x=x, y=y)     # another Program object: its own build
    assert len(builds) == 4


def test_simulate_options_and_inputs_named_like_options(cluster, builds):
    @mixc.program
    def prog(network: mixc.Input(cluster.p1, (2,)), timeout: mixc.Input(cluster.p2, (2,))):
        return mixc.reveal(mixc.device(cluster.mpc)(jnp.add)(network, timeout), cluster.p1)
    a, b = np.ones(2, np.float32), np.full(2, 2.0, np.float32)
    np.testing.assert_allclose(prog.simulate(network=a, timeout=b), a + b, atol=1e-4)
    assert builds[-1]["network"] == "lan"     # the keywords were inputs
    got = prog.simulate({"network": a, "timeout": b}, network="wan", timeout=30.0)
    np.testing.assert_allclose(got, a + b, atol=1e-4)
    assert builds[-1]["network"] == "wan"     # with a dict, keywords are options
    with pytest.raises(InputError, match=r"unknown input\(s\) or option\(s\) netwrk"):
        prog.simulate(network=a, timeout=b, netwrk="wan")


# ------------------------------------------------------------ moves that do nothing

def test_reveal_or_to_where_the_value_is_emits_nothing(cluster):
    p1, mpc = cluster.p1, cluster.mpc

    @mixc.program
    def prog(x: mixc.Input(p1, (3,))):
        y = mixc.device(p1)(lambda a: a * 2)(x)
        same = mixc.to(mixc.reveal(y, p1), p1)
        assert same is y
        s = mixc.device(mpc)(jnp.negative)(x)
        assert mixc.to(s, mpc) is s
        return {"y": same, "z": mixc.reveal(mixc.reveal(s, p1), p1)}

    ops = [n.op for n in prog.trace().nodes]
    assert ops.count("reveal") == 1 and "to" not in ops
    x = np.arange(3, dtype=np.float32)
    out = prog.simulate(x=x)
    np.testing.assert_allclose(out["y"], x * 2)
    np.testing.assert_allclose(out["z"], -x, atol=1e-4)
