"""Summaries across members: a mean with a confidence interval, diverged members excluded and counted."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = ["MemberSummary", "across_members"]


class MemberSummary(NamedTuple):
    """Mean over members with a Student-t confidence interval (``lo``, ``hi``) at ``level``;
    ``n`` members used, ``excluded`` members left out because their value was not finite."""

    mean: np.ndarray
    sem: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    excluded: np.ndarray


def across_members(x, level: float = 0.95, *, member_axis: int = 0) -> MemberSummary:
    """Summarise ``x: [S, ...]`` over members (axis 0), per remaining entry, in float64.

    Non-finite values (diverged members) are excluded and counted, never averaged in. The interval is
    ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` (``scipy.stats.t``); with fewer than two finite
    members the interval is NaN. Equals ``scipy.stats.t.interval(level, n-1, mean, sem)`` per entry.
    ``member_axis``: the member axis of x (default 0); fields have x's shape without it.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
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
        half = stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)) * sem
    half = np.where(n >= 2, half, np.nan)
    sem = np.where(n >= 2, sem, np.nan)
    mean = np.where(n >= 1, mean, np.nan)
    return MemberSummary(mean, sem, mean - half, mean + half, n, x.shape[0] - n)
