"""Run folders of studies that hold several recorded runs (``<out>/runs/<variant>/``) or none.

The study's own ``manifest.json`` records the experiment, its settings and its status; each variant
is an ordinary recorded run (:func:`rvsp_jax.io.record.run`), so it can be opened, resumed and read on
its own. The same refusal rules as a single run apply: an existing folder is never replaced without
``overwrite``, and ``resume`` needs the same settings.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from rvsp_jax.config import TrainConfig
from rvsp_jax.io import record, runfolder, store
from rvsp_jax.training import devices as dev
from rvsp_jax.training.probes import ProbeConfig


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


_LOCKS: dict[Path, runfolder.RunLock] = {}
"""Study folders this process has open (locked until :func:`finish_study` or the process ends)."""


def _lock(out: Path, new: bool) -> runfolder.RunLock:
    key = Path(out).resolve()
    if key in _LOCKS:  # reopened by this process (e.g. a study that failed, run again)
        return _LOCKS[key]
    lock = runfolder.lock_new(out) if new else runfolder.RunLock(out).acquire()
    _LOCKS[key] = lock
    return lock


def _unlock(out: Path) -> None:
    lock = _LOCKS.pop(Path(out).resolve(), None)
    if lock is not None:
        lock.release()


def open_study(
    out, experiment: str, settings: dict, *, resume: bool = False, overwrite: bool = False, command: str | None = None
) -> Path:
    """Create (or, with ``resume``, reopen) the study folder ``out``, lock it and mark it running.

    ``settings`` is everything that determines the study's numbers (JSON-ready); resuming with other
    settings is refused with the differences listed. The folder stays locked against other
    processes until :func:`finish_study` (or this process ends).

    In a run that spans processes only process 0 creates, locks and writes the folder; the others
    wait until it has (a refusal on process 0 ends them through the launcher).
    """
    out = Path(out)
    if not dev.is_writer():
        dev.sync("rvsp_jax: study folder open")
        return out
    if resume and overwrite:
        raise runfolder.RunFolderError("--resume and --overwrite exclude each other")
    aside = None
    if resume:
        manifest = runfolder.read_manifest(out)
        _lock(out, new=False)
        old = manifest.get("settings", {})
        diffs = [
            f"{k}: run folder has {old.get(k)!r}, this command gives {settings.get(k)!r}"
            for k in sorted(set(old) | set(settings))
            if old.get(k) != settings.get(k)
        ]
        if diffs:
            _unlock(out)
            raise runfolder.RunFolderError(f"cannot resume {out} with different settings:\n  " + "\n  ".join(diffs))
    else:
        runfolder.check_new(out, overwrite)
        runfolder.check_writable(out, 0)
        aside = runfolder.create(out, overwrite)
        manifest = {
            "format": runfolder.FORMAT,
            "experiment": experiment,
            "command": command,
            "created": _now(),
            "settings": settings,
            "runs": {},
            "versions": runfolder.versions(),
            "device": dev.describe(),
        }
    manifest.update(status="running", updated=_now())
    try:
        if not resume:
            _lock(out, new=True)
        runfolder.write_manifest(out, manifest)
    except BaseException:
        if not resume:
            _unlock(out)
            runfolder.restore(out, aside)
        raise
    runfolder.discard(aside)  # the replaced study, moved aside, once the new one has started
    (out / "figures").mkdir(exist_ok=True)
    dev.sync("rvsp_jax: study folder open")
    return out


def train_variant(
    out,
    name: str,
    config: TrainConfig,
    probes: ProbeConfig,
    *,
    resume: bool = False,
    experiment: str = "study",
    progress: bool = True,
    dataset=None,
) -> store.Run:
    """Train and record one variant into ``<out>/runs/<name>``; with ``resume`` a complete variant is
    reused as it is, an interrupted one continued, a missing one started."""
    folder = Path(out) / "runs" / name
    again = resume and (folder / runfolder.MANIFEST).exists()
    run = record.run(
        config, probes, folder, resume=again, dataset=dataset, experiment=f"{experiment}/{name}", progress=progress
    )
    if not dev.is_writer():
        return run
    manifest = runfolder.read_manifest(out)
    manifest.setdefault("runs", {})[name] = {"folder": f"runs/{name}", "config_hash": config.digest()}
    runfolder.write_manifest(out, manifest)
    return run


def finish_study(out, **updates) -> None:
    """Mark the study folder complete (after summary.json, report.md and figures are written; in a
    run that spans processes, by process 0)."""
    if not dev.is_writer():
        return
    manifest = runfolder.read_manifest(out)
    manifest.update(updates, status="complete", updated=_now())
    runfolder.write_manifest(out, manifest)
    _unlock(out)
