"""The ensemble trainer: S seeded copies of one network, trained at once as ``jit(scan(vmap(step)))``.

Member ``s`` has two keys, both derived by ``fold_in`` from the root seed
(:mod:`rvsp_jax.training.keys`), so its trajectory does not depend on how many other members there
are::

    init key of s = fold_in(fold_in(root, 0), s if vary in {both, init} else 0)
    data key of s = fold_in(fold_in(root, 1), s if vary in {both, data} else 0)

Each epoch ``e`` member ``s`` visits the training set in a permutation seeded by its data key and
``e`` (:mod:`rvsp_jax.training.orders`, :meth:`Ensemble.orders`), in minibatches of ``batch_size``
(the incomplete last batch is dropped). Members are split over a 1-D device mesh
(:mod:`rvsp_jax.training.devices`) and, on each device, computed in blocks of ``config.block``
members (:mod:`rvsp_jax.training.schedule`); S is padded up to a multiple of block x devices with
extra, genuinely trained members that are dropped from every output. A member whose loss or
parameters become non-finite is marked diverged at that step and frozen; the others go on; its
metrics read NaN from the next step on and its probes from that step on.

One member's update is the pure :func:`rvsp_jax.training.step.member_step`, callable on one member
without a mesh. Training runs in compiled chunks of ``config.chunk`` steps (one compilation per
configuration; steps past the end of training inside the last chunk are masked out).
:meth:`Ensemble.chunks` yields each finished chunk as host arrays, which is where recording,
progress bars and checkpoints attach; the chunks' probe buffers are reused through
:mod:`rvsp_jax.training.buffers`.

The names below that live in those modules (``EnsembleState``, ``StepMetrics``, ``StepContext``,
``Probe``, ``member_keys``, ``seed_ids``, ``root_key``, ``SPARE_CHUNKS``, ``TrainResult``) are
importable from here as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rvsp_jax.config import TrainConfig
from rvsp_jax.data import Dataset, load, to_model_inputs
from rvsp_jax.training import devices as dev
from rvsp_jax.training import footprint
from rvsp_jax.training import orders as host_orders
from rvsp_jax.training.buffers import SPARE_CHUNKS, BufferPool
from rvsp_jax.training.keys import member_keys, root_key, seed_ids
from rvsp_jax.training.model import init_params, loss_and_accuracy, make_model
from rvsp_jax.training.result import FinalResult, TrainResult
from rvsp_jax.training.schedule import Schedule, chunk_length
from rvsp_jax.training.step import (
    EnsembleState,
    MemberState,
    Probe,
    StepContext,
    StepMetrics,
    member_minibatch_step,
    member_step,
)

__all__ = [
    "Chunk",
    "Ensemble",
    "EnsembleState",
    "FinalResult",
    "MemberState",
    "Probe",
    "SPARE_CHUNKS",
    "StepContext",
    "StepMetrics",
    "TrainResult",
    "host_state",
    "member_keys",
    "member_step",
    "root_key",
    "seed_ids",
    "train",
]


class Chunk(NamedTuple):
    """One finished chunk, on the host: steps ``[start, stop)``; metrics are ``[S, stop - start]``
    numpy arrays, probes :class:`~rvsp_jax.training.devices.MemberParts` ``[S, ceil((stop - start) /
    probe_every), ...]`` (None without a probe); ``state`` is still on the devices."""

    start: int
    stop: int
    metrics: StepMetrics
    probes: Any
    state: EnsembleState


class Ensemble:
    """Compiled training functions for one :class:`TrainConfig` on one device mesh.

    ``probe`` (optional) maps one member's :class:`StepContext` to a pytree recorded at the steps
    ``0, probe_every, 2 * probe_every, ...``; ``chunk`` is rounded to a multiple of ``probe_every``.

    Composes the pure step (:func:`~rvsp_jax.training.step.member_step`, with :attr:`model` and
    :attr:`tx`), the chunk schedule (:attr:`schedule`), the host orders
    (:mod:`~rvsp_jax.training.orders`) and a probe buffer pool per :meth:`chunks` loop.
    """

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset | None = None,
        *,
        probe: Probe | None = None,
        probe_every: int = 1,
        devices=None,
    ):
        self.config = config
        self.dataset = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
        self.model = make_model(config)
        self.tx = config.make_optimizer(jax.eval_shape(partial(init_params, self.model), jax.random.PRNGKey(0)))
        self.mesh = dev.member_mesh(devices)
        self.members = config.members
        self.padded = dev.padded_members(self.members, self.mesh, config.block)
        self.n_train = int(self.dataset.train_labels.shape[0])
        self.steps_per_epoch = config.steps_per_epoch(self.n_train)
        self.total_steps = config.total_steps(self.n_train)
        if not 1 <= probe_every <= self.steps_per_epoch:
            raise ValueError(
                f"probe_every must be between 1 and the steps per epoch ({self.steps_per_epoch}), got {probe_every}"
            )
        self.probe, self.probe_every = probe, probe_every
        self.chunk = chunk_length(config.chunk, self.steps_per_epoch, probe_every)
        self.schedule = Schedule(
            self.mesh, config.block, self.chunk, probe_every, self.steps_per_epoch, self.total_steps
        )
        # injected hyperparameters per grid point, float32 [G] each (members g*S .. g*S+S-1 use g)
        self._hyperparams = {k: np.asarray(v, np.float32) for k, v in config.grid_hyperparams().items()}
        self._check_footprint()
        self._member_ids = dev.put_members(np.arange(self.padded, dtype=np.int32), self.mesh)
        _, data_keys = member_keys(config.base_seed, seed_ids(jnp.arange(self.padded), config), config.vary)
        self._data_keys = np.asarray(jax.device_get(data_keys))
        images = self.dataset.train_images.reshape(self.n_train, -1)
        self._images = dev.put_replicated(images, self.mesh)
        self._labels = dev.put_replicated(self.dataset.train_labels, self.mesh)
        self._init = jax.jit(self._init_fn, out_shardings=dev.member_sharding(self.mesh))
        # the state is not donated (the state a chunk starts from is still handed to the caller while
        # it runs); the probe buffers are (see Schedule.run and chunks)
        plain = partial(member_minibatch_step, self.model, self.tx, config.batch_size)
        probed = partial(plain, probe=probe) if probe is not None else plain
        self._run = jax.jit(partial(self.schedule.run, plain, probed), donate_argnums=(1,))
        self._new_outs = jax.jit(
            partial(self.schedule.probe_buffers, self._probe_shapes(), self.padded),
            out_shardings=dev.member_sharding(self.mesh),
        )
        self._evaluate = jax.jit(jax.vmap(partial(loss_and_accuracy, self.model), in_axes=(0, None, None)))

    def footprint(self) -> footprint.Footprint:
        """Estimated peak memory of training this ensemble (from shapes only; nothing allocated)."""
        one = jax.eval_shape(self._init_fn, jax.ShapeDtypeStruct((1,), jnp.int32))
        state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(one))
        probe = self._probe_shapes()
        probe_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(probe))
        d = self.dataset
        data_bytes = sum(a.nbytes for a in (d.train_images, d.train_labels, d.test_images, d.test_labels))
        return footprint.estimate(
            padded=self.padded,
            state_bytes_per_member=state_bytes,
            n_train=self.n_train,
            chunk=self.chunk,
            probe_bytes_per_step=probe_bytes,
            probe_every=self.probe_every,
            data_bytes=data_bytes,
            devices=self.mesh.size,
        )

    def _check_footprint(self) -> None:
        footprint.check(self.footprint(), self.mesh.devices.flat, members=self.members)

    # ---- pure functions (traced once) -------------------------------------------------------
    def _init_fn(self, member_ids):
        init_keys, _ = member_keys(self.config.base_seed, seed_ids(member_ids, self.config), self.config.vary)
        params = jax.vmap(partial(init_params, self.model))(init_keys)
        opt_state = jax.vmap(self.tx.init)(params)
        # each member's grid point's injected hyperparameters (padding members take the last point)
        g = jnp.clip(member_ids // self.config.seeds, 0, len(self.config.grid()) - 1)
        values = {k: jnp.asarray(v)[g].astype(opt_state.hyperparams[k].dtype) for k, v in self._hyperparams.items()}
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **values})
        s = member_ids.shape[0]
        return EnsembleState(params, opt_state, jnp.zeros(s, bool), jnp.full(s, -1, jnp.int32))

    def step(self, state: MemberState, x, y, step, active=True, *, probe: bool = False):
        """:func:`~rvsp_jax.training.step.member_step` of this ensemble's model and optimizer on
        ONE member (no member axis, no mesh; jit it if called often); ``probe=True`` evaluates the
        ensemble's probe too."""
        return member_step(self.model, self.tx, state, x, y, step, active, self.probe if probe else None)

    def orders(self, epoch: int) -> np.ndarray:
        """Minibatch orders of epochs ``epoch`` and ``epoch + 1`` for every padded member:
        int32 ``[S_pad, 2, N]`` on the host (:func:`rvsp_jax.training.orders.orders`).

        Member s's order in epoch e is ``numpy.random.Generator(PCG64(SeedSequence([k0, k1, e])))
        .permutation(N)`` with ``(k0, k1)`` its data key: drawn on the host because a sort-based
        permutation of 60,000 indices per member is the slowest op XLA would run here (tens of seconds
        for 256 members on 2 cores, against 0.2 s for numpy). Members that share a data key
        (``vary=init``) share the order, and it is computed once.
        """
        return host_orders.orders(self._data_keys, epoch, self.n_train)

    def _probe_shapes(self):
        """Shapes and dtypes of one member's probe output (a pytree of ``jax.ShapeDtypeStruct``)."""
        if self.probe is None:
            return None
        params = jax.eval_shape(partial(init_params, self.model), jax.random.PRNGKey(0))
        b = self.config.batch_size
        pixels = int(np.prod(self.dataset.train_images.shape[1:]))
        ctx = StepContext(
            params,
            params,
            params,
            jax.ShapeDtypeStruct((b, pixels), jnp.float32),
            jax.ShapeDtypeStruct((b,), self.dataset.train_labels.dtype),
        )
        return jax.eval_shape(self.probe, ctx)

    # ---- driver (host side) -----------------------------------------------------------------
    def init(self) -> EnsembleState:
        """Initial state of all (padded) members, split over the mesh."""
        return self._init(self._member_ids)

    def put_state(self, state: EnsembleState) -> EnsembleState:
        """Place a host copy of a state (e.g. a checkpoint) back on the mesh."""
        return jax.tree_util.tree_map(lambda a: dev.put_members(a, self.mesh), state)

    def chunks(self, state: EnsembleState, start: int = 0, stop: int | None = None) -> Iterator[Chunk]:
        """Train from step ``start`` to ``stop`` (default: the end), yielding each chunk on the host.

        ``start`` must be a chunk boundary of an earlier run (0, chunk, 2*chunk, ...) for the
        trajectory to equal an uninterrupted one bit for bit; that is what resuming uses.
        The next chunk is dispatched before the previous one is copied to the host, so the device
        computes chunk k+1 while the caller handles chunk k.

        Probes arrive as :class:`~rvsp_jax.training.devices.MemberParts`, zero-copy views of the device
        buffers. Once the caller holds no view of a chunk's probes any more, the trainer writes a
        later chunk's probes into the same buffers (up to :data:`SPARE_CHUNKS` finished chunks are
        kept for that: :class:`~rvsp_jax.training.buffers.BufferPool`); a chunk whose views are
        still held is never reused, so keeping them is safe, it only costs fresh memory for the
        chunks that follow.
        """
        stop = self.total_steps if stop is None else min(stop, self.total_steps)
        orders, orders_epoch, pending = None, None, None
        pool = BufferPool(self._new_outs)
        step = start
        while step < stop:
            epoch = step // self.steps_per_epoch
            if orders_epoch != epoch:
                orders, orders_epoch = dev.put_members(self.orders(epoch), self.mesh), epoch
            state, metrics, probes = self._run(
                state, pool.take(), orders, jnp.int32(step), jnp.int32(epoch), self._images, self._labels
            )
            end = min(step + self.chunk, self.total_steps)
            if pending is not None:
                yield self._to_host(*pending, pool)
            pending = (step, end, metrics, probes, state)
            step = end
        if pending is not None:
            yield self._to_host(*pending, pool)

    def _to_host(self, start, stop, metrics, probes, state, pool: BufferPool) -> Chunk:
        n = stop - start
        host_metrics = jax.tree_util.tree_map(lambda a: dev.fetch(a)[: self.members, :n], metrics)
        host_probes = jax.tree_util.tree_map(
            lambda a: dev.member_parts(a, self.members, -(-n // self.probe_every)), probes
        )
        pool.hand_out(probes, host_probes)
        return Chunk(start, stop, host_metrics, host_probes, state)

    def evaluate(self, params, split: str = "test"):
        """Loss and accuracy ``[S]`` of each member on the whole test (or train) split (float32)."""
        images = getattr(self.dataset, f"{split}_images")
        labels = getattr(self.dataset, f"{split}_labels")
        x = dev.put_replicated(to_model_inputs(images), self.mesh)
        y = dev.put_replicated(labels, self.mesh)
        loss, acc = self._evaluate(params, x, y)
        return dev.fetch(loss)[: self.members], dev.fetch(acc)[: self.members]


def host_state(state: EnsembleState, members: int | None = None) -> EnsembleState:
    """The state as host numpy arrays (optionally only the first ``members``)."""
    return jax.tree_util.tree_map(lambda a: dev.fetch(a)[:members], state)


def train(
    config: TrainConfig,
    dataset: Dataset | None = None,
    *,
    probe: Probe | None = None,
    probe_every: int = 1,
    devices=None,
) -> TrainResult:
    """Train the whole ensemble and return its trajectories (see :class:`TrainResult`)."""
    ens = Ensemble(config, dataset, probe=probe, probe_every=probe_every, devices=devices)
    t0 = time.perf_counter()
    state = ens.init()
    parts = []
    for chunk in ens.chunks(state):
        state = chunk.state
        # copied, so that the trainer can reuse the chunk's buffers
        parts.append((chunk.metrics, jax.tree_util.tree_map(np.array, chunk.probes)))
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    cat = lambda *xs: np.concatenate(xs, axis=1)  # noqa: E731
    metrics = jax.tree_util.tree_map(cat, *[m for m, _ in parts])
    probes = jax.tree_util.tree_map(cat, *[p for _, p in parts]) if probe is not None else None
    test_loss, test_acc = ens.evaluate(state.params)
    final = host_state(state, ens.members)
    return TrainResult(
        config,
        final.params,
        metrics,
        probes,
        test_loss,
        test_acc,
        final.diverged,
        final.diverged_at,
        seconds,
        probe_every,
    )
