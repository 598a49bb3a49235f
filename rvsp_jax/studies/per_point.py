"""Any study on a hyperparameter sweep: one recording, each grid point analysed as its own ensemble.

    python -m experiments.spectra --lr 0.03,0.1,0.3 --seeds 16      # (the same for every study)

A list of values for ``--lr`` or for a float key of ``--opt-kwargs`` makes a sweep (see
:meth:`rvsp_jax.config.TrainConfig.grid`). The whole grid x ``--seeds`` is trained in one compiled
ensemble; then every grid point g is the plain run of its ``seeds`` members
(:meth:`rvsp_jax.io.store.Run.point`: member (g, s) equals member s of a plain run with g's values) and
goes through the study's own analysis, unchanged, into ``<out>/points/<g>-<values>/`` (its
summary.json, report.md and figures/, exactly as the study writes them for a plain run). ``<out>``
itself gets:

- ``summary.json``: the grid, and per grid point its values, folder, whether it was analysed (a
  point whose members all diverged is reported with the reason, not analysed) and the study's
  headline statistics (its ``sweep_statistics(summary)``);
- ``figures/statistics.{png,pdf}``: every headline statistic against the first swept
  hyperparameter (one panel per statistic, one line per series, line styles for the other axes),
  declared in :data:`FIGURES` and saved like every study's figures (:mod:`rvsp_jax.studies.figures`);
- ``report.md``: the grid, the table of statistics, and a link to every point's report.

A study module taking part declares the protocol of :mod:`rvsp_jax.studies.runner` (``EXPERIMENT``,
``record_runs``, which for a sweep config records the whole sweep, ``write_results`` and
``sweep_statistics(summary) -> {panel: {series: float}}``); the runner calls :func:`run` for a
sweep config. Only process 0 writes (see :mod:`rvsp_jax.training.devices`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.ticker import NullFormatter

from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, json_ready, write_summary
from rvsp_jax.studies.figures import captions, save_figures
from rvsp_jax.training import devices

POINTS = "points"
"""Sub-folder of a sweep's study folder holding one folder per grid point."""


class SweepResult(NamedTuple):
    out: Path
    summary: dict


class Drawn(NamedTuple):
    """What a sweep's figures are drawn from: its summary and the study's title."""

    summary: dict
    title: str


def point_label(g: int, values: dict) -> str:
    """Folder name of grid point g: ``3-lr=0.1,momentum=0.9`` (file-name safe)."""
    text = ",".join(f"{k}={v:g}" for k, v in values.items())
    return f"{g}-" + re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)


def _point_views(runs, g: int):
    """Grid point g of what ``record_runs`` returned: a Run, a dict of runs, or anything with
    ``point(g)``."""
    if isinstance(runs, dict):
        return {name: r.point(g) for name, r in runs.items()}
    return runs.point(g)


def _finite(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def analyse_points(
    study, runs, config, settings, out: Path, *, command: str | None = None, progress: bool = True, dataset=None
) -> list[dict]:
    """Run ``study.write_results`` on every grid point of ``runs`` (a sweep) into
    ``out/points/<label>``; returns one entry per point: values, folder, analysed, statistics (or the
    reason a point was not analysed, a ValueError's message such as "every member diverged")."""
    points = []
    for g, values in enumerate(config.grid()):
        label = point_label(g, values)
        folder = Path(out) / POINTS / label
        if devices.is_writer():
            (folder / "figures").mkdir(parents=True, exist_ok=True)
        entry = {"index": g, "point": values, "folder": f"{POINTS}/{label}"}
        try:
            summary = study.write_results(
                _point_views(runs, g), settings, folder, command=command, progress=progress, dataset=dataset
            )
        except ValueError as e:  # the study's own one-line refusals (e.g. every member diverged)
            points.append({**entry, "analysed": False, "reason": str(e).splitlines()[0]})
            continue
        stats = {
            panel: {k: _finite(v) for k, v in series.items()}
            for panel, series in study.sweep_statistics(json_ready(summary)).items()
        }
        points.append({**entry, "analysed": True, "statistics": stats})
    if not any(p["analysed"] for p in points):
        raise ValueError(f"no grid point of the sweep could be analysed: {points[0]['reason']}")
    return points


def _x_axis(axes: dict, points: list[dict]):
    """The first swept axis (x), and the grid points of each line (one per combination of the
    other axes) with their labels."""
    name = next(iter(axes))
    others = [k for k in axes if k != name]
    lines: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        lines.setdefault(tuple(p["point"][k] for k in others), []).append(i)
    labels = [", ".join(f"{k}={v:g}" for k, v in zip(others, key)) for key in lines]
    return name, list(lines.values()), labels


def _panels(points: list[dict]) -> dict[str, list[str]]:
    panels: dict[str, dict[str, None]] = {}
    for p in points:
        for panel, series in p.get("statistics", {}).items():
            panels.setdefault(panel, {}).update(dict.fromkeys(series))
    return {k: list(v) for k, v in panels.items()}


def figure(summary: dict):
    """Every headline statistic against the first swept hyperparameter."""
    axes, points = summary["grid"]["axes"], summary["points"]
    name, lines, labels = _x_axis(axes, points)
    panels = _panels(points)
    cols = min(4, max(1, len(panels)))
    rows = -(-len(panels) // cols)
    fig, ax = plots.subplots(rows, cols, width="double", height=2.0 * rows)
    ax = np.atleast_1d(ax).ravel()
    values = axes[name]
    logx = min(values) > 0 and max(values) / min(values) >= 10
    styles = ("-", "--", ":", "-.")
    first = next(iter(panels.values()), [])
    for a, (panel, series) in zip(ax, panels.items()):
        for j, s in enumerate(series):
            color = plots.PALETTE[j % len(plots.PALETTE)]
            for line, label, style in zip(lines, labels, styles * len(lines)):
                xs = [points[i]["point"][name] for i in line]
                ys = [points[i]["statistics"][panel].get(s, np.nan) if points[i]["analysed"] else np.nan for i in line]
                a.plot(xs, ys, style, color=color, marker="o", markersize=3, label=s + (f" ({label})" if label else ""))
        a.set_title(panel, fontsize=7)
        a.set_xlabel(name)
        if logx:
            a.set_xscale("log")
        a.set_xticks(values, [f"{v:g}" for v in values])
        a.xaxis.set_minor_formatter(NullFormatter())
        shown = a is ax[0] or set(series) != set(first)  # one legend per set of series
        if shown and len(series) * len(lines) > 1:
            a.legend(fontsize=5)
    for a in ax[len(panels) :]:
        a.set_visible(False)
    return fig


def _statistics_figure(drawn: Drawn):
    return figure(drawn.summary)


def _statistics_caption(drawn: Drawn) -> str:
    return f"{drawn.title}: headline statistics against {next(iter(drawn.summary['grid']['axes']))}"


FIGURES = {"statistics": (_statistics_caption, _statistics_figure)}
"""The sweep's figures (the protocol of :mod:`rvsp_jax.studies.figures`), drawn from a :class:`Drawn`."""


def report(summary: dict, command: str | None, title: str, figures: dict[str, str] | None = None) -> Report:
    """report.md of a sweep: the grid, one row per grid point and statistic, the links, and the
    figures ``figures`` (name -> caption, as :func:`~rvsp_jax.studies.figures.save_figures` returns
    them; default every figure of :data:`FIGURES`)."""
    axes, points = summary["grid"]["axes"], summary["points"]
    panels = _panels(points)
    names = [", ".join(f"{k}={v:g}" for k, v in p["point"].items()) for p in points]
    header = ["statistic", *(f"[{n}]({p['folder']}/report.md)" for n, p in zip(names, points))]
    rows = [["analysed", *("yes" if p["analysed"] else "no" for p in points)]]
    for panel, series in panels.items():
        for s in series:
            rows.append(
                [
                    f"{panel}: {s}",
                    *(fmt(p["statistics"][panel].get(s, float("nan"))) if p["analysed"] else "—" for p in points),
                ]
            )
    skipped = [f"{n}: {p['reason']}" for n, p in zip(names, points) if not p["analysed"]]
    r = Report(f"{title}: a hyperparameter sweep")
    if command:
        r.text(f"Command: `{command}`")
    r.text(
        f"Grid: {', '.join(f'{k} in {v}' for k, v in axes.items())}; {summary['grid']['seeds']} "
        "seeds per grid point, every point trained in one ensemble (member g*S+s = grid point g, "
        "seed s; equal to member s of a plain run with that point's values).",
        "Each grid point is analysed as its own ensemble by the study's unchanged analysis; its "
        "report (linked in the table's header) names its analysed window, whether that window is "
        "stationary, and the rules behind every sentence. The table and the figure repeat each "
        "point's headline numbers; they are not tested against each other here, so read a "
        "difference between points against the intervals in the points' own reports.",
    )
    r.table(header, rows)
    if skipped:
        r.text("Not analysed:")
        r.bullets(skipped)
    if figures is None:
        figures = captions(FIGURES, Drawn(summary, title))
    for name, caption in figures.items():
        r.figure(name, caption)
    return r


def run(
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
    title: str | None = None,
) -> SweepResult:
    """Record the sweep ``config`` with ``study.record_runs``, analyse every grid point and write the
    sweep's summary.json, figures/statistics and report.md into ``out`` (see the module docstring)."""
    if not config.sweep_axes():
        raise ValueError("nothing to sweep: give a list of values, e.g. --lr 0.01,0.1")
    out = Path(out)
    runs = study.record_runs(
        config, settings, out, resume=resume, overwrite=overwrite, command=command, progress=progress, dataset=dataset
    )
    points = analyse_points(study, runs, config, settings, out, command=command, progress=progress, dataset=dataset)
    summary = {
        "experiment": study.EXPERIMENT,
        "sweep": True,
        "grid": {"axes": config.sweep_axes(), "seeds": config.seeds, "points": config.grid()},
        "settings": settings.to_dict() if hasattr(settings, "to_dict") else dataclasses.asdict(settings),
        "points": points,
    }
    write_summary(out, summary)
    drawn = Drawn(summary, title or study.EXPERIMENT)
    report(summary, command, drawn.title, save_figures(FIGURES, drawn, out / "figures")).write(out)
    return SweepResult(out, summary)


def describe(out, summary: dict) -> list[str]:
    """Lines a command prints after a sweep: one per grid point (its folder, or why it was not
    analysed) and the report."""
    out = Path(out)
    lines = [f"sweep: {out} ({len(summary['points'])} grid points x {summary['grid']['seeds']} seeds)"]
    for p in summary["points"]:
        values = ", ".join(f"{k}={v:g}" for k, v in p["point"].items())
        lines.append(
            f"  {values}: " + (f"{out / p['folder']}/report.md" if p["analysed"] else f"not analysed: {p['reason']}")
        )
    lines.append(f"report: {out}/report.md")
    return lines
