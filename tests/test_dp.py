"""Differential privacy: the noise has the calibrated distribution and the audit the budget."""
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import mixc
import mixc.bundle
from mixc import device, reveal

CLUSTER = mixc.init_device(Path(__file__).resolve().parents[1] / "examples" / "two_party.devices")
N = 40000


@mixc.program
def noisy(x: mixc.Input(CLUSTER.p1, (N,)), y: mixc.Input(CLUSTER.p2, (N,))):
    on_pyu = device(CLUSTER.p1)(lambda x: mixc.dp.laplace(x, sensitivity=1.0, epsilon=0.5))(x)
    on_mpc = device(CLUSTER.mpc)(
        lambda x, y: mixc.dp.gaussian(x + y, sensitivity=0.1, epsilon=0.5, delta=1e-5))(x, y)
    return {"laplace": on_pyu, "gaussian": reveal(on_mpc, CLUSTER.p1)}


@pytest.fixture(scope="module")
def samples():
    bundle = mixc.bundle.build(noisy, verify_between=True)
    zeros = np.zeros(N, np.float32)
    return bundle, mixc.bundle.simulate(bundle, {"x": zeros, "y": zeros + 1})


def test_laplace_distribution(samples):
    _, out = samples
    noise = out["laplace"].astype(np.float64)
    b = 1.0 / 0.5
    # variance 2 b^2 (within 5%: the sample variance's std is ~ 2.2% at N = 40000)
    assert abs(noise.var() / (2 * b * b) - 1) < 0.05
    assert abs(noise.mean()) < 0.05
    # Laplace, not Gaussian: P(|X| > b ln 20) = 1/20
    assert abs(np.mean(np.abs(noise) > b * math.log(20)) - 0.05) < 0.006


def test_gaussian_distribution_under_mpc(samples):
    _, out = samples
    noise = out["gaussian"].astype(np.float64) - 1.0
    sigma = 0.1 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5
    # each of the two parties adds N(0, sigma^2) into its share
    assert abs(noise.var() / (2 * sigma * sigma) - 1) < 0.05
    assert abs(np.mean(np.abs(noise) < math.sqrt(2) * sigma) - 0.6827) < 0.01


def test_noise_is_on_the_fixed_point_grid(samples):
    """Discrete noise (runtime/dp_noise.py): a PYU's on the grid 2^-11 (scale 2 = 2^12 grid
    units), an MPC party's on the device's 2^-18, so each output is an exact grid point."""
    _, out = samples
    pyu = out["laplace"].astype(np.float64) * 2 ** 11
    mpc = (out["gaussian"].astype(np.float64) - 1.0) * 2 ** 18
    assert np.array_equal(pyu, np.round(pyu)) and np.array_equal(mpc, np.round(mpc))
    # and on no coarser grid: about half are odd multiples
    assert 0.45 < np.mean(pyu % 2 == 1) < 0.55 and 0.45 < np.mean(mpc % 2 == 1) < 0.55


def test_pyu_input_off_the_grid_is_rounded_onto_it(samples):
    """An x with bits below the noise grid (1/3) would show them through x + noise: it is
    rounded onto the grid first, so the released value is still a grid point."""
    bundle, _ = samples
    third = np.full(N, 1 / 3, np.float32)
    out = mixc.bundle.simulate(bundle, {"x": third, "y": third})
    pyu = out["laplace"].astype(np.float64) * 2 ** 11
    assert np.array_equal(pyu, np.round(pyu))
    assert abs(out["laplace"].astype(np.float64).mean() - 1 / 3) < 0.05


def test_onto_grid_rounds_ties_up_so_the_grid_sensitivity_holds():
    """Inputs at distance <= s land at most D = ceil(s 2^f) grid points apart (the D the
    sampler calibrates to); round-half-to-even would put 0.5 and 1.5 two apart."""
    from mixc.dp import onto_grid
    from mixc.runtime.dp_noise import grid_sensitivity
    assert np.asarray(onto_grid(np.float32([0.5, 1.5, -0.5, -1.5, 2.49]), 0)).tolist() == \
        [1.0, 2.0, 0.0, -1.0, 2.0]
    rng = np.random.default_rng(7)
    for f, s in [(0, 1.0), (11, 1.0), (5, 0.37), (-2, 10.0)]:
        # half-grid ties and random points, each against a neighbour at distance <= s
        a = np.concatenate([(rng.integers(-999, 999, 4000) + 0.5) * 2.0 ** -f,
                            rng.uniform(-50, 50, 4000)]).astype(np.float32)
        b = (a.astype(np.float64) - s * rng.choice([1.0, rng.uniform()], a.size)).astype(np.float32)
        keep = np.abs(a.astype(np.float64) - b) <= s
        ga, gb = (np.asarray(onto_grid(v, f), np.float64) * 2.0 ** f for v in (a, b))
        assert np.array_equal(ga, np.floor(a.astype(np.float64) * 2.0 ** f + 0.5))
        assert np.abs(ga - gb)[keep].max() <= grid_sensitivity(s, f)
    big = np.float32([3e38, -7e30, 2.0 ** 20 + 1])            # on the grid already: unchanged
    assert np.array_equal(np.asarray(onto_grid(big, 18)), big)
    assert np.asarray(onto_grid(np.int32([7, -3]), 1)).tolist() == [7.0, -3.0]


def test_fresh_noise_every_run():
    bundle = mixc.bundle.build(noisy)
    zeros = np.zeros(N, np.float32)
    a = mixc.bundle.simulate(bundle, {"x": zeros, "y": zeros})
    b = mixc.bundle.simulate(bundle, {"x": zeros, "y": zeros})
    assert not np.array_equal(a["laplace"], b["laplace"])


def test_audit_reports_the_budget(samples):
    bundle, _ = samples
    audit = bundle.audit()
    assert "epsilon = 1, delta = 1e-05" in audit
    assert "laplace scale 2" in audit and "gaussian" in audit
    assert "discrete Laplace/Gaussian noise on the fixed-point grid" in audit


def test_bad_parameters_and_placement():
    with pytest.raises(ValueError, match="epsilon"):
        mixc.dp.laplace(jnp.zeros(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="epsilon < 1"):
        mixc.dp.gaussian(jnp.zeros(3), 1.0, 2.0, 1e-5)
    with pytest.raises(mixc.errors.TraceError, match="inside a device function"):
        mixc.dp.laplace(jnp.zeros(3), 1.0, 1.0)


def test_patent_training_example():
    """Claim 9 of the seed patent: DP on w's updates, HE on b; b exact up to fixed point,
    w within the DP noise of the noiseless plain-JAX training."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "examples" / "patent_training.py"
    spec = importlib.util.spec_from_file_location("patent_training", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = example.make_data()
    bundle = mixc.bundle.build(example.train, verify_between=True)
    out = mixc.bundle.simulate(bundle, data)
    w_ref, b_ref = example.plain(**data)
    assert abs(float(out["b"]) - float(b_ref)) < 1e-3
    assert np.abs(out["w"] - w_ref).max() < 0.05
    audit = bundle.audit()
    assert "total budget epsilon = 5" in audit
    assert "he" in bundle.stages["select_protocols"] and "he.decrypt" in bundle.text("bob")
