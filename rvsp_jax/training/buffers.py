"""The pool of probe buffers that :meth:`~rvsp_jax.training.ensemble.Ensemble.chunks` writes into.

A chunk's probe values are written by the compiled chunk into donated device buffers
(:mod:`rvsp_jax.training.schedule`); the pool hands the chunk the buffers of an earlier chunk whose
host views (:class:`~rvsp_jax.training.devices.MemberParts`) the caller no longer holds, else new
ones. Up to :data:`SPARE_CHUNKS` handed-out chunks are kept for that; a chunk whose views are still
held is never reused, so keeping them is safe, it only costs fresh memory for later chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from rvsp_jax.training import devices as dev

SPARE_CHUNKS = 4
"""Finished chunks whose probe buffers the pool keeps for reuse by later chunks."""


class BufferPool:
    """Probe buffers of one training loop. ``new()`` allocates the buffers of one chunk (a pytree of
    device arrays ``[S_pad, chunk // probe_every, ...]``, or None without a probe)."""

    def __init__(self, new: Callable[[], Any], spare: int = SPARE_CHUNKS):
        self._new = new
        self._spare_max = spare
        self._spare: list = []  # (device buffers, released) of chunks handed out, oldest first

    def take(self):
        """Buffers for the next chunk: those of a handed-out chunk that the caller has released, else
        new ones (dropping the oldest handed-out chunks beyond the spare count)."""
        for i, (outs, released) in enumerate(self._spare):
            if released():
                del self._spare[i]
                return outs
        del self._spare[: max(0, len(self._spare) - self._spare_max + 1)]
        return self._new()

    def hand_out(self, buffers, host_views) -> None:
        """Record that the device ``buffers`` of a chunk were handed out as ``host_views`` (a pytree
        with :class:`~rvsp_jax.training.devices.MemberParts` leaves): they are reused once every
        view is released. Nothing to do without a probe (``buffers`` None)."""
        if buffers is None:
            return
        self._spare.append(
            (
                buffers,
                dev.views_released(
                    jax.tree_util.tree_leaves(host_views, is_leaf=lambda x: isinstance(x, dev.MemberParts))
                ),
            )
        )
