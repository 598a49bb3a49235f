"""What training returns, with the names of a recorded run.

:class:`TrainResult` (in memory, from :func:`rvsp_jax.training.ensemble.train`) and
:class:`rvsp_jax.io.store.Run` (on disk, from ``rvsp_jax.io.record.run``) hold the same data and
read it with the same names: ``config``, ``final()`` (a :class:`FinalResult`), ``diverged``,
``members``, ``metrics`` (a :class:`~rvsp_jax.training.step.StepMetrics` of ``[S, T]`` arrays),
``result[name]`` (``"metrics/loss"``, a probe's array ``[S, T_rec, ...]``), ``arrays``, ``series(name)``
(float64, time last), ``steps``, ``metric_steps``, ``steps_completed``, ``grid``, ``groups``,
``hyperparams()``, ``point(g)`` and ``points()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np

from rvsp_jax.config import TrainConfig
from rvsp_jax.training.step import StepMetrics


class FinalResult(NamedTuple):
    """End-of-training values per member: ``params`` pytree ``[S, ...]``, ``test_loss``,
    ``test_accuracy`` float32 ``[S]``, ``diverged`` bool ``[S]``, ``diverged_at`` int ``[S]`` (-1: never)."""

    params: Any
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray


@dataclass
class TrainResult:
    """Outputs of :func:`~rvsp_jax.training.ensemble.train`, on the host, padding members dropped
    (``S = config.members``: ``config.seeds`` per grid point). Read like a recorded
    :class:`~rvsp_jax.io.store.Run` (see the module docstring); the fields stay as they were."""

    config: TrainConfig
    params: Any  # final parameters [S, ...]
    metrics: StepMetrics  # each [S, T]
    probes: Any  # pytree of [S, T_rec, ...] or None
    test_loss: np.ndarray  # [S]
    test_accuracy: np.ndarray  # [S]
    diverged: np.ndarray  # bool [S]
    diverged_at: np.ndarray  # int [S]
    seconds: float  # wall time of the training loop, compilation included
    probe_every: int = 1  # probes are of the steps 0, probe_every, 2 * probe_every, ...

    # ---- the names of a recorded Run -------------------------------------------------------
    def final(self) -> FinalResult:
        """Final parameters and test metrics, as :meth:`Run.final <rvsp_jax.io.store.Run.final>`."""
        return FinalResult(self.params, self.test_loss, self.test_accuracy, self.diverged, self.diverged_at)

    @property
    def members(self) -> np.ndarray:
        """Member ids ``[S]`` (``0 .. S-1``; member ``g * seeds + s`` is grid point g, seed s)."""
        return np.arange(self.metrics.loss.shape[0])

    @property
    def steps_completed(self) -> int:
        """Training steps run (all of them: a result is always complete)."""
        return int(self.metrics.loss.shape[1])

    @property
    def complete(self) -> bool:
        return True

    @property
    def steps(self) -> np.ndarray:
        """Training steps of the probe arrays' time axis: ``0, probe_every, ... < T``."""
        return np.arange(0, self.steps_completed, self.probe_every)

    @property
    def metric_steps(self) -> np.ndarray:
        """Training steps of the metrics' time axis: ``0 .. T-1``."""
        return np.arange(self.steps_completed)

    @property
    def arrays(self) -> tuple[str, ...]:
        """Names that ``result[name]`` reads: ``metrics/<name>`` for every metric, then the probe's
        top-level names (when the probe returns a dict)."""
        probes = tuple(self.probes) if isinstance(self.probes, dict) else ()
        return tuple(f"metrics/{k}" for k in StepMetrics._fields) + probes

    def __getitem__(self, name: str):
        """``result["metrics/loss"]``: ``[S, T]``; ``result[probe]``: the probe's array (or pytree)
        ``[S, T_rec, ...]``, as ``run[name]`` reads them from disk."""
        if name.startswith("metrics/") and name[len("metrics/") :] in StepMetrics._fields:
            return getattr(self.metrics, name[len("metrics/") :])
        if isinstance(self.probes, dict) and name in self.probes:
            return self.probes[name]
        raise KeyError(f"no array {name!r} in this result; it has {', '.join(self.arrays)}")

    def series(self, name: str, entries=None, members=None) -> np.ndarray:
        """Array ``name`` as float64 numpy with time last, as :meth:`Run.series
        <rvsp_jax.io.store.Run.series>`: ``[S, P, T_rec]`` for a probe array ``[S, T_rec, P]``,
        ``[S, T]`` for a metric (``"loss"`` means ``"metrics/loss"``). ``entries``: positions along the
        last axis (a result holds no entry names); ``members``: indices, a boolean mask or a slice."""
        if name in StepMetrics._fields:
            name = f"metrics/{name}"
        x = np.asarray(self[name])
        if members is not None:
            m = np.asarray(members) if not isinstance(members, slice) else members
            if isinstance(m, np.ndarray) and m.dtype == bool:
                m = np.flatnonzero(m)
            x = x[m]
        if x.ndim == 2:
            if entries is not None:
                raise ValueError(f"{name} is [S, T]: it has no entries to choose")
        elif entries is not None:
            entries = [entries] if isinstance(entries, (int, np.integer)) else list(entries)
            if not all(isinstance(e, (int, np.integer)) for e in entries):
                raise TypeError("a TrainResult holds no entry names: pass positions along the last axis")
            x = x[..., np.asarray(entries, dtype=np.int64)]
        x = np.asarray(x, dtype=np.float64)
        return np.moveaxis(x, 1, -1) if x.ndim == 3 else x

    @property
    def grid(self) -> list[dict[str, float]]:
        """The sweep's grid points (``[{}]`` for a plain run)."""
        return self.config.grid()

    @property
    def groups(self) -> dict[int, np.ndarray]:
        """Members of each grid point: ``{g: member indices}`` (member ``g * seeds + s``)."""
        seeds = self.config.seeds
        return {g: np.arange(g * seeds, (g + 1) * seeds) for g in range(len(self.grid))}

    def hyperparams(self) -> dict[str, np.ndarray]:
        """Per member, every hyperparameter held in the optimizer state (``[S]`` each; optax names)."""
        return {k: np.repeat(np.asarray(v), self.config.seeds) for k, v in self.config.grid_hyperparams().items()}

    def point(self, g: int) -> TrainResult:
        """Grid point ``g`` of a sweep as the result of a plain run of its ``seeds`` members
        (``config.point(g)``, members ``g * seeds .. (g + 1) * seeds - 1``); a plain run's point 0 is
        itself."""
        if not 0 <= g < len(self.grid):
            raise IndexError(f"this result has {len(self.grid)} grid point(s); there is no point {g}")
        if len(self.grid) == 1:
            return self
        rows = slice(g * self.config.seeds, (g + 1) * self.config.seeds)
        take = partial_rows(rows)
        return dataclasses.replace(
            self,
            config=self.config.point(g),
            params=take(self.params),
            metrics=take(self.metrics),
            probes=take(self.probes),
            test_loss=self.test_loss[rows],
            test_accuracy=self.test_accuracy[rows],
            diverged=self.diverged[rows],
            diverged_at=self.diverged_at[rows],
        )

    def points(self) -> list[TrainResult]:
        """Every grid point as a plain result (:meth:`point`); ``[self]`` for a plain run."""
        return [self.point(g) for g in range(len(self.grid))]


def partial_rows(rows: slice):
    """A function taking rows ``rows`` of every leaf of a pytree (None stays None)."""
    return lambda tree: jax.tree_util.tree_map(lambda a: a[rows], tree)
