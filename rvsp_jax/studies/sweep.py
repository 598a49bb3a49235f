"""A hyperparameter sweep in one compiled ensemble, each grid point analysed as its own ensemble.

    python -m experiments.sweep --lr 0.01,0.03,0.1,0.3 --seeds 64          # ~2-3 min on 2 cores
    python -m experiments.sweep --optimizer sgd --opt-kwargs '{"momentum": [0.0, 0.5, 0.9]}' --lr 0.05

A list of values for ``--lr`` or for a float key of ``--opt-kwargs`` makes a grid (the Cartesian
product, first axis slowest); the whole grid x ``--seeds`` trains in one ensemble (the values sit in
the optimizer state, ``optax.inject_hyperparams``: no recompilation per value) with members ordered
grid-major, member ``g * S + s`` being grid point g and seed s, which equals member s of a plain run
at grid point g (tests/test_sweep.py). The recorded parameter updates of each grid point are then
analysed as an ensemble of S members:

- **ergodicity in the mean** (:func:`rvsp_jax.analysis.assess_many`): the fraction of update
  processes called ergodic / non-ergodic / non-stationary / inconclusive, and the median variance
  ratio (between-member variance of the time average over its ergodic expectation);
- **smooth vs jittery** (:func:`rvsp_jax.analysis.welch`, :func:`band_power_ratio`): the median
  over parameters of the ensemble-mean update PSD's low/high band power ratio (white noise gives 1);
- **tails along iterations** (:func:`rvsp_jax.analysis.tail_verdict`): the fraction of (member,
  parameter) update series called gaussian / heavy-tailed / infinite-variance / inconclusive, and
  the median Hill tail index: the figure of Simsekli et al. (2019), "A Tail-Index Analysis of
  Stochastic Gradient Noise in Deep Neural Networks" (ICML), tail index against learning rate, with
  a calibrated verdict instead of a raw index (docs/calibration.md).

All three use the same window: the steps after ``--burn-in``. Diverged members are excluded and
counted per grid point; a grid point with fewer than 4 members left is reported, not analysed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from rvsp_jax.analysis import assess_many, band_power_ratio, tail_verdict, welch
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.io import atomic, record
from rvsp_jax.present import plots
from rvsp_jax.present.report import fmt, markdown_table, write_summary
from rvsp_jax.studies.figures import save_figures
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.studies.windows import burn_in_steps, check_burn_in
from rvsp_jax.training import devices
from rvsp_jax.training.probes import ProbeConfig

EXPERIMENT = "sweep"
TITLE = "Hyperparameter sweep"
FOLDER = "run"
SWEEPS_ITSELF = True
TRAIN_DEFAULTS = {"seeds": 32, "steps": 2000}
ERGODICITY = ("ergodic", "non-ergodic", "non-stationary", "inconclusive")
TAILS = ("gaussian", "heavy-tailed", "infinite-variance", "inconclusive")
SMOOTH_RATIO = 2.0
"""A grid point's updates are called smooth when the median band ratio exceeds this, jittery below
its inverse, and near-white between (the same rule as the spectra study's smooth-vs-jittery)."""
MIN_MEMBERS = 4


@dataclass(frozen=True)
class SweepSettings(StudySettings):
    """What the sweep records and analyses (the training flags, lists included, are separate)."""

    probe_index: str = opt(
        "16",
        "--probe-index",
        "update processes recorded: K per parameter array, total=N, all, or names like 'Dense_0/kernel[412,3]'",
    )
    burn_in: float = opt(0.25, "--burn-in", "fraction of the steps left out of every analysis")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (clipped to the window)")
    alpha: float = opt(0.05, "--alpha", "level of the ergodicity and tail tests")

    def __post_init__(self):
        check_burn_in(self.burn_in)
        if self.nperseg < 8 or not 0 < self.alpha < 1:
            raise ValueError(f"nperseg must be >= 8 and alpha in (0, 1), got {self.nperseg}, {self.alpha}")
        ProbeConfig(index=self.probe_index)  # syntax check

    def probes(self) -> ProbeConfig:
        return ProbeConfig(probes="updates", index=self.probe_index, every=1)


def _fractions(verdicts: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    n = verdicts.size
    return {v: float(np.sum(verdicts == v) / n) if n else float("nan") for v in names}


def analyse_point(x: np.ndarray, burn: int, settings: SweepSettings) -> dict:
    """The numbers of one grid point. x: [S, P, T] float updates of its members (NaN where a member
    diverged); returns a JSON-ready dict."""
    finite = np.isfinite(x).all(axis=(1, 2))
    out = {"members": int(x.shape[0]), "diverged": int((~finite).sum())}
    if finite.sum() < MIN_MEMBERS:
        return {
            **out,
            "analysed": False,
            "reason": f"{int(finite.sum())} members left after divergence (need {MIN_MEMBERS})",
        }
    w = x[finite][:, :, burn:].astype(np.float64)  # [S', P, T_w]
    erg = assess_many(x[finite], burn_in=burn, alpha=settings.alpha, rng=0, describe=False)
    verdicts = np.asarray(erg.verdict)
    freqs, psd = welch(w, nperseg=min(settings.nperseg, w.shape[-1]))
    ratio = band_power_ratio(freqs, psd.mean(axis=0))  # [P]: ensemble-mean PSD per parameter
    varying = w.std(axis=-1) > 0  # [S', P]: series with any change (a dead unit never updates)
    tails = tail_verdict(w[varying], alpha=settings.alpha)
    med = float(np.nanmedian(ratio))
    return {
        **out,
        "analysed": True,
        "parameters": int(w.shape[1]),
        "window_steps": int(w.shape[-1]),
        "ergodicity": _fractions(verdicts, ERGODICITY),
        "variance_ratio_median": float(np.nanmedian(np.asarray(erg.ratio))),
        "band_ratio_median": med,
        "band_ratio_iqr": [float(np.nanpercentile(ratio, 25)), float(np.nanpercentile(ratio, 75))],
        "updates": "smooth" if med > SMOOTH_RATIO else "jittery" if med < 1 / SMOOTH_RATIO else "near-white",
        "tails": _fractions(np.asarray(tails.verdict), TAILS),
        "tail_series": int(varying.sum()),
        "constant_series": int((~varying).sum()),
        "tail_index_median": float(np.nanmedian(np.asarray(tails.tail_index))) if varying.any() else float("nan"),
    }


def analyse(run, settings: SweepSettings) -> dict:
    """Every grid point of the recorded sweep ``run`` (a :class:`~rvsp_jax.io.store.Run`)."""
    updates = np.asarray(run["updates"][...])  # [members, T, P]
    T = updates.shape[1]
    burn = burn_in_steps(settings.burn_in, T)
    if T - burn < 64:
        raise ValueError(
            f"the analysed window has {T - burn} steps (of {T}, burn-in {burn}); it needs "
            "at least 64: give more --steps or a smaller --burn-in"
        )
    loss = np.asarray(run["metrics/loss"][...])
    points = []
    for g, members in run.groups.items():
        x = updates[members].transpose(0, 2, 1)
        numbers = analyse_point(x, burn, settings)
        tail_loss = loss[members][:, burn:]
        ok = np.isfinite(tail_loss).all(axis=1)
        numbers["loss_window_mean"] = float(tail_loss[ok].mean()) if ok.any() else float("nan")
        points.append({"point": run.grid[g], **numbers})
    if not any(p["analysed"] for p in points):
        raise ValueError(
            "no grid point has 4 or more members left (every one diverged): lower the "
            "largest learning rate of the sweep, or add --seeds"
        )
    return {
        "window": {"from_step": burn, "to_step": T, "steps": T - burn},
        "axes": run.manifest["grid"]["axes"],
        "seeds": run.config.seeds,
        "points": points,
    }


def _x_axis(analysis: dict) -> tuple[str, list[float], list[list[int]], list[str]]:
    """The first swept axis (x), its values, and the grid points of each line (one per combination
    of the other axes) with their labels."""
    axes = analysis["axes"]
    name = next(iter(axes))
    others = [k for k in axes if k != name]
    lines: dict[tuple, list[int]] = {}
    for i, p in enumerate(analysis["points"]):
        lines.setdefault(tuple(p["point"][k] for k in others), []).append(i)
    labels = [", ".join(f"{k}={v:g}" for k, v in zip(others, key)) or None for key in lines]
    return name, axes[name], list(lines.values()), labels


def figure(analysis: dict):
    """Verdict fractions, band ratio and tail index against the first swept hyperparameter."""
    name, values, lines, labels = _x_axis(analysis)
    fig, axes = plots.subplots(1, 4, width="double", height=2.2)
    logx = min(values) > 0 and max(values) / min(values) >= 10
    for line, label, color in zip(lines, labels, plots.PALETTE):
        pts = [analysis["points"][i] for i in line]
        xs = [p["point"][name] for p in pts]
        get = lambda f: [f(p) if p["analysed"] else np.nan for p in pts]  # noqa: B023, E731
        for verdict, style in zip(("ergodic", "non-ergodic", "non-stationary"), ("-", "--", ":")):
            axes[0].plot(
                xs,
                get(lambda p: p["ergodicity"][verdict]),  # noqa: B023
                style,
                color=color,
                marker="o",
                markersize=3,
                label=f"{verdict}" + (f" ({label})" if label else ""),
            )
        axes[1].plot(xs, get(lambda p: p["band_ratio_median"]), "-o", color=color, markersize=3, label=label)
        for verdict, style in zip(("heavy-tailed", "infinite-variance"), ("-", "--")):
            axes[2].plot(
                xs,
                get(lambda p: p["tails"][verdict]),  # noqa: B023
                style,
                color=color,
                marker="o",
                markersize=3,
                label=verdict + (f" ({label})" if label else ""),
            )
        axes[3].plot(xs, get(lambda p: p["tail_index_median"]), "-o", color=color, markersize=3, label=label)
    axes[1].axhline(1.0, color="0.6", linewidth=0.6)
    axes[3].axhline(2.0, color="0.6", linewidth=0.6)
    titles = (
        "ergodicity verdicts (fraction)",
        "band ratio low/high (median)",
        "tail verdicts (fraction)",
        "Hill tail index (median)",
    )
    for ax, title in zip(axes, titles):
        ax.set_xlabel(name)
        ax.set_title(title, fontsize=7)
        if logx:
            ax.set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(ScalarFormatter())
    axes[1].yaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(fontsize=5)
    axes[2].legend(fontsize=5)
    return fig


FIGURES = {
    "sweep": (
        "Ergodicity verdict fractions, update band-power ratio and tail index of every grid "
        "point against the first swept hyperparameter.",
        figure,
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


def report(analysis: dict, command: str | None) -> str:
    """report.md: the grid, the window, the rules, one row per grid point."""
    w = analysis["window"]
    axes = analysis["axes"]
    rows = []
    for p in analysis["points"]:
        point = ", ".join(f"{k}={v:g}" for k, v in p["point"].items())
        if not p["analysed"]:
            rows.append([point, p["members"], p["diverged"], "—", "—", "—", "—", p["reason"]])
            continue
        e, t = p["ergodicity"], p["tails"]
        rows.append(
            [
                point,
                p["members"],
                p["diverged"],
                fmt(p["loss_window_mean"]),
                " / ".join(f"{e[v]:.0%}" for v in ERGODICITY),
                fmt(p["variance_ratio_median"]),
                f"{fmt(p['band_ratio_median'])} ({p['updates']})",
                " / ".join(f"{t[v]:.0%}" for v in TAILS) + f"; Hill {fmt(p['tail_index_median'])}",
            ]
        )
    lines = [
        "# Hyperparameter sweep",
        "",
        f"Command: `{command}`" if command else "",
        "",
        f"Grid: {', '.join(f'{k} in {v}' for k, v in axes.items())}; {analysis['seeds']} seeds per grid "
        "point, all trained in one ensemble (member g*S+s = grid point g, seed s; equal to member s of "
        "a plain run at that point).",
        f"Analysed window: steps {w['from_step']}-{w['to_step']} ({w['steps']} steps) of the recorded "
        "parameter updates; each grid point is its own ensemble. The ergodicity verdict checks the "
        'window\'s stationarity itself (variance drift): "non-stationary" counts the processes whose '
        "window it rejects.",
        "",
        "Rules: ergodicity verdicts are those of `assess_many` (a long-run-variance ANOVA with measured "
        "size and power, docs/calibration.md); tail verdicts are those of `tail_verdict` (calibrated "
        "in docs/calibration.md); updates are *smooth* when the median over parameters of the "
        f"ensemble-mean PSD's low/high band power ratio exceeds {SMOOTH_RATIO:g}, *jittery* below "
        f"1/{SMOOTH_RATIO:g}, *near-white* between. A grid point with fewer than {MIN_MEMBERS} members "
        "left after divergence is not analysed.",
        "",
        markdown_table(
            [
                "grid point",
                "S",
                "diverged",
                "loss (window)",
                "ergodic / non-ergodic / non-stationary / inconclusive",
                "variance ratio",
                "band ratio",
                "gaussian / heavy / infinite-var / inconclusive",
            ],
            rows,
        ),
        "",
        "![sweep](figures/sweep.png)",
        "",
    ]
    return "\n".join(lines)


def record_runs(
    config: TrainConfig,
    settings: SweepSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
):
    """Train and record the sweep in ``out`` (or reuse it with ``resume``)."""
    if not config.sweep_axes():
        raise ValueError(
            "nothing to sweep: give a list of values, e.g. --lr 0.01,0.1 or --opt-kwargs '{\"momentum\": [0.5, 0.9]}'"
        )
    return record.run(
        config,
        settings.probes(),
        Path(out),
        resume=resume,
        overwrite=overwrite,
        dataset=dataset,
        experiment=EXPERIMENT,
        command=command,
        progress=progress,
    )


def write_results(
    run,
    settings: SweepSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
    training_s: float | None = None,
) -> dict:
    """Analyse every grid point of the recorded sweep ``run`` and write ``summary.json``,
    ``report.md`` and ``figures/sweep.{png,pdf}`` into ``folder``; returns the summary."""
    folder = Path(folder)
    analysis = analyse(run, settings)
    summary = {"settings": dataclasses.asdict(settings), **analysis}
    write_summary(folder, summary)
    save_figures(FIGURES, analysis, folder / "figures")
    text = report(analysis, command)
    if devices.is_writer():  # process 0 writes (write_summary and save_figure check it themselves)
        atomic.write_text(folder / "report.md", text)
    return summary
