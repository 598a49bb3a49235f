"""Which devices the ensemble runs on, and the 1-D member mesh over them.

On a CPU, XLA runs one small model's ops on about one core, so the ensemble splits its members over
*host devices*, one per core by default. The number of host devices must be fixed before JAX
initialises its backends; ``rvsp_jax`` calls :func:`use_host_devices` when it is imported, so every
entry point (experiments, benchmarks, tests, a notebook that imports ``rvsp_jax`` first) gets it.

Precedence, highest first:
1. a user's own ``XLA_FLAGS`` containing ``--xla_force_host_platform_device_count`` (left alone);
2. ``RVSP_JAX_HOST_DEVICES`` (an integer; ``1`` turns the split off), or an explicit
   ``use_host_devices(n)`` call made before JAX starts (the ``--devices`` option does this);
3. ``os.cpu_count()``.

On a GPU the host-device count is irrelevant: the mesh spans the accelerators. When
``jax.distributed.initialize()`` has been called, ``jax.devices()`` lists every process's devices and
the mesh spans them all (multi-machine runs need no other change).
"""

from __future__ import annotations

import os
import weakref
from typing import Callable, Iterable

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
                raise ValueError(f"RVSP_JAX_HOST_DEVICES must be an integer >= 1, got {env!r}; "
                                 "unset it or set it to the number of host devices") from None
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
    """

    def __init__(self, parts):
        self.parts = tuple(parts)
        if not self.parts:
            raise ValueError("MemberParts needs at least one part")

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(p.shape[0] for p in self.parts), *self.parts[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    @property
    def starts(self) -> tuple[int, ...]:
        """Index of the first member of every part."""
        return tuple(np.cumsum([0] + [p.shape[0] for p in self.parts[:-1]]).tolist())

    def __array__(self, dtype=None, copy=None):
        # numpy's protocol: copy=True must return new memory, copy=False must not copy
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

    def __repr__(self) -> str:
        return f"MemberParts(shape={self.shape}, dtype={self.dtype}, parts={len(self.parts)})"


def member_parts(x, members: int, steps: int | None = None) -> MemberParts:
    """The first ``members`` members (and first ``steps`` entries of axis 1) of a member-split array
    ``x: [S_pad, T, ...]`` on the host.

    In a single process every part is a read-only, zero-copy view of one device's shard (on a CPU
    the device memory is host memory), which keeps that device buffer alive while it is referenced;
    with several processes the array is gathered (:func:`fetch`) into one part.
    """
    cut = (slice(None),) if steps is None else (slice(None), slice(0, steps))
    if jax.process_count() > 1:
        return MemberParts([fetch(x)[:members][cut]])
    parts, taken = [], 0
    for shard in sorted(x.addressable_shards, key=lambda sh: sh.index[0].start or 0):
        if taken >= members:
            break
        part = np.asarray(shard.data)[: members - taken][cut]
        parts.append(part)
        taken += part.shape[0]
    return MemberParts(parts)


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
