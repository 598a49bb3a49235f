"""Tests of rvsp_jax.analysis.spectral against statsmodels / scipy and against known answers.

References: statsmodels.tsa.stattools.acf / pacf, statsmodels.stats.diagnostic.acorr_ljungbox,
scipy.signal.periodogram / welch, called one series at a time. Known answers: AR(1) acf phi^k
with Bartlett's variance (Brockwell & Davis 1991, eq. 7.2.6), AR(1) spectral density
sigma^2 / |1 - phi e^{-iw}|^2, E log of an Exp(1) periodogram ordinate = -gamma (Euler), random-walk
spectrum ~ 1 / (4 sin^2(pi f)), and the closed form
integral_0^{pi/2} dw / (1 - 2 phi cos w + phi^2) = 2 arctan((1 + phi) / (1 - phi)) / (1 - phi^2).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import scipy.stats
from statsmodels.stats.diagnostic import acorr_ljungbox
from statsmodels.tsa.stattools import acf as sm_acf
from statsmodels.tsa.stattools import pacf as sm_pacf

from rvsp_jax.analysis import spectral
from rvsp_jax.analysis.spectral import (
    acf,
    acf_confint,
    band_power_ratio,
    is_constant,
    ljung_box,
    pacf,
    periodogram,
    spectral_flatness,
    spectral_slope,
    welch,
)

# Relative tolerance of every reference comparison (float64); atol covers values near 0, where
# relative error is meaningless (acf/pacf ~ 1e-3 at most lags, PSD bins emptied by detrending).
RTOL = 1e-6
ATOL = 1e-10
# Lengths and series counts of the reference bank: 1,080 series, four kinds in equal shares.
BANK = {50: 320, 129: 240, 500: 240, 1000: 160, 2000: 80, 5000: 40}


def ar1(rng, phi, shape, sigma=1.0):
    """AR(1) x_t = phi x_{t-1} + e_t, e ~ N(0, sigma^2), started from its stationary law.

    phi: scalar or array broadcastable to shape[:-1]; returns [*shape]."""
    e = sigma * rng.standard_normal(shape)
    phi = np.broadcast_to(np.asarray(phi, dtype=float), shape[:-1])
    x = np.empty(shape)
    x[..., 0] = e[..., 0] / np.sqrt(1.0 - phi**2)
    for t in range(1, shape[-1]):
        x[..., t] = phi * x[..., t - 1] + e[..., t]
    return x


def mixed_series(rng, n, length):
    """[n, length]: white noise, AR(1) with phi ~ U(-0.99, 0.99), random walks, trend + noise."""
    q = n // 4
    kinds = [
        rng.standard_normal((q, length)) * rng.uniform(0.1, 10, (q, 1)),
        ar1(rng, rng.uniform(-0.99, 0.99, q), (q, length)),
        np.cumsum(rng.standard_normal((q, length)), axis=-1) + rng.normal(0, 5, (q, 1)),
        rng.uniform(-0.05, 0.05, (n - 3 * q, 1)) * np.arange(length) + rng.standard_normal((n - 3 * q, length)),
    ]
    return np.concatenate(kinds)


@pytest.fixture(scope="module")
def bank():
    rng = np.random.default_rng(20240601)
    return {length: mixed_series(rng, n, length) for length, n in BANK.items()}


def per_series(fn, x):
    return np.array([fn(row) for row in x])


def psd_close(ours, ref):
    """PSD bins agree to RTOL, with atol 1e-9 of the series' largest bin (bins emptied by
    detrending hold rounding noise, ~1e-30 relative, in both implementations)."""
    atol = 1e-9 * np.max(np.abs(ref), axis=-1, keepdims=True)
    return np.all(np.abs(ours - ref) <= atol + RTOL * np.abs(ref))


# ------------------------------------------------------------------------------------------------
# Agreement with the references on the mixed bank


def test_bank_size(bank):
    assert sum(x.shape[0] for x in bank.values()) >= 1000


@pytest.mark.parametrize("adjusted", [False, True])
def test_acf_matches_statsmodels(bank, adjusted):
    for length, x in bank.items():
        nlags = min(40, length - 1)
        ref = per_series(lambda s: sm_acf(s, nlags=nlags, adjusted=adjusted, fft=True), x)  # noqa: B023
        np.testing.assert_allclose(acf(x, nlags, adjusted=adjusted), ref, rtol=RTOL, atol=ATOL)


def test_acf_full_length_and_default_nlags(bank):
    x = bank[50][:40]
    ref = per_series(lambda s: sm_acf(s, nlags=49, fft=True), x)
    np.testing.assert_allclose(acf(x, 49), ref, rtol=RTOL, atol=ATOL)
    ref = per_series(lambda s: sm_acf(s, fft=True), bank[500][:20])
    np.testing.assert_allclose(acf(bank[500][:20], None), ref, rtol=RTOL, atol=ATOL)


def test_acf_confint_matches_statsmodels(bank):
    x = bank[500]
    for alpha in (0.05, 0.01):
        ref = per_series(lambda s: sm_acf(s, nlags=25, alpha=alpha, result_object=True).confint, x)  # noqa: B023
        np.testing.assert_allclose(acf_confint(acf(x, 25), 500, alpha), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method", ["yw", "ywm", "ld", "ldb"])
def test_pacf_yule_walker_matches_statsmodels(bank, method):
    for length, x in bank.items():
        nlags = min(25, length // 2)
        ref = per_series(lambda s: sm_pacf(s, nlags=nlags, method=method), x)  # noqa: B023
        np.testing.assert_allclose(pacf(x, nlags, method=method), ref, rtol=RTOL, atol=1e-9)


@pytest.mark.parametrize("method", ["ols", "ols-inefficient", "ols-adjusted", "burg"])
def test_pacf_other_methods_match_statsmodels(bank, method):
    for length, x in bank.items():
        x = x[::16]  # 68 series: statsmodels' per-lag lstsq loop is the slow side
        nlags = min(12, length // 2)
        ref = per_series(lambda s: sm_pacf(s, nlags=nlags, method=method), x)  # noqa: B023
        np.testing.assert_allclose(pacf(x, nlags, method=method), ref, rtol=RTOL, atol=1e-9)


@pytest.mark.parametrize("method", ["yw", "ols", "ols-inefficient", "burg"])
def test_pacf_at_the_lag_limit(bank, method):
    """nlags = T // 2, statsmodels' limit; for "ols" the last regression is underdetermined
    (T - k rows, k + 1 columns) and both sides take the minimum-norm solution."""
    for length in (50, 129):
        x = bank[length][::10]
        ref = per_series(lambda s: sm_pacf(s, nlags=length // 2, method=method), x)  # noqa: B023
        np.testing.assert_allclose(pacf(x, length // 2, method=method), ref, rtol=RTOL, atol=1e-9)


def test_pacf_default_is_statsmodels_default(bank):
    x = bank[1000][:20]
    ref = per_series(lambda s: sm_pacf(s), x)  # statsmodels: method="ywadjusted", default nlags
    np.testing.assert_allclose(pacf(x, None), ref, rtol=RTOL, atol=1e-9)


def test_ljung_box_matches_statsmodels(bank):
    for length, x in bank.items():
        lags = min(20, length - 1)
        ours = ljung_box(x, lags, boxpierce=True)
        ref = [acorr_ljungbox(s, lags=lags, boxpierce=True) for s in x]
        np.testing.assert_array_equal(ours.lags, np.arange(1, lags + 1))
        np.testing.assert_allclose(ours.stat, [r.lb_stat for r in ref], rtol=RTOL)
        np.testing.assert_allclose(ours.pvalue, [r.lb_pvalue for r in ref], rtol=RTOL, atol=1e-12)
        np.testing.assert_allclose(ours.bp_stat, [r.bp_stat for r in ref], rtol=RTOL)
        np.testing.assert_allclose(ours.bp_pvalue, [r.bp_pvalue for r in ref], rtol=RTOL, atol=1e-12)


def test_ljung_box_lag_list_model_df_and_default(bank):
    x = bank[500][::4]
    ours = ljung_box(x, [1, 3, 10], model_df=2)
    ref = [acorr_ljungbox(s, lags=[1, 3, 10], model_df=2) for s in x]
    np.testing.assert_allclose(ours.stat, [r.lb_stat for r in ref], rtol=RTOL)
    np.testing.assert_allclose(ours.pvalue, [r.lb_pvalue for r in ref], rtol=RTOL, atol=1e-12)
    assert np.isnan(ours.pvalue[:, 0]).all()  # lag 1 <= model_df: no degrees of freedom
    assert ours.bp_stat is None
    ref = [acorr_ljungbox(s) for s in x]  # lags 1..min(T // 5, 10)
    np.testing.assert_allclose(ljung_box(x).stat, [r.lb_stat for r in ref], rtol=RTOL)


PERIODOGRAM_OPTIONS = [
    {},
    {"detrend": "linear"},
    {"detrend": False, "window": "hann", "fs": 100.0},
    {"window": ("tukey", 0.25), "nfft": 3000},
    {"nfft": 40},
]


@pytest.mark.parametrize("options", PERIODOGRAM_OPTIONS, ids=str)
def test_periodogram_matches_scipy(bank, options):
    for x in bank.values():
        x = x if options == PERIODOGRAM_OPTIONS[0] else x[::3]  # all 1,080 series for the default
        f, p = periodogram(x, **options)
        f_ref, p_ref = scipy.signal.periodogram(x, **options, axis=-1)
        np.testing.assert_allclose(f, f_ref, rtol=1e-12)
        assert p.shape == p_ref.shape
        assert psd_close(p, per_series(lambda s: scipy.signal.periodogram(s, **options)[1], x))


WELCH_OPTIONS = [
    {"nperseg": 32},
    {"nperseg": 45, "detrend": "linear"},
    {"nperseg": 40, "noverlap": 7, "window": ("tukey", 0.3), "fs": 3.0},
    {"nperseg": 48, "nfft": 101, "detrend": False},
    {"nperseg": 50, "noverlap": 0, "window": "boxcar"},
]


@pytest.mark.parametrize("options", WELCH_OPTIONS, ids=str)
def test_welch_matches_scipy(bank, options):
    for x in bank.values():
        x = x if options == WELCH_OPTIONS[0] else x[::3]  # all 1,080 series for the first
        f, p = welch(x, **options)
        ref = {"window": "hann"} | options
        f_ref = scipy.signal.welch(x[0], **ref)[0]
        np.testing.assert_allclose(f, f_ref, rtol=1e-12)
        assert psd_close(p, per_series(lambda s: scipy.signal.welch(s, **ref)[1], x))  # noqa: B023


def test_welch_default_segment_and_clipping(bank):
    """nperseg=256 default (periodic Hann); longer than T it is clipped to T with a warning, as
    scipy does."""
    x = bank[1000][::4]
    assert psd_close(welch(x)[1], per_series(lambda s: scipy.signal.welch(s, nperseg=256)[1], x))
    x = bank[129][::4]
    with pytest.warns(UserWarning, match="nperseg"):
        f, p = welch(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = per_series(lambda s: scipy.signal.welch(s, nperseg=256)[1], x)
    assert f.shape == (65,) and psd_close(p, ref)


def test_batched_shapes_jax_input_and_row_blocks(bank, monkeypatch):
    """[S, P, T] and jax input give the per-series answers; forcing many small row blocks too."""
    x = bank[500][:60]
    x3 = x.reshape(6, 10, 500)
    flat = {
        "acf": acf(x, 30),
        "pacf": pacf(x, 10, method="ols"),
        "lb": ljung_box(x, 10).stat,
        "welch": welch(x, nperseg=64)[1],
    }
    monkeypatch.setattr(spectral, "_BLOCK_ELEMENTS", 5000)
    with jax.enable_x64(True):
        for arr in (x3, jnp.asarray(x3, dtype=jnp.float64)):
            np.testing.assert_allclose(acf(arr, 30).reshape(60, -1), flat["acf"], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(pacf(arr, 10, method="ols").reshape(60, -1), flat["pacf"], rtol=1e-10)
            np.testing.assert_allclose(ljung_box(arr, 10).stat.reshape(60, -1), flat["lb"], rtol=1e-12)
            np.testing.assert_allclose(welch(arr, nperseg=64)[1].reshape(60, -1), flat["welch"], rtol=1e-12)
    # float32 JAX input (the trainer's dtype) is converted and computed in float64.
    x32 = jnp.asarray(x3, dtype=jnp.float32)
    got = acf(x32, 5)
    assert got.dtype == np.float64 and got.shape == (6, 10, 6)
    np.testing.assert_allclose(got, acf(np.asarray(x32).astype(np.float64), 5), rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# Known answers


def test_ar1_acf_is_phi_to_the_k():
    """Member-averaged acf of AR(1) vs phi^k. Bound per lag: 4 standard errors of the mean
    (Bartlett: var r_k = [(1+phi^2)(1-phi^2k)/(1-phi^2) - 2k phi^2k] / T) plus a bias allowance
    (k + 2(1+phi)/(1-phi)) / T for the O(1/T) bias of the mean-corrected estimator."""
    rng = np.random.default_rng(1)
    n_members, length, k = 64, 4000, np.arange(11)
    for phi in (0.9, 0.5, -0.7):
        r = acf(ar1(rng, phi, (n_members, length)), 10).mean(axis=0)
        var = ((1 + phi**2) * (1 - phi ** (2 * k)) / (1 - phi**2) - 2 * k * phi ** (2 * k)) / length
        bound = 4 * np.sqrt(var / n_members) + (k + 2 * (1 + phi) / (1 - phi)) / length
        assert np.all(np.abs(r - phi**k) <= bound), (phi, r - phi**k, bound)
        assert np.all(bound[1:] < 0.05)


def test_white_noise_confint_and_ljung_box_calibrated():
    """Under the null (iid normal) 95% Bartlett bands hold ~95% of sample autocorrelations and the
    Ljung-Box p-values are ~U(0, 1). Bounds are 4 binomial standard errors / a KS test."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 1000))
    r = acf(x, 20)
    half = acf_confint(r, 1000, 0.05)[..., 1] - r
    inside = np.mean(np.abs(r[:, 1:]) <= half[:, 1:])
    assert abs(inside - 0.95) < 4 * np.sqrt(0.95 * 0.05 / r[:, 1:].size) + 0.005
    p = ljung_box(x, [5, 20]).pvalue
    for j in range(2):
        assert scipy.stats.kstest(p[:, j], "uniform").pvalue > 1e-3
    # An AR(1) with phi = 0.3 is rejected almost always at T = 1000.
    assert np.mean(ljung_box(ar1(rng, 0.3, (50, 1000)), 5).pvalue < 0.01) > 0.95


def test_ar1_pacf_cuts_off_after_lag_one():
    rng = np.random.default_rng(3)
    x = ar1(rng, 0.8, (64, 4000))
    for method in ("yw", "ols", "burg"):
        pm = pacf(x, 6, method=method).mean(axis=0)
        assert abs(pm[1] - 0.8) < 0.01
        # Lags >= 2 are zero with standard error 1/sqrt(T) per series -> 4/sqrt(64 T) for the mean.
        assert np.all(np.abs(pm[2:]) < 4 / np.sqrt(64 * 4000) + 1e-3)


@pytest.mark.parametrize("phi", [0.5, 0.9, -0.9])
def test_ar1_welch_psd_matches_theory(phi):
    """One-sided density at fs=1: 2 s^2 / |1 - phi e^{-2 pi i f}|^2 for 0 < f < 1/2, and half that
    at the Nyquist bin (scipy does not double it). Bins 0 and 1 are skipped: removing the segment
    mean empties DC and, through the Hann main lobe, part of bin 1. 64 members x 31 segments give
    a relative standard error of ~2.5% per bin; bound 12% per bin, 4% rms."""
    rng = np.random.default_rng(4)
    sigma = 0.7
    f, p = welch(ar1(rng, phi, (64, 4096), sigma), nperseg=256)
    theory = 2 * sigma**2 / np.abs(1 - phi * np.exp(-2j * np.pi * f)) ** 2
    rel = p.mean(axis=0) / theory - 1
    assert np.max(np.abs(rel[2:-1])) < 0.12
    assert np.sqrt(np.mean(rel[2:-1] ** 2)) < 0.04
    assert abs(rel[-1] + 0.5) < 0.06  # Nyquist bin: s^2/|1 + phi|^2, not doubled


def test_white_noise_periodogram_level_flatness_and_slope():
    rng = np.random.default_rng(5)
    sigma = 2.0
    x = sigma * rng.standard_normal((20, 4096))
    f, p = periodogram(x)
    # Mean one-sided density 2 sigma^2 (fs=1); 20 x 2047 Exp bins -> ~0.5% standard error.
    assert abs(p[:, 1:-1].mean() / (2 * sigma**2) - 1) < 0.03
    # Raw periodogram: bins ~ Exp, E log = log mean - gamma -> flatness ~ exp(-gamma) = 0.5615.
    assert abs(spectral_flatness(p).mean() - np.exp(-np.euler_gamma)) < 0.02
    f, p = welch(sigma * rng.standard_normal((20, 16384)))
    assert np.all(spectral_flatness(p) > 0.98)
    assert np.all(np.abs(spectral_slope(f, p).beta) < 0.1)
    assert np.all(np.abs(band_power_ratio(f, p) - 1) < 0.1)


def test_random_walk_slope_is_two():
    """Random-walk spectrum 1/(4 sin^2(pi f)) ~ f^-2 at low f; fitted over 2/nperseg <= f <= 0.1."""
    rng = np.random.default_rng(6)
    f, p = welch(np.cumsum(rng.standard_normal((20, 16384)), axis=-1), nperseg=1024)
    fit = spectral_slope(f, p, band=(2 / 1024, 0.1))
    assert abs(fit.beta.mean() - 2) < 0.1
    assert np.all(np.abs(fit.beta - 2) < 0.2)
    assert np.all(fit.r2 > 0.95)
    # An exact power law is recovered exactly, intercept included.
    fit = spectral_slope(f, 3.0 * np.where(f > 0, f, 1.0) ** -1.5, band=(0.01, 0.5))
    np.testing.assert_allclose([fit.beta, fit.intercept, fit.r2], [1.5, np.log10(3.0), 1.0], rtol=1e-12)
    assert fit.nbins == np.sum((f >= 0.01) & (f <= 0.5))


@pytest.mark.parametrize("phi", [0.5, 0.9, -0.9])
def test_band_power_ratio_of_ar1(phi):
    """Periodogram band ratio vs the closed form 2a / (pi - 2a), a = arctan((1+phi)/(1-phi)), within
    5%; every member is > 1 (smooth) for phi > 0 and < 1 (jittery) for phi < 0."""
    rng = np.random.default_rng(7)
    f, p = periodogram(ar1(rng, phi, (64, 4096)))
    ratio = band_power_ratio(f, p)
    a = np.arctan((1 + phi) / (1 - phi))
    assert abs(ratio.mean() / (2 * a / (np.pi - 2 * a)) - 1) < 0.05
    assert np.all(ratio > 1) if phi > 0 else np.all(ratio < 1)
    # An explicit split: per-unit-bandwidth ratio of a flat spectrum is 1 wherever the split is.
    np.testing.assert_allclose(band_power_ratio(f, np.ones_like(f), split=0.1), 1.0)


# ------------------------------------------------------------------------------------------------
# Edge cases


def test_constant_and_nan_series_affect_only_themselves(bank):
    x = bank[500][:6].copy()
    clean = x.copy()
    x[1] = 3.7  # constant
    x[3, 100] = np.nan
    x[4, 7] = np.inf
    others = [0, 2, 5]
    np.testing.assert_array_equal(is_constant(x), [False, True, False, False, False, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning storm
        outputs = {
            "acf": (acf(x, 10), acf(clean, 10)),
            "acf_adj": (acf(x, 10, adjusted=True), acf(clean, 10, adjusted=True)),
            "lb": (ljung_box(x, 5).pvalue, ljung_box(clean, 5).pvalue),
        }
        for method in ("yw", "ywm", "ols", "ols-inefficient", "burg"):
            outputs[method] = (pacf(x, 5, method=method)[:, 1:], pacf(clean, 5, method=method)[:, 1:])
        fw, pw = welch(x, nperseg=64)
        fc, pc = welch(clean, nperseg=64)
        outputs["welch"] = (pw, pc)
        outputs["periodogram"] = (periodogram(x)[1], periodogram(clean)[1])
        outputs["slope"] = (spectral_slope(fw, pw).beta, spectral_slope(fc, pc).beta)
        outputs["ratio"] = (band_power_ratio(fw, pw), band_power_ratio(fc, pc))
        outputs["flatness"] = (spectral_flatness(pw), spectral_flatness(pc))
    for name, (got, want) in outputs.items():
        np.testing.assert_allclose(got[others], want[others], rtol=1e-12, err_msg=name)
        assert np.isnan(got[3]).all() and np.isnan(got[4]).all(), name
    for name in ("acf", "acf_adj", "lb", "yw", "ywm", "ols", "ols-inefficient", "burg"):
        assert np.isnan(outputs[name][0][1]).all(), name
    np.testing.assert_array_equal(pw[1], 0.0)  # constant: zero power (as scipy), not NaN
    assert np.isnan(spectral_flatness(pw[1]))  # 0/0: documented NaN
    assert np.isnan(spectral_slope(fw, pw[1]).beta)  # no positive bins to fit


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: acf(x, 100), "nlags=100"),
        (lambda x: acf(x, -1), "nlags"),
        (lambda x: acf(x, 2.5), "integer"),
        (lambda x: acf(x[:, :1], 0), "at least 2"),
        (lambda x: acf(np.float64(1.0), 1), "time axis"),
        (lambda x: pacf(x, 51), "nlags=51"),
        (lambda x: pacf(x, 5, method="magic"), "Unknown pacf method"),
        (lambda x: ljung_box(x, 100), "nlags=100"),
        (lambda x: ljung_box(x, [0, 2]), "lags"),
        (lambda x: acf_confint(acf(x, 5), 100, alpha=1.5), "alpha"),
        (lambda x: welch(x, nperseg=32, noverlap=32), "noverlap"),
        (lambda x: welch(x, nperseg=32, window=np.ones(31)), "length nperseg"),
        (lambda x: welch(x, detrend="quadratic"), "detrend"),
        (lambda x: periodogram(x, fs=0), "fs"),
        (lambda x: welch(x, nperseg=32, nfft=16), "nfft"),
        (lambda x: spectral_slope(np.arange(5.0), np.ones((2, 6))), "same F"),
        (lambda x: spectral_slope(np.arange(5.0), np.ones(5), band=(10, 20)), "band"),
        (lambda x: band_power_ratio(np.arange(5.0), np.ones(5), split=100.0), "split"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    x = np.random.default_rng(8).standard_normal((3, 100))
    with pytest.raises(ValueError, match=match):
        call(x)


# ---- spectral shape: white vs Lorentzian (AR(1)) vs power law ---------------------------------


def _ar1(rng, phi, n_series, n_steps, burn=500):
    e = rng.standard_normal((n_series, n_steps + burn))
    x = np.zeros_like(e)
    for k in range(1, e.shape[1]):
        x[:, k] = phi * x[:, k - 1] + e[:, k]
    return x[:, burn:]


def _power_law_noise(rng, beta, n_series, n_steps):
    """A genuine 1/f^beta series: white noise with its Fourier amplitudes scaled by f^(-beta/2)."""
    w = np.fft.rfft(rng.standard_normal((n_series, n_steps)), axis=-1)
    f = np.fft.rfftfreq(n_steps)
    w[:, 1:] *= f[1:] ** (-beta / 2)
    w[:, 0] = 0
    return np.fft.irfft(w, n=n_steps, axis=-1)


def test_slope_reports_its_fit_range_and_r2():
    f = np.fft.rfftfreq(64)
    p = np.where(f > 0, f, 1.0) ** -1.0
    p[1] = 0.0  # an empty bin is left out, so the range starts at the next one
    fit = spectral_slope(f, np.stack([p, np.full(f.size, np.nan)]), band=(0.0, 0.25))
    assert fit.f_lo[0] == f[2] and fit.f_hi[0] == 0.25 and fit.r2[0] == pytest.approx(1.0)
    assert np.isnan(fit.f_lo[1]) and np.isnan(fit.r2[1])
    beta, intercept, r2, nbins = fit[:4]  # the original four outputs keep their places
    assert beta[0] == pytest.approx(1.0) and nbins[0] == 15


def test_shape_of_ar1_is_lorentzian_not_a_power_law():
    """AR(1) with phi = 0.7 and 0.9 (T = 2048, raw periodogram): the Lorentzian wins by AIC for every
    series (measured delta AIC about -60 to -200) and recovers phi within 0.05; its OLS slope is
    far from 0 (0.7-1.5), which is why a slope alone is no evidence of a power law."""
    rng = np.random.default_rng(11)
    for phi in (0.7, 0.9):
        f, p = periodogram(_ar1(rng, phi, 12, 2048))
        shape = spectral.spectral_shape(f[:-1], p[:, :-1])
        assert np.all(shape.verdict == "lorentzian"), shape.delta_aic
        assert np.all(shape.delta_aic < -10)
        np.testing.assert_allclose(shape.phi, phi, atol=0.05)
        assert np.all(spectral_slope(*welch(_ar1(rng, phi, 4, 2048))).beta > 0.5)


@pytest.mark.parametrize("beta", [0.8, 1.5])
def test_shape_of_a_genuine_power_law_is_power_law(beta):
    """1/f^beta noise made by FFT filtering (T = 2048): power law wins for every series (measured
    delta AIC > +40) and its Whittle exponent is within 0.1 of beta."""
    rng = np.random.default_rng(12)
    f, p = periodogram(_power_law_noise(rng, beta, 12, 2048))
    shape = spectral.spectral_shape(f[:-1], p[:, :-1])
    assert np.all(shape.verdict == "power-law"), shape.delta_aic
    assert np.all(shape.delta_aic > 10)
    np.testing.assert_allclose(shape.beta, beta, atol=0.1)


def test_shape_of_white_noise_is_mostly_white_and_degenerate_series_are_flagged():
    """White noise: "white" for most of 40 series (the AIC margin of 2 lets a few percent through;
    measured 38-40 of 40); a constant series and a NaN series get "invalid" (outside SHAPE_VERDICTS and
    SHAPE_MODELS; code -1 in the private int8 codes) and NaN fits."""
    rng = np.random.default_rng(13)
    f, p = periodogram(rng.standard_normal((40, 1024)))
    shape = spectral.spectral_shape(f[1:-1], p[:, 1:-1])
    assert np.mean(shape.verdict == "white") >= 0.85
    assert shape.verdict.dtype.kind == "U" and set(shape.verdict.tolist()) <= set(spectral.SHAPE_VERDICTS)
    assert shape.best.dtype.kind == "U" and set(shape.best.tolist()) <= set(spectral.SHAPE_MODELS)
    np.testing.assert_array_equal(shape.best, np.asarray(spectral.SHAPE_MODELS)[shape.aic.argmin(-1)])
    codes = spectral._spectral_shape_codes(f[1:-1], p[:, 1:-1])
    assert codes.verdict.dtype == codes.best.dtype == np.int8
    np.testing.assert_array_equal(shape.verdict, np.asarray(spectral.SHAPE_VERDICTS)[codes.verdict])
    assert shape.f_lo == f[1] and shape.f_hi == f[-2] and np.all(shape.nbins == f.size - 2)
    bad = np.stack([np.zeros(f.size), np.where(f > 0.2, np.nan, 1.0)])
    out = spectral.spectral_shape(f, bad)
    assert np.all(out.verdict == "invalid") and np.all(np.isnan(out.phi)) and np.all(np.isnan(out.aic))
    assert np.all(out.best == "invalid") and spectral.SHAPE_INVALID == "invalid"
    assert "invalid" not in spectral.SHAPE_VERDICTS + spectral.SHAPE_MODELS
    bad_codes = spectral._spectral_shape_codes(f, bad)
    assert np.all(bad_codes.verdict == -1) and np.all(bad_codes.best == -1)
    with pytest.raises(ValueError, match="at least 3 bins"):
        spectral.spectral_shape(f, p, band=(0.0, 2 / 1024))


def test_ljung_box_refuses_huge_lags_before_allocating_them():
    import tracemalloc

    from rvsp_jax.analysis import ljung_box

    x = np.random.default_rng(0).standard_normal((3, 100))
    tracemalloc.start()
    with pytest.raises(ValueError, match="nlags=1000000000000 is too large for series of length T=100"):
        ljung_box(x, 10**12)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20  # nothing of size lags was allocated
