"""Section 5 of the RVSP study: SGD vs momentum vs Adam (or any optax optimizer) as filters.

Each variant trains its own ensemble (same seeds, data and network; only the optimizer differs) and
records, at every step, the updates and the minibatch gradients of the same parameters. The update
processes are compared side by side (ACF and normalised Welch PSD per layer, as in
:mod:`rvsp_jax.studies.spectra`), and where theory exists it is overlaid:

- optax.sgd with momentum beta (heavy ball) turns gradients into updates by
  ``u_t = beta u_{t-1} + g_t, d_t = -lr u_t``, so ``PSD_d = lr^2 / |1 - beta e^{-iw}|^2 PSD_g``
  (exact for the recorded gradients: it is a linear filter of the whole gradient, signal and noise);
  plain SGD is beta = 0, Nesterov its own gain (:mod:`rvsp_jax.analysis.optimizer_filters`);
- Adam is approximated by its first-moment filter divided by ``E[g^2]`` (b2 near 1 and a steady
  gradient variance; intermittent gradients, such as the weights of rarely active pixels, break it).

For every recorded parameter the gradient PSD is estimated (Welch), mapped through the gain
(:func:`rvsp_jax.analysis.predicted_update_psd`) and compared with the measured update PSD: the
*relative error* of a process is the median over frequencies f > 0 of ``|measured - predicted| /
predicted``; per member its median over a layer's processes, then a t-interval across members.
Welch estimates of the two PSDs smooth over the window's bandwidth (1/nperseg), so a gain that
changes faster than that (beta near 1) is blurred, and float32 rounding of recorded updates adds a
white floor where updates are tiny; both show up as error.

The study folder holds one recorded run per variant under ``runs/<variant>/``
(:mod:`rvsp_jax.studies.folder`), plus ``summary.json``, ``report.md`` and ``figures/``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from rvsp_jax import plots, store
from rvsp_jax.analysis import across_members, is_constant, predicted_update_psd, welch
from rvsp_jax.config import TrainConfig, optimizer_names, opt
from rvsp_jax.probes import ProbeConfig
from rvsp_jax.report import Report, fmt, fmt_ci, write_summary
from rvsp_jax.studies.folder import finish_study, open_study, train_variant
from rvsp_jax.studies.spectra import (
    LayerSpectra, below_nyquist, layer_groups, measure_layers, member_series, members_summary,
    per_layer, usable_members)

EXPERIMENT = "optimizers"
TRAIN_DEFAULTS = {"seeds": 16, "steps": 4000, "chunk": 500}
"""16 members and 4,000 steps per variant (45 s in all for the three default variants, measured on 2
shared CPU cores)."""


@dataclass(frozen=True)
class Variant:
    """One optimizer of the comparison: ``optax.<optimizer>(learning_rate=lr, **opt_kwargs)``."""

    name: str
    optimizer: str
    lr: float
    opt_kwargs: str = "{}"

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"variant name {self.name!r} must be a plain folder name")
        TrainConfig(optimizer=self.optimizer, lr=self.lr, opt_kwargs=self.opt_kwargs).make_optimizer()

    def config(self, base: TrainConfig) -> TrainConfig:
        """``base`` with this variant's optimizer, learning rate and keyword arguments."""
        return dataclasses.replace(base, optimizer=self.optimizer, lr=self.lr, opt_kwargs=self.opt_kwargs)

    def kwargs(self) -> dict:
        return json.loads(self.opt_kwargs)

    def theory(self) -> tuple[str, float] | None:
        """``(kind, beta)`` of :func:`~rvsp_jax.analysis.predicted_update_psd` for this optimizer, or
        None where no linear-filter theory applies."""
        kw = self.kwargs()
        if self.optimizer == "sgd":
            beta = kw.get("momentum") or 0.0
            return ("nesterov" if kw.get("nesterov") and beta else "momentum", float(beta))
        if self.optimizer == "adam":
            return ("adam", float(kw.get("b1", 0.9)))
        return None


PRESETS = {
    "sgd": Variant("sgd", "sgd", 0.1),
    "momentum": Variant("momentum", "sgd", 0.01, '{"momentum": 0.9}'),
    "nesterov": Variant("nesterov", "sgd", 0.01, '{"momentum": 0.9, "nesterov": true}'),
    "adam": Variant("adam", "adam", 1e-3),
}
"""Named variants. Momentum and Nesterov take lr 0.01 so that their effective step lr / (1 - beta)
equals plain SGD's 0.1."""


def parse_variants(spec: str, base: TrainConfig) -> tuple[Variant, ...]:
    """The variants of ``--variants``.

    Either a comma-separated list whose items are a preset (``sgd``, ``momentum``, ``nesterov``,
    ``adam``) or any optax optimizer name (which takes ``base.lr`` and ``base.opt_kwargs``), each
    optionally followed by ``:lr`` (``momentum:0.02,rmsprop:1e-3``); or a JSON list of objects
    ``{"name": ..., "optimizer": ..., "lr": ..., "opt_kwargs": {...}}`` (name defaults to the
    optimizer, lr to ``base.lr``).
    """
    text = spec.strip()
    variants = []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--variants is not valid JSON: {e}") from None
        for item in items:
            if not isinstance(item, dict) or "optimizer" not in item:
                raise ValueError(f"each JSON variant needs at least an optimizer, got {item!r}")
            unknown = set(item) - {"name", "optimizer", "lr", "opt_kwargs"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)} in variant {item!r}")
            variants.append(Variant(item.get("name", item["optimizer"]), item["optimizer"],
                                    float(item.get("lr", base.lr)),
                                    json.dumps(item.get("opt_kwargs", {}), sort_keys=True)))
    else:
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, lr = item.partition(":")
            if name in PRESETS:
                variant = PRESETS[name]
            elif name in optimizer_names():
                variant = Variant(name, name, base.lr, base.opt_kwargs)
            else:
                raise ValueError(f"unknown variant {name!r}: use a preset ({', '.join(PRESETS)}), an "
                                 "optax optimizer name (sgd, adam, rmsprop, ...) or a JSON list")
            if lr:
                try:
                    variant = dataclasses.replace(variant, lr=float(lr))
                except ValueError:
                    raise ValueError(f"bad learning rate {lr!r} in variant {item!r}") from None
            variants.append(variant)
    names = [v.name for v in variants]
    if not variants or len(set(names)) != len(names):
        raise ValueError(f"--variants needs one or more variants with distinct names, got {names}")
    return tuple(variants)


@dataclass(frozen=True)
class OptimizerSettings:
    """Options of the optimizer comparison (the training flags are shared by every variant).

    Example::

        python -m experiments.optimizers --variants sgd,momentum,nesterov,adam --seeds 32
        python -m experiments.optimizers --variants '[{"name": "m99", "optimizer": "sgd",
            "lr": 0.001, "opt_kwargs": {"momentum": 0.99}}]'
    """

    variants: str = opt("sgd,momentum,adam", "--variants",
                        "optimizers to compare: presets (sgd, momentum, nesterov, adam) or optax names, "
                        "each optionally :lr (e.g. momentum,rmsprop:1e-3), or a JSON list of "
                        '{"name", "optimizer", "lr", "opt_kwargs"}; plain optax names use --lr and '
                        "--opt-kwargs")
    index: str = opt("16", "--probe-index", "parameters whose updates and gradients are recorded: "
                     "K per parameter array, total=N, all, or names")
    nlags: int = opt(50, "--nlags", "ACF lags")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (clipped to the series length)")
    burn_in: float = opt(0.1, "--burn-in", "fraction of the steps left out of the analysis")

    def __post_init__(self):
        if self.nlags < 1 or self.nperseg < 4:
            raise ValueError(f"nlags must be >= 1 and nperseg >= 4, got {self.nlags}, {self.nperseg}")
        if not 0 <= self.burn_in < 1:
            raise ValueError(f"burn_in is a fraction of the steps in [0, 1), got {self.burn_in}")
        ProbeConfig(index=self.index)

    def probes(self) -> ProbeConfig:
        """Updates and gradients of the same parameters at every step (the filter needs both)."""
        return ProbeConfig(probes="updates,grads", index=self.index, every=1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TheoryFit(NamedTuple):
    """Measured against predicted update PSDs of one variant (float64; excluded members NaN).

    kind, beta, lr: the filter (:func:`~rvsp_jax.analysis.predicted_update_psd`); freqs ``[F]``.
    measured, predicted: ``[S, L, F]`` layer means of each process's PSD, both divided by the
      measured PSD's total power (so the measured curve is the one of
      :attr:`LayerSpectra.psd`).
    rel_error: ``[S, L]`` median over the layer's processes of the median over f > 0 of
      ``|measured - predicted| / predicted``.
    """

    kind: str
    beta: float
    lr: float
    freqs: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    rel_error: np.ndarray


def fit_theory(updates, grads, names, variant: Variant, usable: np.ndarray, *, start: int = 0,
               nperseg: int = 256, progress: bool = False) -> TheoryFit | None:
    """Compare every update PSD with the one its gradient PSD predicts (None without theory).

    updates, grads: ``[S, T, P]`` (lazy zarr arrays are read one member at a time) of the same
    parameters, named ``names`` ``[P]``; analysed from step ``start``. Processes whose updates or
    gradients are constant are skipped.
    """
    theory = variant.theory()
    if theory is None:
        return None
    kind, beta = theory
    groups = layer_groups(names)
    n_members, n_steps = updates.shape[0], updates.shape[1] - start
    nperseg = min(nperseg, n_steps)
    freqs = np.fft.rfftfreq(nperseg)
    measured = np.full((n_members, len(groups), freqs.size), np.nan)
    predicted, rel_error = measured.copy(), np.full((n_members, len(groups)), np.nan)
    for s in tqdm(np.flatnonzero(usable), desc=f"theory {variant.name}", disable=not progress, leave=False):
        d, g = member_series(updates, s, start), member_series(grads, s, start)
        dead = is_constant(d) | is_constant(g)
        d[dead], g[dead] = np.nan, np.nan
        freqs, psd_d = welch(d, nperseg=nperseg)
        _, psd_g = welch(g, nperseg=nperseg)
        with jax.enable_x64(True):
            pred = np.asarray(predicted_update_psd(freqs, psd_g, beta, variant.lr, kind=kind,
                                                   grad_second_moment=np.mean(g * g, axis=-1)))
        total = psd_d.sum(axis=-1, keepdims=True) * (freqs[1] - freqs[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.median(np.abs(psd_d[:, 1:] - pred[:, 1:]) / pred[:, 1:], axis=-1)
            measured[s] = per_layer(psd_d / total, groups)
            predicted[s] = per_layer(pred / total, groups)
        rel_error[s] = per_layer(err, groups, np.nanmedian)
    return TheoryFit(kind, beta, variant.lr, freqs, measured, predicted, rel_error)


class VariantResult(NamedTuple):
    variant: Variant
    run: store.Run
    usable: np.ndarray
    spectra: LayerSpectra
    theory: TheoryFit | None


def analyse_variant(run: store.Run, variant: Variant, settings: OptimizerSettings, *,
                    progress: bool = False) -> VariantResult:
    usable = usable_members(run)
    x = run["updates"]
    start = int(settings.burn_in * x.shape[1])
    if x.shape[1] - start < 8:
        raise ValueError(f"{x.shape[1] - start} steps after the burn-in are too few for spectra; "
                         "train longer (--steps) or lower --burn-in")
    spectra = measure_layers(x, run.probe_names["updates"], usable, start=start, nlags=settings.nlags,
                             nperseg=settings.nperseg, progress=progress, desc=f"spectra {variant.name}")
    theory = fit_theory(x, run["grads"], run.probe_names["updates"], variant, usable, start=start,
                        nperseg=settings.nperseg, progress=progress)
    return VariantResult(variant, run, usable, spectra, theory)


_FILTERS = {"momentum": "lr^2 / |1 - beta e^-iw|^2 (heavy ball; beta = 0 is plain SGD)",
            "nesterov": "lr^2 |(1+beta) - beta e^-iw|^2 / |1 - beta e^-iw|^2 (Nesterov)",
            "adam": "lr^2 (1-b1)^2 / |1 - b1 e^-iw|^2 / E[g^2] (Adam, approximate: b2 near 1)"}


def summarise(results: list[VariantResult], settings: OptimizerSettings, base: TrainConfig) -> dict:
    variants = {}
    for r in results:
        sp = r.spectra
        entry = {
            "optimizer": r.variant.optimizer, "lr": r.variant.lr, "opt_kwargs": r.variant.kwargs(),
            "folder": f"runs/{r.variant.name}", "members": members_summary(r.usable),
            "test_accuracy": across_members(np.where(r.usable, r.run.final().test_accuracy, np.nan)),
            "layers": {layer: {
                "processes": int(sp.counts[l]),
                "acf_lag1": across_members(sp.acf[:, l, 1]),
                "spectral_slope": across_members(sp.slope[:, l]),
                "band_power_ratio": across_members(sp.band_ratio[:, l]),
                "spectral_flatness": across_members(sp.flatness[:, l])}
                for l, layer in enumerate(sp.layers)},
            "theory": None,
        }
        if r.theory is not None:
            entry["theory"] = {
                "kind": r.theory.kind, "beta": r.theory.beta, "filter": _FILTERS[r.theory.kind],
                "approximate": r.theory.kind == "adam",
                "median_relative_error": {layer: across_members(r.theory.rel_error[:, l])
                                          for l, layer in enumerate(sp.layers)}}
        variants[r.variant.name] = entry
    return {"experiment": EXPERIMENT, "config": base.to_dict(), "settings": settings.to_dict(),
            "series_length": results[0].spectra.nobs, "variants": variants}


def figures(results: list[VariantResult], folder: Path) -> dict[str, str]:
    """Draw every figure into ``folder``; returns name -> caption."""
    layers = results[0].spectra.layers
    captions = {}
    with plots.paper_style():
        fig, axes = plots.subplots(1, len(layers), width="double", height=2.2, squeeze=False, sharey=True)
        for l, ax in enumerate(axes[0]):
            for r in results:
                m = across_members(r.spectra.acf[:, l, 1:])
                plots.plot_band(ax, np.arange(1, m.mean.size + 1), m.mean, m.lo, m.hi, label=r.variant.name)
            ax.axhline(0, color="0.3", linewidth=0.5)
            ax.set(title=layers[l], xlabel="lag (steps)")
        axes[0, 0].set_ylabel("ACF of updates")
        axes[0, 0].legend()
        plots.save_figure(fig, folder, "update_acf")
        captions["update_acf"] = ("ACF of parameter updates per layer and optimizer: mean over the "
                                  "layer's processes, band = 95% t-interval across members")

        fig, axes = plots.subplots(1, len(layers), width="double", height=2.2, squeeze=False, sharey=True)
        for l, ax in enumerate(axes[0]):
            for r in results:
                plots.plot_psd_bands(ax, *below_nyquist(r.spectra.freqs, r.spectra.psd[:, l]),
                                     label=r.variant.name)
            ax.set(title=layers[l], xlabel="frequency (cycles/step)")
        axes[0, 0].set_ylabel("normalised update PSD")
        axes[0, 0].legend()
        plots.save_figure(fig, folder, "update_psd")
        captions["update_psd"] = ("Welch PSD of updates normalised to unit power (white noise: 2), per "
                                  "layer and optimizer: median over members, band 5-95% of members")

        fitted = [r for r in results if r.theory is not None]
        if fitted:
            fig, axes = plots.subplots(len(fitted), len(layers), width="double",
                                       height=1.9 * len(fitted), squeeze=False, sharex=True)
            for i, r in enumerate(fitted):
                for l, ax in enumerate(axes[i]):
                    f, measured = below_nyquist(r.theory.freqs, r.theory.measured[:, l])
                    predicted = below_nyquist(r.theory.freqs, r.theory.predicted[:, l])[1]
                    theory = np.nanmedian(predicted[r.usable], axis=0) if r.usable.any() else None
                    plots.plot_psd_bands(ax, f, measured, theory, label="measured",
                                         theory_label="predicted from gradients")
                    err = across_members(r.theory.rel_error[:, l])
                    ax.set_title(f"{r.variant.name}, {layers[l]}\nmedian rel. error {fmt(err.mean, 2)}")
                axes[i, 0].set_ylabel("update PSD")
            for ax in axes[-1]:
                ax.set_xlabel("frequency (cycles/step)")
            axes[0, 0].legend()
            plots.save_figure(fig, folder, "psd_theory")
            captions["psd_theory"] = ("Measured update PSD (median over members, band 5-95%) against the "
                                      "optimizer filter applied to each parameter's gradient PSD (dashed, "
                                      "median over members); both normalised by the measured power")

            fig, ax = plots.subplots(width="single", height=2.4)
            x = np.arange(len(layers))
            width = 0.8 / len(fitted)
            for i, r in enumerate(fitted):
                m = across_members(r.theory.rel_error)
                ax.errorbar(x + (i - (len(fitted) - 1) / 2) * width, m.mean,
                            yerr=[m.mean - m.lo, m.hi - m.mean], fmt="o", capsize=2, label=r.variant.name)
            ax.set(xticks=x, xticklabels=layers, ylabel="median relative error", yscale="log")
            ax.legend()
            plots.save_figure(fig, folder, "theory_error")
            captions["theory_error"] = ("Median relative error |measured - predicted| / predicted of the "
                                        "update PSD per layer; mean and 95% t-interval across members")
    return captions


def report(summary: dict, captions: dict, settings: OptimizerSettings, base: TrainConfig,
           command: str | None) -> Report:
    rep = Report("Optimizers as filters: SGD, momentum, Adam")
    variants = summary["variants"]
    rep.text(f"Each variant trains {base.seeds} members (same seeds, data and network: "
             f"{'-'.join(map(str, (784, *base.widths, 10)))} {base.activation}, batch {base.batch_size}); "
             f"updates and gradients of the same parameters recorded at every step, analysed over "
             f"{summary['series_length']} steps after the burn-in. Intervals are 95% t-intervals "
             "across members; diverged members are excluded and counted.")
    rows = [[name, _describe(v), f"{v['members']['used']}/{v['members']['total']}",
             v["members"]["diverged"], fmt_ci(v["test_accuracy"])] for name, v in variants.items()]
    rep.table(["variant", "optimizer", "members used", "diverged", "test accuracy"], rows)
    rep.section("Findings")
    bullets = []
    for name, v in variants.items():
        parts = [f"{layer} lag-1 ACF {fmt_ci(d['acf_lag1'])}, slope {fmt_ci(d['spectral_slope'])}"
                 for layer, d in v["layers"].items()]
        bullets.append(f"{name}: " + "; ".join(parts) + ".")
        t = v["theory"]
        if t is not None:
            errs = ", ".join(f"{layer} {fmt_ci(e)}" for layer, e in t["median_relative_error"].items())
            bullets.append(f"{name}: the {'approximate ' if t['approximate'] else ''}filter prediction "
                           f"({t['kind']}, beta = {t['beta']:g}) matches the measured update PSD to a "
                           f"median relative error of {errs}.")
        else:
            bullets.append(f"{name}: no linear-filter theory for optax.{v['optimizer']}; measured only.")
    rep.bullets(bullets)
    rep.section("Update processes side by side")
    header = ["variant", "layer", "processes", "ACF lag 1", "spectral slope", "band ratio", "flatness"]
    rows = [[name, layer, d["processes"], fmt_ci(d["acf_lag1"]), fmt_ci(d["spectral_slope"]),
             fmt_ci(d["band_power_ratio"]), fmt_ci(d["spectral_flatness"])]
            for name, v in variants.items() for layer, d in v["layers"].items()]
    rep.table(header, rows)
    rep.figure("update_acf", captions["update_acf"]).figure("update_psd", captions["update_psd"])
    if "psd_theory" in captions:
        rep.section("Theory: update PSD = |H|^2 x gradient PSD")
        rep.text("For each parameter the Welch PSD of its recorded minibatch gradients is multiplied by "
                 "the optimizer's power gain |H(e^{iw})|^2 and compared with the Welch PSD of its "
                 "recorded updates. Error of a process: median over frequencies f > 0 of "
                 "|measured - predicted| / predicted; per member the median over a layer's processes.")
        rows = [[name, v["theory"]["filter"],
                 *[fmt_ci(e) for e in v["theory"]["median_relative_error"].values()]]
                for name, v in variants.items() if v["theory"] is not None]
        layers = next(iter(variants.values()))["layers"]
        rep.table(["variant", "power gain |H|^2", *layers], rows)
        rep.figure("psd_theory", captions["psd_theory"]).figure("theory_error", captions["theory_error"])
    rep.section("Configuration")
    rep.config({"train": base.to_dict(), "optimizers": settings.to_dict(),
                "variants": {n: {k: v[k] for k in ("optimizer", "lr", "opt_kwargs")}
                             for n, v in variants.items()}}, command)
    return rep


def _describe(v: dict) -> str:
    extra = ", ".join(f"{k}={x}" for k, x in v["opt_kwargs"].items())
    return f"optax.{v['optimizer']}(lr={v['lr']:g}{', ' + extra if extra else ''})"


def run_study(base: TrainConfig, settings: OptimizerSettings, out, *, resume: bool = False,
              overwrite: bool = False, command: str | None = None, progress: bool = True) -> Path:
    """Train (or reuse) every variant into ``out/runs/<variant>``, compare them and write
    ``summary.json``, ``report.md`` and ``figures/``; returns ``out``."""
    variants = parse_variants(settings.variants, base)
    out = open_study(out, EXPERIMENT, {
        "config": base.to_dict(), "settings": settings.to_dict(),
        "variants": [dataclasses.asdict(v) for v in variants]},
        resume=resume, overwrite=overwrite, command=command)
    results = []
    for variant in variants:
        run = train_variant(out, variant.name, variant.config(base), settings.probes(), resume=resume,
                            experiment=EXPERIMENT, progress=progress)
        results.append(analyse_variant(run, variant, settings, progress=progress))
    summary = summarise(results, settings, base)
    write_summary(out, summary)
    captions = figures(results, out / "figures")
    report(summary, captions, settings, base, command).write(out)
    finish_study(out)
    return out
