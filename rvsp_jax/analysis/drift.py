"""Rolling statistics along time and a batched drift summary.

A stationary process has the same mean and variance in every window; a drifting one does not.
:func:`rolling_mean_var` gives the per-window moments of every series, :func:`measure_drift` fits a
straight line through them against window position and reports the fitted change over the series in
natural units (within-window standard deviations for the mean, relative change for the variance).
Inputs ``x: [..., T]`` (numpy or JAX, time last unless ``axis=`` names another); outputs numpy
float64, computed in float64 with the two-pass moments of ``np.mean``/``np.var`` over each window
(no running sums, so no cancellation on series with a large offset).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rvsp_jax.analysis._common import as_int, as_real, block_slices, restore_time, time_last
from rvsp_jax.analysis.result import Result

__all__ = ["DriftSummary", "RollingMeanVar", "measure_drift", "rolling_mean_var"]

# Elements of the largest temporary per block of windows (about 32 MiB of float64).
_BLOCK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True, eq=False)
class RollingMeanVar(Result):
    """Moments of x over windows ``x[..., s : s + window]`` for each start s.

    mean, var: [..., W] (float64); starts: [W] first step of each window (int).
    """

    mean: np.ndarray
    var: np.ndarray
    starts: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class DriftSummary(Result):
    """Straight-line fits of the rolling moments against window start (per step), per series.

    mean_slope, var_slope: [...] change of the rolling mean / variance per time step.
    mean_drift: [...] fitted change of the rolling mean from the first to the last window, in units
        of the average within-window standard deviation (0 for a stationary series).
    var_drift: [...] fitted change of the rolling variance from the first to the last window,
        relative to the average within-window variance (0 for a stationary series).
    """

    mean_slope: np.ndarray
    var_slope: np.ndarray
    mean_drift: np.ndarray
    var_drift: np.ndarray


def _check_window(x, window, step) -> tuple[np.ndarray, int, int]:
    arr = as_real(x).astype(np.float64, copy=False)
    nobs = arr.shape[-1]
    window = as_int(window, "window")
    step = window if step is None else as_int(step, "step")
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1; got window={window}, step={step}.")
    if window > nobs:
        raise ValueError(
            f"window={window} is longer than the series (T={nobs} steps along the last axis); "
            "use a shorter window or longer series."
        )
    return arr, window, step


def rolling_mean_var(x, window: int, step: int | None = None, *, ddof: int = 0, axis: int = -1) -> RollingMeanVar:
    """Mean and variance of every series over windows of ``window`` steps.

    x: [..., T] -> :class:`RollingMeanVar` with mean, var [..., W], W = (T - window) // step + 1,
    windows starting at 0, step, 2 step, ... (step defaults to window: non-overlapping blocks;
    trailing steps that do not fill a window are dropped). var divides by ``window - ddof``.
    Float64; each window equals ``np.mean`` / ``np.var(ddof=ddof)`` of its slice (two-pass).
    A NaN in a window makes that window's moments NaN only. ``axis``: the time axis of x; the
    window axis of mean and var takes its place.
    """
    x, pos = time_last(x, axis)
    arr, window, step = _check_window(x, window, step)
    if not 0 <= int(ddof) < window:
        raise ValueError(f"ddof must be in [0, window); got ddof={ddof}, window={window}.")
    starts = np.arange(0, arr.shape[-1] - window + 1, step)
    views = np.lib.stride_tricks.sliding_window_view(arr, window, axis=-1)[..., ::step, :]
    lead = int(np.prod(arr.shape[:-1], dtype=np.int64))
    per_block = max(1, _BLOCK_ELEMENTS // max(1, lead * window))
    mean = np.empty(arr.shape[:-1] + (starts.size,))
    var = np.empty_like(mean)
    with np.errstate(invalid="ignore", over="ignore"):
        for win in block_slices(starts.size, per_block):
            block = views[..., win, :]
            mean[..., win] = block.mean(axis=-1)
            var[..., win] = block.var(axis=-1, ddof=int(ddof))
    return RollingMeanVar(restore_time(mean, pos, keeps_axis=True), restore_time(var, pos, keeps_axis=True), starts)


def _slope(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of y: [..., W] on t: [W] -> [...]."""
    tc = t - t.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ tc / (tc @ tc)


def measure_drift(x, window: int, step: int | None = None, *, axis: int = -1) -> DriftSummary:
    """Drift of the rolling mean and variance of every series.

    x: [..., T] -> :class:`DriftSummary` of [...] arrays (float64). Fits ordinary least-squares
    lines to the :func:`rolling_mean_var` moments (ddof=0) against window start and reports the
    slopes per step and the fitted change across the windows, ``slope * (starts[-1] - starts[0])``,
    normalised by the mean within-window standard deviation (mean) or variance (variance).
    For ``x_t = a t + e_t`` with white e of std sigma, mean_drift is about
    ``a (starts[-1] - starts[0]) / sigma``; for white noise and non-overlapping windows it is 0
    with standard error ``sqrt(12 (W - 1) / (window W (W + 1)))`` (W windows), about
    ``sqrt(12 / (window W))``. Needs at least two windows.
    Constant series give NaN drifts (0/0) without warnings; NaN propagates per series.
    ``axis``: the time axis of x; results have x's shape without it.
    """
    x = time_last(x, axis)[0]
    stats = rolling_mean_var(x, window, step)
    if stats.starts.size < 2:
        raise ValueError(
            f"measure_drift needs at least two windows; T={np.shape(x)[-1]}, window={window}, "
            f"step={step} give {stats.starts.size}. Use a shorter window or step."
        )
    t = stats.starts.astype(np.float64)
    span = t[-1] - t[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_slope = _slope(t, stats.mean)
        var_slope = _slope(t, stats.var)
        avg_var = stats.var.mean(axis=-1)
        return DriftSummary(
            mean_slope=mean_slope,
            var_slope=var_slope,
            mean_drift=mean_slope * span / np.sqrt(avg_var),
            var_drift=var_slope * span / avg_var,
        )
