"""Cross-sections, time averages, the integrated autocorrelation time, the time-averaged MSD and
the ergodicity-breaking parameter (descriptive; see :mod:`rvsp_jax.analysis.ergodicity`)."""

from __future__ import annotations

import numpy as np

from rvsp_jax.analysis._common import as_int as _as_int
from rvsp_jax.analysis._common import ensemble_last, fft_autocov, restore_ensemble, restore_members
from rvsp_jax.analysis.ergodicity._base import _as_ensemble, _deviations, _flat, _map_observables, finite_members

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
