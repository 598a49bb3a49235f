"""Tail-index estimators (rvsp_jax.analysis.tails) and gradient noise scale (rvsp_jax.analysis.noise_scale).

Tolerances were measured with the seeds used here (see each test) and set a few standard errors wide.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import levy_stable

from rvsp_jax.analysis.noise_scale import gradient_noise_scale, pooled_noise_scale, two_batch_noise_scale
from rvsp_jax.analysis.tails import default_hill_k, hill, simsekli_alpha

# ---------------------------------------------------------------------------------------------------
# Reference implementations written from the papers' formulas, float64 numpy, one series at a time.


def hill_reference(x, k):
    """Hill (1975): 1/alpha = mean(log X_(1..k)) - log X_(k+1) for |x| sorted decreasing."""
    a = np.sort(np.abs(np.asarray(x, dtype=np.float64)))[::-1]
    return 1.0 / (np.mean(np.log(a[:k])) - np.log(a[k]))


def simsekli_reference(x, k1):
    """Mohammadi et al. (2015) as coded by Simsekli et al. (2019) (github.com/umutsimsekli/sgd_tail_index,
    ``alpha_estimator``) for scalar samples, without their eps."""
    x = np.asarray(x, dtype=np.float64)
    k2 = len(x) // k1
    x = x[: k1 * k2]
    y = x.reshape(k2, k1).sum(axis=1)
    return 1.0 / ((np.mean(np.log(np.abs(y))) - np.mean(np.log(np.abs(x)))) / math.log(k1))


# ---------------------------------------------------------------------------------------------------
# hill


@pytest.mark.parametrize("k", [1, 7, None, 250])
def test_hill_matches_reference_per_series(k):
    x = np.random.default_rng(0).standard_t(df=3, size=(3, 4, 500)).astype(np.float32)
    got = np.asarray(hill(x, k))
    kk = default_hill_k(500) if k is None else k
    want = np.array([[hill_reference(s, kk) for s in row] for row in x])
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_default_hill_k():
    assert [default_hill_k(n) for n in (2, 3, 100, 101, 10_000)] == [1, 1, 10, 10, 100]


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("k", [None, 1000])
def test_hill_recovers_pareto_index(alpha, k):
    # Classical Pareto(x_m=1): P(X > u) = u^-alpha exactly. By Renyi's representation 1/alpha_hat is
    # then the mean of k i.i.d. Exponential(mean 1/alpha) variables: unbiased with standard error
    # (1/alpha)/sqrt(k), and alpha_hat has standard error ~ alpha/sqrt(k). Measured with these seeds
    # (32 series of 10k): worst series 3.4 SE off, mean of 1/alpha_hat within 2.4 SE of 1/alpha.
    s, n = 32, 10_000
    x = np.random.default_rng(int(alpha * 10)).pareto(alpha, size=(s, n)) + 1.0
    kk = default_hill_k(n) if k is None else k
    est = np.asarray(hill(x, k), dtype=np.float64)
    assert np.all(np.abs(est - alpha) < 4.5 * alpha / math.sqrt(kk))
    assert abs(np.mean(1.0 / est) - 1.0 / alpha) < 3.5 / alpha / math.sqrt(kk * s)


def test_hill_distinguishes_tails():
    rng = np.random.default_rng(3)
    heavy = rng.pareto(1.5, size=20_000) + 1.0
    light = rng.pareto(4.0, size=20_000) + 1.0
    assert float(hill(heavy)) < 2.0 < 3.0 < float(hill(light))


def test_hill_scale_invariant_and_nan_handling():
    x = np.random.default_rng(4).standard_cauchy((2, 1000)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(hill(37.0 * x)), np.asarray(hill(x)), rtol=1e-4)
    x[1, 5] = np.nan
    out = np.asarray(hill(x))
    assert np.isfinite(out[0]) and np.isnan(out[1])
    # all-zero tail below the top value: X_(k+1) == 0 -> NaN, not 0 or inf
    z = np.zeros(100, np.float32)
    z[0] = 1.0
    assert np.isnan(float(hill(z, k=5)))


def test_hill_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        hill(np.ones(10), k=10)
    with pytest.raises(ValueError, match="at least 2"):
        hill(np.ones(1))
    with pytest.raises(ValueError, match="sample axis"):
        hill(1.0)


# ---------------------------------------------------------------------------------------------------
# simsekli_alpha


@pytest.mark.parametrize("block_size", [None, 2, 30])
def test_simsekli_matches_reference_per_series(block_size):
    x = levy_stable.rvs(1.5, 0.0, size=(5, 1000), random_state=11).astype(np.float32)
    got = np.asarray(simsekli_alpha(x, block_size))
    k1 = math.isqrt(1000) if block_size is None else block_size
    want = np.array([simsekli_reference(s, k1) for s in x])
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_simsekli_recovers_symmetric_stable_index(alpha):
    # 32 series of n = 2^14 SaS samples (block 128). Measured: |mean error| <= 0.008, per-series
    # standard deviation 0.04 (alpha 1.2) to 0.09 (alpha 1.8), worst single series 0.28 (alpha 1.8).
    x = levy_stable.rvs(alpha, 0.0, size=(32, 2**14), random_state=int(alpha * 10))
    est = np.asarray(simsekli_alpha(x))
    assert abs(est.mean() - alpha) < 0.05
    assert np.all(np.abs(est - alpha) < 0.4)


def test_simsekli_gaussian_gives_two_and_separates_from_heavy_tails():
    # Gaussian = stable with alpha 2. Measured mean 1.987 over 32 series of 2^14.
    g = np.random.default_rng(0).standard_normal((32, 2**14))
    est = np.asarray(simsekli_alpha(g))
    assert abs(est.mean() - 2.0) < 0.05
    heavy = np.asarray(simsekli_alpha(levy_stable.rvs(1.5, 0.0, size=(32, 2**14), random_state=5)))
    assert heavy.max() < est.min()


def test_simsekli_scale_invariant_and_degenerate_inputs():
    x = levy_stable.rvs(1.5, 0.0, size=(3, 900), random_state=2)
    np.testing.assert_allclose(np.asarray(simsekli_alpha(1e3 * x)), np.asarray(simsekli_alpha(x)), rtol=1e-4)
    x[0, 10] = 0.0  # dead unit: log 0 undefined
    x[1, 3] = np.inf  # diverged member
    out = np.asarray(simsekli_alpha(x))
    assert np.isnan(out[0]) and np.isnan(out[1]) and np.isfinite(out[2])


def test_simsekli_rejects_bad_blocks():
    with pytest.raises(ValueError, match="block_size"):
        simsekli_alpha(np.ones(100), block_size=1)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        simsekli_alpha(np.ones(100), block_size=60)


# ---------------------------------------------------------------------------------------------------
# gradient noise scale (McCandlish et al. 2018)


def _synthetic_gradients(rng, shape, p=8):
    """Per-example gradients G + L z with known G and Sigma = L L^T; returns (g, |G|^2, tr Sigma)."""
    grad = rng.normal(size=p)
    chol = rng.normal(size=(p, p)) / math.sqrt(p)
    g = grad + rng.standard_normal((*shape, p)) @ chol.T
    return g, float(grad @ grad), float(np.sum(chol**2))


def test_per_example_estimates_are_unbiased():
    rng = np.random.default_rng(0)
    reps, n = 4000, 16
    g, grad_sq, trace = _synthetic_gradients(rng, (reps, n))
    # Measured: trace 1.6 SE and |G|^2 0.1 SE from truth, pooled ratio 0.5% off (B_simple = 2.17);
    # the uncorrected |mean g|^2 sits 32 SE above |G|^2.
    est = gradient_noise_scale(g)
    assert est.b_simple.shape == (reps,)
    t, gs = np.asarray(est.trace_sigma, np.float64), np.asarray(est.grad_sq, np.float64)
    se_t, se_g = t.std() / math.sqrt(reps), gs.std() / math.sqrt(reps)
    assert abs(t.mean() - trace) < 4 * se_t
    assert abs(gs.mean() - grad_sq) < 4 * se_g
    # the uncorrected |mean g|^2 is biased by tr(Sigma)/n, far beyond the tolerance above
    naive = np.sum(g.mean(axis=-2) ** 2, axis=-1)
    assert naive.mean() - grad_sq > 10 * se_g
    # pooled ratio (averaging numerator and denominator first, as McCandlish et al. advise)
    assert abs(t.mean() / gs.mean() - trace / grad_sq) < 0.05 * trace / grad_sq


def test_per_example_equals_two_batch_with_sizes_one_and_n():
    # Algebraic identity: b_small=1 uses each |g_i|^2, b_big=n uses |mean g|^2.
    rng = np.random.default_rng(1)
    g, _, _ = _synthetic_gradients(rng, (3, 2, 10), p=5)
    per = gradient_noise_scale(g)
    small = np.sum(g**2, axis=-1)  # [3, 2, 10]
    big = np.sum(g.mean(axis=-2) ** 2, axis=-1)[..., None]  # [3, 2, 1]
    two = two_batch_noise_scale(small, big, 1, 10)
    for a, b in zip(per, two):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4)


def test_two_batch_estimator_on_known_noise():
    rng = np.random.default_rng(2)
    p, m, b_small, b_big = 8, 20_000, 4, 64
    grad = rng.normal(size=p)
    chol = rng.normal(size=(p, p)) / math.sqrt(p)
    trace, grad_sq = float(np.sum(chol**2)), float(grad @ grad)
    g_small = grad + rng.standard_normal((m, p)) @ chol.T / math.sqrt(b_small)
    g_big = grad + rng.standard_normal((m, p)) @ chol.T / math.sqrt(b_big)
    sq_s, sq_b = np.sum(g_small**2, -1), np.sum(g_big**2, -1)
    # Measured: trace 0.6 SE and |G|^2 0.3 SE from truth, pooled B_simple 0.8% off (true 0.667).
    each = two_batch_noise_scale(sq_s, sq_b, b_small, b_big, axis=None)
    pooled = two_batch_noise_scale(sq_s, sq_b, b_small, b_big)
    t, gs = np.asarray(each.trace_sigma, np.float64), np.asarray(each.grad_sq, np.float64)
    assert each.trace_sigma.shape == (m,) and pooled.b_simple.shape == ()
    np.testing.assert_allclose(float(pooled.trace_sigma), t.mean(), rtol=1e-4)
    assert abs(t.mean() - trace) < 4 * t.std() / math.sqrt(m)
    assert abs(gs.mean() - grad_sq) < 4 * gs.std() / math.sqrt(m)
    assert abs(float(pooled.b_simple) - trace / grad_sq) < 0.05 * trace / grad_sq


def test_pooled_noise_scale_is_a_ratio_of_means_with_flags():
    trace = np.array([[4.0, 4.0], [6.0, 4.0], [np.nan, 4.0]])
    grad_sq = np.array([[1.0, 0.5], [1.0, -0.5], [5.0, 0.1]])
    out = pooled_noise_scale(trace, grad_sq, 60)
    np.testing.assert_allclose(out.b_simple, [5.0, 12.0 / 0.1])  # repeat 2 is NaN at step 0: left out
    assert out.flagged.tolist() == [False, True]  # 60 >= 10 x 5, but 60 < 10 x 120
    assert out.lo[0] <= 5.0 <= out.hi[0] and out.n_examples == 60
    # |G|^2 <= 0 on average: no ratio, flagged
    neg = pooled_noise_scale(np.ones((3, 1)), -np.ones((3, 1)), 1000)
    assert np.isnan(neg.b_simple[0]) and neg.flagged[0]
    # the ratio of means is much less biased than the mean of ratios when |G|^2 is noisy
    rng = np.random.default_rng(0)
    t = 100 + rng.normal(0, 5, (64, 1))
    g = 1 + rng.normal(0, 0.4, (64, 1))  # true ratio 100
    assert abs(pooled_noise_scale(t, g, 10**4).b_simple[0] - 100) < 15
    with pytest.raises(ValueError, match=r"\[R, K\]"):
        pooled_noise_scale(np.ones(3), np.ones(3), 10)


def test_noise_scale_input_validation():
    with pytest.raises(ValueError, match="n >= 2"):
        gradient_noise_scale(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"\[\.\.\., n, P\]"):
        gradient_noise_scale(np.ones(3))
    with pytest.raises(ValueError, match="b_small < b_big"):
        two_batch_noise_scale(np.ones(3), np.ones(3), 8, 8)
    with pytest.raises(ValueError, match="axis=None"):
        two_batch_noise_scale(jnp.float32(1.0), jnp.float32(0.5), 1, 2)


# ---------------------------------------------------------------------------------------------------
# tail_verdict (known answers on fixed seeds; rates measured with these seeds, calibration with
# 1,000 series per case in docs/calibration.md, Tails, python -m benchmarks.tail_calibration)

from scipy import stats  # noqa: E402

from rvsp_jax.analysis import tail_verdict  # noqa: E402
from rvsp_jax.analysis.tails import TAIL_VERDICTS, TailVerdict  # noqa: E402


def _rates(x, **kwargs):
    return tail_verdict(x, **kwargs).fractions()


def test_tail_verdict_gaussian_is_gaussian_at_one_minus_alpha():
    x = np.random.default_rng(0).standard_normal((400, 512))
    r = _rates(x)
    # measured 0.938 (1 - alpha = 0.95); the rest split between heavy-tailed and inconclusive
    assert 0.92 <= r["gaussian"] <= 0.98 and r["infinite-variance"] == 0


@pytest.mark.parametrize("case", ["t3", "t4", "lnmix0.5", "lnmix1"])
def test_tail_verdict_never_calls_finite_variance_infinite(case):
    rng = np.random.default_rng(1)
    shape = (100, 4096)
    x = {
        "t3": lambda: rng.standard_t(3, shape),
        "t4": lambda: rng.standard_t(4, shape),
        "lnmix0.5": lambda: rng.standard_normal(shape) * np.exp(0.5 * rng.standard_normal(shape)),
        "lnmix1": lambda: rng.standard_normal(shape) * np.exp(rng.standard_normal(shape)),
    }[case]()
    r = _rates(x)
    # measured: infinite-variance 0 (t3, t4, lnmix0.5) and 0.02 (lnmix1); heavy-tailed 0.89 (t3),
    # 0.99 (t4), 1.0 (lnmix0.5), 0.01 (lnmix1, otherwise inconclusive: its Hill interval contains 2)
    assert r["infinite-variance"] <= 0.05 and r["gaussian"] == 0
    if case != "lnmix1":
        assert r["heavy-tailed"] >= 0.8


@pytest.mark.parametrize("a, floor", [(1.0, 0.98), (1.5, 0.85)])
def test_tail_verdict_calls_stable_infinite_variance(a, floor):
    x = levy_stable.rvs(a, 0.0, size=(100, 4096), random_state=7)
    r = _rates(x)
    # measured: 1.0 (alpha 1) and 0.90 (alpha 1.5); the rest inconclusive, never finite-variance
    assert r["infinite-variance"] >= floor and r["heavy-tailed"] == 0 and r["gaussian"] == 0


def test_tail_verdict_batched_axis_and_evidence_match_per_series():
    rng = np.random.default_rng(2)
    x = rng.standard_t(3, (300, 2, 3))  # samples on axis 0
    r = tail_verdict(x, axis=0)
    assert isinstance(r, TailVerdict) and r.verdict.shape == (2, 3) and r.hill.shape == (2, 3, 2)
    assert r.n == 300 and r.hill_k == (17, 15) and set(r.verdict.ravel()) <= set(TAIL_VERDICTS)
    for i in range(2):
        for j in range(3):
            one = tail_verdict(x[:, i, j])
            assert one.verdict.shape == () and one.verdict == r.verdict[i, j]
            np.testing.assert_allclose(one.hill, r.hill[i, j])
            ref = stats.normaltest(x[:, i, j])
            np.testing.assert_allclose(
                [r.normality_stat[i, j], r.normality_pvalue[i, j]], [ref.statistic, ref.pvalue], rtol=1e-10
            )
            np.testing.assert_allclose(r.excess_kurtosis[i, j], stats.kurtosis(x[:, i, j]), rtol=1e-10)
            np.testing.assert_allclose(
                r.block_sum_alpha[i, j], simsekli_reference(x[:, i, j] - np.median(x[:, i, j]), 17), rtol=1e-8
            )
    # the Hill estimates are those of the JAX estimator at the same k
    for c, k in enumerate(r.hill_k):
        np.testing.assert_allclose(r.hill[..., c], np.asarray(hill(np.moveaxis(x, 0, -1), k)), rtol=1e-5)
    np.testing.assert_array_equal(r.tail_index, r.hill[..., 0])  # k = 17 is the larger threshold


def test_tail_index_bounds_are_exact_for_pareto_tails():
    # Pareto(1.5): the one-sided 95% bounds each miss the true index 5% of the time (Renyi).
    x = np.random.default_rng(3).pareto(1.5, size=(4000, 400)) + 1.0
    r = tail_verdict(x)
    miss_hi = np.mean(r.hill_hi < 1.5, axis=0)
    miss_lo = np.mean(r.hill_lo > 1.5, axis=0)
    # measured: 0.049 and 0.056 (both thresholds are k = 20 at n = 400); binomial sd 0.0034
    assert np.all(np.abs(miss_hi - 0.05) < 0.015) and np.all(np.abs(miss_lo - 0.05) < 0.015)
    assert np.all(r.tail_index_lo <= r.tail_index) and np.all(r.tail_index <= r.tail_index_hi)


def test_tail_verdict_inconclusive_cases_carry_reasons():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 200))
    x[0, 3] = np.nan
    x[1] = 2.0
    x[2] = rng.uniform(-1, 1, 200)  # light tails: not Gaussian, not heavy
    x[3, :190] = 0.0  # zeros below the tail
    x[3, 190:] = rng.standard_cauchy(10)
    r = tail_verdict(x)
    assert list(r.verdict[:4]) == ["inconclusive"] * 4
    assert "non-finite" in r.reason[0] and "constant" in r.reason[1]
    assert "excess kurtosis <= 0" in r.reason[2] and "zeros" in r.reason[3]
    few = tail_verdict(rng.standard_normal((2, 12)))
    assert list(few.verdict) == ["inconclusive"] * 2 and "more samples" in few.reason[0]
    assert tail_verdict(x).summary().endswith("infinite-variance 0, inconclusive 4")
    with pytest.raises(ValueError, match="alpha"):
        tail_verdict(x, alpha=0.7)
    with pytest.raises(ValueError, match="sample axis"):
        tail_verdict(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        tail_verdict(np.ones((3, 1)))
