"""One runner for every study: folders, recording, summary, figures, report and completion.

A study module declares::

    EXPERIMENT: str                     # the experiment's name (manifest, sweep summary)
    TITLE: str                          # its title in a sweep's report
    FOLDER: "run" | "study"             # out is a recorded run folder, or a study folder
                                        # (rvsp_jax.studies.folder: several runs, or none)
    FIGURES = {name: (caption, maker)}  # see rvsp_jax.studies.figures
    record_runs(config, settings, out, *, resume, overwrite, command, progress, dataset)
        -> what write_results analyses (a Run, a dict of runs, ...)
    write_results(runs, settings, folder, *, command, progress, dataset, training_s=None) -> summary
    sweep_statistics(summary) -> {panel: {series: float}}   # headline numbers of one grid point

and optionally ``SWEEPS_ITSELF = True`` (the study's own analysis is of a whole sweep: a sweep
config is not split into grid points) and ``manifest_entry(settings, manifest) -> dict`` (extra
entries of a run folder's ``manifest["study"]``).

:func:`run_study` records and analyses a plain config (or, for a sweep config, every grid point as
its own ensemble through :mod:`rvsp_jax.studies.per_point`) and marks the folder complete: a run
folder's manifest gets a ``"study"`` entry (settings, timings, status "complete"); a study folder
is finished with :func:`rvsp_jax.studies.folder.finish_study`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

from rvsp_jax.data import load
from rvsp_jax.io import runfolder
from rvsp_jax.studies import per_point
from rvsp_jax.studies.folder import finish_study
from rvsp_jax.training import devices


class StudyResult(NamedTuple):
    """What :func:`run_study` returns: the folder written and its summary (for a sweep, the
    sweep's summary of :mod:`rvsp_jax.studies.per_point`)."""

    path: Path
    summary: dict


def settings_dict(settings) -> dict:
    return settings.to_dict() if hasattr(settings, "to_dict") else dataclasses.asdict(settings)


def _mark_complete(study, settings, out: Path, summary: dict) -> None:
    if getattr(study, "FOLDER", "run") == "study":
        finish_study(out)
        return
    if not devices.is_writer():
        return
    manifest = runfolder.read_manifest(out)
    extra = study.manifest_entry(settings, manifest) if hasattr(study, "manifest_entry") else {}
    manifest["study"] = {
        "settings": settings_dict(settings),
        **extra,
        "timings": summary.get("timings"),
        "status": "complete",
    }
    runfolder.write_manifest(out, manifest)


def run_study(
    study,
    config,
    settings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
) -> StudyResult:
    """Run the study module ``study`` on ``config`` into ``out`` (see the module docstring); returns
    the folder and its summary."""
    out = Path(out)
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    if config.sweep_axes() and not getattr(study, "SWEEPS_ITSELF", False):
        summary = per_point.run(
            study,
            config,
            settings,
            out,
            resume=resume,
            overwrite=overwrite,
            command=command,
            progress=progress,
            dataset=data,
            title=getattr(study, "TITLE", study.EXPERIMENT),
        ).summary
    else:
        t0 = time.perf_counter()
        runs = study.record_runs(
            config, settings, out, resume=resume, overwrite=overwrite, command=command, progress=progress, dataset=data
        )
        summary = study.write_results(
            runs, settings, out, command=command, progress=progress, dataset=data, training_s=time.perf_counter() - t0
        )
    _mark_complete(study, settings, out, summary)
    return StudyResult(out, summary)
