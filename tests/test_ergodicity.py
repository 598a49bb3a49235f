"""Tests for rvsp_jax.analysis.ergodicity and .lrv: numpy references, analytic answers, known cases,
calibration cells (size and power at S = 256 on fixed seeds, rates within binomial bounds; the full
tables are benchmarks/calibration.py's, in docs/calibration.md).

Processes with known answers: iid noise and stationary AR(1) (ergodic; tau_int = (1 + phi)/(1 - phi)),
random intercept x_s(t) = mu_s + noise (not ergodic: the time average of member s converges to mu_s),
random walk (not ergodic on any finite horizon), Brownian motion for the EB parameter (analytic
variance of the TAMSD of a Gaussian random walk; Metzler et al., PCCP 16, 24128 (2014):
EB ~ (4/3) lag / T).
"""

import numpy as np
import pytest
import scipy.signal
import scipy.stats

from rvsp_jax.analysis import ergodicity as erg
from rvsp_jax.analysis import lrv

S, T = 64, 2000


def ar1(rng, shape, phi):
    """Stationary AR(1) with unit innovations along the last axis (started from its stationary law)."""
    e = rng.standard_normal(shape)
    e[..., 0] /= np.sqrt(1.0 - phi**2)
    return scipy.signal.lfilter([1.0], [1.0, -phi], e, axis=-1)


def random_intercept(rng, shape, scale=1.0):
    return scale * rng.standard_normal(shape[:-1] + (1,)) + rng.standard_normal(shape)


def random_walk(rng, shape):
    return np.cumsum(rng.standard_normal(shape), axis=-1)


# ------------------------------------------------------------------------------------------------
# Cross-sections and time averages against numpy


def test_ensemble_moments_match_numpy_and_exclude_nonfinite_members():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 50))
    x[2, 1, 7] = np.nan
    x[5, 2, 0] = np.inf
    for p in range(3):
        keep = np.isfinite(x[:, p]).all(axis=-1)
        np.testing.assert_allclose(erg.ensemble_mean(x)[p], x[keep, p].mean(axis=0), rtol=1e-12)
        for ddof in (0, 1):
            np.testing.assert_allclose(
                erg.ensemble_variance(x, ddof=ddof)[p], x[keep, p].var(axis=0, ddof=ddof), rtol=1e-12
            )
    np.testing.assert_array_equal(erg.finite_members(x).sum(axis=0), [9, 8, 8])


def test_time_and_running_averages_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 103)).astype(np.float32)
    blocks = erg.time_averages(x, 10)
    ref = x[..., 3:].astype(np.float64).reshape(4, 2, 10, 10).mean(axis=-1)  # aligned to the end
    np.testing.assert_allclose(blocks, ref, rtol=1e-12)
    assert blocks.dtype == np.float64
    run = erg.running_average(x)
    np.testing.assert_allclose(run[..., 49], x[..., :50].astype(np.float64).mean(axis=-1), rtol=1e-12)
    x[1, 0, 5] = np.nan
    blocks = erg.time_averages(x, 10)
    assert np.isnan(blocks[1, 0]).all() and np.isfinite(blocks[0]).all()


def tau_reference(x, c=5.0):
    """Sokal-windowed tau_int of the member-pooled ACF by direct sums (emcee's rule on pooled acov)."""
    d = x - x.mean(axis=0)  # fluctuations about the ensemble-mean path
    d = d - d.mean(axis=-1, keepdims=True)  # each member about its own time mean
    n = d.shape[-1]
    acov = np.array([np.mean(np.sum(d[:, : n - k] * d[:, k:], axis=-1)) / n for k in range(n)])
    taus = 2 * np.cumsum(acov / acov[0]) - 1
    m = np.arange(n) < c * taus
    return taus[np.argmin(m)] if not m.all() else taus[-1]


def test_integrated_autocorr_time_matches_direct_sums():
    rng = np.random.default_rng(2)
    x = np.stack([ar1(rng, (8, 300), phi) for phi in (0.0, 0.6, 0.95)], axis=1)
    np.testing.assert_allclose(erg.integrated_autocorr_time(x), [tau_reference(x[:, p]) for p in range(3)], rtol=1e-9)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_integrated_autocorr_time_of_ar1(phi):
    # AR(1): tau_int = 1 + 2 sum_k phi^k = (1 + phi) / (1 - phi). Removing each member's time mean
    # biases the estimate low by about 2 * (5 tau) * tau / T (10% for phi = 0.9, T = 2000;
    # measured 16.8 for 19).
    x = ar1(np.random.default_rng(2), (S, T), phi)
    tau = erg.integrated_autocorr_time(x)
    true = (1 + phi) / (1 - phi)
    assert tau.shape == ()
    assert true * (1 - 10 * true / T - 0.05) <= tau <= true * 1.05


# ------------------------------------------------------------------------------------------------
# Variance scaling


def test_variance_scaling_values_match_direct_computation():
    rng = np.random.default_rng(3)
    x = random_intercept(rng, (12, 2, 300), 0.5)
    res = erg.variance_scaling(x, n_boot=50)
    for k, w in enumerate(res.windows):
        nb = 300 // w
        means = x[..., 300 - nb * w :].reshape(12, 2, nb, w).mean(axis=-1)  # [S, P, nb]
        ref = means.var(axis=0, ddof=1).mean(axis=-1)
        np.testing.assert_allclose(res.variance[:, k], ref, rtol=1e-10)
    assert res.windows[0] == 1 and res.windows[-1] == 300 // 4
    assert np.all(res.lo <= res.slope) and np.all(res.slope <= res.hi)


def test_variance_scaling_slope_iid_is_minus_one_and_random_intercept_is_zero():
    rng = np.random.default_rng(4)
    iid = erg.variance_scaling(rng.standard_normal((S, T)), n_boot=200)
    # Var of a W-mean of iid unit noise is 1/W (here measured -0.98, CI half-width ~0.03).
    assert iid.slope == pytest.approx(-1.0, abs=0.05)
    assert iid.lo < -0.95 and iid.hi < -0.9
    np.testing.assert_allclose(iid.variance * iid.windows, 1.0, rtol=0.25)
    ri = erg.variance_scaling(random_intercept(rng, (S, T)), n_boot=200)
    # Var = var(mu) + 1/W -> plateau at var(mu) = 1: slope about 0 (measured -0.03).
    assert abs(ri.slope) < 0.1 and ri.hi > -0.25
    ar = erg.variance_scaling(ar1(rng, (S, T), 0.9), n_boot=200)
    # AR(0.9): fit starts beyond the correlation time (tau = 19) and the slope approaches -1.
    assert ar.fit_start >= 50
    assert -1.1 < ar.slope < -0.85


def test_variance_scaling_interval_covers_the_true_slope():
    # iid: E[variance(W)] = 1/W exactly, so the true slope is -1. 95% intervals, 200 ensembles each;
    # measured coverage 0.92 (8 members) and 0.945 (32); a plain percentile interval gave ~0.5 for 4.
    rng = np.random.default_rng(19)
    for members, least in ((8, 0.85), (32, 0.9)):
        res = erg.variance_scaling(rng.standard_normal((members, 200, 1000)))
        coverage = np.mean((res.lo <= -1.0) & (res.hi >= -1.0))
        assert least <= coverage <= 0.99, (members, coverage)


def test_variance_scaling_bootstrap_is_seeded_and_batched_equals_single():
    rng = np.random.default_rng(5)
    x = np.stack([ar1(rng, (16, 400), 0.5), random_intercept(rng, (16, 400))], axis=1)  # [S, 2, T]
    a = erg.variance_scaling(x, rng=7)
    b = erg.variance_scaling(x, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.lo, b.lo)
    one = erg.variance_scaling(x[:, 1], rng=7)
    assert one.slope == a.slope[1] and one.lo == a.lo[1] and one.hi == a.hi[1]
    c = erg.variance_scaling(x, rng=8)
    assert not np.array_equal(a.lo, c.lo)


# ------------------------------------------------------------------------------------------------
# Fluctuation metric


def test_fluctuation_metric_matches_definition_and_decays_like_one_over_t():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((S, T))
    fm = erg.fluctuation_metric(x)
    run = np.cumsum(x, axis=-1) / np.arange(1, T + 1)
    ref = ((run - run.mean(axis=0)) ** 2).mean(axis=0)  # Omega(t) = mean_s (xbar_s - <xbar>)^2
    np.testing.assert_allclose(fm.omega, ref, rtol=1e-9)
    assert fm.exponent == pytest.approx(-1.0, abs=0.1)  # measured -1.02
    # Random intercept: plateau at var(mu); random walk: Omega ~ t / 3 grows.
    assert abs(erg.fluctuation_metric(random_intercept(rng, (S, T))).exponent) < 0.15
    assert erg.fluctuation_metric(random_walk(rng, (S, T))).exponent == pytest.approx(1.0, abs=0.2)


# ------------------------------------------------------------------------------------------------
# Ergodicity-breaking parameter


def eb_brownian_exact(lag: int, n: int) -> float:
    """EB of a Gaussian random walk with n recorded positions (unit increments), exactly.

    TAMSD = (1/M) sum_t Y_t^2 with Y_t = x(t + lag) - x(t) ~ N(0, lag), M = n - lag, and
    Cov(Y_t^2, Y_u^2) = 2 (lag - |t - u|)_+^2, so EB = Var(TAMSD) / lag^2.
    """
    m = n - lag
    k = np.arange(1, lag)
    return 2.0 * (m * lag**2 + 2.0 * np.sum((m - k) * (lag - k) ** 2.0)) / (m**2 * lag**2)


def test_tamsd_and_eb_match_definitions():
    rng = np.random.default_rng(7)
    x = random_walk(rng, (6, 2, 80))
    lags = [1, 3, 10]
    d = erg.tamsd(x, lags)
    for i, lag in enumerate(lags):
        np.testing.assert_allclose(d[..., i], ((x[..., lag:] - x[..., :-lag]) ** 2).mean(-1), rtol=1e-12)
    eb = erg.ergodicity_breaking(x, lags)
    np.testing.assert_allclose(eb, (d**2).mean(axis=0) / d.mean(axis=0) ** 2 - 1, rtol=1e-12)


def test_eb_of_brownian_motion_is_four_thirds_lag_over_t():
    rng = np.random.default_rng(8)
    n = 1000
    lags = np.array([5, 20, 50])
    eb = erg.ergodicity_breaking(random_walk(rng, (2000, n)), lags)
    exact = np.array([eb_brownian_exact(lag, n) for lag in lags])
    # Sampling error of EB over 2000 members is ~3%: measured ratios 0.97-1.03.
    np.testing.assert_allclose(eb, exact, rtol=0.1)
    np.testing.assert_allclose(eb, 4.0 / 3.0 * lags / n, rtol=0.15)
    # Ergodic: EB -> 0 as T grows (x4 longer -> about 4x smaller).
    eb_long = erg.ergodicity_breaking(random_walk(rng, (2000, 4 * n)), lags)
    np.testing.assert_allclose(eb / eb_long, 4.0, rtol=0.2)


def test_eb_stays_finite_for_random_diffusivity():
    # Non-ergodic diffusion: each member has its own diffusivity D_s ~ Exp(1), so
    # EB -> Var(D)/E[D]^2 = 1 instead of 0.
    rng = np.random.default_rng(9)
    d = rng.exponential(size=(2000, 1))
    eb = erg.ergodicity_breaking(np.sqrt(d) * random_walk(rng, (2000, 2000)), [10])
    assert eb[0] == pytest.approx(1.0, abs=0.2)


# ------------------------------------------------------------------------------------------------
# Long-run variance (lugsail batch means) and tau


def lugsail_reference(x, L):
    """Lugsail 2 BM(L) - BM(L/2) of the deviations from the ensemble mean, by direct loops."""
    d = x - x.mean(axis=0)
    S, T = d.shape
    K = T // L
    d = d[:, T - K * L :]
    out = []
    for length, k in ((L, K), (L // 2, 2 * K)):
        b = d.reshape(S, k, length).mean(axis=-1)
        out.append(length * ((b - b.mean(axis=1, keepdims=True)) ** 2).sum() / ((S - 1) * (k - 1)))
    return 2 * out[0] - out[1], K * L * (d.mean(axis=1) ** 2).sum() / (S - 1)


def test_lugsail_numbers_match_direct_loops():
    rng = np.random.default_rng(20)
    x = ar1(rng, (16, 2, 301), 0.7)
    dev, _, n = erg._deviations(x)
    grid = lrv.batch_grid(301)
    est, _, _, num, Ks = lrv._lrv_block(dev, n, grid)
    for g in (0, 3, len(grid) - 1):
        for p in range(2):
            ref, ref_num = lugsail_reference(x[:, p], int(grid[g]))
            assert est[p, g] == pytest.approx(ref, rel=1e-9)
            assert num[p, g] == pytest.approx(ref_num, rel=1e-9)
    assert Ks[0, -1] == 2 and np.all(grid % 2 == 0)
    # the test runs at twice the selected length: the grid is closed under doubling
    assert set(2 * grid[grid <= 75]) <= set(grid)


def test_lugsail_df_is_the_variance_of_the_gaussian_estimate():
    # Per member, LBM / sigma^2 = c1 chi2_{K-1} - c2 chi2_K: check 2 / df against simulated batch means.
    rng = np.random.default_rng(21)
    K, S = 4, 2
    h = rng.standard_normal((200_000, 2 * K))  # half-batch means of one member (S = 2: one contrast)
    b = 0.5 * (h[:, 0::2] + h[:, 1::2])
    bm = 2 * ((b - b.mean(1, keepdims=True)) ** 2).sum(1) / (K - 1)  # L = 2, sigma^2 = 1 * 2 / 2
    bm_half = ((h - h.mean(1, keepdims=True)) ** 2).sum(1) / (2 * K - 1)
    est = 2 * bm - bm_half
    assert est.mean() == pytest.approx(1.0, abs=0.01)
    assert est.var() == pytest.approx(2.0 / lrv.lugsail_df(K, S), rel=0.03)


@pytest.mark.parametrize("phi, T", [(0.0, 500), (0.5, 500), (0.9, 500), (0.9, 2000), (0.99, 4000)])
def test_batch_means_tau_of_ar1_is_nearly_unbiased(phi, T):
    # Known answer tau = (1 + phi)/(1 - phi); T/tau down to 20. Sokal's window on member-demeaned
    # ACFs is 25% low at phi = 0.9, T = 500 (measured 14 for 19). The batch-means tau has a relative
    # standard error sqrt(2 / df2) (8% with 4 batches of 256 members): the median of 8 ensembles is
    # within 8%, and tau_upper (2 standard errors up) is above the true tau.
    x = ar1(np.random.default_rng(22), (256, 8, T), phi)
    res = lrv.long_run_variance(x)
    true = (1 + phi) / (1 - phi)
    assert res.resolved.all()
    assert np.median(res.tau) == pytest.approx(true, rel=0.08)
    assert np.all(np.abs(res.tau / true - 1) <= 4 * np.sqrt(2 / res.df2))
    assert np.mean(res.tau_upper >= true) >= 7 / 8
    assert np.all(res.batch_length >= 4.5 * np.minimum(res.tau, true))
    assert np.all(res.n_batches >= lrv.MIN_BATCHES)


def test_tau_is_not_resolved_when_the_series_is_short():
    x = ar1(np.random.default_rng(23), (256, 4, 500), 0.99)  # tau = 199, T = 2.5 tau
    res = lrv.long_run_variance(x)
    assert not res.resolved.any() and np.isnan(res.pvalue).all()
    assert np.all(res.tau < 199)  # only a lower bound


# ------------------------------------------------------------------------------------------------
# Distribution check


def test_distribution_check_is_calibrated_under_the_null_and_thinning_matters():
    rng = np.random.default_rng(10)
    x = ar1(rng, (32, 200, 1000), 0.9)  # 200 independent ergodic ensembles
    res = erg.distribution_check(x)
    rate = np.mean(res.pvalue < 0.05)
    assert 0.01 <= rate <= 0.10, rate
    # stride ceil(3 tau_upper), tau_int = 19
    assert np.all(res.thin >= 45) and np.median(res.thin) >= 57
    # Without thinning the autocorrelated samples make KS reject far too often.
    unthinned = erg.distribution_check(x[:, :40], tau=1.0, thin_factor=1.0)
    assert np.all(unthinned.thin == 1)
    assert np.mean(unthinned.pvalue < 0.05) > 0.5


def test_distribution_check_holds_its_level_under_a_shared_trend():
    # A strong trend shared by every member: the cross-section is pooled from the pair's own steps,
    # so the two samples share the mixture over steps (the old 2-step pool rejected 100%).
    rng = np.random.default_rng(24)
    t = np.arange(500) / 500
    x = 3 * t + np.sin(8 * np.pi * t) + rng.standard_normal((256, 100, 500))
    rate = np.mean(erg.distribution_check(x, tau=1.0).pvalue < 0.05)
    assert rate <= scipy.stats.binom.ppf(0.999, 100, 0.05) / 100, rate


def test_distribution_check_detects_member_specific_distributions():
    rng = np.random.default_rng(11)
    ri = erg.distribution_check(random_intercept(rng, (S, T), 0.3))
    assert ri.pvalue < 1e-6 and ri.n_pairs == 16
    scale = rng.uniform(0.5, 2.0, size=(S, 1)) * rng.standard_normal((S, T))  # member-specific variance
    assert erg.distribution_check(scale).pvalue < 1e-6
    trend = np.linspace(0, 5, T) + rng.standard_normal((S, T))
    assert erg.distribution_check(trend).pvalue > 0.05


# ------------------------------------------------------------------------------------------------
# assess: calibration cells (S = 256, fixed seeds; rates within binomial bounds)


def rate_bound(n, p=0.05, q=0.999):
    """Largest rate a level-p test reaches in n trials with probability q (binomial)."""
    return scipy.stats.binom.ppf(q, n, p) / n


@pytest.mark.parametrize(
    "name, make",
    [
        ("white", lambda r, s: r.standard_normal(s)),
        ("AR(1) 0.9", lambda r, s: ar1(r, s, 0.9)),
        ("shared trend + AR(1) 0.9", lambda r, s: 3 * np.arange(s[-1]) / s[-1] + ar1(r, s, 0.9)),
    ],
)
def test_size_on_ergodic_nulls_is_at_most_alpha(name, make):
    # 100 ensembles of 256 members x 500 steps: non-ergodic at most alpha (binomial 99.9% bound:
    # 11 of 100); measured in docs/calibration.md with 200 ensembles per cell.
    x = make(np.random.default_rng(30), (256, 100, 500))
    r = erg.assess_many(x, describe=False)
    assert np.mean(r.verdict == "non-ergodic") <= rate_bound(100), name
    assert np.mean(r.verdict == "ergodic") >= 0.85, (name, np.unique(r.verdict, return_counts=True))


def oracle_anova(x, alpha=0.05):
    S, _, n = x.shape
    m = x.mean(axis=-1)
    between = n * ((m - m.mean(axis=0)) ** 2).sum(axis=0) / (S - 1)
    within = ((x - m[..., None]) ** 2).sum(axis=(0, 2)) / (S * (n - 1))
    return scipy.stats.f.sf(between / within, S - 1, S * (n - 1)) < alpha


def test_power_on_random_intercepts_is_close_to_the_oracle_anova():
    # var(mu) = 1e-4, white noise, T = 2000: the one-way ANOVA on raw values (exact here) detects
    # about 65%; the long-run-variance ANOVA (level 0.04, estimated LRV) within 10 points.
    rng = np.random.default_rng(31)
    x = 0.01 * rng.standard_normal((256, 60, 1)) + rng.standard_normal((256, 60, 2000))
    r = erg.assess_many(x, describe=False)
    ours, oracle = np.mean(r.verdict == "non-ergodic"), np.mean(oracle_anova(x))
    assert 0.4 <= oracle <= 0.9 and abs(ours - oracle) <= 0.15, (ours, oracle)


def test_minimum_detectable_effect_is_found_with_80_percent_power():
    rng = np.random.default_rng(32)
    mde = erg.assess(rng.standard_normal((256, 500))).mde_var_mu
    x = np.sqrt(mde) * rng.standard_normal((256, 100, 1)) + rng.standard_normal((256, 100, 500))
    found = np.mean(erg.assess_many(x, describe=False).verdict == "non-ergodic")
    assert 0.68 <= found <= 0.92, (mde, found)  # binomial 99.8% range around 0.8 for n = 100


# ------------------------------------------------------------------------------------------------
# assess: known answers


def test_assess_random_intercept_is_non_ergodic_with_its_effect_size():
    x = random_intercept(np.random.default_rng(13), (256, 20, 500), 0.1)  # var(mu) = 0.01
    r = erg.assess_many(x)
    assert np.all(r.verdict == "non-ergodic"), r.reason
    assert np.all(r.ratio_lo > 1) and np.all(r.mean_pvalue < 1e-10)
    coverage = np.mean((r.var_mu_lo <= 0.01) & (0.01 <= r.var_mu_hi))
    assert coverage >= 0.85 and np.median(r.var_mu) == pytest.approx(0.01, rel=0.2)
    assert "time averages differ" in r.reason[0] and "member-specific means" in r.reason[0]


def test_assess_shared_trend_is_ergodic_and_says_what_it_excludes():
    rng = np.random.default_rng(33)
    t = np.arange(500) / 500
    r = erg.assess_many(3 * t + np.sin(8 * np.pi * t) + rng.standard_normal((256, 20, 500)))
    # at most 4 of 20 rejections at level 0.05 (binomial 99.7%); the rate is pinned above
    assert np.sum(r.verdict == "ergodic") >= 16, r.reason
    ok = r.verdict == "ergodic"
    assert all(s.startswith("no member-specific mean larger than sd") for s in r.reason[ok])
    # 80%-power effect for white noise, S = 256, T = ~500: var(mu) ~ 5e-4
    assert np.all((r.mde_var_mu > 3e-4) & (r.mde_var_mu < 8e-4))
    assert np.all(r.steps_needed == 0)


def test_assess_random_walk_and_member_spreading_are_non_stationary():
    rng = np.random.default_rng(34)
    rw = erg.assess_many(random_walk(rng, (256, 10, 1000)))
    assert np.all(rw.verdict == "non-stationary"), rw.reason
    assert np.all(rw.drift > 0.25) and "grows" in rw.reason[0]
    # spread of members shrinking: converging members (e.g. the loss late in training)
    shrink = rng.standard_normal((256, 10, 1000)) * np.linspace(2.0, 0.5, 1000)
    r = erg.assess_many(shrink)
    assert np.all(r.verdict == "non-stationary") and "shrinks" in r.reason[0]


def test_assess_short_series_relative_to_tau_is_inconclusive_with_steps_needed():
    rng = np.random.default_rng(14)
    r = erg.assess_many(ar1(rng, (256, 10, 500), 0.99))  # tau = 199: 2.5 tau
    assert np.all(r.verdict == "inconclusive"), r.reason
    # at least 3 batches of 5 tau; tau is only bounded below, so steps_needed is a lower bound
    assert np.all(r.steps_needed > 1500) and np.all(~r.tau_resolved)
    assert "analyse at least" in r.reason[0] and "too short for its memory" in r.reason[0]
    assert f"analyse at least {r.steps_needed[0]:,} steps (have 500" in r.reason[0]
    # probes recorded every 5 training steps: the reason counts training steps, fields indices
    every5 = erg.assess(ar1(rng, (256, 500), 0.99), spacing=5)
    assert f"analyse at least {5 * every5.steps_needed:,} steps (have 2,500" in every5.reason
    short = erg.assess(rng.standard_normal((S, 100)), burn_in=80)
    assert short.verdict == "inconclusive" and "20 steps" in short.reason and short.n_steps == 20
    few = erg.assess(rng.standard_normal((3, T)))
    assert few.verdict == "inconclusive" and "3 finite members" in few.reason
    same = erg.assess(np.tile(rng.standard_normal(T), (S, 1)))  # all members identical
    assert same.verdict == "inconclusive" and "identical" in same.reason


def test_distribution_check_alone_decides_only_when_the_window_spans_50_tau():
    rng = np.random.default_rng(35)
    scale = rng.uniform(0.5, 2.0, size=(256, 1, 1))
    wide = erg.assess_many(scale * rng.standard_normal((256, 4, 2000)))  # member-specific spread
    assert np.all(wide.verdict == "non-ergodic") and np.all(wide.ks_decisive)
    assert "distribution over time differs" in wide.reason[0]
    slow = erg.assess_many(scale * ar1(rng, (256, 4, 600), 0.9))  # 600 steps = 32 tau
    assert not slow.ks_decisive.any()
    assert not any("distribution over time differs" in s for s in slow.reason)


def test_assess_excludes_and_counts_diverged_members():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((S, T))
    x[7, 1500:] = np.nan  # diverged member
    x[9, 3] = np.inf  # diverged during burn-in
    r = erg.assess(x, burn_in=10)
    assert r.verdict == "ergodic" and r.n_diverged == 2 and r.n_members == S - 2
    assert "2 diverged" in r.reason
    clean = erg.assess(np.delete(x, [7, 9], axis=0), burn_in=10)
    for field in ("ratio", "mean_pvalue", "tau_int", "slope", "ks_pvalue", "drift_pvalue"):
        assert getattr(r, field) == pytest.approx(getattr(clean, field), rel=1e-9), field


def test_assess_many_is_batched_over_observables():
    rng = np.random.default_rng(16)
    x = np.stack(
        [ar1(rng, (S, 1000), 0.5), random_intercept(rng, (S, 1000)), random_walk(rng, (S, 1000))], axis=1
    ).reshape(S, 3, 1, 1000)
    x[4, 2, 0, 10] = np.nan
    many = erg.assess_many(x, burn_in=50)
    assert many.verdict.shape == (3, 1) and many.ratio.shape == (3, 1)
    np.testing.assert_array_equal(many.verdict[:, 0], ["ergodic", "non-ergodic", "non-stationary"])
    np.testing.assert_array_equal(many.n_diverged[:, 0], [0, 0, 1])
    for p in range(3):
        one = erg.assess(x[:, p, 0], burn_in=50)
        assert one.verdict == many.verdict[p, 0] and one.reason == many.reason[p, 0]
        for field in (
            "ratio",
            "mean_pvalue",
            "mde_var_mu",
            "tau_int",
            "drift",
            "slope",
            "slope_lo",
            "ks_pvalue",
            "omega_exponent",
        ):
            batched = getattr(many, field)[p, 0]
            assert getattr(one, field) == pytest.approx(batched, rel=1e-12, nan_ok=True)


def test_assess_accepts_jax_float32():
    jnp = pytest.importorskip("jax.numpy")
    x = ar1(np.random.default_rng(18), (16, 2, 500), 0.5).astype(np.float32)
    a = erg.assess_many(jnp.asarray(x))
    b = erg.assess_many(x.astype(np.float64))
    np.testing.assert_array_equal(a.verdict, b.verdict)
    np.testing.assert_array_equal(a.ratio, b.ratio)


def test_assess_burn_in_removes_a_transient():
    rng = np.random.default_rng(17)
    x = ar1(rng, (S, T), 0.5)
    # member-specific start decaying over ~20 steps
    x[:, :200] += rng.normal(0, 20, size=(S, 1)) * np.exp(-np.arange(200) / 20.0)
    assert erg.assess(x, burn_in=200).verdict == "ergodic"
    assert erg.assess(x).verdict != "ergodic"


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="member axis"):
        erg.assess_many(np.zeros(10))
    with pytest.raises(ValueError, match="burn_in"):
        erg.assess(np.zeros((4, 10)), burn_in=10)
    with pytest.raises(ValueError, match="assess_many"):
        erg.assess(np.zeros((4, 2, 50)))
    with pytest.raises(ValueError, match="lags"):
        erg.tamsd(np.zeros((4, 10)), [10])
    with pytest.raises(ValueError, match="window"):
        erg.time_averages(np.zeros((4, 10)), 11)
    with pytest.raises(ValueError, match="alpha"):
        erg.assess(np.zeros((4, 100)), alpha=1.5)
    with pytest.raises(ValueError, match="ks_share"):
        erg.assess(np.zeros((4, 100)), ks_share=1.0)
