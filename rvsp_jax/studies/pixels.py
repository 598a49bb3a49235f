"""Section 1 of the RVSP study: the data as random variables and the minibatch stream as a process.

    python -m experiments.pixels --seeds 32 --epochs 1

Nothing is trained. An image is a random vector of 784 pixel intensities: its per-pixel mean and
variance maps, per-class mean images, pixel covariance, PCA spectrum and the correlation of pixel
pairs by distance describe it (:mod:`rvsp_jax.analysis.pixels`). The minibatch stream is the process a
run actually sees: member s's minibatches are cut from the trainer's own epoch orders
(:meth:`rvsp_jax.training.ensemble.Ensemble.orders`), so ``--seeds/--base-seed/--vary/--batch-size/--steps``
give exactly the streams of the training runs with the same flags (the model and optimizer flags
do not matter here). Two orders are compared: ``shuffled`` (the trainer's) and ``sorted`` (each
epoch's order re-arranged by label, ties in the member's shuffled order, so members still differ).
Three scalar processes of the stream, per member: the batch mean intensity, the entropy of the
batch label histogram and the count of each class; their ACF, Welch PSD (smooth-vs-jittery score,
spectral slope), Ljung-Box and ADF/KPSS verdicts are reported with intervals across members and
checked against the exact moments of sampling without replacement.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.analysis import (
    STATIONARITY_VERDICTS,
    acf,
    across_members,
    band_power_ratio,
    fdr_bh,
    ljung_box,
    spectral_slope,
    verdict_fractions,
    welch,
)
from rvsp_jax.analysis import pixels as px
from rvsp_jax.analysis.stationarity import _stationarity_codes_of
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import Dataset, load
from rvsp_jax.io import atomic
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, pct, progress_enabled, write_summary
from rvsp_jax.studies.figures import caption_of, save_figures
from rvsp_jax.studies.folder import open_study
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.training.ensemble import Ensemble

EXPERIMENT = "pixels"
TITLE = "Pixels"
FOLDER = "study"
ORDERS = ("shuffled", "sorted")
OBSERVABLES = ("intensity", "entropy", "counts")
DESCRIPTION = {
    "intensity": "batch mean intensity",
    "entropy": "batch label entropy (bits)",
    "counts": "batch count of each class",
}
EXPLAINED_LEVELS = (0.9, 0.95, 0.99)
DECAY_BAND = (10, 100)
"""Ranks of the PCA eigenvalues fitted by a power law l_k ~ k^-beta."""


@dataclass(frozen=True)
class PixelSettings(StudySettings):
    """Analysis options of the pixels study (the stream itself is set by the training flags)."""

    nlags: int = opt(50, "--nlags", "ACF lags of the minibatch streams (at most T // 2 are used)")
    nperseg: int = opt(256, "--nperseg", "Welch segment length of the stream PSDs (at most T)")
    pca_images: int | None = opt(
        None, "--pca-images", "training images in the pixel moments, covariance and PCA (default: all)"
    )
    alpha: float = opt(0.05, "--alpha", "level of the Ljung-Box and ADF/KPSS tests")

    def __post_init__(self):
        if self.nlags < 1:
            raise ValueError(f"nlags must be >= 1, got {self.nlags}")
        if self.nperseg < 8:
            raise ValueError(f"nperseg must be >= 8, got {self.nperseg}")
        if self.pca_images is not None and self.pca_images < 2:
            raise ValueError(f"pca_images must be >= 2 (or omitted for all), got {self.pca_images}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


# ---- shared by the sections: verdict fractions -------------------------------------------------

# ---- the streams -------------------------------------------------------------------------------


def trainer_orders(config: TrainConfig, dataset: Dataset) -> np.ndarray:
    """Every member's epoch orders ``int32 [S, E, N]`` for the E epochs that ``config``'s steps touch,
    drawn by the trainer itself (:meth:`Ensemble.orders`), so they are the runs' real orders."""
    ens = Ensemble(config, dataset)
    epochs = -(-ens.total_steps // ens.steps_per_epoch)
    parts = [ens.orders(e)[: config.seeds] for e in range(0, epochs, 2)]
    return np.concatenate(parts, axis=1)[:, :epochs]


def streams(config: TrainConfig, dataset: Dataset) -> dict:
    """The minibatch streams of ``config``'s members under both orders.

    Returns ``{order: {"intensity": float64 [S, T], "entropy": float64 [S, T],
    "counts": int64 [S, T, 10]}}`` for order in :data:`ORDERS`.
    """
    n = int(dataset.train_labels.shape[0])
    steps = config.total_steps(n)
    shuffled = trainer_orders(config, dataset)
    means = px.image_means(dataset.train_images)
    out = {}
    for name, orders in (("shuffled", shuffled), ("sorted", px.label_sorted(shuffled, dataset.train_labels))):
        index = px.batch_indices(orders, config.batch_size, steps)
        counts = px.label_counts(dataset.train_labels, index)
        out[name] = {"intensity": px.batch_means(means, index), "entropy": px.label_entropy(counts), "counts": counts}
    return out


def _series(stream: dict, obs: str) -> np.ndarray:
    """Observable ``obs`` as float64 ``[S, K, T]`` (K = 10 classes for counts, else 1)."""
    x = np.asarray(stream[obs], np.float64)
    return np.moveaxis(x, -1, 1) if obs == "counts" else x[:, None, :]


def _per_member(x: np.ndarray) -> np.ndarray:
    """Mean over the K series of each member, ignoring NaN (``[S, K, ...]`` -> ``[S, ...]``); a member
    whose series are all NaN gets NaN."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, x, 0).sum(1) / ok.sum(1)


def stream_statistics(
    x: np.ndarray, *, nlags: int, nperseg: int, alpha: float, theory_var: np.ndarray | None = None
) -> tuple[dict, dict]:
    """Numbers and curves of one observable of one stream, ``x: [S, K, T]`` (K series per member).

    Per member (averaged over its K series): time mean; time variance (ddof 1) and its ratio to
    ``theory_var: [K]`` (the exact variance under shuffling); ACF at lag 1 and averaged over lags
    1..nlags; Welch band-power ratio (low/high halves) and spectral slope beta; these are summarised
    across members (:func:`across_members`). Over all S x K series: Ljung-Box (lags 1..min(10, nlags))
    rejection fractions, raw and BH-adjusted, and ADF/KPSS verdict fractions (raw and BH).
    Curves: ``acf [S, nlags + 1]``, ``freqs [F]``, ``psd [S, F]`` (member means over the K series).
    """
    r = acf(x, nlags)
    freqs, psd = welch(x, nperseg=nperseg)
    ratio = band_power_ratio(freqs, psd)
    beta = spectral_slope(freqs, psd).beta
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.log10(ratio)
    var = x.var(-1, ddof=1)
    lb = ljung_box(x, min(10, nlags)).pvalue[..., -1]
    codes_raw, codes_bh = _stationarity_codes_of(x, alpha)  # int8 codes, compact
    summary = {
        "time_mean": across_members(_per_member(x.mean(-1))),
        "time_var": across_members(_per_member(var)),
        "acf_lag1": across_members(_per_member(r[..., 1])),
        "acf_mean_lags": across_members(_per_member(r[..., 1:].mean(-1))),
        "log10_band_power_ratio": across_members(_per_member(np.where(np.isfinite(log_ratio), log_ratio, np.nan))),
        "spectral_beta": across_members(_per_member(beta)),
        "ljung_box_lag": int(min(10, nlags)),
        "ljung_box_reject": float(np.mean(lb[np.isfinite(lb)] < alpha)) if np.isfinite(lb).any() else None,
        "ljung_box_reject_bh": float(np.mean(fdr_bh(lb, alpha).reject[np.isfinite(lb)]))
        if np.isfinite(lb).any()
        else None,
        "ljung_box_untestable": int((~np.isfinite(lb)).sum()),
        "stationarity": verdict_fractions(codes_raw),
        "stationarity_bh": verdict_fractions(codes_bh),
    }
    if theory_var is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            summary["var_ratio_to_theory"] = across_members(_per_member(var / theory_var[None, :]))
    curves = {"acf": _per_member(r), "freqs": freqs, "psd": _per_member(psd)}
    return summary, curves


# ---- the analysis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelAnalysis:
    """Everything the figures and the report need: ``summary`` (numbers, JSON-ready) and arrays."""

    summary: dict
    moments: px.PixelMoments
    class_means: np.ndarray  # [10, H, W]
    pca: px.PcaSpectrum
    corr: np.ndarray  # [D, D]
    by_distance: px.DistanceCorrelation
    streams: dict  # order -> observable -> array (see streams())
    curves: dict  # order -> observable -> {"acf", "freqs", "psd"}

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays worth keeping on disk (``arrays.npz``)."""
        out = {
            "pixel_mean": self.moments.mean,
            "pixel_var": self.moments.var,
            "class_means": self.class_means,
            "pca_eigenvalues": self.pca.eigenvalues,
            "pca_components_top16": self.pca.components[:16],
            "corr_distance": self.by_distance.distance,
            "corr_by_distance": self.by_distance.mean,
        }
        for order, obs in self.streams.items():
            for name, x in obs.items():
                out[f"stream/{order}/{name}"] = x
        return out


def analyse(config: TrainConfig, settings: PixelSettings, dataset: Dataset, *, progress: bool = True) -> PixelAnalysis:
    """Pixel statistics of ``dataset``'s training images and the statistics of ``config``'s streams."""
    n = int(dataset.train_labels.shape[0])
    steps = config.total_steps(n)
    if steps < 20:
        raise ValueError(
            f"the minibatch streams need at least 20 steps for the ADF/KPSS tests, got "
            f"{steps}; raise --steps or --epochs"
        )
    bar = tqdm(total=3 + 2 * len(OBSERVABLES), desc="pixels analysis", disable=not progress_enabled(progress))
    m = n if settings.pca_images is None else min(settings.pca_images, n)
    images = dataset.train_images[:m]
    moments = px.pixel_moments(images)
    means = px.class_means(images, dataset.train_labels[:m])
    cov = px.pixel_covariance(images)
    pca = px.pca_spectrum(cov)
    corr = px.correlation_matrix(cov)
    by_distance = px.correlation_by_distance(corr, images.shape[1:])
    bar.update()
    ranks = np.arange(1, pca.eigenvalues.size + 1)
    decay = spectral_slope(ranks, pca.eigenvalues, band=DECAY_BAND)
    constant = int(np.sum(moments.var == 0))
    off = ~np.eye(corr.shape[0], dtype=bool) & np.isfinite(corr)
    data_summary = {
        "dataset": dataset.name,
        "images": m,
        "pixels": int(moments.mean.size),
        "mean_intensity": float(moments.mean.mean()),
        "pixel_mean_max": float(moments.mean.max()),
        "pixel_var_max": float(moments.var.max()),
        "total_variance": float(moments.var.sum()),
        "constant_pixels": constant,
        "black_pixels": int(np.sum(moments.mean == 0)),
        "class_mean_intensity": [float(np.nanmean(c)) for c in means],
    }
    pca_summary = {
        "participation_ratio": pca.participation_ratio,
        "components_for": {str(level): px.components_for(pca.explained, level) for level in EXPLAINED_LEVELS},
        "explained_top10": pca.explained[:10],
        "decay_beta": float(decay.beta),
        "decay_intercept": float(decay.intercept),
        "decay_r2": float(decay.r2),
        "decay_band": list(DECAY_BAND),
    }
    corr_summary = {
        "mean_abs_offdiagonal": float(np.abs(corr[off]).mean()),
        "by_distance": {"distance": by_distance.distance, "mean": by_distance.mean},
        "at_distance_1": float(by_distance.mean[by_distance.distance == 1][0]),
    }

    s = streams(config, dataset)
    bar.update()
    b = config.batch_size
    labels = dataset.train_labels
    indicators = (labels[None, :] == np.arange(10)[:, None]).astype(np.float64)  # [10, N]
    intensity_theory = px.sampling_moments(px.image_means(dataset.train_images), b)
    count_theory = px.sampling_moments(indicators, b)
    theory = {
        "intensity": {"mean": float(intensity_theory.mean), "var": float(intensity_theory.var)},
        "counts": {"mean": b * count_theory.mean, "var": b * b * count_theory.var},
        "entropy_max": float(np.log2(10)),
        "acf_within_epoch": intensity_theory.lag_corr,
        "white_noise_acf_band": 1.959963984540054 / np.sqrt(steps),
    }
    theory_var = {"intensity": np.array([intensity_theory.var]), "counts": b * b * count_theory.var, "entropy": None}
    nlags = min(settings.nlags, steps // 2)
    nperseg = min(settings.nperseg, steps)
    stream_summary, curves = {}, {}
    for order in ORDERS:
        stream_summary[order], curves[order] = {}, {}
        for obs in OBSERVABLES:
            stream_summary[order][obs], curves[order][obs] = stream_statistics(
                _series(s[order], obs), nlags=nlags, nperseg=nperseg, alpha=settings.alpha, theory_var=theory_var[obs]
            )
            bar.update()
    bar.update()
    bar.close()
    summary = {
        "experiment": EXPERIMENT,
        "config": config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "data": data_summary,
        "pca": pca_summary,
        "correlation": corr_summary,
        "stream": {
            "members": config.seeds,
            "steps": steps,
            "batch_size": b,
            "vary": config.vary,
            "epochs": steps / (n // b),
            "nlags": nlags,
            "nperseg": nperseg,
            "theory": theory,
            **stream_summary,
        },
    }
    return PixelAnalysis(summary, moments, means, pca, corr, by_distance, s, curves)


# ---- figures -----------------------------------------------------------------------------------


def _image(ax, fig, img, title, *, cmap=None, vmin=None, vmax=None, colorbar=True):
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=0.8)
    return im


def figure_pixel_maps(analysis: PixelAnalysis):
    a = analysis
    fig, axes = plots.subplots(1, 2, width="double", height=2.6)
    _image(axes[0], fig, a.moments.mean, "pixel mean")
    _image(axes[1], fig, a.moments.var, "pixel variance")
    return fig


def figure_class_means(analysis: PixelAnalysis):
    a = analysis
    fig, axes = plots.subplots(2, 5, width="double", height=3.0)
    for c, ax in enumerate(axes.ravel()):
        _image(ax, fig, a.class_means[c], f"class {c}", vmin=0, vmax=1, colorbar=False)
    return fig


def figure_pca_spectrum(analysis: PixelAnalysis):
    a, s = analysis, analysis.summary
    fig, axes = plots.subplots(1, 2, width="double", height=2.6)
    ranks = np.arange(1, a.pca.eigenvalues.size + 1)
    shown = a.pca.eigenvalues > 1e-10 * a.pca.eigenvalues[0]  # constant pixels give rounding zeros
    axes[0].loglog(ranks[shown], a.pca.eigenvalues[shown], label="eigenvalue")
    band = np.array(DECAY_BAND, float)
    axes[0].plot(
        band,
        10 ** s["pca"]["decay_intercept"] * band ** -s["pca"]["decay_beta"],
        "--",
        color="k",
        linewidth=0.8,
        label=f"fit k^-{s['pca']['decay_beta']:.2f} (ranks {DECAY_BAND[0]}-{DECAY_BAND[1]})",
    )
    axes[0].set(xlabel="rank k", ylabel="variance (intensity$^2$)", title="PCA spectrum")
    axes[0].legend()
    cum = np.cumsum(a.pca.explained)
    axes[1].plot(ranks, cum)
    for level, k in s["pca"]["components_for"].items():
        axes[1].axhline(float(level), color="0.7", linewidth=0.5)
        axes[1].plot([k], [float(level)], "o", color="k")
        axes[1].annotate(f"{k}", (k, float(level)), textcoords="offset points", xytext=(4, -8))
    axes[1].set(
        xscale="log",
        xlabel="components k",
        ylabel="cumulative explained variance",
        title=f"participation ratio {s['pca']['participation_ratio']:.1f}",
    )
    return fig


def figure_pca_components(analysis: PixelAnalysis):
    a = analysis
    fig, axes = plots.subplots(2, 4, width="double", height=3.6)
    shape = a.moments.mean.shape
    for k, ax in enumerate(axes.ravel()):
        comp = a.pca.components[k].reshape(shape)
        lim = np.abs(comp).max()
        _image(
            ax,
            fig,
            comp,
            f"PC {k + 1} ({100 * a.pca.explained[k]:.1f}%)",
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
            colorbar=False,
        )
    return fig


def figure_pixel_correlation(analysis: PixelAnalysis):
    a = analysis
    fig, axes = plots.subplots(1, 2, width="double", height=2.8)
    _image(axes[0], fig, a.corr, "pixel correlation", cmap="RdBu_r", vmin=-1, vmax=1)
    axes[0].set(xlabel="pixel", ylabel="pixel")
    axes[1].plot(a.by_distance.distance, a.by_distance.mean, marker="o")
    axes[1].axhline(0, color="0.7", linewidth=0.5)
    axes[1].set(xlabel="distance (pixels)", ylabel="mean correlation of pixel pairs", title="correlation by distance")
    return fig


def figure_stream_traces(analysis: PixelAnalysis):
    s = analysis.summary
    steps = np.arange(s["stream"]["steps"])
    fig, axes = plots.subplots(3, 2, width="double", height=5.0, sharex=True)
    for j, order in enumerate(ORDERS):
        for i, obs in enumerate(OBSERVABLES):
            x = analysis.streams[order][obs]
            x = x[..., 0] if obs == "counts" else x
            ax = axes[i, j]
            plots.plot_members(ax, steps, x[:8], label="members (up to 8)")
            ax.plot(steps, x.mean(0), color=plots.PALETTE[j], label="ensemble mean")
            ax.set(ylabel=DESCRIPTION[obs] if obs != "counts" else "batch count of class 0")
            if i == 0:
                ax.set_title(f"{order} order")
                ax.legend(loc="upper right")
        axes[-1, j].set(xlabel="step")
    return fig


def figure_label_histogram(analysis: PixelAnalysis):
    fig, axes = plots.subplots(1, 2, width="double", height=2.4)
    for ax, order in zip(axes, ORDERS):
        counts = analysis.streams[order]["counts"][0]
        _image(ax, fig, counts.T, f"{order}: label histogram of member 0", cmap="viridis")
        ax.set_aspect("auto")
        ax.set(xlabel="step", ylabel="class")
        ax.set_yticks(range(10))
    return fig


def figure_stream_acf(analysis: PixelAnalysis):
    s = analysis.summary
    fig, axes = plots.subplots(1, 3, width="double", height=2.4)
    band = s["stream"]["theory"]["white_noise_acf_band"]
    for ax, obs in zip(axes, OBSERVABLES):
        for j, order in enumerate(ORDERS):
            r = analysis.curves[order][obs]["acf"]
            lags = np.arange(r.shape[-1])
            m = across_members(r)
            plots.plot_band(ax, lags[1:], m.mean[1:], m.lo[1:], m.hi[1:], label=order, color=plots.PALETTE[j])
        ax.axhspan(-band, band, color="0.85", linewidth=0, label="white-noise 95% band")
        ax.axhline(
            s["stream"]["theory"]["acf_within_epoch"], color="k", linestyle="--", linewidth=0.8, label="shuffled, exact"
        )
        ax.set(xlabel="lag (steps)", ylabel="ACF", title=DESCRIPTION[obs])
    axes[0].legend()
    return fig


def figure_stream_psd(analysis: PixelAnalysis):
    fig, axes = plots.subplots(1, 3, width="double", height=2.4)
    for ax, obs in zip(axes, OBSERVABLES):
        for j, order in enumerate(ORDERS):
            c = analysis.curves[order][obs]
            if np.any(np.isfinite(c["psd"]) & (c["psd"] > 0)):
                plots.plot_psd_bands(ax, c["freqs"], c["psd"], label=order, color=plots.PALETTE[j])
        ax.set(xlabel="frequency (1/step)", ylabel="PSD", title=DESCRIPTION[obs])
    axes[0].legend()
    return fig


def figure_stream_stationarity(analysis: PixelAnalysis):
    s = analysis.summary
    rows = [f"{order}: {obs}" for order in ORDERS for obs in OBSERVABLES]
    cells = [
        [pct(s["stream"][order][obs]["stationarity_bh"][v]) for v in STATIONARITY_VERDICTS]
        for order in ORDERS
        for obs in OBSERVABLES
    ]
    fig, ax = plots.subplots(width="double", height=1.8)
    plots.verdict_table(ax, rows, STATIONARITY_VERDICTS, cells)
    ax.set_title("ADF + KPSS verdicts (fraction of series, BH-adjusted)")
    return fig


FIGURES = {
    "pixel_maps": ("Per-pixel mean and (population) variance of the intensity (0 black, 1 white).", figure_pixel_maps),
    "class_means": ("Mean image of every class.", figure_class_means),
    "pca_spectrum": (
        "Eigenvalues of the pixel covariance (PCA variances) with a power-law fit over ranks "
        "10-100, and the cumulative explained variance.",
        figure_pca_spectrum,
    ),
    "pca_components": ("The first eight principal components (red positive, blue negative).", figure_pca_components),
    "pixel_correlation": (
        "Pixel correlation matrix (constant pixels blank) and the mean correlation of pixel pairs by their distance.",
        figure_pixel_correlation,
    ),
    "stream_traces": (
        "The three processes under both orders (grey: members; colour: ensemble mean).",
        figure_stream_traces,
    ),
    "label_histogram": ("The batch label histogram of member 0 as a process.", figure_label_histogram),
    "stream_acf": (
        "ACF (mean across members, 95% t-interval) with the white-noise band and the exact "
        "within-epoch correlation of a shuffled stream.",
        figure_stream_acf,
    ),
    "stream_psd": ("Welch PSD (median across members, 5-95% band).", figure_stream_psd),
    "stream_stationarity": (
        lambda analysis: (
            f"Joint ADF + KPSS verdicts (alpha {analysis.summary['settings']['alpha']}, "
            "Benjamini-Hochberg over the series of each row)."
        ),
        figure_stream_stationarity,
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


# ---- report ------------------------------------------------------------------------------------


def report(analysis: PixelAnalysis, command: str | None = None) -> Report:
    """The markdown report of the pixels study."""
    s = analysis.summary
    st = s["stream"]
    th = st["theory"]
    d, p, c = s["data"], s["pca"], s["correlation"]
    rep = Report("Data as a random process: pixels and the minibatch stream")
    rep.text(
        f"{d['dataset']} training images ({d['images']:,} for the pixel statistics); minibatch "
        f"streams of S = {st['members']} members, {st['steps']:,} steps of batch {st['batch_size']} "
        f"({st['epochs']:.2f} epochs, vary={st['vary']}). Nothing is trained: the streams are "
        "cut from the trainer's own epoch orders (Ensemble.orders), so they are the minibatches "
        "of a training run with the same flags. Intervals are 95% Student-t intervals across "
        "members."
    )
    rep.section("Findings").bullets(
        [
            f"Mean intensity {fmt(d['mean_intensity'])}; {d['constant_pixels']} of {d['pixels']} pixels "
            f"never vary ({d['black_pixels']} are black in every image); the largest pixel variance is "
            f"{fmt(d['pixel_var_max'])}.",
            f"PCA: {p['components_for']['0.9']} / {p['components_for']['0.95']} / "
            f"{p['components_for']['0.99']} components explain 90 / 95 / 99% of the pixel variance; "
            f"participation ratio {fmt(p['participation_ratio'])}; eigenvalues decay as k^-{fmt(p['decay_beta'])} "
            f"over ranks {p['decay_band'][0]}-{p['decay_band'][1]} (R² {fmt(p['decay_r2'])}).",
            f"Neighbouring pixels correlate at {fmt(c['at_distance_1'])} on average (distance 1); mean "
            f"|correlation| over all pairs {fmt(c['mean_abs_offdiagonal'])}.",
            *[
                f"{order} stream, batch mean intensity: variance / exact shuffled variance "
                f"{fmt_ci(st[order]['intensity']['var_ratio_to_theory'])}; ACF at lag 1 "
                f"{fmt_ci(st[order]['intensity']['acf_lag1'])} (exact within an epoch under shuffling: "
                f"{fmt(th['acf_within_epoch'])}); log10 low/high band-power ratio "
                f"{fmt_ci(st[order]['intensity']['log10_band_power_ratio'])}; ADF+KPSS verdicts (BH) "
                + ", ".join(f"{v} {pct(st[order]['intensity']['stationarity_bh'][v])}" for v in STATIONARITY_VERDICTS)
                + " of members."
                for order in ORDERS
            ],
        ]
    )
    rep.section("Pixels as random variables")
    rep.figure("pixel_maps", FIGURES["pixel_maps"][0])
    rep.figure("class_means", FIGURES["class_means"][0])
    rep.table(["class", *map(str, range(10))], [["mean intensity", *d["class_mean_intensity"]]])
    rep.figure("pca_spectrum", FIGURES["pca_spectrum"][0])
    rep.figure("pca_components", FIGURES["pca_components"][0])
    rep.figure("pixel_correlation", FIGURES["pixel_correlation"][0])
    rep.section("The minibatch stream as a process")
    rep.text(
        "Under shuffling a batch is a draw without replacement, so its mean intensity has the "
        f"exact mean {fmt(th['intensity']['mean'])} and variance {fmt(th['intensity']['var'])} "
        f"(finite-population correction), and two batches of one epoch correlate at "
        f"-B/(N-B) = {fmt(th['acf_within_epoch'])}; class counts are hypergeometric. The label "
        "entropy is at most log2(10) = 3.32 bits. The sorted order walks through the classes, "
        "so its processes shift level class by class; its label histogram at a step is the same "
        "for every member (the class boundaries fall at the same steps whatever the order within "
        "a class), so the entropy and counts of the sorted stream have no spread across members."
    )
    header = [
        "order",
        "observable",
        "time mean",
        "variance / exact",
        "ACF lag 1",
        f"mean ACF lags 1-{st['nlags']}",
        "log10 band ratio",
        "spectral beta",
        f"Ljung-Box rejects (lag {st['shuffled']['intensity']['ljung_box_lag']}, BH)",
    ]
    rows = []
    for order in ORDERS:
        for obs in OBSERVABLES:
            o = st[order][obs]
            rows.append(
                [
                    order,
                    DESCRIPTION[obs],
                    fmt_ci(o["time_mean"]),
                    fmt_ci(o["var_ratio_to_theory"]) if "var_ratio_to_theory" in o else "—",
                    fmt_ci(o["acf_lag1"]),
                    fmt_ci(o["acf_mean_lags"]),
                    fmt_ci(o["log10_band_power_ratio"]),
                    fmt_ci(o["spectral_beta"]),
                    pct(o["ljung_box_reject_bh"]),
                ]
            )
    rep.table(header, rows)
    rep.text(
        "Class counts: each member's number is the mean over the 10 classes (classes whose count "
        "never changes in the window have no ACF or spectral slope and are left out)."
    )
    rep.figure("stream_traces", FIGURES["stream_traces"][0])
    rep.figure("label_histogram", FIGURES["label_histogram"][0])
    rep.figure("stream_acf", FIGURES["stream_acf"][0])
    rep.figure("stream_psd", FIGURES["stream_psd"][0])
    rep.table(
        ["order", "observable", "series", *STATIONARITY_VERDICTS, "stationary (raw)"],
        [
            [
                order,
                DESCRIPTION[obs],
                st[order][obs]["stationarity_bh"]["n"],
                *[pct(st[order][obs]["stationarity_bh"][v]) for v in STATIONARITY_VERDICTS],
                pct(st[order][obs]["stationarity"]["stationary"]),
            ]
            for order in ORDERS
            for obs in OBSERVABLES
        ],
    )
    rep.figure("stream_stationarity", caption_of(FIGURES["stream_stationarity"][0], analysis))
    rep.config({"train": s["config"], "pixels": s["settings"]}, command)
    return rep


def save_arrays(folder, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays.npz`` in ``folder`` atomically (temporary file, then rename)."""
    path = Path(folder) / "arrays.npz"
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic.write_bytes(path, buf.getvalue())


def record_runs(
    config: TrainConfig,
    settings: PixelSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> TrainConfig:
    """Nothing is trained: open (or, with ``resume``, reopen with the same settings) the study folder
    ``out``; returns the configuration whose minibatch streams :func:`write_results` analyses."""
    open_study(
        Path(out),
        EXPERIMENT,
        {"config": config.to_dict(), "pixels": dataclasses.asdict(settings)},
        resume=resume,
        overwrite=overwrite,
        command=command,
    )
    return config


def write_results(
    config: TrainConfig,
    settings: PixelSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    training_s: float | None = None,
) -> dict:
    """Analyse the pixels and the streams of ``config`` and write arrays.npz, summary.json, report.md
    and figures/ into ``folder``; returns the summary."""
    folder = Path(folder)
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    analysis = analyse(config, settings, data, progress=progress)
    save_arrays(folder, analysis.arrays())
    write_summary(folder, analysis.summary)
    save_figures(FIGURES, analysis, folder / "figures")
    report(analysis, command).write(folder)
    return analysis.summary
