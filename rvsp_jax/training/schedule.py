"""The schedule of one compiled chunk: members in blocks, steps scanned, blocks split over the mesh.

Each device loops over its members in blocks of ``block``; inside a block the steps are scanned and
the members vmapped. Every member is therefore always computed by the same compiled block, whatever
S and the device count, which makes its trajectory bit-identical across ensemble sizes (XLA picks
different dot kernels for different batch sizes, so a plain vmap over all members is not).

The schedule knows nothing of the model: it runs a per-member step function
(:func:`rvsp_jax.training.step.member_minibatch_step` with the model bound) on every member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from rvsp_jax.training import devices as dev
from rvsp_jax.training.step import EnsembleState

MemberFn = Callable[..., tuple]
"""``fn(state, order, step, pos, active, images, labels) -> (state, metrics, probes)`` for one
member (``state`` a :class:`~rvsp_jax.training.step.MemberState`, ``order [N]``)."""


def chunk_length(chunk: int, steps_per_epoch: int, probe_every: int) -> int:
    """Steps per compiled chunk: ``chunk`` capped at one epoch and rounded down to a multiple of
    ``probe_every`` (at least ``probe_every``)."""
    chunk = min(chunk, steps_per_epoch)
    return max(probe_every, chunk // probe_every * probe_every)


@dataclass(frozen=True)
class Schedule:
    """How one chunk of ``chunk`` steps is computed on ``mesh`` (members split along its axis).

    ``block``: members vmapped together per device; ``probe_every``: the first step of every group of
    ``probe_every`` steps is probed; steps at or past ``total_steps`` are masked out (no-ops)."""

    mesh: Mesh
    block: int
    chunk: int
    probe_every: int
    steps_per_epoch: int
    total_steps: int

    @property
    def records(self) -> int:
        """Probed steps per chunk: ``chunk // probe_every``."""
        return self.chunk // self.probe_every

    def probe_buffers(self, shapes, padded: int):
        """Zero probe buffers ``[padded, records, ...]`` of one chunk from one member's probe shapes
        (a pytree of ``jax.ShapeDtypeStruct``; None without a probe)."""
        return jax.tree_util.tree_map(lambda s: jnp.zeros((padded, self.records, *s.shape), s.dtype), shapes)

    def run(
        self,
        plain_fn: MemberFn,
        probed_fn: MemberFn,
        state: EnsembleState,
        outs,
        orders,
        start,
        first_epoch,
        images,
        labels,
    ) -> tuple[EnsembleState, Any, Any]:
        """Run ``chunk`` steps from ``start`` on every member; traced inside ``jax.jit``.

        ``state``: :class:`EnsembleState` ``[S_pad, ...]``; ``orders``: int32 ``[S_pad, 2, N]``, the
        orders of epochs ``first_epoch`` and ``first_epoch + 1`` (:mod:`rvsp_jax.training.orders`);
        ``images [N, P]`` and ``labels [N]`` replicated. ``plain_fn`` computes the unprobed steps,
        ``probed_fn`` the probed ones (the same function with the probe, or ``plain_fn``).
        Returns ``(state, metrics, outs)``: metrics leaves ``[S_pad, chunk]``.

        Probe values are written, as they are computed, into ``outs``: one buffer per probe leaf,
        ``[S_pad, chunk // probe_every, ...]``, carried through both loops so that XLA updates it in
        place. ``outs`` is meant to be donated: the caller passes the buffers of a chunk it has
        finished with (:mod:`rvsp_jax.training.buffers`), so recording every parameter at every step
        writes each value once into memory that is already mapped, instead of stacking and
        reordering the loops' outputs into freshly allocated buffers (at S=256 on 2 cores those
        copies and the page faults of the new memory took nearly as much CPU time as training
        itself; see docs/benchmarks.md).
        """
        m, every = self.block, self.probe_every
        n_rec = self.records
        in_axes = (0, 0, None, None, None, None, None)
        plain = jax.vmap(plain_fn, in_axes=in_axes)
        probed = jax.vmap(probed_fn, in_axes=in_axes)
        firsts = start + every * jnp.arange(n_rec, dtype=jnp.int32)
        steps_per_epoch, total_steps = self.steps_per_epoch, self.total_steps

        def run_block(outs, block, images, labels):
            b, st, block_orders = block

            def one_step(step_fn, st: EnsembleState, step):
                epoch = step // steps_per_epoch
                order = block_orders[:, jnp.clip(epoch - first_epoch, 0, 1)]
                active = step < total_steps
                st, metrics, probes = step_fn(st, order, step, step % steps_per_epoch, active, images, labels)
                return EnsembleState(*st), metrics, probes

            def record(outs, r, probes):
                # outs leaves [blocks, M, n_rec, ...] <- probes leaves [M, ...] at (block b, step r)
                return jax.tree_util.tree_map(
                    lambda buf, v: jax.lax.dynamic_update_slice(
                        buf, v[None, :, None].astype(buf.dtype), (b, 0, r) + (0,) * (v.ndim - 1)
                    ),
                    outs,
                    probes,
                )

            def group(carry, xs):
                # the first step of every group of `every` steps is probed, the others are not
                st, outs = carry
                r, first = xs
                st, metrics, probes = one_step(probed, st, first)
                if probes is not None:
                    outs = record(outs, r, probes)
                metrics = jax.tree_util.tree_map(lambda a: a[None], metrics)
                if every > 1:
                    st, rest = jax.lax.scan(
                        lambda s, t: one_step(plain, s, t)[:2], st, first + 1 + jnp.arange(every - 1, dtype=jnp.int32)
                    )
                    metrics = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), metrics, rest)
                return (st, outs), metrics

            (st, outs), metrics = jax.lax.scan(group, (st, outs), (jnp.arange(n_rec), firsts))
            # metrics: [n_rec, every, M] -> [M, chunk]
            return outs, (st, jax.tree_util.tree_map(lambda a: a.reshape(-1, m).swapaxes(0, 1), metrics))

        def local(state, outs, orders, images, labels):
            to_blocks = partial(jax.tree_util.tree_map, lambda a: a.reshape(-1, m, *a.shape[1:]))
            from_blocks = partial(jax.tree_util.tree_map, lambda a: a.reshape(-1, *a.shape[2:]))
            blocks = orders.shape[0] // m
            outs, (state, metrics) = jax.lax.scan(
                partial(run_block, images=images, labels=labels),
                to_blocks(outs),
                (jnp.arange(blocks), to_blocks(state), to_blocks(orders)),
            )
            return from_blocks(state), from_blocks(metrics), from_blocks(outs)

        spec = PartitionSpec(dev.MEMBER_AXIS)
        return jax.shard_map(
            local,
            mesh=self.mesh,
            in_specs=(spec, spec, spec, PartitionSpec(), PartitionSpec()),
            out_specs=(spec, spec, spec),
        )(state, outs, orders, images, labels)
