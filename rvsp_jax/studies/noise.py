"""Section 6 of the RVSP study: the optimizer as a stochastic process driven by minibatch noise.

The ensemble is recorded with every parameter (``params``, and the trainer's ``grads`` as a check)
at a dozen steps spread over training. At each such step ``t`` and for each member the gradient
noise is rebuilt after training (:mod:`rvsp_jax.analysis.gradient_noise`): the gradients of the member's
next M minibatches at the frozen weights ``theta_t`` minus the mean gradient ``G`` over a fixed
subset of the training set, ``xi_m = g_m - G`` (``[M, P]``), then centred per parameter by its mean
over the M minibatches (the reference gradient is not the full-data one; the offset would bias the
block-sum estimator towards 1). With the weights frozen the M draws are exchangeable: each noise
step is a stationary sample by construction; across noise steps the distribution drifts, so
windows of steps (all, early half, late half of training) are summarised separately.

Parameter groups: all parameters, each layer, and the first layer's weights stratified by how often
their pixel is lit (> 0) in the training images (< 5%, 5-50%, > 50%): a weight's gradient is its
unit's error times its pixel, so a rarely lit pixel gives a mostly-zero noise with rare spikes.

- **Across parameters** (Simsekli et al. 2019 pool the noise over parameters): for each minibatch,
  the tail index of the noise over a random sample of the group's parameters (``tail_sample``,
  among those with a nonzero reference gradient), median over minibatches. Parameters have very
  different scales, and a Gaussian with heterogeneous scales is a scale mixture with a heavy tail,
  so three controls: the **scale-matched Gaussian null** (each parameter an independent Gaussian
  with its own robust scale), the **covariance-matched Gaussian null** (a Gaussian with the sample
  covariance of the M noise vectors: scales and correlations), one replicate of each per member and
  step, compared paired, and **per-parameter standardisation** (each parameter's noise divided by
  its robust scale, MAD / 0.6745 over the M minibatches, compared with Gaussian samples
  standardised the same way).
- **Along iterations** (Xie et al. 2023, "On the Overlooked Structure of Stochastic Gradients",
  NeurIPS, find heavy tails across parameters but Gaussian-like noise along iterations): for each
  parameter the tail index and the tail verdict of its M centred noise values (i.i.d. draws, the
  setting the verdict is calibrated for), median or fractions over the group's parameters; sparse
  parameters (minibatch gradient exactly 0 in most minibatches) are counted apart.
- Estimators: Hill (``k = sqrt n``) and the block-sum estimator of Simsekli et al. (2019),
  each next to its value on Gaussian samples of the same size (with an interval), and the
  verdict :func:`rvsp_jax.analysis.tail_verdict` (fraction of minibatches or parameters called
  gaussian / heavy-tailed / infinite-variance / inconclusive; its size and power are in
  docs/calibration.md, "Tails").
- **Gradient noise scale** ``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018) from the
  reference subset's per-example gradients, per member and as the ratio of the means over members
  (the ratio of two noisy estimates is biased when ``|G|^2`` is small; steps where the reference
  subset is not much larger than ``B_simple`` are flagged), with the two-batch estimate as a
  cross-check.

Every number is per member first; intervals are 95% t-intervals across members (fractions: percentile
bootstrap over members), and diverged members are excluded and counted (none left:
:class:`NoUsableMembersError`). One run folder: the recording, ``summary.json``, ``report.md``,
``figures/``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.analysis import across_members, fdr_bh, hill, simsekli_alpha, tail_verdict, two_batch_noise_scale
from rvsp_jax.analysis.gradient_noise import inputs, make_noise_fn, minibatch_indices, reference_subset, unravel_fn
from rvsp_jax.analysis.noise_scale import N_OVER_B, pooled_noise_scale
from rvsp_jax.analysis.tails import TAIL_VERDICTS
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import load
from rvsp_jax.io import record, store
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, pct, progress_enabled, proportion_summary, write_summary
from rvsp_jax.studies.figures import save_figures
from rvsp_jax.studies.layer_spectra import layer_groups
from rvsp_jax.studies.members import members_summary, usable_members
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.training.ensemble import Ensemble
from rvsp_jax.training.model import make_model
from rvsp_jax.training.probes import ProbeConfig

EXPERIMENT = "noise"
TITLE = "Gradient noise"
FOLDER = "run"
TRAIN_DEFAULTS = {"seeds": 16, "steps": 3000}
"""16 members, 3,000 SGD steps (1.6 epochs) of the sigmoid 784-16-16-10 network (about 5 min of
CPU on 2 shared cores, 8-10 min wall while others share them; almost all of it measuring the
noise)."""
_SUBSAMPLE_STREAM = 0x7461696C  # "tail": stream tag of the across-parameter subsample
_REFERENCE_SEED = 0
ALPHA = 0.05
"""Level of every tail verdict and of the rules below."""
MARGIN = 0.05
"""A tail index is heavier than its Gaussian reference when its whole interval lies more than 5%
below the reference interval (or, against a paired null, the paired difference below -5% of it)."""
GAUSSIAN_ALONG = 1 - 2 * ALPHA
"""Along iterations a group is "Gaussian" when the upper end of the interval of its fraction of
parameters called ``gaussian`` reaches 0.90 (Gaussian data give 0.95: at most alpha more rejections)."""
ACROSS_MINIBATCHES = 64
"""Minibatches per member and step whose across-parameter samples get a tail index (median over them)."""
VERDICT_MINIBATCHES = 16
"""Minibatches per member and step whose across-parameter sample gets a tail verdict."""
LIT_STRATA = (("<5%", 0.0, 0.05), ("5-50%", 0.05, 0.5), (">50%", 0.5, 1.0 + 1e-9))
"""Strata of first-layer weights by the fraction of training images in which their pixel is lit."""
ACROSS_KINDS = ("raw", "null", "covariance", "standardised")
"""Across-parameter samples: the measured noise; the scale-matched Gaussian null (independent, each
parameter with its own robust scale); the covariance-matched Gaussian null (random Gaussian
combinations of the M centred noise vectors: the same sample covariance, scales and correlations);
the measured noise standardised per parameter."""
NULL_KINDS = {"null": "scale-matched", "covariance": "covariance-matched"}
SPARSE = 0.5
"""A parameter is sparse at a step when its minibatch gradient is exactly 0 in more than half of the
M minibatches (a rarely lit pixel): its noise is a bounded spike train, not an alpha-stable law."""
WINDOWS = ("all", "early", "late")
"""Windows of noise steps: every noise step; steps in the first half of training; the second half."""


class NoUsableMembersError(ValueError):
    """Every member of the run diverged: nothing is left to analyse."""


@dataclass(frozen=True)
class NoiseSettings(StudySettings):
    """Options of the gradient-noise analysis (the training flags are separate).

    Example::

        python -m experiments.noise --seeds 32 --noise-steps 20 --minibatches 512
    """

    points: int = opt(
        12,
        "--noise-steps",
        "training steps at which the noise is measured, evenly spaced from step 0 (every parameter is recorded there)",
    )
    minibatches: int = opt(
        256,
        "--minibatches",
        "M: minibatch gradients per member and step (the member's next M minibatches, at the weights of that step)",
    )
    reference: int = opt(
        2048,
        "--reference-examples",
        "fixed training subset whose mean gradient "
        "stands in for the full-data gradient; its per-example gradients give B_simple",
    )
    tail_sample: int = opt(
        4096,
        "--tail-sample",
        "parameters drawn for the across-parameter tail index (among those with a nonzero reference gradient)",
    )

    def __post_init__(self):
        if self.points < 1:
            raise ValueError(f"--noise-steps must be >= 1, got {self.points}")
        if self.minibatches < 4:
            raise ValueError(
                f"--minibatches must be >= 4 (the block-sum estimator needs 2 blocks of 2), got {self.minibatches}"
            )
        if self.reference < 2 or self.tail_sample < 4:
            raise ValueError(
                f"--reference-examples must be >= 2 and --tail-sample >= 4, got {self.reference} and {self.tail_sample}"
            )

    def every(self, total_steps: int, steps_per_epoch: int) -> int:
        """Steps between recorded points (at most one epoch, as the recorder requires)."""
        return max(1, min(total_steps // self.points, steps_per_epoch))

    def probes(self, config: TrainConfig, n_train: int) -> ProbeConfig:
        every = self.every(config.total_steps(n_train), config.steps_per_epoch(n_train))
        return ProbeConfig(probes="params,grads", index="all", every=every)


@partial(jax.jit, static_argnames="k")
def _hill(x, k=None):
    return hill(x, k)


@partial(jax.jit, static_argnames="block_size")
def _simsekli(x, block_size=None):
    return simsekli_alpha(x, block_size)


# ---------------------------------------------------------------------------------------------------
# parameter groups


_KERNEL = re.compile(r"^([^/]+)/kernel\[(\d+),(\d+)\]$")


def pixel_lit_fraction(images: np.ndarray) -> np.ndarray:
    """float64 ``[H*W]``: fraction of ``images`` (uint8 ``[N, H, W]``) in which each pixel is > 0."""
    images = np.asarray(images)
    return (images.reshape(images.shape[0], -1) > 0).mean(0)


def parameter_groups(names, lit: np.ndarray) -> dict[str, np.ndarray]:
    """Group -> positions int64 in ``names``: ``all``, each layer, and after the first layer its
    kernel weights by the lit fraction of their input pixel (``lit: [784]``, :data:`LIT_STRATA`)."""
    layers = layer_groups(names)
    first = next(iter(layers))
    groups = {"all": np.arange(len(names), dtype=np.int64)}
    for layer, idx in layers.items():
        groups[layer] = idx
        if layer != first:
            continue
        pixel = np.full(len(names), -1)
        for j in idx:
            m = _KERNEL.match(names[j])
            if m:
                pixel[j] = int(m.group(2))
        kernel = idx[pixel[idx] >= 0]
        if kernel.size and pixel.max() < lit.size:
            frac = lit[pixel[kernel]]
            for label, lo, hi in LIT_STRATA:
                groups[f"{first} lit {label}"] = kernel[(frac >= lo) & (frac < hi)]
    return groups


# ---------------------------------------------------------------------------------------------------
# Gaussian references (cached, a fixed seed)


def _median_interval(pool: np.ndarray, count: int, seed: int, resamples: int = 400) -> dict:
    """Median of ``pool`` and the central 95% of the median of ``count`` draws from it (bootstrap)."""
    pool = pool[np.isfinite(pool)]
    if not pool.size:
        return {"median": np.nan, "lo": np.nan, "hi": np.nan}
    rng = np.random.default_rng(seed)
    count = max(1, int(count))
    medians = np.array([np.median(pool[rng.integers(0, pool.size, count)]) for _ in range(resamples)])
    lo, hi = np.quantile(medians, [0.025, 0.975])
    return {"median": float(np.median(pool)), "lo": float(lo), "hi": float(hi)}


def _robust_scale(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``[M, n]``: MAD / 0.6745 (the sd of a Gaussian), the sd where the MAD is 0
    (a mostly-constant column); and bool ``[n]`` where the sd was used."""
    mad = np.median(np.abs(centred - np.median(centred, axis=0)), axis=0) / 0.6745
    fallback = mad <= 0
    return np.where(fallback, centred.std(axis=0), mad), fallback


def _standardise(centred: np.ndarray) -> np.ndarray:
    scale, _ = _robust_scale(centred)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, centred / scale, np.nan)


@lru_cache(maxsize=64)
def across_reference(m: int, n: int, count: int | None = None) -> dict:
    """Gaussian references of the across-parameter statistics for M = ``m`` minibatches of ``n``
    parameters: ``{"plain", "standardised"}`` -> ``{"hill", "simsekli"}`` -> median and 95% interval
    of the median over ``count`` (default ``min(m, ACROSS_MINIBATCHES)``) minibatches, and
    ``"verdicts"``: the fraction of minibatches per tail verdict. ``plain``: i.i.d. N(0, 1);
    ``standardised``: N(0, 1) blocks ``[m, n]`` centred and divided per column by its robust scale
    over the m rows, as the measured noise is. At least 1,024 rows, from a fixed seed (cached)."""
    count = count or min(m, ACROSS_MINIBATCHES)
    blocks = max(2, -(-1024 // m))
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(_REFERENCE_SEED), (blocks, m, n)))
    std = np.concatenate([_standardise(b - b.mean(axis=0)) for b in z]).astype(np.float32)
    out = {}
    for name, rows in (("plain", z.reshape(-1, n)), ("standardised", std)):
        h, b = np.asarray(_hill(rows), np.float64), np.asarray(_simsekli(rows), np.float64)
        out[name] = {"n": n, "hill": _median_interval(h, count, 1), "simsekli": _median_interval(b, count, 2)}
        if n >= 20:
            out[name]["verdicts"] = tail_verdict(rows[:256], alpha=ALPHA).fractions()
    return out


@lru_cache(maxsize=16)
def _along_pool(m: int) -> tuple:
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(_REFERENCE_SEED + 1), (max(4096, 2**21 // m), m)))
    z = (z - z.mean(axis=-1, keepdims=True)).astype(np.float32)
    fractions = tail_verdict(z, alpha=ALPHA).fractions() if m >= 20 else {}
    return np.asarray(_hill(z), np.float64), np.asarray(_simsekli(z), np.float64), fractions


def along_reference(m: int, count: int) -> dict:
    """Gaussian references of the along-iteration statistics: series of ``m`` centred N(0, 1)
    values, median over ``count`` parameters (median and 95% interval), and the fraction of series
    per tail verdict."""
    h, b, fractions = _along_pool(m)
    return {
        "n": m,
        "hill": _median_interval(h, count, 3),
        "simsekli": _median_interval(b, count, 4),
        "verdicts": fractions,
    }


@lru_cache(maxsize=64)
def gaussian_reference(
    n: int, *, centred: bool = False, repeats: int | None = None, seed: int = 0
) -> tuple[float, float]:
    """Median (Hill, block-sum) tail-index estimates of ``repeats`` (default ``max(256, 2^20 / n)``)
    standard normal samples of size ``n`` (float32, ``jax.random.normal`` from ``seed``; each sample
    minus its mean if ``centred``): what the estimators give without heavy tails."""
    repeats = repeats or max(256, (1 << 20) // n)
    x = jax.random.normal(jax.random.PRNGKey(seed), (repeats, n))
    if centred:
        x = x - x.mean(axis=-1, keepdims=True)
    return float(np.median(_hill(x))), float(np.median(_simsekli(x)))


# ---------------------------------------------------------------------------------------------------
# measurement


class NoiseMeasurements(NamedTuple):
    """Per member, noise step and parameter group (float64; excluded members NaN).

    steps: int ``[K]`` training steps; total_steps: steps of the run; batch, minibatches, reference:
      minibatch size B, minibatches per step M (at most one epoch's), reference-subset size n.
    groups: names ``[G]`` (:func:`parameter_groups`); group_sizes: int ``[G]`` parameters per group.
    across: ``{kind: {"hill" | "simsekli": [S, K, G]}}`` for kind in :data:`ACROSS_KINDS`: tail
      index across the group's sampled parameters, median over the M minibatches.
    across_verdicts: ``{kind: [S, K, G, 4]}`` fraction of the first ``VERDICT_MINIBATCHES``
      minibatches per tail verdict (order :data:`TAIL_VERDICTS`).
    across_n: ``[S, K, G]`` parameters in the across sample; scale_fallback: ``[S, K, G]`` fraction
      of them whose robust scale fell back to the sd (MAD 0).
    along: ``{"hill" | "simsekli": [S, K, G]}`` tail index along iterations, median over the group's
      active parameters; along_verdicts: ``[S, K, G, 4]`` fraction of them per tail verdict;
      along_verdicts_dense: the same among the group's active parameters that are not sparse
      (:data:`SPARSE`); sparse: ``[S, K, G]`` fraction of active parameters that are sparse;
      along_bh: ``[S, K, G]`` fraction whose normality is rejected under Benjamini-Hochberg (FDR
      5%) within the group; along_n: ``[S, K, G]`` active parameters.
    b_simple, trace_sigma, grad_sq: ``[S, K]`` per-example noise scale on the reference subset.
    b_simple_two_batch: ``[S, K]`` two-batch estimate from the M minibatch norms and ``|G|^2``
      (NaN unless the reference subset is larger than a minibatch).
    active: ``[S, K]`` parameters with a nonzero reference gradient.
    check: ``[S, K]`` max |rebuilt - recorded| / max |recorded| of the step's own minibatch gradient.
    lit: ``[784]`` pixel lit fractions of the training images.
    example: ``(across, standardised, along)`` noise of the first usable member at the last step,
      for the distribution figure.
    """

    steps: np.ndarray
    total_steps: int
    batch: int
    minibatches: int
    reference: int
    groups: tuple
    group_sizes: np.ndarray
    across: dict
    across_verdicts: dict
    across_n: np.ndarray
    scale_fallback: np.ndarray
    along: dict
    along_verdicts: np.ndarray
    along_verdicts_dense: np.ndarray
    sparse: np.ndarray
    along_bh: np.ndarray
    along_n: np.ndarray
    b_simple: np.ndarray
    trace_sigma: np.ndarray
    grad_sq: np.ndarray
    b_simple_two_batch: np.ndarray
    active: np.ndarray
    check: np.ndarray
    lit: np.ndarray
    example: tuple


_PER_STEP = ("b_simple", "trace_sigma", "grad_sq", "b_simple_two_batch", "active", "check")


def _fractions(verdicts) -> np.ndarray:
    v = np.asarray(verdicts).ravel()
    return np.array([np.mean(v == name) if v.size else np.nan for name in TAIL_VERDICTS])


def _standardised(xi: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xi ``[M, P]`` -> (one minibatch's noise over active parameters / its sd, each active
    parameter's noise over minibatches minus its mean / its sd, pooled)."""
    across = xi[0, active] / xi[0, active].std()
    along = xi[:, active]
    with np.errstate(invalid="ignore", divide="ignore"):
        along = (along - along.mean(0)) / along.std(0)
    return across, along[:, np.isfinite(along).all(0)].ravel()


def _max(x) -> float:
    x = np.asarray(x)
    return float(np.nanmax(x)) if np.isfinite(x).any() else np.nan


def _median(x) -> float:
    x = np.asarray(x)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else np.nan


def measure_step(xi: np.ndarray, g_ref: np.ndarray, groups: dict, tail_sample: int, rng: np.random.Generator) -> dict:
    """Every tail statistic of one member at one step.

    xi: ``[M, P]`` noise; g_ref: ``[P]`` reference gradient; groups: name -> positions.
    Returns ``{"across": {kind: {est: [G]}}, "across_verdicts": {kind: [G, 4]}, "across_n": [G],
    "scale_fallback": [G], "along": {est: [G]}, "along_verdicts": [G, 4], "along_verdicts_dense":
    [G, 4], "sparse": [G], "along_bh": [G], "along_n": [G], "example": (...)}``. Across parameters
    the estimators use the first ``ACROSS_MINIBATCHES`` minibatches and the verdicts the first
    ``VERDICT_MINIBATCHES``; the
    robust scales use all M.
    """
    m, _ = xi.shape
    n_groups = len(groups)
    active = g_ref != 0
    centred = (xi - xi.mean(axis=0)).astype(np.float32)  # [M, P]
    scale, fallback = _robust_scale(centred)
    along_h, along_b = np.asarray(_hill(centred.T)), np.asarray(_simsekli(centred.T))
    verdict = tail_verdict(centred, axis=0, alpha=ALPHA)
    dense = ((xi + g_ref) == 0).mean(axis=0) <= SPARSE  # xi + G is the minibatch gradient exactly
    rows = min(m, ACROSS_MINIBATCHES)
    z = rng.standard_normal((m, centred.shape[1]), dtype=np.float32)
    z = (z - z.mean(axis=0))[:rows]  # the null, centred like the noise: Gaussian with each own scale
    w = rng.standard_normal((rows, m), dtype=np.float32) / np.float32(math.sqrt(m - 1))
    covariance = w @ centred  # Gaussian with the sample covariance of the M noise vectors
    nan = np.full(n_groups, np.nan)
    out = {
        "across": {k: {"hill": nan.copy(), "simsekli": nan.copy()} for k in ACROSS_KINDS},
        "across_verdicts": {k: np.full((n_groups, 4), np.nan) for k in ACROSS_KINDS},
        "across_n": np.zeros(n_groups),
        "scale_fallback": nan.copy(),
        "along": {"hill": nan.copy(), "simsekli": nan.copy()},
        "along_verdicts": np.full((n_groups, 4), np.nan),
        "along_verdicts_dense": np.full((n_groups, 4), np.nan),
        "sparse": nan.copy(),
        "along_bh": nan.copy(),
        "along_n": np.zeros(n_groups),
    }
    v_rows = min(m, VERDICT_MINIBATCHES)
    for gi, idx in enumerate(groups.values()):
        pool = idx[active[idx]]
        out["along_n"][gi] = pool.size
        if pool.size == 0:
            continue
        out["along"]["hill"][gi], out["along"]["simsekli"][gi] = _median(along_h[pool]), _median(along_b[pool])
        out["along_verdicts"][gi] = _fractions(verdict.verdict[pool])
        out["along_verdicts_dense"][gi] = _fractions(verdict.verdict[pool[dense[pool]]])
        out["sparse"][gi] = 1.0 - dense[pool].mean()
        p = verdict.normality_pvalue[pool]
        if np.isfinite(p).any():
            out["along_bh"][gi] = fdr_bh(p).reject[np.isfinite(p)].mean()
        pool = pool[scale[pool] > 0]  # a parameter without noise in these M minibatches has no scale
        if pool.size < 4:
            continue
        # random order: block sums of neighbouring (correlated) parameters would bias the estimator
        chosen = rng.choice(pool, min(tail_sample, pool.size), replace=False)
        out["across_n"][gi] = chosen.size
        out["scale_fallback"][gi] = fallback[chosen].mean()
        raw, s = centred[:rows, chosen], scale[chosen]
        for kind, sample in (
            ("raw", raw),
            ("null", z[:, chosen] * s),
            ("covariance", covariance[:, chosen]),
            ("standardised", raw / s),
        ):
            h, b = np.asarray(_hill(sample)), np.asarray(_simsekli(sample))
            out["across"][kind]["hill"][gi], out["across"][kind]["simsekli"][gi] = _median(h), _median(b)
            out["across_verdicts"][kind][gi] = _fractions(tail_verdict(sample[:v_rows], alpha=ALPHA).verdict)
    a = active & (scale > 0)
    out["example"] = (centred[0, a] / centred[0, a].std(), centred[0, a] / scale[a], _standardised(xi, active)[1])
    return out


def measure(run: store.Run, settings: NoiseSettings, *, dataset=None, progress: bool = False) -> NoiseMeasurements:
    """Rebuild and measure the gradient noise at every recorded step of a complete run."""
    for name in ("params", "grads"):
        if name not in run.arrays or len(run.probe_names[name]) != sum(
            math.prod(s) for s in run.layout.param_shapes.values()
        ):
            raise ValueError(f"{run.path} must record every parameter's {name} (probes params,grads, index all)")
    usable = _require_usable(run)
    config = run.config
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    ens = Ensemble(config, data)
    model = make_model(config)
    unravel, noise_fn = unravel_fn(model), make_noise_fn(model)
    m = min(settings.minibatches, ens.steps_per_epoch)
    ref = reference_subset(ens.n_train, min(settings.reference, ens.n_train), config.base_seed)
    x_train, y_train = inputs(data.train_images), data.train_labels
    x_ref, y_ref = x_train[ref], y_train[ref]
    two_batch = ref.size > config.batch_size  # the two-batch estimate needs b_small < b_big
    names = run.probe_names["params"]
    lit = pixel_lit_fraction(data.train_images)
    groups = parameter_groups(names, lit)
    steps = run.steps
    shape = (config.seeds, steps.size, len(groups))
    full = lambda *extra: np.full(shape + extra, np.nan)  # noqa: E731
    out = {
        "across": {k: {"hill": full(), "simsekli": full()} for k in ACROSS_KINDS},
        "across_verdicts": {k: full(4) for k in ACROSS_KINDS},
        "across_n": full(),
        "scale_fallback": full(),
        "along": {"hill": full(), "simsekli": full()},
        "along_verdicts": full(4),
        "along_verdicts_dense": full(4),
        "sparse": full(),
        "along_bh": full(),
        "along_n": full(),
    }
    per_step = {f: np.full((config.seeds, steps.size), np.nan) for f in _PER_STEP}
    example = (np.zeros(0),) * 3
    bar = tqdm(
        total=int(usable.sum()) * steps.size, desc="gradient noise", disable=not progress_enabled(progress), leave=False
    )
    for k, step in enumerate(steps):
        batches = minibatch_indices(ens, int(step), m)  # [S, M, B]
        params, grads = run["params"][:, k, :], run["grads"][:, k, :]
        for s in np.flatnonzero(usable):
            sample = noise_fn(unravel(params[s]), x_train[batches[s]], y_train[batches[s]], x_ref, y_ref)
            xi, g_ref = np.asarray(sample.noise), np.asarray(sample.reference_grad)
            rng = np.random.default_rng([_SUBSAMPLE_STREAM, config.base_seed % 2**64, int(s), k])
            one = measure_step(xi, g_ref, groups, settings.tail_sample, rng)
            for kind in ACROSS_KINDS:
                out["across_verdicts"][kind][s, k] = one["across_verdicts"][kind]
                for est in ("hill", "simsekli"):
                    out["across"][kind][est][s, k] = one["across"][kind][est]
            for est in ("hill", "simsekli"):
                out["along"][est][s, k] = one["along"][est]
            for f in (
                "across_n",
                "scale_fallback",
                "along_verdicts",
                "along_verdicts_dense",
                "sparse",
                "along_bh",
                "along_n",
            ):
                out[f][s, k] = one[f]
            two = (
                two_batch_noise_scale(
                    sample.minibatch_sq_norms, float(g_ref @ g_ref), config.batch_size, ref.size
                ).b_simple
                if two_batch
                else np.nan
            )
            own = xi[0] + g_ref  # the minibatch of step `step` itself
            values = (
                *(float(v) for v in sample.scale),
                float(two),
                (g_ref != 0).sum(),
                np.abs(own - grads[s]).max() / np.abs(grads[s]).max(),
            )
            for field, v in zip(_PER_STEP, values):
                per_step[field][s, k] = v
            if k == steps.size - 1 and not example[0].size:
                example = one["example"]
            bar.update()
    bar.close()
    sizes = np.array([idx.size for idx in groups.values()])
    return NoiseMeasurements(
        steps,
        int(run.manifest["total_steps"]),
        config.batch_size,
        m,
        int(ref.size),
        tuple(groups),
        sizes,
        lit=lit,
        example=example,
        **out,
        **per_step,
    )


def _require_usable(run: store.Run) -> np.ndarray:
    usable = usable_members(run)
    if not usable.any():
        raise NoUsableMembersError(
            f"noise: all {usable.size} members of {run.path} diverged (NaN/inf); no gradient noise "
            "left to analyse; rerun with a smaller --lr (or another --optimizer)"
        )
    return usable


class NoiseResult(NamedTuple):
    run: store.Run
    settings: NoiseSettings
    usable: np.ndarray
    noise: NoiseMeasurements
    gaussian: dict


def analyse(run: store.Run, settings: NoiseSettings, *, dataset=None, progress: bool = False) -> NoiseResult:
    """Measure the noise (:func:`measure`) and the estimators' values on Gaussian samples of the
    same sizes: ``gaussian["across_parameters"][group] = {"plain", "standardised"}`` and
    ``gaussian["along_iterations"][group]`` (:func:`across_reference`, :func:`along_reference`).

    Raises :class:`NoUsableMembersError` (a ValueError) when every member diverged."""
    _require_usable(run)
    noise = measure(run, settings, dataset=dataset, progress=progress)
    gaussian: dict = {"across_parameters": {}, "along_iterations": {}}
    for gi, group in enumerate(noise.groups):
        sizes = noise.across_n[..., gi]
        n_across = int(min(np.nanmax(sizes), settings.tail_sample)) if np.isfinite(sizes).any() else 0
        active = noise.along_n[..., gi]
        along_count = int(np.nanmedian(active)) if np.isfinite(active).any() else 0
        gaussian["across_parameters"][group] = across_reference(noise.minibatches, n_across) if n_across >= 4 else None
        gaussian["along_iterations"][group] = (
            along_reference(noise.minibatches, along_count) if along_count >= 1 else None
        )
    return NoiseResult(run, settings, usable_members(run), noise, gaussian)


# ---------------------------------------------------------------------------------------------------
# summary and rules


def window_steps(steps: np.ndarray, total_steps: int) -> dict[str, np.ndarray]:
    """Window -> bool ``[K]`` over the noise steps: ``all``; ``early`` (step < total / 2);
    ``late`` (step >= total / 2). Empty windows are left out."""
    half = total_steps / 2
    masks = {"all": np.ones(steps.size, bool), "early": steps < half, "late": steps >= half}
    return {w: m for w, m in masks.items() if m.any()}


def _per_member(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """x: ``[S, K, ...]`` -> ``[S, ...]`` mean over the window's noise steps (NaN steps skipped)."""
    x = x[:, mask]
    finite = np.isfinite(x)
    total = np.where(finite, x, 0.0).sum(1)
    return np.where(finite.any(1), total / np.maximum(finite.sum(1), 1), np.nan)


def _by_step(x: np.ndarray) -> list:
    return [across_members(x[:, k]) for k in range(x.shape[1])]


def _below(s, ref: dict | None) -> bool:
    """Whole interval of ``s`` more than MARGIN below the reference interval's lower end."""
    return bool(ref is not None and np.isfinite(s.hi) and np.isfinite(ref["lo"]) and s.hi < ref["lo"] * (1 - MARGIN))


def fraction_summary(x: np.ndarray):
    """Mean of per-member fractions ``[S, ...]`` with a 95% percentile bootstrap interval over members
    (:func:`rvsp_jax.present.report.proportion_summary`: it stays inside [0, 1])."""
    return proportion_summary(x)


def _verdict_summary(fractions: np.ndarray) -> dict:
    """``[S, 4]`` per-member fractions -> verdict -> MemberSummary (interval within [0, 1])."""
    return {name: fraction_summary(fractions[:, i]) for i, name in enumerate(TAIL_VERDICTS)}


def decide(group: dict, gaussian_across: dict | None) -> dict:
    """The rules of the report (:func:`rules`) applied to one group in one window (``group`` from
    :func:`summarise`)."""
    across, along = group["across_parameters"], group["along_iterations"]
    plain = gaussian_across["plain"]["simsekli"] if gaussian_across else None
    std_ref = gaussian_across["standardised"]["simsekli"] if gaussian_across else None

    def heavier_than_null(kind: str) -> bool:
        diff, null = across[f"raw_minus_{kind}"]["simsekli"], across[kind]["simsekli"]
        return bool(np.isfinite(diff.hi) and np.isfinite(null.mean) and diff.hi < -MARGIN * null.mean)

    iv, iv_dense = along["verdicts"]["infinite-variance"], along["verdicts_dense"]["infinite-variance"]
    g_along = along["verdicts"]["gaussian"]
    uncontrolled = _below(across["raw"]["simsekli"], plain)
    scale, covariance = heavier_than_null("null"), heavier_than_null("covariance")
    along_iv = bool(np.isfinite(iv.lo) and iv.lo > ALPHA)
    dense_iv = bool(np.isfinite(iv_dense.lo) and iv_dense.lo > ALPHA)
    along_gauss = bool(np.isfinite(g_along.hi) and g_along.hi >= GAUSSIAN_ALONG)
    if dense_iv:
        simsekli = "supported" if iv_dense.mean >= 0.5 else "supported for a minority of parameters"
    elif along_iv:
        simsekli = "only in sparse parameters"
    elif np.isfinite(iv.hi) and iv.hi <= ALPHA:
        simsekli = "not supported"
    else:
        simsekli = "undetermined"
    gap = plain["median"] - across["raw"]["simsekli"].mean if plain else np.nan
    share = (plain["median"] - across["null"]["simsekli"].mean) / gap if gap > 0 else np.nan
    xie = {
        (True, True): "reproduced",
        (True, False): "across parameters only",
        (False, True): "along iterations only",
        (False, False): "not reproduced",
    }[(uncontrolled, along_gauss)]
    return {
        "across_heavier_than_gaussian_uncontrolled": uncontrolled,
        "across_heavier_than_scale_matched_gaussian": scale,
        "across_heavier_than_covariance_matched_gaussian": covariance,
        "across_standardised_heavier_than_gaussian": _below(across["standardised"]["simsekli"], std_ref),
        "across_explained_by_gaussian_structure": uncontrolled and not (scale or covariance),
        "across_gap_share_of_scale_heterogeneity": float(share),
        "along_infinite_variance": along_iv,
        "along_infinite_variance_dense": dense_iv,
        "along_gaussian": along_gauss,
        "simsekli_2019": simsekli,
        "xie_2023": xie,
    }


def _group_summary(nz: NoiseMeasurements, gi: int, mask: np.ndarray) -> dict:
    """Across-member summaries of group ``gi`` over the window ``mask`` of noise steps."""
    per = lambda x: _per_member(x, mask)  # noqa: E731
    across = {
        kind: {est: across_members(per(nz.across[kind][est][..., gi])) for est in ("hill", "simsekli")}
        for kind in ACROSS_KINDS
    }
    for kind in NULL_KINDS:
        across[f"raw_minus_{kind}"] = {
            est: across_members(per(nz.across["raw"][est][..., gi] - nz.across[kind][est][..., gi]))
            for est in ("hill", "simsekli")
        }
    across["verdicts"] = {kind: _verdict_summary(per(nz.across_verdicts[kind][:, :, gi])) for kind in ACROSS_KINDS}
    along = {est: across_members(per(nz.along[est][..., gi])) for est in ("hill", "simsekli")}
    along["verdicts"] = _verdict_summary(per(nz.along_verdicts[:, :, gi]))
    along["verdicts_dense"] = _verdict_summary(per(nz.along_verdicts_dense[:, :, gi]))
    along["sparse"] = fraction_summary(per(nz.sparse[..., gi]))
    along["bh_non_gaussian"] = fraction_summary(per(nz.along_bh[..., gi]))
    return {"across_parameters": across, "along_iterations": along}


def summarise(result: NoiseResult) -> dict:
    """The study's numbers (JSON-ready): per window and group the tail statistics with their Gaussian
    references and the rules' decisions; the noise scale by step."""
    nz, run = result.noise, result.run
    windows = window_steps(nz.steps, nz.total_steps)
    by_window: dict = {}
    for w, mask in windows.items():
        by_window[w] = {}
        for gi, group in enumerate(nz.groups):
            entry = _group_summary(nz, gi, mask)
            entry["decisions"] = decide(entry, result.gaussian["across_parameters"][group])
            by_window[w][group] = entry
    by_step = {
        f"across_{kind}_simsekli": {g: _by_step(nz.across[kind]["simsekli"][..., gi]) for gi, g in enumerate(nz.groups)}
        for kind in ACROSS_KINDS
    }
    by_step.update(
        {
            "along_gaussian_fraction": {
                g: [fraction_summary(nz.along_verdicts[:, k, gi, 0]) for k in range(nz.steps.size)]
                for gi, g in enumerate(nz.groups)
            },
            "along_infinite_variance_fraction": {
                g: [fraction_summary(nz.along_verdicts[:, k, gi, 2]) for k in range(nz.steps.size)]
                for gi, g in enumerate(nz.groups)
            },
        }
    )
    scale = {
        name: {
            "by_step": _by_step(getattr(nz, name)),
            "first": across_members(getattr(nz, name)[:, 0]),
            "last": across_members(getattr(nz, name)[:, -1]),
        }
        for name in ("b_simple", "b_simple_two_batch", "trace_sigma", "grad_sq")
    }
    scale["pooled"] = pooled_noise_scale(nz.trace_sigma, nz.grad_sq, nz.reference)
    first_layer = next(g for g in nz.groups if g != "all")
    strata = {g: int(nz.group_sizes[i]) for i, g in enumerate(nz.groups) if g.startswith(f"{first_layer} lit")}
    lit_pixels = {label: int(((nz.lit >= lo) & (nz.lit < hi)).sum()) for label, lo, hi in LIT_STRATA}
    return {
        "experiment": EXPERIMENT,
        "run": str(run.path),
        "config": run.config.to_dict(),
        "settings": result.settings.to_dict(),
        "members": members_summary(result.usable),
        "steps": nz.steps,
        "total_steps": nz.total_steps,
        "batch_size": nz.batch,
        "minibatches": nz.minibatches,
        "reference_examples": nz.reference,
        "groups": list(nz.groups),
        "group_sizes": dict(zip(nz.groups, nz.group_sizes.tolist())),
        "windows": {w: [int(s) for s in nz.steps[m]] for w, m in windows.items()},
        "stationarity": (
            "each noise step: M exchangeable minibatch draws at frozen weights (stationary "
            "by construction); across noise steps the distribution drifts (by_step), so "
            "window values are means over distinct distributions"
        ),
        "rules": rules(),
        "pixel_strata": {
            "lit_fraction_bounds": [[lo, min(hi, 1.0)] for _, lo, hi in LIT_STRATA],
            "pixels": lit_pixels,
            "never_lit_pixels": int((nz.lit == 0).sum()),
            "parameters": strata,
        },
        "active_parameters": across_members(_per_member(nz.active, np.ones(nz.steps.size, bool))),
        "minibatch_check_max_relative_difference": float(np.nanmax(nz.check)) if np.isfinite(nz.check).any() else None,
        "test_accuracy": across_members(np.where(result.usable, run.final().test_accuracy, np.nan)),
        "scale_fallback_fraction": (
            float(np.nanmean(nz.scale_fallback)) if np.isfinite(nz.scale_fallback).any() else None
        ),
        "tails": by_window,
        "by_step": by_step,
        "gaussian_reference": result.gaussian,
        "noise_scale": scale,
    }


def rules() -> dict[str, str]:
    """Every rule that turns a number into a sentence of the report (name -> rule)."""

    def null(kind):
        return (
            f"paired difference raw minus the {NULL_KINDS[kind]} Gaussian null (block sums) has its "
            f"whole interval below -{MARGIN:.0%} of the null's mean"
        )

    return {
        "interval": (
            "95% t-interval across members of each member's mean over the window's noise steps "
            "(fractions: percentile bootstrap over members)"
        ),
        "heavier": (
            f"a tail index is heavier than its Gaussian reference when its whole interval lies more "
            f"than {MARGIN:.0%} below the lower end of the reference interval (the central 95% of "
            "the same statistic on Gaussian samples of the same size)"
        ),
        "across_heavier_than_gaussian_uncontrolled": (
            "raw block-sum index heavier than i.i.d. N(0, 1) samples (the comparison of Simsekli et al., no control)"
        ),
        "across_heavier_than_scale_matched_gaussian": null("null"),
        "across_heavier_than_covariance_matched_gaussian": null("covariance"),
        "across_standardised_heavier_than_gaussian": (
            "block-sum index of the noise standardised per "
            "parameter heavier than Gaussian samples standardised "
            "the same way (descriptive: the pooled sample mixes "
            "parameters with different laws)"
        ),
        "across_explained_by_gaussian_structure": (
            "uncontrolled comparison heavier, but neither the "
            "scale-matched nor the covariance-matched one: a Gaussian "
            "with the noise's own scales (and correlations) has the "
            "same across-parameter tail"
        ),
        "infinite-variance": (
            "tail_verdict's word for a Hill tail index below 2 over the observed range "
            "(docs/calibration.md, Tails: finite-variance laws are called so at most ~5% "
            "of the time); bounded noise with rare large values, such as a sparse "
            "parameter's spikes, can read so at these n"
        ),
        "sparse": (
            f"a parameter whose minibatch gradient is exactly 0 in more than {SPARSE:.0%} of the M "
            "minibatches (a rarely lit pixel)"
        ),
        "along_infinite_variance": (
            f"lower end of the fraction of the group's parameters called "
            f"infinite-variance along iterations > {ALPHA} (the verdict's size)"
        ),
        "along_infinite_variance_dense": "the same among the group's parameters that are not sparse",
        "along_gaussian": (
            f"upper end of the fraction of parameters called gaussian along iterations "
            f">= {GAUSSIAN_ALONG:.2f} (Gaussian data: {1 - ALPHA:.2f})"
        ),
        "across_gap_share_of_scale_heterogeneity": (
            "(Gaussian reference - scale-matched null) / (Gaussian "
            "reference - raw), block sums: the share of the "
            "uncontrolled gap that independent Gaussian noise with "
            "the parameters' own scales already shows"
        ),
        "simsekli_2019": (
            "alpha-stable noise with alpha < 2 (Simsekli et al. 2019): supported if "
            "along_infinite_variance_dense holds and at least half of the non-sparse "
            "parameters are called infinite-variance, supported for a minority of parameters "
            "if it holds for fewer; only in sparse parameters if "
            "along_infinite_variance holds but not among dense parameters; not supported if "
            f"the upper end of the infinite-variance fraction is <= {ALPHA}; else undetermined"
        ),
        "xie_2023": (
            "heavy tails across parameters but Gaussian along iterations (Xie et al. 2023): "
            "reproduced if across_heavier_than_gaussian_uncontrolled and along_gaussian hold; "
            "across parameters only / along iterations only if one of them holds; else not "
            "reproduced"
        ),
        "b_simple": (
            f"ratio of means over members, mean tr(Sigma) / mean |G|^2, with a bootstrap 95% "
            f"interval over members; a step is flagged when the reference subset n < "
            f"{N_OVER_B} x B_simple or mean |G|^2 <= 0 (the per-member ratio is then "
            "dominated by the noise of the |G|^2 estimate)"
        ),
    }


# ---------------------------------------------------------------------------------------------------
# figures and report


def _log_if_positive(ax, values) -> None:
    v = np.asarray(values, np.float64)
    if np.any(np.isfinite(v) & (v > 0)):
        ax.set_yscale("log")


def figure_tail_index(result: NoiseResult):
    nz = result.noise
    steps = nz.steps
    all_gi = nz.groups.index("all")
    fig, axes = plots.subplots(1, 2, width="double", height=2.4)
    series = [
        ("across, raw", nz.across["raw"]),
        ("across, scale-matched Gaussian", nz.across["null"]),
        ("across, covariance-matched Gaussian", nz.across["covariance"]),
        ("across, standardised", nz.across["standardised"]),
        ("along iterations", nz.along),
    ]
    for ax, estimator in zip(axes, ("hill", "simsekli")):
        for i, (label, values) in enumerate(series):
            m = across_members(values[estimator][..., all_gi])
            plots.plot_band(ax, steps, m.mean, m.lo, m.hi, label=label, color=plots.PALETTE[i])
        ref = result.gaussian["along_iterations"]["all"]
        if ref is not None:
            ax.axhline(
                ref[estimator]["median"],
                color=plots.PALETTE[4],
                linestyle=":",
                linewidth=0.8,
                label=f"Gaussian, n={ref['n']}",
            )
        ax.set(
            xlabel="training step",
            ylabel=f"tail index alpha ({estimator})",
            title="Hill (k = sqrt n)" if estimator == "hill" else "block sums (Simsekli et al.)",
        )
    axes[0].legend(fontsize="x-small")
    return fig


def figure_tail_by_layer(result: NoiseResult):
    nz = result.noise
    steps = nz.steps
    series = [
        ("across, raw", nz.across["raw"]),
        ("across, scale-matched Gaussian", nz.across["null"]),
        ("across, covariance-matched Gaussian", nz.across["covariance"]),
        ("across, standardised", nz.across["standardised"]),
        ("along iterations", nz.along),
    ]
    fig, axes = plots.subplots(1, 2, width="double", height=2.6)
    x = np.arange(len(nz.groups))
    whole = np.ones(steps.size, bool)
    for ax, estimator in zip(axes, ("hill", "simsekli")):
        for i, (label, values) in enumerate(series):
            m = across_members(np.stack([_per_member(values[estimator][..., g], whole) for g in x], axis=1))
            offset = (i - 2) * 0.15
            ax.errorbar(
                x + offset,
                m.mean,
                yerr=[m.mean - m.lo, m.hi - m.mean],
                fmt="o",
                capsize=2,
                markersize=3,
                color=plots.PALETTE[i],
                label=label,
            )
        refs = [result.gaussian["along_iterations"][g] for g in nz.groups]
        ax.plot(
            x + 2 * 0.15,
            [r[estimator]["median"] if r else np.nan for r in refs],
            "_",
            color=plots.PALETTE[4],
            markersize=10,
            label="Gaussian (along)",
        )
        ax.set(xticks=x, ylabel=f"tail index alpha ({estimator})")
        ax.set_xticklabels(nz.groups, rotation=30, ha="right", fontsize="x-small")
    axes[0].legend(fontsize="x-small")
    return fig


def figure_noise_scale(result: NoiseResult):
    nz = result.noise
    steps = nz.steps
    fig, axes = plots.subplots(1, 2, width="double", height=2.4)
    pooled = pooled_noise_scale(nz.trace_sigma, nz.grad_sq, nz.reference, seed=0)
    plotted = []
    for i, (name, label) in enumerate((("b_simple", "per member"), ("b_simple_two_batch", "two-batch"))):
        m = across_members(getattr(nz, name))
        plots.plot_band(axes[0], steps, m.mean, m.lo, m.hi, label=label, color=plots.PALETTE[i])
        plotted.append(m.mean)
    plots.plot_band(
        axes[0], steps, pooled.b_simple, pooled.lo, pooled.hi, label="ratio of means", color=plots.PALETTE[2]
    )
    axes[0].axhline(nz.batch, color="k", linestyle="--", linewidth=0.8, label=f"batch size {nz.batch}")
    axes[0].set(xlabel="training step", ylabel="B_simple = tr(Sigma) / |G|^2")
    _log_if_positive(axes[0], np.concatenate([*plotted, pooled.b_simple]))
    axes[0].legend(fontsize="x-small")
    plotted = []
    for i, (name, label) in enumerate((("trace_sigma", "tr(Sigma)"), ("grad_sq", "|G|^2"))):
        m = across_members(getattr(nz, name))
        plots.plot_band(axes[1], steps, m.mean, m.lo, m.hi, label=label, color=plots.PALETTE[i + 3])
        plotted.append(m.mean)
    axes[1].set(xlabel="training step", ylabel="per-example noise / signal power")
    _log_if_positive(axes[1], np.concatenate(plotted))
    axes[1].legend(fontsize="x-small")
    return fig


def figure_noise_distribution(result: NoiseResult):
    nz = result.noise
    across, standardised, along = nz.example
    if not (across.size and along.size and np.isfinite(standardised).any()):
        return None  # nothing to draw
    fig, ax = plots.subplots(width="single", height=2.4)
    standardised = standardised[np.isfinite(standardised)]
    plots.hist_compare(
        ax, across, standardised, labels=("across parameters, raw / sd", "across, standardised per parameter"), bins=80
    )
    grid = np.linspace(min(across.min(), along.min()), max(across.max(), along.max()), 400)
    ax.plot(grid, np.exp(-(grid**2) / 2) / np.sqrt(2 * np.pi), "k--", linewidth=0.8, label="N(0, 1)")
    ax.set(yscale="log", xlabel="standardised gradient noise", ylabel="density", ylim=(0.5 / across.size, None))
    ax.legend(fontsize="x-small")
    return fig


FIGURES = {
    "tail_index": (
        "Tail index of the minibatch gradient noise of all parameters: across parameters "
        "(raw, its scale-matched and covariance-matched Gaussian nulls, standardised per "
        "parameter) and along iterations; mean and 95% t-interval across members; dotted: "
        "Gaussian samples of the along-iteration size",
        figure_tail_index,
    ),
    "tail_by_layer": (
        "Tail index per parameter group (first-layer weights also by how often their pixel is"
        " lit), mean over the noise steps; mean and 95% t-interval across members; bars: "
        "Gaussian samples along iterations",
        figure_tail_by_layer,
    ),
    "noise_scale": (
        "Gradient noise scale B_simple over training (McCandlish et al. 2018): per-member "
        "estimate on the reference subset (mean and 95% t-interval), ratio of the means over "
        "members (bootstrap interval) and the two-batch estimate",
        figure_noise_scale,
    ),
    "noise_distribution": (
        lambda result: (
            f"Gradient noise at step {int(result.noise.steps[-1])} (first usable "
            "member), one minibatch over parameters: divided by its overall sd, and standardised per "
            "parameter by each parameter's robust scale"
        ),
        figure_noise_distribution,
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`)."""


def _ref_text(ref: dict | None, estimator: str) -> str:
    if not ref:
        return "—"
    r = ref[estimator]
    return f"{fmt(r['median'])} [{fmt(r['lo'])}, {fmt(r['hi'])}]"


def _ref_verdict(ref: dict | None, kind: str, verdict: str = "infinite-variance"):
    return ref[kind].get("verdicts", {}).get(verdict) if ref else None


def _pooled_text(pooled, k: int) -> str:
    return f"{fmt(pooled.b_simple[k])} [{fmt(pooled.lo[k])}, {fmt(pooled.hi[k])}]"


def _findings(entry: dict) -> list[str]:
    """The sentences of one group in one window, each from its rule (:func:`rules`)."""
    d, a, al = entry["decisions"], entry["across_parameters"], entry["along_iterations"]
    diff = {k: fmt_ci(a[f"raw_minus_{k}"]["simsekli"]) for k in NULL_KINDS}
    nulls = f"raw minus scale-matched null {diff['null']}, minus covariance-matched null {diff['covariance']}"
    if d["across_explained_by_gaussian_structure"]:
        across = (
            "across parameters the raw tail is heavier than i.i.d. Gaussian samples but not heavier than "
            f"a Gaussian with the noise's own scales and correlations ({nulls}): Gaussian structure "
            "explains it"
        )
    elif d["across_heavier_than_gaussian_uncontrolled"]:
        than = [
            f"the {label} null"
            for k, label in NULL_KINDS.items()
            if d[f"across_heavier_than_{label.replace('-', '_')}_gaussian"]
        ]
        across = (
            "across parameters the tail is heavier than i.i.d. Gaussian samples and than "
            f"{' and '.join(than)} ({nulls}); scale heterogeneity alone accounts for "
            f"{pct(d['across_gap_share_of_scale_heterogeneity'])} of the uncontrolled gap"
        )
    else:
        across = f"across parameters the tail is not heavier than i.i.d. Gaussian samples ({nulls})"
    v, dense = al["verdicts"], al["verdicts_dense"]
    along = (
        f"along iterations {_frac_text(v['gaussian'])} of parameters are called gaussian, "
        f"{_frac_text(v['heavy-tailed'])} heavy-tailed (finite variance), "
        f"{_frac_text(v['infinite-variance'])} infinite-variance "
        f"({_frac_text(dense['infinite-variance'])} of the non-sparse ones; "
        f"{_frac_text(al['sparse'])} are sparse): "
        + ("Gaussian" if d["along_gaussian"] else "not Gaussian")
        + (
            ", with infinite variance"
            if d["along_infinite_variance_dense"]
            else ", infinite variance only in sparse parameters"
            if d["along_infinite_variance"]
            else ""
        )
    )
    return [across, along, f"Simsekli et al. (2019): {d['simsekli_2019']}; Xie et al. (2023): {d['xie_2023']}"]


def _frac_text(s) -> str:
    return f"{pct(s.mean)} [{pct(s.lo)}, {pct(s.hi)}]"


def _yes(v: bool) -> str:
    return "yes" if v else "no"


def report(result: NoiseResult, summary: dict, captions: dict, command: str | None) -> Report:
    """The markdown report of the study: every sentence follows from a number by a rule in "Rules"."""
    members, tails, scale = summary["members"], summary["tails"], summary["noise_scale"]
    last = int(summary["steps"][-1])
    windows = summary["windows"]
    rep = Report("Minibatch gradient noise: tails and noise scale")
    diverged = (
        f"{members['diverged']} diverged (NaN/inf) and excluded: members {members['diverged_ids']}"
        if members["diverged"]
        else "none diverged"
    )
    rep.text(
        f"{members['used']} of {members['total']} members analysed ({diverged}). At "
        f"{len(summary['steps'])} steps (0 to {last} of {summary['total_steps']}) the noise is rebuilt "
        f"from the recorded parameters: gradients of the member's next {summary['minibatches']} "
        f"minibatches of {summary['batch_size']} at the frozen weights, minus the mean gradient "
        f"over a fixed subset of {summary['reference_examples']} training examples, centred per "
        f"parameter. Rebuilt minibatch gradients reproduce the trainer's recorded ones to "
        f"{fmt(summary['minibatch_check_max_relative_difference'], 2)} (max relative difference). "
        f"Parameters with a nonzero reference gradient: {fmt_ci(summary['active_parameters'])}. "
        f"Test accuracy {fmt_ci(summary['test_accuracy'])}."
    )
    half = summary["total_steps"] / 2
    rep.text(
        "**Windows.** "
        + "; ".join(f"{w}: noise steps {', '.join(map(str, s))}" for w, s in windows.items())
        + f" (early: step < {half:g}, late: step >= {half:g}). "
        "**Stationarity.** Each noise step is a sample of M exchangeable minibatch draws at frozen "
        "weights, stationary by construction; across noise steps the distribution drifts (see the "
        "table over training), so a window's value is a mean over distinct distributions, not one "
        "stationary process."
    )
    rep.section("Rules")
    rep.bullets(f"**{name}**: {text}" for name, text in summary["rules"].items())
    rep.section("Findings")
    bullets = []
    w_all = tails["all"]
    for group in summary["groups"]:
        bullets.append(f"**{group}** (window all): " + "; ".join(_findings(w_all[group])) + ".")
    pooled = scale["pooled"]
    flagged = [int(s) for s, f in zip(summary["steps"], pooled.flagged) if f]
    bullets.append(
        f"B_simple as the ratio of means over members: {_pooled_text(pooled, 0)} at step 0 and "
        f"{_pooled_text(pooled, -1)} at step {last} (batch size "
        f"{summary['batch_size']}); steps where n = {summary['reference_examples']} is not >> "
        f"B_simple (rule b_simple): {', '.join(map(str, flagged)) or 'none'}"
        + (
            f" (their B_simple is uncertain; --reference-examples of at least "
            f"{fmt(N_OVER_B * _max(pooled.b_simple), 2)} would decide)."
            if flagged
            else "."
        )
    )
    rep.bullets(bullets)
    rep.section("Simsekli et al. (2019) vs Xie et al. (2023), by window")
    header = [
        "window",
        "group",
        "across heavier (uncontrolled)",
        "than scale-matched",
        "than covariance-matched",
        "explained by Gaussian structure",
        "along inf. var.",
        "along inf. var. (dense)",
        "along Gaussian",
        "Simsekli 2019",
        "Xie 2023",
    ]
    keys = [
        "across_heavier_than_gaussian_uncontrolled",
        "across_heavier_than_scale_matched_gaussian",
        "across_heavier_than_covariance_matched_gaussian",
        "across_explained_by_gaussian_structure",
        "along_infinite_variance",
        "along_infinite_variance_dense",
        "along_gaussian",
    ]
    rows = [
        [
            w,
            group,
            *[_yes(tails[w][group]["decisions"][k]) for k in keys],
            tails[w][group]["decisions"]["simsekli_2019"],
            tails[w][group]["decisions"]["xie_2023"],
        ]
        for w in windows
        for group in summary["groups"]
    ]
    rep.table(header, rows)
    rep.section("Across parameters (window all, block sums)")
    g_ref = summary["gaussian_reference"]
    header = [
        "group",
        "n",
        "raw",
        "i.i.d. Gaussian",
        "scale-matched null",
        "raw - null",
        "covariance-matched null",
        "raw - null",
        "standardised",
        "Gaussian, standardised",
        "inf. var. (raw / scale / cov. / std)",
    ]
    rows = []
    for group in summary["groups"]:
        a, ref = w_all[group]["across_parameters"], g_ref["across_parameters"][group]
        ivs = " / ".join(pct(a["verdicts"][k]["infinite-variance"].mean) for k in ACROSS_KINDS)
        rows.append(
            [
                group,
                ref["plain"]["n"] if ref else "—",
                fmt_ci(a["raw"]["simsekli"]),
                _ref_text(ref["plain"] if ref else None, "simsekli"),
                *[
                    fmt_ci(a[k]["simsekli"])
                    for k in ("null", "raw_minus_null", "covariance", "raw_minus_covariance", "standardised")
                ],
                _ref_text(ref["standardised"] if ref else None, "simsekli"),
                ivs,
            ]
        )
    rep.table(header, rows)
    strata = summary["pixel_strata"]
    rep.text(
        f"n: parameters in the across sample (at most {result.settings.tail_sample} with a nonzero "
        "reference gradient). Gaussian references: median and central 95% of the same statistic "
        "(the median over minibatches of the block-sum index) on Gaussian samples of the same size. "
        "Scale-matched null: each sampled parameter an independent Gaussian with its own robust scale "
        "(MAD / 0.6745 over the minibatches; the sd where the MAD is 0, for "
        f"{pct(summary['scale_fallback_fraction'])} of the sampled parameters). Covariance-matched "
        "null: random Gaussian combinations of the M centred noise vectors, a Gaussian with their "
        "sample covariance (scales and correlations). One replicate of each per member and step, "
        "compared paired. Parameters are sampled in random order (block sums of neighbouring, "
        "correlated parameters would bias the estimator). inf. var.: fraction of the first "
        f"{VERDICT_MINIBATCHES} minibatches whose sample tail_verdict calls infinite-variance. Pixel "
        f"strata: {', '.join(f'{k}: {v} pixels' for k, v in strata['pixels'].items())} "
        f"({strata['never_lit_pixels']} never lit, whose weights have no gradient). Gaussian samples "
        "standardised the same way are called infinite-variance in "
        f"{pct(_ref_verdict(g_ref['across_parameters'].get('all'), 'standardised'))} of minibatches, "
        "i.i.d. N(0, 1) samples in "
        f"{pct(_ref_verdict(g_ref['across_parameters'].get('all'), 'plain'))} (group all)."
    )
    rep.section("Along iterations (window all)")
    header = [
        "group",
        "parameters",
        "Hill",
        "Hill, Gaussian",
        "block sums",
        "block sums, Gaussian",
        "gaussian",
        "heavy-tailed",
        "infinite-variance",
        "inconclusive",
        "inf. var. (dense)",
        "sparse",
        "non-Gaussian (BH)",
    ]
    rows = []
    for group in summary["groups"]:
        al, ref = w_all[group]["along_iterations"], g_ref["along_iterations"][group]
        rows.append(
            [
                group,
                summary["group_sizes"][group],
                fmt_ci(al["hill"]),
                _ref_text(ref, "hill"),
                fmt_ci(al["simsekli"]),
                _ref_text(ref, "simsekli"),
                *[_frac_text(al["verdicts"][v]) for v in TAIL_VERDICTS],
                _frac_text(al["verdicts_dense"]["infinite-variance"]),
                _frac_text(al["sparse"]),
                _frac_text(al["bh_non_gaussian"]),
            ]
        )
    rep.table(header, rows)
    ref_all = g_ref["along_iterations"].get("all")
    rep.text(
        f"Along iterations n = {summary['minibatches']} minibatches per parameter, centred. Verdict "
        f"columns: fraction of the group's active parameters per tail_verdict (Gaussian series of "
        f"this length: "
        + (
            ", ".join(f"{k} {pct(v)}" for k, v in ref_all["verdicts"].items())
            if ref_all and ref_all["verdicts"]
            else "—"
        )
        + "). BH: fraction whose normality test is rejected under Benjamini-Hochberg at FDR 5% "
        "within the group."
    )
    rep.figure("tail_by_layer", captions["tail_by_layer"])
    rep.section("Tail index over training (all parameters, block sums)")
    header = [
        "step",
        "across: raw",
        "across: scale-matched null",
        "across: covariance-matched null",
        "across: standardised",
        "along: gaussian fraction",
        "along: inf. var. fraction",
    ]
    bs = summary["by_step"]
    rows = [
        [
            int(step),
            *[fmt_ci(bs[f"across_{kind}_simsekli"]["all"][k]) for kind in ACROSS_KINDS],
            fmt_ci(bs["along_gaussian_fraction"]["all"][k], 2),
            fmt_ci(bs["along_infinite_variance_fraction"]["all"][k], 2),
        ]
        for k, step in enumerate(summary["steps"])
    ]
    rep.table(header, rows)
    rep.figure("tail_index", captions["tail_index"])
    if "noise_distribution" in captions:
        rep.figure("noise_distribution", captions["noise_distribution"])
    rep.section("Gradient noise scale")
    header = [
        "step",
        "B_simple (ratio of means)",
        "n >> B_simple",
        "B_simple (per member)",
        "B_simple (two-batch)",
        "tr(Sigma)",
        "|G|^2",
    ]
    rows = [
        [
            int(step),
            _pooled_text(pooled, k),
            "no (flagged)" if pooled.flagged[k] else "yes",
            *[fmt_ci(scale[n]["by_step"][k]) for n in ("b_simple", "b_simple_two_batch", "trace_sigma", "grad_sq")],
        ]
        for k, step in enumerate(summary["steps"])
    ]
    rep.table(header, rows)
    rep.figure("noise_scale", captions["noise_scale"])
    rep.section("Configuration")
    rep.config({"train": result.run.config.to_dict(), "noise": result.settings.to_dict()}, command)
    return rep


def record_runs(
    config: TrainConfig,
    settings: NoiseSettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
) -> store.Run:
    """Train and record (or reuse) the ensemble in ``out``."""
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    probes = settings.probes(config, int(data.train_labels.shape[0]))
    return record.run(
        config,
        probes,
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
    settings: NoiseSettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset=None,
    training_s: float | None = None,
) -> dict:
    """Measure the gradient noise of ``run`` (a plain run or one grid point of a sweep) and write
    ``summary.json``, ``report.md`` and ``figures/`` into ``folder``; returns the summary.

    Raises :class:`NoUsableMembersError` (a ValueError: one line, no traceback from the CLI) when
    every member diverged."""
    folder = Path(folder)
    config = run.config
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    result = analyse(run, settings, dataset=data, progress=progress)
    summary = summarise(result)
    write_summary(folder, summary)
    captions = save_figures(FIGURES, result, folder / "figures")
    report(result, summary, captions, command).write(folder)
    return summary


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`), in the late
    window, per parameter group: the across-member mean fraction of update-noise series along
    iterations called Gaussian and infinite-variance by ``tail_verdict``, the Simsekli tail index
    across parameters (raw), and the last noise step's simple noise scale B_simple."""
    late = summary["tails"]["late"]
    pick = lambda f: {g: f(e) for g, e in late.items()}  # noqa: E731
    scale = summary["noise_scale"]["b_simple"]["last"]
    along = lambda v: pick(lambda e: e["along_iterations"]["verdicts"][v]["mean"])  # noqa: E731
    return {
        "along: gaussian (fraction)": along("gaussian"),
        "along: infinite-variance (fraction)": along("infinite-variance"),
        "across: Simsekli tail index (raw)": pick(lambda e: e["across_parameters"]["raw"]["simsekli"]["mean"]),
        "noise scale B_simple (last step)": {"all": scale["mean"]},
    }
