"""Batched ADF / KPSS against statsmodels per series, known answers, calibration and edge cases.

Reference implementation: statsmodels.tsa.stattools.adfuller / kpss (and adfvalues.mackinnonp /
mackinnoncrit), run series by series on the same data.
"""

import ctypes
import glob
import os
import warnings

import numpy as np
import pytest
import scipy.signal
from statsmodels.tools.sm_exceptions import InterpolationWarning
from statsmodels.tsa import adfvalues
from statsmodels.tsa.stattools import adfuller
from statsmodels.tsa.stattools import kpss as sm_kpss

from rvsp_jax.analysis.stationarity import (
    VERDICTS,
    AdfResult,
    KpssResult,
    _adf_columns,
    _adf_common_gram,
    _adf_design,
    _mackinnon_pvalue,
    _stationarity_codes,
    _stationarity_codes_of,
    adf,
    kpss,
    stationarity_verdict,
    stationarity_verdicts,
    verdict_fractions,
)

KINDS = ("white", "ar1", "walk", "trend")


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Runs this module with numpy's OpenBLAS on one thread, where the library allows it.

    The reference, statsmodels, fits thousands of small least-squares problems (np.linalg.pinv);
    with OpenBLAS threads on a 2-core machine shared with other processes they oversubscribe the
    cores and ran 5-30x slower here. Numerics are unaffected. A no-op if the call is not found.
    """
    pattern = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*.so*")
    libs = [ctypes.CDLL(path) for path in glob.glob(pattern)]
    libs = [lib for lib in libs if hasattr(lib, "scipy_openblas_set_num_threads64_")]
    if not libs:
        yield
        return
    before = [lib.scipy_openblas_get_num_threads64_() for lib in libs]
    for lib in libs:
        lib.scipy_openblas_set_num_threads64_(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            lib.scipy_openblas_set_num_threads64_(n)


def simulate(rng, kind, n, length):
    """[n, length] series of one kind with random scale and offset (kept moderate)."""
    e = rng.standard_normal((n, length))
    if kind == "white":
        x = e
    elif kind == "ar1":
        phi = rng.uniform(0.3, 0.99, size=n)
        x = np.stack([scipy.signal.lfilter([1.0], [1.0, -p], row) for p, row in zip(phi, e)])
    elif kind == "walk":
        x = np.cumsum(e, axis=-1)
    else:  # linear trend plus AR(1) noise
        slope = rng.uniform(-0.2, 0.2, size=(n, 1))
        noise = scipy.signal.lfilter([1.0], [1.0, -0.5], e, axis=-1)
        x = slope * np.arange(length) + noise
    scale = 10.0 ** rng.uniform(-2, 2, size=(n, 1))
    offset = rng.uniform(-50, 50, size=(n, 1))
    return x * scale + offset


def mixed_batches(seed, lengths, per_length):
    """Yields [per_length, T] batches mixing the four kinds, one batch per length."""
    rng = np.random.default_rng(seed)
    for length in lengths:
        kinds = [KINDS[i % len(KINDS)] for i in range(per_length)]
        rng.shuffle(kinds)
        rows = [simulate(rng, kind, 1, length)[0] for kind in kinds]
        yield np.stack(rows)


# 16 ADF configurations x (8 short/medium lengths x 8 series + 2 long series) = 1,056 series.
SHORT_LENGTHS = (50, 64, 97, 150, 240, 400, 650, 1000)
ADF_CASES = [(r, a) for r in ("c", "ct", "n", "ctt") for a in ("AIC", "BIC", "t-stat", None)]


@pytest.mark.parametrize("regression,autolag", ADF_CASES)
def test_adf_matches_statsmodels_per_series(regression, autolag):
    seed = 1000 + ADF_CASES.index((regression, autolag))
    # statsmodels is slow on long series: two configurations at T = 5000, the others 2000-3000
    long_length = (
        5000
        if (regression, autolag) in (("c", "AIC"), ("ct", "BIC"))
        else int(np.random.default_rng(seed).integers(2000, 3001))
    )
    batches = list(mixed_batches(seed, SHORT_LENGTHS, 8)) + list(mixed_batches(seed + 1, (long_length,), 2))
    for x in batches:
        res = adf(x, regression=regression, autolag=autolag)
        ref = [adfuller(r, regression=regression, autolag=autolag, result_object=True) for r in x]
        np.testing.assert_allclose(res.stat, [r.statistic for r in ref], rtol=1e-6)
        np.testing.assert_allclose(res.pvalue, [r.pvalue for r in ref], rtol=1e-6, atol=1e-300)
        np.testing.assert_array_equal(res.usedlag, [r.lags for r in ref])
        np.testing.assert_array_equal(res.nobs, [r.nobs for r in ref])
        for level in ("1%", "5%", "10%"):
            np.testing.assert_allclose(res.critical_values[level], [r.critical_values[level] for r in ref], rtol=1e-12)
        if autolag is None:
            assert np.isnan(res.icbest).all()
        else:
            np.testing.assert_allclose(res.icbest, [r.icbest for r in ref], rtol=1e-6)
        assert not res.constant.any()


def test_adf_explicit_maxlag_matches_statsmodels():
    rng = np.random.default_rng(7)
    x = np.concatenate([simulate(rng, kind, 5, 300) for kind in KINDS])
    for maxlag in (0, 1, 6, 40):
        res = adf(x, maxlag=maxlag)
        ref = [adfuller(row, maxlag=maxlag, result_object=True) for row in x]
        np.testing.assert_allclose(res.stat, [r.statistic for r in ref], rtol=1e-6)
        np.testing.assert_array_equal(res.usedlag, [r.lags for r in ref])
        assert res.maxlag == maxlag


def test_adf_short_series_at_the_lag_limit_match_statsmodels():
    # T small enough that maxlag is capped at T//2 - ntrend - 1. The one case without residual
    # degrees of freedom ("n", even T, lag maxlag: an exact fit, where statsmodels returns a
    # meaningless t of 0) gives NaN; "t-stat" then searches down to a lag with a fit, as it does.
    rng = np.random.default_rng(8)
    for regression, ntrend in (("n", 0), ("c", 1), ("ct", 2), ("ctt", 3)):
        for length in range(max(3, 2 * ntrend + 2), 22):
            x = np.cumsum(rng.standard_normal((3, length)), axis=-1)
            for autolag in ("AIC", "BIC", "t-stat", None):
                res = adf(x, regression=regression, autolag=autolag)
                exact_fit = regression == "n" and length % 2 == 0 and autolag != "t-stat"
                if exact_fit:
                    assert np.isnan(res.stat).all(), (length, autolag)
                    continue
                assert np.isfinite(res.stat).all(), (regression, length, autolag)
                ref = [adfuller(r, regression=regression, autolag=autolag, result_object=True) for r in x]
                np.testing.assert_allclose(res.stat, [r.statistic for r in ref], rtol=1e-6)
                np.testing.assert_array_equal(res.usedlag, [r.lags for r in ref])


def test_fft_gram_equals_the_design_gram():
    # The O(T log T) Gram matrix of the lag search against A @ A.T of the explicit design.
    rng = np.random.default_rng(9)
    for ntrend in range(4):
        for length, maxlag in ((12, 2), (300, 0), (300, 1), (513, 19), (2000, 26)):
            x = np.cumsum(rng.standard_normal((4, length)), axis=-1) * 3.0 + 5.0
            level, d = _adf_columns(x, ntrend)
            design = _adf_design(level, d, ntrend, maxlag, maxlag, length - 1)
            direct = design @ design.transpose(0, 2, 1)
            fast = _adf_common_gram(level, d, ntrend, maxlag)
            scale = np.sqrt(np.einsum("bii->bi", direct))
            err = np.abs(fast - direct) / (scale[:, :, None] * scale[:, None, :])
            assert err.max() < 1e-13, (ntrend, length, maxlag, err.max())


def test_mackinnon_pvalue_equals_statsmodels_everywhere():
    # Includes both sides of tau_star, beyond tau_min / tau_max, and NaN.
    stats = np.concatenate([np.linspace(-30.0, 4.0, 3401), [np.nan]])
    for regression in ("n", "c", "ct", "ctt"):
        ours = _mackinnon_pvalue(stats, regression)
        ref = [adfvalues.mackinnonp(s, regression=regression) for s in stats[:-1]]
        np.testing.assert_array_equal(ours[:-1], ref)
        assert np.isnan(ours[-1])


# 6 KPSS configurations x 12 lengths x 15 series = 1,080 series.
KPSS_LENGTHS = (50, 64, 80, 120, 200, 333, 500, 800, 1200, 2000, 3500, 5000)
KPSS_CASES = [(r, n) for r in ("c", "ct") for n in ("auto", "legacy", "int")]


@pytest.mark.parametrize("regression,nlags", KPSS_CASES)
def test_kpss_matches_statsmodels_per_series(regression, nlags):
    seed = 2000 + KPSS_CASES.index((regression, nlags))
    rng = np.random.default_rng(seed)
    n_clipped = 0
    for x in mixed_batches(seed, KPSS_LENGTHS, 15):
        lags = int(rng.integers(0, x.shape[-1] // 3)) if nlags == "int" else nlags
        res = kpss(x, regression=regression, nlags=lags)
        stat, pvalue, used, warned = [], [], [], []
        for row in x:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ref = sm_kpss(row, regression=regression, nlags=lags, result_object=True)
            stat.append(ref.statistic)
            pvalue.append(ref.pvalue)
            used.append(ref.lags)
            warned.append(any(issubclass(w.category, InterpolationWarning) for w in caught))
        np.testing.assert_array_equal(res.lags, used)
        np.testing.assert_allclose(res.stat, stat, rtol=1e-6)
        # the clipping decision is identical, and so are the clipped values
        np.testing.assert_array_equal(res.pvalue_clipped, warned)
        np.testing.assert_array_equal(res.pvalue[res.pvalue_clipped], np.array(pvalue)[warned])
        np.testing.assert_allclose(res.pvalue, pvalue, rtol=1e-9)
        assert res.critical_values == ref.critical_values
        n_clipped += int(np.sum(warned))
    assert n_clipped > 0  # the clipping branch was exercised


# ----------------------------------------------------------------------------------------------
# Known answers and calibration


def test_adf_rejects_stationary_ar1_and_keeps_random_walks():
    rng = np.random.default_rng(11)
    e = rng.standard_normal((400, 500))
    ar = scipy.signal.lfilter([1.0], [1.0, -0.5], e[:200], axis=-1)
    walk = np.cumsum(e[200:], axis=-1)
    assert np.all(adf(ar).pvalue < 0.01)  # ADF tau around -10 for phi = 0.5, T = 500
    kept = np.mean(adf(walk).pvalue >= 0.05)
    assert kept >= 0.90  # expected 0.95 under H0


def test_kpss_rejects_random_walks_and_keeps_white_noise():
    rng = np.random.default_rng(12)
    e = rng.standard_normal((400, 500))
    assert np.mean(kpss(np.cumsum(e[:200], axis=-1)).pvalue < 0.05) >= 0.85
    assert np.mean(kpss(e[200:]).pvalue >= 0.05) >= 0.90


def test_adf_size_on_random_walks_is_nominal():
    # 10,000 driftless random walks, T = 200: rejection rate at 5% (binomial sd 0.22%).
    walks = np.cumsum(np.random.default_rng(13).standard_normal((10_000, 200)), axis=-1)
    for regression, autolag in (("c", "AIC"), ("c", "BIC"), ("n", "AIC")):
        rate = np.mean(adf(walks, regression=regression, autolag=autolag).pvalue < 0.05)
        assert 0.035 <= rate <= 0.065, (regression, autolag, rate)


def test_kpss_size_on_white_noise_is_nominal():
    noise = np.random.default_rng(14).standard_normal((10_000, 200))
    for regression in ("c", "ct"):
        rate = np.mean(kpss(noise, regression=regression).pvalue < 0.05)
        assert 0.035 <= rate <= 0.065, (regression, rate)


def test_verdict_on_known_processes():
    rng = np.random.default_rng(15)
    e = rng.standard_normal((200, 500))
    x = np.concatenate([scipy.signal.lfilter([1.0], [1.0, -0.5], e[:100], axis=-1), np.cumsum(e[100:], axis=-1)])
    verdict = stationarity_verdict(adf(x), kpss(x))
    assert np.mean(verdict[:100] == "stationary") >= 0.85
    assert np.mean(verdict[100:] == "unit-root") >= 0.75


def _fake_results(p_adf, p_kpss, clipped=None, regression="c"):
    p_adf, p_kpss = np.asarray(p_adf, float), np.asarray(p_kpss, float)
    clipped = np.isin(p_kpss, (0.01, 0.1)) if clipped is None else np.asarray(clipped)
    nan = np.full_like(p_adf, np.nan)
    a = AdfResult(nan, p_adf, nan, nan, {}, nan, np.zeros(p_adf.shape, bool), 0, regression)
    k = KpssResult(nan, p_kpss, nan, clipped, {}, np.zeros(p_kpss.shape, bool), regression)
    return a, k


def test_verdict_logic_and_codes():
    a, k = _fake_results([0.01, 0.50, 0.01, 0.50, np.nan, 0.01, 0.20], [0.10, 0.01, 0.01, 0.30, 0.10, 0.04, 0.049])
    verdict = stationarity_verdict(a, k, alpha=0.05)
    names = verdict.tolist()
    assert names == ["stationary", "unit-root", "inconclusive", "inconclusive", "invalid", "inconclusive", "unit-root"]
    assert verdict.dtype.kind == "U" and set(names) <= set(VERDICTS)
    # the private compact codes behind it: int8, code i is VERDICTS[i]
    code = _stationarity_codes(a, k, alpha=0.05)
    assert code.dtype == np.int8 and [VERDICTS[c] for c in code] == names
    # KPSS clipped at 0.01 means p < 0.01: it rejects even at alpha = 0.01
    a, k = _fake_results([0.5], [0.01])
    assert stationarity_verdict(a, k, alpha=0.01)[0] == "unit-root"


def test_verdict_with_fdr_adjustment_is_stricter():
    p_adf = np.full(100, 0.04)  # raw: all reject at 5%; BH over 100 equal p: all adjusted 0.04
    p_adf[:50] = 0.9  # BH adjusted 0.04 -> 0.08 for the other half: no rejection left
    a, k = _fake_results(p_adf, np.full(100, 0.5))
    raw = stationarity_verdict(a, k)
    adjusted = stationarity_verdict(a, k, adjust="fdr_bh")
    assert np.all(raw[50:] == "stationary")
    assert np.all(adjusted == "inconclusive")


def test_verdict_rejects_mismatched_inputs():
    a, k = _fake_results([0.5], [0.5], regression="c")
    _, k_ct = _fake_results([0.5], [0.5], regression="ct")
    with pytest.raises(ValueError, match="different null hypotheses"):
        stationarity_verdict(a, k_ct)
    a2, _ = _fake_results([0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="same series"):
        stationarity_verdict(a2, k)


# ----------------------------------------------------------------------------------------------
# Edge cases, shapes, dtypes


def test_constant_and_nonfinite_series_give_nan_only_there_without_warnings():
    rng = np.random.default_rng(16)
    x = np.cumsum(rng.standard_normal((5, 300)), axis=-1)
    clean_adf, clean_kpss = adf(x), kpss(x)
    x[1] = 3.25  # constant
    x[3, 17] = np.nan
    x[4, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, k = adf(x), kpss(x)
        verdict = stationarity_verdict(a, k)
    for res in (a, k):
        assert np.isnan(res.stat[[1, 3, 4]]).all() and np.isnan(res.pvalue[[1, 3, 4]]).all()
        np.testing.assert_array_equal(res.constant, [False, True, False, False, False])
    # the other series are untouched (to rounding: BLAS may sum a smaller batch differently)
    np.testing.assert_allclose(a.stat[[0, 2]], clean_adf.stat[[0, 2]], rtol=1e-12)
    np.testing.assert_allclose(k.stat[[0, 2]], clean_kpss.stat[[0, 2]], rtol=1e-12)
    np.testing.assert_array_equal(a.usedlag[[1, 3, 4]], -1)
    np.testing.assert_array_equal(a.nobs[[1, 3, 4]], -1)
    np.testing.assert_array_equal(k.lags[[1, 3, 4]], -1)
    assert np.isnan(a.critical_values["5%"][1])
    assert not k.pvalue_clipped[[1, 3, 4]].any()
    np.testing.assert_array_equal(verdict[[1, 3, 4]], "invalid")
    with pytest.raises(ValueError, match="constant"):
        adfuller(x[1], result_object=True)  # what statsmodels does instead


def test_singular_regression_gives_nan_not_garbage():
    t = np.arange(400.0)
    x = np.stack([np.sin(0.1 * t), 0.5 * t, np.random.default_rng(17).standard_normal(400)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = adf(x)
    assert np.isnan(res.stat[:2]).all() and not res.constant[:2].any()
    assert np.isfinite(res.stat[2])


def test_too_short_or_too_many_lags_raise_clear_errors():
    x = np.random.default_rng(18).standard_normal((3, 40))
    with pytest.raises(ValueError, match=r"maxlag=25 .*T=40"):
        adf(x, maxlag=25)
    with pytest.raises(ValueError, match=r"T=3 .*too short"):
        adf(x[:, :3], regression="ct")
    with pytest.raises(ValueError, match=r"nlags=40 .*T=40"):
        kpss(x, nlags=40)
    with pytest.raises(ValueError, match="regression"):
        adf(x, regression="t")
    with pytest.raises(ValueError, match="autolag"):
        adf(x, autolag="hqic")
    with pytest.raises(ValueError, match="nlags"):
        kpss(x, nlags=None)
    with pytest.raises(ValueError, match="time axis"):
        adf(np.float64(1.0))


def test_leading_axes_dtypes_and_jax_input():
    import jax.numpy as jnp

    rng = np.random.default_rng(19)
    x = np.cumsum(rng.standard_normal((2, 3, 250)), axis=-1).astype(np.float32)
    flat_a, flat_k = adf(x.reshape(6, 250)), kpss(x.reshape(6, 250))
    a, k = adf(jnp.asarray(x)), kpss(x)
    assert a.stat.shape == a.pvalue.shape == a.usedlag.shape == (2, 3)
    assert a.critical_values["1%"].shape == (2, 3) and k.lags.shape == (2, 3)
    np.testing.assert_allclose(a.stat.ravel(), flat_a.stat, rtol=1e-12)
    np.testing.assert_allclose(k.stat.ravel(), flat_k.stat, rtol=1e-12)
    assert a.stat.dtype == np.float64
    # float32 input is tested in float64, as statsmodels does with the same values
    ref = adfuller(x[1, 2].astype(np.float64), result_object=True)
    np.testing.assert_allclose(a.stat[1, 2], ref.statistic, rtol=1e-6)
    one = adf(x[0, 0])
    assert one.stat.shape == () and int(one.usedlag) == flat_a.usedlag[0]


def test_stationarity_verdicts_and_fractions_on_known_processes():
    """White noise is called stationary and random walks unit-root, raw and BH-adjusted; the
    fractions count each verdict (statsmodels-equal ADF/KPSS are tested above)."""
    from rvsp_jax.analysis import STATIONARITY_VERDICTS, stationarity_verdicts, verdict_fractions

    rng = np.random.default_rng(11)
    noise = rng.normal(size=(50, 400))
    walks = np.cumsum(rng.normal(size=(50, 400)), axis=-1)
    raw, bh = stationarity_verdicts(np.concatenate([noise, walks]))
    assert raw.shape == bh.shape == (100,)
    f_noise, f_walk = verdict_fractions(bh[:50]), verdict_fractions(bh[50:])
    assert f_noise["n"] == 50 and f_noise["stationary"] >= 0.9
    assert f_walk["unit-root"] >= 0.7
    assert abs(sum(f_noise[v] for v in STATIONARITY_VERDICTS) - 1) < 1e-12


def test_verdicts_are_names_and_the_private_codes_count_the_same():
    """The public verdicts are str arrays of VERDICTS names; the private int8 codes index VERDICTS;
    verdict_fractions gives bit-identical fractions from either and rejects unknown names."""
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.normal(size=(20, 300)), np.cumsum(rng.normal(size=(20, 300)), axis=-1)])
    x[3] = 1.0  # constant: invalid
    raw, bh = stationarity_verdicts(x)
    code_raw, code_bh = _stationarity_codes_of(x)
    assert raw.dtype.kind == "U" and code_raw.dtype == np.int8 and raw[3] == "invalid"
    for names, codes in ((raw, code_raw), (bh, code_bh)):
        np.testing.assert_array_equal(names, np.asarray(VERDICTS)[codes])
        assert verdict_fractions(names) == verdict_fractions(codes)
    with pytest.raises(ValueError, match="outside"):
        verdict_fractions(np.array(["stationary", "white"]))
