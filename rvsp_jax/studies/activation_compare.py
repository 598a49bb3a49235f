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
parameter array, the training loss, and the layer activation summaries. Per member and per layer
(Dense_0, Dense_1 hidden, Dense_2 output; kernel and bias entries together), in three kinds of
window (:func:`choose_windows`):

- ``equal_steps``: every step after the burn-in, the same steps for every variant;
- ``loss_matched``: for each variant the ``--window`` steps around the first step (after the
  burn-in) where its median training loss reaches the lowest loss every variant reaches, so the
  variants are compared at the same training progress rather than the same step;
- ``stationary``: the latest block of ``--window`` steps after the burn-in (the same steps for every
  variant) in which, for every variant, at least :data:`STATIONARY_ACCEPT` of the testable gradient
  and update entries pass ADF + KPSS and the median relative variance drift is at most
  :data:`DRIFT_ACCEPT` (:func:`window_acceptance`); none if no block qualifies.

In each window: the log10 variance (mean over entries of each entry's variance over steps), the
excess kurtosis (intermittency) of the entry-standardised values, the smooth-vs-jittery score
(log10 band-power ratio), the spectral slope, the relative variance drift and the stationary
fraction; proportions get percentile-bootstrap intervals across members (never outside [0, 1]),
other statistics t-intervals.

Inactive units are measured like for like (:func:`relative_derivative`): for every activation the
fraction of (probe image, unit) pairs whose derivative phi'(z) is below a fraction c of its maximum,
for the thresholds :data:`INACTIVE_THRESHOLDS` at the initial and final weights, and over training at
c = 0.19 (the recorded layer summaries: sigmoid/tanh ``saturated`` and ReLU ``zero`` are exactly
phi' < 0.19 max phi'); exact zeros (phi' = 0: no gradient passes) are counted separately.

A member that diverged in a variant is excluded from that variant's numbers and from every paired test
involving it, and counted; a variant with no member left stops the analysis with an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from scipy import stats
from scipy.ndimage import uniform_filter1d
from tqdm.auto import tqdm

from rvsp_jax.analysis import (
    STATIONARITY_VERDICTS,
    MemberSummary,
    across_members,
    band_power_ratio,
    measure_drift,
    spectral_slope,
    verdict_fractions,
    welch,
)
from rvsp_jax.analysis.stationarity import _stationarity_codes_of
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import Dataset, load, to_model_inputs
from rvsp_jax.io import store
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, pct, progress_enabled, proportion_summary, write_summary
from rvsp_jax.studies.figures import save_figures
from rvsp_jax.studies.folder import open_study, train_variant
from rvsp_jax.studies.members import diverged_members, summary_series
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.studies.windows import burn_in_steps, check_burn_in
from rvsp_jax.training.ensemble import member_keys
from rvsp_jax.training.model import init_params, make_model
from rvsp_jax.training.probes import ProbeConfig
from rvsp_jax.training.registry import ACTIVATIONS

EXPERIMENT = "activation_compare"
TITLE = "Activation comparison"
FOLDER = "study"
KINDS = ("grads", "updates")
METRICS = {
    "log10_var": "log10 variance over steps (mean over entries)",
    "excess_kurtosis": "excess kurtosis (entry-standardised, pooled)",
    "log10_band_power_ratio": "log10 low/high band-power ratio (smooth > 0 > jittery)",
    "spectral_beta": "spectral slope beta (OLS log-log over all bins f > 0; a shape summary)",
    "variance_drift": "median relative variance drift over the window (0: steady)",
    "stationary_fraction": "fraction of entries stationary (ADF + KPSS, raw)",
}
PROPORTIONS = ("stationary_fraction",)
"""Metrics that are proportions: percentile-bootstrap intervals across members (inside [0, 1])."""
WINDOWS = {
    "equal_steps": "equal steps (all steps after the burn-in)",
    "loss_matched": "loss-matched (same training loss, each variant's own steps)",
    "stationary": "stationarity-accepted (same steps, stationary for every variant)",
}
STATIONARY_ACCEPT = 0.8
"""A window is accepted as stationary when at least this fraction of a variant's testable gradient
and update entries pass ADF + KPSS (raw, level alpha) ..."""
DRIFT_ACCEPT = 0.5
"""... and the median over its entries of |relative variance drift| (:func:`measure_drift` over
4 sub-windows) is at most this."""
LOSS_MATCH_TOL = 0.1
"""Loss-matched windows count as matched when every variant's mean loss in its window is within
this relative distance of the baseline's."""
INACTIVE_THRESHOLDS = (0.01, 0.05, 0.19, 0.5)
"""Fractions c of the derivative's maximum below which a (probe image, unit) pair is inactive."""
RECORDED_THRESHOLD = 0.19
"""The threshold of the recorded per-step summaries (sigmoid/tanh ``saturated``, ReLU ``zero``)."""
HIST_SAMPLES = 20_000
"""Values per member, kind, layer and variant kept for the distribution figure."""
LOSS_WINDOW = 25
"""Steps averaged per point of the training-loss curves."""


@dataclass(frozen=True)
class CompareSettings(StudySettings):
    """Variants, recording and analysis options of the activation comparison."""

    activations: str = opt(
        "sigmoid,relu,tanh",
        "--activations",
        "hidden activations compared, comma separated; the first is the baseline "
        "of the paired tests (--activation is ignored)",
    )
    probe_index: str = opt(
        "16",
        "--probe-index",
        "parameters whose gradients and updates are recorded: K per parameter "
        "array, total=N, all, or names (as in experiments.train)",
    )
    probe_batch: int = opt(64, "--probe-batch", "test images of the activation-summary probe batch")
    burn_in: float = opt(0.1, "--burn-in", "fraction of the steps left out at the start")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (at most the analysed steps)")
    alpha: float = opt(0.05, "--alpha", "level of the ADF/KPSS tests")
    window: int = opt(
        0,
        "--window",
        "steps of the loss-matched and stationarity-accepted windows (0: a quarter of the steps, at least 32)",
    )

    def __post_init__(self):
        names = self.variants
        unknown = [a for a in names if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation(s) {unknown}; valid: {', '.join(ACTIVATIONS)}")
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"activations must name at least two different activations, got {self.activations!r}")
        check_burn_in(self.burn_in)
        if self.nperseg < 8:
            raise ValueError(f"nperseg must be >= 8, got {self.nperseg}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.window != 0 and self.window < 32:
            raise ValueError(f"window must be 0 (automatic) or at least 32 steps, got {self.window}")
        self.probes()  # validates probe_index and probe_batch

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.activations.split(",") if a.strip())

    def probes(self) -> ProbeConfig:
        """What every variant records: gradients and updates of the selected entries, at every step,
        and the layer activation summaries."""
        return ProbeConfig(probes="grads,updates,act_summary", index=self.probe_index, every=1, batch=self.probe_batch)


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
    ``spectral_beta`` (means over entries, Welch PSD), ``variance_drift`` (median over entries of
    the absolute relative variance drift of :func:`~rvsp_jax.analysis.measure_drift` over 4
    sub-windows), ``stationary_fraction`` (raw ADF + KPSS verdicts); ``psd [S, F]`` (mean over
    entries of each entry's PSD normalised to unit total power),
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
    with np.errstate(invalid="ignore"):
        drift = np.abs(measure_drift(series, max(2, x.shape[1] // 4)).var_drift)
    drift = np.where(np.isfinite(drift), drift, np.nan)
    stationary = np.full(x.shape[0], np.nan)
    bh = np.zeros((0,), np.int8)
    if (~excluded).any():
        raw, bh = _stationarity_codes_of(series[~excluded], alpha)  # int8 codes, compact
        stationary[~excluded] = (raw == 0).mean(-1)
    out = {
        "log10_var": np.log10(var.mean(-1)),
        "excess_kurtosis": kurt,
        "log10_band_power_ratio": _nanmean(ratio),
        "spectral_beta": _nanmean(spectral_slope(freqs, psd).beta),
        "variance_drift": _nanmedian(drift),
        "stationary_fraction": stationary,
        "psd": _nanmean(np.moveaxis(norm, 1, -1)),
    }
    out = {k: np.where(excluded.reshape(-1, *[1] * (v.ndim - 1)), np.nan, v) for k, v in out.items()}
    return {**out, "freqs": freqs, "stationarity_bh": verdict_fractions(bh)}


def _nanmedian(x: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN; NaN (no warning) where a row has no finite value."""
    out = np.full(x.shape[:-1], np.nan)
    ok = np.isfinite(x).any(-1)
    if ok.any():
        out[ok] = np.nanmedian(x[ok], axis=-1)
    return out


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (no warning) where a row has no finite value."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, x, 0).sum(-1) / ok.sum(-1)


# ---- windows and inactivity ---------------------------------------------------------------------


def window_length(total: int, burn: int, window: int = 0) -> int:
    """Steps of the loss-matched and stationarity-accepted windows: ``window``, or (0) a quarter of
    the steps but at least 32, never more than the steps after the burn-in."""
    w = window or max(32, total // 4)
    return int(min(w, total - burn))


def median_loss_curve(loss, excluded, width: int = LOSS_WINDOW) -> np.ndarray:
    """``loss: [S, T]`` -> ``[T]``: the median over analysed members of each member's centred
    ``width``-step running mean (edges use the nearest value). NaN if no member is analysed."""
    loss = np.asarray(loss, np.float64)
    keep = loss[~np.asarray(excluded, bool)]
    if not keep.shape[0]:
        return np.full(loss.shape[-1], np.nan)
    return np.median(uniform_filter1d(keep, size=min(width, loss.shape[-1]), axis=-1, mode="nearest"), axis=0)


def loss_matched_windows(curves: dict, start: int, width: int) -> tuple[float, dict, dict]:
    """The target loss, each variant's ``[a, b)`` window of ``width`` steps and its crossing step.

    curves: variant -> ``[T]`` median loss curve. The target is the lowest loss every variant
    reaches after ``start`` (``max_v min_{t >= start} curve_v``); each variant's window is centred
    on the first step ``t >= start`` where its curve is at or below the target, shifted to lie
    inside ``[start, T)``.
    """
    target = max(float(np.min(c[start:])) for c in curves.values())
    windows, crossings = {}, {}
    for v, c in curves.items():
        t = start + int(np.argmax(c[start:] <= target))
        a = int(np.clip(t - width // 2, start, c.size - width))
        windows[v], crossings[v] = (a, a + width), t
    return target, windows, crossings


def window_acceptance(series, excluded, alpha: float) -> tuple[float, float]:
    """``(stationary fraction, median |variance drift|)`` of a variant's entries in one window.

    series: ``[S, P, T]`` every recorded gradient and update entry; excluded members are left out.
    The stationary fraction is of the testable (non-constant) series, raw ADF + KPSS at ``alpha``;
    the drift is :func:`~rvsp_jax.analysis.measure_drift`'s relative variance drift over 4
    sub-windows, median over series.
    """
    x = np.asarray(series, np.float64)[~np.asarray(excluded, bool)]
    if not x.shape[0]:
        return float("nan"), float("nan")
    raw, _ = _stationarity_codes_of(x, alpha)  # int8 codes, compact
    invalid = STATIONARITY_VERDICTS.index("invalid")
    testable = raw != invalid
    frac = float((raw == 0).sum() / max(1, testable.sum()))
    with np.errstate(invalid="ignore"):
        drift = np.abs(measure_drift(x, max(2, x.shape[-1] // 4)).var_drift)
    drift = drift[np.isfinite(drift)]
    return frac, float(np.median(drift)) if drift.size else float("nan")


def relative_derivative(y, activation: str) -> np.ndarray:
    """``phi'(z) / max phi'`` from the post-activation ``y = phi(z)`` (float64, same shape).

    sigmoid ``4 y (1 - y)`` (max 1/4 at z = 0), tanh ``1 - y^2`` (max 1), relu ``1[y > 0]``
    (0 or 1; relu'(0) = 0 as in ``jax.grad``). ``phi' < 0.19 max`` is then exactly the recorded
    summaries: sigmoid ``y < 0.05 or y > 0.95``, tanh ``|y| > 0.9``, relu ``y == 0``.
    """
    y = np.asarray(y, np.float64)
    if activation == "sigmoid":
        return 4.0 * y * (1.0 - y)
    if activation == "tanh":
        return 1.0 - y * y
    if activation == "relu":
        return (y > 0).astype(np.float64)
    raise ValueError(f"no derivative rule for activation {activation!r}; known: sigmoid, tanh, relu")


def inactivity(y, activation: str, thresholds=INACTIVE_THRESHOLDS) -> dict:
    """Like-for-like inactive fractions of post-activations ``y: [S, B, h]`` (float32, as computed).

    Returns ``below: [S, C]`` fraction of (image, unit) pairs with ``phi' < c max phi'`` for each
    threshold c, and ``exact_zero: [S]`` the fraction whose float32 derivative is exactly 0 (relu:
    y == 0; sigmoid: y rounded to exactly 0 or 1; tanh: |y| == 1), i.e. no gradient passes at all.
    """
    y = np.asarray(y)
    r = relative_derivative(y, activation)
    below = np.stack([(r < c).mean(axis=(1, 2)) for c in thresholds], axis=-1)
    if activation == "relu":
        zero = y == 0
    elif activation == "sigmoid":
        zero = (y == 0) | (y == 1)
    else:
        zero = np.abs(y) == 1
    return {"below": below, "exact_zero": zero.mean(axis=(1, 2)).astype(np.float64)}


_NUMPY_ACTIVATIONS = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}


def hidden_post(params: dict, x: np.ndarray, activation: str, n_hidden: int) -> dict[str, np.ndarray]:
    """Post-activations ``{layer: [S, B, h]}`` (float32, numpy) of stacked member parameters
    ``params["Dense_l"]["kernel"]: [S, d_in, h]`` on inputs ``x: [B, 784]``."""
    act = _NUMPY_ACTIVATIONS[activation]
    h = np.broadcast_to(np.asarray(x, np.float32), (np.shape(params["Dense_0"]["kernel"])[0], *np.shape(x)))
    out = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(n_hidden):
            layer = params[f"Dense_{l}"]
            h = act(
                h @ np.asarray(layer["kernel"], np.float32) + np.asarray(layer["bias"], np.float32)[:, None, :]
            ).astype(np.float32)
            out[f"Dense_{l}"] = h
    return out


def initial_params(run: store.Run) -> dict:
    """Every member's initial parameters (numpy ``[S, ...]``), rebuilt from its init key; the same
    for every variant of the comparison (the initialiser does not depend on the activation)."""
    config = run.config
    model = make_model(config)

    @jax.jit
    def init(ids):  # one compiled program: the member keys and every member's initialiser
        keys, _ = member_keys(config.base_seed, ids, config.vary)
        return jax.vmap(lambda k: init_params(model, k))(keys)

    return jax.device_get(init(np.arange(run.final().diverged.shape[0], dtype=np.int32)))


def start_end_activations(
    run: store.Run, dataset: Dataset, start: dict | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Post-activations ``{"start"|"end": {layer: [S, B, h]}}`` of every member on the run's probe
    batch at its initial weights (``start``, default :func:`initial_params`) and its final weights."""
    config = run.config
    start = initial_params(run) if start is None else start
    x = to_model_inputs(dataset.test_images[run.layout.probe_batch])
    n = len(config.widths)
    return {
        "start": hidden_post(start, x, config.activation, n),
        "end": hidden_post(run.final().params, x, config.activation, n),
    }


# ---- train and analyse -------------------------------------------------------------------------


def variant_config(config: TrainConfig, activation: str) -> TrainConfig:
    """The configuration of one variant: ``config`` with only the activation changed."""
    return dataclasses.replace(config, activation=activation)


def train(
    config: TrainConfig,
    settings: CompareSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> dict[str, store.Run]:
    """Open the study folder ``out`` and train (or, with ``resume``, reuse) every variant into
    ``out/runs/<activation>/``; return the opened runs by activation."""
    base = variant_config(config, settings.variants[0])
    open_study(
        out,
        EXPERIMENT,
        {"config": base.to_dict(), "compare": dataclasses.asdict(settings)},
        resume=resume,
        overwrite=overwrite,
        command=command,
    )
    return {
        v: train_variant(
            out,
            v,
            variant_config(config, v),
            settings.probes(),
            resume=resume,
            experiment=EXPERIMENT,
            progress=progress,
            dataset=dataset,
        )
        for v in settings.variants
    }


@dataclass(frozen=True)
class CompareAnalysis:
    """``summary`` (numbers, JSON-ready) and the arrays the figures draw."""

    summary: dict
    values: dict  # window -> kind -> layer -> metric -> variant -> [S] (NaN for excluded members)
    psd: dict  # kind -> layer -> variant -> (freqs [F], psd [S, F]) (equal steps)
    samples: dict  # kind -> layer -> variant -> pooled values [n] for histograms (equal steps)
    loss: dict  # variant -> (steps [K], loss [S, K]) block means
    inactive: dict  # variant -> layer -> [S, T] fraction with phi' < 0.19 max phi' over training
    inactive_ends: dict  # variant -> layer -> {"start"|"end": inactivity() dict}
    windows: dict  # window -> variant -> (a, b) or None


def _pooled_sample(x: np.ndarray, excluded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to HIST_SAMPLES values of each analysed member's ``x: [S, T, P]``, pooled."""
    parts = []
    for s in np.flatnonzero(~excluded):
        flat = x[s].ravel()
        parts.append(flat if flat.size <= HIST_SAMPLES else rng.choice(flat, HIST_SAMPLES, replace=False))
    return np.concatenate(parts) if parts else np.zeros(0)


def check_steps(total: int, burn_in: float) -> int:
    """The burn-in in steps (:func:`rvsp_jax.studies.windows.burn_in_steps`, as in every study);
    refuses runs with fewer than 32 steps left after it."""
    burn = burn_in_steps(burn_in, total)
    if total - burn < 32:
        raise ValueError(
            f"{total - burn} steps after the burn-in are too few for the spectra and "
            "ADF/KPSS (at least 32); train longer (--steps/--epochs) or lower --burn-in"
        )
    return burn


def check_members(excluded: dict) -> None:
    """Refuse an analysis in which some variant has no member left (all diverged)."""
    dead = [v for v, ex in excluded.items() if ex.all()]
    if dead:
        raise ValueError(
            "every member diverged (non-finite loss or parameters) in variant(s) "
            + ", ".join(f"{v} ({int(excluded[v].size)} of {int(excluded[v].size)})" for v in dead)
            + "; nothing is left to compare: lower --lr (or use a gentler --optimizer) and run again"
        )


def choose_windows(runs: dict, excluded: dict, burn: int, width: int, alpha: float) -> tuple[dict, dict]:
    """The analysed windows (see the module docstring) and how they were chosen.

    Returns ``windows: {name: {variant: (a, b)} or None}`` and ``info``: the target loss, each
    variant's mean loss in its loss-matched window, and every candidate stationary block with its
    stationary fraction and variance drift per variant.
    """
    variants = list(runs)
    total = int(runs[variants[0]].manifest["total_steps"])
    losses = {v: np.asarray(r["metrics/loss"][:], np.float64) for v, r in runs.items()}
    curves = {v: median_loss_curve(losses[v], excluded[v]) for v in variants}
    target, matched, crossings = loss_matched_windows(curves, burn, width)
    mean_loss = {
        v: across_members(np.where(excluded[v], np.nan, losses[v][:, a:b].mean(-1))) for v, (a, b) in matched.items()
    }
    base = mean_loss[variants[0]].mean
    is_matched = bool(all(abs(m.mean / base - 1) <= LOSS_MATCH_TOL for m in mean_loss.values()))

    def acceptance(steps: dict) -> dict:
        """The stationarity rule applied to each variant's window ``steps[v] = (a, b)``."""
        per = {}
        for v, run in runs.items():
            a, b = steps[v]
            x = np.concatenate([np.asarray(run[k][:, a:b], np.float64) for k in KINDS], axis=-1)
            frac, drift = window_acceptance(np.swapaxes(x, 1, 2), excluded[v], alpha)
            per[v] = {
                "stationary_fraction": frac,
                "variance_drift": drift,
                "accepted": bool(frac >= STATIONARY_ACCEPT and drift <= DRIFT_ACCEPT),
            }
        return {"by_variant": per, "accepted": all(p["accepted"] for p in per.values())}

    candidates = [(a, a + width) for a in range(burn, total - width + 1, width)]
    blocks = [{"steps": [a, b], **acceptance({v: (a, b) for v in variants})} for a, b in candidates]
    accepted = [blk for blk in blocks if blk["accepted"]]
    stationary = {v: tuple(accepted[-1]["steps"]) for v in variants} if accepted else None
    windows = {"equal_steps": {v: (burn, total) for v in variants}, "loss_matched": matched, "stationary": stationary}
    rule = {
        name: (acceptance(w) if name != "stationary" else {k: accepted[-1][k] for k in ("by_variant", "accepted")})
        for name, w in windows.items()
        if w is not None
    }
    info = {
        "width": width,
        "target_loss": target,
        "loss_matched_mean_loss": mean_loss,
        "stationarity_rule": rule,
        "loss_crossing_step": crossings,
        "loss_matched": is_matched,
        "loss_match_tolerance": LOSS_MATCH_TOL,
        "stationary_candidates": blocks,
        "stationary_accept": STATIONARY_ACCEPT,
        "drift_accept": DRIFT_ACCEPT,
    }
    return windows, info


def analyse(
    runs: dict[str, store.Run], settings: CompareSettings, *, progress: bool = True, dataset: Dataset | None = None
) -> CompareAnalysis:
    """Per-member statistics of every variant, window, kind and layer, the paired tests against
    the baseline (the first variant) and the like-for-like inactive fractions."""
    variants = list(runs)
    baseline = variants[0]
    first = runs[baseline]
    total = int(first.manifest["total_steps"])
    burn = check_steps(total, settings.burn_in)
    excluded = {v: diverged_members(r) for v, r in runs.items()}
    check_members(excluded)
    ranges = layer_ranges(first.probe_names["grads"])
    width = window_length(total, burn, settings.window)
    windows, window_info = choose_windows(runs, excluded, burn, width, settings.alpha)
    rng = np.random.default_rng(0)
    values: dict = {
        w: {k: {layer: {m: {} for m in METRICS} for layer in ranges} for k in KINDS}
        for w in WINDOWS
        if windows[w] is not None
    }
    psd: dict = {k: {layer: {} for layer in ranges} for k in KINDS}
    samples: dict = {k: {layer: {} for layer in ranges} for k in KINDS}
    stationarity: dict = {k: {layer: {} for layer in ranges} for k in KINDS}
    jobs = [(w, v, k, layer) for w in values for v in variants for k in KINDS for layer in ranges]
    for w, v, kind, layer in tqdm(jobs, desc="analysing variants", disable=not progress_enabled(progress)):
        lo, hi = ranges[layer]
        a, b = windows[w][v]
        x = np.asarray(runs[v][kind][:, a:b, lo:hi])
        ex = excluded[v]
        st = entry_statistics(x, ex, nperseg=settings.nperseg, alpha=settings.alpha)
        for m in METRICS:
            values[w][kind][layer][m][v] = st[m]
        if w == "equal_steps":
            psd[kind][layer][v] = (st["freqs"], st["psd"][~ex])
            samples[kind][layer][v] = _pooled_sample(x, ex, rng)
            stationarity[kind][layer][v] = st["stationarity_bh"]

    data = dataset if dataset is not None else load(first.config.dataset, data_dir=first.config.data_dir)
    start_params = initial_params(first)
    loss, inactive, inactive_ends, accuracy, act_stats = {}, {}, {}, {}, {}
    for v, run in runs.items():
        ex = excluded[v]
        lossx = np.asarray(run["metrics/loss"][:], np.float64)
        k = total // LOSS_WINDOW
        blocks = lossx[:, : k * LOSS_WINDOW].reshape(lossx.shape[0], k, LOSS_WINDOW).mean(-1)
        loss[v] = (np.arange(k) * LOSS_WINDOW + (LOSS_WINDOW - 1) / 2, np.where(ex[:, None], np.nan, blocks))
        series = summary_series(run)
        inactive[v], act_stats[v] = {}, {}
        for name, x in series.items():
            layer, stat = name.split("/", 1)
            x = np.where(ex[:, None], np.nan, np.asarray(x, np.float64))
            if stat in ("saturated", "zero"):
                inactive[v][layer] = x
            if stat in ("saturated", "zero", "dead"):
                act_stats[v][name] = {"start": proportion_summary(x[:, 0]), "end": proportion_summary(x[:, -1])}
        ends = start_end_activations(run, data, start_params)
        inactive_ends[v] = {
            layer: {
                when: {
                    k2: np.where(ex.reshape(-1, *[1] * (a.ndim - 1)), np.nan, a)
                    for k2, a in inactivity(ends[when][layer], v).items()
                }
                for when in ("start", "end")
            }
            for layer in ends["start"]
        }
        accuracy[v] = np.where(ex, np.nan, np.asarray(run.manifest["result"]["test_accuracy"], np.float64))

    pairs = [f"{v} - {baseline}" for v in variants[1:]]

    def compare(per_variant: dict, proportion: bool) -> dict:
        summarise = proportion_summary if proportion else across_members
        return {
            "by_variant": {v: summarise(per_variant[v]) for v in variants},
            "paired": {p: paired_test(per_variant[baseline], per_variant[v]) for p, v in zip(pairs, variants[1:])},
        }

    window_summary = {}
    for w, vals in values.items():
        window_summary[w] = {
            "description": WINDOWS[w],
            "steps": {v: list(windows[w][v]) for v in variants},
            "metrics": {
                kind: {layer: {m: compare(vals[kind][layer][m], m in PROPORTIONS) for m in METRICS} for layer in ranges}
                for kind in KINDS
            },
        }
    inactive_summary = {
        "thresholds": INACTIVE_THRESHOLDS,
        "recorded_threshold": RECORDED_THRESHOLD,
        "layers": {
            layer: {
                when: {
                    "below": {
                        f"{c:g}": compare({v: inactive_ends[v][layer][when]["below"][:, i] for v in variants}, True)
                        for i, c in enumerate(INACTIVE_THRESHOLDS)
                    },
                    "exact_zero": compare({v: inactive_ends[v][layer][when]["exact_zero"] for v in variants}, True),
                }
                for when in ("start", "end")
            }
            for layer in inactive_ends[baseline]
        },
    }
    manifests = [r.manifest["members"] for r in runs.values()]
    summary = {
        "experiment": EXPERIMENT,
        "config": variant_config(first.config, baseline).to_dict(),
        "settings": dataclasses.asdict(settings),
        "variants": variants,
        "baseline": baseline,
        "pairs": pairs,
        "layers": list(ranges),
        "entries": {layer: hi - lo for layer, (lo, hi) in ranges.items()},
        "steps": total,
        "burn_in_steps": burn,
        "analysed_steps": total - burn,
        "paired_design": {
            "vary": first.config.vary,
            "init_keys_identical": all(m["init_keys"] == manifests[0]["init_keys"] for m in manifests),
            "data_keys_identical": all(m["data_keys"] == manifests[0]["data_keys"] for m in manifests),
            "configs_differ_only_in_activation": all(
                variant_config(r.config, baseline) == variant_config(first.config, baseline) for r in runs.values()
            ),
        },
        "members": {
            v: {
                "total": int(ex.size),
                "diverged": int(ex.sum()),
                "analysed": int((~ex).sum()),
                "diverged_ids": np.flatnonzero(ex),
            }
            for v, ex in excluded.items()
        },
        "test_accuracy": {v: across_members(a) for v, a in accuracy.items()},
        "test_accuracy_paired": {p: paired_test(accuracy[baseline], accuracy[v]) for p, v in zip(pairs, variants[1:])},
        "activation_statistics": act_stats,
        "inactivity": inactive_summary,
        "window_selection": window_info,
        "windows": window_summary,
        "rules": RULES,
        **window_summary["equal_steps"]["metrics"],
        "stationarity_bh": stationarity,
    }
    return CompareAnalysis(summary, values, psd, samples, loss, inactive, inactive_ends, windows)


RULES = {
    "difference": "a paired difference (b - a) is reported as a direction ('larger', 'smaller') only "
    "when its 95% t-interval across pairs excludes 0; otherwise 'no difference resolved'",
    "variance": "'larger gradient variance' is the difference rule on log10 variance; a variance "
    "comparison in a window whose median relative variance drift exceeds "
    f"{DRIFT_ACCEPT} (either variant) is flagged 'drifting window'",
    "intermittency": "'more intermittent (heavier-tailed)' is the difference rule on the excess "
    "kurtosis of the entry-standardised gradients",
    "smoothness": "'smoother updates' is the difference rule on the log10 band-power ratio",
    "stationarity": f"a window is 'stationary' when, for every variant, at least {STATIONARY_ACCEPT:.0%} "
    "of the testable gradient and update entries pass ADF + KPSS (raw) and the median "
    f"|relative variance drift| is at most {DRIFT_ACCEPT}",
    "loss_matched": f"loss-matched windows are 'matched' when every variant's mean loss in its window "
    f"is within {LOSS_MATCH_TOL:.0%} of the baseline's",
    "inactivity": f"'more inactive' is the difference rule on the fraction of (probe image, unit) "
    f"pairs with phi' < {RECORDED_THRESHOLD} max phi' (the same rule for every activation); "
    "exact zeros (phi' = 0) are a separate count",
    "stability": "the report does not call a variant 'more stable': variance, intermittency and "
    "stationarity are reported separately",
}


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
        ax.errorbar([i], [m.mean], yerr=[[m.mean - m.lo], [m.hi - m.mean]], fmt="o", color=plots.PALETTE[i], capsize=2)
    ax.set_xticks(xs, variants)
    ax.set_xlim(-0.4, len(variants) - 0.6)
    ax.set(ylabel=ylabel)


def _yerr(m: MemberSummary):
    return [
        [max(0.0, m.mean - m.lo) if np.isfinite(m.lo) else 0.0],
        [max(0.0, m.hi - m.mean) if np.isfinite(m.hi) else 0.0],
    ]


def figure_distributions(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    variants, layers = s["variants"], s["layers"]
    nl = len(layers)
    fig, axes = plots.subplots(nl, len(KINDS), width="double", height=1.9 * nl + 0.3, squeeze=False)
    for i, layer in enumerate(layers):
        for j, kind in enumerate(KINDS):
            ax = axes[i, j]
            pooled = [a.samples[kind][layer][v] for v in variants]
            allv = np.concatenate(pooled)
            allv = allv[np.isfinite(allv)]
            if allv.size == 0:
                continue
            lo, hi = np.percentile(allv, [0.5, 99.5])
            edges = np.linspace(lo, hi, 61) if hi > lo else 61
            for k, (v, x) in enumerate(zip(variants, pooled)):
                ax.hist(x, bins=edges, density=True, histtype="step", color=plots.PALETTE[k], label=v)
            ax.set(yscale="log", xlabel=f"{kind[:-1]} value", ylabel="density", title=f"{layer} {kind}")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    axes[0, 0].legend()
    return fig


def figure_variance_paired(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    layers = s["layers"]
    nl = len(layers)
    equal = a.values["equal_steps"]
    rows = (("grads", "log10_var", "log10 var (grads)"), ("grads", "excess_kurtosis", "excess kurtosis (grads)"))
    fig, axes = plots.subplots(len(rows), nl, width="double", height=2.0 * len(rows) + 0.3, squeeze=False)
    for i, (kind, metric, label) in enumerate(rows):
        for j, layer in enumerate(layers):
            _paired_panel(axes[i, j], equal[kind][layer][metric], label)
            axes[i, j].set_title(layer)
    return fig


def figure_update_psd(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    variants, layers = s["variants"], s["layers"]
    nl = len(layers)
    fig, axes = plots.subplots(1, nl, width="double", height=2.4, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for k, v in enumerate(variants):
            freqs, p = a.psd["updates"][layer][v]
            if p.size and np.any(np.isfinite(p) & (p > 0)):
                plots.plot_psd_bands(ax, freqs, p, label=v, color=plots.PALETTE[k])
        ax.set(xlabel="frequency (1/step)", ylabel="normalised PSD", title=f"{layer} updates")
    axes[0, 0].legend()
    return fig


def figure_smoothness(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    layers = s["layers"]
    nl = len(layers)
    equal = a.values["equal_steps"]
    fig, axes = plots.subplots(1, nl, width="double", height=2.3, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        _paired_panel(ax, equal["updates"][layer]["log10_band_power_ratio"], "log10 band-power ratio")
        ax.axhline(0, color="0.6", linewidth=0.5, linestyle="--")
        ax.set_title(f"{layer} updates")
    return fig


def figure_stationarity(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    variants, layers = s["variants"], s["layers"]
    a.values["equal_steps"]
    rows_t = [f"{kind}: {v}" for kind in KINDS for v in variants]
    cells = [
        [pct(s["stationarity_bh"][kind][layer][v]["stationary"]) for layer in layers]
        for kind in KINDS
        for v in variants
    ]
    fig, ax = plots.subplots(width="double", height=0.3 * len(rows_t) + 0.8)
    plots.verdict_table(ax, rows_t, layers, cells)
    ax.set_title("entries judged stationary (ADF + KPSS, BH over each cell's series; equal steps)")
    return fig


def figure_training(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    variants, layers = s["variants"], s["layers"]
    hidden = [l for l in layers if any(l in a.inactive[v] for v in variants)]
    fig, axes = plots.subplots(1, 1 + len(hidden), width="double", height=2.4, squeeze=False)
    for k, v in enumerate(variants):
        t, x = a.loss[v]
        m = across_members(x)
        color = plots.PALETTE[k]
        plots.plot_band(axes[0, 0], t, m.mean, m.lo, m.hi, label=v, color=color)
        lo_, hi_ = a.windows["loss_matched"][v]
        axes[0, 0].axvspan(lo_, hi_, color=color, alpha=0.12, linewidth=0)
        for ax, layer in zip(axes[0, 1:], hidden):
            if layer in a.inactive[v]:
                y = a.inactive[v][layer]
                m = across_members(y)
                plots.plot_band(
                    ax, np.arange(y.shape[1]), m.mean, np.clip(m.lo, 0, 1), np.clip(m.hi, 0, 1), label=v, color=color
                )
    if a.windows["stationary"] is not None:
        lo_, hi_ = next(iter(a.windows["stationary"].values()))
        axes[0, 0].axvspan(
            lo_, hi_, facecolor="none", edgecolor="0.3", hatch="//", linewidth=0.5, label="stationary window"
        )
    axes[0, 0].set(xlabel="step", ylabel=f"training loss ({LOSS_WINDOW}-step mean)", yscale="log")
    axes[0, 0].legend()
    for ax, layer in zip(axes[0, 1:], hidden):
        ax.set(xlabel="step", ylabel=f"fraction with phi' < {RECORDED_THRESHOLD:g} max", title=layer)
        ax.legend()
    return fig


def figure_inactivity(analysis: CompareAnalysis):
    s = analysis.summary
    variants = s["variants"]
    inact = s["inactivity"]
    labels = ["exact 0", *[f"< {c:g}" for c in INACTIVE_THRESHOLDS]]
    fig, axes = plots.subplots(1, len(inact["layers"]), width="double", height=2.5, squeeze=False)
    xs = np.arange(len(labels))
    for ax, (layer, d) in zip(axes[0], inact["layers"].items()):
        for k, v in enumerate(variants):
            for when, style, dx in (("start", "s--", -0.12), ("end", "o-", 0.12)):
                ms = [
                    d[when]["exact_zero"]["by_variant"][v],
                    *[d[when]["below"][f"{c:g}"]["by_variant"][v] for c in INACTIVE_THRESHOLDS],
                ]
                y = np.array([m.mean for m in ms], float)
                err = np.array([_yerr(m) for m in ms])[:, :, 0].T
                ax.errorbar(
                    xs + dx + 0.04 * k,
                    y,
                    yerr=err,
                    fmt=style,
                    color=plots.PALETTE[k],
                    capsize=2,
                    markersize=3,
                    linewidth=0.8,
                    label=f"{v} ({'initial' if when == 'start' else 'final'} weights)",
                )
        ax.axvline(0.5, color="0.7", linewidth=0.5)
        ax.set_xticks(xs, labels)
        ax.set(xlabel="phi'(z) / max phi'", ylabel="fraction of (image, unit) pairs", title=layer, ylim=(-0.02, 1.02))
    axes[0, 0].legend(fontsize=6)
    return fig


def figure_windows(analysis: CompareAnalysis):
    a, s = analysis, analysis.summary
    variants, layers = s["variants"], s["layers"]
    nl = len(layers)
    wins = [w for w in WINDOWS if w in a.values]
    rows = (("grads", "log10_var", "log10 var (grads)"), ("grads", "excess_kurtosis", "excess kurtosis (grads)"))
    fig, axes = plots.subplots(len(rows), nl, width="double", height=2.1 * len(rows) + 0.3, squeeze=False)
    for i, (kind, metric, label) in enumerate(rows):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            for k, v in enumerate(variants):
                ms = [s["windows"][w]["metrics"][kind][layer][metric]["by_variant"][v] for w in wins]
                y = np.array([m.mean for m in ms], float)
                err = np.array([_yerr(m) for m in ms])[:, :, 0].T
                ax.errorbar(
                    np.arange(len(wins)) + 0.1 * (k - (len(variants) - 1) / 2),
                    y,
                    yerr=err,
                    fmt="o",
                    color=plots.PALETTE[k],
                    capsize=2,
                    label=v,
                )
            ax.set_xticks(np.arange(len(wins)), [w.replace("_", " ") for w in wins])
            ax.set(ylabel=label, title=layer)
    axes[0, 0].legend()
    return fig


FIGURES = {
    "distributions": (
        "Pooled distributions of gradient and update values per layer (equal-steps window, "
        "all analysed members; log density).",
        figure_distributions,
    ),
    "variance_paired": (
        "Gradient log10 variance and excess kurtosis per member (grey lines join a member's "
        "values across activations) with each activation's mean and 95% t-interval (equal "
        "steps; the update variances are in the tables).",
        figure_variance_paired,
    ),
    "update_psd": (
        "Update PSD per layer (each entry's PSD normalised to unit power, mean over entries; "
        "median across members with the 5-95% band; equal steps).",
        figure_update_psd,
    ),
    "smoothness": (
        "Smooth-vs-jittery score of the updates: log10 of low- over high-frequency power per "
        "unit bandwidth (0: white; > 0 smooth; < 0 jittery), paired by member.",
        figure_smoothness,
    ),
    "stationarity": (
        "Fraction of gradient and update entries judged stationary (ADF + KPSS, level, "
        "Benjamini-Hochberg over each cell's member x entry series).",
        figure_stationarity,
    ),
    "training": (
        f"Training loss (shaded: each variant's loss-matched window; hatched: the "
        f"stationarity-accepted window, if any) and, per hidden layer, the fraction of (probe image, "
        f"unit) pairs with phi' < {RECORDED_THRESHOLD:g} max phi' (the same rule for every "
        "activation; recorded as 'saturated' for sigmoid/tanh and 'zero' for ReLU); mean across "
        "members, 95% t-interval.",
        figure_training,
    ),
    "inactivity": (
        "Like-for-like inactive fraction: exact zeros, then phi' below 1%, 5%, 19% and 50% of"
        " its maximum, at the initial (squares, dashed) and final (circles) weights; mean and"
        " 95% bootstrap interval across members.",
        figure_inactivity,
    ),
    "windows": (
        "Gradient log10 variance and excess kurtosis per layer in each analysed window (mean "
        "and 95% t-interval across members): a difference that changes with the window is a "
        "difference of training progress or of non-stationarity, not of the activation alone.",
        figure_windows,
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


# ---- report ------------------------------------------------------------------------------------


def _test_text(t) -> str:
    return f"{fmt_ci(t.diff)}; paired t p = {fmt(t.t_pvalue, 2)}, Wilcoxon p = {fmt(t.w_pvalue, 2)}" + (
        f" ({t.excluded} pair(s) excluded)" if t.excluded else ""
    )


def direction(t: PairedTest, larger: str = "larger", smaller: str = "smaller") -> str:
    """The word the difference rule gives a paired test: ``larger`` when the 95% interval of the
    difference lies above 0, ``smaller`` below, else ``no difference resolved``."""
    if not (np.isfinite(t.diff.lo) and np.isfinite(t.diff.hi)):
        return "undetermined (fewer than two pairs)"
    return larger if t.diff.lo > 0 else smaller if t.diff.hi < 0 else "no difference resolved"


def _window_drifting(w: dict, kind: str, layer: str) -> bool:
    by = w["metrics"][kind][layer]["variance_drift"]["by_variant"]
    return any(np.isfinite(m.mean) and m.mean > DRIFT_ACCEPT for m in by.values())


def _findings(s: dict, wname: str) -> list[str]:
    w = s["windows"][wname]
    out = []
    for p, v in zip(s["pairs"], s["variants"][1:]):
        base = s["baseline"]
        for layer in s["layers"]:
            g = w["metrics"]["grads"][layer]
            t = g["log10_var"]["paired"][p]
            ratio = [10**t.diff.mean, 10**t.diff.lo, 10**t.diff.hi]
            var_word = direction(t)
            drift = " (drifting window: variance not steady)" if _window_drifting(w, "grads", layer) else ""
            k = g["excess_kurtosis"]["paired"][p]
            kurt_word = direction(k, "more intermittent (heavier-tailed)", "less intermittent")
            kb, kv = g["excess_kurtosis"]["by_variant"][base], g["excess_kurtosis"]["by_variant"][v]
            out.append(
                f"{layer}, {v} vs {base}: gradient variance {var_word}{drift}, ratio {fmt(ratio[0])} "
                f"[{fmt(ratio[1])}, {fmt(ratio[2])}]; gradients {kurt_word}: excess kurtosis {fmt(kv.mean)} "
                f"vs {fmt(kb.mean)} (difference {fmt_ci(k.diff)})."
            )
        parts = []
        for layer in s["layers"]:
            t = w["metrics"]["updates"][layer]["log10_band_power_ratio"]["paired"][p]
            st = w["metrics"]["grads"][layer]["stationary_fraction"]["paired"][p]
            parts.append(
                f"{layer} updates {direction(t, 'smoother', 'more jittery')} "
                f"({fmt_ci(t.diff)}), gradients {direction(st, 'more often stationary', 'less often stationary')} "
                f"({fmt_ci(st.diff)})"
            )
        out.append(f"{v} vs {base}: " + "; ".join(parts) + ".")
    return out


def _unmatched_reason(s: dict) -> str:
    early = [v for v, t in s["window_selection"]["loss_crossing_step"].items() if t == s["burn_in_steps"]]
    return (
        f" ({', '.join(early)} already below the target at the first analysed step, step "
        f"{s['burn_in_steps']}: lower --burn-in or train the slower variant longer)"
        if early
        else " (the loss changes faster than the window is long: use a shorter --window)"
    )


def _window_text(s: dict) -> list[str]:
    info = s["window_selection"]
    lines = []
    for wname, desc in WINDOWS.items():
        if wname not in s["windows"]:
            cands = "; ".join(
                f"steps {b['steps'][0]}-{b['steps'][1]}: "
                + ", ".join(
                    f"{v} {pct(d['stationary_fraction'])} stationary, drift {fmt(d['variance_drift'], 2)}"
                    for v, d in b["by_variant"].items()
                )
                for b in info["stationary_candidates"]
            )
            lines.append(
                f"**{desc}**: none. No block of {info['width']} steps after the burn-in passes "
                f"the stationarity rule for every variant ({cands or 'no candidate block'}); the "
                "comparisons below are therefore all made over windows that are not stationary."
            )
            continue
        steps = s["windows"][wname]["steps"]
        text = f"**{desc}**: " + ", ".join(f"{v} steps {a}-{b}" for v, (a, b) in steps.items())
        if wname == "loss_matched":
            ml = info["loss_matched_mean_loss"]
            text += (
                f"; target loss {fmt(info['target_loss'])} (the lowest median loss every variant "
                "reaches); mean training loss in the windows "
                + ", ".join(f"{v} {fmt_ci(m)}" for v, m in ml.items())
                + (
                    ": matched"
                    if info["loss_matched"]
                    else f": NOT matched within {info['loss_match_tolerance']:.0%}" + _unmatched_reason(s)
                )
            )
        rule = info["stationarity_rule"][wname]
        text += (
            ". By the stationarity rule (all gradient and update entries pooled): "
            + ", ".join(
                f"{v} {pct(d['stationary_fraction'])} stationary, median |variance drift| {fmt(d['variance_drift'], 2)}"
                for v, d in rule["by_variant"].items()
            )
            + f": {'stationary' if rule['accepted'] else 'not stationary'}."
        )
        lines.append(text)
    return lines


def report(analysis: CompareAnalysis, command: str | None = None) -> Report:
    """The markdown report of the activation comparison."""
    s = analysis.summary
    c, design = s["config"], s["paired_design"]
    variants, pairs, layers = s["variants"], s["pairs"], s["layers"]
    rep = Report(f"Activation functions as a paired design: {' vs '.join(variants)}")
    diverged = ", ".join(f"{v}: {m['diverged']} of {m['total']}" for v, m in s["members"].items())
    rep.text(
        f"S = {c['seeds']} members per activation of the {'-'.join(map(str, [784, *c['widths'], 10]))} "
        f"network, {c['optimizer']} lr {c['lr']}"
        + (f" {c['opt_kwargs']}" if c["opt_kwargs"] not in ("{}", "") else "")
        + f", batch {c['batch_size']}, "
        f"{s['steps']:,} steps; the first {s['burn_in_steps']} steps are burn-in. Gradients and updates "
        f"of {sum(s['entries'].values())} entries are recorded "
        f"at every step ({', '.join(f'{l}: {n}' for l, n in s['entries'].items())}).",
        "**Design.** The variants share the configuration except the activation "
        f"(checked: {design['configs_differ_only_in_activation']}), so member s has the same init key "
        f"(identical across variants: {design['init_keys_identical']}) and the same data key "
        f"({design['data_keys_identical']}): the same initial weights and the same minibatch at every "
        f"step. Members are pairs; differences are tested across members with the paired t-test and "
        f"the Wilcoxon signed-rank test. vary={design['vary']}: "
        + (
            "init and data order both vary across pairs, so the tests generalise over both sources of "
            "randomness (with vary=data every pair would share one init and the conclusions would hold "
            "for that init only)."
            if design["vary"] == "both"
            else "note that with this setting the pairs share part of their randomness, so the tests "
            "generalise over the varying part only."
        ),
        f"**Diverged members** (excluded from their variant and from every pair involving them): {diverged}. "
        "Intervals are 95% Student-t intervals across members (pairs for differences), except for "
        "proportions (stationary and inactive fractions), whose intervals are 95% percentile-bootstrap "
        "intervals over members and stay inside [0, 1]; p-values are per test, not adjusted for the "
        "number of comparisons in the tables.",
    )
    rep.section("Rules")
    rep.text(
        "Every sentence of the findings follows from the numbers by one of these rules "
        "(also in summary.json under `rules`):"
    )
    rep.bullets([f"{name}: {rule}." for name, rule in RULES.items()])
    rep.section("Analysed windows")
    rep.bullets(_window_text(s))
    bullets = [
        "Test accuracy: "
        + "; ".join(f"{v} {fmt_ci(s['test_accuracy'][v])}" for v in variants)
        + ". Paired differences: "
        + "; ".join(f"{p}: {_test_text(s['test_accuracy_paired'][p])}" for p in pairs)
        + "."
    ]
    inact = s["inactivity"]["layers"]
    key = f"{RECORDED_THRESHOLD:g}"
    for p, v in zip(pairs, variants[1:]):
        for layer, d in inact.items():
            t = d["end"]["below"][key]["paired"][p]
            by = d["end"]["below"][key]["by_variant"]
            z = d["end"]["exact_zero"]["by_variant"]
            bullets.append(
                f"{layer} at the final weights, {v} vs {s['baseline']}: "
                f"{direction(t, 'more inactive', 'less inactive')} "
                f"(phi' < {key} max phi': {v} {fmt_ci(by[v])}, {s['baseline']} {fmt_ci(by[s['baseline']])}; "
                f"difference {fmt_ci(t.diff)}); exact zeros (phi' = 0) {v} {fmt_ci(z[v])}, "
                f"{s['baseline']} {fmt_ci(z[s['baseline']])}."
            )
    rep.section("Findings")
    rep.bullets(bullets)
    for wname in WINDOWS:
        if wname in s["windows"]:
            rep.section(f"Findings in the {WINDOWS[wname]} window", 3).bullets(_findings(s, wname))
    if c["optimizer"] == "sgd" and c["opt_kwargs"] in ("{}", ""):
        rep.text(
            "With plain SGD an update is -lr x the gradient (up to float32 rounding), so the update "
            "statistics repeat the gradient ones scaled by lr (log10 variance shifted by "
            "2 log10 lr); they differ under momentum or adaptive optimizers (--optimizer)."
        )
    for wname in WINDOWS:
        if wname not in s["windows"]:
            continue
        for kind in KINDS:
            rep.section(f"{kind.capitalize()} per layer, {WINDOWS[wname]} window")
            header = ["layer", "statistic", *variants, *[f"{p} (paired)" for p in pairs]]
            rows = []
            for layer in layers:
                for m, label in METRICS.items():
                    d = s["windows"][wname]["metrics"][kind][layer][m]
                    rows.append(
                        [
                            layer,
                            label,
                            *[fmt_ci(d["by_variant"][v]) for v in variants],
                            *[_test_text(d["paired"][p]) for p in pairs],
                        ]
                    )
            rep.table(header, rows)
    rep.figure("windows", FIGURES["windows"][0])
    rep.figure("distributions", FIGURES["distributions"][0])
    rep.figure("variance_paired", FIGURES["variance_paired"][0])
    rep.figure("update_psd", FIGURES["update_psd"][0])
    rep.figure("smoothness", FIGURES["smoothness"][0])
    rep.section("Stationarity (equal-steps window)")
    rep.table(
        ["kind", "activation", *[f"{layer}: " + "/".join(STATIONARITY_VERDICTS) for layer in layers]],
        [
            [
                kind,
                v,
                *[
                    " / ".join(pct(s["stationarity_bh"][kind][layer][v][k]) for k in STATIONARITY_VERDICTS)
                    for layer in layers
                ],
            ]
            for kind in KINDS
            for v in variants
        ],
    )
    rep.text(
        "invalid: the series is constant, e.g. the weights from pixels that are black in every "
        "training image (their gradient is exactly 0) or of a dead ReLU unit."
    )
    rep.figure("stationarity", FIGURES["stationarity"][0])
    rep.section("Inactive units, like for like")
    rep.text(
        "For every activation the same measure: the fraction of (probe image, unit) pairs whose "
        "derivative phi'(z) is below a fraction c of its maximum (sigmoid 4y(1-y), tanh 1-y^2, "
        "relu 1[y > 0]), at the initial and the final weights. Exact zeros (phi' = 0 in float32: "
        "no gradient passes) are a separate row; for ReLU every phi' < c is an exact zero, for "
        "sigmoid and tanh a small derivative still passes gradient."
    )
    rows = []
    for layer, d in inact.items():
        for when in ("start", "end"):
            for label, e in [
                ("exact zero", d[when]["exact_zero"]),
                *[(f"phi' < {c:g} max", d[when]["below"][f"{c:g}"]) for c in INACTIVE_THRESHOLDS],
            ]:
                rows.append(
                    [
                        layer,
                        "initial" if when == "start" else "final",
                        label,
                        *[fmt_ci(e["by_variant"][v]) for v in variants],
                        *[fmt_ci(e["paired"][p].diff) for p in pairs],
                    ]
                )
    rep.table(["layer", "weights", "measure", *variants, *[f"{p} (paired)" for p in pairs]], rows)
    rep.figure("inactivity", FIGURES["inactivity"][0])
    rows = [
        [v, name, fmt_ci(st["start"]), fmt_ci(st["end"])]
        for v, by in s["activation_statistics"].items()
        for name, st in by.items()
    ]
    if rows:
        rep.table(["activation", "recorded statistic", "step 0", "last step"], rows)
    rep.figure("training", FIGURES["training"][0])
    rep.config({"train (baseline variant)": s["config"], "compare": s["settings"]}, command)
    return rep


def record_runs(
    config: TrainConfig,
    settings: CompareSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> dict[str, store.Run]:
    """Open the study folder ``out`` and train (or reuse) every variant (a sweep config: every
    variant records the whole sweep)."""
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    check_steps(config.total_steps(int(data.train_labels.shape[0])), settings.burn_in)
    return train(
        config, settings, out, resume=resume, overwrite=overwrite, command=command, progress=progress, dataset=data
    )


def write_results(
    runs: dict[str, store.Run],
    settings: CompareSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    training_s: float | None = None,
) -> dict:
    """Compare the variants ``runs`` (plain runs, or one grid point of each) and write summary.json,
    report.md and figures/ into ``folder``; returns the summary."""
    return _write(analyse(runs, settings, progress=progress, dataset=dataset), folder, command).summary


def _write(analysis: CompareAnalysis, folder, command: str | None) -> CompareAnalysis:
    folder = Path(folder)
    write_summary(folder, analysis.summary)
    save_figures(FIGURES, analysis, folder / "figures")
    report(analysis, command).write(folder)
    return analysis


SWEPT_METRICS = ("log10_var", "log10_band_power_ratio", "stationary_fraction")


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`): in the
    equal-steps window, per pair (variant minus baseline) and layer, the mean paired difference of
    the updates' log10 variance, log10 band-power ratio and stationary fraction, and per variant
    the mean test accuracy."""
    metrics = summary["windows"]["equal_steps"]["metrics"]["updates"]
    out: dict[str, dict[str, float]] = {}
    for m in SWEPT_METRICS:
        panel = out.setdefault(f"updates {m}: paired difference", {})
        for layer, entry in metrics.items():
            for pair, test in entry[m]["paired"].items():
                panel[f"{layer} ({pair})"] = test["diff"]["mean"]
    out["test accuracy"] = {v: a["mean"] for v, a in summary["test_accuracy"].items()}
    return out
