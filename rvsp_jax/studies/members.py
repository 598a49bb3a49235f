"""Which members of a recorded ensemble are analysed: the ones that did not diverge.

Shared by every study: the usable (or diverged) members of a run, the summary the reports give of
them, the one-line refusal when none is left, and the per-member layer summaries a run recorded
(``act_summary``).
"""

from __future__ import annotations

import numpy as np

from rvsp_jax.io import store


def usable_members(run: store.Run) -> np.ndarray:
    """bool ``[S]``: members that did not diverge (a complete run's ``final.npz``)."""
    return ~np.asarray(run.final().diverged, bool)


def members_summary(usable: np.ndarray) -> dict:
    """How many members were analysed and which were excluded as diverged."""
    return {
        "total": int(usable.size),
        "used": int(usable.sum()),
        "diverged": int((~usable).sum()),
        "diverged_ids": np.flatnonzero(~usable).tolist(),
    }


def diverged_members(run: store.Run) -> np.ndarray:
    """bool ``[S]``: members that diverged (non-finite loss or parameters) during the run."""
    result = run.manifest.get("result")
    if result is None:
        raise ValueError(f"{run.path} is not complete ({run.manifest['status']}); finish it with --resume")
    return np.asarray(result["diverged_at"]) >= 0


def check_usable(usable: np.ndarray, what: str = "the run") -> None:
    """Refuse an analysis with no member left (every member diverged)."""
    if not usable.any():
        raise ValueError(
            f"every member of {what} diverged ({usable.size} of {usable.size}: non-finite "
            "loss or parameters); nothing is left to analyse: lower --lr (or use a gentler "
            "--optimizer) and run again"
        )


def summary_series(run: store.Run) -> dict[str, np.ndarray]:
    """The layer summaries recorded by ``act_summary``: ``"Dense_0/saturated" -> float32 [S, T_rec]``."""
    x = np.asarray(run["activations/summary"][:])
    return {name: x[..., i] for i, name in enumerate(run.probe_names["activations/summary"])}
