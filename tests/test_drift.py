"""Tests of rvsp_jax.analysis.drift: rolling moments against np.mean/np.var on explicit slices,
drift of known processes (trend plus noise, random walk, growing variance) and calibration of the
mean drift under white noise (its standard error follows from OLS on W independent window means).
"""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rvsp_jax.analysis import drift
from rvsp_jax.analysis.drift import measure_drift, rolling_mean_var


def explicit(x, window, step, ddof=0):
    """Per-window np.mean / np.var on slices: the reference for rolling_mean_var."""
    starts = range(0, x.shape[-1] - window + 1, step)
    mean = np.stack([x[..., s : s + window].mean(axis=-1) for s in starts], axis=-1)
    var = np.stack([x[..., s : s + window].var(axis=-1, ddof=ddof) for s in starts], axis=-1)
    return mean, var, np.array(list(starts))


@pytest.mark.parametrize(
    "shape, window, step, ddof",
    [
        ((5, 200), 20, None, 0),
        ((5, 203), 20, 1, 1),
        ((2, 3, 101), 10, 7, 0),
        ((4, 100), 9, 25, 1),
        ((150,), 150, None, 0),
    ],
)
def test_rolling_matches_explicit_slices(shape, window, step, ddof):
    rng = np.random.default_rng(10)
    x = np.cumsum(rng.standard_normal(shape), axis=-1)
    got = rolling_mean_var(x, window, step, ddof=ddof)
    mean, var, starts = explicit(x, window, window if step is None else step, ddof)
    np.testing.assert_array_equal(got.starts, starts)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got.var, var, rtol=1e-12)
    assert got.mean.shape == shape[:-1] + (starts.size,)


def test_rolling_blocks_jax_input_and_large_offset(monkeypatch):
    rng = np.random.default_rng(11)
    noise = rng.standard_normal((8, 500))
    x = 1e8 + noise  # running sums would lose ~all digits of the variance here
    mean, var, _ = explicit(noise, 50, 3)
    monkeypatch.setattr(drift, "_BLOCK_ELEMENTS", 1000)  # many small blocks of windows
    got = rolling_mean_var(x, 50, 3)
    np.testing.assert_allclose(got.var, var, rtol=1e-6)
    np.testing.assert_allclose(got.mean - 1e8, mean, atol=1e-7)
    x32 = jnp.asarray(noise, dtype=jnp.float32)
    np.testing.assert_allclose(
        rolling_mean_var(x32, 50).var, rolling_mean_var(np.asarray(x32).astype(np.float64), 50).var, rtol=1e-14
    )


def test_white_noise_mean_drift_is_calibrated():
    """mean_drift / sqrt(12 (W-1) / (window W (W+1))) ~ N(0, 1) under iid noise (ddof=0 window
    variance makes the spread ~1% larger). 2,000 series: the mean within 4/sqrt(2000) of 0, the
    standard deviation within 0.07 of 1, and the KS distance to N(0,1) small."""
    rng = np.random.default_rng(12)
    window, n_windows = 50, 20
    d = measure_drift(3.0 * rng.standard_normal((2000, window * n_windows)), window)
    se = np.sqrt(12 * (n_windows - 1) / (window * n_windows * (n_windows + 1)))
    z = d.mean_drift / se
    assert abs(z.mean()) < 4 / np.sqrt(2000)
    assert abs(z.std() - 1) < 0.07
    assert scipy.stats.kstest(z, "norm").statistic < 0.05
    # The variance does not drift either: var_drift centred on 0 with spread ~ sqrt(2) * se
    # (var of a normal sample variance is 2 sigma^4 / window).
    assert abs(d.var_drift.mean()) < 4 * np.sqrt(2) * se / np.sqrt(2000)
    assert abs(d.var_drift.std() / (np.sqrt(2) * se) - 1) < 0.1


def test_trend_random_walk_and_growing_variance():
    rng = np.random.default_rng(13)
    t = np.arange(2000)
    sigma, a = 2.0, 0.004
    d = measure_drift(a * t + sigma * rng.standard_normal((200, 2000)), 100)
    # Fitted change a * (starts[-1] - starts[0]) / sigma = 0.004 * 1900 / 2 = 3.8.
    assert abs(d.mean_drift.mean() - a * 1900 / sigma) < 0.05
    np.testing.assert_allclose(d.mean_slope.mean(), a, rtol=0.02)
    assert abs(d.var_drift.mean()) < 0.05
    # Variance 1 + t / 1000: slope 1/1000, fitted change 1900/1000 over a mean variance of ~2.0.
    scale = np.sqrt(1 + 2 * t / 2000)
    d = measure_drift(scale * rng.standard_normal((200, 2000)), 100)
    assert abs(d.var_drift.mean() - 0.95) < 0.05
    np.testing.assert_allclose(d.var_slope.mean(), 1 / 1000, rtol=0.05)
    # A random walk's mean wanders by ~sqrt(T) while windows hold ~sqrt(window): |drift| >> 1.
    d = measure_drift(np.cumsum(rng.standard_normal((200, 2000)), axis=-1), 100)
    assert np.median(np.abs(d.mean_drift)) > 3


def test_degenerate_series_and_errors():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 300))
    x[1] = 5.0
    x[2, 10] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = measure_drift(x, 30)
        r = rolling_mean_var(x, 30)
    assert np.isnan(d.mean_drift[1]) and np.isnan(d.var_drift[1])  # 0 / 0: no variance
    assert np.isnan(d.mean_drift[2]) and not np.isnan(d.mean_drift[[0, 3]]).any()
    assert np.isnan(r.mean[2, 0]) and not np.isnan(r.mean[2, 1:]).any()  # only its window
    for call, match in [
        (lambda: rolling_mean_var(x, 301), "longer than the series"),
        (lambda: rolling_mean_var(x, 0), ">= 1"),
        (lambda: rolling_mean_var(x, 10, 2.5), "integer"),
        (lambda: rolling_mean_var(x, 10, ddof=10), "ddof"),
        (lambda: measure_drift(x, 200), "at least two windows"),
        (lambda: rolling_mean_var(np.float64(1.0), 1), "time axis"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
