"""The analysis axis convention: ``axis=`` (time, samples or frequency) on every estimator and
``member_axis=`` on the ensemble ones.

For each estimator, an array with time on another axis gives exactly (bit for bit) the result of
``np.moveaxis`` to the default layout plus the default call, with the outputs moved back as the
convention says: a reduced time axis disappears, a new axis (lags, frequencies, windows) takes
time's place, the member axis of per-member results stays where it was. And ``adf(x, axis=1)`` on
a stored-layout ``[S, T, P]`` array equals statsmodels' ``adfuller`` series by series.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from statsmodels.tsa.stattools import adfuller

from rvsp_jax import analysis as A

# ----------------------------------------------------------------------------------------------
# helpers


def _fields(res):
    if isinstance(res, dict):
        return res
    if isinstance(res, tuple) and hasattr(res, "_fields"):
        return dict(res._asdict())
    if dataclasses.is_dataclass(res):
        return {f.name: getattr(res, f.name) for f in dataclasses.fields(res)}
    if isinstance(res, tuple):
        return dict(enumerate(res))
    return {"value": res}


def assert_identical(got, want):
    """Exact equality of results (arrays, NamedTuples, dataclasses, dicts, tuples, scalars)."""
    g, w = _fields(got), _fields(want)
    assert g.keys() == w.keys()
    for k in g:
        a, b = g[k], w[k]
        if isinstance(a, dict):
            assert_identical(a, b)
            continue
        if a is None or isinstance(a, (str, int, float, bool, tuple)) and not hasattr(a, "shape"):
            assert a == b or (a != a and b != b), k
            continue
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, (k, a.shape, b.shape)
        assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
        if a.dtype == object or a.dtype.kind in "US":
            assert (a == b).all(), k
        else:
            assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), k


def _series_expected(res, x_ndim: int, axis: int, skip=()):
    """The default-layout result moved to the caller's layout: every array field with as many axes
    as x had gets its last (new) axis moved to ``axis``; reduced fields stay."""

    def move(a):
        if isinstance(a, dict):
            return {k: move(v) for k, v in a.items()}
        if hasattr(a, "ndim") and a.ndim == x_ndim and x_ndim > 1:
            return np.moveaxis(np.asarray(a), -1, axis) if isinstance(a, np.ndarray) else jnp.moveaxis(a, -1, axis)
        return a

    if isinstance(res, tuple) and hasattr(res, "_fields"):
        return type(res)(**{k: (v if k in skip else move(v)) for k, v in res._asdict().items()})
    if dataclasses.is_dataclass(res):
        return dataclasses.replace(
            res, **{f.name: move(getattr(res, f.name)) for f in dataclasses.fields(res) if f.name not in skip}
        )
    if isinstance(res, tuple):
        return tuple(move(v) for v in res)
    return move(res)


def _data(shape, seed=0, walk=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if walk:
        x = np.cumsum(x, axis=-1)
    return x


# Series with time on `axis`: (shape with time already in place, axis).
SERIES_LAYOUTS = [((5, 64, 3), 1), ((64, 4), 0), ((2, 3, 64, 2), 2), ((2, 64, 3, 2), -3), ((64,), 0)]

SERIES_ESTIMATORS = {
    "acf": lambda x, **k: A.acf(x, 6, **k),
    "acf_adjusted": lambda x, **k: A.acf(x, None, adjusted=True, **k),
    "pacf_yw": lambda x, **k: A.pacf(x, 5, **k),
    "pacf_ols": lambda x, **k: A.pacf(x, 5, method="ols", **k),
    "pacf_burg": lambda x, **k: A.pacf(x, 4, method="burg", **k),
    "ljung_box": lambda x, **k: A.ljung_box(x, 5, boxpierce=True, **k),
    "periodogram": lambda x, **k: A.periodogram(x, **k),
    "welch": lambda x, **k: A.welch(x, nperseg=16, **k),
    "welch_linear": lambda x, **k: A.welch(x, nperseg=20, noverlap=5, detrend="linear", **k),
    "is_constant": lambda x, **k: A.is_constant(x, **k),
    "adf": lambda x, **k: A.adf(x, **k),
    "adf_ct_bic": lambda x, **k: A.adf(x, regression="ct", autolag="BIC", **k),
    "kpss": lambda x, **k: A.kpss(x, **k),
    "kpss_ct": lambda x, **k: A.kpss(x, regression="ct", nlags="legacy", **k),
    "stationarity_verdicts": lambda x, **k: A.stationarity_verdicts(x, **k),
    "rolling_mean_var": lambda x, **k: A.rolling_mean_var(x, 8, 4, **k),
    "measure_drift": lambda x, **k: A.measure_drift(x, 16, **k),
    "tail_verdict": lambda x, **k: A.tail_verdict(x, **k),
}


# fields with an extra axis that does not replace time (it stays last): tail_verdict's two Hill
# thresholds
EXTRA_LAST = {"tail_verdict": ("hill", "hill_lo", "hill_hi")}


@pytest.mark.parametrize("name", sorted(SERIES_ESTIMATORS))
@pytest.mark.parametrize("shape,axis", SERIES_LAYOUTS)
def test_series_estimator_axis_equals_moveaxis(name, shape, axis):
    fn = SERIES_ESTIMATORS[name]
    x = _data(shape, seed=len(shape) + axis % len(shape), walk=False)
    if x.ndim > 1:
        x[(0,) * (x.ndim - 1)] = 1.5  # one constant series somewhere (moved with the data)
    default = fn(np.moveaxis(x, axis, -1))
    got = fn(x, axis=axis)
    assert_identical(got, _series_expected(default, x.ndim, axis, skip=EXTRA_LAST.get(name, ())))


@pytest.mark.parametrize("name", ["hill", "simsekli_alpha"])
@pytest.mark.parametrize("shape,axis", [((3, 256, 2), 1), ((256, 5), 0), ((256,), -1)])
def test_tail_estimators_axis(name, shape, axis):
    fn = getattr(A, name)
    x = np.random.default_rng(3).standard_t(3, size=shape)
    want = np.asarray(fn(jnp.asarray(np.moveaxis(x, axis, -1))))
    for arg in (x, jnp.asarray(x)):
        got = fn(arg, axis=axis)
        np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("shape,axis", [((4, 33, 2), 1), ((33, 3), 0)])
def test_spectrum_summaries_take_the_frequency_axis(shape, axis):
    rng = np.random.default_rng(5)
    p = rng.exponential(size=shape) + 0.1
    f = np.linspace(0.0, 0.5, shape[axis])
    last = np.moveaxis(p, axis, -1)
    assert_identical(A.spectral_slope(f, p, axis=axis), A.spectral_slope(f, last))
    assert_identical(A.spectral_slope(f, p, (0.05, 0.4), axis=axis), A.spectral_slope(f, last, (0.05, 0.4)))
    assert_identical(A.band_power_ratio(f, p, axis=axis), A.band_power_ratio(f, last))
    assert_identical(A.spectral_flatness(p, axis=axis), A.spectral_flatness(last))
    assert_identical(A.spectral_shape(f, p, axis=axis), A.spectral_shape(f, last))
    got = A.predicted_update_psd(f, p, 0.9, 0.1, axis=axis)
    want = np.moveaxis(np.asarray(A.predicted_update_psd(f, last, 0.9, 0.1)), -1, axis)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_gradient_noise_scale_examples_axis():
    g = np.random.default_rng(4).standard_normal((16, 3, 7)) + 0.3  # [n, S, P]
    want = A.gradient_noise_scale(np.moveaxis(g, 0, -2))
    got = A.gradient_noise_scale(g, axis=0)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="parameter axis"):
        A.gradient_noise_scale(g, axis=2)


def test_acf_confint_keeps_the_lag_axis():
    x = _data((30, 100, 2), seed=9)
    r = A.acf(x, 8, axis=1)  # [30, 9, 2]
    assert r.shape == (30, 9, 2)
    got = A.acf_confint(r, 100, axis=1)
    want = np.moveaxis(A.acf_confint(np.moveaxis(r, 1, -1), 100), -2, 1)
    assert got.shape == (30, 9, 2, 2)
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# ensembles

# (shape, member_axis, axis)
ENSEMBLE_LAYOUTS = [((3, 96, 6), 2, 1), ((96, 5), 1, 0), ((6, 2, 96, 3), 0, 2), ((2, 96, 6), -1, -2)]


def _ensemble_data(shape, member_axis, axis, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x = np.cumsum(x * 0.3, axis=axis) * 0.1 + x  # some memory along time
    idx = [0] * x.ndim
    idx[member_axis] = 1
    idx[axis] = 7
    x[tuple(idx)] = np.nan  # a diverged member of the first observable
    return x


def _norm(ax, ndim):
    return ax % ndim


PER_MEMBER = {  # [S, ..., K]: members stay, K replaces time
    "time_averages": lambda x, **k: A.time_averages(x, 7, **k),
    "running_average": lambda x, **k: A.running_average(x, **k),
    "tamsd": lambda x, **k: A.tamsd(x, [1, 3, 10], **k),
}
ENSEMBLE_KEEP = {  # [..., K]: members gone, K replaces time
    "ensemble_mean": lambda x, **k: A.ensemble_mean(x, **k),
    "ensemble_variance": lambda x, **k: A.ensemble_variance(x, **k),
    "ergodicity_breaking": lambda x, **k: A.ergodicity_breaking(x, [1, 4], **k),
}
ENSEMBLE_REDUCE = {  # [...]: members and time gone (fields named in `moved` keep a K axis)
    "integrated_autocorr_time": lambda x, **k: A.integrated_autocorr_time(x, **k),
    "distribution_check": lambda x, **k: A.distribution_check(x, **k),
    "long_run_variance": lambda x, **k: A.long_run_variance(x, **k),
    "assess_many": lambda x, **k: A.assess_many(x, n_boot=20, **k),
    "variance_scaling": lambda x, **k: A.variance_scaling(x, n_boot=20, **k),
    "fluctuation_metric": lambda x, **k: A.fluctuation_metric(x, **k),
}
MOVED_FIELDS = {"variance_scaling": ("variance",), "fluctuation_metric": ("omega",)}


@pytest.mark.parametrize("shape,member_axis,axis", ENSEMBLE_LAYOUTS)
def test_ensemble_estimators_member_axis_and_axis(shape, member_axis, axis):
    x = _ensemble_data(shape, member_axis, axis)
    ma, ta = _norm(member_axis, x.ndim), _norm(axis, x.ndim)
    x0 = np.moveaxis(x, (ma, ta), (0, -1))
    kw = dict(member_axis=member_axis, axis=axis)
    for fn in PER_MEMBER.values():
        want = np.moveaxis(fn(x0), (0, -1), (ma, ta))
        assert_identical(fn(x, **kw), want)
    k_pos = ta - (ta > ma)  # where time was once the member axis is gone
    for fn in ENSEMBLE_KEEP.values():
        assert_identical(fn(x, **kw), np.moveaxis(fn(x0), -1, k_pos))
    for name, fn in ENSEMBLE_REDUCE.items():
        want = fn(x0)
        moved = {f: np.moveaxis(getattr(want, f), -1, k_pos) for f in MOVED_FIELDS.get(name, ())}
        if moved:
            want = dataclasses.replace(want, **moved)
        assert_identical(fn(x, **kw), want)
    want = np.moveaxis(A.finite_members(x0), 0, ma - (ma > ta))
    assert_identical(A.finite_members(x, **kw), want)


def test_assess_on_a_time_first_observable():
    x = _ensemble_data((80, 6), 1, 0)[:, :]
    x = np.nan_to_num(x)
    assert_identical(A.assess(x, member_axis=1, axis=0, n_boot=20), A.assess(x.T, n_boot=20))


@pytest.mark.parametrize("shape,member_axis", [((3, 10, 2), 1), ((4, 7), -1)])
def test_across_members_member_axis(shape, member_axis):
    x = np.random.default_rng(2).standard_normal(shape)
    x[0, 0] = np.inf
    want = A.across_members(np.moveaxis(x, member_axis, 0))
    assert_identical(A.across_members(x, member_axis=member_axis), want)


def test_axis_errors():
    x = np.zeros((4, 50, 2))
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        A.acf(x, 3, axis=3)
    with pytest.raises(ValueError, match="name the same axis"):
        A.ensemble_mean(x, member_axis=1, axis=1)
    with pytest.raises(ValueError, match="integer"):
        A.adf(x, axis=1.0)


# ----------------------------------------------------------------------------------------------
# the store's [S, T, P] layout


class _StoredLike:
    """An array-like that only converts (as the store's StoredArray does through __array__)."""

    def __init__(self, a):
        self._a = a
        self.shape, self.ndim, self.dtype = a.shape, a.ndim, a.dtype

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


def _stored_updates(S=3, T=150, P=4, seed=11):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((S, T, P))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    phi = np.resize([0.0, 0.5, 0.9, 1.0], P)  # white, AR(1), near unit root, random walk
    for t in range(1, T):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_adf_axis1_on_store_layout_equals_statsmodels():
    x = _stored_updates()
    res = A.adf(_StoredLike(x), axis=1)
    assert res.stat.shape == (3, 4)
    assert_identical(res, A.adf(np.moveaxis(x, 1, -1)))
    for s, p in [(0, 0), (1, 1), (2, 2), (0, 3), (2, 3)]:
        ref = adfuller(x[s, :, p], autolag="AIC", result_object=True)
        np.testing.assert_allclose(res.stat[s, p], ref.statistic, rtol=1e-6)
        np.testing.assert_allclose(res.pvalue[s, p], ref.pvalue, rtol=1e-6, atol=1e-300)
        assert res.usedlag[s, p] == ref.lags and res.nobs[s, p] == ref.nobs
        for level in ("1%", "5%", "10%"):
            np.testing.assert_allclose(res.critical_values[level][s, p], ref.critical_values[level], rtol=1e-12)
        np.testing.assert_allclose(res.icbest[s, p], ref.icbest, rtol=1e-6)


def test_readme_acf_treats_axis1_as_time():
    updates = _StoredLike(_stored_updates(S=4, T=300, P=12))
    r = A.acf(np.asarray(updates)[:, 100:, :10], 20, axis=1)
    assert r.shape == (4, 21, 10)
    np.testing.assert_array_equal(r[:, 0], 1.0)
    want = A.acf(np.moveaxis(np.asarray(updates)[:, 100:, :10], 1, -1), 20)
    np.testing.assert_array_equal(r, np.moveaxis(want, -1, 1))
    assert_identical(
        A.assess_many(updates, axis=1, n_boot=20), A.assess_many(np.moveaxis(np.asarray(updates), 1, -1), n_boot=20)
    )


def test_estimators_read_a_stored_run_with_time_on_axis_1(small_run):
    stored = small_run["updates"]  # StoredArray [S, T, P]
    x = np.asarray(stored)
    assert x.ndim == 3 and x.shape[1] >= 20
    assert_identical(A.adf(stored, axis=1), A.adf(np.moveaxis(x, 1, -1)))
    assert_identical(A.kpss(stored, axis=1), A.kpss(np.moveaxis(x, 1, -1)))
    r = A.acf(stored[:, 5:, :10], 4, axis=1)
    assert r.shape == (x.shape[0], 5, min(10, x.shape[2]))
    np.testing.assert_array_equal(r, np.moveaxis(A.acf(np.moveaxis(x[:, 5:, :10], 1, -1), 4), -1, 1))
    assert_identical(A.ensemble_mean(stored, axis=1), np.moveaxis(A.ensemble_mean(np.moveaxis(x, 1, -1)), -1, 0))
