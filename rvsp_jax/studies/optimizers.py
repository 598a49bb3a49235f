"""Section 5 of the RVSP study: SGD vs momentum vs Adam (or any optax optimizer) as filters.

Each variant trains its own ensemble (same seeds, data and network; only the optimizer differs) and
records, at every step, the updates and the minibatch gradients of the same parameters. The update
processes are compared side by side (ACF, normalised Welch PSD and spectral shape per layer, as in
:mod:`rvsp_jax.studies.spectra`), and where theory exists it is tested:

- optax.sgd with momentum beta (heavy ball) turns gradients into updates by
  ``u_t = beta u_{t-1} + g_t, d_t = -lr u_t``, so ``PSD_d = lr^2 / |1 - beta e^{-iw}|^2 PSD_g``;
  plain SGD is beta = 0, Nesterov its own gain (:mod:`rvsp_jax.analysis.optimizer_filters`);
- Adam is approximated by its first-moment filter divided by ``E[g^2]`` (b2 near 1 and a steady
  gradient variance; intermittent gradients, such as the weights of rarely active pixels, break it).

**The out-of-sample prediction** (:func:`frozen_noise`, :func:`predict_from_noise`). The theory's
claim is that the update process is the optimizer's filter applied to a white minibatch noise. That
noise is measured independently of the run's own trajectory: at each member's final weights,
frozen, the gradients of the recorded parameters on ``--frozen-batches`` fresh minibatches (drawn
from a stream of their own) give each parameter's noise variance ``sigma^2`` and mean square
``E[g^2]``. The prediction for the last ``--late`` fraction of the steps is ``|H|^2 2 sigma^2``
(the one-sided density of white noise; Adam: divided by ``E[g^2]``), compared with the measured Welch
PSD of the recorded updates there. Error of a process: the median over frequencies f > 0 of
``|measured - predicted| / predicted``; per member its median over a layer's processes. The metric
has a floor even for an exact theory, from the Welch estimate's own noise and the finite frozen
sample: :func:`metric_floor` measures it on simulated white noise of the same length, segments,
draws and process count. The verdict rule (:data:`LEVEL_TOLERANCE`) and the likely-cause rule of a
mismatch (:func:`mismatch_cause`) are written in the report.

**In-sample sanity check** (:func:`fit_theory`): the filter applied to each run's own recorded
gradients reproduces its recorded updates by construction (the updates *are* the filtered
gradients), so it checks the recording and the filter formulas only, not the theory.

The study folder holds one recorded run per variant under ``runs/<variant>/``
(:mod:`rvsp_jax.studies.folder`), plus ``summary.json``, ``report.md`` and ``figures/``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.analysis import across_members, is_constant, predicted_update_psd, welch
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import Dataset, load, to_model_inputs
from rvsp_jax.io import store
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, pct, progress_enabled, write_summary
from rvsp_jax.studies.figures import save_figures
from rvsp_jax.studies.folder import open_study, train_variant
from rvsp_jax.studies.layer_spectra import (
    DRIFT_ACCEPT,
    STATIONARY_ACCEPT,
    LayerSpectra,
    WindowStationarity,
    below_nyquist,
    layer_groups,
    measure_layers,
    member_series,
    per_layer,
    shape_summary,
    shape_word,
    window_stationarity,
    window_stationarity_summary,
)
from rvsp_jax.studies.members import check_usable, members_summary, usable_members
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.studies.windows import burn_in_steps, check_burn_in
from rvsp_jax.training.model import loss_and_accuracy, make_model
from rvsp_jax.training.probes import ProbeConfig
from rvsp_jax.training.registry import optimizer_names

EXPERIMENT = "optimizers"
TITLE = "Optimizers"
FOLDER = "study"
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
            variants.append(
                Variant(
                    item.get("name", item["optimizer"]),
                    item["optimizer"],
                    float(item.get("lr", base.lr)),
                    json.dumps(item.get("opt_kwargs", {}), sort_keys=True),
                )
            )
    else:
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, lr = item.partition(":")
            if name in PRESETS:
                variant = PRESETS[name]
            elif name in optimizer_names():
                variant = Variant(name, name, base.lr, base.opt_kwargs)
            else:
                raise ValueError(
                    f"unknown variant {name!r}: use a preset ({', '.join(PRESETS)}), an "
                    "optax optimizer name (sgd, adam, rmsprop, ...) or a JSON list"
                )
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
class OptimizerSettings(StudySettings):
    """Options of the optimizer comparison (the training flags are shared by every variant).

    Example::

        python -m experiments.optimizers --variants sgd,momentum,nesterov,adam --seeds 32
        python -m experiments.optimizers --variants '[{"name": "m99", "optimizer": "sgd",
            "lr": 0.001, "opt_kwargs": {"momentum": 0.99}}]'
    """

    variants: str = opt(
        "sgd,momentum,adam",
        "--variants",
        "optimizers to compare: presets (sgd, momentum, nesterov, adam) or optax names, "
        "each optionally :lr (e.g. momentum,rmsprop:1e-3), or a JSON list of "
        '{"name", "optimizer", "lr", "opt_kwargs"}; plain optax names use --lr and '
        "--opt-kwargs",
    )
    probe_index: str = opt(
        "16",
        "--probe-index",
        "parameters whose updates and gradients are recorded: K per parameter array, total=N, all, or names",
    )
    nlags: int = opt(50, "--nlags", "ACF lags")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (clipped to the series length)")
    burn_in: float = opt(0.1, "--burn-in", "fraction of the steps left out of the analysis")
    late: float = opt(
        0.25,
        "--late",
        "fraction of the steps, at the end, whose update PSD is predicted "
        "from the gradient noise measured at the frozen final weights",
    )
    frozen_batches: int = opt(
        512,
        "--frozen-batches",
        "minibatches drawn at the frozen final weights to measure each parameter's gradient-noise variance",
    )
    alpha: float = opt(0.05, "--alpha", "level of the ADF/KPSS tests of the analysed windows")

    def __post_init__(self):
        if self.nlags < 1 or self.nperseg < 4:
            raise ValueError(f"nlags must be >= 1 and nperseg >= 4, got {self.nlags}, {self.nperseg}")
        check_burn_in(self.burn_in)
        if not 0 < self.late <= 1:
            raise ValueError(f"late is a fraction of the steps in (0, 1], got {self.late}")
        if self.frozen_batches < 16:
            raise ValueError(
                f"frozen_batches must be >= 16 (a variance from fewer draws is too noisy), got {self.frozen_batches}"
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        ProbeConfig(index=self.probe_index)

    def probes(self) -> ProbeConfig:
        """Updates and gradients of the same parameters at every step (the filter needs both)."""
        return ProbeConfig(probes="updates,grads", index=self.probe_index, every=1)


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


def fit_theory(
    updates,
    grads,
    names,
    variant: Variant,
    usable: np.ndarray,
    *,
    start: int = 0,
    nperseg: int = 256,
    progress: bool = False,
) -> TheoryFit | None:
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
    for s in tqdm(
        np.flatnonzero(usable), desc=f"theory {variant.name}", disable=not progress_enabled(progress), leave=False
    ):
        d, g = member_series(updates, s, start), member_series(grads, s, start)
        dead = is_constant(d) | is_constant(g)
        d[dead], g[dead] = np.nan, np.nan
        freqs, psd_d = welch(d, nperseg=nperseg)
        _, psd_g = welch(g, nperseg=nperseg)
        with jax.enable_x64(True):
            pred = np.asarray(
                predicted_update_psd(
                    freqs, psd_g, beta, variant.lr, kind=kind, grad_second_moment=np.mean(g * g, axis=-1)
                )
            )
        total = psd_d.sum(axis=-1, keepdims=True) * (freqs[1] - freqs[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.median(np.abs(psd_d[:, 1:] - pred[:, 1:]) / pred[:, 1:], axis=-1)
            measured[s] = per_layer(psd_d / total, groups)
            predicted[s] = per_layer(pred / total, groups)
        rel_error[s] = per_layer(err, groups, np.nanmedian)
    return TheoryFit(kind, beta, variant.lr, freqs, measured, predicted, rel_error)


LEVEL_TOLERANCE = 1.25
"""Prediction verdicts: "matches" when the mean error across members is at most the threshold, the
error an exact theory scores (on simulated white noise of the same sizes) when its level is off by
this factor (either way, the larger error); "mismatch" when the lower end of the error's 95%
interval exceeds the threshold; else "inconclusive"."""
BAND_FACTOR = 1.5
"""Likely-cause rule: a band (low: the lowest 5% of the positive frequency bins, at least 2; high:
f > 0.25 cycles/step) is off when the median ratio measured / predicted there lies outside
[1/BAND_FACTOR, BAND_FACTOR]."""
_FROZEN_STREAM = 0x66726F7A  # "froz": stream tag of the frozen-weight minibatch draw


class FrozenNoise(NamedTuple):
    """Gradient noise of the recorded parameters at each member's frozen final weights (float64).

    var: ``[S, P]`` variance over the M minibatch gradients (ddof 1); mean_sq: ``[S, P]`` their mean
    square ``E[g^2]``; batches: M. Excluded members are NaN.
    """

    var: np.ndarray
    mean_sq: np.ndarray
    batches: int


def frozen_noise(
    run: store.Run, dataset: Dataset, usable: np.ndarray, batches: int = 512, *, progress: bool = False
) -> FrozenNoise:
    """Minibatch gradients of the recorded parameters at every usable member's final weights.

    The M = ``batches`` minibatches of the run's batch size are drawn without replacement within a
    batch from the training split by ``numpy.random.default_rng((tag, base_seed))``, independent of
    the members' own data order; the same draws for every member and variant. The loss is the
    trainer's mean cross-entropy (float32).
    """
    config = run.config
    model = make_model(config)
    layout = run.layout
    n = int(dataset.train_labels.shape[0])
    rng = np.random.default_rng([_FROZEN_STREAM, config.base_seed % 2**64])
    idx = np.stack([rng.choice(n, config.batch_size, replace=False) for _ in range(batches)])
    x = jnp.asarray(to_model_inputs(dataset.train_images[idx.ravel()]).reshape(batches, config.batch_size, -1))
    y = jnp.asarray(dataset.train_labels[idx])
    index = tuple((name, tuple(int(j) for j in i)) for name, i in layout.param_index.items() if len(i))
    per_batch = _frozen_grad_fn(model, tuple(layout.param_shapes), index)
    final = run.final().params
    p_count = sum(len(i) for _, i in index)
    var = np.full((usable.size, p_count), np.nan)
    mean_sq = var.copy()
    for s in tqdm(
        np.flatnonzero(usable), desc="frozen-weight noise", disable=not progress_enabled(progress), leave=False
    ):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[s]), final)  # noqa: B023
        g = np.asarray(per_batch(params, x, y), np.float64)  # [M, P]
        var[s], mean_sq[s] = g.var(0, ddof=1), (g * g).mean(0)
    return FrozenNoise(var, mean_sq, batches)


@functools.lru_cache(maxsize=8)
def _frozen_grad_fn(model, names: tuple, index: tuple):
    """Jitted ``(params, x [M, B, 784], y [M, B]) -> [M, P]`` gradients of the recorded entries
    (cached: the variants of a comparison share the model and the entries, so it compiles once)."""
    gathers = [(name, jnp.asarray(i, jnp.int32)) for name, i in index]

    def grads(params, xb, yb):
        g = jax.grad(lambda p: loss_and_accuracy(model, p, xb, yb)[0])(params)
        by_name = dict(zip(names, jax.tree_util.tree_leaves(g)))
        return jnp.concatenate([by_name[name].reshape(-1)[i] for name, i in gathers])

    return jax.jit(jax.vmap(grads, in_axes=(None, 0, 0)))


class PredictionFit(NamedTuple):
    """Measured update PSD of a window against the out-of-sample prediction (float64; excluded NaN).

    kind, beta, lr: the filter; start, stop: the window's recorded steps; freqs ``[F]``.
    measured, predicted: ``[S, L, F]`` layer means of each process's PSD divided by the measured
      total power; rel_error: ``[S, L]`` median over the layer's processes of the median over f > 0
      of ``|measured - predicted| / predicted``; log_ratio_low, log_ratio_high: ``[S, L]`` median over
      processes of the median log10(measured / predicted) over the low band (f <= f_low: the lowest
      5% of the positive bins, at least 2) and over f > 0.25.
    """

    kind: str
    beta: float
    lr: float
    start: int
    stop: int
    freqs: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    rel_error: np.ndarray
    log_ratio_low: np.ndarray
    log_ratio_high: np.ndarray
    f_low: float = float("nan")


def _median_rel_error(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``[..., F] -> [...]`` median over f > 0 of ``|measured - predicted| / predicted``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.median(np.abs(measured[..., 1:] - predicted[..., 1:]) / predicted[..., 1:], axis=-1)


def predict_from_noise(
    updates,
    names,
    variant: Variant,
    usable: np.ndarray,
    noise: FrozenNoise,
    *,
    start: int,
    stop: int | None = None,
    nperseg: int = 256,
    progress: bool = False,
) -> PredictionFit | None:
    """The update PSD that the filter theory predicts from independently measured white noise,
    against the measured one, in the window ``[start, stop)`` of ``updates: [S, T, P]``."""
    theory = variant.theory()
    if theory is None:
        return None
    kind, beta = theory
    groups = layer_groups(names)
    stop = updates.shape[1] if stop is None else stop
    nperseg = min(nperseg, stop - start)
    freqs = np.fft.rfftfreq(nperseg)
    shape = (updates.shape[0], len(groups))
    measured = np.full((*shape, freqs.size), np.nan)
    predicted = measured.copy()
    err, low, high = (np.full(shape, np.nan) for _ in range(3))
    for s in tqdm(
        np.flatnonzero(usable), desc=f"prediction {variant.name}", disable=not progress_enabled(progress), leave=False
    ):
        d = member_series(updates, s, start, stop)
        dead = is_constant(d) | ~(noise.var[s] > 0)
        d[dead] = np.nan
        freqs, psd_d = welch(d, nperseg=nperseg)
        white = np.broadcast_to(2.0 * noise.var[s][:, None], psd_d.shape)
        with jax.enable_x64(True):
            pred = np.asarray(
                predicted_update_psd(freqs, white, beta, variant.lr, kind=kind, grad_second_moment=noise.mean_sq[s])
            )
        total = psd_d.sum(axis=-1, keepdims=True) * (freqs[1] - freqs[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.log10(psd_d / pred)
            measured[s] = per_layer(psd_d / total, groups)
            predicted[s] = per_layer(pred / total, groups)
        n_low = max(2, (freqs.size - 1) // 20)
        lo_band, hi_band = np.zeros(freqs.size, bool), freqs > 0.25
        lo_band[1 : 1 + n_low] = True
        err[s] = per_layer(_median_rel_error(psd_d, pred), groups, np.nanmedian)
        if lo_band.any():
            low[s] = per_layer(np.median(ratio[:, lo_band], axis=-1), groups, np.nanmedian)
        high[s] = per_layer(np.median(ratio[:, hi_band], axis=-1), groups, np.nanmedian)
    f_low = float(freqs[min(freqs.size - 1, max(2, (freqs.size - 1) // 20))])
    return PredictionFit(kind, beta, variant.lr, start, stop, freqs, measured, predicted, err, low, high, f_low)


class MetricFloor(NamedTuple):
    """floor: ``[S, L]`` the error metric of an exact theory; threshold: ``[S, L]`` the larger metric
    of one whose predicted level is off by ``tolerance`` either way (:data:`LEVEL_TOLERANCE`), the
    "matches" limit."""

    floor: np.ndarray
    threshold: np.ndarray
    tolerance: float


def metric_floor(
    members: int, counts, steps: int, nperseg: int, batches: int, *, tolerance: float = LEVEL_TOLERANCE, seed: int = 0
) -> MetricFloor:
    """The prediction-error metric for an exactly right theory, and for one off by ``tolerance``.

    Each simulated process is white Gaussian noise of unit variance, ``steps`` long (its Welch PSD
    with ``nperseg`` is the "measured" one), predicted from the variance of ``batches`` independent
    draws (the "frozen" measurement), times ``tolerance`` or ``1 / tolerance`` for the threshold (the
    larger of the two errors: with few Welch segments the metric, a median of skewed bins, is not
    smallest at the true level); per member the median over ``counts[l]`` processes as in
    :func:`predict_from_noise`. Any filter gives the same values up
    to Welch leakage, since a gain multiplies measured and predicted alike.
    """
    rng = np.random.default_rng(seed)
    nperseg = min(nperseg, steps)
    floor, threshold = np.empty((members, len(counts))), np.empty((members, len(counts)))
    for l, p in enumerate(counts):
        x = rng.standard_normal((members, int(p), steps))
        _, psd = welch(x, nperseg=nperseg)
        var = rng.standard_normal((members, int(p), batches)).var(-1, ddof=1)
        pred = np.broadcast_to(2.0 * var[..., None], psd.shape)
        floor[:, l] = np.median(_median_rel_error(psd, pred), axis=-1)
        threshold[:, l] = np.maximum(
            *(np.median(_median_rel_error(psd, k * pred), axis=-1) for k in (tolerance, 1 / tolerance))
        )
    return MetricFloor(floor, threshold, float(tolerance))


def prediction_verdict(error, threshold: float) -> str:
    """The rule of :data:`LEVEL_TOLERANCE` applied to an across-member summary of the error."""
    if not np.isfinite(error.mean) or not np.isfinite(threshold):
        return "undetermined"
    if error.mean <= threshold:
        return "matches"
    return "mismatch" if np.isfinite(error.lo) and error.lo > threshold else "inconclusive"


def mismatch_cause(log_low: float, log_high: float, kind: str) -> str:
    """The likely cause of a mismatch from where the measured / predicted ratio departs from 1
    (the rule of :data:`BAND_FACTOR`)."""
    tol = np.log10(BAND_FACTOR)
    if not (np.isfinite(log_low) and np.isfinite(log_high)):
        return "undetermined (too few frequency bins)"
    low_off, high_off = abs(log_low) > tol, abs(log_high) > tol
    adam = (
        " or Adam's normalisation is not E[g^2] (intermittent gradients, b2 not near 1, epsilon)"
        if kind == "adam"
        else ""
    )
    if low_off and not high_off:
        return (
            "excess low-frequency power: the gradients along the trajectory are not white (the "
            "weights move during the window: drift of the mean gradient or curvature feedback), "
            "which frozen-weight noise does not contain"
            if log_low > 0
            else "missing low-frequency power: curvature feedback (mean reversion of the weights) "
            "removes slow gradient fluctuations"
        )
    if low_off and high_off and np.sign(log_low) == np.sign(log_high):
        return (
            "the noise level differs between the window and the frozen final weights (the "
            "gradient variance drifts through the window)" + adam
        )
    if high_off:
        return "the high-frequency level differs: the noise variance along the trajectory is not the frozen one" + adam
    return "no single band explains it: the shape differs across the band"


class VariantResult(NamedTuple):
    variant: Variant
    run: store.Run
    usable: np.ndarray
    spectra: LayerSpectra
    theory: TheoryFit | None
    prediction: PredictionFit | None = None
    floor: MetricFloor | None = None  # the metric's floor and "matches" threshold
    window: WindowStationarity | None = None  # the analysed window (updates)
    late_window: WindowStationarity | None = None  # the predicted window (updates)
    frozen: FrozenNoise | None = None


def analyse_variant(
    run: store.Run,
    variant: Variant,
    settings: OptimizerSettings,
    *,
    dataset: Dataset | None = None,
    progress: bool = False,
) -> VariantResult:
    usable = usable_members(run)
    check_usable(usable, f"variant {variant.name} ({run.path})")
    x = run["updates"]
    names = run.probe_names["updates"]
    total = x.shape[1]
    start = burn_in_steps(settings.burn_in, total)
    late = max(start, total - max(8, int(round(settings.late * total))))
    if total - start < 8:
        raise ValueError(
            f"{total - start} steps after the burn-in are too few for spectra; "
            "train longer (--steps) or lower --burn-in"
        )
    spectra = measure_layers(
        x,
        names,
        usable,
        start=start,
        nlags=settings.nlags,
        nperseg=settings.nperseg,
        progress=progress,
        desc=f"spectra {variant.name}",
    )
    theory = fit_theory(
        x, run["grads"], names, variant, usable, start=start, nperseg=settings.nperseg, progress=progress
    )
    window = window_stationarity(x, names, usable, start=start, alpha=settings.alpha, progress=progress)
    late_window = window_stationarity(x, names, usable, start=late, alpha=settings.alpha, progress=progress)
    prediction = floor = frozen = None
    if variant.theory() is not None:
        data = dataset if dataset is not None else load(run.config.dataset, data_dir=run.config.data_dir)
        frozen = frozen_noise(run, data, usable, settings.frozen_batches, progress=progress)
        prediction = predict_from_noise(
            x, names, variant, usable, frozen, start=late, nperseg=settings.nperseg, progress=progress
        )
        floor = metric_floor(int(usable.sum()), spectra.counts, total - late, settings.nperseg, settings.frozen_batches)
    return VariantResult(variant, run, usable, spectra, theory, prediction, floor, window, late_window, frozen)


_FILTERS = {
    "momentum": "lr^2 / |1 - beta e^-iw|^2 (heavy ball; beta = 0 is plain SGD)",
    "nesterov": "lr^2 |(1+beta) - beta e^-iw|^2 / |1 - beta e^-iw|^2 (Nesterov)",
    "adam": "lr^2 (1-b1)^2 / |1 - b1 e^-iw|^2 / E[g^2] (Adam, approximate: b2 near 1)",
}


def summarise(results: list[VariantResult], settings: OptimizerSettings, base: TrainConfig) -> dict:
    variants = {}
    for r in results:
        sp = r.spectra
        steps = r.run.steps
        entry = {
            "optimizer": r.variant.optimizer,
            "lr": r.variant.lr,
            "opt_kwargs": r.variant.kwargs(),
            "folder": f"runs/{r.variant.name}",
            "members": members_summary(r.usable),
            "test_accuracy": across_members(np.where(r.usable, r.run.final().test_accuracy, np.nan)),
            "analysed_window": window_stationarity_summary(r.window, sp.layers, steps),
            "layers": {
                layer: {
                    "processes": int(sp.counts[l]),
                    "acf_lag1": across_members(sp.acf[:, l, 1]),
                    "spectral_slope": across_members(sp.slope[:, l]),
                    "spectral_slope_r2": across_members(sp.slope_r2[:, l]),
                    "slope_fit_range": [float(sp.freqs[1]), float(sp.freqs[-1])],
                    "spectral_shape": shape_summary(sp, l),
                    "band_power_ratio": across_members(sp.band_ratio[:, l]),
                    "spectral_flatness": across_members(sp.flatness[:, l]),
                }
                for l, layer in enumerate(sp.layers)
            },
            "theory": None,
            "prediction": None,
        }
        if r.theory is not None:
            entry["theory"] = {
                "role": "in-sample sanity check: the recorded updates are the filtered recorded "
                "gradients by construction, so a small error checks the recording and the "
                "filter formulas, not the theory",
                "kind": r.theory.kind,
                "beta": r.theory.beta,
                "filter": _FILTERS[r.theory.kind],
                "approximate": r.theory.kind == "adam",
                "median_relative_error": {
                    layer: across_members(r.theory.rel_error[:, l]) for l, layer in enumerate(sp.layers)
                },
            }
        if r.prediction is not None:
            pr = r.prediction
            layers = {}
            for l, layer in enumerate(sp.layers):
                err = across_members(pr.rel_error[:, l])
                floor = across_members(r.floor.floor[:, l])
                threshold = across_members(r.floor.threshold[:, l])
                verdict = prediction_verdict(err, threshold.mean)
                low, high = across_members(pr.log_ratio_low[:, l]), across_members(pr.log_ratio_high[:, l])
                layers[layer] = {
                    "median_relative_error": err,
                    "floor": floor,
                    "threshold": threshold,
                    "verdict": verdict,
                    "error_over_floor": float(err.mean / floor.mean) if floor.mean else None,
                    "log10_ratio_low": low,
                    "log10_ratio_high": high,
                    "low_band_max_frequency": pr.f_low,
                    "bands_off": bool(max(abs(low.mean), abs(high.mean)) > np.log10(BAND_FACTOR)),
                    "likely_cause": (
                        mismatch_cause(float(low.mean), float(high.mean), pr.kind)
                        if verdict in ("mismatch", "inconclusive")
                        or max(abs(low.mean), abs(high.mean)) > np.log10(BAND_FACTOR)
                        else None
                    ),
                }
            entry["prediction"] = {
                "role": "out-of-sample: update PSD predicted from gradient noise measured at the frozen "
                "final weights, independently of the run's own gradients",
                "kind": pr.kind,
                "beta": pr.beta,
                "filter": _FILTERS[pr.kind],
                "approximate": pr.kind == "adam",
                "frozen_batches": r.frozen.batches,
                "window": window_stationarity_summary(r.late_window, sp.layers, steps),
                "level_tolerance": LEVEL_TOLERANCE,
                "band_factor": BAND_FACTOR,
                "layers": layers,
            }
        variants[r.variant.name] = entry
    return {
        "experiment": EXPERIMENT,
        "config": base.to_dict(),
        "settings": settings.to_dict(),
        "series_length": results[0].spectra.nobs,
        "variants": variants,
        "rules": RULES,
    }


RULES = {
    "prediction": "an out-of-sample prediction 'matches' when the mean error across members is at most "
    "the threshold: the error an exact theory scores on simulated white noise of the same "
    "length, segments, frozen draws and process count (the floor) when its level is off "
    f"by a factor {LEVEL_TOLERANCE} (either way, the larger); 'mismatch' when the lower "
    "end of the error's 95% "
    "interval exceeds the threshold; otherwise 'inconclusive'",
    "likely_cause": f"for a mismatch (and for any layer with a band off), the median log10(measured / "
    "predicted) over the lowest 5% of the frequency bins (at least 2) and above "
    f"f = 0.25 cycles/step is 'off' outside [1/{BAND_FACTOR}, {BAND_FACTOR}]; low band off "
    "alone: non-white gradients along the trajectory (excess) or curvature feedback "
    "(deficit); both off the same way: the noise level drifts between window and "
    "final weights; high band alone: a different noise variance",
    "sanity_check": "the in-sample identity (filter applied to the run's own recorded gradients) is a "
    "check of the recording and of the filter formulas; it is never reported as "
    "agreement with the theory",
    "shape": "a spectrum is called 'power law', 'Lorentzian (AR(1))' or 'white' only when that model "
    "has the lowest AIC (Whittle likelihood of the periodogram, margin 2) for more than half "
    "of the layer's processes (a power law with |beta| < 0.2: a tilt of a nearly white "
    "spectrum); the log-log slope is a power-law exponent only under 'power law'",
    "stationary_window": f"a window is 'stationary' when at least {STATIONARY_ACCEPT:.0%} of its testable "
    "update processes "
    f"pass ADF + KPSS (raw) and the median |relative variance drift| is at most "
    f"{DRIFT_ACCEPT}",
}


def figure_update_acf(results: list[VariantResult]):
    layers = results[0].spectra.layers
    fig, axes = plots.subplots(1, len(layers), width="double", height=2.2, squeeze=False, sharey=True)
    for l, ax in enumerate(axes[0]):
        for r in results:
            m = across_members(r.spectra.acf[:, l, 1:])
            plots.plot_band(ax, np.arange(1, m.mean.size + 1), m.mean, m.lo, m.hi, label=r.variant.name)
        ax.axhline(0, color="0.3", linewidth=0.5)
        ax.set(title=layers[l], xlabel="lag (steps)")
    axes[0, 0].set_ylabel("ACF of updates")
    axes[0, 0].legend()
    return fig


def figure_update_psd(results: list[VariantResult]):
    layers = results[0].spectra.layers
    fig, axes = plots.subplots(1, len(layers), width="double", height=2.2, squeeze=False, sharey=True)
    for l, ax in enumerate(axes[0]):
        for r in results:
            plots.plot_psd_bands(ax, *below_nyquist(r.spectra.freqs, r.spectra.psd[:, l]), label=r.variant.name)
        ax.set(title=layers[l], xlabel="frequency (cycles/step)")
    axes[0, 0].set_ylabel("normalised update PSD")
    axes[0, 0].legend()
    return fig


def figure_psd_prediction(results: list[VariantResult]):
    layers = results[0].spectra.layers
    predicted = [r for r in results if r.prediction is not None]
    if not (predicted):
        return None  # nothing to draw
    fig, axes = plots.subplots(
        len(predicted), len(layers), width="double", height=1.9 * len(predicted) + 0.2, squeeze=False, sharex=True
    )
    for i, r in enumerate(predicted):
        pr = r.prediction
        for l, ax in enumerate(axes[i]):
            f, measured = below_nyquist(pr.freqs, pr.measured[:, l])
            pred = below_nyquist(pr.freqs, pr.predicted[:, l])[1]
            theory = np.nanmedian(pred[r.usable], axis=0) if r.usable.any() else None
            plots.plot_psd_bands(
                ax,
                f,
                measured,
                theory,
                label="measured (late window)",
                theory_label="predicted from frozen-weight noise",
            )
            err = across_members(pr.rel_error[:, l])
            floor = across_members(r.floor.floor[:, l]).mean
            limit = across_members(r.floor.threshold[:, l]).mean
            ax.set_title(
                f"{r.variant.name}, {layers[l]}\nerror {fmt(err.mean, 2)} "
                f"(floor {fmt(floor, 2)}): {prediction_verdict(err, limit)}"
            )
        axes[i, 0].set_ylabel("update PSD")
    for ax in axes[-1]:
        ax.set_xlabel("frequency (cycles/step)")
    axes[0, 0].legend()
    return fig


def figure_prediction_error(results: list[VariantResult]):
    layers = results[0].spectra.layers
    predicted = [r for r in results if r.prediction is not None]
    if not predicted:
        return None  # no variant has a filter theory
    fig, ax = plots.subplots(width="single", height=2.5)
    x = np.arange(len(layers))
    width = 0.8 / len(predicted)
    for i, r in enumerate(predicted):
        m = across_members(r.prediction.rel_error)
        xs = x + (i - (len(predicted) - 1) / 2) * width
        ax.errorbar(
            xs,
            m.mean,
            yerr=[m.mean - m.lo, m.hi - m.mean],
            fmt="o",
            capsize=2,
            color=plots.PALETTE[i],
            label=r.variant.name,
        )
        ax.plot(xs, across_members(r.floor.floor).mean, "_", color=plots.PALETTE[i], markersize=8)
        ax.plot(xs, across_members(r.floor.threshold).mean, "v", color=plots.PALETTE[i], markersize=3, fillstyle="none")
        if r.theory is not None:
            ax.plot(
                xs,
                across_members(r.theory.rel_error).mean,
                "x",
                color="0.5",
                markersize=3,
                label="in-sample sanity check" if i == 0 else None,
            )
    ax.set(xticks=x, xticklabels=layers, ylabel="median relative error", yscale="log")
    ax.legend()
    return fig


FIGURES = {
    "update_acf": (
        "ACF of parameter updates per layer and optimizer: mean over the layer's processes, "
        "band = 95% t-interval across members",
        figure_update_acf,
    ),
    "update_psd": (
        "Welch PSD of updates normalised to unit power (white noise: 2), per layer and "
        "optimizer: median over members, band 5-95% of members",
        figure_update_psd,
    ),
    "psd_prediction": (
        "Out-of-sample test: measured update PSD in the late window (median over members, "
        "band 5-95%) against the optimizer filter applied to white noise whose variance is "
        "measured at the frozen final weights on fresh minibatches (dashed, median over "
        "members); both normalised by the measured power",
        figure_psd_prediction,
    ),
    "prediction_error": (
        f"Out-of-sample prediction error per layer (mean and 95% t-interval across members); "
        f"dashes: the floor of the metric (exact theory); open triangles: the 'matches' "
        f"threshold (exact theory with its level off by {LEVEL_TOLERANCE}x); grey crosses: the "
        "in-sample sanity check (filter applied to the run's own recorded gradients, equal to "
        "the updates by construction)",
        figure_prediction_error,
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


def _window_line(name: str, w: dict, what: str) -> str:
    return (
        f"{name}, {what}: steps {w['steps'][0]}-{w['steps'][1]}, {pct(w['pooled_stationary_fraction'])} "
        f"of the testable update processes stationary, median |variance drift| "
        f"{fmt(w['pooled_variance_drift'], 2)}: {'stationary' if w['accepted'] else 'NOT stationary'}"
    )


def report(
    summary: dict, captions: dict, settings: OptimizerSettings, base: TrainConfig, command: str | None
) -> Report:
    rep = Report("Optimizers as filters: SGD, momentum, Adam")
    variants = summary["variants"]
    rep.text(
        f"Each variant trains {base.seeds} members (same seeds, data and network: "
        f"{'-'.join(map(str, (784, *base.widths, 10)))} {base.activation}, batch {base.batch_size}); "
        f"updates and gradients of the same parameters recorded at every step, analysed over "
        f"{summary['series_length']} steps after the burn-in. Intervals are 95% t-intervals "
        "across members (fractions: percentile bootstrap); diverged members are excluded and counted."
    )
    rows = [
        [
            name,
            _describe(v),
            f"{v['members']['used']}/{v['members']['total']}",
            v["members"]["diverged"],
            fmt_ci(v["test_accuracy"]),
        ]
        for name, v in variants.items()
    ]
    rep.table(["variant", "optimizer", "members used", "diverged", "test accuracy"], rows)
    rep.section("Rules")
    rep.text("Every sentence of the findings follows from the numbers by one of these rules:")
    rep.bullets([f"{k}: {v}." for k, v in summary["rules"].items()])
    rep.section("Analysed windows")
    lines = []
    for name, v in variants.items():
        lines.append(_window_line(name, v["analysed_window"], "ACF, PSD and shape"))
        if v["prediction"] is not None:
            lines.append(_window_line(name, v["prediction"]["window"], "out-of-sample prediction (late window)"))
    rep.bullets([line + "." for line in lines])
    rep.section("Findings")
    bullets = []
    for name, v in variants.items():
        parts = []
        for layer, d in v["layers"].items():
            word = shape_word(d["spectral_shape"])
            sh = d["spectral_shape"]
            text = f"{layer} lag-1 ACF {fmt_ci(d['acf_lag1'])}, spectrum {word}"
            if word == "power law":
                text += f" (exponent {fmt_ci(sh['beta_whittle'])})"
            else:
                text += (
                    f" (Lorentzian phi {fmt_ci(sh['phi'])}; log-log slope "
                    f"{fmt(d['spectral_slope'].mean, 3)} is a shape summary)"
                )
            parts.append(text)
        bullets.append(f"{name}: " + "; ".join(parts) + ".")
        p = v["prediction"]
        if p is None:
            bullets.append(f"{name}: no linear-filter theory for optax.{v['optimizer']}; measured only.")
            continue
        for layer, d in p["layers"].items():
            text = (
                f"{name}, {layer}: the {'approximate ' if p['approximate'] else ''}out-of-sample "
                f"prediction ({p['kind']}, beta = {p['beta']:g}) {d['verdict']}: error "
                f"{fmt_ci(d['median_relative_error'])} against a floor of {fmt(d['floor'].mean, 2)} "
                f"(x{fmt(d['error_over_floor'], 2)}; threshold {fmt(d['threshold'].mean, 2)})"
            )
            if d["likely_cause"]:
                text += (
                    f"; measured/predicted at f <= {fmt(d['low_band_max_frequency'], 2)}: "
                    f"x{fmt(10 ** d['log10_ratio_low'].mean, 2)}, above f = 0.25: "
                    f"x{fmt(10 ** d['log10_ratio_high'].mean, 2)}; "
                    + ("although the overall error matches, a band is off; " if d["verdict"] == "matches" else "")
                    + f"likely cause: {d['likely_cause']}"
                )
            bullets.append(text + ".")
    rep.bullets(bullets)
    rep.section("Update processes side by side")
    header = [
        "variant",
        "layer",
        "processes",
        "ACF lag 1",
        "shape",
        "Lorentzian phi",
        "log-log slope",
        "slope r^2",
        "band ratio",
        "flatness",
    ]
    rows = [
        [
            name,
            layer,
            d["processes"],
            fmt_ci(d["acf_lag1"]),
            shape_word(d["spectral_shape"]),
            fmt_ci(d["spectral_shape"]["phi"]),
            fmt_ci(d["spectral_slope"]),
            fmt_ci(d["spectral_slope_r2"]),
            fmt_ci(d["band_power_ratio"]),
            fmt_ci(d["spectral_flatness"]),
        ]
        for name, v in variants.items()
        for layer, d in v["layers"].items()
    ]
    rep.table(header, rows)
    rep.text(
        "Shape: each update process's periodogram is fitted by white noise, a Lorentzian (the "
        "AR(1) spectrum; heavy-ball momentum applied to white noise gives exactly this with phi = "
        "beta) and a power law by Whittle maximum likelihood, compared by AIC. The log-log slope "
        "(OLS over the Welch bins f > 0) is reported with its r^2 as a shape summary."
    )
    rep.figure("update_acf", captions["update_acf"]).figure("update_psd", captions["update_psd"])
    if "psd_prediction" in captions:
        rep.section("Out-of-sample test: update PSD = |H|^2 x white noise measured at frozen weights")
        rep.text(
            f"At each member's final weights, frozen, the gradients of the recorded parameters on "
            f"{settings.frozen_batches} fresh minibatches (a draw of their own, not the run's data "
            "order) give each parameter's noise variance sigma^2 (and E[g^2] for Adam). The theory "
            "predicts the update PSD |H|^2 2 sigma^2 of the last "
            f"{settings.late:.0%} of the steps. Error of a process: median over f > 0 of "
            "|measured - predicted| / predicted; per member the median over a layer's processes. "
            "Floor: the same metric for an exact theory on simulated white noise with the same "
            "length, Welch segments, frozen draws and process count; threshold: the same with the "
            f"predicted level off by a factor {LEVEL_TOLERANCE} (up or down, the larger)."
        )
        rows = [
            [
                name,
                v["prediction"]["filter"],
                layer,
                fmt_ci(d["median_relative_error"]),
                fmt_ci(d["floor"]),
                fmt(d["threshold"].mean),
                fmt(d["error_over_floor"], 2),
                d["verdict"],
                d["likely_cause"] or "",
            ]
            for name, v in variants.items()
            if v["prediction"] is not None
            for layer, d in v["prediction"]["layers"].items()
        ]
        rep.table(
            [
                "variant",
                "power gain |H|^2",
                "layer",
                "error",
                "floor",
                "threshold",
                "error / floor",
                "verdict",
                "likely cause",
            ],
            rows,
        )
        rep.figure("psd_prediction", captions["psd_prediction"]).figure(
            "prediction_error", captions["prediction_error"]
        )
    if any(v["theory"] is not None for v in variants.values()):
        rep.section("Sanity check (in-sample identity, not evidence for the theory)")
        rep.text(
            "The filter applied to the run's own recorded gradients is compared with its recorded "
            "updates. The updates are the filtered gradients by construction, so a small error only "
            "confirms the recording and the filter formulas (float32 rounding and Welch leakage "
            "remain)."
        )
        rows = [
            [name, v["theory"]["filter"], *[fmt_ci(e) for e in v["theory"]["median_relative_error"].values()]]
            for name, v in variants.items()
            if v["theory"] is not None
        ]
        layers = next(iter(variants.values()))["layers"]
        rep.table(["variant", "power gain |H|^2", *layers], rows)
        rep.text("The grey crosses of the prediction-error figure show these errors beside the out-of-sample ones.")
    rep.section("Configuration")
    rep.config(
        {
            "train": base.to_dict(),
            "optimizers": settings.to_dict(),
            "variants": {n: {k: v[k] for k in ("optimizer", "lr", "opt_kwargs")} for n, v in variants.items()},
        },
        command,
    )
    return rep


def _describe(v: dict) -> str:
    extra = ", ".join(f"{k}={x}" for k, x in v["opt_kwargs"].items())
    return f"optax.{v['optimizer']}(lr={v['lr']:g}{', ' + extra if extra else ''})"


class VariantRuns(NamedTuple):
    """The recorded variants of a comparison: the base configuration and each variant's run (in the
    order of ``--variants``)."""

    base: TrainConfig
    runs: dict[str, store.Run]

    def point(self, g: int) -> VariantRuns:
        """Grid point ``g`` of a sweep: every variant's run at that point (:meth:`store.Run.point`)."""
        return VariantRuns(self.base.point(g), {k: r.point(g) for k, r in self.runs.items()})


def record_runs(
    base: TrainConfig,
    settings: OptimizerSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> VariantRuns:
    """Open the study folder ``out`` and train (or reuse) every variant into ``out/runs/<variant>``.
    With a sweep, every variant records the whole grid (its own value of a swept hyperparameter is
    replaced by the grid's)."""
    variants = parse_variants(settings.variants, base)
    configs = [v.config(base) for v in variants]  # a swept key the optimizer lacks is refused here
    out = open_study(
        out,
        EXPERIMENT,
        {
            "config": base.to_dict(),
            "settings": settings.to_dict(),
            "variants": [dataclasses.asdict(v) for v in variants],
        },
        resume=resume,
        overwrite=overwrite,
        command=command,
    )
    data = dataset if dataset is not None else load(base.dataset, data_dir=base.data_dir)
    return VariantRuns(
        base,
        {
            v.name: train_variant(
                out, v.name, c, settings.probes(), resume=resume, experiment=EXPERIMENT, progress=progress, dataset=data
            )
            for v, c in zip(variants, configs)
        },
    )


def write_results(
    recorded: VariantRuns,
    settings: OptimizerSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    training_s: float | None = None,
) -> dict:
    """Compare the recorded variants (plain runs, or one grid point of each) and write
    summary.json, report.md and figures/ into ``folder``; returns the summary. Each variant's
    optimizer, learning rate and options are read from its run's configuration (for a grid point:
    that point's values)."""
    folder = Path(folder)
    base = recorded.base
    data = dataset if dataset is not None else load(base.dataset, data_dir=base.data_dir)
    results = []
    for name, run in recorded.runs.items():
        c = run.config
        variant = Variant(name, c.optimizer, c.lr, c.opt_kwargs)
        results.append(analyse_variant(run, variant, settings, dataset=data, progress=progress))
    summary = summarise(results, settings, base)
    write_summary(folder, summary)
    captions = save_figures(FIGURES, results, folder / "figures")
    report(summary, captions, settings, base, command).write(folder)
    return summary


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`): per variant and
    layer, the across-member mean low/high band-power ratio of the updates and the out-of-sample
    prediction's median relative error (variants without a filter theory have none), and per variant
    the mean test accuracy."""
    band, error, accuracy = {}, {}, {}
    for name, v in summary["variants"].items():
        accuracy[name] = v["test_accuracy"]["mean"]
        for layer, entry in v["layers"].items():
            band[f"{name} {layer}"] = entry["band_power_ratio"]["mean"]
        for layer, entry in ((v.get("prediction") or {}).get("layers") or {}).items():
            error[f"{name} {layer}"] = entry["median_relative_error"]["mean"]
    out = {"band power ratio low/high": band, "test accuracy": accuracy}
    if error:
        out["prediction: median relative error"] = error
    return out
