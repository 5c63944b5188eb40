"""Differential privacy: calibrated noise inside any device function.

    def release(x):
        return mixc.dp.laplace(jnp.sum(x), sensitivity=1.0, epsilon=0.5)

Each call becomes a ``dp_noise`` op in the IR (mechanism, scale, epsilon,
delta), so the audit can add up the program's budget. The noise is drawn at
run time from ChaCha20 keyed by ``os.urandom`` (never from numpy's RNG):
Laplace by the inverse CDF, Gaussian by Box-Muller, from 53-bit uniforms.

- Laplace: scale b = sensitivity / epsilon; pure epsilon-DP.
- Gaussian: sigma = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon, the
  classical calibration (Dwork & Roth, Thm. A.1), (epsilon, delta)-DP for
  epsilon < 1 (larger epsilon is refused).
- Accounting is basic sequential composition: the audit reports the sums of
  epsilon and delta over every mechanism in the program.
- On an MPC device each party adds its own noise of the full scale into its
  share, so neither party alone knows (or can remove) the noise; the
  revealed value carries the sum of the two (twice the variance).
"""
import math


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
    from .frontend import noise_for
    return x + noise_for(x, {"mechanism": mechanism, "scale": scale, "sensitivity": sensitivity,
                             "epsilon": epsilon, "delta": delta})
