"""Variance scaling of the time average with window length and the Thirumalai-Mountain fluctuation
metric (descriptive; see :mod:`rvsp_jax.analysis.ergodicity`)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.stats

from rvsp_jax.analysis._common import as_int as _as_int
from rvsp_jax.analysis._common import ensemble_last, restore_ensemble
from rvsp_jax.analysis.ergodicity._base import (
    _FIT_TAUS,
    _as_ensemble,
    _as_rng,
    _check_alpha,
    _deviations,
    _flat,
    _map_observables,
    _ols_slope,
    _safe_log,
)
from rvsp_jax.analysis.ergodicity.averages import integrated_autocorr_time
from rvsp_jax.analysis.ergodicity.results import FluctuationMetric, VarianceScaling


def _fit_start(tau: np.ndarray, upper: int) -> np.ndarray:
    """First point of a log-log fit ending at ``upper``: about FIT_TAUS * tau, at most upper // 4."""
    t = np.where(np.isfinite(tau), np.maximum(tau, 1.0), 1.0)
    return np.clip(np.ceil(_FIT_TAUS * t), 1, max(1, upper // 4)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Mean-ergodicity by variance scaling


def _default_windows(T: int, n_windows: int, min_blocks: int) -> np.ndarray:
    hi = T // min_blocks
    if hi < 2:
        raise ValueError(
            f"x has {T} steps; variance scaling needs windows up to T // min_blocks >= 2 "
            f"(min_blocks={min_blocks}): pass a longer series or a smaller min_blocks."
        )
    return np.unique(np.round(np.geomspace(1, hi, n_windows)).astype(np.int64))


def _block_sq_dev(dev: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """r[s, p, k] = mean over W_k-blocks of (block mean of dev_s)^2. dev: [S, p, T] -> [S, p, K]."""
    T = dev.shape[-1]
    cs = np.concatenate([np.zeros(dev.shape[:-1] + (1,)), np.cumsum(dev, axis=-1)], axis=-1)
    r = np.empty(dev.shape[:-1] + (len(windows),))
    for k, w in enumerate(windows):
        ends = T - w * np.arange(T // w)
        bm = (cs[..., ends] - cs[..., ends - w]) / w
        r[..., k] = (bm * bm).mean(axis=-1)
    return r


def _resample_counts(uniforms: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Bootstrap counts [B, S]: n_valid draws with replacement among the valid members per row.

    uniforms: [B, S] U(0, 1) (shared by every observable, so results do not depend on blocking);
    valid: [S] bool.
    """
    B, S = uniforms.shape
    idx = np.flatnonzero(valid)
    n = idx.size
    draws = idx[np.minimum((uniforms[:, :n] * n).astype(np.int64), n - 1)]
    flat = (draws + S * np.arange(B)[:, None]).ravel()
    return np.bincount(flat, minlength=B * S).reshape(B, S).astype(float)


def _scaling_block(dev, valid, n, fit_start, windows, uniforms, alpha):
    """Variance scaling for a block (dev, valid, n from _deviations); see :func:`variance_scaling`.

    Returns variance [p, K] and slope, lo, hi [p].
    """
    r = _block_sq_dev(dev, windows)  # [S, p, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = 1.0 / np.where(n > 1, n - 1, np.nan)  # [p]
    variance = r.sum(axis=0) * scale[:, None]  # [p, K]
    logw = np.log(windows.astype(float))
    use = windows[None, :] >= fit_start[:, None]  # [p, K]
    slope = _ols_slope(logw, _safe_log(variance), use)
    lo = np.full_like(slope, np.nan)
    hi = np.full_like(slope, np.nan)
    if uniforms.shape[0] > 0:
        patterns, inverse = np.unique(valid.T, axis=0, return_inverse=True)
        boot = np.empty((uniforms.shape[0],) + variance.shape)  # [B, p, K]
        for i, pattern in enumerate(patterns):
            cols = np.flatnonzero(inverse.ravel() == i)
            if not pattern.any():
                boot[:, cols] = np.nan
                continue
            counts = _resample_counts(uniforms, pattern)
            boot[:, cols] = np.einsum("bs,spk->bpk", counts, r[:, cols]) * scale[cols, None]
        boot_slope = _ols_slope(logw, _safe_log(boot), use)  # [B, p]
        ok = np.isfinite(slope) & (n > 1)
        for count in np.unique(n[ok]):
            cols = ok & (n == count)
            a = _expanded_alpha(alpha, int(count))
            q = np.quantile(boot_slope[:, cols], [a / 2, 1 - a / 2], axis=0)
            lo[cols], hi[cols] = q[0], q[1]
    return variance, slope, lo, hi


def _interval_alpha(alpha, ci) -> float:
    """The level of variance_scaling's interval from ``alpha`` (or the deprecated coverage ``ci``).

    Computed as ``1 - (1 - alpha)``: the float the former ``ci = 1 - alpha`` argument gave (0.95
    -> 0.050000000000000044), so intervals are bit-identical to those computed with ``ci``."""
    if ci is not None:
        warnings.warn("variance_scaling(ci=...) is now alpha = 1 - ci", DeprecationWarning, stacklevel=3)
        return 1.0 - _check_alpha(ci, "ci")
    alpha = _check_alpha(alpha)
    if alpha > 0.5:
        raise ValueError(f"alpha is the significance level (0.05 for a 95% interval); got {alpha!r}.")
    return 1.0 - (1.0 - alpha)


def _expanded_alpha(alpha: float, n: int) -> float:
    """Tail level of the expanded percentile interval for n resampled units (Hesterberg 2015).

    The plain percentile interval is too narrow for small n; using the bootstrap quantiles at
    ``a/2`` with ``z_{a/2} = sqrt(n / (n - 1)) t_{alpha/2, n-1}`` corrects it to first order
    (T. C. Hesterberg, "What teachers should know about the bootstrap", Am. Stat. 69(4), 2015).
    n = 4: a = 0.0002 (the bootstrap range); n = 8: 0.012; n = 64: 0.044.
    """
    z = math.sqrt(n / (n - 1)) * scipy.stats.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * scipy.stats.norm.sf(z))


def variance_scaling(
    x,
    *,
    windows=None,
    n_windows: int = 20,
    min_blocks: int = 4,
    fit_start: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    rng: int | np.random.Generator = 0,
    member_axis: int = 0,
    axis: int = -1,
    ci: float | None = None,
) -> VarianceScaling:
    """Variance across members of each member's W-step time average, versus W; log-log slope.

    x: [S, ..., T]. For each window W the series is cut into ``T // W`` non-overlapping blocks
    aligned to its end; ``variance[W]`` is the across-member variance (ddof=1, finite members) of the
    block means, averaged over blocks. Ergodic in the mean with short memory: ``~ tau_int sigma^2 / W``,
    slope -1 for ``W >> tau_int`` (AR(1): local slope ``-1 + tau/(2W)`` roughly); member-specific
    offsets or random walks: a plateau, slope 0. Float64 throughout.

    The slope is fitted by least squares on log-log axes over ``W >= fit_start``; by default
    ``fit_start = clip(ceil(4 tau_int), 1, W_max // 4)`` with tau_int from
    :func:`integrated_autocorr_time`, so the fit covers at least two octaves of the largest windows.

    Confidence interval: expanded percentile bootstrap over members (resampled with replacement,
    ``n_boot`` times, among the finite members; the percentile levels are widened for few members
    as in Hesterberg 2015, see ``_expanded_alpha``; measured coverage of 95% intervals for iid
    ensembles: 0.79, 0.92, 0.945 with 4, 8, 32 members). Each resampled member carries its own
    block-mean deviations from
    the full-ensemble mean path (a bootstrap of per-member contributions); re-centering on the
    resample's mean, an O(1/S) change that is nearly the same at every W, is neglected.

    Args:
      windows: explicit window lengths (ints in [1, T]); default ``n_windows`` log-spaced from 1 to
        ``T // min_blocks``.
      n_boot: bootstrap resamples (0 skips the interval: lo/hi are NaN).
      alpha: the interval's level, a two-sided ``1 - alpha`` interval ``(lo, hi)`` (``ci``, its
        coverage ``1 - alpha``, is the former name: accepted with a DeprecationWarning).
      rng: int seed or numpy Generator for the resampling.
      member_axis, axis: the member and time axes of x; ``variance`` puts its window axis where
        time was among the axes left once members are gone.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x)
    S, T = x.shape[0], x.shape[-1]
    n_boot = _as_int(n_boot, "n_boot", 0)
    alpha = _interval_alpha(alpha, ci)
    if windows is None:
        n_windows = _as_int(n_windows, "n_windows", 2)
        windows = _default_windows(T, n_windows, _as_int(min_blocks, "min_blocks", 1))
    else:
        windows = np.unique(np.asarray(windows))
        if windows.ndim != 1 or windows.size < 2 or not np.issubdtype(windows.dtype, np.integer):
            raise ValueError(f"windows must be at least 2 distinct integers; got {windows!r}.")
        if windows[0] < 1 or windows[-1] > T:
            raise ValueError(f"windows must lie in [1, T={T}]; got {windows[0]}..{windows[-1]}.")
    x3 = _flat(x)
    P = x3.shape[1]
    if fit_start is None:
        tau = integrated_autocorr_time(x).reshape(P)
        start = _fit_start(tau, int(windows[-1]))
    else:
        tau = np.full(P, np.nan)
        start = np.full(P, _as_int(fit_start, "fit_start", 1), dtype=np.int64)
    uniforms = _as_rng(rng).random((n_boot, S))
    variance, slope, lo, hi = _map_observables(
        lambda b, s: _scaling_block(*_deviations(b), s, windows, uniforms, alpha), x3, start, cost=4
    )
    lead = x.shape[1:-1]
    return VarianceScaling(
        windows=windows,
        variance=restore_ensemble(variance.reshape(lead + (len(windows),)), pos),
        slope=slope.reshape(lead),
        lo=lo.reshape(lead),
        hi=hi.reshape(lead),
        fit_start=start.reshape(lead),
        tau_int=tau.reshape(lead),
    )


# ----------------------------------------------------------------------------------------------
# Thirumalai-Mountain fluctuation metric


def _omega_block(dev: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Omega(t) = sum_s (running mean of dev_s)^2 / n. dev: [S, p, T] -> [p, T]."""
    run = np.cumsum(dev, axis=-1) / np.arange(1, dev.shape[-1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (run * run).sum(axis=0) / np.where(n > 0, n, np.nan)[:, None]


def _omega_exponent(omega: np.ndarray, fit_start: np.ndarray, n_points: int = 32) -> np.ndarray:
    """Log-log slope of omega [p, T] over log-spaced t in [fit_start, T] -> [p]."""
    T = omega.shape[-1]
    t = np.unique(np.round(np.geomspace(1, T, 4 * n_points)).astype(np.int64))
    use = t[None, :] >= fit_start[:, None]
    return _ols_slope(np.log(t.astype(float)), _safe_log(omega[:, t - 1]), use)


def fluctuation_metric(x, *, fit_start: int | None = None, member_axis: int = 0, axis: int = -1) -> FluctuationMetric:
    """Thirumalai-Mountain fluctuation metric Omega(t) of x: [S, ..., T] and its decay exponent.

    ``Omega(t) = mean_s (xbar_s(t) - <xbar(t)>)^2`` over the finite members, with ``xbar_s(t)`` the
    running time average of member s over steps 1..t and ``<.>`` the member mean (Thirumalai,
    Mountain & Kirkpatrick, Phys. Rev. A 39, 3563, 1989). Ergodic: ``Omega(t) ~ 1/t`` (exponent -1)
    once ``t >> tau_int``; a random intercept leaves a plateau (0); a random walk grows (+1).
    The exponent is a least-squares log-log slope over log-spaced ``t >= fit_start``, by default
    ``clip(ceil(4 tau_int), 1, T // 8)``. Float64. With ``member_axis``/``axis``, omega's time axis
    stays where it was among the axes left once members are gone.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x)
    x3 = _flat(x)
    T = x.shape[-1]
    P = x3.shape[1]
    if fit_start is None:
        start = _fit_start(integrated_autocorr_time(x).reshape(P), max(1, T // 2))
    else:
        start = np.full(P, _as_int(fit_start, "fit_start", 1), dtype=np.int64)

    def block(b, s):
        dev, _, n = _deviations(b)
        omega = _omega_block(dev, n)
        return omega, _omega_exponent(omega, s)

    omega, exponent = _map_observables(block, x3, start, cost=3)
    lead = x.shape[1:-1]
    return FluctuationMetric(
        restore_ensemble(omega.reshape(lead + (T,)), pos), exponent.reshape(lead), start.reshape(lead)
    )
