"""Section 6 of the RVSP study: the optimizer as a stochastic process driven by minibatch noise.

The ensemble is recorded with every parameter (``params``, and the trainer's ``grads`` as a check)
at a dozen steps spread over training. At each such step ``t`` and for each member the gradient
noise is rebuilt after training (:mod:`rvsp_jax.gradient_noise`): the gradients of the member's
next M minibatches at the frozen weights ``theta_t`` minus the mean gradient ``G`` over a fixed
subset of the training set, ``xi_m = g_m - G`` (``[M, P]``). Then:

- **tail index across parameters**: for each minibatch m, the tail index of ``xi_m[i]`` pooled over
  parameters i (a random sample of ``tail_sample`` parameters with ``G_i != 0``; parameters of
  pixels that are 0 in the whole reference subset have no noise at all), median over the M
  minibatches; Simsekli et al. (2019) pool the noise over parameters this way;
- **tail index along iterations**: for each parameter i, the tail index of ``xi_m[i]`` over the M
  minibatches, centred by their mean (each parameter's noise has mean ``G_full - G`` over
  minibatches, an offset of about sqrt(B / n) noise standard deviations that would otherwise bias the
  block-sum estimator towards 1), then the median over parameters; this is the comparison of Xie et
  al. (2023), "On
  the Overlooked Structure of Stochastic Gradients" (NeurIPS), who find heavy tails across
  parameters ("dimension-wise") but not along iterations ("iteration-wise");
- both with Hill's estimator (``k = sqrt(n)`` upper order statistics) and the block-sum estimator
  used by Simsekli et al. (2019) (alpha = 2 for Gaussian data), each next to its median on Gaussian
  samples of the same size: Hill's estimate of a Gaussian sample is not 2 but grows with n, and the
  block-sum estimate of a small sample is skewed (at n = 64 its mean is far above 2, its median
  near 2), so medians are compared with medians;
- **gradient noise scale** ``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018) from the
  reference subset's per-example gradients, with the two-batch estimate from the M minibatch
  gradient norms (batch B) and ``|G|^2`` (batch n) as a cross-check.

Every number is per member first; intervals are 95% t-intervals across members, and diverged members
are excluded and counted. One run folder: the recording, ``summary.json``, ``report.md``,
``figures/``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from rvsp_jax import plots, record, store
from rvsp_jax.analysis import across_members, hill, simsekli_alpha, two_batch_noise_scale
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import load
from rvsp_jax.ensemble import Ensemble
from rvsp_jax.gradient_noise import inputs, make_noise_fn, minibatch_indices, reference_subset, unravel_fn
from rvsp_jax.model import make_model
from rvsp_jax.probes import ProbeConfig
from rvsp_jax.report import Report, fmt, fmt_ci, write_summary
from rvsp_jax.studies.spectra import layer_groups, members_summary, usable_members

EXPERIMENT = "noise"
TRAIN_DEFAULTS = {"seeds": 16, "steps": 3000}
"""16 members, 3,000 SGD steps (1.6 epochs) of the sigmoid 784-16-16-10 network (55 s in all,
measured on 2 shared CPU cores, most of it measuring the noise)."""
_SUBSAMPLE_STREAM = 0x7461696C  # "tail": stream tag of the across-parameter subsample
_GAUSS_VALUES = 1 << 20
"""Standard normal values drawn per Gaussian reference: ``max(256, 2^20 / n)`` samples of size n, so
the reference median is within about 0.01 of its limit."""
GAUSSIAN_MARGIN = 0.05
"""A tail index is called heavier (lighter) than Gaussian when its whole interval lies more than 5%
below (above) the Gaussian reference, and close to Gaussian otherwise."""


@dataclass(frozen=True)
class NoiseSettings:
    """Options of the gradient-noise analysis (the training flags are separate).

    Example::

        python -m experiments.noise --seeds 32 --noise-steps 20 --minibatches 512
    """

    points: int = opt(12, "--noise-steps", "training steps at which the noise is measured, evenly "
                      "spaced from step 0 (every parameter is recorded there)")
    minibatches: int = opt(256, "--minibatches", "M: minibatch gradients per member and step (the "
                           "member's next M minibatches, at the weights of that step)")
    reference: int = opt(2048, "--reference-examples", "fixed training subset whose mean gradient "
                         "stands in for the full-data gradient; its per-example gradients give B_simple")
    tail_sample: int = opt(4096, "--tail-sample", "parameters drawn for the across-parameter tail "
                           "index (among those with a nonzero reference gradient)")

    def __post_init__(self):
        if self.points < 1:
            raise ValueError(f"--noise-steps must be >= 1, got {self.points}")
        if self.minibatches < 4:
            raise ValueError(f"--minibatches must be >= 4 (the block-sum estimator needs 2 blocks "
                             f"of 2), got {self.minibatches}")
        if self.reference < 2 or self.tail_sample < 4:
            raise ValueError(f"--reference-examples must be >= 2 and --tail-sample >= 4, got "
                             f"{self.reference} and {self.tail_sample}")

    def every(self, total_steps: int, steps_per_epoch: int) -> int:
        """Steps between recorded points (at most one epoch, as the recorder requires)."""
        return max(1, min(total_steps // self.points, steps_per_epoch))

    def probes(self, config: TrainConfig, n_train: int) -> ProbeConfig:
        every = self.every(config.total_steps(n_train), config.steps_per_epoch(n_train))
        return ProbeConfig(probes="params,grads", index="all", every=every)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@partial(jax.jit, static_argnames="k")
def _hill(x, k=None):
    return hill(x, k)


@partial(jax.jit, static_argnames="block_size")
def _simsekli(x, block_size=None):
    return simsekli_alpha(x, block_size)


@lru_cache(maxsize=64)
def gaussian_reference(n: int, *, centred: bool = False, repeats: int | None = None,
                       seed: int = 0) -> tuple[float, float]:
    """Median (Hill, block-sum) tail-index estimates of ``repeats`` (default ``max(256, 2^20 / n)``)
    standard normal samples of size ``n`` (float32, ``jax.random.normal`` from ``seed``; each sample
    minus its mean if ``centred``, as the along-iteration noise is): what the estimators give
    without heavy tails."""
    repeats = repeats or max(256, _GAUSS_VALUES // n)
    x = jax.random.normal(jax.random.PRNGKey(seed), (repeats, n))
    if centred:
        x = x - x.mean(axis=-1, keepdims=True)
    return float(np.median(_hill(x))), float(np.median(_simsekli(x)))


class NoiseMeasurements(NamedTuple):
    """Per member, noise step and parameter group (float64; excluded members NaN).

    steps: int ``[K]`` training steps; batch, minibatches, reference: minibatch size B, minibatches
      per step M (at most one epoch's), reference-subset size n.
    groups: names ``[G]``: ``all`` parameters, then each layer (``Dense_0``, ...).
    across_hill, across_simsekli: ``[S, K, G]`` tail index across the group's parameters (median
      over the M minibatches). along_hill, along_simsekli: ``[S, K, G]`` tail index along iterations
      (median over the group's parameters). across_n: ``[S, K, G]`` parameters in the across sample.
    b_simple, trace_sigma, grad_sq: ``[S, K]`` per-example noise scale on the reference subset.
    b_simple_two_batch: ``[S, K]`` two-batch estimate from the M minibatch norms and ``|G|^2``
      (NaN unless the reference subset is larger than a minibatch).
    active: ``[S, K]`` parameters with a nonzero reference gradient.
    check: ``[S, K]`` max |rebuilt - recorded| / max |recorded| of the step's own minibatch gradient.
    example: ``(across, along)`` standardised noise of the first usable member at the last step,
      for the distribution figure.
    """

    steps: np.ndarray
    batch: int
    minibatches: int
    reference: int
    groups: tuple
    across_hill: np.ndarray
    across_simsekli: np.ndarray
    along_hill: np.ndarray
    along_simsekli: np.ndarray
    across_n: np.ndarray
    b_simple: np.ndarray
    trace_sigma: np.ndarray
    grad_sq: np.ndarray
    b_simple_two_batch: np.ndarray
    active: np.ndarray
    check: np.ndarray
    example: tuple


_PER_GROUP = ("across_hill", "across_simsekli", "along_hill", "along_simsekli", "across_n")
_PER_STEP = ("b_simple", "trace_sigma", "grad_sq", "b_simple_two_batch", "active", "check")


def _standardised(xi: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xi ``[M, P]`` -> (one minibatch's noise over active parameters / its sd, each active
    parameter's noise over minibatches minus its mean / its sd, pooled)."""
    across = xi[0, active] / xi[0, active].std()
    along = xi[:, active]
    with np.errstate(invalid="ignore", divide="ignore"):
        along = (along - along.mean(0)) / along.std(0)
    return across, along[:, np.isfinite(along).all(0)].ravel()


def _tails(xi: np.ndarray, along: tuple, pool: np.ndarray, size: int, rng) -> tuple:
    """(across Hill, across block-sum, along Hill, along block-sum, n) of the parameters ``pool``."""
    if pool.size < 4:
        return (np.nan,) * 4 + (pool.size,)
    chosen = rng.choice(pool, min(size, pool.size), replace=False)
    sample = xi[:, chosen]
    with np.errstate(invalid="ignore"):
        return (np.nanmedian(np.asarray(_hill(sample))), np.nanmedian(np.asarray(_simsekli(sample))),
                np.nanmedian(along[0][pool]), np.nanmedian(along[1][pool]), chosen.size)


def measure(run: store.Run, settings: NoiseSettings, *, dataset=None, progress: bool = False
            ) -> NoiseMeasurements:
    """Rebuild and measure the gradient noise at every recorded step of a complete run."""
    for name in ("params", "grads"):
        if name not in run.arrays or len(run.probe_names[name]) != sum(
                math.prod(s) for s in run.layout.param_shapes.values()):
            raise ValueError(f"{run.path} must record every parameter's {name} (probes params,grads, "
                             "index all)")
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
    groups = {"all": np.arange(len(names)), **layer_groups(names)}
    usable = usable_members(run)
    steps = run.steps
    out = {f: np.full((config.seeds, steps.size, len(groups)), np.nan) for f in _PER_GROUP}
    out.update({f: np.full((config.seeds, steps.size), np.nan) for f in _PER_STEP})
    example = (np.zeros(0), np.zeros(0))
    bar = tqdm(total=int(usable.sum()) * steps.size, desc="gradient noise", disable=not progress,
               leave=False)
    for k, step in enumerate(steps):
        batches = minibatch_indices(ens, int(step), m)  # [S, M, B]
        params, grads = run["params"][:, k, :], run["grads"][:, k, :]
        for s in np.flatnonzero(usable):
            sample = noise_fn(unravel(params[s]), x_train[batches[s]], y_train[batches[s]], x_ref, y_ref)
            xi, g_ref = np.asarray(sample.noise), np.asarray(sample.reference_grad)
            active = g_ref != 0
            centred = (xi - xi.mean(axis=0)).T  # [P, M]: each parameter's noise over minibatches
            along = (np.asarray(_hill(centred)), np.asarray(_simsekli(centred)))  # [P] each
            rng = np.random.default_rng([_SUBSAMPLE_STREAM, config.base_seed % 2**64, int(s), k])
            for gi, idx in enumerate(groups.values()):
                values = _tails(xi, along, idx[active[idx]], settings.tail_sample, rng)
                for field, v in zip(_PER_GROUP, values):
                    out[field][s, k, gi] = v
            two = two_batch_noise_scale(sample.minibatch_sq_norms, float(g_ref @ g_ref),
                                        config.batch_size, ref.size).b_simple if two_batch else np.nan
            own = xi[0] + g_ref  # the minibatch of step `step` itself
            values = (*(float(v) for v in sample.scale), float(two), active.sum(),
                      np.abs(own - grads[s]).max() / np.abs(grads[s]).max())
            for field, v in zip(_PER_STEP, values):
                out[field][s, k] = v
            if k == steps.size - 1 and not example[0].size:
                example = _standardised(xi, active)
            bar.update()
    bar.close()
    return NoiseMeasurements(steps, config.batch_size, m, int(ref.size), tuple(groups),
                             example=example, **out)


class NoiseResult(NamedTuple):
    run: store.Run
    settings: NoiseSettings
    usable: np.ndarray
    noise: NoiseMeasurements
    gaussian: dict


def analyse(run: store.Run, settings: NoiseSettings, *, dataset=None, progress: bool = False
            ) -> NoiseResult:
    """Measure the noise (:func:`measure`) and the estimators' values on Gaussian samples of the
    same sizes: ``gaussian[where][group] = {"n", "hill", "simsekli"}``."""
    noise = measure(run, settings, dataset=dataset, progress=progress)
    gaussian: dict = {"across_parameters": {}, "along_iterations": {}}
    for gi, group in enumerate(noise.groups):
        sizes = noise.across_n[..., gi]
        n_across = int(np.nanmax(sizes)) if np.isfinite(sizes).any() else 0
        for where, n in (("across_parameters", n_across), ("along_iterations", noise.minibatches)):
            h, b = gaussian_reference(n, centred=where == "along_iterations") if n >= 4 else (np.nan, np.nan)
            gaussian[where][group] = {"n": n, "hill": h, "simsekli": b}
    return NoiseResult(run, settings, usable_members(run), noise, gaussian)


_TAILS = {"across_parameters": ("across_hill", "across_simsekli"),
          "along_iterations": ("along_hill", "along_simsekli")}


def _by_step(x: np.ndarray) -> list:
    return [across_members(x[:, k]) for k in range(x.shape[1])]


def _overall_per_member(x: np.ndarray) -> np.ndarray:
    """x: ``[S, K]`` -> ``[S]`` mean over the noise steps (NaN steps skipped; NaN if none)."""
    finite = np.isfinite(x)
    total = np.where(finite, x, 0.0).sum(1)
    return np.where(finite.any(1), total / np.maximum(finite.sum(1), 1), np.nan)


def _overall(x: np.ndarray):
    """Per member mean over the noise steps, then across members (:class:`MemberSummary`)."""
    return across_members(_overall_per_member(x))


def _compare(s, reference: float) -> str:
    """The verdict of a tail-index summary against its Gaussian reference (:data:`GAUSSIAN_MARGIN`)."""
    if not (np.isfinite(s.lo) and np.isfinite(reference)):
        return "undetermined"
    if s.hi < reference * (1 - GAUSSIAN_MARGIN):
        return "heavier-tailed than Gaussian samples of the same size"
    if s.lo > reference * (1 + GAUSSIAN_MARGIN):
        return "lighter-tailed than Gaussian samples of the same size"
    return "close to Gaussian samples of the same size"


def summarise(result: NoiseResult) -> dict:
    """The study's numbers (JSON-ready): tail indices per parameter group, noise scale by step."""
    nz, run = result.noise, result.run
    tails: dict = {}
    for where, fields in _TAILS.items():
        tails[where] = {}
        for estimator, field in zip(("hill", "simsekli"), fields):
            tails[where][estimator] = {}
            for gi, group in enumerate(nz.groups):
                x = getattr(nz, field)[..., gi]
                overall = _overall(x)
                ref = result.gaussian[where][group][estimator]
                tails[where][estimator][group] = {
                    "overall": overall, "by_step": _by_step(x), "gaussian_reference": ref,
                    "verdict": _compare(overall, ref)}
    scale = {name: {"by_step": _by_step(getattr(nz, name)), "first": across_members(getattr(nz, name)[:, 0]),
                    "last": across_members(getattr(nz, name)[:, -1])}
             for name in ("b_simple", "b_simple_two_batch", "trace_sigma", "grad_sq")}
    heavy = {g: {w: tails[w]["simsekli"][g]["verdict"].startswith("heavier") for w in tails}
             for g in nz.groups}
    return {
        "experiment": EXPERIMENT, "run": str(run.path), "config": run.config.to_dict(),
        "settings": result.settings.to_dict(), "members": members_summary(result.usable),
        "steps": nz.steps, "batch_size": nz.batch, "minibatches": nz.minibatches,
        "reference_examples": nz.reference, "groups": list(nz.groups),
        "active_parameters": _overall(nz.active),
        "minibatch_check_max_relative_difference":
            float(np.nanmax(nz.check)) if np.isfinite(nz.check).any() else None,
        "test_accuracy": across_members(np.where(result.usable, run.final().test_accuracy, np.nan)),
        "tail_index": tails, "gaussian_reference": result.gaussian,
        "xie_2023_pattern": {g: {"heavy_across_parameters": h["across_parameters"],
                                 "heavy_along_iterations": h["along_iterations"],
                                 "reproduced": h["across_parameters"] and not h["along_iterations"]}
                             for g, h in heavy.items()},
        "noise_scale": scale,
    }


def figures(result: NoiseResult, folder: Path) -> dict[str, str]:
    """Draw every figure into ``folder``; returns name -> caption."""
    nz = result.noise
    steps = nz.steps
    captions = {}
    with plots.paper_style():
        fig, axes = plots.subplots(1, 2, width="double", height=2.4)
        for ax, (e, estimator) in zip(axes, enumerate(("hill", "simsekli"))):
            for i, (where, fields) in enumerate(_TAILS.items()):
                m = across_members(getattr(nz, fields[e])[..., 0])
                line, _ = plots.plot_band(ax, steps, m.mean, m.lo, m.hi, label=where.replace("_", " "),
                                          color=plots.PALETTE[i])
                ref = result.gaussian[where]["all"]
                ax.axhline(ref[estimator], color=line.get_color(), linestyle=":", linewidth=0.8,
                           label=f"Gaussian, n={ref['n']}")
            ax.set(xlabel="training step", ylabel=f"tail index alpha ({estimator})",
                   title="Hill (k = sqrt n)" if estimator == "hill" else "block sums (Simsekli et al.)")
        axes[0].legend()
        plots.save_figure(fig, folder, "tail_index")
        captions["tail_index"] = ("Tail index of minibatch gradient noise of all parameters, across "
                                  "parameters and along iterations; mean and 95% t-interval across "
                                  "members; dotted: the same estimator on Gaussian samples of the same size")

        fig, axes = plots.subplots(1, 2, width="double", height=2.4)
        x = np.arange(len(nz.groups))
        for ax, (e, estimator) in zip(axes, enumerate(("hill", "simsekli"))):
            for i, (where, fields) in enumerate(_TAILS.items()):
                values = getattr(nz, fields[e])
                m = across_members(np.stack([_overall_per_member(values[..., g]) for g in x], axis=1))
                offset = (i - 0.5) * 0.3
                ax.errorbar(x + offset, m.mean, yerr=[m.mean - m.lo, m.hi - m.mean], fmt="o", capsize=2,
                            color=plots.PALETTE[i], label=where.replace("_", " "))
                ref = [result.gaussian[where][g][estimator] for g in nz.groups]
                ax.plot(x + offset, ref, "_", color=plots.PALETTE[i], markersize=10,
                        label=f"Gaussian ({where.split('_')[0]})")
            ax.set(xticks=x, xticklabels=nz.groups, ylabel=f"tail index alpha ({estimator})")
        axes[0].legend()
        plots.save_figure(fig, folder, "tail_by_layer")
        captions["tail_by_layer"] = ("Tail index per parameter group, averaged over the noise steps; mean "
                                     "and 95% t-interval across members; bars: Gaussian samples of the "
                                     "same size")

        fig, axes = plots.subplots(1, 2, width="double", height=2.4)
        for i, (name, label) in enumerate((("b_simple", "per-example"), ("b_simple_two_batch", "two-batch"))):
            m = across_members(getattr(nz, name))
            plots.plot_band(axes[0], steps, m.mean, m.lo, m.hi, label=label, color=plots.PALETTE[i])
        axes[0].axhline(nz.batch, color="k", linestyle="--", linewidth=0.8, label=f"batch size {nz.batch}")
        axes[0].set(xlabel="training step", ylabel="B_simple = tr(Sigma) / |G|^2", yscale="log")
        axes[0].legend()
        for i, (name, label) in enumerate((("trace_sigma", "tr(Sigma)"), ("grad_sq", "|G|^2"))):
            m = across_members(getattr(nz, name))
            plots.plot_band(axes[1], steps, m.mean, m.lo, m.hi, label=label, color=plots.PALETTE[i + 2])
        axes[1].set(xlabel="training step", ylabel="per-example noise / signal power", yscale="log")
        axes[1].legend()
        plots.save_figure(fig, folder, "noise_scale")
        captions["noise_scale"] = ("Gradient noise scale B_simple over training (McCandlish et al. 2018): "
                                   "per-example estimate on the reference subset and two-batch estimate; "
                                   "mean and 95% t-interval across members")

        across, along = nz.example
        if across.size and along.size:
            fig, ax = plots.subplots(width="single", height=2.4)
            plots.hist_compare(ax, across, along, labels=("across parameters", "along iterations"), bins=80)
            grid = np.linspace(min(across.min(), along.min()), max(across.max(), along.max()), 400)
            ax.plot(grid, np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), "k--", linewidth=0.8, label="N(0, 1)")
            ax.set(yscale="log", xlabel="standardised gradient noise", ylabel="density",
                   ylim=(0.5 / across.size, None))
            ax.legend()
            plots.save_figure(fig, folder, "noise_distribution")
            captions["noise_distribution"] = (
                f"Standardised gradient noise at step {int(steps[-1])} (first usable member): one "
                "minibatch's noise over parameters, and each parameter's noise over minibatches")
    return captions


def report(result: NoiseResult, summary: dict, captions: dict, command: str | None) -> Report:
    """The markdown report of the study."""
    members, tails, scale = summary["members"], summary["tail_index"], summary["noise_scale"]
    last = int(summary["steps"][-1])
    rep = Report("Minibatch gradient noise: tails and noise scale")
    rep.text(f"{members['used']} of {members['total']} members analysed ({members['diverged']} diverged "
             f"and excluded). At {len(summary['steps'])} steps (0 to {last}) the noise is rebuilt from "
             f"the recorded parameters: gradients of the member's next {summary['minibatches']} "
             f"minibatches of {summary['batch_size']} at the frozen weights, minus the mean gradient "
             f"over a fixed subset of {summary['reference_examples']} training examples. Rebuilt "
             f"minibatch gradients reproduce the trainer's recorded ones to "
             f"{fmt(summary['minibatch_check_max_relative_difference'], 2)} (max relative difference). "
             f"Parameters with a nonzero reference gradient: {fmt_ci(summary['active_parameters'])}. "
             f"Test accuracy {fmt_ci(summary['test_accuracy'])}. Intervals are 95% t-intervals "
             "across members; tail indices are averaged over the noise steps per member first.")
    rep.section("Findings")
    bullets = []
    for where, by_estimator in tails.items():
        text = "; ".join(f"{est} alpha {fmt_ci(d['all']['overall'])} (Gaussian samples: "
                         f"{fmt(d['all']['gaussian_reference'])}), {d['all']['verdict']}"
                         for est, d in by_estimator.items())
        bullets.append(f"All parameters, {where.replace('_', ' ')}: {text}.")
    xie = summary["xie_2023_pattern"]
    yes = [g for g, v in xie.items() if v["reproduced"]]
    no = [f"{g} (heavy across: {'yes' if v['heavy_across_parameters'] else 'no'}, heavy along: "
          f"{'yes' if v['heavy_along_iterations'] else 'no'})" for g, v in xie.items() if not v["reproduced"]]
    bullets.append(
        "Xie et al. (2023) find heavy tails across parameters but not along iterations. By the "
        "block-sum estimator against its Gaussian reference, this pattern holds for: "
        f"{', '.join(yes) or 'no group'}; not for: {', '.join(no) or 'no group'}.")
    bullets.append(f"B_simple (per-example) {fmt_ci(scale['b_simple']['first'])} at step 0 and "
                   f"{fmt_ci(scale['b_simple']['last'])} at step {last} (batch size "
                   f"{summary['batch_size']}); two-batch estimate "
                   f"{fmt_ci(scale['b_simple_two_batch']['first'])} and "
                   f"{fmt_ci(scale['b_simple_two_batch']['last'])}.")
    rep.bullets(bullets)
    rep.section("Tail index by parameter group")
    header = ["group", "where", "Hill", "Hill, Gaussian", "block sums", "block sums, Gaussian",
              "verdict (block sums)"]
    rows = [[group, where.replace("_", " "), fmt_ci(tails[where]["hill"][group]["overall"]),
             fmt(tails[where]["hill"][group]["gaussian_reference"]),
             fmt_ci(tails[where]["simsekli"][group]["overall"]),
             fmt(tails[where]["simsekli"][group]["gaussian_reference"]),
             tails[where]["simsekli"][group]["verdict"]]
            for group in summary["groups"] for where in _TAILS]
    rep.table(header, rows)
    g = summary["gaussian_reference"]
    rep.text(f"Across parameters the sample is at most {result.settings.tail_sample} parameters with a "
             f"nonzero reference gradient (n per group in the Gaussian columns: "
             + ", ".join(f"{k} {v['n']}" for k, v in g["across_parameters"].items())
             + f"); along iterations n = {summary['minibatches']} minibatches, each parameter's noise "
             "centred by its mean over them (the reference gradient is not the full-data one). Each "
             "estimate is a median (over "
             "minibatches across parameters, over parameters along iterations); Gaussian references are "
             f"medians over at least 256 standard normal samples of the same size (Hill's estimate "
             "grows with n for light tails; the block-sum estimate is near 2). A verdict calls a tail "
             f"index heavier (lighter) than Gaussian when its whole interval lies more than "
             f"{GAUSSIAN_MARGIN:.0%} below (above) the reference, close to Gaussian otherwise.")
    rep.figure("tail_by_layer", captions["tail_by_layer"])
    rep.section("Tail index over training (all parameters)")
    header = ["step", "across: Hill", "across: block sums", "along: Hill", "along: block sums"]
    rows = [[int(step), *[fmt_ci(tails[w][e]["all"]["by_step"][k])
                          for w in _TAILS for e in ("hill", "simsekli")]]
            for k, step in enumerate(summary["steps"])]
    rep.table(header, rows)
    rep.figure("tail_index", captions["tail_index"])
    if "noise_distribution" in captions:
        rep.figure("noise_distribution", captions["noise_distribution"])
    rep.section("Gradient noise scale")
    header = ["step", "B_simple (per-example)", "B_simple (two-batch)", "tr(Sigma)", "|G|^2"]
    rows = [[int(step), *[fmt_ci(scale[n]["by_step"][k])
                          for n in ("b_simple", "b_simple_two_batch", "trace_sigma", "grad_sq")]]
            for k, step in enumerate(summary["steps"])]
    rep.table(header, rows)
    rep.figure("noise_scale", captions["noise_scale"])
    rep.section("Configuration")
    rep.config({"train": result.run.config.to_dict(), "noise": result.settings.to_dict()}, command)
    return rep


def run_study(config: TrainConfig, settings: NoiseSettings, out, *, resume: bool = False,
              overwrite: bool = False, command: str | None = None, progress: bool = True,
              dataset=None) -> Path:
    """Train and record (or reuse) the ensemble in ``out``, measure its gradient noise and write
    ``summary.json``, ``report.md`` and ``figures/``; returns ``out``."""
    out = Path(out)
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    probes = settings.probes(config, int(data.train_labels.shape[0]))
    run = record.run(config, probes, out, resume=resume, overwrite=overwrite, dataset=dataset,
                     experiment=EXPERIMENT, command=command, progress=progress)
    result = analyse(run, settings, dataset=data, progress=progress)
    summary = summarise(result)
    write_summary(out, summary)
    captions = figures(result, out / "figures")
    report(result, summary, captions, command).write(out)
    return out
