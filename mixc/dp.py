"""Differential privacy: calibrated noise inside any device function.

    def release(x):
        return mixc.dp.laplace(jnp.sum(x), sensitivity=1.0, epsilon=0.5)

Each call becomes a ``dp_noise`` op in the IR (mechanism, scale, epsilon,
delta), so the audit can add up the program's budget. The noise is drawn at
run time from ChaCha20 keyed by ``os.urandom`` (never from numpy's RNG or
floating point): it is k * 2^-f for an integer k drawn *exactly* from the
discrete Laplace or discrete Gaussian on the fixed-point grid 2^-f, by the
rejection samplers of Canonne, Kamath and Steinke ("The Discrete Gaussian for
Differential Privacy", 2020; ``runtime/dp_noise.py``), every decision an
integer comparison of uniform words. Float inverse-CDF noise (Mironov 2012)
is not used. f is an MPC device's ``fraction_bits``; on a PYU the largest
f <= 18 that keeps the scale within 2^12 grid units (so k * 2^-f is an exact
float32). D = ceil(sensitivity * 2^f) is the sensitivity in grid units.

- Laplace: k ~ Lap_Z(t), P(k) ~ exp(-|k|/t), t = ceil(D / epsilon): pure
  (D/t)-DP, at most epsilon (b = sensitivity / epsilon is the scale shown).
- Gaussian: k ~ N_Z(0, s2), P(k) ~ exp(-k^2 / (2 s2)), s2 = the classical
  calibration sigma^2 = D^2 2 ln(1.25/delta) / epsilon^2 in grid units rounded
  up (Dwork & Roth, Thm. A.1), (epsilon, delta)-DP for epsilon < 1 (larger
  epsilon is refused); the tests check the discrete mechanism's exact privacy
  curve against the stated pair.
- Accounting is basic sequential composition: the audit reports the sums of
  epsilon and delta over every mechanism in the program.
- On an MPC device each party adds its own noise of the full scale into its
  share (the noise is on the device's grid, so the encoding is exact), so
  neither party alone knows (or can remove) the noise; the revealed value
  carries the sum of the two (twice the variance).
- On a PYU (or TEE) x is first rounded to the grid (ties up, so D bounds the
  rounded inputs' distance), so the released float32 x + noise is on it and no
  bit of x below 2^-f shows through.
- What is exact: the bounds above hold for neighbours whose released values
  differ in one element. Rounding a vector onto the grid can move each element
  that differs by up to one more grid unit, so neighbours differing in c
  elements get at most (D + c) / t (Laplace; for the Gaussian, D + sqrt(c) in
  place of D): add c * 2^-f to ``sensitivity`` where that matters. On an MPC
  device the sensitivity is that of the fixed-point value computed.
"""
import math

import jax.numpy as jnp


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"mixc.dp: {name} must be a positive number, got {value!r}")
    return float(value)


def laplace(x, sensitivity, epsilon):
    """x + Laplace(sensitivity / epsilon) noise: epsilon-DP for L1 sensitivity ``sensitivity``."""
    sensitivity, epsilon = _positive("sensitivity", sensitivity), _positive("epsilon", epsilon)
    return _noisy(x, "laplace", sensitivity / epsilon, sensitivity, epsilon, 0.0)


def gaussian(x, sensitivity, epsilon, delta):
    """x + N(0, sigma^2) noise: (epsilon, delta)-DP for L2 sensitivity ``sensitivity``."""
    sensitivity, epsilon = _positive("sensitivity", sensitivity), _positive("epsilon", epsilon)
    delta = _positive("delta", delta)
    if epsilon >= 1 or delta >= 1:
        raise ValueError("mixc.dp.gaussian: the classical calibration needs epsilon < 1 and "
                         f"delta < 1 (got epsilon={epsilon}, delta={delta})")
    sigma = sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    return _noisy(x, "gaussian", sigma, sensitivity, epsilon, delta)


def _noisy(x, mechanism, scale, sensitivity, epsilon, delta):
    from .frontend import noise_device_kind, noise_for
    spec = {"mechanism": mechanism, "scale": scale, "sensitivity": sensitivity,
            "epsilon": epsilon, "delta": delta}
    if noise_device_kind() in ("PYU", "TEE"):
        # x's bits below the noise grid would show through the sum: round x onto it first
        # (an MPC device's values already live on its fixed-point grid)
        from .runtime.dp_noise import grid_bits
        x = onto_grid(x, grid_bits(spec))
    return x + noise_for(x, spec)


def onto_grid(x, f):
    """x rounded to the nearest multiple of 2^-f, ties up: floor(v + 1/2) keeps two inputs at
    distance <= s at most ceil(s 2^f) grid points apart (half-to-even can reach s 2^f + 1).
    Floats at least 2^(mantissa bits - f) in magnitude are on the grid already."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    v = x * 2.0 ** f                                     # exact: a power-of-two scaling
    r = jnp.floor(v)
    rounded = (r + (v - r >= 0.5).astype(x.dtype)) * 2.0 ** -f
    return jnp.where(jnp.abs(x) < 2.0 ** (jnp.finfo(x.dtype).nmant - f), rounded, x)
