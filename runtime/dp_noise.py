"""Exact discrete Laplace and discrete Gaussian noise on a fixed-point grid.

Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy"
(NeurIPS 2020; CKS20), Algorithms 1-3, vectorized: every step runs on a whole
batch with numpy integer arithmetic, and a rejection loop goes on over the
elements still rejected. Every sampling decision is an integer comparison of
uniform 64-bit words from the ChaCha20 stream (:class:`~mixc.runtime.kernels.Prg`):
no floating point, so the output has exactly the stated distribution (unlike
float inverse-CDF sampling, whose gaps and rounding Mironov's attack reads).

Grid: the noise is k * 2^-f for an integer k, f the grid's fraction bits (an MPC
device's ``fraction_bits``; on a PYU the largest f <= 18 with the scale at most
2^12 grid units, so k fits a float32 exactly). The sensitivity in grid units is
D = ceil(sensitivity * 2^f) (two inputs at distance <= sensitivity round, ties
up, to grid points at most D apart: mixc.dp.onto_grid).

- Laplace: k ~ Lap_Z(t), P(k) proportional to exp(-|k| / t), t = ceil(D / epsilon) an
  integer: (D / t)-DP <= epsilon-DP for integer sensitivity D (CKS20 / Ghosh et al.).
- Gaussian: k ~ N_Z(0, s2), P(k) proportional to exp(-k^2 / (2 s2)), s2 = the integer
  ceil(D^2 * 2 ln(1.25 / delta) / epsilon^2) (the classical calibration in grid
  units, rounded up): rho-zCDP with rho = D^2 / (2 s2) (CKS20 Thm. 4), and
  (epsilon, delta)-DP (``tests/test_dp_sampling.py`` checks the exact privacy curve of
  CKS20 Thm. 7 against the stated pair).

Cost in ChaCha20 words (64-bit), measured (``tests/test_dp_sampling.py``): ~9.6 per
Laplace sample (a Lap_Z round accepts its uniform u w.p. ~0.63, and every
Bernoulli(exp(-1)) takes ~e words), ~16 per Gaussian sample; 40,000 Gaussian
samples take ~60 ms.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..errors import MixcError

_U64 = np.uint64
PYU_GRID_BITS = 18             # mixc.config.DEFAULT_FRACTION_BITS
_PYU_MAX_SCALE = 1 << 12       # scale in grid units on a PYU (|k| < 2^24 but w.p. e^-4096)
_MAX_SCALE = 1 << 52           # t, sqrt(s2) and t * K stay far below 2^63
_MAX_K = 1 << 10               # Algorithm 1's K: P(K > 2^10) = 1 / 1023! (never)


# ---------------------------------------------------------------- calibration

def grid_bits(attrs) -> int:
    """The fraction bits f of the grid of a dp_noise op's noise."""
    if "frac_bits" in attrs:
        return int(attrs["frac_bits"])
    f = PYU_GRID_BITS
    while Fraction(attrs["scale"]) * Fraction(2) ** f > _PYU_MAX_SCALE:
        f -= 1
    return f


def grid_sensitivity(sensitivity, f) -> int:
    """D = ceil(sensitivity * 2^f), at least 1."""
    return max(1, math.ceil(Fraction(sensitivity) * Fraction(2) ** f))


def laplace_t(sensitivity, epsilon, f) -> int:
    """The integer scale t (grid units) of the discrete Laplace: t >= D / epsilon."""
    return _checked(math.ceil(grid_sensitivity(sensitivity, f) / Fraction(epsilon)), "laplace")


def gaussian_sigma2(sensitivity, epsilon, delta, f) -> int:
    """The integer variance parameter s2 (grid units^2) of the discrete Gaussian: at least
    the classical calibration D^2 2 ln(1.25/delta) / epsilon^2 (a float bound, rounded up
    with a relative margin of 2^-40 over its rounding error)."""
    d = grid_sensitivity(sensitivity, f)
    s2 = d * d * 2.0 * math.log(1.25 / delta) / (epsilon * epsilon)
    s2 = max(1, math.ceil(s2 * (1 + 2.0 ** -40)))
    _checked(math.isqrt(s2) + 1, "gaussian")
    return s2


def _checked(scale, mechanism):
    if scale >= _MAX_SCALE:
        raise MixcError(f"mixc.dp.{mechanism}: the noise scale is 2^{math.log2(scale):.0f} grid "
                        "units, more than the sampler's 2^52; use fewer fraction bits")
    return scale


# ---------------------------------------------------------------- the samplers

def uniform_below(prg, m) -> np.ndarray:
    """Uniform integers in [0, m_i) for a uint64 array m >= 1: a word x is kept when
    x >= 2^64 mod m_i (then x mod m_i is exact), redrawn otherwise (probability < m/2^64)."""
    m = np.ascontiguousarray(m, dtype=_U64)
    out = np.empty(m.shape, dtype=_U64)
    floor = (_U64(0) - m) % m                                   # 2^64 mod m
    pending = np.arange(m.size)
    while pending.size:
        x = prg.random_u64(pending.size)
        ok = x >= floor[pending]
        out[pending[ok]] = x[ok] % m[pending[ok]]
        pending = pending[~ok]
    return out


def bernoulli_exp_neg_unit(prg, a, b) -> np.ndarray:
    """CKS20 Algorithm 1 for gamma = a / b in [0, 1] (uint64 arrays, 1 <= b < 2^52):
    Bernoulli(exp(-gamma)). K counts up while Bernoulli(gamma / K) succeeds; the
    result is K odd. All elements still looping share K."""
    a = np.ascontiguousarray(a, dtype=_U64)
    b = np.ascontiguousarray(b, dtype=_U64)
    result = np.empty(a.shape, dtype=bool)
    alive = np.arange(a.size)
    k = 1
    while alive.size:
        if k > _MAX_K:
            raise MixcError("dp noise: Bernoulli(exp(-gamma)) ran past K = 2^10")
        go_on = uniform_below(prg, b[alive] * _U64(k)) < a[alive]
        result[alive[~go_on]] = bool(k % 2)
        alive = alive[go_on]
        k += 1
    return result


def _bernoulli_exp_neg1(prg, n) -> np.ndarray:
    ones = np.ones(n, dtype=_U64)
    return bernoulli_exp_neg_unit(prg, ones, ones)


def _geometric_exp_neg1(prg, n) -> np.ndarray:
    """The number of Bernoulli(exp(-1)) successes before the first failure."""
    v = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    while alive.size:
        more = _bernoulli_exp_neg1(prg, alive.size)
        alive = alive[more]
        v[alive] += 1
    return v


def discrete_laplace(prg, t: int, n: int) -> np.ndarray:
    """n samples of Lap_Z(t) (int64), t an integer scale: CKS20 Algorithm 2 with s = 1."""
    if not 1 <= t < _MAX_SCALE:
        raise ValueError(f"discrete_laplace: t must be an integer in [1, 2^52), got {t}")
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        tt = np.full(pending.size, t, dtype=_U64)
        u = uniform_below(prg, tt)
        keep = bernoulli_exp_neg_unit(prg, u, tt)           # accept u w.p. exp(-u / t)
        idx, u = pending[keep], u[keep].astype(np.int64)
        x = u + t * _geometric_exp_neg1(prg, idx.size)
        negative = (prg.random_u64(idx.size) & _U64(1)).astype(bool)
        ok = ~(negative & (x == 0))                         # -0 would count 0 twice
        out[idx[ok]] = np.where(negative, -x, x)[ok]
        pending = np.concatenate([pending[~keep], idx[~ok]])
    return out


def _bernoulli_ratio_big(prg, c, rem, den) -> np.ndarray:
    """Bernoulli(r / den) where c = floor(r 2^64 / den) (uint64) and rem = r 2^64 mod den
    (Python ints): a uniform word w decides unless w == c (probability 2^-64), which
    goes on with the next 64 bits of r / den, exactly."""
    w = prg.random_u64(c.size)
    out = w < c
    for i in np.flatnonzero(w == c):
        r = int(rem[i])
        while True:
            digit, r = divmod(r << 64, den)
            x = int(prg.random_u64(1)[0])
            if x != digit:
                out[i] = x < digit
                break
    return out


def bernoulli_exp_neg_big(prg, num, den: int) -> np.ndarray:
    """Bernoulli(exp(-num_i / den)) for Python-int numerators (object array) and one
    Python-int denominator: CKS20 Algorithm 1, floor(gamma) rounds of Bernoulli(exp(-1))
    then the fraction, whose Bernoulli(frac / K) = Bernoulli(1/K) and Bernoulli(frac)."""
    g = np.array([int(x) // den for x in num], dtype=np.int64)
    frac = [int(x) % den for x in num]
    alive = np.ones(len(frac), dtype=bool)
    j = 0
    while True:
        idx = np.flatnonzero(alive & (g > j))
        if not idx.size:
            break
        alive[idx] = _bernoulli_exp_neg1(prg, idx.size)
        j += 1
    idx = np.flatnonzero(alive)
    c = np.array([(frac[i] << 64) // den for i in idx], dtype=_U64)
    rem = [(frac[i] << 64) % den for i in idx]
    result = np.zeros(len(frac), dtype=bool)
    live = np.arange(idx.size)
    k = 1
    while live.size:
        if k > _MAX_K:
            raise MixcError("dp noise: Bernoulli(exp(-gamma)) ran past K = 2^10")
        one_in_k = uniform_below(prg, np.full(live.size, k, dtype=_U64)) == 0
        go_on = one_in_k & _bernoulli_ratio_big(prg, c[live], [rem[i] for i in live], den)
        result[idx[live[~go_on]]] = bool(k % 2)
        live = live[go_on]
        k += 1
    return result


def discrete_gaussian(prg, sigma2: int, n: int) -> np.ndarray:
    """n samples of N_Z(0, sigma2) (int64), sigma2 a positive integer: CKS20 Algorithm 3,
    t = floor(sigma) + 1, Y ~ Lap_Z(t) kept w.p. exp(-(|Y| - sigma2/t)^2 / (2 sigma2))."""
    if sigma2 < 1:
        raise ValueError(f"discrete_gaussian: sigma2 must be a positive integer, got {sigma2}")
    t = math.isqrt(sigma2) + 1
    den = 2 * sigma2 * t * t
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        y = discrete_laplace(prg, t, pending.size)
        num = [(abs(int(v)) * t - sigma2) ** 2 for v in y.tolist()]
        keep = bernoulli_exp_neg_big(prg, num, den)
        out[pending[keep]] = y[keep]
        pending = pending[~keep]
    return out


# ---------------------------------------------------------------- the op

def grid_noise(prg, attrs) -> tuple[np.ndarray, int]:
    """A dp_noise op's noise as grid integers k (int64, the op's shape) and the grid's f."""
    shape = tuple(attrs["shape"])
    n = math.prod(shape)
    f = grid_bits(attrs)
    if attrs["mechanism"] == "laplace":
        k = discrete_laplace(prg, laplace_t(attrs["sensitivity"], attrs["epsilon"], f), n)
    elif attrs["mechanism"] == "gaussian":
        s2 = gaussian_sigma2(attrs["sensitivity"], attrs["epsilon"], attrs["delta"], f)
        k = discrete_gaussian(prg, s2, n)
    else:
        raise NotImplementedError(f"dp_noise mechanism {attrs['mechanism']!r}")
    return k.reshape(shape), f
