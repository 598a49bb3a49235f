"""Recorded trajectories on disk: chunked zarr arrays, a background writer, checkpoints, a lazy reader.

A run folder (see ``DESIGN.md``, "On-disk run format", and :mod:`rvsp_jax.io.runfolder`)::

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
:func:`open_folder` (``rvsp_jax.open``) opens a run folder as a :class:`Run` and a study folder
(several runs under ``runs/``, :mod:`rvsp_jax.studies.folder`) as a :class:`Study`.

Every array carries zarr v3 ``dimension_names`` (:func:`dimension_names`: ``member, step`` for
metrics, ``member, probe_step, <name>_entry`` for probes), so that other tools open a run lazily
without this library, e.g. ``xarray.open_datatree(run / "arrays", engine="zarr")``; runs recorded
before have none and read the same through :class:`Run`.

Integrity: every chunk ends in a CRC-32C checksum (zarr's ``crc32c`` codec, the last codec of every
array created here; runs recorded before it read as they are, unchecked), and ``checkpoint.npz`` and
``final.npz`` are zip files with a CRC-32 per entry, loaded without pickle. Reading through
:class:`Run` turns every problem into a :class:`StoreError` that names the file and the remedy: a
chunk file that the manifest's ``steps_completed`` says was written but is missing (zarr alone would
read it as NaN), a chunk whose checksum does not match (a flipped byte), a truncated or undecodable
chunk. :attr:`Run.complete` also checks that the files are all there (:meth:`Run.problems`), and
:func:`verify_chunks` lets ``--resume`` refuse a folder that lost chunks before its checkpoint.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import queue
import threading
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import zarr
import zarr.codecs
import zarr.storage

from rvsp_jax.config import TrainConfig
from rvsp_jax.io import atomic
from rvsp_jax.io.runfolder import read_manifest
from rvsp_jax.training.devices import MemberParts
from rvsp_jax.training.probes import ProbeConfig, ProbeLayout
from rvsp_jax.training.result import FinalResult  # noqa: F401 -- re-exported: store.FinalResult
from rvsp_jax.training.step import StepMetrics

METRICS = ("loss", "accuracy", "grad_norm", "update_norm")
"""Per-step scalars of :class:`~rvsp_jax.training.step.StepMetrics`, stored as ``metrics/<name>``."""
TARGET_CHUNK_BYTES = 16 << 20
P_CHUNK = 4096
WRITE_CONFIG = {"write_empty_chunks": True}
"""Zarr's default skips chunks equal to the fill value, which scans every chunk written; recorded
chunks are never all NaN, so the scan is pure cost (measured: it more than doubled the write time)."""


class StoreError(RuntimeError):
    """Recording could not be written (disk full, folder removed, ...) or a file of a run folder is
    missing or damaged; the message names the file and says what to do."""


class MissingFileError(StoreError, FileNotFoundError):
    """A file a run folder needs does not exist (also a ``FileNotFoundError``)."""


CHUNK_LOST = (
    "its data is lost: restore the run folder from a backup, or record the run anew with "
    "the same options and --overwrite"
)
"""Remedy in the message of a missing or damaged chunk (the steps in it cannot be recomputed from a
later checkpoint)."""
FINAL_REMEDY = "run again with --resume and the same options to rebuild it from the last checkpoint"
CHECKPOINT_REMEDY = (
    "delete it and run again with --resume and the same options to restart the run "
    "from step 0 (the steps recorded so far are computed and written again)"
)


class ArraySpec(NamedTuple):
    """One stored array: ``shape`` is ``[S, T]`` (metrics) or ``[S, T_rec, P]`` (probes)."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    compress: str

    @property
    def nbytes(self) -> int:
        """Bytes on disk uncompressed: whole chunks (zarr stores an edge chunk at full size) plus
        each chunk's 4-byte checksum."""
        counts = [-(-n // c) for n, c in zip(self.shape, self.chunks)]
        chunks = int(np.prod(counts))
        return chunks * (int(np.prod(self.chunks)) * np.dtype(self.dtype).itemsize + 4)


def _balanced(n: int, most: int) -> int:
    """Chunk length <= ``most`` that splits ``n`` into equal chunks (zarr stores edge chunks at full
    size, so 256 members in chunks of 204 would store 408)."""
    most = int(np.clip(most, 1, n))
    return -(-n // -(-n // most))


def chunk_shape(
    shape: tuple[int, ...],
    step_chunk: int,
    itemsize: int = 4,
    target: int = TARGET_CHUNK_BYTES,
    member_part: int | None = None,
) -> tuple[int, ...]:
    """Zarr chunk of an ``[S, T(, P)]`` array: ``step_chunk`` steps; P split evenly into pieces of
    at most ``P_CHUNK`` entries (fewer if one member's chunk would exceed ``target`` bytes); S split
    evenly into pieces that keep the chunk under ``target`` bytes (at least one member).

    ``member_part``: the trainer hands members over in parts of this many (one per device, see
    :class:`~rvsp_jax.training.devices.MemberParts`); the member chunk is then a divisor of it, so that no
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


def array_specs(
    members: int,
    total_steps: int,
    step_chunk: int,
    layout: ProbeLayout,
    compress: str = "none",
    member_part: int | None = None,
) -> list[ArraySpec]:
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
        specs.append(
            ArraySpec(
                name,
                shape,
                chunk_shape(shape, step_chunk // layout.every, member_part=member_part),
                "float32",
                compress,
            )
        )
    return specs


def _compressors(compress: str) -> list:
    """Bytes-to-bytes codecs of an array: the compressor (if any), then the CRC-32C of the stored
    bytes, so that every chunk file is checked when it is read (4 bytes per chunk; writing computes
    the checksum and copies the chunk once more, about 3 ms per 16 MiB chunk)."""
    if compress == "none":
        codecs = []
    elif compress == "zstd":
        codecs = [zarr.codecs.ZstdCodec(level=1)]
    else:
        codecs = [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)]
    return [*codecs, zarr.codecs.Crc32cCodec()]


def dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """The zarr ``dimension_names`` of stored array ``name``: ``("member", "step")`` for a metric
    ``[S, T]``, ``("member", "probe_step", "<name>_entry")`` for a probe ``[S, T_rec, P]`` (``/`` in
    the name becomes ``_``; the same names as :meth:`Run.to_xarray`)."""
    if ndim == 2:
        return ("member", "step")
    key = name.replace("/", "_")
    return ("member", "probe_step", f"{key}_entry", *(f"{key}_dim{i}" for i in range(3, ndim)))


def create_arrays(folder: Path, specs: list[ArraySpec]) -> dict[str, zarr.Array]:
    """Create the ``arrays/`` zarr group of a new run (every array full size, fill value NaN, a
    checksum per chunk, :func:`dimension_names`)."""
    group = zarr.open_group(Path(folder) / "arrays", mode="w")
    return {
        s.name: group.create_array(
            s.name,
            shape=s.shape,
            chunks=s.chunks,
            dtype=s.dtype,
            fill_value=np.nan,
            compressors=_compressors(s.compress),
            dimension_names=dimension_names(s.name, len(s.shape)),
            config=WRITE_CONFIG,
        )
        for s in specs
    }


def open_arrays(folder: Path, names, mode: str = "r+") -> dict[str, zarr.Array]:
    """Open existing arrays of a run folder (``mode="r+"`` to continue writing them)."""
    return {
        name: zarr.open_array(Path(folder) / "arrays" / name, mode=mode, zarr_format=3).with_config(WRITE_CONFIG)
        for name in names
    }


def write_steps(arrays: dict[str, zarr.Array], start: int, every: int, metrics: dict, probes: dict) -> None:
    """Write the steps ``[start, start + n)`` of one training chunk.

    metrics: name -> ``[S, n]``; probes: array name -> ``[S, ceil(n / every), P]`` (numpy arrays or
    :class:`~rvsp_jax.training.devices.MemberParts`); ``start`` is a multiple of ``every``. With several
    processes each passes the probes of its own members (MemberParts) and process 0 alone the
    metrics (gathered, small); the others pass no metrics.
    """
    for name, x in metrics.items():
        if isinstance(x, MemberParts):
            write_by_chunk(arrays[f"metrics/{name}"], start, x)
            continue
        arrays[f"metrics/{name}"][:, start : start + x.shape[1]] = x
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


def _members(x, a: int, b: int) -> np.ndarray | None:
    """Members ``[a, b)`` of ``x`` (an array or MemberParts): a view when one part holds them all;
    None when ``x`` holds none of them (another process's members)."""
    if not isinstance(x, MemberParts):
        return x[a:b]
    pieces = [
        part[max(a, s) - s : min(b, s + len(part)) - s]
        for s, part in zip(x.starts, x.parts)
        if max(a, s) < min(b, s + len(part))
    ]
    if not pieces:
        return None
    if sum(len(p) for p in pieces) != b - a:
        raise StoreError(
            f"members {a}-{b - 1} share one zarr chunk but this process holds only some "
            "of them, so it cannot write the chunk alone; " + MEMBER_CHUNKS_REMEDY
        )
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


MEMBER_CHUNKS_REMEDY = (
    "continue the run with a process count whose processes split the members as "
    "the run's chunks do (e.g. the count it was recorded with), or in a single "
    "process"
)


def member_chunk_problem(arrays: dict[str, ArraySpec | Any], ranges: dict[int, list[tuple[int, int]]]) -> str | None:
    """Why processes holding the members ``ranges`` (process -> ``[(a, b), ...]``, see
    :func:`rvsp_jax.training.devices.member_ranges`) cannot each write their own members' chunks of the probe
    ``arrays`` (specs or zarr arrays with ``shape`` and ``chunks``), or None when they can: every
    member chunk must lie within the members of one process. Metrics arrays are written whole by
    process 0 and are not checked; a single process can always write every chunk."""
    if len(ranges) <= 1:
        return None
    owner = {}
    for p, rs in ranges.items():
        for a, b in rs:
            owner.update({m: p for m in range(a, b)})
    for name, x in arrays.items():
        if name.startswith("metrics/"):
            continue
        s, s_c = x.shape[0], x.chunks[0]
        for a in range(0, s, s_c):
            held = {owner.get(m) for m in range(a, min(a + s_c, s))}
            if len(held) > 1:
                return (
                    f"{name}: members {a}-{min(a + s_c, s) - 1} are one zarr chunk, but processes "
                    f"{', '.join(str(p) for p in sorted(held, key=str))} would each hold some of them "
                    f"(chunks of {s_c} members); {MEMBER_CHUNKS_REMEDY}"
                )
    return None


def write_by_chunk(array: zarr.Array, r0: int, x) -> None:
    """Write ``x: [S, n, ...]`` into ``array[:, r0:r0 + n]`` one zarr chunk at a time.

    Handing zarr exactly one chunk per call lets it store that piece of ``x`` as it is; a call that
    spans several chunks makes zarr allocate every chunk, fill it and copy the data in. With members
    chunked along the parts of a :class:`~rvsp_jax.training.devices.MemberParts` (see :func:`array_specs`) and
    P in one chunk, recording writes the trainer's buffers to disk without a host copy.

    A :class:`~rvsp_jax.training.devices.MemberParts` of some members only (one process of several) writes
    the chunks of those members and skips the others; a chunk that it holds only part of raises
    :class:`StoreError` (see :func:`member_chunk_problem`, which ``--resume`` checks beforehand).
    """
    s, n = x.shape[:2]
    s_c, _, *rest = array.chunks
    # the P chunks of a [S, T, P] array; a [S, T] array has none
    p_slices = [(slice(p0, p0 + rest[0]),) for p0 in range(0, x.shape[2], rest[0])] if rest else [()]
    jobs = []
    for a in range(0, s, s_c):
        piece = _members(x, a, min(a + s_c, s))
        if piece is None:  # another process's members: it writes them
            continue
        jobs += [
            ((slice(a, a + len(piece)), slice(r0, r0 + n), *p), piece[(slice(None), slice(None), *p)]) for p in p_slices
        ]
    if len(jobs) == 1 or WRITE_THREADS == 1:
        for where, piece in jobs:
            array[where] = piece
    else:  # chunks are separate files: write them side by side, the kernel's share on several cores
        for _ in _write_pool().map(lambda job: array.__setitem__(*job), jobs):
            pass


def _atomic_bytes(path: Path, data: bytes) -> None:
    atomic.write_bytes(path, data)


def _savez_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_bytes(path, buf.getvalue())


def save_checkpoint(folder: Path, step: int, state) -> None:
    """Atomically write ``state`` (a pytree of host arrays ``[S, ...]``) as completed at ``step``."""
    leaves = jax.tree_util.tree_leaves(state)
    _savez_atomic(
        Path(folder) / "checkpoint.npz",
        {"step": np.int64(step), **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}},
    )


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _npz_entries(path: Path, damaged: Callable[[str], StoreError]) -> dict[str, np.ndarray]:
    """Every entry of the ``.npz`` file ``path``, read without pickle and checked against the CRC-32
    of each zip entry; ``damaged(why)`` is raised for anything else (not a zip file, truncated,
    corrupt, pickled objects)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head not in _ZIP_MAGIC:
            raise damaged(f"it is not an npz (zip) file: it starts with {head!r}")
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except StoreError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # numpy's message would invite allow_pickle=True, which is never used
            raise damaged("it holds pickled Python objects, which are never loaded") from None
        raise damaged(f"{type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- BadZipFile, EOFError, zlib.error, OSError, ...
        raise damaged(f"{type(e).__name__}: {e}") from None


def load_checkpoint(folder: Path, like) -> tuple[int, Any] | None:
    """``(step, state)`` from ``checkpoint.npz`` with the tree structure of ``like`` (a pytree of
    arrays or shape structs with a leading member axis of any size); None when there is none.

    The file is read without pickle; a damaged one (not a zip file, truncated, a CRC mismatch,
    pickled objects, entries missing or of the wrong shape) raises :class:`StoreError` naming it and
    the remedy: delete it and ``--resume``, which restarts from step 0 like a run killed before its
    first checkpoint.
    """
    path = Path(folder) / "checkpoint.npz"
    if not path.exists():
        return None

    def damaged(why: str) -> StoreError:
        return StoreError(f"{path} is damaged ({why}); {CHECKPOINT_REMEDY}")

    leaves, treedef = jax.tree_util.tree_flatten(like)
    entries = _npz_entries(path, damaged)
    step = entries.pop("step", None)
    if step is None or step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
        raise damaged("no step count: its 'step' entry is missing or not a non-negative integer")
    names = [f"leaf_{i:05d}" for i in range(len(leaves))]
    stored = [entries[n] for n in names if n in entries]
    extra = sorted(set(entries) - set(names))
    if (
        len(stored) != len(leaves)
        or extra
        or any(
            s.ndim != len(x.shape) or s.shape[1:] != tuple(x.shape[1:]) or s.dtype != x.dtype
            for s, x in zip(stored, leaves)
        )
        or len({s.shape[0] for s in stored if s.ndim}) > 1
    ):
        held = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in list(entries.items())[:4])
        raise StoreError(
            f"{path} does not match this configuration's training state ({len(leaves)} arrays "
            f"expected; it holds {len(entries)}: {held}{', ...' if len(entries) > 4 else ''}): it is "
            f"damaged or belongs to another model or optimizer. Either {CHECKPOINT_REMEDY}, or "
            "start anew with --overwrite"
        )
    return int(step), jax.tree_util.tree_unflatten(treedef, stored)


def save_final(folder: Path, final: FinalResult) -> None:
    """Atomically write ``final.npz``; parameters under ``params/Dense_0/kernel`` etc."""
    flat, _ = jax.tree_util.tree_flatten_with_path(final.params)
    params = {"params/" + "/".join(k.key for k in path): np.asarray(x) for path, x in flat}
    _savez_atomic(
        Path(folder) / "final.npz", {**params, **{k: np.asarray(getattr(final, k)) for k in FinalResult._fields[1:]}}
    )


def load_final(folder: Path, remedy: str = FINAL_REMEDY) -> FinalResult:
    """``final.npz`` of a run folder, read without pickle and checked (CRC of every entry, every
    field present with one entry per member).

    Raises :class:`MissingFileError` (also a ``FileNotFoundError``) when it does not exist and
    :class:`StoreError` when it is damaged; both messages name the file and end in ``remedy``
    (default: :data:`FINAL_REMEDY`, rebuild it with ``--resume``).
    """
    path = Path(folder) / "final.npz"
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; {remedy}")

    def damaged(why: str) -> StoreError:
        return StoreError(f"{path} is damaged ({why}); {remedy}")

    entries = _npz_entries(path, damaged)
    fields = FinalResult._fields[1:]
    lacking = [k for k in fields if k not in entries]
    if lacking or not any(k.startswith("params/") for k in entries):
        raise damaged(f"it lacks {', '.join(lacking) or 'the parameters'}")
    members = {entries[k].shape[:1] for k in entries if k in fields or k.startswith("params/")}
    if len(members) != 1 or any(entries[k].ndim != 1 for k in fields) or () in members:
        raise damaged("its entries do not all have one row per member")
    params: dict = {}
    for key, value in entries.items():
        if key.startswith("params/"):
            *outer, leaf = key.split("/")[1:]
            node = params
            for part in outer:
                node = node.setdefault(part, {})
            node[leaf] = value
    return FinalResult(params, *(entries[k] for k in fields))


def final_ok(folder: Path) -> bool:
    """Whether ``final.npz`` of ``folder`` exists and reads back whole (see :func:`load_final`)."""
    try:
        load_final(folder)
    except StoreError:
        return False
    return True


def _final_problem(folder: Path, remedy: str = FINAL_REMEDY) -> str | None:
    """Why ``final.npz`` is unusable, from its zip directory alone (cheap; no data read), or None."""
    path = Path(folder) / "final.npz"
    if not path.exists():
        return f"{path} does not exist; {remedy}"
    try:
        with zipfile.ZipFile(path) as z:
            names = {n.removesuffix(".npy") for n in z.namelist()}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"{path} is damaged ({type(e).__name__}: {e}); {remedy}"
    lacking = [k for k in FinalResult._fields[1:] if k not in names]
    if lacking or not any(n.startswith("params/") for n in names):
        return f"{path} is damaged (it lacks {', '.join(lacking) or 'the parameters'}); {remedy}"
    return None


# ---- chunk files: which must exist, and reads that check them -------------------------------------


class _ChunkGrid:
    """The chunk files of one stored array (from its ``zarr.json``) and the steps each one holds."""

    def __init__(self, folder: Path, name: str, manifest: dict):
        self.folder, self.name = Path(folder), name
        self.dir = self.folder / "arrays" / name
        meta_path = self.dir / "zarr.json"
        try:
            meta = json.loads(meta_path.read_bytes())
            self.shape = tuple(int(n) for n in meta["shape"])
            self.chunks = tuple(int(n) for n in meta["chunk_grid"]["configuration"]["chunk_shape"])
            encoding = meta.get("chunk_key_encoding") or {"name": "default"}
            kind = encoding.get("name", "default")
            self._sep = (encoding.get("configuration") or {}).get("separator", "/" if kind == "default" else ".")
        except FileNotFoundError:
            raise MissingFileError(
                f"{meta_path} is missing: array {name!r} of {self.folder} has "
                f"no metadata, so none of it can be read; {CHUNK_LOST}"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(
                f"{meta_path} is damaged ({type(e).__name__}: {e}): array {name!r} of "
                f"{self.folder} cannot be read; {CHUNK_LOST}"
            ) from None
        self._prefix = "c" + self._sep if kind == "default" else ""
        self.grid = tuple(-(-n // c) for n, c in zip(self.shape, self.chunks))
        info = manifest.get("arrays", {}).get(name) or {}
        time = info.get("time", "step" if name.startswith("metrics/") else "probe_step")
        self.every = 1 if time == "step" else int(manifest["probes"]["every"])
        self.total_steps = int(manifest["total_steps"])

    def key(self, index: tuple[int, ...]) -> str:
        return self._prefix + self._sep.join(map(str, index))

    def path(self, index: tuple[int, ...]) -> Path:
        return self.dir.joinpath(*self.key(index).split("/"))

    def index(self, key: str) -> tuple[int, ...] | None:
        """The chunk index of a store key, or None when it names no chunk (metadata, temporaries)."""
        if not key.startswith(self._prefix):
            return None
        try:
            index = tuple(int(i) for i in key[len(self._prefix) :].split(self._sep))
        except ValueError:
            return None
        return index if len(index) == len(self.grid) else None

    def written(self, steps: int) -> int:
        """Chunks along the time axis (axis 1) that the first ``steps`` steps filled."""
        if len(self.grid) < 2:
            return 1 if steps > 0 else 0
        records = -(-steps // self.every)  # entries along the time axis
        return min(self.grid[1], -(-records // self.chunks[1]))

    def expected(self, index: tuple[int, ...], steps: int) -> bool:
        return len(index) < 2 or index[1] < self.written(steps)

    def present(self) -> set[tuple[int, ...]]:
        """Indices of the chunk files on disk (one walk of the array's folder, no file read)."""
        found = set()
        for root, _, files in os.walk(self.dir):
            rel = os.path.relpath(root, self.dir)
            for f in files:
                index = self.index(f if rel == "." else "/".join([*Path(rel).parts, f]))
                if index is not None:
                    found.add(index)
        return found

    def missing(self, steps: int) -> list[tuple[int, ...]]:
        """Indices of the chunks that the first ``steps`` steps wrote but that are not on disk."""
        ranges = [range(n) for n in self.grid]
        if len(ranges) >= 2:
            ranges[1] = range(self.written(steps))
        elif steps <= 0:
            return []
        present = self.present()
        return [i for i in itertools.product(*ranges) if i not in present]

    def describe(self, index: tuple[int, ...]) -> str:
        """``chunk (0, 1, 0) of array 'updates' (steps 10-19)``."""
        if len(index) < 2:
            return f"chunk {index} of array {self.name!r}"
        t0 = index[1] * self.chunks[1]
        t1 = min(t0 + self.chunks[1], self.shape[1]) - 1
        return (
            f"chunk {index} of array {self.name!r} (steps {t0 * self.every}-"
            f"{min(t1 * self.every, self.total_steps - 1)})"
        )

    def missing_message(self, index: tuple[int, ...], steps: int, more: int = 0) -> str:
        also = f" (and {more} more missing chunk files of this array)" if more else ""
        return (
            f"{self.path(index)} is missing: {self.describe(index)} is part of the {steps} "
            f"steps that the manifest of {self.folder} records as completed{also}; {CHUNK_LOST}"
        )

    def region(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape))


def missing_chunks(folder: Path, manifest: dict, upto_step: int) -> list[tuple[str, tuple[int, ...], Path]]:
    """``(array, chunk index, file)`` of every chunk that steps ``[0, upto_step)`` wrote and that is
    not on disk, over all arrays of ``manifest`` (one listing of each array's folder; no data read).

    Raises :class:`StoreError` when an array's ``zarr.json`` is missing or damaged."""
    out = []
    for name in manifest["arrays"]:
        grid = _ChunkGrid(folder, name, manifest)
        out += [(name, i, grid.path(i)) for i in grid.missing(upto_step)]
    return out


def verify_chunks(folder: Path, manifest: dict, upto_step: int) -> None:
    """Raise :class:`StoreError` unless every chunk file of the steps ``[0, upto_step)`` is on disk
    (and every array's ``zarr.json``); chunks past ``upto_step`` are not looked at.

    Cheap: one listing of each array's folder, no data read (damaged bytes are found when read).
    The message names the array, the chunk, its file and the remedy (:data:`CHUNK_LOST`).
    """
    total = 0
    first = None
    for name in manifest["arrays"]:
        grid = _ChunkGrid(folder, name, manifest)
        missing = grid.missing(upto_step)
        if missing and first is None:
            first = grid, missing[0]
        total += len(missing)
    if first is not None:
        grid, index = first
        more = f"; {total - 1} more chunk files are missing" if total > 1 else ""
        raise StoreError(
            f"{grid.path(index)} is missing: {grid.describe(index)} of the run in "
            f"{grid.folder} lies before step {upto_step}, where it would continue, so "
            f"resuming would leave it NaN{more}; {CHUNK_LOST}"
        )


class _CheckedStore(zarr.storage.WrapperStore):
    """A local store whose reads of a missing chunk file call ``check(key)`` (which raises when the
    chunk should exist) instead of silently giving zarr the fill value."""

    def __init__(self, store, check: Callable[[str], None] | None = None):
        super().__init__(store)
        self._check = check

    def _with_store(self, store):
        return type(self)(store, self._check)

    async def get(self, key, prototype, byte_range=None):
        value = await self._store.get(key, prototype, byte_range)
        if value is None and self._check is not None:
            self._check(key)
        return value

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), value in zip(key_ranges, values):
            if value is None and self._check is not None:
                self._check(key)
        return values

    async def _get_many(self, requests):
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


class StoredArray:
    """One recorded array, read-only, sliced like a numpy array: ``x[:, 100:, :10]``,
    ``np.asarray(x)``, ``x.oindex[...]``, ``x.vindex[...]``; ``shape``, ``dtype``, ``chunks``, and
    any other attribute of the underlying ``zarr.Array`` (``x.zarr``).

    Every read raises :class:`StoreError` naming the chunk and its file when a chunk that the run
    wrote (by the manifest's ``steps_completed``) is missing, or when a chunk cannot be decoded (a
    checksum mismatch, a truncated or corrupt file). Chunks past ``steps_completed`` of an unfinished
    run read as NaN. Reads through ``x.zarr`` are checked for missing chunks only.
    """

    def __init__(self, array: zarr.Array, grid: _ChunkGrid):
        self._array, self._grid = array, grid

    @property
    def zarr(self) -> zarr.Array:
        return self._array

    @property
    def name(self) -> str:
        return self._grid.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        return self._array.chunks

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._array, attr)

    def __getitem__(self, selection):
        return self._read(lambda: self._array[selection], selection, "any")

    @property
    def oindex(self) -> _Indexed:
        return _Indexed(self, "oindex")

    @property
    def vindex(self) -> _Indexed:
        return _Indexed(self, "vindex")

    def __array__(self, dtype=None, copy=None):
        x = np.asarray(self[...])
        return x if dtype is None else x.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<StoredArray {self.name!r} {self.shape} {self.dtype} chunks={self.chunks} in {self._grid.folder}>"

    def _read(self, read: Callable[[], Any], selection, kind: str):
        try:
            return read()
        except StoreError:
            raise
        except Exception as e:
            found = self._damaged_chunk(selection, kind)
            if found is None:
                raise  # not a damaged chunk: a bad selection, say
            raise found from e

    def _touched(self, selection, kind: str):
        """Chunk indices a selection reads (zarr's own indexers), or None for a bad selection."""
        from zarr.core import indexing as ix

        kinds = {
            "any": (ix.BasicIndexer, ix.OrthogonalIndexer, ix.CoordinateIndexer),
            "oindex": (ix.OrthogonalIndexer,),
            "vindex": (ix.CoordinateIndexer, ix.MaskIndexer),
        }[kind]
        grid = self._array.metadata.chunk_grid
        for indexer in kinds:
            try:
                return [tuple(p.chunk_coords) for p in indexer(selection, self.shape, grid)]
            except Exception:  # noqa: BLE001 -- not this kind of selection; try the next
                continue
        return None

    def _damaged_chunk(self, selection, kind: str) -> StoreError | None:
        """The first chunk of ``selection`` that cannot be read on its own, as a StoreError."""
        touched = self._touched(selection, kind)
        for index in dict.fromkeys(touched or ()):
            if not self._grid.path(index).exists():
                continue
            try:
                self._array[self._grid.region(index)]
            except StoreError as e:
                return e
            except Exception as e:  # noqa: BLE001 -- whatever the codecs raise for damaged bytes
                return StoreError(
                    f"{self._grid.path(index)} is damaged: {self._grid.describe(index)} "
                    f"cannot be read ({type(e).__name__}: {e}); {CHUNK_LOST}"
                )
        return None


class _Indexed:
    """``x.oindex`` / ``x.vindex`` of a :class:`StoredArray`, with its checked reads."""

    def __init__(self, array: StoredArray, kind: str):
        self._array, self._kind = array, kind

    def __getitem__(self, selection):
        inner = getattr(self._array.zarr, self._kind)
        return self._array._read(lambda: inner[selection], selection, self._kind)


class MemberRange:
    """Members ``a .. b-1`` of a recorded array, read like the array itself (``x[:, 100:, :10]``,
    ``np.asarray(x)``): a grid point of a sweep seen as a plain run (:meth:`Run.point`). The
    member axis of a selection is shifted by ``a`` and nothing outside the range is read."""

    def __init__(self, array: StoredArray, a: int, b: int):
        self._array, self._a, self._b = array, int(a), int(b)

    @property
    def name(self) -> str:
        return self._array.name

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._b - self._a, *self._array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _members(self, first):
        n = self._b - self._a
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step > 0:
                return slice(self._a + start, self._a + max(stop, start), step)
            return self._a + np.arange(start, stop, step)
        if isinstance(first, (int, np.integer)):
            if not -n <= first < n:
                raise IndexError(f"member {first} is out of range for {n} members")
            return self._a + int(first) % n
        idx = np.asarray(first)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"a boolean member mask must have shape ({n},), got {idx.shape}")
            return self._a + np.flatnonzero(idx)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"member index out of range for {n} members")
        return self._a + idx % n

    def __getitem__(self, selection):
        sel = selection if isinstance(selection, tuple) else (selection,)
        if sel and sel[0] is Ellipsis and len(sel) < self.ndim + 1:
            sel = (slice(None),) * (self.ndim - len(sel) + 1) + sel[1:]
        if not sel:
            sel = (slice(None),)
        first = self._members(sel[0])
        if isinstance(first, np.ndarray):  # a list of members: one orthogonal read
            rest = tuple(slice(None) if s is Ellipsis else s for s in sel[1:])
            return self._array.oindex[(first, *rest)]
        return self._array[(first, *sel[1:])]

    def __array__(self, dtype=None, copy=None):
        x = np.asarray(self[...])
        return x if dtype is None else x.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<members {self._a}..{self._b - 1} of {self._array!r}>"


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

    ``run["updates"]`` is a read-only :class:`StoredArray` ``[S, T_rec, P]`` (``run["metrics/loss"]``:
    ``[S, T]``); slicing it reads only the chunks the slice touches, and raises :class:`StoreError`
    naming the chunk file when one that the run wrote is missing or damaged. ``run.probe_names[name]``
    names the P entries; ``run.steps`` are the recorded probe steps, ``run.metric_steps`` every step.
    :attr:`complete` needs the manifest's word and every file (:meth:`problems`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if "config" not in self.manifest:
            raise StoreError(_not_a_run(self.path, self.manifest))
        self.config = TrainConfig.from_dict(self.manifest["config"])
        self.probe_config = ProbeConfig.from_dict(self.manifest["probe_config"])
        self.layout = ProbeLayout.from_dict(self.manifest["probes"])
        self.probe_names: dict[str, tuple[str, ...]] = self.layout.arrays
        self._arrays: dict[str, StoredArray] = {}

    @property
    def arrays(self) -> tuple[str, ...]:
        """Names of the stored arrays (``metrics/loss``, ..., ``updates``, ...)."""
        return tuple(self.manifest["arrays"])

    @property
    def complete(self) -> bool:
        """The manifest says complete and every file is there (see :meth:`problems`)."""
        return self.manifest["status"] == "complete" and not self.problems()

    def problems(self) -> list[str]:
        """Why the files fall short of the manifest, one message per problem (empty when none): an
        array without ``zarr.json``, missing chunk files of the steps completed (one message per
        array, with the count), and for a complete run a missing or damaged ``final.npz``.

        Cheap: one listing of each array's folder and the zip directory of ``final.npz``; no data is
        read, so damaged bytes inside a file are found when it is read (or by ``verify(data=True)``).
        """
        found = []
        steps = self.steps_completed
        for name in self.arrays:
            try:
                grid = _ChunkGrid(self.path, name, self.manifest)
            except StoreError as e:
                found.append(str(e))
                continue
            missing = grid.missing(steps)
            if missing:
                found.append(grid.missing_message(missing[0], steps, len(missing) - 1))
        if self.manifest["status"] == "complete":
            final = _final_problem(self.path)
            if final:
                found.append(final)
        return found

    def verify(self, data: bool = False) -> None:
        """Raise :class:`StoreError` with the first of :meth:`problems` (and how many there are).

        ``data=True`` also reads every chunk file that is on disk (checking its checksum, for runs
        recorded with one) and all of ``final.npz``: a full read of the run.
        """
        found = self.problems()
        if found:
            more = f" ({len(found) - 1} more problems: see run.problems())" if len(found) > 1 else ""
            raise StoreError(found[0] + more)
        if data:
            for name in self.arrays:
                x = self[name]
                for index in sorted(x._grid.present()):
                    x[x._grid.region(index)]
            if self.manifest["status"] == "complete":
                load_final(self.path)

    @property
    def steps_completed(self) -> int:
        return int(self.manifest["steps_completed"])

    @property
    def members(self) -> np.ndarray:
        """Member ids ``[S]``."""
        return np.asarray(self.manifest["members"]["ids"])

    @property
    def grid(self) -> list[dict[str, float]]:
        """The sweep's grid points (``[{}]`` for a plain run): the hyperparameter values of each."""
        return self.manifest.get("grid", {}).get("points", [{}])

    @property
    def groups(self) -> dict[int, np.ndarray]:
        """Members of each grid point: ``{g: member indices}``; member ``g * seeds + s`` is grid
        point g, seed s (a plain run has one group, every member)."""
        n = len(self.members)
        point = np.asarray(self.manifest["members"].get("grid_point", np.zeros(n, int)))
        return {g: np.flatnonzero(point == g) for g in range(len(self.grid))}

    def point(self, g: int) -> Run:
        """Grid point ``g`` of a sweep as a plain run of its ``seeds`` members (members
        ``g * seeds .. (g + 1) * seeds - 1``): ``config`` is :meth:`TrainConfig.point`, arrays,
        ``final()`` and the per-member manifest entries hold those members only, and member ids are
        the seed indices, so the view reads like the plain run with that point's hyperparameters (which
        it equals, member for member: tests/test_sweep.py). A plain run's point 0 is the run itself."""
        if not 0 <= g < len(self.grid):
            raise IndexError(f"{self.path} has {len(self.grid)} grid point(s); there is no point {g}")
        if len(self.grid) == 1:
            return self
        return _PointRun(self, g)

    def points(self) -> list[Run]:
        """Every grid point as a plain run (:meth:`point`); ``[self]`` for a plain run."""
        return [self.point(g) for g in range(len(self.grid))]

    def hyperparams(self) -> dict[str, np.ndarray]:
        """Per member, the value of every hyperparameter held in the optimizer state (``[S]`` each;
        optax names: ``learning_rate``, ``momentum``, ...); empty for runs recorded before sweeps."""
        return {k: np.asarray(v) for k, v in self.manifest["members"].get("hyperparams", {}).items()}

    @property
    def steps(self) -> np.ndarray:
        """Training steps of the probe arrays' time axis: ``0, every, 2 * every, ... < T``."""
        return np.arange(0, self.manifest["total_steps"], self.layout.every)

    @property
    def metric_steps(self) -> np.ndarray:
        """Training steps of the ``metrics/*`` time axis: ``0 .. T-1``."""
        return np.arange(self.manifest["total_steps"])

    def __getitem__(self, name: str) -> StoredArray:
        if name not in self.manifest["arrays"]:
            raise KeyError(f"no array {name!r} in {self.path}; it has {', '.join(self.arrays)}")
        if name not in self._arrays:
            grid = _ChunkGrid(self.path, name, self.manifest)
            steps = self.steps_completed

            def check(key: str) -> None:
                index = grid.index(key)
                if index is not None and grid.expected(index, steps):
                    raise StoreError(grid.missing_message(index, steps))

            try:
                array = zarr.open_array(
                    store=_CheckedStore(zarr.storage.LocalStore(grid.dir, read_only=True), check),
                    mode="r",
                    zarr_format=3,
                )
            except Exception as e:  # noqa: BLE001 -- zarr's errors for unreadable metadata
                raise StoreError(
                    f"{grid.dir / 'zarr.json'} cannot be read as zarr metadata ({type(e).__name__}: {e}); {CHUNK_LOST}"
                ) from e
            self._arrays[name] = StoredArray(array, grid)
        return self._arrays[name]

    def index(self, name: str, entries) -> np.ndarray:
        """Positions int ``[k]`` along the last axis of array ``name`` of the named ``entries``."""
        where = {n: i for i, n in enumerate(self.probe_names[name])}
        missing = [e for e in entries if e not in where]
        if missing:
            raise KeyError(f"{name} has no entries {missing[:5]}; see run.probe_names[{name!r}]")
        return np.array([where[e] for e in entries], dtype=np.int64)

    def final(self) -> FinalResult:
        """Final parameters and test metrics (only for a complete run).

        Raises :class:`MissingFileError` (a ``FileNotFoundError``) when ``final.npz`` is missing and
        :class:`StoreError` when it is damaged, with the remedy: ``--resume`` (which finishes an
        unfinished run, and rebuilds ``final.npz`` of a complete one from its last checkpoint)."""
        if self.manifest["status"] == "complete":
            return load_final(self.path)
        return load_final(
            self.path,
            f"the run is {self.manifest['status']} ({self.steps_completed}/"
            f"{self.manifest['total_steps']} steps); finish it with --resume",
        )

    def series(self, name: str, entries=None, members=None) -> np.ndarray:
        """Array ``name`` as float64 numpy with time last, the analysis convention: ``[S, P, T_rec]``
        for a probe (``run["updates"]`` is ``[S, T_rec, P]`` on disk), ``[S, T]`` for a metric
        (``"loss"`` means ``"metrics/loss"``).

        ``entries``: names from ``probe_names[name]`` (or integer positions; one name alone is one
        entry), default all; ``members``: indices, a boolean mask or a slice, default all. Only the
        chunks holding the selection are read. Steps past ``steps_completed`` of an unfinished run
        are NaN, as are a diverged member's steps from its divergence on.
        """
        if name not in self.manifest["arrays"] and f"metrics/{name}" in self.manifest["arrays"]:
            name = f"metrics/{name}"
        x = self[name]
        n = x.shape[0]
        if members is None or isinstance(members, slice):
            m = slice(None) if members is None else members
        else:
            m = np.asarray(members)
            m = np.flatnonzero(m) if m.dtype == bool else m.astype(np.int64).reshape(-1) % max(n, 1)
        if x.ndim == 2:
            if entries is not None:
                raise ValueError(f"{name} is a metric [S, T]: it has no entries to choose")
            sel = (m, slice(None))
        elif entries is None:
            sel = (m, slice(None), slice(None))
        else:
            entries = [entries] if isinstance(entries, (str, int, np.integer)) else list(entries)
            if all(isinstance(e, str) for e in entries):
                e = self.index(name, entries)
            else:
                e = np.asarray(entries, dtype=np.int64) % x.shape[-1]
            sel = (m, slice(None), e)
        if any(isinstance(v, np.ndarray) for v in sel):  # one orthogonal read of members x entries
            if isinstance(sel[0], slice):
                sel = (np.arange(n)[sel[0]], *sel[1:])
            data = x.oindex[sel] if isinstance(x, StoredArray) else x[sel]
        else:
            data = x[sel]
        data = np.asarray(data, dtype=np.float64)
        return np.moveaxis(data, 1, -1) if data.ndim == 3 else data

    @property
    def metrics(self) -> StepMetrics:
        """Every per-step metric as numpy ``[S, T]`` (read in full), named as
        :attr:`TrainResult.metrics <rvsp_jax.training.result.TrainResult.metrics>`: ``run.metrics.loss``
        is ``run["metrics/loss"][:]``."""
        return StepMetrics(*(np.asarray(self[f"metrics/{k}"][:]) for k in StepMetrics._fields))

    @property
    def diverged(self) -> np.ndarray:
        """Whether each member diverged, bool ``[S]``: from the manifest's result (``diverged_at``)
        of a complete run, else ``final.npz``; for an unfinished run from what is known so far, the
        members whose loss at the last completed step is NaN (a diverged member records NaN from its
        divergence on), all False before any step is completed."""
        result = self.manifest.get("result")
        if self.manifest["status"] == "complete":
            if isinstance(result, dict) and isinstance(result.get("diverged_at"), list):
                return np.asarray(result["diverged_at"], dtype=np.int64) >= 0
            return np.asarray(self.final().diverged, dtype=bool)
        steps = self.steps_completed
        if steps == 0:
            return np.zeros(len(self.members), dtype=bool)
        return np.isnan(np.asarray(self["metrics/loss"][:, steps - 1], dtype=np.float64))

    @property
    def summary(self) -> dict | None:
        """``summary.json`` of the folder as a dict (see ``docs/summary.md``), or None when there is
        none (a plain recorded run has none; an experiment's folder does). A sweep's grid point
        (:meth:`point`) shows the sweep's summary."""
        return _read_summary(self.path)

    def to_xarray(self):
        """Every array as an ``xarray.Dataset`` (loads them into memory; needs xarray installed)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError(
                "Run.to_xarray needs the xarray package, which is not installed "
                "(pip install xarray); without it, slice run[name] directly"
            ) from None
        data = {}
        for name in self.arrays:
            key = name.replace("/", "_")
            if name.startswith("metrics/"):
                data[key] = (("member", "step"), self[name][:])
            else:
                data[key] = (("member", "probe_step", f"{key}_entry"), self[name][:])
        coords = {
            "member": self.members,
            "step": self.metric_steps,
            "probe_step": self.steps,
            **{f"{n.replace('/', '_')}_entry": list(v) for n, v in self.probe_names.items()},
        }
        return xr.Dataset(data, coords=coords, attrs={"path": str(self.path)})

    def __repr__(self) -> str:
        return (
            f"Run({str(self.path)!r}, {self.manifest['status']}, "
            f"{self.steps_completed}/{self.manifest['total_steps']} steps, S={self.config.seeds}, "
            f"arrays={list(self.arrays)})"
        )


class _PointRun(Run):
    """One grid point of a sweep (see :meth:`Run.point`)."""

    def __init__(self, parent: Run, g: int):
        members = parent.groups[g]
        a, b = int(members[0]), int(members[-1]) + 1
        if b - a != members.size:
            raise StoreError(f"{parent.path}: the members of grid point {g} are not contiguous")
        self.path, self.parent, self.grid_index, self._range = parent.path, parent, g, (a, b)
        self.probe_config, self.layout = parent.probe_config, parent.layout
        self.probe_names = parent.probe_names
        self.config = parent.config.point(g)
        self._arrays = {}
        manifest = json.loads(json.dumps(parent.manifest))
        n = len(parent.members)
        cut = lambda v: v[a:b] if isinstance(v, list) and len(v) == n else v  # noqa: E731
        old = manifest["members"]
        manifest["members"] = {
            k: ({h: cut(x) for h, x in v.items()} if isinstance(v, dict) else cut(v)) for k, v in old.items()
        }
        manifest["members"]["ids"] = list(range(b - a))
        manifest["members"]["sweep_ids"] = old["ids"][a:b]
        if isinstance(manifest.get("result"), dict):
            result = manifest["result"]
            result.update({k: cut(v) for k, v in result.items()})
            if isinstance(result.get("diverged_at"), list):
                result["diverged"] = int(sum(d >= 0 for d in result["diverged_at"]))
        manifest["config"] = self.config.to_dict()
        manifest["config_hash"] = self.config.digest()
        manifest["point"] = {"index": g, "values": parent.grid[g], "of": len(parent.grid)}
        manifest["grid"] = {"axes": {}, "points": [{}], "seeds": self.config.seeds}
        self.manifest = manifest

    def problems(self) -> list[str]:
        return self.parent.problems()

    def verify(self, data: bool = False) -> None:
        self.parent.verify(data)

    def __getitem__(self, name: str) -> MemberRange:
        if name not in self._arrays:
            self._arrays[name] = MemberRange(self.parent[name], *self._range)
        return self._arrays[name]

    def final(self) -> FinalResult:
        f = self.parent.final()
        a, b = self._range
        return FinalResult(
            jax.tree_util.tree_map(lambda x: x[a:b], f.params),
            *(np.asarray(getattr(f, k))[a:b] for k in FinalResult._fields[1:]),
        )

    def __repr__(self) -> str:
        return f"Run point {self.grid_index} {self.parent.grid[self.grid_index]} of {self.parent!r}"


def _read_summary(folder: Path) -> dict | None:
    path = Path(folder) / "summary.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        summary = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(
            f"{path} is not valid JSON ({e}); write it again by running the study "
            "again with --resume and the same options"
        ) from None
    if not isinstance(summary, dict):
        raise StoreError(f"{path} holds a JSON {type(summary).__name__}, not an object")
    return summary


def _is_study(manifest: dict) -> bool:
    return "config" not in manifest and "experiment" in manifest and isinstance(manifest.get("runs", {}), dict)


def _not_a_run(path: Path, manifest: dict) -> str:
    if _is_study(manifest):
        return (
            f"{path} is a study folder ({manifest['experiment']}), not a run folder: open it with "
            "rvsp_jax.open(path), which returns a Study (its recorded runs are study.runs)"
        )
    return f"{path}/manifest.json has no config: the folder is neither a run folder nor a study folder of rvsp-jax"


class _LazyRuns(Mapping):
    """``name -> Run`` of a study's recorded runs, each opened on first access."""

    def __init__(self, root: Path, entries: dict):
        self._root, self._entries, self._open = root, entries, {}

    def __getitem__(self, name: str) -> Run:
        if name not in self._entries:
            raise KeyError(f"no run {name!r} in {self._root}; it has {', '.join(self._entries) or 'none'}")
        if name not in self._open:
            entry = self._entries[name]
            folder = entry.get("folder", f"runs/{name}") if isinstance(entry, dict) else f"runs/{name}"
            self._open[name] = Run(self._root / folder)
        return self._open[name]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<runs {list(self._entries)} of {self._root}>"


class Study:
    """A study folder (:mod:`rvsp_jax.studies.folder`): its manifest (experiment, settings,
    status), the recorded runs under ``runs/<name>/`` (:attr:`runs`, each a :class:`Run`, opened on
    first access) and ``summary.json`` (:attr:`summary`). Only the manifest is read when opened."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if not _is_study(self.manifest):
            raise StoreError(
                f"{self.path} is a run folder, not a study folder: open it with "
                "rvsp_jax.open(path) or rvsp_jax.io.store.open_run(path)"
                if "config" in self.manifest
                else _not_a_run(self.path, self.manifest)
            )
        self.runs: Mapping[str, Run] = _LazyRuns(self.path, dict(self.manifest.get("runs", {})))

    @property
    def experiment(self) -> str:
        return self.manifest["experiment"]

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def settings(self) -> dict:
        return self.manifest.get("settings", {})

    @property
    def summary(self) -> dict | None:
        """``summary.json`` as a dict (see ``docs/summary.md``), or None before it is written."""
        return _read_summary(self.path)

    def __repr__(self) -> str:
        return (
            f"Study({str(self.path)!r}, {self.experiment}, {self.status}, runs={list(self.manifest.get('runs', {}))})"
        )


def open_run(path: str | os.PathLike) -> Run:
    """Open a run folder for reading (see :class:`Run`); a study folder is refused (use
    :func:`open_folder`)."""
    return Run(path)


def open_folder(path: str | os.PathLike) -> Run | Study:
    """``rvsp_jax.open``: a :class:`Run` for a run folder (its manifest has a ``config``), a
    :class:`Study` for a study folder (an ``experiment`` and ``runs``, no ``config``); anything else
    raises a one-line :class:`StoreError` (or :class:`~rvsp_jax.io.runfolder.RunFolderError` when
    there is no readable manifest)."""
    manifest = read_manifest(Path(path))
    if "config" in manifest:
        return Run(path)
    if _is_study(manifest):
        return Study(path)
    raise StoreError(_not_a_run(Path(path), manifest))
