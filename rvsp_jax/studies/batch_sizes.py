"""Tail index against learning rate *and* batch size: lr sweeps at several batch sizes, gathered.

Batch size changes array shapes, so it cannot be a member (vmap) axis like the learning rate: each
batch size is its own sweep run (``python -m experiments.sweep --lr ... --batch-size B``), and this
module gathers their ``summary.json`` files into one table, one report and the figures of Simsekli
et al. (2019), "A Tail-Index Analysis of Stochastic Gradient Noise in Deep Neural Networks" (ICML):
the tail index against the learning rate (one line per batch size), against the batch size (one
line per learning rate) and against lr/B.

``python -m experiments.reproduce --only sweep --batch-sizes 32,128`` runs the sweeps and gathers
them into ``<out>/batch_sizes/``. With sweep runs of your own::

    from rvsp_jax.studies.batch_sizes import gather
    gather(["results/sweep/b32", "results/sweep/b128"], "results/batch_sizes")

:func:`gather` only reads: each folder's ``manifest.json`` (its batch size and configuration) and
``summary.json`` (the numbers of each grid point, as :mod:`rvsp_jax.studies.sweep` wrote them);
it writes ``summary.json``, ``report.md`` and ``figures/tail_index.{png,pdf}`` and
``figures/tail_verdicts.{png,pdf}`` in ``out``. The runs must share the learning-rate grid, the
seeds (count, base seed, what varies) and must each have a different batch size; anything else
that differs between them (optimizer, steps, ...) is listed in the report, not refused.

The sentence of the report follows a stated rule (:data:`ALPHA`, :func:`trend`): the Spearman rank
correlation between log(lr/B) and the median Hill tail index over every analysed (batch size, lr)
cell, with an exact permutation p-value (random permutations beyond 8 cells). The tail index
*falls* (heavier tails, the direction Simsekli et al. report) as lr/B grows when rho < 0 and
p < ALPHA, *rises* when rho > 0 and p < ALPHA, and the result is *inconclusive* otherwise: the
differences are then inside the cells' scatter around a monotone trend.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
from scipy import stats

from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, pct, write_summary

ALPHA = 0.05
"""Level of the permutation test of the trend of the tail index against lr/B."""
MAX_EXACT = 8
"""Up to this many cells the permutation p-value enumerates every permutation."""
SAME = ("seeds", "base_seed", "vary")
"""Configuration keys the gathered runs must share (besides the lr grid)."""
IGNORED = {"batch_size", "sweep", "lr", "chunk", "block", "data_dir"}
"""Configuration keys not compared (the batch size differs by design; the others do not change
the numbers)."""


class GatherError(ValueError):
    """Sweep folders that cannot be gathered (one-line message)."""


def _read(folder: Path) -> tuple[dict, dict]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GatherError(
            f"{folder} is not an analysed sweep run folder (manifest.json and summary.json needed): {e}"
        ) from None
    if "points" not in summary or "axes" not in summary:
        raise GatherError(f"{folder}/summary.json has no grid points: not a sweep run")
    return manifest, summary


def load(folders) -> list[dict]:
    """The runs of ``folders`` sorted by batch size, validated (:class:`GatherError` otherwise):
    each ``{"folder", "batch_size", "config", "summary"}``."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise GatherError("no sweep folders to gather")
    runs = []
    for folder in folders:
        manifest, summary = _read(folder)
        config = manifest.get("config", {})
        if manifest.get("status") != "complete":
            raise GatherError(
                f"{folder} is not complete (status {manifest.get('status')!r}): finish it with --resume first"
            )
        axes = summary["axes"]
        if list(axes) != ["lr"]:
            raise GatherError(
                f"{folder} sweeps {', '.join(axes)}; gathering needs sweeps over the learning rate only (--lr a,b,c)"
            )
        runs.append({"folder": folder, "batch_size": int(config["batch_size"]), "config": config, "summary": summary})
    runs.sort(key=lambda r: r["batch_size"])
    for a, b in zip(runs, runs[1:]):
        if a["batch_size"] == b["batch_size"]:
            raise GatherError(
                f"two runs have batch size {a['batch_size']} ({a['folder']}, "
                f"{b['folder']}); each batch size must be one run"
            )
    first = runs[0]
    for r in runs[1:]:
        if r["summary"]["axes"]["lr"] != first["summary"]["axes"]["lr"]:
            raise GatherError(
                f"the runs must share the lr grid: {first['folder']} has "
                f"{first['summary']['axes']['lr']}, {r['folder']} has "
                f"{r['summary']['axes']['lr']}"
            )
        for key in SAME:
            if r["config"].get(key) != first["config"].get(key):
                raise GatherError(
                    f"the runs must share the seeds: {key} is "
                    f"{first['config'].get(key)!r} in {first['folder']} and "
                    f"{r['config'].get(key)!r} in {r['folder']}"
                )
    return runs


def _differences(runs: list[dict]) -> dict[str, list]:
    """Configuration keys (other than the batch size) whose value differs between the runs."""
    keys = sorted(set().union(*(r["config"] for r in runs)) - IGNORED)
    return {
        k: [r["config"].get(k) for r in runs]
        for k in keys
        if len({json.dumps(r["config"].get(k), sort_keys=True) for r in runs}) > 1
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``; NaN for constant input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def trend(x, y, *, n_perm: int = 20000, seed: int = 0) -> dict:
    """Spearman rho between ``x`` and ``y`` and its two-sided permutation p-value
    (``scipy.stats.permutation_test`` over pairings: exact up to :data:`MAX_EXACT` points, else
    ``n_perm`` random permutations from ``default_rng(seed)``), with the verdict ``falls`` /
    ``rises`` / ``inconclusive`` at level :data:`ALPHA`. Size and power: docs/calibration.md."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    rho = _spearman(x, y) if n >= 3 else float("nan")
    if not math.isfinite(rho):
        return {"cells": n, "rho": rho, "p": float("nan"), "verdict": "inconclusive"}
    rx = stats.rankdata(x)
    rx = rx - rx.mean()

    def rho_of(yy, axis=-1):  # Spearman's rho of x with each resample of y (vectorised)
        ry = np.moveaxis(stats.rankdata(yy, axis=axis), axis, -1)
        ry = ry - ry.mean(-1, keepdims=True)
        return (ry @ rx) / np.sqrt((ry**2).sum(-1) * (rx**2).sum())

    res = stats.permutation_test(
        (y,),
        rho_of,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=math.factorial(n) if n <= MAX_EXACT else n_perm,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    p = float(res.pvalue)
    verdict = ("falls" if rho < 0 else "rises") if p < ALPHA else "inconclusive"
    return {"cells": n, "rho": rho, "p": p, "verdict": verdict}


def _cells(runs: list[dict]) -> list[dict]:
    cells = []
    for r in runs:
        for p in r["summary"]["points"]:
            lr = float(p["point"]["lr"])
            cell = {
                "batch_size": r["batch_size"],
                "lr": lr,
                "lr_over_b": lr / r["batch_size"],
                "members": p["members"],
                "diverged": p["diverged"],
                "analysed": p["analysed"],
            }
            if p["analysed"]:
                cell.update(
                    {
                        k: p.get(k)
                        for k in (
                            "tails",
                            "tail_index_median",
                            "tail_series",
                            "ergodicity",
                            "variance_ratio_median",
                            "band_ratio_median",
                            "updates",
                            "loss_window_mean",
                            "window_steps",
                        )
                    }
                )
            else:
                cell["reason"] = p.get("reason")
            cells.append(cell)
    return cells


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def analyse(runs: list[dict]) -> dict:
    """The gathered numbers: one cell per (batch size, lr), the trends, the windows and sources."""
    cells = _cells(runs)
    use = [c for c in cells if c["analysed"] and _finite(c.get("tail_index_median"))]
    overall = trend([math.log(c["lr_over_b"]) for c in use], [c["tail_index_median"] for c in use])
    lrs = runs[0]["summary"]["axes"]["lr"]

    def sign(xs, ys):
        ok = [(a, b) for a, b in zip(xs, ys) if _finite(b)]
        if len(ok) < 2:
            return None
        return (
            _spearman(np.array([a for a, _ in ok]), np.array([b for _, b in ok]))
            if len(ok) > 2
            else float(np.sign(ok[1][1] - ok[0][1]) * np.sign(ok[1][0] - ok[0][0]))
        )

    by_b = {
        r["batch_size"]: sign(
            [c["lr"] for c in cells if c["batch_size"] == r["batch_size"]],
            [c.get("tail_index_median") for c in cells if c["batch_size"] == r["batch_size"]],
        )
        for r in runs
    }
    by_lr = {
        lr: sign(
            [c["batch_size"] for c in cells if c["lr"] == lr],
            [c.get("tail_index_median") for c in cells if c["lr"] == lr],
        )
        for lr in lrs
    }
    return {
        "batch_sizes": [r["batch_size"] for r in runs],
        "lr": lrs,
        "seeds": runs[0]["config"].get("seeds"),
        "windows": {str(r["batch_size"]): r["summary"]["window"] for r in runs},
        "sources": {str(r["batch_size"]): str(r["folder"]) for r in runs},
        "differences": _differences(runs),
        "rule": {
            "statistic": "median Hill tail index of a cell (over its members x parameters)",
            "test": "Spearman rank correlation of log(lr/B) and the tail index over the "
            "analysed cells, two-sided permutation p-value",
            "alpha": ALPHA,
        },
        "trend_lr_over_b": overall,
        "rho_tail_index_vs_lr_by_batch_size": {str(k): v for k, v in by_b.items()},
        "rho_tail_index_vs_batch_size_by_lr": {f"{k:g}": v for k, v in by_lr.items()},
        "cells": cells,
    }


def _tick_labels(values):
    from matplotlib.ticker import FixedFormatter

    return FixedFormatter([f"{v:g}" for v in values])


def _line(ax, xs, ys, label, color):
    ax.plot(xs, [y if _finite(y) else np.nan for y in ys], "-o", color=color, markersize=3, label=label)


def figures(g: dict, folder: Path) -> list[str]:
    """``tail_index`` (vs lr per B, vs B per lr, vs lr/B) and ``tail_verdicts`` (heavy-tailed and
    infinite-variance fractions vs lr/B); returns the names written."""
    cells, bs, lrs = g["cells"], g["batch_sizes"], g["lr"]
    ti = lambda c: c.get("tail_index_median") if c["analysed"] else None  # noqa: E731
    fig, axes = plots.subplots(1, 3, width="double", height=2.3)
    for b, color in zip(bs, itertools.cycle(plots.PALETTE)):
        cs = [c for c in cells if c["batch_size"] == b]
        _line(axes[0], [c["lr"] for c in cs], [ti(c) for c in cs], f"B={b}", color)
        _line(axes[2], [c["lr_over_b"] for c in cs], [ti(c) for c in cs], f"B={b}", color)
    for lr, color in zip(lrs, itertools.cycle(plots.PALETTE)):
        cs = [c for c in cells if c["lr"] == lr]
        _line(axes[1], [c["batch_size"] for c in cs], [ti(c) for c in cs], f"lr={lr:g}", color)
    for ax, xlabel, ticks in zip(axes, ("learning rate", "batch size B", "lr / B"), (lrs, bs, None)):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        if ticks is not None:  # the grid values themselves, plainly written
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(_tick_labels(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axhline(2.0, color="0.6", linewidth=0.6)
        ax.legend(fontsize=5)
    axes[0].set_ylabel("Hill tail index (median)")
    t = g["trend_lr_over_b"]
    axes[2].set_title(f"Spearman rho {fmt(t['rho'])}, p {fmt(t['p'], 2)}: {t['verdict']}", fontsize=6)
    plots.save_figure(fig, folder, "tail_index")

    fig, axes = plots.subplots(1, 2, width="double", height=2.3)
    for b, color in zip(bs, itertools.cycle(plots.PALETTE)):
        cs = [c for c in cells if c["batch_size"] == b]
        for ax, verdict in zip(axes, ("heavy-tailed", "infinite-variance")):
            _line(
                ax,
                [c["lr_over_b"] for c in cs],
                [c["tails"][verdict] if c["analysed"] else None for c in cs],
                f"B={b}",
                color,
            )
    for ax, verdict in zip(axes, ("heavy-tailed", "infinite-variance")):
        ax.set_xscale("log")
        ax.set_xlabel("lr / B")
        ax.set_title(f"fraction of update series called {verdict}", fontsize=7)
        ax.legend(fontsize=5)
    plots.save_figure(fig, folder, "tail_verdicts")
    return ["tail_index", "tail_verdicts"]


def sentence(g: dict) -> str:
    """The finding, by the rule of the module docstring, with the numbers it rests on."""
    t = g["trend_lr_over_b"]
    use = [c for c in g["cells"] if c["analysed"] and _finite(c.get("tail_index_median"))]
    if t["cells"] < 3:
        return (
            f"Inconclusive: only {t['cells']} analysed (batch size, lr) cell(s) with a finite tail "
            "index; the rule needs at least 3."
        )
    lo = min(use, key=lambda c: c["lr_over_b"])
    hi = max(use, key=lambda c: c["lr_over_b"])
    nums = (
        f"Spearman rho = {fmt(t['rho'])} between log(lr/B) and the median tail index over "
        f"{t['cells']} cells, permutation p = {fmt(t['p'], 2)} (level {ALPHA:g}); the tail index is "
        f"{fmt(lo['tail_index_median'])} at the smallest lr/B ({lo['lr_over_b']:.3g}: lr "
        f"{lo['lr']:g}, B {lo['batch_size']}) and {fmt(hi['tail_index_median'])} at the largest "
        f"({hi['lr_over_b']:.3g}: lr {hi['lr']:g}, B {hi['batch_size']})"
    )
    if t["verdict"] == "falls":
        return (
            f"The tail index **falls** as lr/B grows (heavier-tailed updates at larger learning "
            f"rates and smaller batches, the direction Simsekli et al. 2019 report): {nums}."
        )
    if t["verdict"] == "rises":
        return (
            f"The tail index **rises** as lr/B grows (lighter-tailed updates at larger learning "
            f"rates and smaller batches, against the direction Simsekli et al. 2019 report): {nums}."
        )
    return (
        f"**Inconclusive**: the differences in tail index between cells are inside their scatter "
        f"around a monotone trend in lr/B: {nums}."
    )


def report(g: dict, names: list[str], command: str | None = None) -> Report:
    rep = Report("Tail index against learning rate and batch size")
    rep.text(
        f"Lr sweeps at batch sizes {', '.join(map(str, g['batch_sizes']))} (one sweep run each, "
        f"same lr grid {g['lr']} and {g['seeds']} seeds), gathered as the figure of Simsekli et al. "
        '(2019), "A Tail-Index Analysis of Stochastic Gradient Noise in Deep Neural Networks" '
        "(ICML): the tail index of the parameter updates against lr, against B and against lr/B. "
        "The tail verdicts and the Hill tail index are those of each sweep's report "
        "(`tail_verdict`, calibrated in docs/calibration.md)."
    )
    if command:
        rep.text(f"Command: `{command}`")
    rep.section("Finding")
    rep.text(sentence(g))
    rep.text(
        f"Rule: over every analysed (batch size, lr) cell, the Spearman rank correlation rho of "
        f"log(lr/B) and the cell's median Hill tail index, with a two-sided permutation p-value "
        f"(exact up to {MAX_EXACT} cells). The tail index *falls* as lr/B grows when rho < 0 and "
        f"p < {ALPHA:g}, *rises* when rho > 0 and p < {ALPHA:g}; otherwise the result is "
        "*inconclusive*: the differences are inside the cells' spread."
        + (
            f" With {n} cells the smallest attainable p is 2/{math.factorial(n)}."
            if 3 <= (n := g["trend_lr_over_b"]["cells"]) <= MAX_EXACT
            else ""
        )
    )
    by_b = ", ".join(f"B={k}: {fmt(v)}" for k, v in g["rho_tail_index_vs_lr_by_batch_size"].items())
    by_lr = ", ".join(f"lr={k}: {fmt(v)}" for k, v in g["rho_tail_index_vs_batch_size_by_lr"].items())
    rep.text(
        f"Supporting (descriptive, not tested): rank correlation of the tail index with lr at each "
        f"batch size ({by_b}); with B at each lr ({by_lr}). Simsekli et al.'s direction is a "
        "negative correlation with lr and a positive one with B."
    )
    rep.section("Cells")
    rows = []
    for c in g["cells"]:
        head = [str(c["batch_size"]), f"{c['lr']:g}", f"{c['lr_over_b']:.3g}", c["members"], c["diverged"]]
        if not c["analysed"]:
            rows.append(head + ["—", "—", "—", "—", c.get("reason") or "not analysed"])
            continue
        t, e = c["tails"], c["ergodicity"]
        rows.append(
            head
            + [
                fmt(c["tail_index_median"]),
                " / ".join(pct(t[v]) for v in ("gaussian", "heavy-tailed", "infinite-variance", "inconclusive")),
                " / ".join(pct(e[v]) for v in ("ergodic", "non-ergodic", "non-stationary", "inconclusive")),
                f"{fmt(c['band_ratio_median'])} ({c['updates']})",
                fmt(c["loss_window_mean"]),
            ]
        )
    rep.table(
        [
            "B",
            "lr",
            "lr/B",
            "S",
            "diverged",
            "Hill tail index (median)",
            "gaussian / heavy / infinite-var / inconclusive",
            "ergodic / non-ergodic / non-stationary / inconclusive",
            "band ratio",
            "loss (window)",
        ],
        rows,
    )
    windows = "; ".join(
        f"B={b}: steps {w['from_step']}-{w['to_step']} ({w['steps']} steps)" for b, w in g["windows"].items()
    )
    rep.text(f"Analysed windows (after each sweep's burn-in): {windows}.")
    if g["differences"]:
        rep.text(
            "Other configuration that differs between the runs: "
            + "; ".join(f"{k}: {v}" for k, v in g["differences"].items())
            + "."
        )
    rep.section("Figures")
    rep.figure(
        names[0],
        "Median Hill tail index against lr (one line per B), against B (one line "
        "per lr) and against lr/B; grey: 2, the infinite-variance boundary",
    )
    rep.figure(names[1], "Fraction of update series called heavy-tailed and infinite-variance against lr/B")
    rep.section("Sources")
    rep.bullets(
        f"B={b}: [{Path(src).name}]({os.path.relpath(src, g['out'])}/report.md) (`{src}`)"
        for b, src in g["sources"].items()
    )
    return rep


def gather(folders, out, *, command: str | None = None) -> Path:
    """Gather the sweep run ``folders`` (one per batch size, sharing the lr grid and the seeds) into
    ``out``: ``summary.json``, ``report.md`` and ``figures/``; returns ``out``. Raises
    :class:`GatherError` (a ``ValueError``) with a one-line message when they cannot be gathered."""
    runs = load(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = {**analyse(runs), "out": str(out)}
    names = figures(g, out / "figures")
    write_summary(out, {k: v for k, v in g.items() if k != "out"})
    report(g, names, command).write(out)
    return out
