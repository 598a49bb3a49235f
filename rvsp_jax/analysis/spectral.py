"""Batched correlation and spectral analysis of scalar processes.

Every function takes ``x: [..., T]`` (any number of leading axes, e.g. ``[S, T]`` members by steps
or ``[S, P, T]`` members by parameters by steps; numpy or JAX input), treats the last axis as time
(``axis=`` names another: lags and frequencies then take its place) and returns numpy ``float64``
arrays with the leading axes kept. All numerics run on the host in float64 (numpy, and ``scipy.fft``
with every core for the FFTs), whatever the input dtype, and match their reference implementation
per series to rounding:

- :func:`acf`, :func:`acf_confint`: ``statsmodels.tsa.stattools.acf(x, nlags, adjusted, fft=True,
  alpha)``.
- :func:`pacf`: ``statsmodels.tsa.stattools.pacf`` (Yule-Walker through a batched Levinson-Durbin
  recursion, OLS through batched QR, Burg).
- :func:`ljung_box`: ``statsmodels.stats.diagnostic.acorr_ljungbox``.
- :func:`periodogram`, :func:`welch`: ``scipy.signal.periodogram`` / ``scipy.signal.welch``
  (density scaling, one-sided, mean over segments).

Degenerate series never raise and never warn: a series containing NaN or inf gives NaN in its own
outputs only, and an exactly constant series (zero variance) gives NaN correlations (its PSD is
0, as scipy returns). :func:`is_constant` returns that mask, to count or report such series.
Bad arguments (``nlags >= T``, a series too short, an unknown method) raise ``ValueError``.

Large batches are processed in row blocks of a few million elements, so temporaries stay small
whatever the leading shape; the output itself is the caller's to chunk.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import scipy.fft
import scipy.signal
import scipy.stats

from rvsp_jax.analysis._common import WORKERS as _WORKERS
from rvsp_jax.analysis._common import as_int as _as_int
from rvsp_jax.analysis._common import as_real, fft_autocov, map_rows, restore_time, time_last, verdict_names
from rvsp_jax.analysis.result import Result

__all__ = [
    "LjungBoxResult",
    "SHAPE_INVALID",
    "SHAPE_MODELS",
    "SHAPE_VERDICTS",
    "SpectralShape",
    "SpectralSlope",
    "acf",
    "acf_confint",
    "band_power_ratio",
    "is_constant",
    "ljung_box",
    "pacf",
    "periodogram",
    "spectral_flatness",
    "spectral_shape",
    "spectral_slope",
    "welch",
]

# Elements of the largest temporary per row block (about 32 MiB of float64).
_BLOCK_ELEMENTS = 1 << 22

_PACF_METHODS = {
    "yw": "yw",
    "ywa": "yw",
    "ywadjusted": "yw",
    "yw_adjusted": "yw",
    "ld": "yw",
    "lda": "yw",
    "ldadjusted": "yw",
    "ld_adjusted": "yw",
    "ywm": "ywm",
    "ywmle": "ywm",
    "yw_mle": "ywm",
    "ldb": "ywm",
    "ldbiased": "ywm",
    "ld_biased": "ywm",
    "ols": "ols",
    "ols-inefficient": "ols-inefficient",
    "ols-adjusted": "ols-adjusted",
    "burg": "burg",
}


@dataclasses.dataclass(frozen=True, eq=False)
class LjungBoxResult(Result):
    """Ljung-Box (and optionally Box-Pierce) portmanteau tests, one per series and lag.

    stat, pvalue: [..., L]   Ljung-Box Q and its chi^2(lag - model_df) upper-tail p-value.
    lags: [L]                the lags tested (int).
    bp_stat, bp_pvalue: [..., L] Box-Pierce Q and p-value, or None unless ``boxpierce=True``.
    """

    stat: np.ndarray
    pvalue: np.ndarray
    lags: np.ndarray
    bp_stat: np.ndarray | None = None
    bp_pvalue: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralSlope(Result):
    """Power-law fit ``psd ~ 10**intercept * f**(-beta)`` by least squares in log10-log10.

    beta, intercept, r2: [...]; nbins: [...] number of bins used in the fit; f_lo, f_hi: [...] the
    lowest and highest frequency of those bins (the fit range; NaN where the fit is NaN). A slope
    is a summary of the log-log shape over that range, not evidence of a power law: compare models
    with :func:`spectral_shape` first.
    """

    beta: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    nbins: np.ndarray
    f_lo: np.ndarray | None = None
    f_hi: np.ndarray | None = None


SHAPE_MODELS = ("white", "lorentzian", "power-law")
"""Spectral models of :func:`spectral_shape`, in the order of its ``aic`` axis (the names of its
``best``)."""
SHAPE_VERDICTS = ("white", "lorentzian", "power-law", "indistinguishable")
"""Verdicts of :func:`spectral_shape` (the names of its ``verdict``; a NaN series gets
:data:`SHAPE_INVALID`, outside this tuple)."""
SHAPE_INVALID = "invalid"
"""``best`` and ``verdict`` of a series :func:`spectral_shape` cannot fit (NaN bin or all-zero psd);
not in :data:`SHAPE_MODELS` or :data:`SHAPE_VERDICTS`."""


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralShape(Result):
    """Whittle maximum-likelihood fits of three spectral models per series, compared by AIC.

    Models (``S(f)`` the one-sided spectral density, ``w = 2 pi f / fs``):

    - ``white``: ``S = c`` (1 parameter);
    - ``lorentzian``: the AR(1) spectrum ``S = c / |1 - phi e^{-iw}|^2`` (2 parameters; the
      discrete-time Lorentzian, flat below its corner frequency);
    - ``power-law``: ``S = c f^(-beta)`` (2 parameters).

    phi, beta: [...] fitted AR(1) coefficient and power-law exponent (Whittle, not least squares).
    aic: [..., 3] AIC of each model in :data:`SHAPE_MODELS` order, ``2 k + 2 NLL``.
    delta_aic: [...] ``AIC(lorentzian) - AIC(power-law)``: > 0 favours the power law.
    best: str ``<U..`` [...] the model of :data:`SHAPE_MODELS` with the lowest AIC ("invalid",
      outside SHAPE_MODELS, for a NaN series).
    verdict: str ``<U..`` [...] one of :data:`SHAPE_VERDICTS` by the rule of
      :func:`spectral_shape` ("invalid", outside SHAPE_VERDICTS, for a NaN series).
    nbins: [...] bins fitted; f_lo, f_hi: the fit range; dof, margin: as passed.
    """

    phi: np.ndarray
    beta: np.ndarray
    aic: np.ndarray
    delta_aic: np.ndarray
    best: np.ndarray
    verdict: np.ndarray
    nbins: np.ndarray
    f_lo: float
    f_hi: float
    dof: float
    margin: float


# ----------------------------------------------------------------------------------------------
# Input handling


def _as_series(x, name: str = "x", min_length: int = 2) -> np.ndarray:
    """x -> float64 ndarray [..., T]; raises ValueError on a scalar or a too-short time axis."""
    arr = as_real(x, name=name).astype(np.float64, copy=False)
    if arr.shape[-1] < min_length:
        raise ValueError(
            f"{name} has {arr.shape[-1]} time steps along its last axis; at least {min_length} "
            "are needed. Time must be the last axis (transpose with np.moveaxis if it is not)."
        )
    return arr


def _map_rows(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, row_cost: int) -> np.ndarray:
    """Applies fn: [B, T] -> [B, *K] to x: [..., T] in row blocks; returns [..., *K].

    row_cost: elements of the largest temporary per row, to size the blocks.
    """
    return map_rows(fn, x, row_cost, _BLOCK_ELEMENTS)


def is_constant(x, *, axis: int = -1) -> np.ndarray:
    """x: [..., T] -> bool [...]: True where a series takes one value only (zero variance).

    Such series have no defined autocorrelation: :func:`acf`, :func:`pacf` and :func:`ljung_box`
    return NaN for them. A series containing NaN is not constant (its outputs are NaN anyway).
    """
    arr = _as_series(time_last(x, axis)[0], min_length=1)
    return np.ptp(arr, axis=-1) == 0


# ----------------------------------------------------------------------------------------------
# Autocorrelation


def _default_nlags(nobs: int) -> int:
    return min(int(10 * np.log10(nobs)), nobs - 1)


def _acovf(x: np.ndarray, nlags: int, adjusted: bool) -> np.ndarray:
    """x: [B, T] -> autocovariances [B, nlags + 1] of the demeaned series, by FFT (float64).

    Divisor T (biased) or T - k (adjusted), as statsmodels.tsa.stattools.acovf(fft=True).
    """
    nobs = x.shape[-1]
    acov = fft_autocov(x - x.mean(axis=-1, keepdims=True), 2 * nobs - 1, nlags + 1)
    divisor = nobs - np.arange(nlags + 1) if adjusted else nobs
    return acov / divisor


def _acf_block(x: np.ndarray, nlags: int, adjusted: bool) -> np.ndarray:
    acov = _acovf(x, nlags, adjusted)
    out = acov / acov[:, :1]
    out[np.ptp(x, axis=-1) == 0] = np.nan
    return out


def _check_nlags(nlags, nobs: int, limit: int, what: str) -> int:
    nlags = _as_int(nlags, "nlags", 0)
    if nlags > limit:
        raise ValueError(
            f"nlags={nlags} is too large for series of length T={nobs}: {what} needs "
            f"nlags <= {limit}. Use fewer lags or longer series."
        )
    return nlags


def acf(x, nlags: int | None, *, adjusted: bool = False, axis: int = -1) -> np.ndarray:
    """Sample autocorrelation function of every series, lags 0..nlags.

    x: [..., T] -> [..., nlags + 1] (float64). The series is demeaned, its autocovariance computed
    by FFT with divisor T (``adjusted=False``) or T - k (``adjusted=True``), and divided by the
    lag-0 value. Equals ``statsmodels.tsa.stattools.acf(x, nlags=nlags, adjusted=adjusted,
    fft=True)`` per series (to ~1e-12 relative). ``nlags=None`` uses statsmodels' default
    ``min(int(10 log10 T), T - 1)``. Constant series give NaN (see :func:`is_constant`); a series
    with NaN/inf gives NaN. Raises ValueError if ``nlags >= T``. ``axis``: the time axis of x; the
    lag axis of the result takes its place (``[..., nlags + 1, ...]``).
    """
    x, pos = time_last(x, axis)
    arr = _as_series(x)
    nobs = arr.shape[-1]
    nlags = _default_nlags(nobs) if nlags is None else nlags
    nlags = _check_nlags(nlags, nobs, nobs - 1, "acf")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _map_rows(lambda b: _acf_block(b, nlags, bool(adjusted)), arr, 4 * nobs)
    return restore_time(out, pos, keeps_axis=True)


def acf_confint(acf_values, nobs: int, alpha: float = 0.05, *, axis: int = -1) -> np.ndarray:
    """Bartlett confidence intervals around sample autocorrelations.

    acf_values: [..., nlags + 1] (lag 0 first, as :func:`acf` returns) -> [..., nlags + 1, 2]
    (lower, upper), float64. The standard error at lag k >= 2 is
    ``sqrt((1 + 2 sum_{j<k} r_j^2) / nobs)``, at lag 1 ``1/sqrt(nobs)``, at lag 0 zero; the band is
    ``r_k -/+ z_{1-alpha/2} se_k``. Equals the ``confint`` of
    ``statsmodels.tsa.stattools.acf(x, nlags, alpha=alpha)`` (bartlett_confint=True). For bands
    around 0 (a white-noise test) use ``confint - acf_values[..., None]``. ``axis``: the lag axis
    of acf_values (as :func:`acf` put it); the result keeps it there, (lower, upper) last.
    """
    acf_values, pos = time_last(acf_values, axis)
    r = np.asarray(acf_values, dtype=np.float64)
    if r.ndim == 0 or r.shape[-1] < 1:
        raise ValueError("acf_values must be [..., nlags + 1] with lag 0 first, as acf() returns.")
    nobs = _as_int(nobs, "nobs", 1)
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}.")
    var = np.ones_like(r) / nobs
    var[..., 0] = 0.0
    if r.shape[-1] > 2:
        var[..., 2:] *= 1.0 + 2.0 * np.cumsum(r[..., 1:-1] ** 2, axis=-1)
    half = scipy.stats.norm.ppf(1.0 - float(alpha) / 2.0) * np.sqrt(var)
    out = np.stack([r - half, r + half], axis=-1)
    return out if pos is None else np.moveaxis(out, -2, pos)


# ----------------------------------------------------------------------------------------------
# Partial autocorrelation


def _levinson_durbin_pacf(acov: np.ndarray) -> np.ndarray:
    """acov: [B, p + 1] autocovariances -> pacf [B, p + 1] by the Levinson-Durbin recursion.

    Same recursion and operation order as statsmodels.tsa.stattools.levinson_durbin (float64).
    """
    nb, p1 = acov.shape
    p = p1 - 1
    pacf = np.ones((nb, p1))
    if p == 0:
        return pacf
    phi = np.zeros((nb, p1))  # phi[:, j] = coefficient j of the current AR(k) fit
    phi[:, 1] = acov[:, 1] / acov[:, 0]
    sig = acov[:, 0] - phi[:, 1] * acov[:, 1]
    pacf[:, 1] = phi[:, 1]
    for k in range(2, p + 1):
        kk = (acov[:, k] - np.einsum("bj,bj->b", phi[:, 1:k], acov[:, k - 1 : 0 : -1])) / sig
        phi[:, 1:k] = phi[:, 1:k] - kk[:, None] * phi[:, k - 1 : 0 : -1]
        phi[:, k] = kk
        sig = sig * (1.0 - kk**2)
        pacf[:, k] = kk
    return pacf


def _last_ls_coef(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares coefficient of the last column of design [B, n, m] for target [B, n] -> [B],
    via a batched QR: the last row of R beta = Q^T y. Underdetermined systems (n < m) take the
    minimum-norm solution, as np.linalg.lstsq does."""
    if design.shape[1] < design.shape[2]:
        return (np.linalg.pinv(design) @ target[..., None])[:, -1, 0]
    q, r = np.linalg.qr(design)
    qty_last = np.einsum("bn,bn->b", q[:, :, -1], target)
    return qty_last / r[:, -1, -1]


def _lagmat(x: np.ndarray, nlags: int) -> np.ndarray:
    """x: [B, T] -> lags [B, T - nlags, nlags], column j - 1 = x_{t-j} for t = nlags..T-1."""
    nobs = x.shape[-1]
    return np.stack([x[:, nlags - j : nobs - j] for j in range(1, nlags + 1)], axis=-1)


def _pacf_ols(x: np.ndarray, nlags: int, efficient: bool) -> np.ndarray:
    """OLS partial autocorrelations as statsmodels.tsa.stattools.pacf_ols (batched QR)."""
    nb, nobs = x.shape
    out = np.ones((nb, nlags + 1))
    if efficient:
        # Regression k uses t = k..T-1 with a constant and lags 1..k, re-estimating the mean.
        for k in range(1, nlags + 1):
            lags = _lagmat(x, k)
            design = np.concatenate([np.ones(lags.shape[:-1] + (1,)), lags], axis=-1)
            out[:, k] = _last_ls_coef(design, x[:, k:])
    else:
        # One common sample t = nlags..T-1 of the demeaned series: a single QR serves every k,
        # since the fit on the first k columns has last coefficient (Q^T y)_k / R_kk.
        xo = x - x.mean(axis=-1, keepdims=True)
        q, r = np.linalg.qr(_lagmat(xo, nlags))
        qty = np.einsum("bnk,bn->bk", q, xo[:, nlags:])
        out[:, 1:] = qty / np.diagonal(r, axis1=-2, axis2=-1)
    return out


def _pacf_burg(x: np.ndarray, nlags: int) -> np.ndarray:
    """Burg partial autocorrelations, the recursion of statsmodels.tsa.stattools.pacf_burg."""
    x = x - x.mean(axis=-1, keepdims=True)
    nb = x.shape[0]
    pacf = np.ones((nb, nlags + 1))
    u = x[:, ::-1].copy()
    v = x[:, ::-1].copy()
    d = np.einsum("bn,bn->b", u[:, :-1], u[:, :-1]) + np.einsum("bn,bn->b", v[:, 1:], v[:, 1:])
    pacf[:, 1] = 2.0 / d * np.einsum("bn,bn->b", v[:, 1:], u[:, :-1])
    for i in range(1, nlags):
        last_u, last_v = u.copy(), v.copy()
        u[:, 1:] = last_u[:, :-1] - pacf[:, i : i + 1] * last_v[:, 1:]
        v[:, 1:] = last_v[:, 1:] - pacf[:, i : i + 1] * last_u[:, :-1]
        d = (1.0 - pacf[:, i] ** 2) * d - v[:, i] ** 2 - u[:, -1] ** 2
        pacf[:, i + 1] = 2.0 / d * np.einsum("bn,bn->b", v[:, i + 1 :], u[:, i:-1])
    return pacf


def _pacf_block(x: np.ndarray, nlags: int, method: str) -> np.ndarray:
    if method in ("yw", "ywm"):
        # Yule-Walker autocovariances: lag k over T - k (adjusted) or T, as statsmodels.regression
        # .yule_walker builds them (acovf with adjusted=True also divides lag 0 by T).
        out = _levinson_durbin_pacf(_acovf(x, nlags, adjusted=method == "yw"))
    elif method == "burg":
        out = _pacf_burg(x, nlags)
    else:
        out = _pacf_ols(x, nlags, efficient=method != "ols-inefficient")
        if method == "ols-adjusted":
            out *= x.shape[-1] / (x.shape[-1] - np.arange(nlags + 1))
    out[np.ptp(x, axis=-1) == 0] = np.nan
    out[:, 0] = 1.0
    return out


def pacf(x, nlags: int | None, *, method: str = "yw", axis: int = -1) -> np.ndarray:
    """Sample partial autocorrelation function of every series, lags 0..nlags.

    x: [..., T] -> [..., nlags + 1] (float64, lag 0 is 1). Equals
    ``statsmodels.tsa.stattools.pacf(x, nlags, method=method)`` per series. Methods:

    - ``"yw"`` (= ``"ywadjusted"``, statsmodels' default; also ``"ywa"``, ``"yw_adjusted"`` and
      the numerically identical ``"ld"`` family): Yule-Walker with lag-k autocovariance over T - k,
      solved for all orders at once by a batched Levinson-Durbin recursion.
    - ``"ywm"`` (= ``"ywmle"``, ``"yw_mle"``, ``"ldb"`` family): Yule-Walker with divisor T.
    - ``"ols"``, ``"ols-inefficient"``, ``"ols-adjusted"``: the regressions of ``pacf_ols``, by
      batched QR instead of ``lstsq`` (agreement ~1e-10 relative on well-conditioned designs).
    - ``"burg"``: Burg's estimator.

    ``nlags=None`` uses statsmodels' default ``min(int(10 log10 T), T // 2 - 1)`` (at least 1).
    Raises ValueError if ``nlags > T // 2`` (statsmodels' limit). Constant series give NaN beyond
    lag 0, as do series with NaN/inf. ``axis``: the time axis of x; the lag axis of the result
    takes its place.
    """
    name = str(method).lower()
    if name not in _PACF_METHODS:
        raise ValueError(f"Unknown pacf method {method!r}; choose one of {sorted(_PACF_METHODS)}.")
    kind = _PACF_METHODS[name]
    x, pos = time_last(x, axis)
    arr = _as_series(x)
    nobs = arr.shape[-1]
    if nlags is None:
        nlags = max(min(int(10 * np.log10(nobs)), nobs // 2 - 1), 1)
    nlags = _check_nlags(nlags, nobs, nobs // 2, "pacf")
    nlags = max(nlags, 1)
    row_cost = 4 * nobs if kind in ("yw", "ywm", "burg") else 3 * nobs * (nlags + 1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = _map_rows(lambda b: _pacf_block(b, nlags, kind), arr, row_cost)
    return restore_time(out, pos, keeps_axis=True)


# ----------------------------------------------------------------------------------------------
# Portmanteau tests


def ljung_box(
    x,
    lags: int | Iterable[int] | None = None,
    *,
    boxpierce: bool = False,
    model_df: int = 0,
    axis: int = -1,
) -> LjungBoxResult:
    """Ljung-Box test of no autocorrelation up to each given lag, per series.

    x: [..., T]; lags: an int L (tests lags 1..L), a sequence of lags, or None (statsmodels'
    default ``1..min(T // 5, 10)``). Returns :class:`LjungBoxResult` with ``stat``/``pvalue``
    ``[..., len(lags)]``: ``Q_h = T (T + 2) sum_{k<=h} r_k^2 / (T - k)`` with biased sample
    autocorrelations r_k, and its chi^2(h - model_df) upper tail (NaN where h <= model_df).
    ``boxpierce=True`` adds ``Q_BP = T sum r_k^2``. Float64; equals
    ``statsmodels.stats.diagnostic.acorr_ljungbox(x, lags, boxpierce, model_df)`` (lb_stat,
    lb_pvalue, bp_stat, bp_pvalue) per series. Constant or non-finite series give NaN.
    ``axis``: the time axis of x; the lag axis of ``stat``/``pvalue`` takes its place.
    """
    x, pos = time_last(x, axis)
    arr = _as_series(x)
    nobs = arr.shape[-1]
    if lags is None:
        lag_arr = np.arange(1, min(nobs // 5, 10) + 1)
    elif isinstance(lags, numbers.Integral) and not isinstance(lags, bool):
        # checked before anything of size lags is allocated (lags=10**12 must not try 7 TiB)
        lag_arr = np.arange(1, _check_nlags(_as_int(lags, "lags", 1), nobs, nobs - 1, "ljung_box") + 1)
    else:
        lag_arr = np.asarray(list(lags))
        if lag_arr.ndim != 1 or lag_arr.size == 0 or not np.issubdtype(lag_arr.dtype, np.integer):
            raise ValueError(f"lags must be a positive int or a non-empty list of ints; got {lags!r}.")
    if lag_arr.size == 0 or lag_arr.min() < 1:
        raise ValueError(f"lags must be >= 1 (and T // 5 >= 1 for the default); got {lags!r}, T={nobs}.")
    model_df = _as_int(model_df, "model_df", 0)
    maxlag = _check_nlags(int(lag_arr.max()), nobs, nobs - 1, "ljung_box")
    r = acf(arr, maxlag)
    terms = r[..., 1:] ** 2
    q_lb = nobs * (nobs + 2) * np.cumsum(terms / (nobs - np.arange(1, maxlag + 1)), axis=-1)
    q_lb = q_lb[..., lag_arr - 1]
    dof = lag_arr - model_df
    valid = dof > 0

    def tail(q: np.ndarray) -> np.ndarray:
        p = np.full_like(q, np.nan)
        p[..., valid] = scipy.stats.chi2.sf(q[..., valid], dof[valid])
        return p

    def back(a):
        return restore_time(a, pos, keeps_axis=True)

    if not boxpierce:
        return LjungBoxResult(back(q_lb), back(tail(q_lb)), lag_arr)
    q_bp = nobs * np.cumsum(terms, axis=-1)[..., lag_arr - 1]
    return LjungBoxResult(back(q_lb), back(tail(q_lb)), lag_arr, back(q_bp), back(tail(q_bp)))


# ----------------------------------------------------------------------------------------------
# Power spectral density


def _resolve_window(window, nperseg: int) -> np.ndarray:
    if isinstance(window, (str, tuple)):
        return np.asarray(scipy.signal.get_window(window, nperseg), dtype=np.float64)
    win = np.asarray(window, dtype=np.float64)
    if win.ndim != 1 or win.shape[0] != nperseg:
        raise ValueError(f"window array must be 1-D of length nperseg={nperseg}; got shape {win.shape}.")
    return win


def _detrend_segments(seg: np.ndarray, detrend) -> np.ndarray:
    """seg: [..., n] -> detrended copy, as scipy.signal.detrend(type=...) along the last axis."""
    if detrend is False or detrend is None:
        return seg.copy()
    centred = seg - seg.mean(axis=-1, keepdims=True)
    if detrend == "constant":
        return centred
    n = seg.shape[-1]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    slope = centred @ t / (t @ t)
    return centred - slope[..., None] * t


def _check_detrend(detrend) -> None:
    if not (detrend is False or detrend is None or detrend in ("constant", "linear")):
        raise ValueError(f"detrend must be 'constant', 'linear' or False; got {detrend!r}.")


def _segment_psd(x: np.ndarray, win: np.ndarray, hop: int, nseg: int, nfft: int, fs: float, detrend) -> np.ndarray:
    """x: [B, T] -> one-sided PSD density [B, nfft // 2 + 1] averaged over nseg segments of
    len(win) starting every hop steps, as scipy.signal.welch(scaling='density', average='mean')."""
    nperseg = win.shape[0]
    segs = np.lib.stride_tricks.sliding_window_view(x, nperseg, axis=-1)[:, : (nseg - 1) * hop + 1 : hop]
    segs = _detrend_segments(segs, detrend)
    segs *= win
    spec = scipy.fft.rfft(segs, n=nfft, axis=-1, workers=_WORKERS)
    power = spec.real**2 + spec.imag**2
    psd = power.mean(axis=1) / (fs * (win @ win))
    psd[:, 1 : -1 if nfft % 2 == 0 else None] *= 2.0
    if detrend in ("constant", "linear"):
        # A constant series detrends to rounding noise (~1e-30); its PSD is exactly 0.
        psd[np.ptp(x, axis=-1) == 0] = 0.0
    return psd


def _psd(x, fs, window, nperseg, noverlap, nfft, detrend, clip_nperseg: bool):
    arr = _as_series(x, min_length=1)
    fs = float(fs)
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a positive finite sampling frequency; got {fs!r}.")
    _check_detrend(detrend)
    nobs = arr.shape[-1]
    nperseg = _as_int(nperseg, "nperseg", 1)
    if nperseg > nobs and clip_nperseg:
        warnings.warn(
            f"nperseg={nperseg} is greater than the series length T={nobs}; using nperseg={nobs} "
            "(as scipy.signal.welch does).",
            UserWarning,
            stacklevel=3,
        )
        nperseg = nobs
    win = _resolve_window(window, nperseg)
    nfft = nperseg if nfft is None else _as_int(nfft, "nfft", nperseg)
    noverlap = nperseg // 2 if noverlap is None else _as_int(noverlap, "noverlap", 0)
    if noverlap >= nperseg:
        raise ValueError(f"noverlap={noverlap} must be less than nperseg={nperseg}.")
    hop = nperseg - noverlap
    nseg = (nobs - noverlap) // hop
    freqs = scipy.fft.rfftfreq(nfft, 1.0 / fs)
    with np.errstate(invalid="ignore", over="ignore"):
        psd = _map_rows(
            lambda b: _segment_psd(b, win, hop, nseg, nfft, fs, detrend),
            arr,
            2 * nseg * max(nperseg, nfft),
        )
    return freqs, psd


def periodogram(
    x,
    *,
    fs: float = 1.0,
    window="boxcar",
    detrend="constant",
    nfft: int | None = None,
    axis: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Periodogram (one-sided power spectral density) of every series.

    x: [..., T] -> (freqs [F], psd [..., F]) with F = nfft // 2 + 1 (nfft defaults to T; a
    smaller nfft truncates the series, a larger one zero-pads). Each series is detrended
    ("constant", "linear" or False), multiplied by the window, and
    ``psd = |rfft|^2 / (fs * sum(window^2))`` with every bin but DC (and Nyquist for even nfft)
    doubled. Float64; equals ``scipy.signal.periodogram(x, fs, window, nfft, detrend,
    scaling="density")`` per series. ``axis``: the time axis of x; the frequency axis of psd takes
    its place (as ``scipy.signal.periodogram(axis=)``).
    """
    x, pos = time_last(x, axis)
    arr = _as_series(x, min_length=1)
    nobs = arr.shape[-1]
    if nfft is not None:
        nfft = _as_int(nfft, "nfft", 1)
        if nfft < nobs:
            arr = arr[..., :nfft]
            nobs, nfft = nfft, None
    freqs, psd = _psd(arr, fs, window, nobs, 0, nfft, detrend, clip_nperseg=False)
    return freqs, restore_time(psd, pos, keeps_axis=True)


def welch(
    x,
    *,
    fs: float = 1.0,
    nperseg: int = 256,
    noverlap: int | None = None,
    window="hann",
    detrend="constant",
    nfft: int | None = None,
    axis: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density (one-sided density) of every series.

    x: [..., T] -> (freqs [F], psd [..., F]), F = nfft // 2 + 1 (nfft defaults to nperseg).
    Segments of nperseg steps start every nperseg - noverlap steps (noverlap defaults to
    nperseg // 2; trailing steps that do not fill a segment are dropped); each is detrended,
    windowed (``get_window(window, nperseg)``: periodic Hann by default) and its periodogram taken;
    the segment periodograms are averaged. If nperseg > T it is set to T with a warning, as scipy
    does. Float64; equals ``scipy.signal.welch(x, fs, window, nperseg, noverlap, nfft, detrend,
    scaling="density", average="mean")`` per series, several times faster on large batches
    (one batched ``scipy.fft.rfft`` over strided segment views instead of ``ShortTimeFFT``).
    ``axis``: the time axis of x; the frequency axis of psd takes its place (as
    ``scipy.signal.welch(axis=)``).
    """
    x, pos = time_last(x, axis)
    freqs, psd = _psd(x, fs, window, nperseg, noverlap, nfft, detrend, clip_nperseg=True)
    return freqs, restore_time(psd, pos, keeps_axis=True)


# ----------------------------------------------------------------------------------------------
# Spectrum summaries


def _check_spectrum(freqs, psd, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(freqs, dtype=np.float64)
    p = np.asarray(time_last(psd, axis)[0], dtype=np.float64)
    if f.ndim != 1 or p.ndim < 1 or p.shape[-1] != f.shape[0]:
        raise ValueError(f"freqs must be 1-D [F] and psd [..., F] with the same F; got {f.shape} and {p.shape}.")
    return f, p


def spectral_slope(freqs, psd, band: tuple[float, float] | None = None, *, axis: int = -1) -> SpectralSlope:
    """Power-law exponent beta of ``psd ~ f**(-beta)`` per series.

    freqs: [F], psd: [..., F] -> :class:`SpectralSlope` of [...] arrays. Ordinary least squares of
    log10(psd) on log10(f) over the bins with ``band[0] <= f <= band[1]`` (default: every bin) and
    ``f > 0``; bins where psd <= 0 are left out of that series' fit (they have no log-power), a
    NaN bin makes that series' result NaN. beta = -slope (white noise 0, pink 1, random walk 2 at
    low frequency). r2 is the coefficient of determination of the fit, f_lo and f_hi the lowest and
    highest frequency fitted; fewer than two usable bins give NaN. Float64. The slope of an AR(1)
    spectrum is not 0 either (phi = 0.9 gives about 1.5 over a Welch band): say which model fits
    (:func:`spectral_shape`) before reading beta as a power-law exponent. ``axis``: the frequency
    axis of psd (results have psd's shape without it).
    """
    f, p = _check_spectrum(freqs, psd, axis)
    lo, hi = (0.0, np.inf) if band is None else (float(band[0]), float(band[1]))
    if not lo <= hi:
        raise ValueError(f"band must be (low, high) with low <= high; got {band!r}.")
    in_band = (f > 0) & (f >= lo) & (f <= hi)
    if not in_band.any():
        raise ValueError(f"No frequency bin with f > 0 lies in band {band!r}.")
    f, p = f[in_band], p[..., in_band]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (~(p <= 0)).astype(np.float64)  # weight 0 for empty bins; NaN bins stay (and propagate)
        logp = np.log10(np.where(w > 0, p, 1.0))
        logf = np.log10(f)
        n = w.sum(axis=-1)
        mx = (w * logf).sum(axis=-1) / n
        my = (w * logp).sum(axis=-1) / n
        dx = (logf - mx[..., None]) * w
        dy = (logp - my[..., None]) * w
        sxx = (dx * dx).sum(axis=-1)
        sxy = (dx * dy).sum(axis=-1)
        syy = (dy * dy).sum(axis=-1)
        slope = sxy / sxx
        r2 = np.where(syy > 0, sxy * sxy / (sxx * syy), 1.0)  # an exactly flat fit is perfect
    bad = (n < 2) | ~(sxx > 0) | np.isnan(slope)
    used = np.broadcast_to(w > 0, p.shape)
    f_lo = np.where(used, f, np.inf).min(axis=-1)
    f_hi = np.where(used, f, -np.inf).max(axis=-1)
    return SpectralSlope(
        beta=np.where(bad, np.nan, -slope),
        intercept=np.where(bad, np.nan, my - slope * mx),
        r2=np.where(bad, np.nan, r2),
        nbins=n.astype(np.int64),
        f_lo=np.where(bad, np.nan, f_lo),
        f_hi=np.where(bad, np.nan, f_hi),
    )


def band_power_ratio(freqs, psd, split: float | None = None, *, axis: int = -1) -> np.ndarray:
    """Low- vs high-frequency power per unit bandwidth: the "smooth vs jittery" score.

    freqs: [F], psd: [..., F] -> [...] (float64) = mean psd over bins with ``0 < f < split`` divided
    by mean psd over bins with ``f >= split``. The default split is half the highest frequency,
    i.e. fs/4 for an even segment length (nperseg=256 from :func:`welch`), where the two bands have
    equal width and the score is the ratio of their energies. White noise scores about 1 whatever
    the split; > 1 means power concentrated at low frequency (smooth, e.g. AR(1) with phi > 0),
    < 1 at high frequency (jittery, e.g. phi < 0). The DC bin is excluded. NaN propagates; a
    series with no power in the high band gives inf (no warning). ``axis``: the frequency axis of
    psd (the result has psd's shape without it).
    """
    f, p = _check_spectrum(freqs, psd, axis)
    split = f[-1] / 2.0 if split is None else float(split)
    low = (f > 0) & (f < split)
    high = f >= split
    if not low.any() or not high.any():
        raise ValueError(
            f"split={split} leaves an empty band for frequencies in [{f[0]}, {f[-1]}]; choose "
            "0 < split <= max(freqs) above the first non-zero bin."
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[..., low].mean(axis=-1) / p[..., high].mean(axis=-1)


def spectral_flatness(psd, *, drop_dc: bool = True, axis: int = -1) -> np.ndarray:
    """Wiener entropy: geometric over arithmetic mean of the psd bins, per series.

    psd: [..., F] -> [...] in [0, 1] (float64): 1 for a perfectly flat spectrum, near 1 for a
    well-averaged Welch estimate of white noise (a raw periodogram of white noise, whose bins are
    exponential, gives about exp(-gamma) = 0.56), towards 0 for peaked or power-law spectra.
    ``drop_dc=True`` ignores the first bin, the f = 0 bin of :func:`welch`/:func:`periodogram`
    output, which detrending empties. A zero bin gives 0, an all-zero psd (a constant series)
    gives NaN, NaN propagates; no warnings. ``axis``: the frequency axis of psd.
    """
    p = np.asarray(time_last(psd, axis)[0], dtype=np.float64)
    if p.ndim < 1:
        raise ValueError("psd must be [..., F] with frequency last.")
    if drop_dc:
        p = p[..., 1:]
    if p.shape[-1] < 1:
        raise ValueError("psd has no frequency bins left to measure flatness.")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(np.log(p).mean(axis=-1)) / p.mean(axis=-1)


# ----------------------------------------------------------------------------------------------
# Spectral shape: white vs Lorentzian (AR(1)) vs power law, by Whittle likelihood and AIC

_PHI_GRID = np.tanh(np.linspace(-5.0, 5.0, 501))  # |phi| up to 0.99991, dense near +-1
_BETA_GRID = np.linspace(-2.0, 5.0, 351)


def _profile_nll(p: np.ndarray, log_g: np.ndarray) -> np.ndarray:
    """Whittle NLL of ``S = c / g`` with the scale c profiled out, for every grid row of
    ``log_g: [G, F]``: ``F log(mean_f(p g)) - sum_f log g + F`` -> ``[N, G]`` for ``p: [N, F]``
    (one matrix product)."""
    n = float(p.shape[-1])
    c = p @ np.exp(log_g).T / n
    return n * np.log(c) - log_g.sum(axis=-1) + n


def _refine(grid: np.ndarray, nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid minimum of ``nll: [..., G]`` refined by the parabola through it and its neighbours;
    returns ``(argument, nll at the grid minimum)`` (the parabola moves at most one grid step)."""
    filled = np.where(np.isnan(nll), np.inf, nll)
    k = np.clip(filled.argmin(axis=-1), 1, grid.size - 2)
    y0, y1, y2 = (np.take_along_axis(nll, (k + d)[..., None], -1)[..., 0] for d in (-1, 0, 1))
    den = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(den > 0, 0.5 * (y0 - y2) / den, 0.0)
    shift = np.clip(np.nan_to_num(shift), -1.0, 1.0)
    x = grid[k] + shift * np.where(shift >= 0, grid[np.minimum(k + 1, grid.size - 1)] - grid[k], grid[k] - grid[k - 1])
    best = np.min(filled, axis=-1)
    return x, np.where(np.isfinite(best), best, np.nan)


def spectral_shape(
    freqs, psd, *, fs: float = 1.0, dof: float = 2.0, band=None, margin: float = 2.0, axis: int = -1
) -> SpectralShape:
    """Which spectral model fits each series: white, Lorentzian (AR(1)) or power law.

    freqs: [F], psd: [..., F] -> :class:`SpectralShape` of [...] arrays (float64). Each model is
    fitted by maximising the Whittle likelihood of the estimate, which treats each bin as
    ``S(f) chi^2_dof / dof``: ``NLL = (dof / 2) sum_f [log S(f) + psd(f) / S(f)]`` over the bins
    with ``f > 0`` (and inside ``band``, if given). The scale c is profiled out in closed form;
    phi (tanh-spaced grid, |phi| <= 0.9999) and beta (grid on [-2, 5] in steps of 0.02) are
    minimised on a grid refined by a parabola. ``AIC = 2 k + 2 NLL`` with k = 1, 2, 2.

    Pass a raw periodogram (:func:`periodogram`, boxcar window: independent bins, ``dof=2``) for
    the likelihood to be exact asymptotically; a Welch estimate of K non-overlapping segments has
    ``dof = 2K`` but correlated neighbouring bins (overlap, window), which inflates the AIC
    differences.

    Verdict rule (``margin`` in AIC units, default 2): the model with the lowest AIC wins if it
    beats both others by more than ``margin``; if it is the Lorentzian or the power law and beats
    white but not the other by ``margin``, the verdict is ``indistinguishable``; if the best is
    within ``margin`` of white, the verdict is ``white`` (the simpler model). ``best`` and
    ``verdict`` are numpy str arrays (dtype ``<U..``) of names from :data:`SHAPE_MODELS` and
    :data:`SHAPE_VERDICTS`. A constant series (all-zero psd) or a NaN bin gives ``"invalid"``
    (:data:`SHAPE_INVALID`, in neither tuple) for both, and NaN fits. ``axis``: the frequency axis
    of psd (fields have psd's shape without it; ``aic`` adds the model axis last).
    """
    fields = _shape_fields(freqs, psd, fs=fs, dof=dof, band=band, margin=margin, axis=axis)
    fields["best"] = verdict_names(fields["best"], SHAPE_MODELS, invalid=SHAPE_INVALID)
    fields["verdict"] = verdict_names(fields["verdict"], SHAPE_VERDICTS, invalid=SHAPE_INVALID)
    return SpectralShape(**fields)


def _spectral_shape_codes(
    freqs, psd, *, fs: float = 1.0, dof: float = 2.0, band=None, margin: float = 2.0, axis: int = -1
) -> SpectralShape:
    """:func:`spectral_shape` with compact int8 codes for ``best`` (index into :data:`SHAPE_MODELS`)
    and ``verdict`` (index into :data:`SHAPE_VERDICTS`), -1 for a NaN series: for the studies that
    count verdicts over many series."""
    return SpectralShape(**_shape_fields(freqs, psd, fs=fs, dof=dof, band=band, margin=margin, axis=axis))


def _shape_fields(freqs, psd, *, fs: float, dof: float, band, margin: float, axis: int) -> dict:
    """The fields of :func:`spectral_shape`, ``best`` and ``verdict`` as int8 codes (-1: NaN series)."""
    f, p = _check_spectrum(freqs, psd, axis)
    if not dof > 0 or not margin >= 0:
        raise ValueError(f"dof must be > 0 and margin >= 0; got dof={dof}, margin={margin}.")
    lo, hi = (0.0, np.inf) if band is None else (float(band[0]), float(band[1]))
    keep = (f > 0) & (f >= lo) & (f <= hi)
    if keep.sum() < 3:
        raise ValueError(f"spectral_shape needs at least 3 bins with f > 0 in band {band!r}; got {int(keep.sum())}.")
    f, p = f[keep], p[..., keep]
    lead = p.shape[:-1]
    p = p.reshape(-1, f.size)
    bad = np.isnan(p).any(axis=-1) | ~(np.nan_to_num(p).sum(axis=-1) > 0)
    p = np.where(bad[:, None], 1.0, p)
    n = float(f.size)
    s2 = np.sin(np.pi * f / fs) ** 2
    log_g_phi = np.log((1.0 - _PHI_GRID[:, None]) ** 2 + 4.0 * _PHI_GRID[:, None] * s2)  # [G, F]
    log_g_beta = _BETA_GRID[:, None] * np.log(f / fs)[None, :]  # S = c f^-beta <=> g = f^beta
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        nll_white = n * np.log(p.mean(axis=-1)) + n
        phi, nll_lor = _refine(_PHI_GRID, _profile_nll(p, log_g_phi))
        beta, nll_pow = _refine(_BETA_GRID, _profile_nll(p, log_g_beta))
    scale = dof / 2.0
    aic = np.stack([2 * 1 + 2 * scale * nll_white, 2 * 2 + 2 * scale * nll_lor, 2 * 2 + 2 * scale * nll_pow], axis=-1)
    best = aic.argmin(axis=-1)
    srt = np.sort(aic, axis=-1)
    gap_next = srt[:, 1] - srt[:, 0]
    gap_white = aic[:, 0] - srt[:, 0]
    verdict = np.where(best == 0, 0, np.where(gap_white <= margin, 0, np.where(gap_next > margin, best, 3)))
    # best == 0 with the others within margin is still white (the simpler model)
    codes = np.where(bad, -1, verdict).astype(np.int8)
    nan = lambda x: np.where(bad, np.nan, x).reshape(lead)  # noqa: E731
    return dict(
        phi=nan(phi),
        beta=nan(beta),
        aic=np.where(bad[:, None], np.nan, aic).reshape(*lead, 3),
        delta_aic=nan(aic[:, 1] - aic[:, 2]),
        best=np.where(bad, -1, best).astype(np.int8).reshape(lead),
        verdict=codes.reshape(lead),
        nbins=np.full(lead, f.size, np.int64),
        f_lo=float(f[0]),
        f_hi=float(f[-1]),
        dof=float(dof),
        margin=float(margin),
    )
