"""The exact discrete Laplace / discrete Gaussian samplers (runtime/dp_noise.py, CKS20):
empirical distributions against the exact pmfs (chi-square, fixed seeds), the
Bernoulli(exp(-gamma)) building block, the ChaCha20 words used, and the privacy
the audit states, computed exactly for the discrete mechanisms."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from mixc.runtime import dp_noise
from mixc.runtime.kernels import Prg

N = 200_000


def prg(tag):
    return Prg(tag.encode()[:32].ljust(32, b"."))


def laplace_pmf(t, ks):
    q = math.exp(-1 / t)
    return (1 - q) / (1 + q) * q ** np.abs(ks)


def gaussian_pmf(s2, ks):
    r = int(40 * math.sqrt(s2)) + 10
    z = np.exp(-np.arange(-r, r + 1, dtype=np.float64) ** 2 / (2 * s2)).sum()
    return np.exp(-np.asarray(ks, dtype=np.float64) ** 2 / (2 * s2)) / z


def chi2_pvalue(samples, pmf, lo, hi):
    """Chi-square of the counts in bins lo..hi plus the two tails against the pmf."""
    ks = np.arange(lo, hi + 1)
    counts = np.array([(samples < lo).sum()] + [(samples == k).sum() for k in ks]
                      + [(samples > hi).sum()])
    p_in = pmf(ks)
    p_lo = pmf(np.arange(lo - 2000, lo)).sum()
    p = np.concatenate([[p_lo], p_in, [max(0.0, 1 - p_lo - p_in.sum())]])
    expected = p * samples.size
    keep = expected > 5
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    return stats.chi2.sf(stat, keep.sum() - 1)


@pytest.mark.parametrize("t", [1, 3, 10])
def test_discrete_laplace_pmf(t):
    x = dp_noise.discrete_laplace(prg(f"lap{t}"), t, N)
    assert x.dtype == np.int64
    assert chi2_pvalue(x, lambda k: laplace_pmf(t, k), -6 * t, 6 * t) > 1e-4
    # the same test tells a 10% wider scale apart: it can fail
    assert chi2_pvalue(x, lambda k: laplace_pmf(1.1 * t, k), -6 * t, 6 * t) < 1e-6
    q = math.exp(-1 / t)
    assert abs(x.var() / (2 * q / (1 - q) ** 2) - 1) < 0.03
    assert abs(x.mean()) < 5 * math.sqrt(2 * q / (1 - q) ** 2 / N)


@pytest.mark.parametrize("s2", [1, 7, 50])
def test_discrete_gaussian_pmf(s2):
    x = dp_noise.discrete_gaussian(prg(f"gau{s2}"), s2, N)
    r = int(5 * math.sqrt(s2)) + 1
    assert chi2_pvalue(x, lambda k: gaussian_pmf(s2, k), -r, r) > 1e-4
    assert chi2_pvalue(x, lambda k: gaussian_pmf(1.1 * s2, k), -r, r) < 1e-6
    # Laplace of the same variance is told apart too
    t = 1 / math.log(1 + 1 / s2 + math.sqrt(1 / s2 ** 2 + 2 / s2))
    assert chi2_pvalue(x, lambda k: laplace_pmf(t, k), -r, r) < 1e-6
    ks = np.arange(-40 * r, 40 * r + 1)
    var = (ks ** 2 * gaussian_pmf(s2, ks)).sum()
    assert abs(x.var() / var - 1) < 0.03


def test_large_scales_have_the_right_moments():
    t, s2 = 2 ** 19, 2 ** 40
    lap = dp_noise.discrete_laplace(prg("big lap"), t, N).astype(np.float64)
    gau = dp_noise.discrete_gaussian(prg("big gau"), s2, N).astype(np.float64)
    assert abs(lap.var() / (2 * t * t) - 1) < 0.03
    assert abs(np.mean(np.abs(lap) > t * math.log(20)) - 0.05) < 0.003
    assert abs(gau.var() / s2 - 1) < 0.03
    assert abs(np.mean(np.abs(gau) < math.sqrt(s2)) - 0.6827) < 0.006


@pytest.mark.parametrize("a, b", [(0, 1), (1, 3), (2, 3), (1, 1), (999_999, 1_000_000)])
def test_bernoulli_exp_neg_unit(a, b):
    n = N
    hits = dp_noise.bernoulli_exp_neg_unit(prg(f"bern{a}/{b}"), np.full(n, a, np.uint64),
                                           np.full(n, b, np.uint64))
    p = math.exp(-a / b)
    assert abs(hits.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


@pytest.mark.parametrize("num, den", [(0, 7), (5, 7), (7, 7), (13, 7), (3 * 2 ** 80 + 1, 2 ** 81),
                                      (10 ** 30, 4 * 10 ** 29)])
def test_bernoulli_exp_neg_big(num, den):
    hits = dp_noise.bernoulli_exp_neg_big(prg(f"big{num % 10**9}/{den % 10**9}"), [num] * N, den)
    p = math.exp(-num / den)
    assert abs(hits.mean() - p) <= 5 * math.sqrt(p * (1 - p) / N) + 1e-12


class ScriptedPrg:
    """Hands out the given words in order (to reach the w == c branch, probability 2^-64)."""

    def __init__(self, words):
        self.words = list(words)

    def random_u64(self, n):
        out, self.words = self.words[:n], self.words[n:]
        return np.array(out, dtype=np.uint64)


def test_bernoulli_ratio_ties_read_further_digits():
    den, r = 3, 1                                   # r/den = 0.010101... in binary
    c, rem = divmod(r << 64, den)                   # c = 0x5555...5, rem = 1
    d2 = (rem << 64) // den
    for second, expect in [(d2 - 1, True), (d2 + 1, False)]:
        out = dp_noise._bernoulli_ratio_big(ScriptedPrg([c, second]), np.array([c], np.uint64),
                                            [rem], den)
        assert out.tolist() == [expect]
    # equal twice, then decided by the third digit
    out = dp_noise._bernoulli_ratio_big(ScriptedPrg([c, d2, 0]), np.array([c], np.uint64),
                                        [rem], den)
    assert out.tolist() == [True]


def test_uniform_below_rejects_the_biased_range():
    m = np.array([2 ** 63 + 1, 3, 1], dtype=np.uint64)   # 2^64 mod m = 2^63 - 1 for the first
    floor = 2 ** 63 - 1
    words = [5, 7, 9, floor, 0, 0]                       # 5 < floor: redrawn, floor is kept
    out = dp_noise.uniform_below(ScriptedPrg(words), m)
    assert out.tolist() == [floor % (2 ** 63 + 1), 7 % 3, 0]
    x = dp_noise.uniform_below(prg("u3"), np.full(N, 3, np.uint64))
    assert stats.chisquare(np.bincount(x.astype(np.int64), minlength=3)).pvalue > 1e-4


def test_chacha_words_per_sample():
    """Expected cost, as documented in runtime/dp_noise.py."""
    p = prg("words")
    dp_noise.discrete_laplace(p, 2 ** 19, N)
    lap = p.position / N
    p.position = 0
    dp_noise.discrete_gaussian(p, 2 ** 40, N)
    gau = p.position / N
    assert 8 < lap < 11 and 13 < gau < 18, (lap, gau)


# ------------------------------------------------------------------ privacy accounting

def test_laplace_privacy_is_at_most_epsilon():
    for sens, eps, f in [(1.0, 0.5, 0), (1.0, 0.5, 11), (0.1, 0.3, 18), (0.37, 1.7, 5)]:
        d = dp_noise.grid_sensitivity(sens, f)
        t = dp_noise.laplace_t(sens, eps, f)
        assert Fraction(d) / t <= Fraction(eps)             # exact: (D/t)-DP
        assert d >= Fraction(sens) * 2 ** f                  # covers the grid rounding
        # the discrete Laplace's log-ratio at distance D is D/t everywhere
        ks = np.arange(-20 * t, 20 * t)
        lr = np.log(laplace_pmf(t, ks)) - np.log(laplace_pmf(t, ks - d))
        assert lr.max() <= d / t + 1e-9


def gaussian_delta(s2, d, eps):
    """Exact hockey-stick divergence of N_Z(0, s2) from N_Z(d, s2) at eps."""
    r = int(40 * math.sqrt(s2)) + 10 + d
    ks = np.arange(-r, r + 1)
    return np.maximum(0.0, gaussian_pmf(s2, ks) - math.exp(eps) * gaussian_pmf(s2, ks - d)).sum()


@pytest.mark.parametrize("sens, f", [(1.0, 0), (1.0, 3), (0.1, 6), (0.3, 5)])
def test_gaussian_privacy_meets_the_stated_pair(sens, f):
    for eps in (0.1, 0.5, 0.99):
        for delta in (1e-5, 1e-3, 0.1):
            s2 = dp_noise.gaussian_sigma2(sens, eps, delta, f)
            d = dp_noise.grid_sensitivity(sens, f)
            assert gaussian_delta(s2, d, eps) <= delta
    # not vacuous: a tenth of the variance breaks the pair
    s2 = dp_noise.gaussian_sigma2(sens, 0.5, 1e-5, f)
    assert gaussian_delta(s2 // 10, dp_noise.grid_sensitivity(sens, f), 0.5) > 1e-5


def test_pyu_grid_and_errors():
    attrs = {"mechanism": "laplace", "scale": 2.0, "sensitivity": 1.0, "epsilon": 0.5,
             "delta": 0.0, "shape": (3,)}
    assert dp_noise.grid_bits(attrs) == 11                  # 2 * 2^11 = 2^12 grid units
    assert dp_noise.grid_bits(dict(attrs, scale=1e-9)) == 18
    assert dp_noise.grid_bits(dict(attrs, frac_bits=20)) == 20
    k, f = dp_noise.grid_noise(prg("op"), dict(attrs, shape=(2, 3)))
    assert k.shape == (2, 3) and k.dtype == np.int64 and f == 11
    with pytest.raises(Exception, match="more than the sampler"):
        dp_noise.laplace_t(1.0, 1e-9, 30)
    with pytest.raises(NotImplementedError, match="exponential"):
        dp_noise.grid_noise(prg("op"), dict(attrs, mechanism="exponential"))
