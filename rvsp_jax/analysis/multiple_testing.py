"""Multiple-testing corrections for the many per-parameter tests of an ensemble.

:func:`fdr_bh` is the Benjamini-Hochberg step-up procedure, batched over families and tolerant of
missing tests (NaN p-values, e.g. from constant or diverged series): they are left out of the
count m and come back as NaN / not rejected.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rvsp_jax.analysis.result import Result

__all__ = ["FdrResult", "fdr_bh"]


@dataclasses.dataclass(frozen=True, eq=False)
class FdrResult(Result):
    """Benjamini-Hochberg decisions; both arrays have the shape of the p-values.

    reject: bool, True where the hypothesis is rejected at false discovery rate alpha.
    pvalues_adjusted: float64, BH adjusted p-values (NaN where the input is NaN).
    """

    reject: np.ndarray
    pvalues_adjusted: np.ndarray


def fdr_bh(pvalues, alpha: float = 0.05, *, axis: int | None = None) -> FdrResult:
    """Benjamini-Hochberg false-discovery-rate control of a family (or families) of p-values.

    pvalues: [...] in [0, 1] or NaN. axis=None (default): all values form one family (the
    array is flattened, results keep its shape); axis=k: every 1-D slice along axis k is its own
    family (e.g. ``axis=-1`` on [S, P] p-values: one family of P parameters per member).

    Per family of m non-NaN p-values sorted p_(1) <= ... <= p_(m): reject the hypotheses of
    ranks 1..k for the largest k with p_(k) <= alpha k / m; adjusted p-value of rank i is
    min(1, min_{j >= i} p_(j) m / j). NaN p-values are excluded from m and give reject=False,
    adjusted NaN. On the non-NaN values of a family this equals
    ``statsmodels.stats.multitest.multipletests(p, alpha, method="fdr_bh")[:2]`` exactly (the same
    float64 operations in the same order). Controls the FDR at alpha for independent or
    positively dependent (PRDS) tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}.")
    finite = p[~np.isnan(p)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError(
            f"p-values must lie in [0, 1] (or be NaN for a missing test); got values in "
            f"[{finite.min()}, {finite.max()}]."
        )
    if p.ndim == 0:
        p = p.reshape(1)
        squeeze = True
    else:
        squeeze = False
    if axis is None:
        fam = p.reshape(1, -1)
    else:
        if not -p.ndim <= axis < p.ndim:
            raise ValueError(f"axis={axis} is out of range for p-values of shape {p.shape}.")
        moved = np.moveaxis(p, axis, -1)
        fam = moved.reshape(-1, moved.shape[-1])
    size = fam.shape[-1]

    order = np.argsort(fam, axis=-1)  # NaN sorts last
    sorted_p = np.take_along_axis(fam, order, axis=-1)
    m = np.sum(~np.isnan(fam), axis=-1)
    rank = np.arange(1, size + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # statsmodels' ecdf factor: arange(1, m + 1) / float(m)
        ecdf = rank[None, :] / m[:, None].astype(np.float64)
        below = sorted_p <= ecdf * alpha  # False for NaN
        last = np.where(below.any(axis=-1), size - 1 - np.argmax(below[:, ::-1], axis=-1), -1)
        reject_sorted = rank[None, :] - 1 <= last[:, None]
        raw = np.where(np.isnan(sorted_p), np.inf, sorted_p / ecdf)
    adjusted = np.minimum.accumulate(raw[:, ::-1], axis=-1)[:, ::-1]
    adjusted[adjusted > 1] = 1.0
    adjusted[np.isnan(sorted_p)] = np.nan

    reject = np.empty_like(reject_sorted)
    out_p = np.empty_like(adjusted)
    np.put_along_axis(reject, order, reject_sorted, axis=-1)
    np.put_along_axis(out_p, order, adjusted, axis=-1)
    if axis is None:
        reject, out_p = reject.reshape(p.shape), out_p.reshape(p.shape)
    else:
        shape = np.moveaxis(p, axis, -1).shape
        reject = np.moveaxis(reject.reshape(shape), -1, axis)
        out_p = np.moveaxis(out_p.reshape(shape), -1, axis)
    if squeeze:
        reject, out_p = reject[0], out_p[0]
    return FdrResult(reject=reject, pvalues_adjusted=out_p)
