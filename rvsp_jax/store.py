"""Recorded trajectories on disk: chunked zarr arrays, a background writer, checkpoints, a lazy reader.

A run folder (see ``DESIGN.md``, "On-disk run format", and :mod:`rvsp_jax.runfolder`)::

    manifest.json          config, members, probes, arrays, versions, device, status, steps done
    arrays/                zarr v3 group, one array per observable, fill value NaN
      metrics/loss         float32 [S, T]   (also metrics/accuracy, grad_norm, update_norm)
      params, updates ...  float32 [S, T_rec, P]  (T_rec = ceil(T / every), names in the manifest)
    checkpoint.npz         ensemble state after the last completed chunk (what --resume starts from)
    final.npz              final parameters, test loss/accuracy and divergence of every member

Arrays are created at their full size when the run starts and filled one training chunk at a time;
their chunks along the step axis are exactly one training chunk long, so every write covers whole
zarr chunks (no read-modify-write) and a resumed run rewrites whole chunks past its restart point.
Entries past ``steps_completed`` of an unfinished run read as NaN (or as data a killed process wrote
past its last checkpoint, which the resumed run overwrites). Every file is written atomically
(zarr's local store writes a temporary file then renames it; checkpoints, ``final.npz`` and the
manifest do the same), so a killed process leaves whole files only.

Reading is lazy: :func:`open_run` parses the manifest; ``run["updates"]`` opens one zarr array
(metadata only) and slicing it reads only the chunk files that the slice touches.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import zarr
import zarr.codecs

from rvsp_jax.config import TrainConfig
from rvsp_jax.devices import MemberParts
from rvsp_jax.probes import ProbeConfig, ProbeLayout
from rvsp_jax.runfolder import read_manifest

METRICS = ("loss", "accuracy", "grad_norm", "update_norm")
"""Per-step scalars of :class:`~rvsp_jax.ensemble.StepMetrics`, stored as ``metrics/<name>``."""
TARGET_CHUNK_BYTES = 16 << 20
P_CHUNK = 4096
WRITE_CONFIG = {"write_empty_chunks": True}
"""Zarr's default skips chunks equal to the fill value, which scans every chunk written; recorded
chunks are never all NaN, so the scan is pure cost (measured: it more than doubled the write time)."""


class StoreError(RuntimeError):
    """Recording could not be written (disk full, folder removed, ...); the message says what to do."""


class ArraySpec(NamedTuple):
    """One stored array: ``shape`` is ``[S, T]`` (metrics) or ``[S, T_rec, P]`` (probes)."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    compress: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def _balanced(n: int, most: int) -> int:
    """Chunk length <= ``most`` that splits ``n`` into equal chunks (zarr stores edge chunks at full
    size, so 256 members in chunks of 204 would store 408)."""
    most = int(np.clip(most, 1, n))
    return -(-n // -(-n // most))


def chunk_shape(shape: tuple[int, ...], step_chunk: int, itemsize: int = 4,
                target: int = TARGET_CHUNK_BYTES, member_part: int | None = None) -> tuple[int, ...]:
    """Zarr chunk of an ``[S, T(, P)]`` array: ``step_chunk`` steps; P split evenly into pieces of
    at most ``P_CHUNK`` entries (fewer if one member's chunk would exceed ``target`` bytes); S split
    evenly into pieces that keep the chunk under ``target`` bytes (at least one member).

    ``member_part``: the trainer hands members over in parts of this many (one per device, see
    :class:`~rvsp_jax.devices.MemberParts`); the member chunk is then a divisor of it, so that no
    chunk straddles two parts (which would cost a copy to join them).

    Large chunks keep zarr's per-chunk cost low when every step of all parameters is written
    (~13 MB per step at S=256); ``P_CHUNK`` keeps reading a few entries from touching all P.
    """
    s, t, *rest = shape
    t_c = max(1, min(step_chunk, t))
    p_c = [_balanced(rest[0], min(P_CHUNK, target // (t_c * itemsize)))] if rest else []
    per_member = t_c * int(np.prod(p_c, dtype=np.int64)) * itemsize
    most = max(1, target // per_member)
    if member_part is not None and member_part < s:
        return (max(d for d in range(1, min(most, member_part) + 1) if member_part % d == 0), t_c, *p_c)
    return (_balanced(s, most), t_c, *p_c)


def array_specs(members: int, total_steps: int, step_chunk: int, layout: ProbeLayout,
                compress: str = "none", member_part: int | None = None) -> list[ArraySpec]:
    """Every array of a run: metrics ``[S, T]`` (zstd) and probes ``[S, ceil(T / every), P]``.

    ``step_chunk`` is the trainer's chunk length (a multiple of ``layout.every``); ``member_part``
    the members per device (see :func:`chunk_shape`).
    """
    specs = []
    for name in METRICS:
        shape = (members, total_steps)
        specs.append(ArraySpec(f"metrics/{name}", shape, chunk_shape(shape, step_chunk), "float32", "zstd"))
    t_rec = -(-total_steps // layout.every)
    for name, names in layout.arrays.items():
        shape = (members, t_rec, len(names))
        specs.append(ArraySpec(name, shape, chunk_shape(shape, step_chunk // layout.every,
                                                        member_part=member_part),
                               "float32", compress))
    return specs


def _compressors(compress: str):
    if compress == "none":
        return None
    if compress == "zstd":
        return zarr.codecs.ZstdCodec(level=1)
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)


def create_arrays(folder: Path, specs: list[ArraySpec]) -> dict[str, zarr.Array]:
    """Create the ``arrays/`` zarr group of a new run (every array full size, fill value NaN)."""
    group = zarr.open_group(Path(folder) / "arrays", mode="w")
    return {s.name: group.create_array(s.name, shape=s.shape, chunks=s.chunks, dtype=s.dtype,
                                       fill_value=np.nan, compressors=_compressors(s.compress),
                                       config=WRITE_CONFIG)
            for s in specs}


def open_arrays(folder: Path, names, mode: str = "r+") -> dict[str, zarr.Array]:
    """Open existing arrays of a run folder (``mode="r+"`` to continue writing them)."""
    return {name: zarr.open_array(Path(folder) / "arrays" / name, mode=mode, zarr_format=3)
            .with_config(WRITE_CONFIG) for name in names}


def write_steps(arrays: dict[str, zarr.Array], start: int, every: int, metrics: dict, probes: dict
                ) -> None:
    """Write the steps ``[start, start + n)`` of one training chunk.

    metrics: name -> ``[S, n]``; probes: array name -> ``[S, ceil(n / every), P]`` (numpy arrays or
    :class:`~rvsp_jax.devices.MemberParts`); ``start`` is a multiple of ``every``.
    """
    for name, x in metrics.items():
        arrays[f"metrics/{name}"][:, start:start + x.shape[1]] = x
    r0 = start // every
    for name, x in probes.items():
        write_by_chunk(arrays[name], r0, x)


WRITE_THREADS = int(os.environ.get("RVSP_JAX_WRITE_THREADS", 0)) or 4
"""Threads that write the chunks of one array at once (env ``RVSP_JAX_WRITE_THREADS``). More threads
than cores help: much of a write is the kernel taking the pages into its cache, and while one thread
waits there another can copy (docs/benchmarks.md, "Recording", compares 1 and 4)."""
_POOL: ThreadPoolExecutor | None = None


def _write_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="rvsp-zarr-write")
    return _POOL


def _members(x, a: int, b: int) -> np.ndarray:
    """Members ``[a, b)`` of ``x`` (an array or MemberParts): a view when one part holds them all."""
    if not isinstance(x, MemberParts):
        return x[a:b]
    pieces = [part[max(a, s) - s:min(b, s + len(part)) - s]
              for s, part in zip(x.starts, x.parts) if max(a, s) < min(b, s + len(part))]
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def write_by_chunk(array: zarr.Array, r0: int, x) -> None:
    """Write ``x: [S, n, ...]`` into ``array[:, r0:r0 + n]`` one zarr chunk at a time.

    Handing zarr exactly one chunk per call lets it store that piece of ``x`` as it is; a call that
    spans several chunks makes zarr allocate every chunk, fill it and copy the data in. With members
    chunked along the parts of a :class:`~rvsp_jax.devices.MemberParts` (see :func:`array_specs`) and
    P in one chunk, recording writes the trainer's buffers to disk without a host copy.
    """
    s, n = x.shape[:2]
    s_c, _, *rest = array.chunks
    # the P chunks of a [S, T, P] array; a [S, T] array has none
    p_slices = [(slice(p0, p0 + rest[0]),) for p0 in range(0, x.shape[2], rest[0])] if rest else [()]
    jobs = []
    for a in range(0, s, s_c):
        piece = _members(x, a, min(a + s_c, s))
        jobs += [((slice(a, a + len(piece)), slice(r0, r0 + n), *p), piece[(slice(None), slice(None), *p)])
                 for p in p_slices]
    if len(jobs) == 1 or WRITE_THREADS == 1:
        for where, piece in jobs:
            array[where] = piece
    else:  # chunks are separate files: write them side by side, the kernel's share on several cores
        for _ in _write_pool().map(lambda job: array.__setitem__(*job), jobs):
            pass


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _savez_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_bytes(path, buf.getvalue())


def save_checkpoint(folder: Path, step: int, state) -> None:
    """Atomically write ``state`` (a pytree of host arrays ``[S, ...]``) as completed at ``step``."""
    leaves = jax.tree_util.tree_leaves(state)
    _savez_atomic(Path(folder) / "checkpoint.npz",
                  {"step": np.int64(step), **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}})


def load_checkpoint(folder: Path, like) -> tuple[int, Any] | None:
    """``(step, state)`` from ``checkpoint.npz`` with the tree structure of ``like`` (a pytree of
    arrays or shape structs with a leading member axis of any size); None when there is none."""
    path = Path(folder) / "checkpoint.npz"
    if not path.exists():
        return None
    leaves, treedef = jax.tree_util.tree_flatten(like)
    with np.load(path) as f:
        stored = [f[f"leaf_{i:05d}"] for i in range(len(leaves)) if f"leaf_{i:05d}" in f]
        step = int(f["step"])
        extra = len(f.files) - 1 - len(leaves)
    if len(stored) != len(leaves) or extra or any(
            s.shape[1:] != tuple(x.shape[1:]) or s.dtype != x.dtype for s, x in zip(stored, leaves)):
        raise StoreError(f"{path} does not match this configuration's training state; the run "
                         "folder belongs to another model or optimizer (start anew with --overwrite)")
    return step, jax.tree_util.tree_unflatten(treedef, stored)


class FinalResult(NamedTuple):
    """End-of-training values per member: ``params`` pytree ``[S, ...]``, ``test_loss``,
    ``test_accuracy`` float32 ``[S]``, ``diverged`` bool ``[S]``, ``diverged_at`` int ``[S]`` (-1: never)."""

    params: Any
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray


def save_final(folder: Path, final: FinalResult) -> None:
    """Atomically write ``final.npz``; parameters under ``params/Dense_0/kernel`` etc."""
    flat, _ = jax.tree_util.tree_flatten_with_path(final.params)
    params = {"params/" + "/".join(k.key for k in path): np.asarray(x) for path, x in flat}
    _savez_atomic(Path(folder) / "final.npz", {
        **params, **{k: np.asarray(getattr(final, k)) for k in FinalResult._fields[1:]}})


class ChunkWriter:
    """Calls ``write(item)`` for every queued item, in order, on one background thread.

    The queue holds at most ``maxsize`` items, so a producer that outruns the disk blocks instead of
    filling memory. An exception raised by ``write`` is kept, later items are dropped, and the
    exception is re-raised in the producer by the next :meth:`put`, :meth:`check` or :meth:`close`.
    """

    _STOP = object()

    def __init__(self, write: Callable[[Any], None], maxsize: int = 1):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="rvsp-store-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as e:  # noqa: BLE001 -- handed to the producer thread
                    self._error = e

    def check(self) -> None:
        """Raise the writer's exception, if it had one."""
        if self._error is not None:
            raise self._error

    def put(self, item) -> None:
        """Queue ``item`` (blocks while the queue is full)."""
        self.check()
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every queued item is written, stop the thread, raise its exception if any."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self.check()


class Run:
    """A recorded run, read lazily (nothing but the manifest is read until an array is sliced).

    ``run["updates"]`` is a read-only ``zarr.Array`` ``[S, T_rec, P]`` (``run["metrics/loss"]``:
    ``[S, T]``); slicing it reads only the chunks the slice touches. ``run.probe_names[name]`` names
    the P entries; ``run.steps`` are the recorded probe steps, ``run.metric_steps`` every step.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.config = TrainConfig.from_dict(self.manifest["config"])
        self.probe_config = ProbeConfig.from_dict(self.manifest["probe_config"])
        self.layout = ProbeLayout.from_dict(self.manifest["probes"])
        self.probe_names: dict[str, tuple[str, ...]] = self.layout.arrays
        self._arrays: dict[str, zarr.Array] = {}

    @property
    def arrays(self) -> tuple[str, ...]:
        """Names of the stored arrays (``metrics/loss``, ..., ``updates``, ...)."""
        return tuple(self.manifest["arrays"])

    @property
    def complete(self) -> bool:
        return self.manifest["status"] == "complete"

    @property
    def steps_completed(self) -> int:
        return int(self.manifest["steps_completed"])

    @property
    def members(self) -> np.ndarray:
        """Member ids ``[S]``."""
        return np.asarray(self.manifest["members"]["ids"])

    @property
    def steps(self) -> np.ndarray:
        """Training steps of the probe arrays' time axis: ``0, every, 2 * every, ... < T``."""
        return np.arange(0, self.manifest["total_steps"], self.layout.every)

    @property
    def metric_steps(self) -> np.ndarray:
        """Training steps of the ``metrics/*`` time axis: ``0 .. T-1``."""
        return np.arange(self.manifest["total_steps"])

    def __getitem__(self, name: str) -> zarr.Array:
        if name not in self.manifest["arrays"]:
            raise KeyError(f"no array {name!r} in {self.path}; it has {', '.join(self.arrays)}")
        if name not in self._arrays:
            self._arrays[name] = zarr.open_array(self.path / "arrays" / name, mode="r", zarr_format=3)
        return self._arrays[name]

    def index(self, name: str, entries) -> np.ndarray:
        """Positions int ``[k]`` along the last axis of array ``name`` of the named ``entries``."""
        where = {n: i for i, n in enumerate(self.probe_names[name])}
        missing = [e for e in entries if e not in where]
        if missing:
            raise KeyError(f"{name} has no entries {missing[:5]}; see run.probe_names[{name!r}]")
        return np.array([where[e] for e in entries], dtype=np.int64)

    def final(self) -> FinalResult:
        """Final parameters and test metrics (only for a complete run)."""
        path = self.path / "final.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: the run is {self.manifest['status']} "
                                    f"({self.steps_completed}/{self.manifest['total_steps']} steps); "
                                    "finish it with --resume")
        with np.load(path) as f:
            params: dict = {}
            for key in f.files:
                if key.startswith("params/"):
                    *outer, leaf = key.split("/")[1:]
                    node = params
                    for part in outer:
                        node = node.setdefault(part, {})
                    node[leaf] = f[key]
            return FinalResult(params, *(f[k] for k in FinalResult._fields[1:]))

    def to_xarray(self):
        """Every array as an ``xarray.Dataset`` (loads them into memory; needs xarray installed)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("Run.to_xarray needs the xarray package, which is not installed "
                              "(pip install xarray); without it, slice run[name] directly") from None
        data = {}
        for name in self.arrays:
            key = name.replace("/", "_")
            if name.startswith("metrics/"):
                data[key] = (("member", "step"), self[name][:])
            else:
                data[key] = (("member", "probe_step", f"{key}_entry"), self[name][:])
        coords = {"member": self.members, "step": self.metric_steps, "probe_step": self.steps,
                  **{f"{n.replace('/', '_')}_entry": list(v) for n, v in self.probe_names.items()}}
        return xr.Dataset(data, coords=coords, attrs={"path": str(self.path)})

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, {self.manifest['status']}, "
                f"{self.steps_completed}/{self.manifest['total_steps']} steps, S={self.config.seeds}, "
                f"arrays={list(self.arrays)})")


def open_run(path: str | os.PathLike) -> Run:
    """Open a run folder for reading (see :class:`Run`)."""
    return Run(path)
