"""Shared building blocks of :mod:`rvsp_jax.analysis.ergodicity` (private): input handling,
blocks of observables, deviations from the ensemble-mean path, log-log slopes, constants."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from rvsp_jax.analysis._common import as_real, block_slices, ensemble_last, restore_members

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


# ----------------------------------------------------------------------------------------------
# Input handling and shared building blocks


def _as_ensemble(x, name: str = "x") -> np.ndarray:
    """x -> float ndarray [S, ..., T] (at least 2 axes), or ValueError.

    Float inputs keep their dtype (blocks are converted to float64 as they are processed, so a
    large float32 array is never copied whole); other real inputs become float64.
    """
    arr = as_real(
        x,
        name=name,
        min_ndim=2,
        what="a member axis (first) and a time axis (last), e.g. x: [S, T] or [S, P, T]",
        hint="For a single series use x[None].",
    )
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


def _check_alpha(alpha, name: str = "alpha") -> float:
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1):
        raise ValueError(f"{name} must be in (0, 1); got {alpha!r}.")
    return float(alpha)
