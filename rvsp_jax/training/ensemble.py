"""The ensemble trainer: S seeded copies of one network, trained at once as ``jit(scan(vmap(step)))``.

Member ``s`` has two keys, both derived by ``fold_in`` from the root seed, so its trajectory does not
depend on how many other members there are::

    init key of s = fold_in(fold_in(root, 0), s if vary in {both, init} else 0)
    data key of s = fold_in(fold_in(root, 1), s if vary in {both, data} else 0)

Each epoch ``e`` member ``s`` visits the training set in a permutation seeded by its data key and
``e`` (:meth:`Ensemble.orders`), in minibatches of ``batch_size`` (the incomplete last batch is
dropped). Members are split over a 1-D device mesh (:mod:`rvsp_jax.training.devices`) and, on each device,
computed in blocks of ``config.block`` members; S is padded up to a multiple of block x devices with
extra, genuinely trained members that are dropped from every output. A member whose loss or parameters become non-finite is marked diverged at that step and
frozen; the others go on; its metrics read NaN from the next step on and its probes from that step on.

Training runs in compiled chunks of ``config.chunk`` steps (one compilation per configuration; steps
past the end of training inside the last chunk are masked out). :meth:`Ensemble.chunks` yields each
finished chunk as host arrays, which is where recording, progress bars and checkpoints attach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import PartitionSpec

from rvsp_jax.training import devices as dev
from rvsp_jax.training import footprint
from rvsp_jax.config import TrainConfig
from rvsp_jax.data import Dataset, load, to_model_inputs
from rvsp_jax.training.model import init_params, loss_and_accuracy, make_model


SPARE_CHUNKS = 4
"""Finished chunks whose probe buffers :meth:`Ensemble.chunks` keeps for reuse by later chunks."""


class EnsembleState(NamedTuple):
    """Training state, every leaf with a leading member axis ``[S_pad, ...]``."""

    params: Any
    opt_state: Any
    diverged: jax.Array  # bool [S_pad]
    diverged_at: jax.Array  # int32 [S_pad]: step at which the member diverged, -1 if it has not


class StepMetrics(NamedTuple):
    """Per-member scalars of one step (float32): minibatch loss and accuracy before the update,
    global L2 norm of the gradient and of the applied update."""

    loss: jax.Array
    accuracy: jax.Array
    grad_norm: jax.Array
    update_norm: jax.Array


class StepContext(NamedTuple):
    """What a probe sees at one step of one member: parameters before and after the update, the
    gradient, and the minibatch (``x: [B, 784]`` float32, ``y: [B]``)."""

    params: Any
    new_params: Any
    grads: Any
    x: jax.Array
    y: jax.Array


Probe = Callable[[StepContext], Any]
"""A pure function of one member's :class:`StepContext` returning a pytree of arrays to record."""


class Chunk(NamedTuple):
    """One finished chunk, on the host: steps ``[start, stop)``; metrics are ``[S, stop - start]``
    numpy arrays, probes :class:`~rvsp_jax.training.devices.MemberParts` ``[S, ceil((stop - start) /
    probe_every), ...]`` (None without a probe); ``state`` is still on the devices."""

    start: int
    stop: int
    metrics: StepMetrics
    probes: Any
    state: EnsembleState


def root_key(base_seed: int) -> jax.Array:
    """The raw threefry key ``[hi, lo]`` (uint32) of a seed in ``[0, 2**64)``; for seeds below 2**32
    it equals ``jax.random.PRNGKey(base_seed)``, which would silently wrap larger ones without x64."""
    if not 0 <= int(base_seed) < 2**64:
        raise ValueError(f"base_seed must be from 0 to 2**64 - 1, got {base_seed}")
    seed = int(base_seed)
    return jnp.asarray(np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32))


def member_keys(base_seed: int, members: jax.Array, vary: str):
    """Init and data keys ``[S, 2]`` (uint32 raw keys) of the given member ids ``members: [S]``."""
    root = root_key(base_seed)
    init_root, data_root = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    init_ids = members if vary in ("both", "init") else jnp.zeros_like(members)
    data_ids = members if vary in ("both", "data") else jnp.zeros_like(members)
    fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
    return fold(init_root, init_ids), fold(data_root, data_ids)


def seed_ids(members: jax.Array, config: TrainConfig) -> jax.Array:
    """The seed index of each member id (``members: [S_pad]`` int): member ``g * seeds + s`` of a
    sweep is seed ``s``, so it starts from the same weights and data order as member ``s`` of a
    plain run; padding members (ids past the last real one) keep their own id."""
    real = config.members
    return jnp.where(members < real, members % config.seeds, members)


def _tree_where(cond, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


@dataclass
class TrainResult:
    """Outputs of :func:`train`, on the host, padding members dropped (``S = config.seeds``)."""

    config: TrainConfig
    params: Any  # final parameters [S, ...]
    metrics: StepMetrics  # each [S, T]
    probes: Any  # pytree of [S, T, ...] or None
    test_loss: np.ndarray  # [S]
    test_accuracy: np.ndarray  # [S]
    diverged: np.ndarray  # bool [S]
    diverged_at: np.ndarray  # int [S]
    seconds: float  # wall time of the training loop, compilation included


class Ensemble:
    """Compiled training functions for one :class:`TrainConfig` on one device mesh.

    ``probe`` (optional) maps one member's :class:`StepContext` to a pytree recorded at the steps
    ``0, probe_every, 2 * probe_every, ...``; ``chunk`` is rounded to a multiple of ``probe_every``.
    """

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None, *,
                 probe: Probe | None = None, probe_every: int = 1, devices=None):
        self.config = config
        self.dataset = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
        self.model = make_model(config)
        self.tx = config.make_optimizer(
            jax.eval_shape(partial(init_params, self.model), jax.random.PRNGKey(0)))
        self.mesh = dev.member_mesh(devices)
        self.members = config.members
        self.padded = dev.padded_members(self.members, self.mesh, config.block)
        self.n_train = int(self.dataset.train_labels.shape[0])
        self.steps_per_epoch = config.steps_per_epoch(self.n_train)
        self.total_steps = config.total_steps(self.n_train)
        if not 1 <= probe_every <= self.steps_per_epoch:
            raise ValueError(f"probe_every must be between 1 and the steps per epoch "
                             f"({self.steps_per_epoch}), got {probe_every}")
        self.probe, self.probe_every = probe, probe_every
        chunk = min(config.chunk, self.steps_per_epoch)
        self.chunk = max(probe_every, chunk // probe_every * probe_every)
        # injected hyperparameters per grid point, float32 [G] each (members g*S .. g*S+S-1 use g)
        self._hyperparams = {k: np.asarray(v, np.float32) for k, v in config.grid_hyperparams().items()}
        self._check_footprint()
        self._member_ids = dev.put_members(np.arange(self.padded, dtype=np.int32), self.mesh)
        _, data_keys = member_keys(config.base_seed, seed_ids(jnp.arange(self.padded), config),
                                   config.vary)
        self._data_keys = np.asarray(jax.device_get(data_keys))
        images = self.dataset.train_images.reshape(self.n_train, -1)
        self._images = dev.put_replicated(images, self.mesh)
        self._labels = dev.put_replicated(self.dataset.train_labels, self.mesh)
        self._init = jax.jit(self._init_fn, out_shardings=dev.member_sharding(self.mesh))
        # the state is not donated (the state a chunk starts from is still handed to the caller while
        # it runs); the probe buffers are (see _run_fn and chunks)
        self._run = jax.jit(self._run_fn, donate_argnums=(1,))
        self._new_outs = jax.jit(self._new_outs_fn, out_shardings=dev.member_sharding(self.mesh))
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
            padded=self.padded, state_bytes_per_member=state_bytes, n_train=self.n_train,
            chunk=self.chunk, probe_bytes_per_step=probe_bytes, probe_every=self.probe_every,
            data_bytes=data_bytes, devices=self.mesh.size)

    def _check_footprint(self) -> None:
        footprint.check(self.footprint(), self.mesh.devices.flat, members=self.members)

    # ---- pure functions (traced once) -------------------------------------------------------
    def _init_fn(self, member_ids):
        init_keys, _ = member_keys(self.config.base_seed, seed_ids(member_ids, self.config),
                                   self.config.vary)
        params = jax.vmap(partial(init_params, self.model))(init_keys)
        opt_state = jax.vmap(self.tx.init)(params)
        # each member's grid point's injected hyperparameters (padding members take the last point)
        g = jnp.clip(member_ids // self.config.seeds, 0, len(self.config.grid()) - 1)
        values = {k: jnp.asarray(v)[g].astype(opt_state.hyperparams[k].dtype)
                  for k, v in self._hyperparams.items()}
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **values})
        s = member_ids.shape[0]
        return EnsembleState(params, opt_state, jnp.zeros(s, bool), jnp.full(s, -1, jnp.int32))

    def orders(self, epoch: int) -> np.ndarray:
        """Minibatch orders of epochs ``epoch`` and ``epoch + 1`` for every padded member:
        int32 ``[S_pad, 2, N]`` on the host.

        Member s's order in epoch e is ``numpy.random.Generator(PCG64(SeedSequence([k0, k1, e])))
        .permutation(N)`` with ``(k0, k1)`` its data key: drawn on the host because a sort-based
        permutation of 60,000 indices per member is the slowest op XLA would run here (tens of seconds
        for 256 members on 2 cores, against 0.2 s for numpy). Members that share a data key
        (``vary=init``) share the order, and it is computed once.
        """
        cache: dict[tuple, np.ndarray] = {}
        out = np.empty((self.padded, 2, self.n_train), np.int32)
        for s, key in enumerate(self._data_keys):
            for j, e in enumerate((epoch, epoch + 1)):
                seed = (int(key[0]), int(key[1]), int(e))
                if seed not in cache:
                    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
                    cache[seed] = rng.permutation(self.n_train).astype(np.int32)
                out[s, j] = cache[seed]
        return out

    def _member_step(self, params, opt_state, diverged, diverged_at, order, step, pos, active,
                     images, labels, with_probe=False):
        b = self.config.batch_size
        idx = jax.lax.dynamic_slice_in_dim(order, pos * b, b)
        x = images[idx].astype(jnp.float32) * (1.0 / 255.0)
        y = labels[idx]
        (loss, acc), grads = jax.value_and_grad(
            partial(loss_and_accuracy, self.model), has_aux=True)(params, x, y)
        updates, new_opt = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & _all_finite(new_params)
        move = active & ~diverged & finite
        now_diverged = active & ~diverged & ~finite
        new_params = _tree_where(move, new_params, params)
        new_opt = _tree_where(move, new_opt, opt_state)
        nan = jnp.float32(jnp.nan)
        metrics = StepMetrics(*(jnp.where(diverged, nan, v.astype(jnp.float32)) for v in (
            loss, acc, optax.tree.norm(grads), optax.tree.norm(updates))))
        probes = None
        if with_probe:
            # a member that diverged at this step or before records NaN (not its frozen values)
            gone = diverged | now_diverged
            probes = jax.tree_util.tree_map(
                lambda v: jnp.where(gone, jnp.asarray(jnp.nan, v.dtype), v)
                if jnp.issubdtype(v.dtype, jnp.floating) else v,
                self.probe(StepContext(params, new_params, grads, x, y)))
        return (new_params, new_opt, diverged | now_diverged,
                jnp.where(now_diverged, step, diverged_at), metrics, probes)

    def _probe_shapes(self):
        """Shapes and dtypes of one member's probe output (a pytree of ``jax.ShapeDtypeStruct``)."""
        if self.probe is None:
            return None
        params = jax.eval_shape(partial(init_params, self.model), jax.random.PRNGKey(0))
        b = self.config.batch_size
        pixels = int(np.prod(self.dataset.train_images.shape[1:]))
        ctx = StepContext(params, params, params,
                          jax.ShapeDtypeStruct((b, pixels), jnp.float32),
                          jax.ShapeDtypeStruct((b,), self.dataset.train_labels.dtype))
        return jax.eval_shape(self.probe, ctx)

    def _run_fn(self, state: EnsembleState, outs, orders, start, first_epoch, images, labels):
        """Run ``self.chunk`` steps from ``start``; steps at or past ``total_steps`` are no-ops.

        Each device loops over its members in blocks of ``config.block``; inside a block the steps
        are scanned and the members vmapped. Every member is therefore always computed by the same
        compiled block, whatever S and the device count, which makes its trajectory bit-identical
        across ensemble sizes (XLA picks different dot kernels for different batch sizes, so a plain
        vmap over all members is not).

        Probe values are written, as they are computed, into ``outs``: one buffer per probe leaf,
        ``[S_pad, chunk // probe_every, ...]``, carried through both loops so that XLA updates it in
        place. ``outs`` is donated: the caller passes the buffers of a chunk it has finished with
        (:meth:`chunks` does), so recording every parameter at every step writes each value once
        into memory that is already mapped, instead of stacking and reordering the loops' outputs
        into freshly allocated buffers (at S=256 on 2 cores those copies and the page faults of the
        new memory took nearly as much CPU time as training itself; see docs/benchmarks.md).
        """
        m, every = self.config.block, self.probe_every
        n_rec = self.chunk // every
        in_axes = (0, 0, 0, 0, 0, None, None, None, None, None)
        plain = jax.vmap(self._member_step, in_axes=in_axes)
        probed = jax.vmap(partial(self._member_step, with_probe=self.probe is not None), in_axes=in_axes)
        firsts = start + every * jnp.arange(n_rec, dtype=jnp.int32)

        def run_block(outs, block, images, labels):
            b, st, block_orders = block

            def one_step(step_fn, st: EnsembleState, step):
                epoch = step // self.steps_per_epoch
                order = block_orders[:, jnp.clip(epoch - first_epoch, 0, 1)]
                active = step < self.total_steps
                *new, metrics, probes = step_fn(*st, order, step, step % self.steps_per_epoch,
                                                active, images, labels)
                return EnsembleState(*new), metrics, probes

            def record(outs, r, probes):
                # outs leaves [blocks, M, n_rec, ...] <- probes leaves [M, ...] at (block b, step r)
                return jax.tree_util.tree_map(
                    lambda buf, v: jax.lax.dynamic_update_slice(
                        buf, v[None, :, None].astype(buf.dtype), (b, 0, r) + (0,) * (v.ndim - 1)),
                    outs, probes)

            def group(carry, xs):
                # the first step of every group of `every` steps is probed, the others are not
                st, outs = carry
                r, first = xs
                st, metrics, probes = one_step(probed, st, first)
                if probes is not None:
                    outs = record(outs, r, probes)
                metrics = jax.tree_util.tree_map(lambda a: a[None], metrics)
                if every > 1:
                    st, rest = jax.lax.scan(lambda s, t: one_step(plain, s, t)[:2], st,
                                            first + 1 + jnp.arange(every - 1, dtype=jnp.int32))
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
                partial(run_block, images=images, labels=labels), to_blocks(outs),
                (jnp.arange(blocks), to_blocks(state), to_blocks(orders)))
            return from_blocks(state), from_blocks(metrics), from_blocks(outs)

        spec = PartitionSpec(dev.MEMBER_AXIS)
        return jax.shard_map(local, mesh=self.mesh,
                             in_specs=(spec, spec, spec, PartitionSpec(), PartitionSpec()),
                             out_specs=(spec, spec, spec))(state, outs, orders, images, labels)

    def _new_outs_fn(self):
        """Probe buffers ``[S_pad, chunk // probe_every, ...]`` of one chunk (zeros; None without a
        probe), split over the mesh."""
        n_rec = self.chunk // self.probe_every
        return jax.tree_util.tree_map(lambda s: jnp.zeros((self.padded, n_rec, *s.shape), s.dtype),
                                      self._probe_shapes())

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
        kept for that); a chunk whose views are still held is never reused, so keeping them is
        safe, it only costs fresh memory for the chunks that follow.
        """
        stop = self.total_steps if stop is None else min(stop, self.total_steps)
        orders, orders_epoch, pending = None, None, None
        spare: list = []  # (device probe buffers, released) of chunks handed out, oldest first
        step = start
        while step < stop:
            epoch = step // self.steps_per_epoch
            if orders_epoch != epoch:
                orders, orders_epoch = dev.put_members(self.orders(epoch), self.mesh), epoch
            state, metrics, probes = self._run(state, self._buffers(spare), orders, jnp.int32(step),
                                               jnp.int32(epoch), self._images, self._labels)
            end = min(step + self.chunk, self.total_steps)
            if pending is not None:
                yield self._to_host(*pending, spare)
            pending = (step, end, metrics, probes, state)
            step = end
        if pending is not None:
            yield self._to_host(*pending, spare)

    def _buffers(self, spare: list):
        """Probe buffers for the next chunk: those of a handed-out chunk that the caller has
        released, else new ones."""
        for i, (outs, released) in enumerate(spare):
            if released():
                del spare[i]
                return outs
        del spare[: max(0, len(spare) - SPARE_CHUNKS + 1)]
        return self._new_outs()

    def _to_host(self, start, stop, metrics, probes, state, spare: list) -> Chunk:
        n = stop - start
        host_metrics = jax.tree_util.tree_map(lambda a: dev.fetch(a)[: self.members, :n], metrics)
        host_probes = jax.tree_util.tree_map(
            lambda a: dev.member_parts(a, self.members, -(-n // self.probe_every)), probes)
        if probes is not None:
            spare.append((probes, dev.views_released(jax.tree_util.tree_leaves(
                host_probes, is_leaf=lambda x: isinstance(x, dev.MemberParts)))))
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


def train(config: TrainConfig, dataset: Dataset | None = None, *, probe: Probe | None = None,
          probe_every: int = 1, devices=None) -> TrainResult:
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
    return TrainResult(config, final.params, metrics, probes, test_loss, test_acc,
                       final.diverged, final.diverged_at, seconds)
