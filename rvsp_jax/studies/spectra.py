"""Section 4 of the RVSP study: parameter updates as time series.

Every recorded update process ``d_t[i] = theta_{t+1}[i] - theta_t[i]`` of every member is measured
as a time series, then summarised per layer and per member, and across members with a t-interval
(:func:`rvsp_jax.analysis.across_members`; diverged members are excluded and counted):

- autocorrelation (ACF, lags 0..nlags) and the Welch PSD, normalised to unit power so that layers
  with different update sizes share one axis (white noise is flat at 2 per cycle/step);
- the spectral slope ``beta`` of ``PSD ~ f^-beta`` (0 white, 1 pink, 2 random walk), the band-power
  ratio low/high half of the band ("smooth" > 1 > "jittery"), the spectral flatness, and the
  fraction of processes whose Ljung-Box test rejects white noise (Benjamini-Hochberg over all);
- ADF and KPSS over every process in the early, middle and late third of training, with the joint
  verdict (stationary, unit-root, inconclusive, invalid) raw and with Benjamini-Hochberg control of
  each test's false discovery rate over all processes of the phase.

The study writes one run folder: the recording of :func:`rvsp_jax.io.record.run` (manifest, arrays),
``summary.json``, ``report.md`` and ``figures/``. :func:`measure_layers` is shared with the
optimizer comparison (:mod:`rvsp_jax.studies.optimizers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.analysis import STATIONARITY_VERDICTS, across_members, adf, kpss
from rvsp_jax.analysis.spectral import SHAPE_VERDICTS
from rvsp_jax.analysis.stationarity import _stationarity_codes
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.io import record, store
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, progress_enabled, proportion_summary, write_summary
from rvsp_jax.studies import windows
from rvsp_jax.studies.figures import save_figures
from rvsp_jax.studies.layer_spectra import (
    DRIFT_ACCEPT,
    SHAPE_MAJORITY,
    SHAPE_MARGIN,
    SHAPE_MIN_BETA,
    STATIONARY_ACCEPT,
    LayerSpectra,
    WindowStationarity,
    below_nyquist,
    layer_groups,
    lorentzian_normalised,
    measure_layers,
    member_series,
    shape_summary,
    shape_text,
    shape_word,
    stack_results,
    window_stationarity,
    window_stationarity_summary,
    window_stationarity_text,
)
from rvsp_jax.studies.members import check_usable, members_summary, usable_members
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.studies.windows import burn_in_steps, check_burn_in
from rvsp_jax.training.probes import ProbeConfig

EXPERIMENT = "spectra"
TITLE = "Spectra"
FOLDER = "run"
TRAIN_DEFAULTS = {"seeds": 32, "steps": 4000, "chunk": 500}
"""Defaults of this experiment's training flags: 32 members, 4,000 steps (2.1 epochs) of the
sigmoid 784-16-16-10 network with SGD at lr 0.1 (25 s in all, measured on 2 shared CPU cores)."""
PHASES = ("early", "middle", "late")
STATIONARITY_COLOURS = {
    "stationary": plots.PALETTE[2],
    "unit-root": plots.PALETTE[1],
    "inconclusive": "0.75",
    "invalid": "0.2",
}


@dataclass(frozen=True)
class SpectraSettings(StudySettings):
    """Options of the updates-as-time-series analysis (the training flags are separate).

    Example::

        python -m experiments.spectra --seeds 32 --steps 6000 --probe-index 32 --nlags 100
    """

    probe_index: str = opt(
        "16",
        "--probe-index",
        "update processes recorded: K per parameter array, total=N, all, or names like 'Dense_0/kernel[412,3]'",
    )
    nlags: int = opt(50, "--nlags", "ACF lags")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (clipped to the series length)")
    burn_in: float = opt(
        0.1,
        "--burn-in",
        "fraction of the steps left out of the ACF and PSD (the stationarity phases always cover all steps)",
    )
    lb_lag: int = opt(10, "--lb-lag", "Ljung-Box test of lags 1..L")
    alpha: float = opt(0.05, "--alpha", "test level and Benjamini-Hochberg false discovery rate")

    def __post_init__(self):
        if self.nlags < 1 or self.nperseg < 4 or self.lb_lag < 1:
            raise ValueError(
                f"nlags and lb_lag must be >= 1 and nperseg >= 4, got nlags={self.nlags}, "
                f"lb_lag={self.lb_lag}, nperseg={self.nperseg}"
            )
        check_burn_in(self.burn_in)
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        ProbeConfig(index=self.probe_index)  # syntax check

    def probes(self) -> ProbeConfig:
        """Record every step's updates of the selected parameters."""
        return ProbeConfig(probes="updates", index=self.probe_index, every=1)


def phase_bounds(n_steps: int, phases=PHASES) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` of equal consecutive windows covering ``n_steps`` recorded steps
    (:func:`rvsp_jax.studies.windows.phase_bounds`, named)."""
    return [(name, a, b) for name, (a, b) in zip(phases, windows.phase_bounds(n_steps, len(phases)))]


class PhaseVerdicts(NamedTuple):
    """Joint ADF + KPSS verdicts per phase, as compact int8 codes (code i is
    ``STATIONARITY_VERDICTS[i]``; the private ``_stationarity_codes`` behind
    :func:`~rvsp_jax.analysis.stationarity_verdict`, which returns the names).

    phases: ``(name, start, stop)`` recorded-step windows; raw, fdr_bh: int8 ``[phases, S, P]``,
    each test at level alpha, or with its p-values Benjamini-Hochberg adjusted over every process
    of usable members in the phase; -1 for excluded members.
    """

    phases: list
    raw: np.ndarray
    fdr_bh: np.ndarray


def phase_verdicts(x, usable: np.ndarray, *, alpha: float = 0.05, progress: bool = False) -> PhaseVerdicts:
    """ADF ("c", AIC lag) and KPSS ("c", auto lag) of every process of ``x: [S, T, P]`` in the early,
    middle and late third of the recorded steps, and their verdicts (see :class:`PhaseVerdicts`)."""
    n_members, n_steps, n_proc = x.shape
    bounds = phase_bounds(n_steps)
    raw = np.full((len(bounds), n_members, n_proc), -1, np.int8)
    adjusted = raw.copy()
    members = np.flatnonzero(usable)
    for k, (name, a, b) in enumerate(bounds):
        adfs, kpsses = [], []
        for s in tqdm(members, desc=f"ADF/KPSS {name}", disable=not progress_enabled(progress), leave=False):
            d = member_series(x, s, a, b)
            adfs.append(adf(d))
            kpsses.append(kpss(d))
        if not members.size:
            continue
        a_res, k_res = stack_results(adfs), stack_results(kpsses)
        raw[k, members] = _stationarity_codes(a_res, k_res, alpha)
        adjusted[k, members] = _stationarity_codes(a_res, k_res, alpha, adjust="fdr_bh")
    return PhaseVerdicts(bounds, raw, adjusted)


def layer_verdict_fractions(codes: np.ndarray, groups: dict) -> dict[str, np.ndarray]:
    """codes: int8 ``[S, P]`` -> verdict name -> ``[S, L]`` fraction of each member's testable
    processes in each layer with that verdict, for the verdicts other than ``invalid`` (constant
    processes cannot be tested and are left out of the denominator; NaN where a member is excluded,
    code -1, or has no testable process in the layer)."""
    invalid = STATIONARITY_VERDICTS.index("invalid")
    out = {}
    for v, name in enumerate(STATIONARITY_VERDICTS):
        if v == invalid:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.stack(
                [
                    (c == v).sum(1) / ((c >= 0) & (c != invalid)).sum(1)
                    for c in (codes[:, idx] for idx in groups.values())
                ],
                axis=1,
            )
    return out


# ---- the study ------------------------------------------------------------------------------


class SpectraResult(NamedTuple):
    """Everything the figures and the report need."""

    run: store.Run
    settings: SpectraSettings
    usable: np.ndarray
    spectra: LayerSpectra
    verdicts: PhaseVerdicts
    groups: dict
    window: WindowStationarity | None = None


def analyse(run: store.Run, settings: SpectraSettings, *, progress: bool = False) -> SpectraResult:
    """Measure the recorded update processes of a complete run (see the module docstring)."""
    if "updates" not in run.arrays:
        raise ValueError(f"{run.path} has no recorded updates; record with probes=updates")
    usable = usable_members(run)
    check_usable(usable, str(run.path))
    x, names = run["updates"], run.probe_names["updates"]
    start = burn_in_steps(settings.burn_in, x.shape[1])
    if x.shape[1] - start < 8:
        raise ValueError(
            f"{x.shape[1] - start} steps after the burn-in are too few for spectra; "
            "train longer (--steps) or lower --burn-in"
        )
    spectra = measure_layers(
        x,
        names,
        usable,
        start=start,
        nlags=settings.nlags,
        nperseg=settings.nperseg,
        lb_lag=settings.lb_lag,
        alpha=settings.alpha,
        progress=progress,
    )
    verdicts = phase_verdicts(x, usable, alpha=settings.alpha, progress=progress)
    window = window_stationarity(x, names, usable, start=start, alpha=settings.alpha, progress=progress)
    return SpectraResult(run, settings, usable, spectra, verdicts, layer_groups(names), window)


def _smooth_word(s) -> str:
    if not np.isfinite(s.lo):
        return "undetermined"
    return (
        "smooth (low-frequency)"
        if s.lo > 1
        else "jittery (high-frequency)"
        if s.hi < 1
        else "neither smooth nor jittery (band ratio interval contains 1)"
    )


def summarise(result: SpectraResult) -> dict:
    """The study's numbers (JSON-ready): per layer across-member summaries, verdict counts."""
    sp, run = result.spectra, result.run
    layers = {}
    for l, layer in enumerate(sp.layers):
        layers[layer] = {
            "processes": int(sp.counts[l]),
            "constant_fraction": across_members(sp.constant[:, l]),
            "acf_lag1": across_members(sp.acf[:, l, 1]),
            "acf_lag2": across_members(sp.acf[:, l, 2]) if sp.acf.shape[-1] > 2 else None,
            "spectral_slope": across_members(sp.slope[:, l]),
            "spectral_slope_r2": across_members(sp.slope_r2[:, l]),
            "slope_fit_range": [float(sp.freqs[1]), float(sp.freqs[-1])],
            "spectral_shape": shape_summary(sp, l),
            "band_power_ratio": across_members(sp.band_ratio[:, l]),
            "smooth_fraction": proportion_summary(sp.smooth[:, l]),
            "spectral_flatness": across_members(sp.flatness[:, l]),
            "ljung_box_white_rejected_fdr": proportion_summary(sp.white_rejected[:, l]),
        }
    stationarity = {}
    for k, (name, a, b) in enumerate(result.verdicts.phases):
        entry = {"steps": [int(run.steps[a]), int(run.steps[b - 1]) + 1]}
        for kind in ("raw", "fdr_bh"):
            codes = getattr(result.verdicts, kind)[k]
            fractions = layer_verdict_fractions(codes, result.groups)
            entry[kind] = {
                layer: {
                    "counts": {v: int((codes[:, idx] == i).sum()) for i, v in enumerate(STATIONARITY_VERDICTS)},
                    "fraction_of_testable": {v: proportion_summary(f[:, l]) for v, f in fractions.items()},
                }
                for l, (layer, idx) in enumerate(result.groups.items())
            }
        stationarity[name] = entry
    return {
        "experiment": EXPERIMENT,
        "run": str(run.path),
        "config": run.config.to_dict(),
        "settings": result.settings.to_dict(),
        "members": members_summary(result.usable),
        "series_length": sp.nobs,
        "burn_in_steps": int(run.steps.size - sp.nobs),
        "test_accuracy": across_members(np.where(result.usable, run.final().test_accuracy, np.nan)),
        "layers": layers,
        "stationarity": stationarity,
        "analysed_window": window_stationarity_summary(result.window, sp.layers, run.steps),
        "rules": RULES,
    }


RULES = {
    "smooth_jittery": "'smooth' when the 95% interval of the band-power ratio lies above 1, 'jittery' "
    "when below 1, otherwise 'neither'",
    "shape": f"a layer's spectrum is called 'power law', 'Lorentzian (AR(1))' or 'white' only when that "
    f"model has the lowest AIC (Whittle likelihood of the periodogram, margin {SHAPE_MARGIN}) "
    f"for more than {SHAPE_MAJORITY:.0%} of its processes; otherwise 'mixed'. A winning power law "
    f"with mean Whittle exponent |beta| < {SHAPE_MIN_BETA} is called a tilt of a nearly white "
    "spectrum. The log-log slope is called a power-law exponent only under 'power law'",
    "stationary_window": f"the analysed window is 'stationary' when at least {STATIONARY_ACCEPT:.0%} of "
    "its testable processes pass ADF + KPSS (raw) and the median |relative variance "
    f"drift| is at most {DRIFT_ACCEPT}",
    "proportions": "intervals of fractions are percentile-bootstrap intervals over members (inside "
    "[0, 1]); other intervals are 95% t-intervals across members",
}


def figure_acf_by_layer(result: SpectraResult):
    sp = result.spectra
    n_layers = len(sp.layers)
    lags = np.arange(sp.acf.shape[-1])
    fig, axes = plots.subplots(1, n_layers, width="double", height=2.2, squeeze=False, sharey=True)
    band = 1.96 / np.sqrt(sp.nobs)
    for l, ax in enumerate(axes[0]):
        m = across_members(sp.acf[:, l, 1:])
        plots.plot_band(ax, lags[1:], m.mean, m.lo, m.hi, label="mean, 95% CI")
        ax.axhspan(-band, band, color="0.85", zorder=0, label="white noise 95%")
        ax.axhline(0, color="0.3", linewidth=0.5)
        ax.set(title=f"{sp.layers[l]} ({sp.counts[l]} updates)", xlabel="lag (steps)")
    axes[0, 0].set_ylabel("ACF of updates")
    axes[0, 0].legend()
    return fig


def figure_psd_by_layer(result: SpectraResult):
    sp = result.spectra
    n_layers = len(sp.layers)
    fig, axes = plots.subplots(1, n_layers, width="double", height=2.2, squeeze=False, sharey=True)
    for l, ax in enumerate(axes[0]):
        f, p = below_nyquist(sp.freqs, sp.psd[:, l])
        plots.plot_psd_bands(ax, f, p, np.full(f.shape, 2.0), label="median", theory_label="white noise")
        phi = across_members(sp.shape_phi[:, l]).mean
        if np.isfinite(phi):
            ax.plot(
                f,
                lorentzian_normalised(sp.freqs, phi)[sp.freqs < 0.5],
                color="0.4",
                linestyle=":",
                linewidth=1.0,
                label=f"Lorentzian, phi = {fmt(phi, 2)}",
            )
        word = shape_word(shape_summary(sp, l))
        ax.set(title=f"{sp.layers[l]}: {word.split(' (')[0]}", xlabel="frequency (cycles/step)")
    axes[0, 0].set_ylabel("normalised PSD")
    axes[0, 0].legend()
    return fig


def figure_spectral_summary(result: SpectraResult):
    sp = result.spectra
    n_layers = len(sp.layers)
    fig, axes = plots.subplots(1, 3, width="double", height=2.0)
    x = np.arange(n_layers)
    for ax, values, label, ref in (
        (axes[0], sp.slope, "log-log slope (shape summary)", 0.0),
        (axes[1], sp.band_ratio, "band-power ratio (low/high)", 1.0),
        (axes[2], sp.white_rejected, "Ljung-Box rejects white (FDR)", None),
    ):
        m = across_members(values)
        ax.errorbar(x, m.mean, yerr=[m.mean - m.lo, m.hi - m.mean], fmt="o", capsize=2)
        if ref is not None:
            ax.axhline(ref, color="k", linestyle="--", linewidth=0.8)
        ax.set(xticks=x, xticklabels=sp.layers, ylabel=label)
    axes[1].set_yscale("log")
    return fig


def figure_stationarity(result: SpectraResult):
    sp = result.spectra
    n_layers = len(sp.layers)
    fig, axes = plots.subplots(1, n_layers, width="double", height=2.2, squeeze=False, sharey=True)
    names = [p[0] for p in result.verdicts.phases]
    for l, (layer, idx) in enumerate(result.groups.items()):
        ax, bottom = axes[0, l], np.zeros(len(names))
        for v, verdict in enumerate(STATIONARITY_VERDICTS):
            share = np.array(
                [
                    np.mean(codes[:, idx][result.usable] == v) if result.usable.any() else np.nan
                    for codes in result.verdicts.fdr_bh
                ]
            )
            ax.bar(names, share, bottom=bottom, color=STATIONARITY_COLOURS[verdict], label=verdict)
            bottom += np.nan_to_num(share)
        ax.set(title=layer, ylim=(0, 1))
    axes[0, 0].set_ylabel("fraction of update processes")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


FIGURES = {
    "acf_by_layer": (
        "ACF of parameter updates per layer: mean over the layer's processes, band = 95% t-interval across members",
        figure_acf_by_layer,
    ),
    "psd_by_layer": (
        "Welch PSD of updates normalised to unit power, per layer: median over members of the"
        " layer mean, band 5-95% of members; dashed: white noise; dotted: the AR(1) "
        "(Lorentzian) spectrum at the mean fitted phi; title: the shape rule's verdict",
        figure_psd_by_layer,
    ),
    "spectral_summary": (
        "Spectral slope, band-power ratio (> 1 smooth, < 1 jittery) and fraction of non-white"
        " processes per layer; mean and 95% t-interval across members",
        figure_spectral_summary,
    ),
    "stationarity": (
        "ADF + KPSS verdicts of every update process by phase, each test's p-values "
        "Benjamini-Hochberg adjusted over the phase's processes",
        figure_stationarity,
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


def report(result: SpectraResult, summary: dict, captions: dict, command: str | None) -> Report:
    """The markdown report of the study."""
    sp, s = result.spectra, result.settings
    members = summary["members"]
    rep = Report("Parameter updates as time series")
    rep.text(
        f"{members['used']} of {members['total']} members analysed "
        f"({members['diverged']} diverged and excluded); {sum(sp.counts)} update processes per "
        f"member over {sp.nobs} steps after a burn-in of {summary['burn_in_steps']} steps. "
        f"Intervals are 95% t-intervals across members (fractions: percentile-bootstrap "
        f"intervals). Test accuracy: {fmt_ci(summary['test_accuracy'])}.",
        window_stationarity_text(summary["analysed_window"]),
    )
    rep.section("Rules")
    rep.text("Every sentence of the findings follows from the numbers by one of these rules:")
    rep.bullets([f"{k}: {v}." for k, v in RULES.items()])
    rep.section("Findings")
    bullets = []
    for layer, d in summary["layers"].items():
        bullets.append(
            f"{layer}: lag-1 ACF {fmt_ci(d['acf_lag1'])}; "
            f"{shape_text(d['spectral_shape'], d['spectral_slope'], d['spectral_slope_r2'])}; "
            f"band-power ratio {fmt_ci(d['band_power_ratio'])}: "
            f"{_smooth_word(d['band_power_ratio'])}; white noise rejected (Ljung-Box, "
            f"lags 1..{s.lb_lag}, FDR {s.alpha}) for {fmt_ci(d['ljung_box_white_rejected_fdr'])} "
            "of the processes."
        )
    for phase, d in summary["stationarity"].items():
        parts = [f"{layer} {fmt_ci(v['fraction_of_testable']['stationary'])}" for layer, v in d["fdr_bh"].items()]
        bullets.append(
            f"{phase} steps {d['steps'][0]}-{d['steps'][1]}: fraction of the non-constant "
            f"processes that are stationary (ADF and "
            f"KPSS agree, BH-adjusted): " + ", ".join(parts) + "."
        )
    rep.bullets(bullets)
    rep.section("Autocorrelation and spectra")
    rep.text(
        "Processes that never change (constant: the weights of pixels that are 0 in every "
        "image the member saw) are left out of these summaries; their share is in the table."
    )
    header = [
        "layer",
        "processes",
        "constant",
        "ACF lag 1",
        "spectral slope",
        "slope r^2",
        "band ratio",
        "smooth fraction",
        "flatness",
        "non-white (FDR)",
    ]
    rows = [
        [
            layer,
            d["processes"],
            *(
                fmt_ci(d[k])
                for k in (
                    "constant_fraction",
                    "acf_lag1",
                    "spectral_slope",
                    "spectral_slope_r2",
                    "band_power_ratio",
                    "smooth_fraction",
                    "spectral_flatness",
                    "ljung_box_white_rejected_fdr",
                )
            ),
        ]
        for layer, d in summary["layers"].items()
    ]
    rep.table(header, rows)
    first = next(iter(summary["layers"].values()))
    rep.text(
        f"The slope is an OLS fit of log10 PSD on log10 f over the Welch bins "
        f"{fmt(first['slope_fit_range'][0])}-{fmt(first['slope_fit_range'][1])} cycles/step. "
        "Spectral shape: each process's periodogram (0 < f < 1/2) is fitted by white noise, a "
        "Lorentzian (the AR(1) spectrum c / |1 - phi e^{-iw}|^2) and a power law c f^-beta by "
        f"Whittle maximum likelihood; the lowest AIC wins if it beats the others by {SHAPE_MARGIN} "
        "(else 'indistinguishable', or 'white' when white is within the margin)."
    )
    rep.table(
        [
            "layer",
            *[f"{v} (fraction)" for v in SHAPE_VERDICTS],
            "Lorentzian phi",
            "power-law beta (Whittle)",
            "median AIC(Lor.) - AIC(pow.)",
            "shape",
        ],
        [
            [
                layer,
                *[fmt_ci(d["spectral_shape"]["fractions"][v]) for v in SHAPE_VERDICTS],
                fmt_ci(d["spectral_shape"]["phi"]),
                fmt_ci(d["spectral_shape"]["beta_whittle"]),
                fmt_ci(d["spectral_shape"]["delta_aic_median"]),
                shape_word(d["spectral_shape"]),
            ]
            for layer, d in summary["layers"].items()
        ],
    )
    for name in ("acf_by_layer", "psd_by_layer", "spectral_summary"):
        rep.figure(name, captions[name])
    rep.section("Stationarity by phase")
    rep.text(
        f"ADF (constant, AIC lag) and KPSS (level, automatic lag) per process; a test rejects at "
        f"level {s.alpha}, raw or after Benjamini-Hochberg adjustment of its p-values over all "
        "processes of the phase (false discovery rate control). Counts are processes summed over "
        "members; the stationary fraction is of each member's non-constant (testable) processes, "
        "with a percentile-bootstrap interval across members."
    )
    header = [
        "phase",
        "layer",
        *[f"{v} (BH)" for v in STATIONARITY_VERDICTS],
        "stationary (raw)",
        "stationary fraction (BH)",
    ]
    rows = []
    for phase, d in summary["stationarity"].items():
        for layer, v in d["fdr_bh"].items():
            rows.append(
                [
                    f"{phase} ({d['steps'][0]}-{d['steps'][1]})",
                    layer,
                    *[v["counts"][k] for k in STATIONARITY_VERDICTS],
                    d["raw"][layer]["counts"]["stationary"],
                    fmt_ci(v["fraction_of_testable"]["stationary"]),
                ]
            )
    rep.table(header, rows)
    rep.figure("stationarity", captions["stationarity"])
    rep.section("Configuration")
    rep.config({"train": result.run.config.to_dict(), "spectra": s.to_dict()}, command)
    return rep


def record_runs(
    config: TrainConfig,
    settings: SpectraSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
) -> store.Run:
    """Train and record (or, with ``resume``, reuse) the ensemble in ``out``."""
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
    run: store.Run,
    settings: SpectraSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
    training_s: float | None = None,
) -> dict:
    """Analyse ``run`` (a plain run or one grid point of a sweep) and write ``summary.json``,
    ``report.md`` and ``figures/`` into ``folder``; returns the summary."""
    folder = Path(folder)
    result = analyse(run, settings, progress=progress)
    summary = summarise(result)
    write_summary(folder, summary)
    captions = save_figures(FIGURES, result, folder / "figures")
    report(result, summary, captions, command).write(folder)
    return summary


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`): per layer the
    across-member mean of the low/high band-power ratio (white noise gives 1), of the lag-1
    autocorrelation and of the spectral slope, and the fraction of the analysed window's processes
    that the window's stationarity check accepts."""
    layers = summary["layers"]
    window = summary["analysed_window"]
    return {
        "band power ratio low/high": {k: v["band_power_ratio"]["mean"] for k, v in layers.items()},
        "ACF lag 1": {k: v["acf_lag1"]["mean"] for k, v in layers.items()},
        "spectral slope": {k: v["spectral_slope"]["mean"] for k, v in layers.items()},
        "stationary in the window (fraction)": {
            k: v["stationary_fraction"]["mean"] for k, v in window["layers"].items()
        },
    }
