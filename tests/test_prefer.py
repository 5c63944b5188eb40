"""Whatever protocol the author prefers (``build(prefer=...)``, ``mixc build
--prefer``), every program still builds, verifies between passes, and matches
plain JAX: a preference only moves the selection among correct choices."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import secure_program
from mixc.bundle import build, simulate
from mixc.protocols import RULES, load

load()
PROTOCOLS = sorted({r.protocol for rules in RULES.values() for r in rules})
X = np.linspace(-3, 3, 24).astype(np.float32).reshape(4, 6)
Y = np.cos(np.arange(24)).astype(np.float32).reshape(4, 6)
K = np.arange(-12, 12, dtype=np.int32).reshape(4, 6)


def mixed(a, b, k):
    c = jnp.where(a > b, a * b, jnp.concatenate([a[:, 3:], b[:, :3]], axis=1))
    return (jax.nn.sigmoid(c), jnp.argmax(b, axis=0), jnp.sort(a - b, axis=1),
            jnp.concatenate([k ^ 5, k & 3]).T[::-1], jnp.floor(a * b))


# the MPC protocols that compete for the same ops, per kind of device
CASES = [("two_party.devices", p) for p in ((), ("arith2pc",), ("bool2pc",), ("bool2pc.radix4",))]
CASES += [("two_party_he.devices", p) for p in ((), ("arith2pc.he",), ("bool2pc.ot",), ("masking",))]


@pytest.mark.parametrize("devices, prefer", CASES)
def test_every_preference_matches_jax(devices, prefer):
    import mixc
    from conftest import REPO
    assert set(prefer) <= set(PROTOCOLS)
    cluster = mixc.init_device(str(REPO / "examples" / devices))
    prog, inputs = secure_program(cluster, mixed, X, Y, K)
    want = jax.tree_util.tree_leaves(mixed(*map(jnp.asarray, (X, Y, K))))
    got = jax.tree_util.tree_leaves(simulate(build(prog, prefer=prefer, verify_between=True),
                                             inputs))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64),
                                   atol=2e-3)
