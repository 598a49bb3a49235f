"""Section 2 of the RVSP study: hidden activations as transformed random variables, over training.

    python -m experiments.activations --seeds 16 --epochs 2 --activation sigmoid

An ensemble is trained with the activation probe (:mod:`rvsp_jax.training.probes`): every ``--probe-every``
steps each member's pre-activations z and activations y = phi(z) of every hidden unit on a fixed batch
of B test images are recorded, with the layer summaries (mean, variance, and the saturated fraction
for sigmoid/tanh or the zero and dead fractions for ReLU). For each unit of each member, the B values
at a step are a sample of the unit's activation distribution on the data; the study reports

- its quantiles over training (per unit, and pooled over a layer's units);
- its drift from step 0 as the 1-Wasserstein distance between the step-t and step-0 samples,
  averaged over the layer's units, with a band across members;
- the stationarity (ADF + KPSS) of the activation statistics (each unit's batch mean, each layer
  summary) separately in each phase of training (equal thirds of the recorded steps by default);
- the saturated (sigmoid, tanh) or zero/dead (ReLU) fractions over training.

Members that diverged are excluded from every number and counted. Pure numerics
(:func:`wasserstein_1d`, :func:`drift_from_start`, :func:`phase_bounds`) are separate from the
reading of the run (:func:`analyse`), the figures and the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.analysis import (
    STATIONARITY_VERDICTS,
    MemberSummary,
    across_members,
    verdict_fractions,
)
from rvsp_jax.analysis.stationarity import _stationarity_codes_of
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import Dataset, load
from rvsp_jax.io import record, store
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, pct, progress_enabled, proportion_summary, write_summary
from rvsp_jax.studies.figures import save_figures
from rvsp_jax.studies.members import diverged_members, summary_series
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.studies.windows import phase_bounds, phase_names
from rvsp_jax.training.probes import ProbeConfig

EXPERIMENT = "activations"
TITLE = "Activations"
FOLDER = "run"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
UNITS_SHOWN = 4
"""Units per layer drawn in the per-unit quantile figure."""
BLOCK_ELEMENTS = 1 << 25
"""Float32 elements of the recording read at once (128 MiB): members are analysed in blocks."""
PROPORTION_STATS = ("saturated", "zero", "dead")
"""Layer statistics that are fractions: percentile-bootstrap intervals across members (inside [0, 1])."""
STATIONARY_ACCEPT = 0.8
"""A series family is called stationary in a phase when at least this fraction of its series are
judged stationary (ADF + KPSS, Benjamini-Hochberg)."""
RULES = {
    "numbers": "distribution, drift and layer-statistic sentences state measured values with their "
    "intervals only; no threshold turns them into words",
    "stationary_phase": f"a family of series is 'stationary' in a phase when at least {STATIONARY_ACCEPT:.0%} "
    "of its series are judged stationary by ADF + KPSS after Benjamini-Hochberg "
    "adjustment, 'mostly non-stationary' when under 50%, otherwise 'mixed'",
    "saturated": "saturated (sigmoid, tanh) means phi'(z) < 19% of its maximum; for ReLU the same rule "
    "gives exactly the 'zero' fraction (phi' = 0)",
    "intervals": "95% Student-t intervals across members; fractions (saturated, zero, dead) use "
    "percentile-bootstrap intervals over members, which stay inside [0, 1]",
}


@dataclass(frozen=True)
class ActivationSettings(StudySettings):
    """Recording and analysis options of the activations study."""

    probe_every: int = opt(10, "--probe-every", "record the activations every n steps")
    probe_batch: int = opt(64, "--probe-batch", "test images in the fixed activation probe batch")
    phases: int = opt(3, "--phases", "equal phases of the recorded steps tested for stationarity separately")
    alpha: float = opt(0.05, "--alpha", "level of the ADF/KPSS tests")

    def __post_init__(self):
        if self.probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {self.probe_every}")
        if self.probe_batch < 2:
            raise ValueError(f"probe_batch must be >= 2 (a distribution needs several samples), got {self.probe_batch}")
        if self.phases < 1:
            raise ValueError(f"phases must be >= 1, got {self.phases}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def probes(self) -> ProbeConfig:
        """What the study records: pre/post activations and the layer summaries."""
        return ProbeConfig(probes="activations,act_summary", every=self.probe_every, batch=self.probe_batch)


# ---- numerics ----------------------------------------------------------------------------------


def wasserstein_1d(a, b, axis: int = -1) -> np.ndarray:
    """1-Wasserstein distance between the empirical distributions of two equal-size samples.

    a, b: samples along ``axis`` (broadcast against each other otherwise) -> float64 with that axis
    removed: ``mean_i |a_(i) - b_(i)|`` over the sorted samples, which for equal sizes is the area
    between the two empirical CDFs. Equals ``scipy.stats.wasserstein_distance(a, b)`` per pair.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[axis] != b.shape[axis]:
        raise ValueError(f"samples must have equal sizes along axis {axis}, got {a.shape} and {b.shape}")
    return np.abs(np.sort(a, axis=axis) - np.sort(b, axis=axis)).mean(axis=axis)


def drift_from_start(y) -> np.ndarray:
    """Wasserstein-1 drift of every unit's activation distribution from the first step.

    y: ``[..., T, B, h]`` (T steps, B probe examples, h units) -> float64 ``[..., T, h]``: the distance
    between the B values of unit u at step t and at step 0 (0 at t = 0).
    """
    y = np.asarray(y)
    if y.ndim < 3:
        raise ValueError(f"y must be [..., T, B, h], got shape {y.shape}")
    return wasserstein_1d(y, y[..., :1, :, :], axis=-2)


# ---- reading a run -----------------------------------------------------------------------------


def hidden_layers(config: TrainConfig) -> tuple[str, ...]:
    return tuple(f"Dense_{l}" for l in range(len(config.widths)))


def _nan_members(x: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """``x: [S, ...]`` as float64 with the excluded members' rows NaN (so summaries leave them out)."""
    x = np.array(x, np.float64)
    x[excluded] = np.nan
    return x


class LayerActivations(NamedTuple):
    """One hidden layer's activation distributions over training (members ``[S]``, recorded steps ``[T]``).

    quantiles: [S, T, Q] of the activations pooled over the layer's units and the probe batch.
    unit_quantiles: [S, T, h, Q] of each unit over the probe batch.
    drift: [S, T, h] Wasserstein-1 distance of each unit's distribution from step 0.
    unit_mean: [S, T, h] each unit's mean over the probe batch.
    start, end: pre- and post-activations ``{"pre": [S, B, h], "post": [S, B, h]}`` at the first and
      the last recorded step (for histograms).
    """

    quantiles: np.ndarray
    unit_quantiles: np.ndarray
    drift: np.ndarray
    unit_mean: np.ndarray
    start: dict
    end: dict


def read_layers(run: store.Run, *, progress: bool = True) -> dict[str, LayerActivations]:
    """Per-layer distributions of a run's recorded activations, read in blocks of members."""
    config = run.config
    b = run.layout.probe_batch.size
    post, pre = run["activations/post"], run["activations/pre"]
    s_all, t_all, p_all = post.shape
    per_block = max(1, BLOCK_ELEMENTS // (t_all * p_all))
    q = np.asarray(QUANTILES)
    out = {name: {k: [] for k in LayerActivations._fields} for name in hidden_layers(config)}
    bounds = np.cumsum([0, *[b * h for h in config.widths]])
    for s0 in tqdm(range(0, s_all, per_block), desc="reading activations", disable=not progress_enabled(progress)):
        block = np.asarray(post[s0 : s0 + per_block])  # [s, T, P]
        pre_ends = {
            "start": np.asarray(pre[s0 : s0 + per_block, 0]),
            "end": np.asarray(pre[s0 : s0 + per_block, t_all - 1]),
        }
        for l, (name, h) in enumerate(zip(out, config.widths)):
            lo, hi = bounds[l], bounds[l + 1]
            y = block[..., lo:hi].reshape(*block.shape[:2], b, h)  # [s, T, B, h]
            acc = out[name]
            acc["quantiles"].append(np.moveaxis(np.quantile(y.reshape(*y.shape[:2], -1), q, axis=-1), 0, -1))
            acc["unit_quantiles"].append(np.moveaxis(np.quantile(y, q, axis=2), 0, -1))
            acc["drift"].append(drift_from_start(y))
            acc["unit_mean"].append(y.mean(2, dtype=np.float64))
            for when, t in (("start", 0), ("end", t_all - 1)):
                acc[when].append({"pre": pre_ends[when][:, lo:hi].reshape(-1, b, h), "post": y[:, t]})
    layers = {}
    for name, acc in out.items():
        arrays = {k: np.concatenate(acc[k]) for k in LayerActivations._fields[:4]}
        ends = {
            when: {k: np.concatenate([d[k] for d in acc[when]]) for k in ("pre", "post")} for when in ("start", "end")
        }
        layers[name] = LayerActivations(**arrays, **ends)
    return layers


# ---- analysis ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationAnalysis:
    """``summary`` (numbers, JSON-ready) and the arrays the figures draw."""

    summary: dict
    steps: np.ndarray  # [T] training step of each recorded step
    layers: dict  # name -> LayerActivations
    statistics: dict  # "Dense_0/saturated" -> [S, T] float64, diverged members NaN
    excluded: np.ndarray  # bool [S]


def phase_stationarity(series: dict[str, np.ndarray], bounds, names, excluded, alpha: float) -> dict:
    """ADF + KPSS verdict fractions of every series family in every phase.

    series: family name -> ``[S, ..., T]`` (members first, time last; a family holds S x ... series);
    excluded members are left out. Returns ``{family: {phase: {"raw": fractions, "bh": fractions}}}``
    with BH adjustment over the family's series in that phase (see :func:`verdict_fractions`).
    """
    out = {}
    for family, x in series.items():
        x = np.asarray(x, np.float64)[~excluded]
        out[family] = {}
        for name, (a, b) in zip(names, bounds):
            raw, bh = _stationarity_codes_of(x[..., a:b], alpha)  # int8 codes, compact
            out[family][name] = {"raw": verdict_fractions(raw), "bh": verdict_fractions(bh)}
    return out


def _summary_of(stat: str, x) -> MemberSummary:
    return proportion_summary(x) if stat.split("/")[-1] in PROPORTION_STATS else across_members(x)


def stationarity_word(fraction) -> str:
    """The stationary_phase rule of :data:`RULES`."""
    if fraction is None or not np.isfinite(fraction):
        return "undetermined"
    return "stationary" if fraction >= STATIONARY_ACCEPT else "mostly non-stationary" if fraction < 0.5 else "mixed"


def check_length(recorded_steps: int, phases: int) -> None:
    """Refuse recordings too short for ADF/KPSS in every phase (at least 10 recordings a phase)."""
    if recorded_steps < 10 * phases:
        raise ValueError(
            f"{recorded_steps} recorded steps are too few for {phases} phases of at least "
            "10 (ADF/KPSS); record more steps (--steps/--epochs), a smaller --probe-every "
            "or fewer --phases"
        )


def analyse(run: store.Run, settings: ActivationSettings, *, progress: bool = True) -> ActivationAnalysis:
    """Distributions, drift, phase stationarity and saturation/dead fractions of a recorded run."""
    config = run.config
    excluded = diverged_members(run)
    if excluded.all():
        raise ValueError(
            f"every member of {run.path} diverged ({excluded.size} of {excluded.size}: "
            "non-finite loss or parameters); nothing is left to analyse: lower --lr (or use "
            "a gentler --optimizer) and run again"
        )
    steps = run.steps
    t = steps.size
    check_length(t, settings.phases)
    layers = read_layers(run, progress=progress)
    statistics = {k: _nan_members(v, excluded) for k, v in summary_series(run).items()}
    bounds = phase_bounds(t, settings.phases)
    names = phase_names(settings.phases)
    families = {f"{name}/unit_mean": np.moveaxis(layer.unit_mean, -1, 1) for name, layer in layers.items()}
    families.update(statistics)
    stationarity = phase_stationarity(families, bounds, names, excluded, settings.alpha)

    layer_summary = {}
    for name, layer in layers.items():
        drift = _nan_members(layer.drift.mean(-1), excluded)  # [S, T] mean over units
        quant = _nan_members(layer.quantiles, excluded)
        unit_final = _nan_members(layer.drift[:, -1], excluded)  # [S, h]
        layer_summary[name] = {
            "units": int(layer.drift.shape[-1]),
            "quantiles": {
                "levels": QUANTILES,
                "start": across_members(quant[:, 0]),
                "end": across_members(quant[:, -1]),
            },
            "drift": {
                "end": across_members(drift[:, -1]),
                "middle": across_members(drift[:, t // 2]),
                "max": across_members(drift.max(axis=1)),
                "unit_end_min": across_members(np.min(unit_final, axis=1)),
                "unit_end_max": across_members(np.max(unit_final, axis=1)),
            },
            "statistics": {
                stat.split("/", 1)[1]: {"start": _summary_of(stat, x[:, 0]), "end": _summary_of(stat, x[:, -1])}
                for stat, x in statistics.items()
                if stat.startswith(name + "/")
            },
        }
    accuracy = _nan_members(np.asarray(run.manifest["result"]["test_accuracy"]), excluded)
    summary = {
        "experiment": EXPERIMENT,
        "config": config.to_dict(),
        "probes": run.probe_config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "members": {
            "total": int(excluded.size),
            "diverged": int(excluded.sum()),
            "analysed": int((~excluded).sum()),
            "diverged_ids": np.flatnonzero(excluded),
        },
        "test_accuracy": across_members(accuracy),
        "recorded_steps": t,
        "every": run.layout.every,
        "last_step": int(steps[-1]),
        "probe_batch": int(run.layout.probe_batch.size),
        "phases": {
            "names": names,
            "recorded_ranges": bounds,
            "training_steps": [[int(steps[a]), int(steps[b - 1])] for a, b in bounds],
        },
        "layers": layer_summary,
        "stationarity": stationarity,
        "analysed_window": {
            "recorded_steps": [0, t],
            "training_steps": [int(steps[0]), int(steps[-1])],
            "stationary_by_phase": {
                fam: {p: stationarity_word(st[p]["bh"]["stationary"]) for p in st} for fam, st in stationarity.items()
            },
        },
        "rules": RULES,
    }
    return ActivationAnalysis(summary, steps, layers, statistics, excluded)


# ---- figures -----------------------------------------------------------------------------------


def _quantile_fan(ax, steps, q, color=None, label=None):
    """Quantiles ``q: [T, 5]`` (5, 25, 50, 75, 95%) as two nested bands and a median line."""
    line, _ = plots.plot_band(ax, steps, q[:, 2], q[:, 0], q[:, 4], label=label, color=color, alpha=0.15)
    ax.fill_between(steps, q[:, 1], q[:, 3], color=line.get_color(), alpha=0.3, linewidth=0)
    return line


def figure_activation_quantiles(analysis: ActivationAnalysis):
    a = analysis
    keep = ~a.excluded
    steps = a.steps
    layer_names = list(a.layers)
    nl = len(layer_names)
    fig, axes = plots.subplots(1, nl, width="double", height=2.4, squeeze=False)
    for ax, name in zip(axes[0], layer_names):
        q = np.median(a.layers[name].quantiles[keep], axis=0)
        _quantile_fan(ax, steps, q, label="median")
        ax.set(xlabel="step", ylabel="activation", title=f"{name}: pooled over units")
    axes[0, 0].legend(["median (5-95%, 25-75% bands)"])
    return fig


def figure_unit_quantiles(analysis: ActivationAnalysis):
    a = analysis
    keep = ~a.excluded
    steps = a.steps
    layer_names = list(a.layers)
    nl = len(layer_names)
    member = int(np.flatnonzero(keep)[0]) if keep.any() else 0
    shown = min(UNITS_SHOWN, min(layer.drift.shape[-1] for layer in a.layers.values()))
    fig, axes = plots.subplots(nl, shown, width="double", height=1.6 * nl + 0.4, squeeze=False, sharex=True)
    for i, name in enumerate(layer_names):
        for u in range(shown):
            _quantile_fan(axes[i, u], steps, a.layers[name].unit_quantiles[member, :, u], color=plots.PALETTE[i])
            axes[i, u].set_title(f"{name} unit {u}")
        axes[i, 0].set(ylabel="activation")
    for ax in axes[-1]:
        ax.set(xlabel="step")
    fig.suptitle(f"member {member}: quantiles over the probe batch (5, 25, 50, 75, 95%)")
    return fig


def figure_wasserstein_drift(analysis: ActivationAnalysis):
    a = analysis
    keep = ~a.excluded
    steps = a.steps
    layer_names = list(a.layers)
    nl = len(layer_names)
    fig, axes = plots.subplots(1, nl, width="double", height=2.4, squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[0], layer_names)):
        d = a.layers[name].drift.mean(-1)[keep]
        m = across_members(d)
        plots.plot_members(ax, steps, d, label="members")
        plots.plot_band(ax, steps, m.mean, m.lo, m.hi, label="mean, 95% t-interval", color=plots.PALETTE[j])
        ax.set(xlabel="step", ylabel="W1 from step 0 (unit mean)", title=name)
        ax.legend()
    return fig


def figure_activation_histograms(analysis: ActivationAnalysis):
    a = analysis
    keep = ~a.excluded
    steps = a.steps
    layer_names = list(a.layers)
    nl = len(layer_names)
    fig, axes = plots.subplots(nl, 2, width="double", height=2.0 * nl + 0.3, squeeze=False)
    for i, name in enumerate(layer_names):
        layer = a.layers[name]
        for j, kind in enumerate(("pre", "post")):
            plots.hist_compare(
                axes[i, j],
                layer.start[kind][keep],
                layer.end[kind][keep],
                labels=(f"step {steps[0]}", f"step {steps[-1]}"),
            )
            axes[i, j].set(
                xlabel="z (pre-activation)" if kind == "pre" else "y = phi(z)", ylabel="density", title=f"{name} {kind}"
            )
        axes[i, 0].legend()
    return fig


def figure_layer_statistics(analysis: ActivationAnalysis):
    a = analysis
    steps = a.steps
    layer_names = list(a.layers)
    nl = len(layer_names)
    stats = sorted({k.split("/", 1)[1] for k in a.statistics}, key=["mean", "var", "saturated", "zero", "dead"].index)
    fig, axes = plots.subplots(
        len(stats), nl, width="double", height=1.5 * len(stats) + 0.4, squeeze=False, sharex=True
    )
    for j, name in enumerate(layer_names):
        for i, stat in enumerate(stats):
            x = a.statistics[f"{name}/{stat}"]
            m = across_members(x)
            plots.plot_band(axes[i, j], steps, m.mean, m.lo, m.hi, color=plots.PALETTE[j])
            axes[i, j].set(ylabel=stat, title=name if i == 0 else None)
        axes[-1, j].set(xlabel="step")
    return fig


def figure_stationarity_by_phase(analysis: ActivationAnalysis):
    s = analysis.summary
    st = s["stationarity"]
    rows = list(st)
    cols = list(s["phases"]["names"])
    cells = [[pct(st[r][c]["bh"]["stationary"]) for c in cols] for r in rows]
    fig, ax = plots.subplots(width="double", height=0.3 * len(rows) + 0.8)
    plots.verdict_table(ax, rows, cols, cells)
    ax.set_title("stationary series by phase (ADF + KPSS, BH-adjusted)")
    return fig


FIGURES = {
    "activation_quantiles": (
        "Quantiles of each layer's activations pooled over units and probe images (median "
        "across members of each quantile).",
        figure_activation_quantiles,
    ),
    "unit_quantiles": ("Per-unit distributions over the probe batch for one member.", figure_unit_quantiles),
    "wasserstein_drift": (
        "Wasserstein-1 distance of each unit's activation distribution (over the probe batch)"
        " from its step-0 distribution, averaged over the layer's units; grey: members, band:"
        " 95% t-interval of the mean across members.",
        figure_wasserstein_drift,
    ),
    "activation_histograms": (
        "Pre-activations z and activations y = phi(z) at the first and last recording, pooled"
        " over members, units and probe images: phi transforms the distribution of z into "
        "that of y.",
        figure_activation_histograms,
    ),
    "layer_statistics": (
        "Layer statistics over training (mean across members, 95% t-interval).",
        figure_layer_statistics,
    ),
    "stationarity_by_phase": ("Fraction of series judged stationary in each phase (BH).", figure_stationarity_by_phase),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


# ---- report ------------------------------------------------------------------------------------


def _quantile_text(m: MemberSummary) -> str:
    return f"median {fmt(m.mean[2])}, 5-95% [{fmt(m.mean[0])}, {fmt(m.mean[4])}]"


def report(analysis: ActivationAnalysis, command: str | None = None) -> Report:
    """The markdown report of the activations study."""
    s = analysis.summary
    c, mem = s["config"], s["members"]
    act = c["activation"]
    rep = Report(f"Activations as transformed random variables ({act})")
    rep.text(
        f"S = {mem['total']} members of the {'-'.join(map(str, [784, *c['widths'], 10]))} {act} "
        f"network, {c['optimizer']} lr {c['lr']}, batch {c['batch_size']}, vary={c['vary']}; "
        f"activations recorded every {s['every']} steps ({s['recorded_steps']} recordings, steps "
        f"0-{s['last_step']}) on a fixed probe batch of {s['probe_batch']} test images. "
        f"{mem['diverged']} member(s) diverged and are excluded from every number "
        f"({mem['analysed']} analysed). Intervals are 95% Student-t intervals across members "
        "(fractions: percentile bootstrap)."
    )
    w = s["analysed_window"]
    rep.text(
        f"Analysed window: every recording, steps {w['training_steps'][0]}-{w['training_steps'][1]}, "
        f"with stationarity judged separately in {len(s['phases']['names'])} phase(s) ("
        + ", ".join(f"{n} = steps {a}-{b}" for n, (a, b) in zip(s["phases"]["names"], s["phases"]["training_steps"]))
        + "); the distributions are described over training, not as one stationary distribution."
    )
    rep.section("Rules")
    rep.text("Every sentence of the findings follows from the numbers by one of these rules:")
    rep.bullets([f"{k}: {v}." for k, v in RULES.items()])
    bullets = [f"Test accuracy {fmt_ci(s['test_accuracy'])}."]
    for name, layer in s["layers"].items():
        q0, q1 = layer["quantiles"]["start"], layer["quantiles"]["end"]
        bullets.append(
            f"{name}: activations (pooled over units and probe images) {_quantile_text(q0)} "
            f"at step 0 -> {_quantile_text(q1)} at step {s['last_step']}; W1 drift from step 0, "
            f"mean over units, {fmt_ci(layer['drift']['end'])} at the end "
            f"({fmt_ci(layer['drift']['middle'])} halfway)."
        )
        for stat in ("saturated", "zero", "dead"):
            if stat in layer["statistics"]:
                st = layer["statistics"][stat]
                label = {"saturated": "saturated (phi' < 19% of max)", "zero": "zero (phi' = 0)", "dead": "dead-unit"}[
                    stat
                ]
                bullets.append(
                    f"{name} {label} fraction: {fmt_ci(st['start'])} at step 0 -> {fmt_ci(st['end'])} at the end."
                )
    for fam, by_phase in w["stationary_by_phase"].items():
        bullets.append(
            f"{fam}: "
            + ", ".join(
                f"{p} {word} ({pct(s['stationarity'][fam][p]['bh']['stationary'])} of series)"
                for p, word in by_phase.items()
            )
            + "."
        )
    rep.section("Findings").bullets(bullets)
    rep.section("Distributions over training")
    rep.figure("activation_quantiles", FIGURES["activation_quantiles"][0])
    rep.figure("unit_quantiles", FIGURES["unit_quantiles"][0])
    rep.figure("activation_histograms", FIGURES["activation_histograms"][0])
    rep.section("Drift from initialisation")
    rep.table(
        [
            "layer",
            "units",
            "W1 halfway",
            "W1 at the end",
            "largest W1 over training",
            "least-drifting unit (end)",
            "most-drifting unit (end)",
        ],
        [
            [
                name,
                layer["units"],
                fmt_ci(layer["drift"]["middle"]),
                fmt_ci(layer["drift"]["end"]),
                fmt_ci(layer["drift"]["max"]),
                fmt_ci(layer["drift"]["unit_end_min"]),
                fmt_ci(layer["drift"]["unit_end_max"]),
            ]
            for name, layer in s["layers"].items()
        ],
    )
    rep.figure("wasserstein_drift", FIGURES["wasserstein_drift"][0])
    rep.section("Layer statistics: saturation and dead units")
    rows = [
        [name, stat, fmt_ci(v["start"]), fmt_ci(v["end"])]
        for name, layer in s["layers"].items()
        for stat, v in layer["statistics"].items()
    ]
    rep.table(["layer", "statistic", "step 0", f"step {s['last_step']}"], rows)
    rep.text(
        "saturated: fraction of (probe image, unit) pairs with sigmoid y < 0.05 or y > 0.95 "
        "(tanh |y| > 0.9), i.e. phi'(z) below 19% of its maximum; zero: fraction of pairs with ReLU "
        "y = 0 (phi' = 0, the same rule's count for ReLU); dead: fraction of units that are 0 on "
        "every probe image; mean and var are over the layer's units and probe images."
    )
    rep.figure("layer_statistics", FIGURES["layer_statistics"][0])
    rep.section("Stationarity by phase")
    ph = s["phases"]
    rep.text(
        "Each series (a unit's batch-mean activation, or a layer statistic, per member) is tested "
        "with ADF and KPSS (level, alpha " + str(s["settings"]["alpha"]) + ") separately in each "
        "phase: "
        + ", ".join(f"{n} = steps {a}-{b}" for n, (a, b) in zip(ph["names"], ph["training_steps"]))
        + ". Cells: fraction of "
        "the family's series judged stationary after Benjamini-Hochberg adjustment (raw in "
        "brackets), then unit-root / inconclusive / invalid (BH)."
    )
    st = s["stationarity"]
    rep.table(
        ["series", "series per phase", *ph["names"]],
        [
            [
                fam,
                st[fam][ph["names"][0]]["bh"]["n"],
                *[
                    f"{pct(st[fam][p]['bh']['stationary'])} ({pct(st[fam][p]['raw']['stationary'])}); "
                    + " / ".join(pct(st[fam][p]["bh"][v]) for v in STATIONARITY_VERDICTS[1:])
                    for p in ph["names"]
                ],
            ]
            for fam in st
        ],
    )
    rep.figure("stationarity_by_phase", FIGURES["stationarity_by_phase"][0])
    rep.config({"train": s["config"], "probes": s["probes"], "activations": s["settings"]}, command)
    return rep


def record_runs(
    config: TrainConfig,
    settings: ActivationSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> store.Run:
    """Train and record ``config`` into the run folder ``out`` (or reuse it with ``resume``)."""
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    check_length(-(-config.total_steps(int(data.train_labels.shape[0])) // settings.probe_every), settings.phases)
    return record.run(
        config,
        settings.probes(),
        Path(out),
        resume=resume,
        overwrite=overwrite,
        dataset=data,
        experiment=EXPERIMENT,
        command=command,
        progress=progress,
    )


def write_results(
    run: store.Run,
    settings: ActivationSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    training_s: float | None = None,
) -> dict:
    """Analyse ``run`` (a plain run or one grid point of a sweep) and write summary.json, report.md
    and figures/ into ``folder``; returns the summary."""
    return _write(analyse(run, settings, progress=progress), folder, command).summary


def _write(analysis: ActivationAnalysis, folder, command: str | None) -> ActivationAnalysis:
    folder = Path(folder)
    write_summary(folder, analysis.summary)
    save_figures(FIGURES, analysis, folder / "figures")
    report(analysis, command).write(folder)
    return analysis


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`): per hidden layer,
    the across-member mean at the last recording of every per-layer statistic (saturated, zero and
    dead fractions, ...) and of the Wasserstein drift from the first recording."""
    out: dict[str, dict[str, float]] = {}
    for layer, entry in summary["layers"].items():
        for stat, v in entry["statistics"].items():
            out.setdefault(f"{stat} (last recording)", {})[layer] = v["end"]["mean"]
        out.setdefault("drift from the start (last recording)", {})[layer] = entry["drift"]["end"]["mean"]
    return out
