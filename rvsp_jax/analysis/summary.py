"""Summaries across members: a mean with a confidence interval, diverged members excluded and counted."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from scipy import stats

from rvsp_jax.analysis.result import Result

__all__ = ["MemberSummary", "across_members"]


@dataclasses.dataclass(frozen=True, eq=False)
class MemberSummary(Result):
    """Mean over members with a Student-t confidence interval.

    mean, sem: float64 ``[...]``; lo, hi: the two-sided ``1 - alpha`` interval; n: members used
    (int64); excluded: members left out because their value was not finite (int64)."""

    mean: np.ndarray
    sem: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    excluded: np.ndarray


def across_members(x, alpha: float = 0.05, *, member_axis: int = 0, level: float | None = None) -> MemberSummary:
    """Summarise ``x: [S, ...]`` over members (axis 0), per remaining entry, in float64.

    Non-finite values (diverged members) are excluded and counted, never averaged in. The interval is
    ``mean ± t_{1-alpha/2, n-1} · sd / sqrt(n)`` (``scipy.stats.t``); with fewer than two finite
    members the interval is NaN. Equals ``scipy.stats.t.interval(1 - alpha, n-1, mean, sem)`` per
    entry. ``member_axis``: the member axis of x (default 0); fields have x's shape without it.
    ``level`` (the coverage ``1 - alpha``) is the former name: accepted with a DeprecationWarning.
    """
    if level is not None:
        warnings.warn("across_members(level=...) is now alpha = 1 - level", DeprecationWarning, stacklevel=2)
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        alpha = 1 - level
    if not 0 < alpha <= 0.5:
        raise ValueError(f"alpha is the significance level in (0, 0.5] (0.05 for a 95% interval), got {alpha}")
    x = np.asarray(x, np.float64)
    if member_axis != 0 and x.ndim:
        x = np.moveaxis(x, member_axis, 0)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must have a members axis of length >= 1, got shape {x.shape}")
    ok = np.isfinite(x)
    n = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0).sum(0) / n
        dev = np.where(ok, x - mean, 0)
        sd = np.sqrt((dev**2).sum(0) / (n - 1))
        sem = sd / np.sqrt(n)
        half = stats.t.ppf(1 - alpha / 2, np.maximum(n - 1, 1)) * sem
    half = np.where(n >= 2, half, np.nan)
    sem = np.where(n >= 2, sem, np.nan)
    mean = np.where(n >= 1, mean, np.nan)
    return MemberSummary(mean, sem, mean - half, mean + half, n, x.shape[0] - n)
