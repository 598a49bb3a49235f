"""Batched unit-root and stationarity tests: augmented Dickey-Fuller, KPSS, and their joint verdict.

Every test takes ``x: [..., T]`` (any leading axes, e.g. ``[S, T]`` or ``[S, P, T]``; numpy or JAX
input of any float dtype), treats the last axis as time (``axis=`` names another) and returns a
frozen result of numpy arrays with the leading axes kept. The numerics run on the host in float64
and match, per series:

- :func:`adf`: ``statsmodels.tsa.stattools.adfuller`` (statistic, MacKinnon (1994) p-value, the lag
  that autolag picks, nobs, MacKinnon (2010) critical values, icbest).
- :func:`kpss`: ``statsmodels.tsa.stattools.kpss`` (statistic, the Hobijn et al. lag, the p-value
  interpolated in and clipped to Kwiatkowski et al. (1992) Table 1).

How the ADF autolag search is batched. statsmodels fits OLS for every lag 0..maxlag on one common
sample (rows s = maxlag .. T-2 of the differenced series d_s = x_{s+1} - x_s) with the columns
``[trend terms, x_s, d_{s-1}, ..., d_{s-maxlag}]`` and keeps the lag of the smallest AIC/BIC (or the
last significant lag, "t-stat"). Those regressors are nested prefixes of one design, so one Cholesky
factor of the Gram matrix of ``[design, d_s]`` gives the residual sum of squares of every prefix
(the target's squared projections summed from the right) and the t-value of every prefix's last
coefficient, hence every criterion, at once. The re-fit at the chosen lag p uses statsmodels' own,
longer sample (rows s = p .. T-2): its Gram matrix is the common one plus the outer products of the
extra rows, with the unused lag columns masked out, so all series are re-fitted together whatever
lag each chose. The common Gram matrix is built without forming the design: every product with a
lagged difference is a cross-correlation with d (FFTs), and the block of products of two lagged
differences is Toeplitz up to O(maxlag^2) edge terms, so a series costs O(T log T + maxlag^2)
rather than O(T maxlag^2) (about 400x statsmodels at T = 2000; docs/benchmarks.md).

Precision. The level column is detrended and the differences demeaned before forming the Gram
matrices (this changes no t-value or residual: the deterministic terms span the change), which
keeps them well conditioned; regressions whose design is numerically singular (a column explained
by the earlier ones to within 1e-10 of its norm squared, e.g. a noise-free sinusoid or a series
that is constant over the regression sample) give NaN rather than statsmodels' pseudo-inverse
numbers. Agreement with statsmodels is ~1e-10 relative on ordinary series (tests assert 1e-6).

Degenerate series never raise and never warn. A constant series (which statsmodels rejects) gives
NaN statistics and ``constant=True``; a series containing NaN or inf gives NaN in its own outputs
(and lag -1) only. Arguments that no series of this length can satisfy (``maxlag`` too large for T,
``nlags >= T``) raise ``ValueError`` naming the length and the lag.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import scipy.fft
import scipy.stats
from statsmodels.tsa import adfvalues

from rvsp_jax.analysis._common import WORKERS as _WORKERS
from rvsp_jax.analysis._common import (
    as_int,
    as_real,
    block_slices,
    fft_autocov,
    time_last,
    verdict_codes,
    verdict_names,
)
from rvsp_jax.analysis.multiple_testing import fdr_bh
from rvsp_jax.analysis.result import Result

__all__ = [
    "VERDICTS",
    "AdfResult",
    "KpssResult",
    "adf",
    "kpss",
    "stationarity_verdict",
    "stationarity_verdicts",
    "verdict_fractions",
]

_ADF_REGRESSIONS = {"n": 0, "c": 1, "ct": 2, "ctt": 3}  # regression -> number of trend terms
_AUTOLAGS = {"aic": "aic", "bic": "bic", "t-stat": "t-stat"}
# statsmodels _autolag: stop at the first lag (from the top) with |t| >= norm.ppf(0.95).
_TSTAT_STOP = 1.6448536269514722
# A regressor explained by the earlier columns up to this fraction of its norm^2 counts as singular.
_PIVOT_RTOL = 1e-10
# Target size (bytes) of the per-block temporaries (blocks that fit in cache run fastest).
_BLOCK_BYTES = 1 << 24

# Kwiatkowski et al. (1992), Table 1: upper-tail critical values at 10%, 5%, 2.5%, 1%, exactly as
# statsmodels.tsa.stattools.kpss interpolates them (the test checks its returned crit dict).
_KPSS_PVALS = (0.10, 0.05, 0.025, 0.01)
_KPSS_CRIT = {"c": (0.347, 0.463, 0.574, 0.739), "ct": (0.119, 0.146, 0.176, 0.216)}
_KPSS_LEVELS = ("10%", "5%", "2.5%", "1%")

VERDICTS = ("stationary", "unit-root", "inconclusive", "invalid")
"""The verdicts of :func:`stationarity_verdict` (str names; the private int8 code i of
:func:`_stationarity_codes` is ``VERDICTS[i]``)."""


@dataclasses.dataclass(frozen=True, eq=False)
class AdfResult(Result):
    """Augmented Dickey-Fuller test of every series (H0: unit root). Arrays have shape [...].

    stat: float64, the t-value of the lagged level (NaN for a degenerate series).
    pvalue: float64, MacKinnon (1994) approximate p-value (as ``adfvalues.mackinnonp``).
    usedlag: int64, lags of the difference in the final regression (-1 for a degenerate series).
    nobs: int64, observations of the final regression, T - 1 - usedlag (-1 if degenerate).
    critical_values: {"1%", "5%", "10%"} -> float64 arrays, MacKinnon (2010) at ``nobs``.
    icbest: float64, the best AIC/BIC (or |t| for "t-stat") of the lag search; NaN if autolag=None.
    constant: bool, True where the series is constant (no test possible; statsmodels raises).
    maxlag: the largest lag considered (the same for every series of this length).
    regression: the deterministic terms, "n" | "c" | "ct" | "ctt".
    """

    stat: np.ndarray
    pvalue: np.ndarray
    usedlag: np.ndarray
    nobs: np.ndarray
    critical_values: dict[str, np.ndarray]
    icbest: np.ndarray
    constant: np.ndarray
    maxlag: int
    regression: str


@dataclasses.dataclass(frozen=True, eq=False)
class KpssResult(Result):
    """KPSS test of every series (H0: level- or trend-stationary). Arrays have shape [...].

    stat: float64, the KPSS statistic eta / s^2 (NaN for a degenerate series).
    pvalue: float64, interpolated in Kwiatkowski et al. (1992) Table 1 and clipped to
        [0.01, 0.10] as statsmodels does (statsmodels warns when it clips; see ``pvalue_clipped``).
    lags: int64, the Newey-West truncation lag used (-1 for a degenerate series).
    pvalue_clipped: bool, True where the statistic lies outside the table, i.e. the true p-value
        is below 0.01 (pvalue == 0.01) or above 0.10 (pvalue == 0.10).
    critical_values: {"10%", "5%", "2.5%", "1%"} -> float (the table does not depend on the series).
    constant: bool, True where the series is constant (no test possible).
    regression: "c" (level stationarity) | "ct" (trend stationarity).
    """

    stat: np.ndarray
    pvalue: np.ndarray
    lags: np.ndarray
    pvalue_clipped: np.ndarray
    critical_values: dict[str, float]
    constant: np.ndarray
    regression: str


# ----------------------------------------------------------------------------------------------
# Input handling


def _as_batch(x, min_length: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """x: [..., T] -> (float64 [N, T], leading shape); raises ValueError on unusable input."""
    arr = as_real(x, what="a time axis (its last axis)")
    if arr.shape[-1] < min_length:
        raise ValueError(
            f"x has T={arr.shape[-1]} time steps along its last axis; at least {min_length} are "
            "needed. Time must be the last axis (np.moveaxis it there if it is not)."
        )
    lead = arr.shape[:-1]
    return arr.astype(np.float64, copy=False).reshape(-1, arr.shape[-1]), lead


def _degenerate_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x: [N, T] -> (nonfinite [N], constant [N]) masks; constant means max == min (finite)."""
    nonfinite = ~np.isfinite(x).all(axis=-1)
    constant = ~nonfinite & (x.max(axis=-1) == x.min(axis=-1))
    return nonfinite, constant


def _blocks(n: int, row_bytes: int):
    """Yields slices of at most ~_BLOCK_BYTES / row_bytes rows covering range(n)."""
    yield from block_slices(n, _BLOCK_BYTES // max(1, row_bytes))


# ----------------------------------------------------------------------------------------------
# Linear algebra shared by the ADF regressions


def _cholesky(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gram: [B, M, M] symmetric -> (lower factor [B, M, M], regular columns [B, M]) in float64.

    Column Cholesky vectorised over the batch. A pivot at or below ``_PIVOT_RTOL`` times its
    diagonal entry (the column is that close to the span of the earlier ones) marks the column
    singular instead of raising as ``np.linalg.cholesky`` does; the factor's later columns are
    then meaningless. A non-positive pivot gives a zero-length column (for a target column: an
    exact fit, residual sum of squares 0).
    """
    batch, m, _ = gram.shape
    low = np.zeros_like(gram)
    regular = np.empty((batch, m), dtype=bool)
    for j in range(m):
        col = gram[:, j:, j] - np.matmul(low[:, j:, :j], low[:, j, :j, None])[..., 0]
        pivot = col[:, 0]
        regular[:, j] = pivot > _PIVOT_RTOL * gram[:, j, j]
        low[:, j:, j] = np.where(pivot[:, None] > 0, col / np.sqrt(np.abs(pivot))[:, None], 0.0)
    return low, regular


def _orthonormal_trend(length: int, nterms: int) -> np.ndarray:
    """[length, nterms]: orthonormal basis of the polynomials of degree < nterms on 0..length-1."""
    u = np.linspace(-1.0, 1.0, length) if length > 1 else np.zeros(1)
    basis, _ = np.linalg.qr(np.vander(u, nterms, increasing=True))
    return basis


# ----------------------------------------------------------------------------------------------
# ADF


def _adf_maxlag(nobs: int, ntrend: int, maxlag) -> int:
    """statsmodels adfuller's maxlag rule (Schwert 1989) and its length checks, clear errors."""
    limit = nobs // 2 - ntrend - 1
    if maxlag is None:
        maxlag = min(limit, int(np.ceil(12.0 * np.power(nobs / 100.0, 1 / 4.0))))
        if maxlag < 0:
            raise ValueError(
                f"series of length T={nobs} are too short for an ADF regression with {ntrend} "
                f"trend term(s): even lag 0 needs T >= {2 * (ntrend + 1)}. Use longer series or "
                'fewer trend terms (regression="n" or "c").'
            )
        return maxlag
    maxlag = as_int(maxlag, "maxlag")
    if maxlag < 0:
        raise ValueError(f"maxlag must be >= 0; got {maxlag}.")
    if maxlag > limit:
        raise ValueError(
            f"maxlag={maxlag} is too large for series of length T={nobs} with {ntrend} trend "
            f"term(s): adfuller needs maxlag <= T//2 - ntrend - 1 = {limit}. Use a smaller maxlag "
            "(or maxlag=None for the default) or longer series."
        )
    return maxlag


def _mackinnon_pvalue(stat: np.ndarray, regression: str) -> np.ndarray:
    """Vectorised ``statsmodels.tsa.adfvalues.mackinnonp(stat, regression, N=1)`` (its tables)."""
    star = adfvalues._tau_stars[regression][0]
    small = np.polyval(adfvalues._tau_smallps[regression][0][::-1], stat)
    large = np.polyval(adfvalues._tau_largeps[regression][0][::-1], stat)
    p = scipy.stats.norm.cdf(np.where(stat <= star, small, large))
    p = np.where(stat > adfvalues._tau_maxs[regression][0], 1.0, p)
    return np.where(stat < adfvalues._tau_mins[regression][0], 0.0, p)


def _mackinnon_crit(nobs: np.ndarray, regression: str) -> dict[str, np.ndarray]:
    """MacKinnon (2010) critical values per series (``adfvalues.mackinnoncrit(1, reg, nobs)``)."""
    out = np.full((3,) + nobs.shape, np.nan)
    for n in np.unique(nobs[nobs > 0]):
        out[:, nobs == n] = adfvalues.mackinnoncrit(N=1, regression=regression, nobs=n)[:, None]
    return {"1%": out[0], "5%": out[1], "10%": out[2]}


def _adf_columns(x: np.ndarray, ntrend: int) -> tuple[np.ndarray, np.ndarray]:
    """x: [B, T] -> (level [B, T], differences [B, T-1]) as they enter the ADF regressions.

    With trend terms the level is detrended (least squares polynomial of degree ntrend - 1) and the
    differences demeaned: this moves each column by a combination of the trend columns, which
    changes no t-value or residual but keeps the Gram matrices well conditioned.
    """
    d = np.diff(x, axis=-1)
    if ntrend:
        basis = _orthonormal_trend(x.shape[-1], ntrend)
        x = x - (x @ basis) @ basis.T
        d = d - d.mean(axis=-1, keepdims=True)
    return x, d


def _adf_design(level: np.ndarray, d: np.ndarray, ntrend: int, maxlag: int, start: int, stop: int):
    """Regression columns on rows s = start..stop-1 of the differences, for every lag up to maxlag.

    level: [B, T], d: [B, T-1] (from :func:`_adf_columns`) -> [B, ntrend + maxlag + 2, R]
    (column-major per series, R = stop - start), columns
    ``[trend terms, level_s, d_{s-1}, ..., d_{s-maxlag}, d_s]``; d_{s-j} with s < j is 0.
    """
    batch, n_diff = d.shape
    out = np.empty((batch, ntrend + maxlag + 2, stop - start))
    if ntrend:
        out[:, :ntrend] = _orthonormal_trend(n_diff, ntrend)[start:stop].T
    out[:, ntrend] = level[:, start:stop]
    for j in range(1, maxlag + 1):
        skip = min(max(j - start, 0), stop - start)
        out[:, ntrend + j, :skip] = 0.0
        out[:, ntrend + j, skip:] = d[:, start + skip - j : stop - j]
    out[:, -1] = d[:, start:stop]
    return out


def _adf_common_gram(level: np.ndarray, d: np.ndarray, ntrend: int, maxlag: int) -> np.ndarray:
    """Gram matrix of the design of :func:`_adf_design` on the common rows s = maxlag..T-2.

    level: [B, T], d: [B, T-1] -> [B, M, M] (float64), M = ntrend + maxlag + 2. Equals
    ``A @ A.T`` for ``A = _adf_design(level, d, ntrend, maxlag, maxlag, T - 1)`` to rounding, at
    O(T log T + maxlag^2) per series instead of O(T M^2): every product with a lagged difference
    d_{s-j} is a cross-correlation with d over the common rows (one FFT per sequence), and the
    Toeplitz-like block sum_s d_{s-i} d_{s-j} follows from its i = 0 row by sliding the window one
    row at a time (adding the row entering at the start, removing the one leaving at the end).
    """
    batch, n_diff = d.shape
    lag, last, m = maxlag, n_diff - 1, ntrend + maxlag + 2
    trend = _orthonormal_trend(n_diff, ntrend)[lag:]  # [R, ntrend] on the common rows
    # cross-correlations sum_{s >= lag} w_s d_{s-j}, j = 0..lag, for w = d, level, trend terms
    nfft = scipy.fft.next_fast_len(n_diff, real=True)
    windowed = np.zeros((batch, 2, n_diff))
    windowed[:, 0, lag:] = d[:, lag:]
    windowed[:, 1, lag:] = level[:, lag:n_diff]
    spec = scipy.fft.rfft(windowed, n=nfft, axis=-1, workers=_WORKERS)
    if ntrend:
        trend_spec = scipy.fft.rfft(np.pad(trend.T, ((0, 0), (lag, 0))), n=nfft, axis=-1)
        spec = np.concatenate([spec, np.broadcast_to(trend_spec, (batch,) + trend_spec.shape)], 1)
    conj_d = np.conj(scipy.fft.rfft(d, n=nfft, axis=-1, workers=_WORKERS))[:, None, :]
    corr = scipy.fft.irfft(spec * conj_d, n=nfft, axis=-1, workers=_WORKERS)[..., : lag + 1]
    # sum_{s=lag}^{last} d_{s-i} d_{s-i-k} = corr_d[k] + sum_{t<i} (d_{lag-1-t} d_{lag-1-t-k}
    #                                                               - d_{last-t} d_{last-t-k})
    t = np.arange(lag)[None, :]
    k = np.arange(lag + 1)[:, None]
    padded = np.concatenate([np.zeros((batch, lag + 1)), d], axis=-1)  # d_{r} at r + lag + 1
    enter = d[:, lag - 1 - t] * padded[:, lag - t - k + lag]
    leave = d[:, last - t] * d[:, last - t - k]
    slide = np.concatenate([np.zeros((batch, lag + 1, 1)), np.cumsum(enter - leave, -1)], -1)
    dd = corr[:, :1, :].transpose(0, 2, 1) + slide  # [B, k, i]

    gram = np.empty((batch, m, m))
    col = np.r_[m - 1, ntrend + 1 + np.arange(lag)]  # column of d_{s-j}, j = 0..lag
    i, j = np.triu_indices(lag + 1)
    gram[:, col[i], col[j]] = dd[:, j - i, i]
    gram[:, col[j], col[i]] = dd[:, j - i, i]
    gram[:, ntrend, col] = gram[:, col, ntrend] = corr[:, 1]
    common_level = level[:, lag:n_diff]
    gram[:, ntrend, ntrend] = np.einsum("bt,bt->b", common_level, common_level)
    if ntrend:
        gram[:, :ntrend, col] = corr[:, 2:]
        gram[:, col, :ntrend] = corr[:, 2:].transpose(0, 2, 1)
        gram[:, :ntrend, ntrend] = gram[:, ntrend, :ntrend] = common_level @ trend
        gram[:, :ntrend, :ntrend] = trend.T @ trend
    return gram


def _adf_block(x: np.ndarray, ntrend: int, maxlag: int, autolag: str | None):
    """x: [B, T] finite, non-constant -> (stat, usedlag, icbest, ok) arrays [B] (float64)."""
    batch, length = x.shape
    m = ntrend + maxlag + 2  # trend terms, level, maxlag lags, target
    nobs = length - 1 - maxlag
    level, d = _adf_columns(x, ntrend)
    gram = _adf_common_gram(level, d, ntrend, maxlag)
    ok = np.ones(batch, dtype=bool)
    usedlag = np.full(batch, maxlag)
    icbest = np.full(batch, np.nan)

    if autolag is not None:
        low, regular = _cholesky(gram)
        # an exact fit at the largest lag is no reason to drop the series: statsmodels then
        # finds AIC/BIC -inf there (and the re-fit below fails) or, for "t-stat", moves on.
        ok = regular[:, :-1].all(axis=-1)
        proj = low[:, -1, :-1]  # target's coordinates along the orthogonalised columns
        rss_all = low[:, -1, -1] ** 2
        tail = np.cumsum(proj[:, ::-1] ** 2, axis=-1)[:, ::-1]
        # prefix with k = ntrend + 1 + lag columns: rss = rss_all + sum_{c >= k} proj_c^2
        k = ntrend + 1 + np.arange(maxlag + 1)
        rss = rss_all[:, None] + np.concatenate([tail, np.zeros((batch, 1))], axis=-1)[:, k]
        if autolag == "t-stat":
            tvals = np.abs(proj[:, k - 1]) / np.sqrt(rss / (nobs - k))
            significant = tvals >= _TSTAT_STOP
            usedlag = np.where(significant.any(axis=-1), maxlag - np.argmax(significant[:, ::-1], axis=-1), 0)
            icbest = np.take_along_axis(tvals, usedlag[:, None], axis=-1)[:, 0]
        else:
            # OLS.llf, aic = -2 llf + 2 k, bic = -2 llf + log(nobs) k (statsmodels linear_model)
            llf = -nobs / 2.0 * (np.log(2 * np.pi) + np.log(rss / nobs) + 1.0)
            penalty = 2.0 if autolag == "aic" else np.log(nobs)
            crit = -2.0 * llf + penalty * k
            usedlag = np.argmin(crit, axis=-1)
            icbest = np.take_along_axis(crit, usedlag[:, None], axis=-1)[:, 0]
        if maxlag:
            # statsmodels re-fits on rows s = usedlag .. T-2: add the rows below the common sample.
            extra = _adf_design(level, d, ntrend, maxlag, 0, maxlag)
            weight = np.arange(maxlag)[None, :] >= usedlag[:, None]
            gram = gram + np.matmul(extra * weight[:, None, :], extra.transpose(0, 2, 1))
            unused = np.arange(m)[None, :] > (ntrend + usedlag)[:, None]
            unused[:, -1] = False
            gram = np.where(unused[:, :, None] | unused[:, None, :], 0.0, gram)
            gram[unused[:, :, None] & np.eye(m, dtype=bool)] = 1.0

    # Final regression: level moved next to the target so its t-value reads off the factor.
    order = np.r_[np.arange(ntrend), np.arange(ntrend + 1, m - 1), ntrend, m - 1]
    low, regular = _cholesky(gram[:, order][:, :, order])
    final_nobs = length - 1 - usedlag
    dof = final_nobs - (ntrend + 1 + usedlag)
    sigma = np.abs(low[:, -1, -1]) / np.sqrt(dof)
    stat = low[:, -1, -2] / sigma
    return stat, usedlag, icbest, ok & regular.all(axis=-1)


def adf(
    x,
    *,
    regression: Literal["c", "ct", "ctt", "n"] = "c",
    maxlag: int | None = None,
    autolag: Literal["AIC", "BIC", "t-stat"] | None = "AIC",
    axis: int = -1,
) -> AdfResult:
    """Augmented Dickey-Fuller unit-root test of every series, batched.

    x: [..., T] -> :class:`AdfResult` of arrays [...]. Equals, per series,
    ``statsmodels.tsa.stattools.adfuller(x, maxlag, regression, autolag)`` (stat and p-value to
    ~1e-10 relative, the same usedlag, nobs, critical values and icbest), computed in float64.

    regression: deterministic terms in the regression, "c" constant, "ct" constant and trend,
        "ctt" plus quadratic trend, "n" none.
    maxlag: largest lag of the difference considered; None uses statsmodels' default
        ``min(ceil(12 (T/100)^{1/4}), T//2 - ntrend - 1)``. A maxlag that series of length T
        cannot support raises ValueError.
    autolag: "AIC" / "BIC" pick the lag in 0..maxlag minimising the criterion (ties to the
        smaller lag), "t-stat" the largest lag whose last coefficient has |t| >= 1.645 (else 0),
        all fitted on the common sample of the largest lag; None uses maxlag. The final
        regression is re-fitted on the chosen lag's own sample, as statsmodels does.

    A constant series gives NaN stat/pvalue/critical values, usedlag = nobs = -1 and
    ``constant=True``; a series with NaN/inf, or whose regression is numerically singular, gives
    the same NaN/-1 outputs with ``constant=False``. Nothing warns. Large batches are processed in
    blocks of about 64 MiB of design matrix.

    axis: the time axis of x (default the last); results have x's shape without it, so
        ``adf(run["updates"], axis=1)`` tests every member and parameter of a stored ``[S, T, P]``
        array (any array-like: numpy, JAX, a stored array).
    """
    if regression not in _ADF_REGRESSIONS:
        raise ValueError(f"regression must be one of {list(_ADF_REGRESSIONS)}; got {regression!r}.")
    if autolag is not None:
        key = autolag.lower() if isinstance(autolag, str) else autolag
        if key not in _AUTOLAGS:
            raise ValueError(f'autolag must be "AIC", "BIC", "t-stat" or None; got {autolag!r}.')
        autolag = _AUTOLAGS[key]
    ntrend = _ADF_REGRESSIONS[regression]
    series, lead = _as_batch(time_last(x, axis)[0], min_length=1)
    length = series.shape[-1]
    maxlag = _adf_maxlag(length, ntrend, maxlag)

    nonfinite, constant = _degenerate_rows(series)
    good = np.flatnonzero(~(nonfinite | constant))
    n = series.shape[0]
    stat = np.full(n, np.nan)
    usedlag = np.full(n, -1, dtype=np.int64)
    icbest = np.full(n, np.nan)
    row_bytes = 8 * ((4 + 2 * ntrend) * length + 3 * (ntrend + maxlag + 2) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        for block in _blocks(good.size, row_bytes):
            rows = good[block]
            b_stat, b_lag, b_ic, b_ok = _adf_block(series[rows], ntrend, maxlag, autolag)
            rows = rows[b_ok]
            stat[rows], usedlag[rows], icbest[rows] = b_stat[b_ok], b_lag[b_ok], b_ic[b_ok]
        pvalue = _mackinnon_pvalue(stat, regression)
    nobs = np.where(usedlag >= 0, length - 1 - usedlag, -1)
    crit = _mackinnon_crit(nobs, regression)
    return AdfResult(
        stat=stat.reshape(lead),
        pvalue=pvalue.reshape(lead),
        usedlag=usedlag.reshape(lead),
        nobs=nobs.reshape(lead),
        critical_values={k: v.reshape(lead) for k, v in crit.items()},
        icbest=icbest.reshape(lead),
        constant=constant.reshape(lead),
        maxlag=maxlag,
        regression=regression,
    )


# ----------------------------------------------------------------------------------------------
# KPSS


def _kpss_autolag(resid: np.ndarray) -> np.ndarray:
    """resid: [B, n] -> Hobijn et al. (1998) lags [B] (float64; NaN where undefined).

    The arithmetic of statsmodels' ``_kpss_autolag`` in its order, batched, so the truncation
    ``int(gamma n^{1/3})`` lands on the same integer.
    """
    n = resid.shape[-1]
    covlags = int(np.power(n, 2.0 / 9.0))
    s0 = np.sum(resid**2, axis=-1) / n
    s1 = np.zeros_like(s0)
    for i in range(1, covlags + 1):
        prod = np.einsum("bt,bt->b", resid[:, i:], resid[:, : n - i]) / (n / 2.0)
        s0 += prod
        s1 += i * prod
    s_hat = s1 / s0
    gamma_hat = 1.1447 * np.power(s_hat * s_hat, 1.0 / 3.0)
    return np.trunc(gamma_hat * np.power(n, 1.0 / 3.0))


def _kpss_block(x: np.ndarray, ntrend: int, nlags) -> tuple[np.ndarray, np.ndarray]:
    """x: [B, n] finite, non-constant -> (stat [B], lags [B] float64, NaN where undefined)."""
    batch, n = x.shape
    if ntrend == 1:
        resid = x - x.mean(axis=-1, keepdims=True)  # statsmodels: x - x.mean()
    else:
        basis = _orthonormal_trend(n, ntrend)
        resid = x - (x @ basis) @ basis.T  # OLS residuals on [1, t]
    eta = np.sum(np.cumsum(resid, axis=-1) ** 2, axis=-1) / (n**2)
    if nlags == "auto":
        lags = _kpss_autolag(resid)  # inf where statsmodels fails (zero long-run variance)
        lags = np.where(np.isfinite(lags), np.minimum(lags, n - 1), np.nan)
    elif nlags == "legacy":
        lags = np.full(batch, float(min(int(np.ceil(12.0 * np.power(n / 100.0, 1 / 4.0))), n - 1)))
    else:
        lags = np.full(batch, float(nlags))
    top = int(np.nanmax(lags, initial=0.0))
    # autocovariance sums sum_t e_t e_{t-i}, i = 0..top, by FFT (zero padded: no wrap-around)
    acov = fft_autocov(resid, n + top + 1, top + 1)
    # Newey-West / Bartlett weights 1 - i/(lags+1) for i <= lags, 0 beyond
    i = np.arange(1, top + 1)
    weights = np.clip(1.0 - i[None, :] / (np.nan_to_num(lags)[:, None] + 1.0), 0.0, None)
    s_hat = (np.sum(resid**2, axis=-1) + 2.0 * np.sum(acov[:, 1:] * weights, axis=-1)) / n
    return eta / s_hat, lags


def kpss(
    x,
    *,
    regression: Literal["c", "ct"] = "c",
    nlags: Literal["auto", "legacy"] | int = "auto",
    axis: int = -1,
) -> KpssResult:
    """Kwiatkowski-Phillips-Schmidt-Shin stationarity test of every series, batched.

    x: [..., T] -> :class:`KpssResult` of arrays [...]. Equals, per series,
    ``statsmodels.tsa.stattools.kpss(x, regression, nlags)`` (stat to ~1e-12 relative, the same
    lags, the same p-value including its clipping to [0.01, 0.10]), computed in float64, without
    statsmodels' per-series InterpolationWarning (read ``pvalue_clipped`` instead).

    regression: "c" tests level stationarity (residuals x - mean), "ct" trend stationarity
        (residuals of OLS on [1, t]).
    nlags: "auto" the data-dependent lag of Hobijn et al. (1998) per series; "legacy"
        ``ceil(12 (T/100)^{1/4})`` (statsmodels' rule; capped at T-1); an int below T.

    The long-run variance is the Newey-West (Bartlett kernel) estimate, its autocovariances
    computed by FFT. A constant series gives NaN stat/pvalue, lags = -1 and ``constant=True``; a
    series with NaN/inf the same with ``constant=False``. Nothing warns. ``axis``: the time axis
    of x (default the last); results have x's shape without it.
    """
    if regression not in _KPSS_CRIT:
        raise ValueError(f'regression must be "c" or "ct"; got {regression!r}.')
    series, lead = _as_batch(time_last(x, axis)[0], min_length=2)
    length = series.shape[-1]
    if isinstance(nlags, str):
        if nlags not in ("auto", "legacy"):
            raise ValueError(f'nlags must be "auto", "legacy" or an int; got {nlags!r}.')
    else:
        if nlags is None:
            raise ValueError('nlags must be "auto", "legacy" or an int; got None.')
        nlags = as_int(nlags, "nlags")
        if not 0 <= nlags < length:
            raise ValueError(
                f"nlags={nlags} must satisfy 0 <= nlags < T for series of length T={length}. "
                'Use fewer lags, nlags="auto", or longer series.'
            )
    ntrend = 1 if regression == "c" else 2

    nonfinite, constant = _degenerate_rows(series)
    good = np.flatnonzero(~(nonfinite | constant))
    n = series.shape[0]
    stat = np.full(n, np.nan)
    lags = np.full(n, -1, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for block in _blocks(good.size, 8 * 6 * length):
            rows = good[block]
            b_stat, b_lags = _kpss_block(series[rows], ntrend, nlags)
            ok = np.isfinite(b_stat) & np.isfinite(b_lags)
            stat[rows[ok]] = b_stat[ok]
            lags[rows[ok]] = b_lags[ok].astype(np.int64)
    crit = _KPSS_CRIT[regression]
    pvalue = np.interp(stat, crit, _KPSS_PVALS)  # NaN stays NaN
    clipped = (pvalue == _KPSS_PVALS[0]) | (pvalue == _KPSS_PVALS[-1])
    return KpssResult(
        stat=stat.reshape(lead),
        pvalue=pvalue.reshape(lead),
        lags=lags.reshape(lead),
        pvalue_clipped=clipped.reshape(lead),
        critical_values=dict(zip(_KPSS_LEVELS, crit)),
        constant=constant.reshape(lead),
        regression=regression,
    )


# ----------------------------------------------------------------------------------------------
# Joint verdict


def stationarity_verdict(
    adf_result: AdfResult,
    kpss_result: KpssResult,
    alpha: float = 0.05,
    *,
    adjust: Literal["none", "fdr_bh"] = "none",
) -> np.ndarray:
    """Joint ADF + KPSS verdict per series: a numpy str array [...] (dtype ``<U..``) of names from
    :data:`VERDICTS`.

    "stationary": ADF rejects a unit root and KPSS does not reject stationarity.
    "unit-root": ADF does not reject a unit root and KPSS rejects stationarity.
    "inconclusive": both reject (often difference-stationary with a structural break, or
      long memory) or neither rejects (too little data to tell).
    "invalid": either p-value is NaN (constant, non-finite or singular series).

    A test rejects when its p-value is below ``alpha``. KPSS p-values clipped at 0.01 mean
    p < 0.01 and reject for any alpha >= 0.01. ``adjust="fdr_bh"`` first replaces each test's
    p-values by Benjamini-Hochberg adjusted ones over all series together (one family per test,
    NaN excluded; see :func:`rvsp_jax.analysis.multiple_testing.fdr_bh`), controlling the false
    discovery rate of each test's rejections at alpha. Both results must use the same
    deterministic terms ("c" with "c", "ct" with "ct") and have the same shape.
    """
    return verdict_names(_stationarity_codes(adf_result, kpss_result, alpha, adjust=adjust), VERDICTS)


def _stationarity_codes(
    adf_result: AdfResult,
    kpss_result: KpssResult,
    alpha: float = 0.05,
    *,
    adjust: Literal["none", "fdr_bh"] = "none",
) -> np.ndarray:
    """:func:`stationarity_verdict` as compact int8 codes [...], code i meaning ``VERDICTS[i]``
    (0 stationary, 1 unit-root, 2 inconclusive, 3 invalid): for the studies that count verdicts
    over many series."""
    if not isinstance(adf_result, AdfResult) or not isinstance(kpss_result, KpssResult):
        raise ValueError("stationarity_verdict takes the results of adf() and kpss(), in order.")
    if adf_result.regression != kpss_result.regression:
        raise ValueError(
            f'ADF regression "{adf_result.regression}" and KPSS regression '
            f'"{kpss_result.regression}" test different null hypotheses; run both with "c" '
            '(level) or both with "ct" (trend).'
        )
    if np.shape(adf_result.pvalue) != np.shape(kpss_result.pvalue):
        raise ValueError(
            f"ADF results of shape {np.shape(adf_result.pvalue)} and KPSS results of shape "
            f"{np.shape(kpss_result.pvalue)} do not describe the same series."
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}.")
    if adjust not in ("none", "fdr_bh"):
        raise ValueError(f'adjust must be "none" or "fdr_bh"; got {adjust!r}.')
    p_adf = np.asarray(adf_result.pvalue, dtype=np.float64)
    p_kpss = np.asarray(kpss_result.pvalue, dtype=np.float64)
    low_clip = kpss_result.pvalue_clipped & (p_kpss == _KPSS_PVALS[-1])
    if adjust == "fdr_bh":
        adf_rejects = fdr_bh(p_adf, alpha).reject
        kpss_rejects = fdr_bh(p_kpss, alpha).reject
    else:
        adf_rejects = p_adf < alpha
        kpss_rejects = (p_kpss < alpha) | (low_clip & (alpha >= _KPSS_PVALS[-1]))
    code = np.where(adf_rejects == kpss_rejects, 2, np.where(adf_rejects, 0, 1)).astype(np.int8)
    code[np.isnan(p_adf) | np.isnan(p_kpss)] = 3
    return code


def stationarity_verdicts(x, alpha: float = 0.05, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Joint ADF + KPSS verdicts (both ``regression="c"``, defaults otherwise) of every series
    ``x: [..., T]``: ``(raw, bh)``, numpy str arrays ``[...]`` (dtype ``<U..``) of names from
    :data:`VERDICTS`, the second with each test's p-values Benjamini-Hochberg adjusted over all the
    series given (see :func:`stationarity_verdict`). ``axis``: the time axis of x; the verdicts
    have x's shape without it."""
    raw, bh = _stationarity_codes_of(x, alpha, axis=axis)
    return verdict_names(raw, VERDICTS), verdict_names(bh, VERDICTS)


def _stationarity_codes_of(x, alpha: float = 0.05, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stationarity_verdicts` as compact int8 codes ``(raw, bh)`` (see
    :func:`_stationarity_codes`)."""
    x = time_last(x, axis)[0]
    a, k = adf(x), kpss(x)
    return _stationarity_codes(a, k, alpha), _stationarity_codes(a, k, alpha, adjust="fdr_bh")


def verdict_fractions(verdicts, vocabulary: tuple[str, ...] = VERDICTS) -> dict:
    """Fraction of the series with each verdict of ``vocabulary`` (default :data:`VERDICTS`), and
    ``n`` the number of series: ``{name: float, ..., "n": int}``. ``verdicts``: the names (numpy
    str array, as :func:`stationarity_verdict` returns) or their int codes (indices into
    ``vocabulary``, as the private :func:`_stationarity_codes`); a name outside the vocabulary
    raises ValueError."""
    c = verdict_codes(verdicts, vocabulary).ravel()
    if c.size and c.min() < 0:
        unknown = sorted(set(np.asarray(verdicts).ravel()[c < 0].tolist()))
        raise ValueError(f"verdicts outside {vocabulary}: {unknown}.")
    counts = np.bincount(c.astype(np.int64), minlength=len(vocabulary))
    return {**{name: counts[i] / max(c.size, 1) for i, name in enumerate(vocabulary)}, "n": int(c.size)}
