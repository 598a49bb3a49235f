"""Which devices the ensemble runs on, and the 1-D member mesh over them.

On a CPU, XLA runs one small model's ops on about one core, so the ensemble splits its members over
*host devices*, one per core by default. The number of host devices must be fixed before JAX
initialises its backends. Importing ``rvsp_jax`` changes nothing; the entry points call
:func:`use_host_devices` before JAX starts: the experiments (through
:func:`rvsp_jax.cli.parse_experiment`, which also reads ``--devices``), ``python -m rvsp_jax.launch``,
the benchmarks (:func:`setup_host_devices`) and the tests (``tests/conftest.py``). A notebook that
wants one host device per core calls ``rvsp_jax.training.devices.use_host_devices()`` before its first JAX
computation (otherwise JAX's default, one CPU device, is used).

Precedence, highest first:
1. a user's own ``XLA_FLAGS`` containing ``--xla_force_host_platform_device_count`` (left alone);
2. ``RVSP_JAX_HOST_DEVICES`` (an integer; ``1`` turns the split off), or an explicit
   ``use_host_devices(n)`` call made before JAX starts (the ``--devices`` option does this);
3. ``os.cpu_count()``.

On a GPU the host-device count is irrelevant: the mesh spans the accelerators. When
``jax.distributed.initialize()`` has been called (``python -m rvsp_jax.launch`` does it), ``jax.devices()``
lists every process's devices and the mesh spans them all. Each process then holds only its own
devices' members (:func:`member_parts`, :func:`member_ranges`) and writes only their chunks; process 0
is the one writer of everything else (:func:`is_writer`). Decisions that start collectives are agreed
(:func:`agree`), barriers are :func:`sync`, and threads that must not start device collectives
coordinate through the coordination service (:func:`announce`, :func:`await_all`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = "members"
_FORCE_FLAG = "--xla_force_host_platform_device_count"


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge  # no public API for this check

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # another JAX version: assume started, change nothing
        return True


def use_host_devices(n: int | None = None) -> int | None:
    """Ask for ``n`` CPU host devices (default: env ``RVSP_JAX_HOST_DEVICES`` or one per core).

    Returns the number requested, or None when nothing was changed: the user's ``XLA_FLAGS`` already
    set it, or JAX's backends already started (then the current devices are kept; an explicit ``n``
    that cannot be honoured raises, naming the remedy).
    """
    if _FORCE_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    explicit = n is not None
    if n is None:
        env = os.environ.get("RVSP_JAX_HOST_DEVICES")
        if env:
            try:
                n = int(env)
            except ValueError:
                raise ValueError(
                    f"RVSP_JAX_HOST_DEVICES must be an integer >= 1, got {env!r}; "
                    "unset it or set it to the number of host devices"
                ) from None
        else:
            n = os.cpu_count() or 1
    if n < 1:
        raise ValueError(f"the number of host devices must be >= 1, got {n}; give --devices 1 or more")
    if _backends_started():
        if explicit and jax.config.jax_num_cpu_devices not in (-1, n) and len(jax.devices("cpu")) != n:
            raise RuntimeError(
                f"cannot switch to {n} host devices: JAX has already started with "
                f"{len(jax.devices('cpu'))}. Set RVSP_JAX_HOST_DEVICES={n} before starting Python."
            )
        return None
    jax.config.update("jax_num_cpu_devices", int(n))
    return int(n)


def setup_host_devices(n: int | None = None) -> int | None:
    """:func:`use_host_devices` for an entry point that keeps going on a bad value: a bad
    ``RVSP_JAX_HOST_DEVICES`` (or ``n``) becomes a warning and JAX's default devices are kept
    (the experiments refuse it instead, see :func:`rvsp_jax.cli.parse_experiment`)."""
    try:
        return use_host_devices(n)
    except ValueError as e:
        import warnings

        warnings.warn(f"{e}; using JAX's default devices (the experiments refuse it)", stacklevel=2)
        return None


def member_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``members`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (MEMBER_AXIS,))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits axis 0 (members) over the mesh and replicates the other axes."""
    return NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that puts a full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def padded_members(members: int, mesh: Mesh, block: int = 1) -> int:
    """Smallest multiple of ``block`` x the mesh size that holds ``members`` (padding is trained,
    then dropped)."""
    d = mesh.size * block
    return -(-members // d) * d


def put_members(x, mesh: Mesh):
    """Place a host array ``x: [S_pad, ...]`` on the mesh, split along members (multi-process safe)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, member_sharding(mesh), lambda idx: x[idx])


def put_replicated(x, mesh: Mesh):
    """Place a host array on every device of the mesh (multi-process safe)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, replicated(mesh), lambda idx: x[idx])


def fetch(x) -> np.ndarray:
    """Bring a (possibly multi-process) global array to this host as numpy."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


class MemberParts:
    """A host array ``[S, ...]`` held as consecutive parts along its member axis, each a numpy array.

    :func:`member_parts` makes them zero-copy views of the device shards that computed the members,
    so large outputs (every parameter at every step) reach the store without being copied on the
    host. ``numpy.asarray(parts)`` concatenates them into one array.

    With several processes a host holds only the parts of its own devices: ``starts`` gives the
    global index of each part's first member, ``shape[0]`` is the global member count, and
    :attr:`complete` is False. ``numpy.asarray`` of an incomplete one calls ``gather`` (a collective
    that every process must make at the same point, see :func:`fetch`) or, without it, raises.
    """

    def __init__(self, parts, starts=None, members: int | None = None, gather: Callable[[], np.ndarray] | None = None):
        self.parts = tuple(parts)
        if not self.parts:
            raise ValueError("MemberParts needs at least one part")
        sizes = [p.shape[0] for p in self.parts]
        if starts is None:
            starts = np.cumsum([0] + sizes[:-1]).tolist()
        self._starts = tuple(int(a) for a in starts)
        if len(self._starts) != len(self.parts):
            raise ValueError(f"MemberParts got {len(self.parts)} parts but {len(self._starts)} starts")
        ends = [a + n for a, n in zip(self._starts, sizes)]
        if any(b > a for a, b in zip(self._starts[1:], ends[:-1])) or self._starts[0] < 0:
            raise ValueError(
                f"MemberParts parts must be in member order without overlap, got starts "
                f"{self._starts} and sizes {sizes}"
            )
        self._members = ends[-1] if members is None else int(members)
        if self._members < ends[-1]:
            raise ValueError(f"MemberParts of {self._members} members cannot hold a part ending at {ends[-1]}")
        self._gather = gather

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._members, *self.parts[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    @property
    def starts(self) -> tuple[int, ...]:
        """Index of the first member of every part."""
        return self._starts

    @property
    def complete(self) -> bool:
        """Whether the parts hold every member (always, in a single process)."""
        return sum(p.shape[0] for p in self.parts) == self._members and self._starts[0] == 0

    def __array__(self, dtype=None, copy=None):
        # numpy's protocol: copy=True must return new memory, copy=False must not copy
        if not self.complete:
            if copy is False:
                raise ValueError("MemberParts of some members only cannot become one array without a copy")
            if self._gather is None:
                raise ValueError(
                    f"this process holds members {self._held()} of {self._members} only; "
                    "write them with rvsp_jax.io.store.write_by_chunk, or gather them with "
                    "rvsp_jax.training.devices.fetch on every process"
                )
            whole = self._gather()
            return whole if dtype is None else whole.astype(dtype, copy=False)
        if len(self.parts) == 1 and not copy:
            whole = self.parts[0]
            if dtype is not None and np.dtype(dtype) != whole.dtype:
                if copy is False:
                    raise ValueError(f"MemberParts of {whole.dtype} cannot become {dtype} without a copy")
                whole = whole.astype(dtype)
            return whole
        if copy is False:
            raise ValueError(f"MemberParts of {len(self.parts)} parts cannot become one array without a copy")
        whole = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0].copy()
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def _held(self) -> str:
        return ", ".join(f"{a}-{a + p.shape[0] - 1}" for a, p in zip(self._starts, self.parts))

    def __repr__(self) -> str:
        return f"MemberParts(shape={self.shape}, dtype={self.dtype}, parts={len(self.parts)})"


def member_parts(x, members: int, steps: int | None = None) -> MemberParts:
    """The first ``members`` members (and first ``steps`` entries of axis 1) of a member-split array
    ``x: [S_pad, T, ...]`` on the host.

    Every part is a read-only, zero-copy view of one device's shard (on a CPU the device memory is
    host memory), which keeps that device buffer alive while it is referenced. With several
    processes only this process's shards are there (its devices' members, at their global
    ``starts``): nothing crosses between hosts, each process writes its own members' chunks.
    """
    cut = (slice(None),) if steps is None else (slice(None), slice(0, steps))
    parts, starts = [], []
    for shard in sorted(x.addressable_shards, key=lambda sh: sh.index[0].start or 0):
        a = shard.index[0].start or 0
        if a >= members:
            break
        part = np.asarray(shard.data)[: members - a][cut]
        parts.append(part)
        starts.append(a)
    if jax.process_count() == 1:
        return MemberParts(parts, starts, members)
    if not parts:  # a process whose devices hold padding only: an empty part at the end
        shape = (0, *x.shape[1:]) if steps is None else (0, min(steps, x.shape[1]), *x.shape[2:])
        parts, starts = [np.empty(shape, x.dtype)], [members]
    return MemberParts(parts, starts, members, gather=lambda: fetch(x)[:members][cut])


def member_ranges(mesh: Mesh, padded: int, members: int) -> dict[int, list[tuple[int, int]]]:
    """Members ``[a, b)`` held by each process (``process_index -> ranges``), of ``members`` split
    over ``mesh`` as ``padded`` (padding left out); the same on every process."""
    indices = member_sharding(mesh).devices_indices_map((padded,))
    ranges: dict[int, list[tuple[int, int]]] = {}
    for d, (index,) in indices.items():
        a, b = index.start or 0, min(index.stop if index.stop is not None else padded, members)
        if a < b:
            ranges.setdefault(d.process_index, []).append((a, b))
    return {p: sorted(r) for p, r in sorted(ranges.items())}


# ---- several processes (jax.distributed): one writer, barriers, agreement ----------------------


def is_writer() -> bool:
    """Whether this process writes the run folder's manifest, checkpoints and final results
    (process 0; every process writes its own members' chunks). Also the one writer of a study's
    ``summary.json``, ``report.md`` and figures. Before JAX has started and without
    ``jax.distributed`` this is True without starting JAX (so asking keeps the devices unset)."""
    if not _backends_started() and not _distributed():
        return True
    return jax.process_index() == 0


def _distributed() -> bool:
    check = getattr(jax.distributed, "is_initialized", None)
    return True if check is None else bool(check())


def sync(name: str) -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flags) -> np.ndarray:
    """Every process's boolean ``flags: [k]``, as ``[processes, k]`` (one collective; in a single
    process just ``[1, k]``). Decisions that start collectives (checkpoint now, stop now) are made
    from it, so that every process makes them at the same chunk."""
    flags = np.asarray(flags, dtype=np.int32).reshape(1, -1)
    if jax.process_count() == 1:
        return flags.astype(bool)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(flags[0])).reshape(jax.process_count(), -1) > 0


_TOKENS = [0]


def new_token() -> int:
    """A number that is the same on every process at the same call (calls are made in lockstep):
    names the coordination keys of one recording session apart from the next."""
    _TOKENS[0] += 1
    return _TOKENS[0]


def _client():
    from jax._src import distributed  # the coordination service client; no public API for it

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError(
            "several JAX processes but no jax.distributed client: start them with "
            "python -m rvsp_jax.launch, or call jax.distributed.initialize() first"
        )
    return client


def announce(key: str) -> None:
    """Tell every process that this one reached ``key`` (a host-side key of the coordination service,
    safe from any thread, no device collective)."""
    if jax.process_count() > 1:
        _client().key_value_set(f"rvsp_jax/{key}/{jax.process_index()}", "1")


def await_all(key: str, timeout_s: float = 3600.0) -> None:
    """Wait until every other process has :func:`announce`-d ``key`` (safe from any thread)."""
    if jax.process_count() > 1:
        client = _client()
        for p in range(jax.process_count()):
            if p != jax.process_index():
                client.blocking_key_value_get(f"rvsp_jax/{key}/{p}", int(timeout_s * 1000))


def views_released(arrays: Iterable[MemberParts]) -> Callable[[], bool]:
    """A function telling whether every numpy array viewing ``arrays`` is gone (their parts, any
    slice of them, a ``MemberParts`` holding them), i.e. whether their memory may be reused."""
    refs = []
    for part in (part for parts in arrays for part in parts.parts):
        while isinstance(part.base, np.ndarray):  # a slice of a view: follow it to the viewed array
            part = part.base
        refs.append(weakref.ref(part))
    return lambda: all(r() is None for r in refs)


def describe() -> str:
    """One line naming the platform and devices, for manifests and benchmark output."""
    devs = jax.devices()
    kinds = sorted({d.device_kind for d in devs})
    return f"{jax.default_backend()} x{len(devs)} ({', '.join(kinds)}; {jax.process_count()} process(es))"
