"""Shared fixtures for the end-to-end, frontend-error and pass tests.

- ``cluster``: the two-party cluster of ``examples/two_party.devices``
  (``p1`` = PYU at alice, ``p2`` = PYU at bob, ``mpc`` = 2PC over both).
- ``secure(fn, *arrays, owners=...)``: compile ``fn`` as the body of an MPC
  device function whose arguments are the given arrays, input at ``p1``/``p2``
  (``owners``, default alternating p1, p2, p1, ...), with every output
  revealed to ``p1``; build it with the verifier running after every pass
  (``mixc.bundle.build(prog, verify_between=True)``) and simulate it. Returns
  the revealed outputs in the structure ``fn`` returned them.
- ``make_program(body, inputs)``: a ``@mixc.program`` whose parameters are
  built from ``inputs`` (name -> ``mixc.Input``), for tests that need their own
  program body.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mixc
from mixc.bundle import build, simulate

REPO = Path(__file__).resolve().parent.parent
DEVICES = REPO / "examples" / "two_party.devices"

# The fault-injection proxy is a tool of its own (benchmarks/reliability.py runs it
# too); the fault and TLS tests import it from there.
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture(scope="session")
def cluster():
    return mixc.init_device(str(DEVICES))


def make_program(body, inputs, name="prog"):
    """A ``mixc.Program`` of ``body(**kwargs)`` with the given ``{name: mixc.Input}`` parameters.

    ``Program`` reads ``inspect.signature(fn)`` annotations, so the signature
    is built here instead of being written out in Python source.
    """
    def fn(**kwargs):
        return body(**kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__signature__ = inspect.Signature([
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=spec)
        for n, spec in inputs.items()])
    return mixc.program(fn)


def _device_of(cluster, owner):
    return getattr(cluster, owner) if isinstance(owner, str) else owner


def secure_program(cluster, fn, *arrays, owners=None, name="secure"):
    """The program for ``secure``: (program, inputs dict)."""
    arrays = [np.asarray(a) for a in arrays]
    if owners is None:
        owners = ["p1" if i % 2 == 0 else "p2" for i in range(len(arrays))]
    if isinstance(owners, str):
        owners = [owners] * len(arrays)
    assert len(owners) == len(arrays), "one owner per array"
    names = [f"x{i}" for i in range(len(arrays))]
    specs = {n: mixc.Input(_device_of(cluster, o), a.shape, a.dtype)
             for n, o, a in zip(names, owners, arrays)}

    def body(**kw):
        out = mixc.device(cluster.mpc)(fn)(*[kw[n] for n in names])
        return mixc.reveal(out, cluster.p1)

    return make_program(body, specs, name), dict(zip(names, arrays))


def run_secure(cluster, fn, *arrays, owners=None, with_bundle=False):
    prog, inputs = secure_program(cluster, fn, *arrays, owners=owners)
    bundle = build(prog, verify_between=True)
    out = simulate(bundle, inputs)
    return (out, bundle) if with_bundle else out


@pytest.fixture(scope="session")
def secure(cluster):
    def run(fn, *arrays, owners=None, with_bundle=False):
        return run_secure(cluster, fn, *arrays, owners=owners, with_bundle=with_bundle)
    return run


@pytest.fixture(scope="session")
def plain():
    """Reference: the same function run by plain JAX on the same inputs, as numpy."""
    def run(fn, *arrays):
        out = fn(*[jax.numpy.asarray(a) for a in arrays])
        return jax.tree_util.tree_map(np.asarray, out)
    return run


def chain_pass(chain):
    """A pass putting ``chain`` (e.g. ("a2b", "b2a")) of conversions before every reveal."""
    kinds = {"a2b": "bool", "b2a": "arith"}

    def run(module):
        for node in [n for n in module.nodes if n.op == "reveal"]:
            (v,) = node.operands
            at = module.nodes.index(node)
            for i, op in enumerate(chain):
                conv = module.add(op, [v], [v.type.with_(kind=kinds[op])], {}, node.loc, at=at + i)
                v = conv.result
            node.operands = (v,)
        return module
    return run


# The program every edited bundle in tests/leaks/bundles starts from: alice's a and bob's
# b, a product and a loop on the MPC device, the product revealed to alice and the loop's
# result to bob. Written as program.py into the test's directory and built there.
LEAKY_PROGRAM = '''
import jax.numpy as jnp
from jax import lax

import mixc
from mixc import device, reveal

cluster = mixc.init_device(DEVICES_PATH)
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def product(a, b):
    return a * b + a


def rounds(a, b):
    return lax.fori_loop(0, 3, lambda i, c: c * b + a, jnp.zeros_like(a))


@mixc.program
def leaky(a: mixc.Input(p1, (3,)), b: mixc.Input(p2, (3,))):
    c = device(mpc)(product)(a, b)
    d = device(mpc)(rounds)(a, b)
    return {"c": reveal(c, p1), "d": reveal(d, p2)}
'''


def write_leaky_program(directory):
    """LEAKY_PROGRAM as ``directory/program.py`` (the name the edited bundles' source lines
    carry); its path."""
    devices = Path(__file__).resolve().parents[1] / "examples" / "two_party.devices"
    path = Path(directory) / "program.py"
    path.write_text(LEAKY_PROGRAM.replace("DEVICES_PATH", repr(str(devices))))
    return path
