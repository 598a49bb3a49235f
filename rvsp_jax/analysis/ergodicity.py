"""Ergodicity of an ensemble of scalar processes: do time averages equal ensemble averages?

Every function takes ``x: [S, ..., T]``: members on axis 0 (the project convention), time on the
last axis, any number of observables in between (``[S, T]`` one observable, ``[S, P, T]`` P of
them); results keep the middle axes. Input may be numpy or JAX, of any float dtype; all numerics run
on the host in numpy/scipy float64 and return float64 arrays.

The verdict (:func:`assess` / :func:`assess_many`: "ergodic", "non-ergodic", "non-stationary" or
"inconclusive", with its reason, effect size and, when undecided, the steps that would decide it)
rests on tests with a measured size and power (docs/calibration.md):

- a **long-run-variance ANOVA** on the deviations ``x_s(t) - <x(t)>`` from the ensemble-mean path
  (shared trends cancel): the between-member variance of the time averages against what each
  member's own long-run variance predicts, from lugsail batch means with a batch length adapted to
  the measured integrated autocorrelation time (:mod:`rvsp_jax.analysis.lrv`);
- a **variance-drift test** of the deviations (members spreading apart or converging: the window is
  not stationary);
- a **distribution check** (:func:`distribution_check`): one member's thinned time samples against
  the other members' values at the same steps, KS, Fisher-combined over independent pairs.

Descriptive tools, not used by the verdict:

- :func:`ensemble_mean`, :func:`ensemble_variance`: cross-sections per step; :func:`time_averages`
  (block means per member), :func:`running_average`.
- :func:`variance_scaling`: variance across members of the W-step time average for log-spaced W and
  its log-log slope with a member-bootstrap interval (-1: ergodic with short memory; 0: a plateau,
  member-specific means; a 1/W + var(mu) curve still has a local slope near -0.8, which is why the
  verdict no longer reads it).
- :func:`fluctuation_metric`: the Thirumalai-Mountain fluctuation metric
  ``Omega(t) = mean_s (xbar_s(t) - <xbar(t)>)^2`` of the running time averages (D. Thirumalai,
  R. D. Mountain, T. R. Kirkpatrick, Phys. Rev. A 39, 3563 (1989)), ~1/t when ergodic.
- :func:`tamsd`, :func:`ergodicity_breaking`: time-averaged MSD and the ergodicity-breaking
  parameter ``EB = <TAMSD^2>/<TAMSD>^2 - 1`` (R. Metzler, J.-H. Jeon, A. G. Cherstvy, E. Barkai,
  Phys. Chem. Chem. Phys. 16, 24128 (2014)); Brownian motion: ``EB ~ (4/3) lag/T``.
- :func:`integrated_autocorr_time`: Sokal's adaptive-window tau of the member-demeaned pooled ACF
  (biased low when T/tau is small: measured in docs/calibration.md; the verdict uses the
  batch-means tau of :func:`rvsp_jax.analysis.lrv.long_run_variance` instead).

Diverged members: a member whose series (of that observable, burn-in included) holds any NaN or inf
is excluded from every ensemble statistic and counted (``n_diverged``); it is never averaged in.
:func:`finite_members` returns the mask. Per-member outputs (:func:`time_averages`,
:func:`running_average`, :func:`tamsd`) are NaN for such a member.

Large inputs are processed in blocks of observables so that temporaries stay around 32 MiB.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable

import numpy as np
import scipy.special
import scipy.stats

from rvsp_jax.analysis import lrv
from rvsp_jax.analysis._common import (
    as_int as _as_int, as_real, block_slices, ensemble_last, fft_autocov, restore_ensemble,
    restore_members)

__all__ = [
    "VERDICTS",
    "DistributionCheck",
    "ErgodicityResult",
    "FluctuationMetric",
    "VarianceScaling",
    "assess",
    "assess_many",
    "distribution_check",
    "ensemble_mean",
    "ensemble_variance",
    "ergodicity_breaking",
    "finite_members",
    "fluctuation_metric",
    "integrated_autocorr_time",
    "running_average",
    "tamsd",
    "time_averages",
    "variance_scaling",
]

# Elements of the largest [S, p, T] temporary per block of observables (32 MiB of float64).
_BLOCK_ELEMENTS = 1 << 22
# Fits start at FIT_TAUS integrated autocorrelation times (local AR(1) slope there: about -0.87).
_FIT_TAUS = 4.0
# Distribution check: fewest thinned samples per member; most thinned samples per member (bounds
# the cost); cross-section values per thinned step and pair.
_MIN_THINNED = 4
_KS_MAX_SAMPLES = 2500
_POOL_RATIO = 4
# The distribution check may decide "non-ergodic" only where the window spans RESOLVED_TAUS tau_upper
# (below about 50 tau a member has decorrelated too few times for its time distribution to be its
# stationary law).
_RESOLVED_TAUS = 50.0
# Variance-drift test: equal parts of the window.
_DRIFT_SEGMENTS = 4

VERDICTS = ("ergodic", "non-ergodic", "non-stationary", "inconclusive")


# ----------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class VarianceScaling:
    """Variance across members of the W-step time average, and its log-log slope.

    windows: [K]            window lengths W (int, log-spaced).
    variance: [..., K]      mean over the non-overlapping W-blocks (aligned to the end of the series)
                            of the across-member variance (ddof=1) of the block means.
    slope: [...]            least-squares slope of log(variance) on log(W) over W >= fit_start.
    ci_low, ci_high: [...]  percentile bootstrap interval of the slope (members resampled).
    fit_start: [...]        first window of the fit (int).
    tau_int: [...]          integrated autocorrelation time used for fit_start (NaN if given).
    """

    windows: np.ndarray
    variance: np.ndarray
    slope: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    fit_start: np.ndarray
    tau_int: np.ndarray


@dataclasses.dataclass(frozen=True)
class FluctuationMetric:
    """Thirumalai-Mountain fluctuation metric of the running time averages.

    omega: [..., T]   Omega(t) for t = 1..T (index t-1); ddof=0 over the finite members.
    exponent: [...]   least-squares slope of log Omega on log t over t >= fit_start (log-spaced
                      points); -1 when ergodic with short memory, 0 with a random intercept,
                      +1 for a random walk.
    fit_start: [...]  first t of the fit (int).
    """

    omega: np.ndarray
    exponent: np.ndarray
    fit_start: np.ndarray


@dataclasses.dataclass(frozen=True)
class DistributionCheck:
    """One member's time samples against the other members' values at the same steps (KS).

    stat: [...]      mean KS distance D over the pairs.
    pvalue: [...]    Fisher combination of the pairs' KS p-values (NaN if not computable).
    n_pairs: [...]   independent pairs compared (int).
    thin: [...]      thinning stride of the member series (int).
    n_samples: [...] thinned samples per member (int).
    """

    stat: np.ndarray
    pvalue: np.ndarray
    n_pairs: np.ndarray
    thin: np.ndarray
    n_samples: np.ndarray


@dataclasses.dataclass(frozen=True)
class ErgodicityResult:
    """Verdict on ergodicity and the numbers behind it (see :func:`assess_many` for the rule).

    From :func:`assess_many` every field but ``n_steps``/``alpha`` is an array over the observable
    axes ``[...]`` (``verdict``/``reason`` of dtype str); from :func:`assess` they are scalars.

    verdict            "ergodic", "non-ergodic", "non-stationary" or "inconclusive".
    reason             one sentence in plain words with the numbers that decided it.
    steps_needed       for an inconclusive verdict because the series is short for its memory: the
                       analysed steps that would decide it (a lower bound); else 0.
    ratio              between-member variance of the time average over its ergodic expectation
                       (1 = ergodic in the mean); ratio_ci_low/high its (1 - alpha) interval.
    mean_pvalue        p-value of the long-run-variance ANOVA (F with mean_df1, mean_df2 dof).
    var_mu             member-specific variance of the means, (ratio - 1) lrv / n (may be < 0 by
                       chance), var_mu_ci_low/high its interval (clipped at 0).
    mde_var_mu         smallest var(mu) the ANOVA finds with 80% power here.
    lrv, gamma0        long-run variance and variance of the deviations from the ensemble mean.
    tau_int            integrated autocorrelation time lrv / gamma0 (steps; batch means; a lower
                       bound where ``tau_resolved`` is False); tau_upper its conservative bound.
    decay_length       correlation decay length 2 sum k gamma(k) / sum gamma(k) (steps).
    batch_length, n_batches
                       the batch means of the test (L >= 6 tau and >= 10 decay lengths, K >= 3,
                       where resolved).
    drift, drift_pvalue
                       fitted relative change of the deviations' mean square over the window, and
                       the variance-drift test's p-value.
    ks_stat, ks_pvalue distribution check (mean KS distance, Fisher-combined p-value);
                       ks_decisive: whether the window spans 50 tau_upper (only then may it decide).
    slope, slope_ci_low, slope_ci_high, fit_start, omega_exponent
                       descriptive: variance-scaling slope with its bootstrap interval (NaN with
                       n_boot = 0), its first window, and the Omega(t) exponent.
    n_members          finite members used; ``n_diverged`` members excluded (non-finite values).
    n_steps            steps analysed (after burn-in); ``alpha`` the level of "non-ergodic".
    """

    verdict: np.ndarray | str
    reason: np.ndarray | str
    steps_needed: np.ndarray | int
    ratio: np.ndarray | float
    ratio_ci_low: np.ndarray | float
    ratio_ci_high: np.ndarray | float
    mean_pvalue: np.ndarray | float
    mean_df1: np.ndarray | float
    mean_df2: np.ndarray | float
    var_mu: np.ndarray | float
    var_mu_ci_low: np.ndarray | float
    var_mu_ci_high: np.ndarray | float
    mde_var_mu: np.ndarray | float
    lrv: np.ndarray | float
    gamma0: np.ndarray | float
    tau_int: np.ndarray | float
    tau_upper: np.ndarray | float
    decay_length: np.ndarray | float
    tau_resolved: np.ndarray | bool
    batch_length: np.ndarray | int
    n_batches: np.ndarray | int
    drift: np.ndarray | float
    drift_pvalue: np.ndarray | float
    ks_stat: np.ndarray | float
    ks_pvalue: np.ndarray | float
    ks_decisive: np.ndarray | bool
    slope: np.ndarray | float
    slope_ci_low: np.ndarray | float
    slope_ci_high: np.ndarray | float
    fit_start: np.ndarray | int
    omega_exponent: np.ndarray | float
    n_members: np.ndarray | int
    n_diverged: np.ndarray | int
    n_steps: int
    alpha: float


# ----------------------------------------------------------------------------------------------
# Input handling and shared building blocks


def _as_ensemble(x, name: str = "x") -> np.ndarray:
    """x -> float ndarray [S, ..., T] (at least 2 axes), or ValueError.

    Float inputs keep their dtype (blocks are converted to float64 as they are processed, so a
    large float32 array is never copied whole); other real inputs become float64.
    """
    arr = as_real(x, name=name, min_ndim=2,
                  what="a member axis (first) and a time axis (last), e.g. x: [S, T] or [S, P, T]",
                  hint="For a single series use x[None].")
    if arr.shape[0] < 1 or arr.shape[-1] < 1:
        raise ValueError(f"{name} has an empty member or time axis: shape {arr.shape}.")
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be an int seed or a numpy Generator; got {rng!r}.")


def _flat(x: np.ndarray) -> np.ndarray:
    """[S, ..., T] -> [S, P, T] (a view when possible)."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _map_observables(fn: Callable[..., tuple], x3: np.ndarray, *args, cost: int = 1) -> tuple:
    """Applies fn(x3[:, block], *args[block]) -> tuple of [p, ...] arrays over blocks of observables.

    x3: [S, P, T]; args: arrays with P on axis 0 (sliced alongside). Returns the concatenated tuple.
    cost: temporaries per element of x3, to size the blocks.
    """
    S, P, T = x3.shape
    parts = [
        fn(x3[:, rows].astype(np.float64), *(a[rows] for a in args))
        for rows in block_slices(P, _BLOCK_ELEMENTS // max(1, S * T * cost))
    ]
    return tuple(np.concatenate(col, axis=0) for col in zip(*parts))


def finite_members(x, *, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """x: [S, ..., T] -> bool [S, ...]: True where member s's series is finite at every step.

    (With ``member_axis``/``axis``: x's shape without the time axis.)"""
    x, pos = ensemble_last(x, member_axis, axis)
    return restore_members(np.isfinite(_as_ensemble(x)).all(axis=-1), pos, keeps_time=False)


def _deviations(x3: np.ndarray, valid: np.ndarray | None = None):
    """Fluctuations around the ensemble-mean path over finite members.

    x3: [S, p, T]; valid: [S, p] bool (default: finite members).
    Returns dev [S, p, T] (x - <x>; exactly 0 for excluded members, and for every member of an
    observable whose finite members are identical at every step), valid [S, p], n [p] (int).
    """
    if valid is None:
        valid = np.isfinite(x3).all(axis=-1)
    n = valid.sum(axis=0)
    everyone = bool(valid.all())
    xz = x3 if everyone else np.where(valid[..., None], x3, 0.0)
    mean = xz.sum(axis=0) / np.maximum(n, 1)[:, None]
    dev = xz - mean
    if not everyone:
        dev *= valid[..., None]
    # Members identical at every step: exactly no fluctuation (not rounding noise of the mean).
    # Only observables whose deviations are within rounding of 0 can be such; check those exactly.
    scale = np.abs(mean).max(axis=-1)  # [p]
    small = np.flatnonzero(np.abs(dev).max(axis=(0, 2)) <= 64 * np.finfo(float).eps * scale)
    for j in small:
        v = x3[valid[:, j], j]
        if v.size and (v == v[:1]).all():
            dev[:, j] = 0.0
    return dev, valid, n


def _ols_slope(logx: np.ndarray, logy: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Least-squares slope of logy on logx over the points where ``use`` holds.

    logx: [K]; logy: [..., p, K]; use: [p, K] bool. Returns [..., p]; NaN with fewer than 2 points
    or a non-finite logy among the used points.
    """
    w = use.astype(float)
    cnt = w.sum(-1, keepdims=True)
    xbar = (w * logx).sum(-1, keepdims=True) / np.maximum(cnt, 1)
    dx = w * (logx - xbar)
    sxx = (dx * dx).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = dx / sxx[:, None]
        slope = (np.where(use, logy, 0.0) * a).sum(-1)
        bad = ~np.all(np.isfinite(logy) | ~use, axis=-1)
    return np.where((cnt[:, 0] >= 2) & ~bad, slope, np.nan)


def _safe_log(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)


# ----------------------------------------------------------------------------------------------
# Cross-sections and time averages


def ensemble_mean(x, *, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """x: [S, ..., T] -> [..., T]: mean over the finite members at each step (NaN if none)."""
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x).astype(np.float64, copy=False)
    x3 = _flat(x)
    valid = np.isfinite(x3).all(axis=-1)
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid[..., None], x3, 0.0).sum(axis=0) / n[:, None]
    return restore_ensemble(mean.reshape(x.shape[1:]), pos)


def ensemble_variance(x, *, ddof: int = 1, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """x: [S, ..., T] -> [..., T]: variance over the finite members at each step.

    Divides by ``n_finite - ddof`` (ddof=1: unbiased, as ``np.var(x, axis=0, ddof=1)`` on the finite
    members); NaN where ``n_finite <= ddof``.
    """
    ddof = _as_int(ddof, "ddof", 0)
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x).astype(np.float64, copy=False)
    dev, _, n = _deviations(_flat(x))
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (dev * dev).sum(axis=0) / np.where(n > ddof, n - ddof, np.nan)[:, None]
    return restore_ensemble(var.reshape(x.shape[1:]), pos)


def time_averages(x, window: int, *, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """x: [S, ..., T] -> [S, ..., T // window]: each member's mean over non-overlapping windows.

    Blocks are aligned to the end of the series (the first ``T % window`` steps are dropped, the
    earliest being the least converged). A member with a non-finite value gets NaN blocks.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x).astype(np.float64, copy=False)
    T = x.shape[-1]
    window = _as_int(window, "window", 1)
    if window > T:
        raise ValueError(f"window={window} exceeds the {T} steps of x; pass window <= T.")
    nb = T // window
    out = x[..., T - nb * window :].reshape(x.shape[:-1] + (nb, window)).mean(axis=-1)
    return restore_members(np.where(finite_members(x)[..., None], out, np.nan), pos)


def running_average(x, *, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """x: [S, ..., T] -> [S, ..., T]: xbar_s(t) = (1/t) sum_{u <= t} x_s(u), t = 1..T (cumulative).

    A member with a non-finite value gets NaN throughout.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x).astype(np.float64, copy=False)
    run = np.cumsum(x, axis=-1) / np.arange(1, x.shape[-1] + 1)
    return restore_members(np.where(finite_members(x)[..., None], run, np.nan), pos)


# ----------------------------------------------------------------------------------------------
# Integrated autocorrelation time


def _tau_block(dev: np.ndarray, n: np.ndarray, c: float) -> np.ndarray:
    """Sokal-windowed tau_int of the member-averaged autocovariance. dev: [S, p, T] -> [p]."""
    S, p, T = dev.shape
    d = dev - dev.mean(axis=-1, keepdims=True)  # each member about its own time mean
    # member-averaged autocovariance sums: power spectra pooled over members before inverting
    acov = fft_autocov(d, 2 * T - 1, T, pool=lambda power: power.sum(axis=0) / np.maximum(n, 1)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = acov / acov[:, :1]
    taus = 2.0 * np.cumsum(rho, axis=-1) - 1.0  # tau(M) = 1 + 2 sum_{k=1..M} rho(k)
    below = np.arange(T) < c * taus
    window = np.where(below.all(axis=-1), T - 1, np.argmin(below, axis=-1))
    tau = np.take_along_axis(taus, window[:, None], axis=-1)[:, 0]
    return np.where(acov[:, 0] > 0, tau, np.nan)


def integrated_autocorr_time(x, *, c: float = 5.0, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """x: [S, ..., T] -> [...]: integrated autocorrelation time tau_int = 1 + 2 sum_k rho(k), in steps.

    rho is the autocorrelation of the fluctuations ``x_s(t) - <x(t)>`` about each member's own time
    mean, averaged over the finite members (autocovariances pooled, then normalised), computed by FFT
    in float64. The sum is truncated with Sokal's automatic window: the smallest M with
    ``M >= c * tau(M)`` (A. Sokal, "Monte Carlo methods in statistical mechanics", 1997; the same rule
    as ``emcee.autocorr.integrated_time``, applied to the pooled ACF). For AR(1),
    ``tau_int = (1 + phi)/(1 - phi)``. NaN for an observable without fluctuations.
    """
    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    if not c > 0:
        raise ValueError(f"c must be positive; got {c!r}.")
    def block(b):
        dev, _, n = _deviations(b)
        return (_tau_block(dev, n, float(c)),)

    (tau,) = _map_observables(block, _flat(x), cost=6)
    return tau.reshape(x.shape[1:-1])


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

    Returns variance [p, K] and slope, ci_low, ci_high [p].
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


def _expanded_alpha(alpha: float, n: int) -> float:
    """Tail level of the expanded percentile interval for n resampled units (Hesterberg 2015).

    The plain percentile interval is too narrow for small n; using the bootstrap quantiles at
    ``a/2`` with ``z_{a/2} = sqrt(n / (n - 1)) t_{alpha/2, n-1}`` corrects it to first order
    (T. C. Hesterberg, "What teachers should know about the bootstrap", Am. Stat. 69(4), 2015).
    n = 4: a = 0.0002 (the bootstrap range); n = 8: 0.012; n = 64: 0.044.
    """
    z = math.sqrt(n / (n - 1)) * scipy.stats.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * scipy.stats.norm.sf(z))


def _check_alpha(alpha, name: str = "alpha") -> float:
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1):
        raise ValueError(f"{name} must be in (0, 1); got {alpha!r}.")
    return float(alpha)


def variance_scaling(
    x,
    *,
    windows=None,
    n_windows: int = 20,
    min_blocks: int = 4,
    fit_start: int | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    rng: int | np.random.Generator = 0,
    member_axis: int = 0,
    axis: int = -1,
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
      n_boot: bootstrap resamples (0 skips the interval: ci_low/ci_high are NaN).
      ci: coverage of the interval.
      rng: int seed or numpy Generator for the resampling.
      member_axis, axis: the member and time axes of x; ``variance`` puts its window axis where
        time was among the axes left once members are gone.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x)
    S, T = x.shape[0], x.shape[-1]
    n_boot = _as_int(n_boot, "n_boot", 0)
    alpha = 1.0 - _check_alpha(ci, "ci")
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
        ci_low=lo.reshape(lead),
        ci_high=hi.reshape(lead),
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


def fluctuation_metric(x, *, fit_start: int | None = None, member_axis: int = 0,
                       axis: int = -1) -> FluctuationMetric:
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
    return FluctuationMetric(restore_ensemble(omega.reshape(lead + (T,)), pos), exponent.reshape(lead),
                             start.reshape(lead))


# ----------------------------------------------------------------------------------------------
# Ergodicity-breaking parameter of the time-averaged MSD


def _as_lags(lags, T: int) -> np.ndarray:
    lags = np.atleast_1d(np.asarray(lags))
    if lags.ndim != 1 or lags.size == 0 or not np.issubdtype(lags.dtype, np.integer):
        raise ValueError(f"lags must be a non-empty 1-D sequence of integers; got {lags!r}.")
    if lags.min() < 1 or lags.max() >= T:
        raise ValueError(f"lags must lie in [1, T-1] = [1, {T - 1}]; got {lags.min()}..{lags.max()}.")
    return lags.astype(np.int64)


def tamsd(x, lags, *, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """Time-averaged mean squared displacement of each member: x: [S, ..., T] -> [S, ..., L].

    ``TAMSD_s(lag) = (1/(T - lag)) sum_{t=0}^{T-lag-1} (x_s(t + lag) - x_s(t))^2`` (Metzler et al.
    2014, discretised: T recorded positions). Float64; NaN for a member with non-finite values.
    With ``member_axis``/``axis``, members stay on their axis and the lag axis takes time's place.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x).astype(np.float64, copy=False)
    lags = _as_lags(lags, x.shape[-1])
    out = np.stack([np.mean((x[..., lag:] - x[..., :-lag]) ** 2, axis=-1) for lag in lags], axis=-1)
    return restore_members(np.where(finite_members(x)[..., None], out, np.nan), pos)


def ergodicity_breaking(x, lags, *, member_axis: int = 0, axis: int = -1) -> np.ndarray:
    """Ergodicity-breaking parameter ``EB(lag) = <TAMSD^2>/<TAMSD>^2 - 1``: [S, ..., T] -> [..., L].

    ``<.>`` is the mean over finite members (ddof=0), TAMSD from :func:`tamsd`. R. Metzler, J.-H. Jeon,
    A. G. Cherstvy, E. Barkai, Phys. Chem. Chem. Phys. 16, 24128 (2014). EB -> 0 when the
    time-averaged MSD is self-averaging (ergodic increments): for Brownian motion
    ``EB ~ (4/3) lag/T`` for ``1 << lag << T``; it stays finite for non-ergodic diffusion
    (e.g. continuous-time random walks). It measures the increments only: a constant member-specific
    offset (random intercept) cancels and gives EB -> 0. NaN with fewer than one finite member.
    With ``member_axis``/``axis``, the lag axis takes time's place among the axes left.
    """
    x, pos = ensemble_last(x, member_axis, axis)
    x = _as_ensemble(x)
    d = tamsd(x, lags)
    valid = finite_members(x)[..., None]
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = np.where(valid, d, 0.0).sum(axis=0) / n
        m2 = np.where(valid, d * d, 0.0).sum(axis=0) / n
        return restore_ensemble(m2 / (m1 * m1) - 1.0, pos)


# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# Distribution check: a member's time distribution against the cross-section


def _ks_distance(own: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Two-sample KS distance per row. own: [m, n1], pool: [m, n2] -> [m] (ties handled: the ECDFs
    are compared only after the last of equal values)."""
    m, n1 = own.shape
    n2 = pool.shape[1]
    values = np.concatenate([own, pool], axis=1)
    weight = np.concatenate([np.full((m, n1), 1.0 / n1), np.full((m, n2), -1.0 / n2)], axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    diff = np.abs(np.cumsum(np.take_along_axis(weight, order, axis=1), axis=1))
    last = np.ones_like(v, dtype=bool)
    last[:, :-1] = v[:, :-1] != v[:, 1:]
    return np.where(last, diff, 0.0).max(axis=1)


def _ks_pvalue(d: np.ndarray, n1: int, n2: int) -> np.ndarray:
    """Asymptotic two-sample KS p-value with Stephens' small-sample correction (M. A. Stephens,
    J. R. Stat. Soc. B 32, 1970): ``Q_KS((sqrt(ne) + 0.12 + 0.11/sqrt(ne)) D)``, ne = n1 n2/(n1+n2).
    Fisher-combined over 16 pairs of white noise it rejected 3.3-4.6% at 5% for n1 = 5..1000
    (n2 = 4 n1; 2,000 ensembles each): slightly conservative, and its cost does not depend on D."""
    ne = n1 * n2 / (n1 + n2)
    return scipy.special.kolmogorov((math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d)


def _ks_block(x3: np.ndarray, valid: np.ndarray, tau: np.ndarray, thin_factor: float, max_pairs: int):
    """Distribution check for a block; see :func:`distribution_check`. x3: [S, p, T] raw values."""
    S, p, T = x3.shape
    stat = np.full(p, np.nan)
    pvalue = np.full(p, np.nan)
    n_pairs = np.zeros(p, dtype=np.int64)
    thin = np.where(np.isfinite(tau), np.ceil(thin_factor * np.maximum(tau, 1.0)), T)
    thin = np.minimum(thin, T).astype(np.int64)
    n_samples = np.minimum(T // thin, _KS_MAX_SAMPLES)
    for j in range(p):
        members = np.flatnonzero(valid[:, j])
        n1 = int(n_samples[j])
        m = min(max_pairs, members.size // 2, n1)
        if n1 < _MIN_THINNED or m < 1:
            n_samples[j] = n1 if n1 >= _MIN_THINNED else n_samples[j]
            continue
        group = (members.size - m) // m  # pool members of each pair (disjoint across pairs)
        q = min(_POOL_RATIO, group)
        times = T - 1 - int(thin[j]) * np.arange(n1)  # thinned steps, newest first
        xj = x3[:, j]
        own = xj[members[:m, None], times[None, :]]  # [m, n1]
        groups = members[m : m + m * group].reshape(m, group)
        # at thinned step i pair k takes q members of its group, rotating through the group
        pick = (np.arange(n1)[:, None] * q + np.arange(q)[None, :]) % group  # [n1, q]
        pool = xj[groups[:, pick], times[None, :, None]].reshape(m, n1 * q)
        d = _ks_distance(own, pool)
        ps = np.clip(_ks_pvalue(d, n1, n1 * q), np.finfo(float).tiny, 1.0)
        stat[j] = d.mean()
        pvalue[j] = scipy.stats.chi2.sf(-2.0 * np.log(ps).sum(), 2 * m)
        n_pairs[j] = m
    return stat, pvalue, n_pairs, thin, n_samples


def distribution_check(
    x, *, tau=None, thin_factor: float = 3.0, max_pairs: int = 16, member_axis: int = 0,
    axis: int = -1,
) -> DistributionCheck:
    """Does one member's distribution over time match the ensemble's distribution at its steps?

    x: [S, ..., T], raw values (members with a non-finite value are left out).
    Each member series is thinned to every ``k``-th step (counted back from the last step),
    ``k = ceil(thin_factor * tau)`` (tau: the integrated autocorrelation time, default the upper
    bound ``tau_upper`` of :func:`rvsp_jax.analysis.lrv.long_run_variance`), giving ``n1 = T // k``
    samples (at most 2,500, the most recent). ``m = min(max_pairs, S // 2, n1)`` pairs: pair i takes
    the i-th finite member's ``n1`` thinned samples, and as its cross-section the values at *the same
    steps* of ``q = min(4, (S - m) // m)`` other members per step, drawn (rotating) from a group of
    members reserved for that pair: ``q n1`` values pooled from every one of the pair's steps. Pairs
    share no member, so they are independent, and their two-sample Kolmogorov-Smirnov p-values
    (asymptotic, Stephens-corrected: see ``_ks_pvalue``) are combined by Fisher's method (chi^2,
    2m dof).

    Why it holds its level under a shared trend: the member's samples and its cross-section are drawn
    at the same steps, so both come from the same mixture over those steps; a trend or a variance
    change common to every member makes the test conservative (the samples are stratified), never
    liberal. Member-specific offsets, scales or shapes make it reject. Thinning at 3 tau keeps the
    member's samples nearly independent (AR(1): residual correlation e^-6). Measured rejection rates
    under ergodic nulls are in docs/calibration.md. NaN p-value where fewer than 4 thinned samples or
    2 finite members are available. Cost: one sort of ``m (1 + q) n1`` values per observable,
    whatever the data.

    Returns a :class:`DistributionCheck` with arrays over the observable axes (x's shape without
    ``member_axis`` and ``axis``).
    """
    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    x3 = _flat(x)
    P = x3.shape[1]
    if not (isinstance(thin_factor, numbers.Real) and thin_factor > 0):
        raise ValueError(f"thin_factor must be positive; got {thin_factor!r}.")
    max_pairs = _as_int(max_pairs, "max_pairs", 1)
    if tau is None:
        tau = lrv.long_run_variance(x).tau_upper
    tau = np.broadcast_to(np.asarray(tau, dtype=float), x.shape[1:-1]).reshape(P)

    def block(b, t):
        return _ks_block(b, np.isfinite(b).all(axis=-1), t, float(thin_factor), max_pairs)

    out = _map_observables(block, x3, tau, cost=2)
    lead = x.shape[1:-1]
    return DistributionCheck(*(a.reshape(lead) for a in out))


# ----------------------------------------------------------------------------------------------
# Variance drift of the deviations


def _drift_block(dev: np.ndarray, valid: np.ndarray, n: np.ndarray, segments: int = _DRIFT_SEGMENTS):
    """Linear trend of the members' mean squared deviation over ``segments`` equal parts.

    dev: [S, p, T]. Per member s, u_sj = mean of d_s(t)^2 over part j; the contrast
    c_s = sum_j w_j u_sj (w: centred part index) is, across independent members, a sample with mean
    0 when the spread around the ensemble mean does not change: a one-sample t-test (n - 1 dof),
    valid whatever the autocorrelation within a member. Returns the fitted relative change of the
    mean squared deviation from the first to the last part ([p]) and the two-sided p-value ([p]).
    """
    S, p, T = dev.shape
    seg = T // segments
    if seg < 1:
        nan = np.full(p, np.nan)
        return nan, nan
    u = (dev[..., T - seg * segments :] ** 2).reshape(S, p, segments, seg).mean(axis=-1)
    w = np.arange(segments) - (segments - 1) / 2.0
    c = u @ (w / (w @ w))  # [S, p]: slope per part
    nf = np.maximum(n, 1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.where(valid, c, 0.0).sum(axis=0) / nf
        var_c = np.where(valid, (c - mean_c) ** 2, 0.0).sum(axis=0) / np.maximum(nf - 1, 1)
        level = np.where(valid[..., None], u, 0.0).sum(axis=(0, 2)) / (nf * segments)
        t = mean_c / np.sqrt(var_c / nf)
        pvalue = np.where((n > 2) & (var_c > 0), 2.0 * scipy.stats.t.sf(np.abs(t), n - 1), np.nan)
        change = mean_c * (segments - 1) / level
    return change, pvalue


# ----------------------------------------------------------------------------------------------
# Verdict


def _assess_block(x3, valid, uniforms, *, alpha, n_windows, min_blocks, thin_factor, max_pairs,
                  describe=True):
    """All numbers of :func:`assess_many` for a block of observables x3: [S, p, T] (dict of [p])."""
    T = x3.shape[-1]
    dev, valid, n = _deviations(x3, valid)
    out = lrv.lrv_block(dev, n)
    out["drift"], out["drift_pvalue"] = _drift_block(dev, valid, n)
    tau = np.where(np.isfinite(out["tau"]), out["tau"], np.nan)
    windows = _default_windows(T, n_windows, min_blocks)
    start = _fit_start(tau, int(windows[-1]))
    out["fit_start"] = start
    if describe:
        _, out["slope"], out["slope_ci_low"], out["slope_ci_high"] = _scaling_block(
            dev, valid, n, start, windows, uniforms, alpha)
        omega = _omega_block(dev, n)
        out["omega_exponent"] = _omega_exponent(omega, _fit_start(tau, max(1, T // 2)))
        del omega
    else:
        for k in ("slope", "slope_ci_low", "slope_ci_high", "omega_exponent"):
            out[k] = np.full(x3.shape[1], np.nan)
    del dev
    out["ks_stat"], out["ks_pvalue"], *_ = _ks_block(x3, valid, out["tau_upper"], thin_factor,
                                                      max_pairs)
    return out


def _effects(num: dict, *, alpha: float, alpha_mean: float, power: float) -> dict:
    """Effect size, its interval, and the smallest detectable member-specific variance ([p])."""
    ratio, df1, df2, lrv_, n_used = (num[k] for k in ("ratio", "df1", "df2", "lrv", "n_used"))
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(ratio) & (df1 > 0) & (df2 > 0)
        d1, d2 = np.where(ok, df1, 1.0), np.where(ok, df2, 1.0)
        lo = ratio / scipy.stats.f.ppf(1 - alpha / 2, d1, d2)
        hi = ratio / scipy.stats.f.ppf(alpha / 2, d1, d2)
        # F_obs ~ rho F(df1, df2) with rho = 1 + n var(mu) / sigma^2 (Gaussian member means), so
        # power(rho) = P(F > crit / rho): 80% at rho = crit / F_{0.2}.
        rho = scipy.stats.f.ppf(1 - alpha_mean, d1, d2) / scipy.stats.f.ppf(1 - power, d1, d2)
        unit = lrv_ / np.where(n_used > 0, n_used, np.nan)  # ergodic variance of a time average
    nan = np.nan
    return dict(
        ratio_ci_low=np.where(ok, lo, nan), ratio_ci_high=np.where(ok, hi, nan),
        var_mu=np.where(ok, (ratio - 1.0) * unit, nan),
        var_mu_ci_low=np.where(ok, np.maximum(lo - 1.0, 0.0) * unit, nan),
        var_mu_ci_high=np.where(ok, np.maximum(hi - 1.0, 0.0) * unit, nan),
        mde_var_mu=np.where(ok, (rho - 1.0) * unit, nan),
    )


def _g(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if np.isfinite(v) else "n/a"


def _p(v: float) -> str:
    """A p-value for a sentence: "p = 0.012", "p < 1e-16" (below double rounding), "p = n/a"."""
    if not np.isfinite(v):
        return "p = n/a"
    return "p < 1e-16" if v < 1e-16 else f"p = {v:.2g}"


def _decide(row: dict, *, T: int, alpha: float, alpha_mean: float, alpha_ks: float,
            drift_alpha: float, drift_tol: float, min_steps: int, min_members: int,
            spacing: int = 1) -> tuple[str, str, int]:
    """(verdict, reason, steps_needed) for one observable; the rule is documented in assess_many.

    Step counts in the reason are in units of ``spacing`` (steps between time indices);
    steps_needed is in time indices."""
    def st(v: float) -> str:
        return f"{v * spacing:,.0f}" if np.isfinite(v) else "n/a"

    n_div = row["n_diverged"]
    dropped = f" ({n_div} diverged member(s) excluded)" if n_div else ""
    if T < min_steps:
        return "inconclusive", (f"only {st(T)} steps after burn-in; need at least {st(min_steps)}"
                                ), min_steps
    if row["n_members"] < min_members:
        return "inconclusive", (
            f"only {row['n_members']} finite members{dropped}; need at least {min_members} (more "
            "members, not more steps, would decide it)"), 0
    if not (row["gamma0"] > 0):
        return "inconclusive", f"no fluctuation across members (all members identical?){dropped}", 0
    tau, tau_up = row["tau"], row["tau_upper"]
    drift, drift_p = row["drift"], row["drift_pvalue"]
    if np.isfinite(drift_p) and drift_p < drift_alpha and abs(drift) >= drift_tol:
        way = "grows" if drift > 0 else "shrinks"
        return "non-stationary", (
            f"the members' spread around the ensemble mean {way} by {abs(drift):.0%} over the "
            f"window (variance-drift test {_p(drift_p)} < {drift_alpha:g}): the window is not "
            "stationary, so time averages have no fixed ensemble value to converge to; choose a "
            f"later or shorter window (--burn-in){dropped}"), 0
    if not row["resolved"]:
        length = row["needed_length"]
        # capped so that it fits the int64 result (a runaway process can ask for 1e19 steps)
        need = int(min(math.ceil(lrv.MIN_BATCHES * length), 2**53)) if np.isfinite(length) else 0
        lower = f"at least {_g(tau * spacing)}" if np.isfinite(tau) else "unknown"
        return "inconclusive", (
            f"the series is too short for its memory: its integrated autocorrelation time is "
            f"{lower} steps, and a decision needs {lrv.MIN_BATCHES} independent batches of at "
            f"least {lrv.BATCH_TAUS:g} tau; analyse at least {st(need)} steps (have {st(T)}; a "
            f"lower bound: the longer run will measure tau better){dropped}"
        ), need
    ratio, lo, hi = row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"]
    share = row["var_mu"] / row["gamma0"]
    effect = (f"between-member variance of the time average {_g(ratio, 3)}x its ergodic "
              f"expectation [{_g(lo, 3)}, {_g(hi, 3)}]")
    if row["mean_pvalue"] < alpha_mean:
        return "non-ergodic", (
            f"members' time averages differ more than their own fluctuations explain: {effect}, "
            f"{_p(row['mean_pvalue'])} < {alpha_mean:g}; member-specific means of variance "
            f"{_g(row['var_mu'])} [{_g(row['var_mu_ci_low'])}, {_g(row['var_mu_ci_high'])}] "
            f"(sd {_g(math.sqrt(max(row['var_mu'], 0.0)))}, {share:.1%} of the step-to-step "
            f"variance){dropped}"), 0
    decisive = T >= _RESOLVED_TAUS * tau_up
    ks_p = row["ks_pvalue"]
    if decisive and np.isfinite(ks_p) and ks_p < alpha_ks:
        return "non-ergodic", (
            f"time averages agree ({effect}), but a member's distribution over time differs from "
            f"the ensemble's at the same steps (distribution check {_p(ks_p)} < {alpha_ks:g}; "
            f"e.g. member-specific spread){dropped}"), 0
    mde = row["mde_var_mu"]
    if decisive:
        ks = (f"distribution check {_p(ks_p)}" if np.isfinite(ks_p)
              else "distribution check not run")
    else:
        ks = (f"distribution check not decisive: needs {_RESOLVED_TAUS:g} tau = "
              f"{st(math.ceil(_RESOLVED_TAUS * tau_up))} steps")
    return "ergodic", (
        f"no member-specific mean larger than sd {_g(math.sqrt(mde))} (var(mu) >= {_g(mde)}, "
        f"{mde / row['gamma0']:.2%} of the step-to-step variance, would be found with 80% power); "
        f"{effect}, {_p(row['mean_pvalue'])}; tau = {_g(tau * spacing)} steps; {ks}{dropped}"
    ), 0


_FLOAT_FIELDS = ("ratio", "ratio_ci_low", "ratio_ci_high", "mean_pvalue", "var_mu", "var_mu_ci_low",
                 "var_mu_ci_high", "mde_var_mu", "lrv", "gamma0", "tau_int", "tau_upper", "decay_length",
                 "drift", "drift_pvalue", "slope", "slope_ci_low", "slope_ci_high",
                 "omega_exponent", "ks_stat", "ks_pvalue", "mean_df1", "mean_df2")


def assess_many(
    x,
    *,
    burn_in: int = 0,
    alpha: float = 0.05,
    min_steps: int = 32,
    min_members: int = 4,
    slope_tol: float = 0.25,
    n_windows: int = 20,
    min_blocks: int = 4,
    n_boot: int = 1000,
    thin_factor: float = 3.0,
    max_pairs: int = 16,
    rng: int | np.random.Generator = 0,
    drift_alpha: float = 0.01,
    drift_tol: float = 0.25,
    ks_share: float = 0.2,
    power: float = 0.8,
    describe: bool = True,
    spacing: int = 1,
    member_axis: int = 0,
    axis: int = -1,
) -> ErgodicityResult:
    """Ergodicity verdict for every observable of x: [S, ..., T] (members, observables..., steps).

    Steps before ``burn_in`` are dropped. Per observable, members with any non-finite value (burn-in
    included) are excluded and counted in ``n_diverged``. On the remaining ``n_steps`` steps, with
    the deviations ``d_s(t) = x_s(t) - <x(t)>`` from the ensemble-mean path (a trend shared by every
    member cancels), float64:

    1. **Variance drift** (``drift``, ``drift_pvalue``): does the members' mean squared deviation
       change along the window? (t-test across members of a linear contrast over four quarters;
       see ``_drift_block``.)
    2. **Long-run variance and tau** (:mod:`rvsp_jax.analysis.lrv`): lugsail batch means of the
       deviations with an adaptive batch length (``L >= 6 tau`` and ``>= 10`` correlation decay
       lengths, at least 3 batches); ``tau_int`` is the resulting integrated autocorrelation time
       (``tau_upper`` 2 standard errors above).
    3. **Mean-ergodicity ANOVA** (``ratio``, ``mean_pvalue``): the between-member variance of the
       time average over its ergodic expectation ``lrv / n`` (1 = ergodic in the mean), F test.
       Effect size: ``ratio`` with its (1 - alpha) interval, the member-specific variance
       ``var_mu = (ratio - 1) lrv / n`` with interval, and ``mde_var_mu``, the smallest var(mu)
       found with probability ``power`` (80%) at this S, T and tau.
    4. **Distribution check** (``ks_pvalue``): :func:`distribution_check` thinned at 3 tau_upper.

    Decision rule, in this order:

    - "inconclusive" if ``n_steps < min_steps`` (32), fewer than ``min_members`` (4) finite
      members, or no fluctuation across members;
    - "non-stationary" if the drift test rejects at ``drift_alpha`` (0.01) and the fitted change of
      the mean squared deviation is at least ``drift_tol`` (25%) of its level: the mean test presumes
      a stationary window (members spreading apart, random walks, weight norms growing at
      member-specific rates);
    - "inconclusive" if no batch length resolves tau (the series is shorter than about
      ``3 * 6 tau`` steps, or 30 decay lengths); ``steps_needed`` says how many would (from the
      lower bounds the short series gives);
    - "non-ergodic" if the ANOVA rejects at ``alpha_mean = (1 - ks_share) alpha`` (0.04);
    - "non-ergodic" if the distribution check rejects at ``ks_share * alpha`` (0.01), only where the
      window spans at least 50 tau_upper (below that it is reported, never decisive);
    - otherwise "ergodic", worded as "no member-specific mean larger than sd(mde_var_mu)".

    The level is split (Bonferroni) so that the rate of "non-ergodic" on an ergodic, stationary
    process is at most alpha; measured rates for S = 256 and T = 500..8000 on white, AR(1),
    two-state switching and shared-trend processes are in docs/calibration.md. ``slope``,
    ``omega_exponent`` (variance scaling and Omega(t), :func:`variance_scaling`,
    :func:`fluctuation_metric`) are descriptive and do not enter the verdict; ``slope_tol`` is
    accepted for compatibility and unused. ``n_boot = 0`` skips the slope's bootstrap interval;
    ``describe=False`` skips the descriptive numbers altogether (NaN; the verdict is unchanged).
    ``spacing``: training steps between consecutive time indices (a probe recorded every 5 steps:
    5); the step counts written in ``reason`` are in training steps, every field stays in time
    indices.

    Cost depends on the shapes only (no data-dependent slow path; the distribution check's samples
    are at most 2,500 per member). Vectorised over observables (blocks of about 32 MiB of float64);
    the bootstrap draws (``rng``) are shared, so an observable gets the same numbers alone or in a
    batch. Returns an :class:`ErgodicityResult` of arrays over ``x.shape[1:-1]``: the observable
    axes, x's shape without ``member_axis`` (default 0) and ``axis`` (time, default -1), so a stored
    ``[S, T, P]`` array is ``assess_many(x, axis=1)``.
    """
    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    S, T0 = x.shape[0], x.shape[-1]
    burn_in = _as_int(burn_in, "burn_in", 0)
    if burn_in >= T0:
        raise ValueError(f"burn_in={burn_in} leaves no steps of the {T0} in x; pass burn_in < {T0}.")
    alpha = _check_alpha(alpha)
    drift_alpha = _check_alpha(drift_alpha, "drift_alpha")
    power = _check_alpha(power, "power")
    if not (isinstance(ks_share, numbers.Real) and 0 < ks_share < 1):
        raise ValueError(f"ks_share must be in (0, 1); got {ks_share!r}.")
    if not (isinstance(drift_tol, numbers.Real) and drift_tol >= 0):
        raise ValueError(f"drift_tol must be >= 0; got {drift_tol!r}.")
    min_steps = _as_int(min_steps, "min_steps", 2 * _as_int(min_blocks, "min_blocks", 1))
    min_members = _as_int(min_members, "min_members", 2)
    n_windows = _as_int(n_windows, "n_windows", 2)
    n_boot = _as_int(n_boot, "n_boot", 0)
    max_pairs = _as_int(max_pairs, "max_pairs", 1)
    if not (isinstance(slope_tol, numbers.Real) and 0 < slope_tol < 0.5):
        raise ValueError(f"slope_tol must be in (0, 0.5); got {slope_tol!r}.")
    if not (isinstance(thin_factor, numbers.Real) and thin_factor > 0):
        raise ValueError(f"thin_factor must be positive; got {thin_factor!r}.")
    spacing = _as_int(spacing, "spacing", 1)
    alpha_mean = (1.0 - float(ks_share)) * alpha
    alpha_ks = float(ks_share) * alpha

    full = _flat(x)
    P = full.shape[1]
    valid = np.isfinite(full).all(axis=-1)  # [S, P], burn-in included
    n_members = valid.sum(axis=0)
    x3 = full[..., burn_in:]
    T = x3.shape[-1]
    uniforms = _as_rng(rng).random((n_boot, S))
    keys = ["resolved", "batch_length", "n_batches", "n_used", "lrv", "gamma0", "tau", "tau_upper",
            "decay", "needed_length", "ratio", "df1", "df2", "pvalue", "drift", "drift_pvalue",
            "slope", "slope_ci_low", "slope_ci_high", "fit_start", "omega_exponent", "ks_stat",
            "ks_pvalue"]
    if T >= min_steps:
        def block(b, v):
            out = _assess_block(b, v.T, uniforms, alpha=alpha, n_windows=n_windows,
                                min_blocks=min_blocks, thin_factor=float(thin_factor),
                                max_pairs=max_pairs, describe=bool(describe))
            return tuple(out[k] for k in keys)

        parts = _map_observables(block, x3, valid.T, cost=6)
        num = dict(zip(keys, parts))
    else:
        num = {k: np.full(P, np.nan) for k in keys}
        num["resolved"] = np.zeros(P, bool)
        for k in ("batch_length", "n_batches", "n_used", "fit_start"):
            num[k] = np.zeros(P, np.int64)
    num.update(_effects(num, alpha=alpha, alpha_mean=alpha_mean, power=power))
    num["mean_pvalue"] = num.pop("pvalue")
    num["tau_int"] = num.pop("tau")
    num["decay_length"] = num.pop("decay")
    num["mean_df1"], num["mean_df2"] = num.pop("df1"), num.pop("df2")
    rows = dict(num, tau=num["tau_int"], n_members=n_members, n_diverged=S - n_members)
    decided = [
        _decide({k: v[j] for k, v in rows.items()}, T=T, alpha=alpha, alpha_mean=alpha_mean,
                alpha_ks=alpha_ks, drift_alpha=drift_alpha, drift_tol=float(drift_tol),
                min_steps=min_steps, min_members=min_members, spacing=spacing)
        for j in range(P)
    ]
    lead = x.shape[1:-1]

    def shaped(a, dtype=None):
        return np.asarray(a, dtype=dtype).reshape(lead)

    tau_up = num["tau_upper"]
    return ErgodicityResult(
        verdict=shaped([d[0] for d in decided], dtype=str),
        reason=shaped([d[1] for d in decided], dtype=object),
        steps_needed=shaped([d[2] for d in decided], dtype=np.int64),
        **{k: shaped(num[k], float) for k in _FLOAT_FIELDS},
        tau_resolved=shaped(num["resolved"], bool),
        batch_length=shaped(num["batch_length"], np.int64),
        n_batches=shaped(num["n_batches"], np.int64),
        ks_decisive=shaped(num["resolved"] & (T >= _RESOLVED_TAUS * np.nan_to_num(tau_up, nan=np.inf)),
                           bool),
        fit_start=shaped(num["fit_start"], np.int64), n_members=shaped(n_members),
        n_diverged=shaped(S - n_members), n_steps=T, alpha=alpha,
    )


def assess(x, *, burn_in: int = 0, alpha: float = 0.05, member_axis: int = 0, axis: int = -1,
           **kwargs) -> ErgodicityResult:
    """Ergodicity verdict for one observable x: [S, T] (members by steps); scalar fields.

    Same numbers and rule as :func:`assess_many` (keyword arguments are passed through); for many
    observables call :func:`assess_many` once rather than this in a loop. ``member_axis`` and
    ``axis`` name the member and time axes of a 2-D x (defaults 0 and -1).
    """
    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    if x.ndim != 2:
        raise ValueError(
            f"assess takes one observable x: [S, T]; got shape {x.shape}. Use assess_many for "
            "x: [S, ..., T]."
        )
    res = assess_many(x, burn_in=burn_in, alpha=alpha, **kwargs)

    def scalar(a):
        return a.item() if isinstance(a, np.ndarray) else a

    return ErgodicityResult(**{f.name: scalar(getattr(res, f.name)) for f in dataclasses.fields(res)})
