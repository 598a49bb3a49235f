"""Section 3 of the RVSP study: sigmoid vs ReLU (and tanh) as a paired design.

    python -m experiments.activation_compare --seeds 16 --epochs 1 --activations sigmoid,relu,tanh

One ensemble per activation, all with the same :class:`~rvsp_jax.config.TrainConfig` except the
activation. Member s of every variant therefore has the same init key and the same data key: the
same initial weights (the initialiser draws each kernel from the key by shape; the activation is not
part of it) and the same minibatch at every step. Each member is a matched pair (a block) across the
variants, and differences are tested across members with paired tests (t-test and Wilcoxon
signed-rank on the per-member values). ``vary=both`` (the default) makes the pairs independent draws
of both init and data order, so the tests speak about the population of networks; with
``vary=data`` all pairs share one init and the conclusions hold for that init only.

Recorded per variant, at every step: the gradients and updates of ``--probe-index`` entries of every
parameter array, and the layer activation summaries. After a burn-in, per member and per layer
(Dense_0, Dense_1 hidden, Dense_2 output; kernel and bias entries together):

- the distribution of gradients and updates (figure; pooled excess kurtosis of the entry-standardised
  values);
- their variance: log10 of the mean over the layer's entries of each entry's variance over steps;
- the update (and gradient) PSD (Welch), the smooth-vs-jittery score (log10 of the low/high band-power
  ratio, :func:`~rvsp_jax.analysis.band_power_ratio`) and the spectral slope beta;
- the fraction of entries whose series ADF + KPSS judge stationary.

A member that diverged in a variant is excluded from that variant's numbers and from every paired test
involving it, and counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from rvsp_jax import plots, store
from rvsp_jax.analysis import (
    STATIONARITY_VERDICTS, MemberSummary, across_members, band_power_ratio, spectral_slope,
    stationarity_verdicts, verdict_fractions, welch)
from rvsp_jax.config import ACTIVATIONS, TrainConfig, opt
from rvsp_jax.data import Dataset, load
from rvsp_jax.probes import ProbeConfig
from rvsp_jax.report import Report, fmt, fmt_ci, pct, write_summary
from rvsp_jax.studies.activations import diverged_members, summary_series
from rvsp_jax.studies.folder import finish_study, open_study, train_variant

EXPERIMENT = "activation_compare"
KINDS = ("grads", "updates")
METRICS = {
    "log10_var": "log10 variance over steps (mean over entries)",
    "excess_kurtosis": "excess kurtosis (entry-standardised, pooled)",
    "log10_band_power_ratio": "log10 low/high band-power ratio (smooth > 0 > jittery)",
    "spectral_beta": "spectral slope beta (PSD ~ f^-beta)",
    "stationary_fraction": "fraction of entries stationary (ADF + KPSS, raw)",
}
HIST_SAMPLES = 20_000
"""Values per member, kind, layer and variant kept for the distribution figure."""
LOSS_WINDOW = 25
"""Steps averaged per point of the training-loss curves."""


@dataclass(frozen=True)
class CompareSettings:
    """Variants, recording and analysis options of the activation comparison."""

    activations: str = opt("sigmoid,relu,tanh", "--activations",
                           "hidden activations compared, comma separated; the first is the baseline "
                           "of the paired tests (--activation is ignored)")
    probe_index: str = opt("16", "--probe-index",
                           "parameters whose gradients and updates are recorded: K per parameter "
                           "array, total=N, all, or names (as in experiments.train)")
    probe_batch: int = opt(64, "--probe-batch", "test images of the activation-summary probe batch")
    burn_in: float = opt(0.1, "--burn-in", "fraction of the steps left out at the start")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (at most the analysed steps)")
    alpha: float = opt(0.05, "--alpha", "level of the ADF/KPSS tests")

    def __post_init__(self):
        names = self.variants
        unknown = [a for a in names if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation(s) {unknown}; valid: {', '.join(ACTIVATIONS)}")
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"activations must name at least two different activations, got "
                             f"{self.activations!r}")
        if not 0 <= self.burn_in < 1:
            raise ValueError(f"burn_in must be a fraction in [0, 1), got {self.burn_in}")
        if self.nperseg < 8:
            raise ValueError(f"nperseg must be >= 8, got {self.nperseg}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        self.probes()  # validates probe_index and probe_batch

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.activations.split(",") if a.strip())

    def probes(self) -> ProbeConfig:
        """What every variant records: gradients and updates of the selected entries, at every step,
        and the layer activation summaries."""
        return ProbeConfig(probes="grads,updates,act_summary", index=self.probe_index, every=1,
                           batch=self.probe_batch)


# ---- numerics ----------------------------------------------------------------------------------

class PairedTest(NamedTuple):
    """Paired comparison of ``b`` against ``a`` across members.

    diff: :class:`MemberSummary` of ``b - a`` (mean with a 95% t-interval; equals
      ``scipy.stats.ttest_rel(b, a).confidence_interval()``).
    t_stat, t_pvalue: ``scipy.stats.ttest_rel(b, a)`` (two-sided).
    w_stat, w_pvalue: ``scipy.stats.wilcoxon(b - a)`` (two-sided; 0 and 1 when every difference is 0,
      NaN with fewer than two pairs).
    n: pairs used; excluded: pairs left out because a value was not finite (a diverged member).
    """

    diff: MemberSummary
    t_stat: float
    t_pvalue: float
    w_stat: float
    w_pvalue: float
    n: int
    excluded: int


def paired_test(a, b) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``b - a`` over members, ``a, b: [S]`` (float64).

    Pairs where either value is not finite are excluded and counted, never averaged in.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be [S] values of the same members, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = (b - a)[ok]
    n = int(ok.sum())
    diff = across_members(np.where(ok, b - a, np.nan))
    t_stat = t_p = w_stat = w_p = np.nan
    if n >= 2:
        if np.any(d != d[0]):
            t = stats.ttest_rel(b[ok], a[ok])
            t_stat, t_p = float(t.statistic), float(t.pvalue)
        if np.any(d != 0):
            w = stats.wilcoxon(d)
            w_stat, w_p = float(w.statistic), float(w.pvalue)
        else:
            w_stat, w_p = 0.0, 1.0
    return PairedTest(diff, t_stat, t_p, w_stat, w_p, n, int(a.size - n))


def layer_ranges(names) -> dict[str, tuple[int, int]]:
    """Contiguous ``[start, stop)`` positions of each layer's entries in a probe array whose entry
    names are ``Dense_0/kernel[412,3]`` etc. (entries are stored grouped by parameter array)."""
    layers = [n.split("/", 1)[0] for n in names]
    out: dict[str, tuple[int, int]] = {}
    for i, layer in enumerate(layers):
        lo, _ = out.get(layer, (i, i))
        if layer in out and out[layer][1] != i:
            raise ValueError(f"entries of {layer} are not contiguous in the probe array")
        out[layer] = (lo, i + 1)
    return out


def entry_statistics(x, excluded=None, *, nperseg: int, alpha: float) -> dict:
    """Per-member statistics of one layer's recorded entries, ``x: [S, T, P]`` (float64).

    Returns ``[S]`` arrays ``log10_var`` (log10 of the mean over entries of the variance over steps,
    ddof 1), ``excess_kurtosis`` (of all values after standardising each entry over steps; entries with
    zero variance, e.g. a dead ReLU unit's weights, are left out), ``log10_band_power_ratio`` and
    ``spectral_beta`` (means over entries, Welch PSD), ``stationary_fraction`` (raw ADF + KPSS
    verdicts); ``psd [S, F]`` (mean over entries of each entry's PSD normalised to unit total power),
    ``freqs [F]``, and ``stationarity_bh`` (:func:`verdict_fractions` of the BH-adjusted verdicts of
    all analysed members' S x P series). Members marked in ``excluded: bool [S]`` get NaN and are
    left out of the tests.
    """
    x = np.asarray(x, np.float64)
    excluded = np.zeros(x.shape[0], bool) if excluded is None else np.asarray(excluded, bool)
    series = np.swapaxes(x, 1, 2)  # [S, P, T]
    var = series.var(-1, ddof=1)
    sd = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (series - series.mean(-1, keepdims=True)) / sd[..., None]
        kurt = _nanmean(np.where(sd[..., None] > 0, z**4, np.nan).reshape(x.shape[0], -1)) - 3
        freqs, psd = welch(series, nperseg=min(nperseg, x.shape[1]))
        ratio = np.log10(band_power_ratio(freqs, psd))
        norm = psd / psd.sum(-1, keepdims=True)
    ratio = np.where(np.isfinite(ratio), ratio, np.nan)
    stationary = np.full(x.shape[0], np.nan)
    bh = np.zeros((0,), np.int8)
    if (~excluded).any():
        raw, bh = stationarity_verdicts(series[~excluded], alpha)
        stationary[~excluded] = (raw == 0).mean(-1)
    out = {
        "log10_var": np.log10(var.mean(-1)),
        "excess_kurtosis": kurt,
        "log10_band_power_ratio": _nanmean(ratio),
        "spectral_beta": _nanmean(spectral_slope(freqs, psd).beta),
        "stationary_fraction": stationary,
        "psd": _nanmean(np.moveaxis(norm, 1, -1)),
    }
    out = {k: np.where(excluded.reshape(-1, *[1] * (v.ndim - 1)), np.nan, v) for k, v in out.items()}
    return {**out, "freqs": freqs, "stationarity_bh": verdict_fractions(bh)}


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (no warning) where a row has no finite value."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, x, 0).sum(-1) / ok.sum(-1)


# ---- train and analyse -------------------------------------------------------------------------

def variant_config(config: TrainConfig, activation: str) -> TrainConfig:
    """The configuration of one variant: ``config`` with only the activation changed."""
    return dataclasses.replace(config, activation=activation)


def train(config: TrainConfig, settings: CompareSettings, out, *, resume: bool = False,
          overwrite: bool = False, command: str | None = None, progress: bool = True,
          dataset: Dataset | None = None) -> dict[str, store.Run]:
    """Open the study folder ``out`` and train (or, with ``resume``, reuse) every variant into
    ``out/runs/<activation>/``; return the opened runs by activation."""
    base = variant_config(config, settings.variants[0])
    open_study(out, EXPERIMENT, {"config": base.to_dict(), "compare": dataclasses.asdict(settings)},
               resume=resume, overwrite=overwrite, command=command)
    return {v: train_variant(out, v, variant_config(config, v), settings.probes(), resume=resume,
                             experiment=EXPERIMENT, progress=progress, dataset=dataset)
            for v in settings.variants}


@dataclass(frozen=True)
class CompareAnalysis:
    """``summary`` (numbers, JSON-ready) and the arrays the figures draw."""

    summary: dict
    values: dict  # kind -> layer -> metric -> variant -> [S] (NaN for excluded members)
    psd: dict  # kind -> layer -> variant -> (freqs [F], psd [S, F])
    samples: dict  # kind -> layer -> variant -> pooled values [n] for histograms
    loss: dict  # variant -> (steps [K], loss [S, K]) block means
    inactive: dict  # variant -> layer -> (name, [S, T]) saturated (sigmoid/tanh) or zero (relu) fraction


def _pooled_sample(x: np.ndarray, excluded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to HIST_SAMPLES values of each analysed member's ``x: [S, T, P]``, pooled."""
    parts = []
    for s in np.flatnonzero(~excluded):
        flat = x[s].ravel()
        parts.append(flat if flat.size <= HIST_SAMPLES else rng.choice(flat, HIST_SAMPLES, replace=False))
    return np.concatenate(parts) if parts else np.zeros(0)


def check_steps(total: int, burn_in: float) -> int:
    """The burn-in in steps; refuses runs with fewer than 32 steps left after it."""
    burn = int(round(burn_in * total))
    if total - burn < 32:
        raise ValueError(f"{total - burn} steps after the burn-in are too few for the spectra and "
                         "ADF/KPSS (at least 32); train longer (--steps/--epochs) or lower --burn-in")
    return burn


def analyse(runs: dict[str, store.Run], settings: CompareSettings, *, progress: bool = True
            ) -> CompareAnalysis:
    """Per-member statistics of every variant, kind and layer, and the paired tests against the
    baseline (the first variant)."""
    variants = list(runs)
    baseline = variants[0]
    first = runs[baseline]
    total = int(first.manifest["total_steps"])
    burn = check_steps(total, settings.burn_in)
    excluded = {v: diverged_members(r) for v, r in runs.items()}
    ranges = layer_ranges(first.probe_names["grads"])
    rng = np.random.default_rng(0)
    values: dict = {k: {layer: {m: {} for m in METRICS} for layer in ranges} for k in KINDS}
    psd: dict = {k: {layer: {} for layer in ranges} for k in KINDS}
    samples: dict = {k: {layer: {} for layer in ranges} for k in KINDS}
    stationarity: dict = {k: {layer: {} for layer in ranges} for k in KINDS}
    jobs = [(v, k, layer) for v in variants for k in KINDS for layer in ranges]
    for v, kind, layer in tqdm(jobs, desc="analysing variants", disable=not progress):
        lo, hi = ranges[layer]
        x = np.asarray(runs[v][kind][:, burn:, lo:hi])
        ex = excluded[v]
        st = entry_statistics(x, ex, nperseg=settings.nperseg, alpha=settings.alpha)
        for m in METRICS:
            values[kind][layer][m][v] = st[m]
        psd[kind][layer][v] = (st["freqs"], st["psd"][~ex])
        samples[kind][layer][v] = _pooled_sample(x, ex, rng)
        stationarity[kind][layer][v] = st["stationarity_bh"]

    loss, inactive, accuracy, act_stats = {}, {}, {}, {}
    for v, run in runs.items():
        ex = excluded[v]
        lossx = np.asarray(run["metrics/loss"][:], np.float64)
        k = total // LOSS_WINDOW
        blocks = lossx[:, :k * LOSS_WINDOW].reshape(lossx.shape[0], k, LOSS_WINDOW).mean(-1)
        loss[v] = (np.arange(k) * LOSS_WINDOW + (LOSS_WINDOW - 1) / 2, np.where(ex[:, None], np.nan, blocks))
        series = summary_series(run)
        inactive[v] = {}
        act_stats[v] = {}
        for name, x in series.items():
            layer, stat = name.split("/", 1)
            x = np.where(ex[:, None], np.nan, np.asarray(x, np.float64))
            if stat in ("saturated", "zero"):
                inactive[v][layer] = (stat, x)
            if stat in ("saturated", "zero", "dead"):
                act_stats[v][name] = {"start": across_members(x[:, 0]), "end": across_members(x[:, -1])}
        accuracy[v] = np.where(ex, np.nan, np.asarray(run.manifest["result"]["test_accuracy"], np.float64))

    pairs = [f"{v} - {baseline}" for v in variants[1:]]
    metrics_summary = {
        kind: {layer: {m: {"by_variant": {v: across_members(values[kind][layer][m][v]) for v in variants},
                           "paired": {p: paired_test(values[kind][layer][m][baseline], values[kind][layer][m][v])
                                      for p, v in zip(pairs, variants[1:])}}
                       for m in METRICS} for layer in ranges}
        for kind in KINDS}
    manifests = [r.manifest["members"] for r in runs.values()]
    summary = {
        "experiment": EXPERIMENT, "config": variant_config(first.config, baseline).to_dict(),
        "settings": dataclasses.asdict(settings), "variants": variants, "baseline": baseline,
        "pairs": pairs, "layers": list(ranges),
        "entries": {layer: hi - lo for layer, (lo, hi) in ranges.items()},
        "steps": total, "burn_in_steps": burn, "analysed_steps": total - burn,
        "paired_design": {
            "vary": first.config.vary,
            "init_keys_identical": all(m["init_keys"] == manifests[0]["init_keys"] for m in manifests),
            "data_keys_identical": all(m["data_keys"] == manifests[0]["data_keys"] for m in manifests),
            "configs_differ_only_in_activation": all(
                variant_config(r.config, baseline) == variant_config(first.config, baseline)
                for r in runs.values()),
        },
        "members": {v: {"total": int(ex.size), "diverged": int(ex.sum()), "diverged_ids": np.flatnonzero(ex)}
                    for v, ex in excluded.items()},
        "test_accuracy": {v: across_members(a) for v, a in accuracy.items()},
        "test_accuracy_paired": {p: paired_test(accuracy[baseline], accuracy[v])
                                 for p, v in zip(pairs, variants[1:])},
        "activation_statistics": act_stats,
        **metrics_summary,
        "stationarity_bh": stationarity,
    }
    return CompareAnalysis(summary, values, psd, samples, loss, inactive)


# ---- figures -----------------------------------------------------------------------------------

def _paired_panel(ax, by_variant: dict[str, np.ndarray], ylabel: str) -> None:
    """Slopegraph of a paired design: one grey line per member across the variants, and each variant's
    mean with its 95% t-interval."""
    variants = list(by_variant)
    y = np.stack([by_variant[v] for v in variants], axis=1)  # [S, V]
    xs = np.arange(len(variants))
    plots.plot_members(ax, xs, y[np.all(np.isfinite(y), axis=1)], alpha=0.4)
    for i, v in enumerate(variants):
        m = across_members(by_variant[v])
        ax.errorbar([i], [m.mean], yerr=[[m.mean - m.lo], [m.hi - m.mean]], fmt="o",
                    color=plots.PALETTE[i], capsize=2)
    ax.set_xticks(xs, variants)
    ax.set_xlim(-0.4, len(variants) - 0.6)
    ax.set(ylabel=ylabel)


def figures(analysis: CompareAnalysis, folder) -> list[str]:
    """Write the comparison's figures into ``folder`` (png + pdf); return their names."""
    a, s = analysis, analysis.summary
    variants, layers = s["variants"], s["layers"]
    nl = len(layers)
    names = []

    def save(fig, name):
        plots.save_figure(fig, folder, name)
        names.append(name)

    with plots.paper_style():
        fig, axes = plots.subplots(nl, len(KINDS), width="double", height=1.9 * nl + 0.3, squeeze=False)
        for i, layer in enumerate(layers):
            for j, kind in enumerate(KINDS):
                ax = axes[i, j]
                pooled = [a.samples[kind][layer][v] for v in variants]
                allv = np.concatenate(pooled)
                if allv.size == 0:
                    continue
                lo, hi = np.percentile(allv, [0.5, 99.5])
                edges = np.linspace(lo, hi, 61) if hi > lo else 61
                for k, (v, x) in enumerate(zip(variants, pooled)):
                    ax.hist(x, bins=edges, density=True, histtype="step", color=plots.PALETTE[k], label=v)
                ax.set(yscale="log", xlabel=f"{kind[:-1]} value", ylabel="density", title=f"{layer} {kind}")
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        axes[0, 0].legend()
        save(fig, "distributions")

        fig, axes = plots.subplots(len(KINDS), nl, width="double", height=2.0 * len(KINDS) + 0.3,
                                   squeeze=False)
        for i, kind in enumerate(KINDS):
            for j, layer in enumerate(layers):
                _paired_panel(axes[i, j], a.values[kind][layer]["log10_var"], f"log10 var ({kind})")
                axes[i, j].set_title(layer)
        save(fig, "variance_paired")

        fig, axes = plots.subplots(1, nl, width="double", height=2.4, squeeze=False)
        for ax, layer in zip(axes[0], layers):
            for k, v in enumerate(variants):
                freqs, p = a.psd["updates"][layer][v]
                if p.size and np.any(np.isfinite(p) & (p > 0)):
                    plots.plot_psd_bands(ax, freqs, p, label=v, color=plots.PALETTE[k])
            ax.set(xlabel="frequency (1/step)", ylabel="normalised PSD", title=f"{layer} updates")
        axes[0, 0].legend()
        save(fig, "update_psd")

        fig, axes = plots.subplots(1, nl, width="double", height=2.3, squeeze=False)
        for ax, layer in zip(axes[0], layers):
            _paired_panel(ax, a.values["updates"][layer]["log10_band_power_ratio"], "log10 band-power ratio")
            ax.axhline(0, color="0.6", linewidth=0.5, linestyle="--")
            ax.set_title(f"{layer} updates")
        save(fig, "smoothness")

        rows = [f"{kind}: {v}" for kind in KINDS for v in variants]
        cells = [[pct(s["stationarity_bh"][kind][layer][v]["stationary"]) for layer in layers]
                 for kind in KINDS for v in variants]
        fig, ax = plots.subplots(width="double", height=0.3 * len(rows) + 0.8)
        plots.verdict_table(ax, rows, layers, cells)
        ax.set_title("entries judged stationary (ADF + KPSS, BH over each cell's series)")
        save(fig, "stationarity")

        hidden = [l for l in layers if any(l in a.inactive[v] for v in variants)]
        fig, axes = plots.subplots(1, 1 + len(hidden), width="double", height=2.4, squeeze=False)
        for k, v in enumerate(variants):
            t, x = a.loss[v]
            m = across_members(x)
            plots.plot_band(axes[0, 0], t, m.mean, m.lo, m.hi, label=v, color=plots.PALETTE[k])
            for ax, layer in zip(axes[0, 1:], hidden):
                if layer in a.inactive[v]:
                    stat, y = a.inactive[v][layer]
                    m = across_members(y)
                    plots.plot_band(ax, np.arange(y.shape[1]), m.mean, m.lo, m.hi,
                                    label=f"{v} ({stat})", color=plots.PALETTE[k])
        axes[0, 0].set(xlabel="step", ylabel=f"training loss ({LOSS_WINDOW}-step mean)", yscale="log")
        axes[0, 0].legend()
        for ax, layer in zip(axes[0, 1:], hidden):
            ax.set(xlabel="step", ylabel="inactive fraction", title=layer)
            ax.legend()
        save(fig, "training")
    return names


# ---- report ------------------------------------------------------------------------------------

def _test_text(t) -> str:
    return (f"{fmt_ci(t.diff)}; paired t p = {fmt(t.t_pvalue, 2)}, Wilcoxon p = {fmt(t.w_pvalue, 2)}"
            + (f" ({t.excluded} pair(s) excluded)" if t.excluded else ""))


def report(analysis: CompareAnalysis, command: str | None = None) -> Report:
    """The markdown report of the activation comparison."""
    s = analysis.summary
    c, design = s["config"], s["paired_design"]
    variants, pairs, layers = s["variants"], s["pairs"], s["layers"]
    rep = Report(f"Activation functions as a paired design: {' vs '.join(variants)}")
    diverged = ", ".join(f"{v}: {m['diverged']}" for v, m in s["members"].items())
    rep.text(
        f"S = {c['seeds']} members per activation of the {'-'.join(map(str, [784, *c['widths'], 10]))} "
        f"network, {c['optimizer']} lr {c['lr']}"
        + (f" {c['opt_kwargs']}" if c["opt_kwargs"] not in ("{}", "") else "")
        + f", batch {c['batch_size']}, "
        f"{s['steps']:,} steps; the first {s['burn_in_steps']} steps are burn-in, {s['analysed_steps']:,} "
        f"are analysed. Gradients and updates of {sum(s['entries'].values())} entries are recorded "
        f"at every step ({', '.join(f'{l}: {n}' for l, n in s['entries'].items())}).",
        "**Design.** The variants share the configuration except the activation "
        f"(checked: {design['configs_differ_only_in_activation']}), so member s has the same init key "
        f"(identical across variants: {design['init_keys_identical']}) and the same data key "
        f"({design['data_keys_identical']}): the same initial weights and the same minibatch at every "
        f"step. Members are pairs; differences are tested across members with the paired t-test and "
        f"the Wilcoxon signed-rank test. vary={design['vary']}: "
        + ("init and data order both vary across pairs, so the tests generalise over both sources of "
           "randomness (with vary=data every pair would share one init and the conclusions would hold "
           "for that init only)." if design["vary"] == "both" else
           "note that with this setting the pairs share part of their randomness, so the tests "
           "generalise over the varying part only."),
        f"Diverged members (excluded from their variant and from every pair involving them): {diverged}. "
        "Intervals are 95% Student-t intervals across members (pairs for differences); p-values are "
        "per test, not adjusted for the number of comparisons in the tables.")
    bullets = ["Test accuracy: " + "; ".join(f"{v} {fmt_ci(s['test_accuracy'][v])}" for v in variants)
               + ". Paired differences: " + "; ".join(f"{p}: {_test_text(s['test_accuracy_paired'][p])}"
                                                      for p in pairs) + "."]
    for layer in layers:
        for p in pairs:
            t = s["grads"][layer]["log10_var"]["paired"][p]
            ratio = [10 ** t.diff.mean, 10 ** t.diff.lo, 10 ** t.diff.hi]
            bullets.append(f"{layer} gradient variance, {p}: log10 ratio {_test_text(t)} (ratio "
                           f"{fmt(ratio[0])} [{fmt(ratio[1])}, {fmt(ratio[2])}]).")
    for p in pairs:
        bullets.append(f"Update smoothness, {p} (difference of log10 band-power ratios): "
                       + "; ".join(f"{layer} {_test_text(s['updates'][layer]['log10_band_power_ratio']['paired'][p])}"
                                   for layer in layers) + ".")
    rep.section("Findings").bullets(bullets)
    if c["optimizer"] == "sgd" and c["opt_kwargs"] in ("{}", ""):
        rep.text("With plain SGD an update is -lr x the gradient (up to float32 rounding), so the update "
                 "statistics repeat the gradient ones scaled by lr (log10 variance shifted by "
                 "2 log10 lr); they differ under momentum or adaptive optimizers (--optimizer).")
    for kind in KINDS:
        rep.section(f"{kind.capitalize()} per layer")
        header = ["layer", "statistic", *variants, *[f"{p} (paired)" for p in pairs]]
        rows = []
        for layer in layers:
            for m, label in METRICS.items():
                d = s[kind][layer][m]
                rows.append([layer, label, *[fmt_ci(d["by_variant"][v]) for v in variants],
                             *[_test_text(d["paired"][p]) for p in pairs]])
        rep.table(header, rows)
    rep.figure("distributions", "Pooled distributions of gradient and update values per layer (after "
               "burn-in, all analysed members; log density).")
    rep.figure("variance_paired", "log10 variance per member (grey lines join a member's values across "
               "activations) with each activation's mean and 95% t-interval.")
    rep.figure("update_psd", "Update PSD per layer (each entry's PSD normalised to unit power, mean over "
               "entries; median across members with the 5-95% band).")
    rep.figure("smoothness", "Smooth-vs-jittery score of the updates: log10 of low- over high-frequency "
               "power per unit bandwidth (0: white; > 0 smooth; < 0 jittery), paired by member.")
    rep.section("Stationarity")
    rep.table(["kind", "activation", *[f"{layer}: " + "/".join(STATIONARITY_VERDICTS) for layer in layers]],
              [[kind, v, *[" / ".join(pct(s["stationarity_bh"][kind][layer][v][k]) for k in STATIONARITY_VERDICTS)
                           for layer in layers]] for kind in KINDS for v in variants])
    rep.text("invalid: the series is constant, e.g. the weights from pixels that are black in every "
             "training image (their gradient is exactly 0) or of a dead ReLU unit.")
    rep.figure("stationarity", "Fraction of gradient and update entries judged stationary (ADF + KPSS, "
               "level, Benjamini-Hochberg over each cell's member x entry series).")
    rep.section("Training and inactive units")
    rows = [[v, name, fmt_ci(st["start"]), fmt_ci(st["end"])]
            for v, by in s["activation_statistics"].items() for name, st in by.items()]
    if rows:
        rep.table(["activation", "statistic", "step 0", "last step"], rows)
    rep.figure("training", "Training loss and the inactive fraction of each hidden layer on the probe "
               "batch: saturated (sigmoid/tanh) or exactly zero (ReLU); mean across members, 95% t-interval.")
    rep.config({"train (baseline variant)": s["config"], "compare": s["settings"]}, command)
    return rep


def run(config: TrainConfig, settings: CompareSettings, out, *, resume: bool = False,
        overwrite: bool = False, command: str | None = None, progress: bool = True,
        dataset: Dataset | None = None) -> CompareAnalysis:
    """The whole comparison into the study folder ``out``: runs/<activation>/, summary.json, report.md
    and figures/."""
    out = Path(out)
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    check_steps(config.total_steps(int(data.train_labels.shape[0])), settings.burn_in)
    runs = train(config, settings, out, resume=resume, overwrite=overwrite, command=command,
                 progress=progress, dataset=dataset)
    analysis = analyse(runs, settings, progress=progress)
    write_summary(out, analysis.summary)
    figures(analysis, out / "figures")
    report(analysis, command).write(out)
    finish_study(out)
    return analysis
