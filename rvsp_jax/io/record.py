"""Train an ensemble and record its trajectories into a run folder, in one call, resumably.

Every experiment that needs trajectories calls :func:`run`, then analyses the folder with
:func:`rvsp_jax.io.store.open_run`::

    from rvsp_jax.config import TrainConfig
    from rvsp_jax.io.record import ProbeConfig, run

    recorded = run(TrainConfig(seeds=64, steps=2000), ProbeConfig(probes="updates", index="all"),
                   "results/ergodicity/run1")
    d = recorded["updates"][:, 100:, :]        # [S, T_rec - 100, 13002] float32, read on demand

What is recorded, and the names of the entries, is described in :mod:`rvsp_jax.training.probes`; the folder
layout in :mod:`rvsp_jax.io.store`. The device computes chunk k+1 while a background thread writes
chunk k: its arrays, then, after the first chunk, every ``checkpoint_seconds`` and at the end, a
checkpoint of the ensemble state and the manifest's ``steps_completed``. An interrupted run
continues from its last checkpoint with ``resume=True`` and ends bit for bit equal to an
uninterrupted one (the trainer's randomness depends only on config, member and step).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.config import TrainConfig
from rvsp_jax.data import Dataset, load
from rvsp_jax.io import runfolder, store
from rvsp_jax.io.progress import progress_enabled
from rvsp_jax.training import devices as dev
from rvsp_jax.training.ensemble import Chunk, Ensemble, host_state
from rvsp_jax.training.keys import member_keys, seed_ids
from rvsp_jax.training.model import make_model
from rvsp_jax.training.probes import ProbeConfig, ProbeLayout, make_probe

__all__ = ["ProbeConfig", "ProbeLayout", "make_probe", "run"]

_CACHE: dict = {}
_DEFAULTS = TrainConfig().to_dict()  # what manifests written before a config field existed mean
_CACHE_SIZE = 2


def _ensemble(config: TrainConfig, probes: ProbeConfig, dataset: Dataset | None):
    """The compiled :class:`Ensemble` and probe layout of ``(config, probes, dataset)``; the last two
    are kept, so calling :func:`run` again with a recent configuration does not recompile."""
    key = (config, probes, None if dataset is None else id(dataset))
    if key not in _CACHE:
        data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
        probe, layout = make_probe(probes, make_model(config), data, config)
        _CACHE[key] = (Ensemble(config, data, probe=probe, probe_every=probes.every), layout)
    _CACHE[key] = _CACHE.pop(key)  # most recently used last
    while len(_CACHE) > _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]
    return _CACHE[key]


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _padded(host, members: int):
    """Host state ``[S, ...]`` padded to ``members`` by repeating member 0 (padding is dropped)."""

    def pad(a):
        extra = members - a.shape[0]
        return np.concatenate([a, np.repeat(a[:1], extra, axis=0)]) if extra > 0 else a

    return jax.tree_util.tree_map(pad, host)


def _state_bytes(ens: Ensemble) -> int:
    shapes = jax.eval_shape(ens.init)
    return ens.members * sum(int(np.prod(x.shape[1:])) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))


def _manifest(config, probes, layout, specs, ens, experiment, command) -> dict:
    ids = jnp.arange(config.members, dtype=jnp.int32)
    init_keys, data_keys = member_keys(config.base_seed, seed_ids(ids, config), config.vary)
    grid = config.grid()
    per_point = config.grid_hyperparams()
    return {
        "format": runfolder.FORMAT,
        "experiment": experiment,
        "command": command,
        "status": "running",
        "created": _now(),
        "updated": _now(),
        "steps_completed": 0,
        "total_steps": ens.total_steps,
        "chunk": ens.chunk,
        "config": config.to_dict(),
        "config_hash": config.digest(),
        "probe_config": probes.to_dict(),
        "members": {
            "ids": np.asarray(ids).tolist(),
            "init_keys": np.asarray(init_keys).tolist(),
            "data_keys": np.asarray(data_keys).tolist(),
            # member g * seeds + s: grid point g, seed index s (grid-major)
            "grid_point": (np.asarray(ids) // config.seeds).tolist(),
            "seed_index": (np.asarray(ids) % config.seeds).tolist(),
            "hyperparams": {k: np.repeat(np.asarray(v), config.seeds).tolist() for k, v in per_point.items()},
        },
        "grid": {
            "axes": config.sweep_axes(),
            "points": grid,
            "seeds": config.seeds,
            "configs": [config.point(g).to_dict() for g in range(len(grid))],
        },
        "arrays": {
            s.name: {
                "shape": list(s.shape),
                "chunks": list(s.chunks),
                "dtype": s.dtype,
                "compress": s.compress,
                "time": "step" if s.name.startswith("metrics/") else "probe_step",
            }
            for s in specs
        },
        "probes": layout.to_dict(),
        "versions": runfolder.versions(),
        "device": dev.describe(),
    }


def _start(out: Path, ens: Ensemble, specs, manifest: dict | None, new_manifest) -> tuple:
    """Create (or reopen) the folder's arrays and place the starting state on the devices.

    Returns ``(manifest, arrays, start step, device state)``; ``manifest`` is None for a new run.

    With several processes only process 0 writes (the manifest, new arrays); the others open the
    arrays once it has made them (a barrier). Every process reads the checkpoint, and a resumed run
    is refused (by all alike) when its processes cannot each write their own members' chunks.
    """
    writer = dev.is_writer()
    checkpoint = store.load_checkpoint(out, jax.eval_shape(ens.init)) if manifest else None
    if manifest is None:
        manifest = new_manifest()
        if writer:
            runfolder.write_manifest(out, manifest)
    if checkpoint is None:  # a new run, or one killed before its first checkpoint
        arrays = store.create_arrays(out, specs) if writer else None
        start, host = 0, host_state(ens.init(), ens.members)
    else:
        start, host = checkpoint
        store.verify_chunks(out, manifest, start)  # no hole before the checkpoint survives resume
        arrays = store.open_arrays(out, [s.name for s in specs])
        problem = store.member_chunk_problem(arrays, dev.member_ranges(ens.mesh, ens.padded, ens.members))
        if problem:
            raise store.StoreError(f"cannot continue {out} with {jax.process_count()} processes: {problem}")
    manifest["sessions"] = [
        *manifest.get("sessions", []),
        {"started": _now(), "from_step": start, "device": dev.describe()},
    ]
    manifest.update(steps_completed=start, updated=_now())
    if writer:
        runfolder.write_manifest(out, manifest)
    dev.sync("rvsp_jax: run folder ready")  # process 0 has made the arrays and the manifest
    if arrays is None:
        arrays = store.open_arrays(out, [s.name for s in specs])
    # every start goes through put_state, so fresh and resumed runs share one compiled step
    return manifest, arrays, start, ens.put_state(_padded(host, ens.padded))


def _writer(out: Path, arrays: dict, every: int, manifest: dict, token: int = 0) -> store.ChunkWriter:
    """A background writer of :class:`Chunk` items whose ``state`` is a host checkpoint or None.

    With several processes each writes its own members' probe chunks and process 0 the metrics;
    process 0 alone gets states, and writes a checkpoint only once every process has said (through
    the coordination service, not a device collective: this is a background thread) that its chunks
    up to that step are written, so a checkpoint never claims a chunk that a killed peer lost."""
    writer = dev.is_writer()

    def write(chunk: Chunk) -> None:
        # arrays first; then, when the chunk carries a state, the checkpoint, then the manifest
        try:
            store.write_steps(arrays, chunk.start, every, chunk.metrics._asdict() if writer else {}, chunk.probes or {})
            dev.announce(f"{token}/written/{chunk.stop}")
            if chunk.state is not None:
                dev.await_all(f"{token}/written/{chunk.stop}")
                store.save_checkpoint(out, chunk.stop, chunk.state)
                manifest.update(steps_completed=chunk.stop, updated=_now())
                runfolder.write_manifest(out, manifest)
        except OSError as e:
            raise store.StoreError(
                f"writing steps {chunk.start}-{chunk.stop} to {out} failed: {e}. The run stopped "
                f"and can continue from step {manifest['steps_completed']}, its last checkpoint: fix "
                "the problem (e.g. free disk space), then run again with --resume and the same "
                "options"
            ) from e

    return store.ChunkWriter(write)


def _finish(out: Path, ens: Ensemble, state, manifest: dict, timing: dict) -> None:
    """Evaluate the final parameters on the test split; write ``final.npz`` and mark complete
    (every process evaluates, process 0 writes; all return once it has)."""
    test_loss, test_accuracy = ens.evaluate(state.params)
    final = host_state(state, ens.members)
    if not dev.is_writer():
        dev.sync("rvsp_jax: run finished")
        return
    try:
        store.save_final(
            out, store.FinalResult(final.params, test_loss, test_accuracy, final.diverged, final.diverged_at)
        )
        manifest.update(
            status="complete",
            updated=_now(),
            timing=timing,
            result={
                "test_loss": test_loss.tolist(),
                "test_accuracy": test_accuracy.tolist(),
                "diverged": int(final.diverged.sum()),
                "diverged_at": final.diverged_at.tolist(),
            },
        )
        runfolder.write_manifest(out, manifest)
    except OSError as e:
        raise store.StoreError(
            f"writing the final results to {out} failed: {e}; fix the problem, "
            "then finish the run with --resume and the same options"
        ) from e
    dev.sync("rvsp_jax: run finished")


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM at a chunk boundary, with a checkpoint written; the message
    holds the command that continues it."""


def resume_command(command: str | None, out: Path) -> str:
    """The command line that continues the run ``out``: ``command`` without ``--overwrite``, with
    ``--out`` (experiments default to a new timestamped folder) and ``--resume``."""
    if not command:
        return f"record.run(..., {str(out)!r}, resume=True) with the same configuration"
    tokens = [t for t in shlex.split(command) if t != "--overwrite"]
    if "--out" not in tokens and not any(t.startswith("--out=") for t in tokens):
        tokens += ["--out", str(out)]
    if "--resume" not in tokens:
        tokens.append("--resume")
    return shlex.join(tokens)


@contextlib.contextmanager
def _stop_requests(progress: bool):
    """A list that gets the signal number when SIGINT or SIGTERM arrives (first one only: the
    handlers are then restored, so a second Ctrl-C stops at once); main thread only."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum, frame):
        requested.append(signum)
        for sig, old in previous.items():
            signal.signal(sig, old)
        if progress:
            sys.stderr.write(
                f"\n{signal.Signals(signum).name}: stopping at the end of this chunk and "
                "writing a checkpoint (Ctrl-C again stops at once, losing the steps "
                "since the last checkpoint)\n"
            )

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _needed_bytes(out: Path, ens: Ensemble, specs, resume: bool) -> int:
    """Bytes still to be written: the arrays not yet on disk (on resume, chunk files already there
    are rewritten in place), one temporary copy of the largest chunk per write thread, and the
    checkpoint and final state with their temporaries."""
    total = sum(s.nbytes for s in specs)
    if resume:
        written = sum(f.stat().st_size for f in (out / "arrays").rglob("*") if f.is_file())
        total = max(0, total - written)
    largest = max((4 * int(np.prod(s.chunks)) for s in specs), default=0)
    return total + store.WRITE_THREADS * largest + 4 * _state_bytes(ens)


def run(
    config: TrainConfig,
    probes: ProbeConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    dataset: Dataset | None = None,
    experiment: str = "train",
    command: str | None = None,
    progress: bool = True,
    checkpoint_seconds: float = 10.0,
) -> store.Run:
    """Train ``config``'s ensemble, recording ``probes`` into the run folder ``out``; return it opened.

    resume: continue the interrupted run in ``out`` from its last checkpoint (the configuration must
      equal the manifest's; a complete run is returned as it is, after rebuilding ``final.npz`` from
      the last checkpoint if it is missing or damaged).
    overwrite: replace an existing run folder ``out`` (never needed for a new or empty folder); only
      a run folder of ours, holding nothing else, is replaced (:func:`rvsp_jax.io.runfolder.check_new`).
    experiment, command: recorded in the manifest.
    progress: show a tqdm bar on stderr (steps/s, and model-steps/s = steps/s x S in the postfix).
    checkpoint_seconds: checkpoint the ensemble state (and advance the manifest's
      ``steps_completed``) after the first chunk, then at the first chunk end at least this long
      after the previous checkpoint, and at the end; 0 checkpoints every chunk.

    The folder is locked (:class:`~rvsp_jax.io.runfolder.RunLock`) while the run writes it. SIGINT
    (Ctrl-C) or SIGTERM stops training at the end of the current chunk, writes a checkpoint and
    raises :class:`Interrupted` whose message is the command that continues the run.
    Raises :class:`~rvsp_jax.io.runfolder.RunFolderError` before training when ``out`` is taken, locked,
    unwritable or its disk too small, :class:`~rvsp_jax.training.footprint.FootprintError` when the ensemble
    would not fit in memory, and :class:`~rvsp_jax.io.store.StoreError` when writing fails during
    training (the run then stays resumable from its last checkpoint).
    """
    out = Path(out)
    if resume and overwrite:
        raise runfolder.RunFolderError(
            "--resume and --overwrite exclude each other: resume continues the run in --out, overwrite replaces it"
        )
    # with several processes (jax.distributed) process 0 checks, creates and locks the folder and
    # writes everything but the other processes' own chunks (see _start, _writer, _finish)
    writer = dev.is_writer()
    with _stop_requests(progress and writer) as stop:
        if resume:
            # checked before locking (a lock file is only ever made in a run folder), then again
            # inside the lock, where no other process can change the folder any more
            if writer:
                runfolder.check_resume(out, config.to_dict(), probes.to_dict(), _DEFAULTS)
            with runfolder.RunLock(out) if writer else contextlib.nullcontext():
                return _resume(config, probes, out, dataset, progress, checkpoint_seconds, stop)
        if writer:
            runfolder.check_new(out, overwrite)
        ens, layout = _ensemble(config, probes, dataset)
        specs = _specs(ens, layout, probes)
        if writer:
            runfolder.check_writable(out, _needed_bytes(out, ens, specs, resume=False))
        aside = runfolder.create(out, overwrite) if writer else None
        try:
            lock = runfolder.lock_new(out) if writer else contextlib.nullcontext()
        except BaseException:
            runfolder.restore(out, aside)
            raise
        with lock:
            try:
                started = _start(
                    out, ens, specs, None, lambda: _manifest(config, probes, layout, specs, ens, experiment, command)
                )
            except BaseException:
                if writer:
                    lock.release()
                    runfolder.restore(out, aside)
                raise
            # the replaced run (moved aside by create) is deleted once the new one has its manifest
            runfolder.discard(aside)
            return _train(out, ens, layout, *started, progress, checkpoint_seconds, stop)


def _specs(ens: Ensemble, layout: ProbeLayout, probes: ProbeConfig):
    return store.array_specs(
        ens.members, ens.total_steps, ens.chunk, layout, probes.compress, member_part=ens.padded // ens.mesh.size
    )


def _resume(config, probes, out, dataset, progress, checkpoint_seconds, stop) -> store.Run:
    """Continue (or, when complete, check and if needed finish) the run in ``out``, locked."""
    manifest = runfolder.check_resume(out, config.to_dict(), probes.to_dict(), _DEFAULTS)
    if manifest["status"] == "complete":
        store.verify_chunks(out, manifest, manifest["total_steps"])  # a lost chunk cannot be rebuilt
    final_ok = manifest["status"] == "complete" and store.final_ok(out)
    dev.sync("rvsp_jax: run folder read")  # every process decides from the folder as it was
    progress = progress and dev.is_writer()
    if final_ok:
        if progress:
            tqdm.write(f"run {out} is already complete ({manifest['total_steps']} steps); nothing to do")
        return store.open_run(out)
    ens, layout = _ensemble(config, probes, dataset)
    if manifest["status"] == "complete":  # final.npz lost or damaged: rebuild it from the checkpoint
        checkpoint = store.load_checkpoint(out, jax.eval_shape(ens.init))
        if checkpoint is None or checkpoint[0] != ens.total_steps:
            raise store.StoreError(
                f"{out}: final.npz is missing or damaged and the checkpoint does not "
                "hold the final state; start the run anew with --overwrite (the "
                "same options give the same numbers)"
            )
        if progress:
            tqdm.write(
                f"run {out} is complete but its final.npz is missing or damaged; rebuilding it from the last checkpoint"
            )
        _finish(out, ens, ens.put_state(_padded(checkpoint[1], ens.padded)), manifest, manifest.get("timing", {}))
        return store.open_run(out)
    specs = _specs(ens, layout, probes)
    if dev.is_writer():
        runfolder.check_writable(out, _needed_bytes(out, ens, specs, resume=True))
    started = _start(out, ens, specs, manifest, None)
    return _train(out, ens, layout, *started, progress, checkpoint_seconds, stop)


def _train(
    out: Path,
    ens: Ensemble,
    layout: ProbeLayout,
    manifest: dict,
    arrays: dict,
    start: int,
    state,
    progress: bool,
    checkpoint_seconds: float,
    stop: list,
) -> store.Run:
    """The training loop of :func:`run` from ``start``, writing chunks in the background.

    With several processes every decision that starts a collective (a checkpoint's gather, a stop)
    is agreed at each chunk (process 0's clock decides checkpoints; a stop signal to any process
    stops all); only process 0 shows progress."""
    writer_process, several = dev.is_writer(), jax.process_count() > 1
    writer = _writer(out, arrays, layout.every, manifest, dev.new_token())
    t0 = time.perf_counter()
    t_first = steps_first = t_checkpoint = cpu_first = None
    stopped_at = None
    bar = tqdm(
        total=ens.total_steps,
        initial=start,
        unit="step",
        disable=not progress_enabled(progress) or not writer_process,
        file=sys.stderr,
        dynamic_ncols=True,
        desc=f"training S={ens.members}",
    )
    try:
        for chunk in ens.chunks(state, start):
            state = chunk.state
            now = time.perf_counter()
            due = (
                t_checkpoint is None
                or now - t_checkpoint >= checkpoint_seconds
                or chunk.stop == ens.total_steps
                or bool(stop)
            )
            stopping = bool(stop)
            if several:  # one decision for all: process 0's clock, anyone's stop signal
                flags = dev.agree([due, stopping])
                stopping = bool(flags[:, 1].any())
                due = bool(flags[0, 0]) or stopping
            t_checkpoint = now if due else t_checkpoint
            # a checkpoint takes its host copy of the state now, while the next chunk computes
            checkpoint = host_state(state, ens.members) if due else None
            writer.put(chunk._replace(state=checkpoint if writer_process else None))
            if t_first is None:
                t_first, steps_first, cpu_first = time.perf_counter(), chunk.stop, os.times()
            bar.update(chunk.stop - chunk.start)
            rate = bar.format_dict["rate"] or (bar.n - start) / (time.perf_counter() - t0)
            bar.set_postfix_str(f"{rate * ens.members:,.0f} model-steps/s")
            if stopping and chunk.stop < ens.total_steps:
                stopped_at = chunk.stop
                break
    finally:
        bar.close()
        writer.close()
    if stopped_at is not None:
        dev.sync("rvsp_jax: stopped")  # no process exits before process 0 has its checkpoint
        by = signal.Signals(stop[0]).name if stop else "another process's stop signal"
        raise Interrupted(
            f"stopped by {by} at step {stopped_at} of "
            f"{ens.total_steps}, checkpoint written; continue with: "
            f"{resume_command(manifest.get('command'), out)}"
        )
    t_end, cpu_end = time.perf_counter(), os.times()
    steady = t_first is not None and steps_first < ens.total_steps and t_end > t_first
    n = ens.total_steps - steps_first if steady else None
    _finish(
        out,
        ens,
        state,
        manifest,
        {
            "seconds": t_end - t0,
            "started_at_step": start,
            "first_chunk_seconds": None if t_first is None else t_first - t0,
            # after the first chunk (compilation) until the writer finished; CPU time is this
            # process's, all threads (device, writer, zarr) together, user + system; the system part
            # is mostly the kernel taking the written data into its page cache
            "steady_steps_per_second": n / (t_end - t_first) if steady else None,
            "steady_cpu_seconds_per_step": (cpu_end.user + cpu_end.system - cpu_first.user - cpu_first.system) / n
            if steady
            else None,
            "steady_system_seconds_per_step": (cpu_end.system - cpu_first.system) / n if steady else None,
        },
    )
    return store.open_run(out)
