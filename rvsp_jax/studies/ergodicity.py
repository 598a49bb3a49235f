"""The ergodicity study: is one training run representative of all runs?

    python -m experiments.ergodicity --seeds 256

trains an ensemble (defaults: 256 members, 3,000 steps of SGD with lr 0.1 on MNIST, sigmoid,
``vary=both``), records its trajectories, and asks of every observable whether a member's time
average equals the ensemble average (:func:`rvsp_jax.analysis.assess_many`: a long-run-variance
ANOVA of the members' time averages around the ensemble-mean path, a variance-drift test of that
window, and a member's time distribution against the ensemble's), after a burn-in (default a
quarter of the steps). Each observable gets one of "ergodic", "non-ergodic", "non-stationary" or
"inconclusive", with an effect size (between-member variance of the time average over its ergodic
expectation) and, where undecided, the number of steps that would decide it; the calibration of
these verdicts is in docs/calibration.md.

What is recorded (:func:`probe_config`): the per-step loss, batch accuracy, gradient and update norms
(every step), and every ``probe_every`` (default 5) steps the weight norm of every parameter array,
the hidden layers' activation summaries on a fixed batch of 64 test images (mean, variance,
saturated or zero/dead fraction), and the parameters and single-step updates of a set of entries
that is closed under hidden-unit permutations (:func:`recorded_parameters`).

What is analysed (:func:`load_groups`). Hidden units of members with different initialisations are
not aligned, so "parameter i across members" means nothing there; the study therefore analyses

- permutation-invariant observables: the metrics, weight norms, activation summaries, the output
  biases (output units are never permuted) and sorted per-unit statistics (each hidden layer's biases
  and outgoing weight norms, sorted per member and step);
- per-parameter trajectories: with ``vary=data`` directly (one shared initialisation: aligned by
  construction); with ``vary=init|both`` only after aligning every member to a reference member by
  weight matching on the final parameters (:func:`rvsp_jax.analysis.match_weights`), applied to the
  recorded trajectories; with ``--align none`` they are skipped. The report says which was used.

Diverged members are excluded from every statistic and counted. The mean-test and
distribution-check p-values are Benjamini-Hochberg adjusted within each family
(permutation-invariant observables, parameters, updates) and the counts that survive are reported
beside the raw verdicts. :func:`rvsp_jax.studies.runner.run_study` does everything and writes
``summary.json``, ``report.md`` and ``figures/`` into the run folder beside the recording.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib import ticker
from tqdm.auto import tqdm

from rvsp_jax.analysis import (
    ErgodicityResult,
    FluctuationMetric,
    MemberSummary,
    VarianceScaling,
    across_members,
    assess_many,
    fdr_bh,
    fluctuation_metric,
    match_weights,
    permutation_index,
    variance_scaling,
)
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.data import Dataset, load
from rvsp_jax.io import record
from rvsp_jax.io.store import METRICS, Run
from rvsp_jax.present import plots
from rvsp_jax.present.report import Report, fmt, fmt_ci, progress_enabled, write_summary
from rvsp_jax.studies import windows
from rvsp_jax.studies.figures import captions, save_figures
from rvsp_jax.studies.settings import StudySettings
from rvsp_jax.studies.windows import check_burn_in
from rvsp_jax.training.model import make_model
from rvsp_jax.training.probes import ProbeConfig, param_shapes

EXPERIMENT = "ergodicity"
TITLE = "Ergodicity"
FOLDER = "run"
TRAIN_DEFAULTS = {"seeds": 256, "steps": 3000}
"""Training defaults of the command that differ from :class:`TrainConfig`'s (vary both, SGD with
lr 0.1, sigmoid, batch 32 are TrainConfig's own)."""
DESCRIPTION = """\
Train an ensemble, record its trajectories, and ask of every observable whether a member's time
average equals the ensemble average (a long-run-variance ANOVA of the members' time averages, a
variance-drift test of the window, a member's time distribution vs the ensemble's), with a verdict
(ergodic, non-ergodic, non-stationary, inconclusive), an effect size and the steps that would
decide an inconclusive one, per observable and per layer.

Defaults: 256 members, 3000 steps of SGD (lr 0.1, batch 32) on MNIST, sigmoid, --vary both;
burn-in a quarter of the steps (750); loss, accuracy, gradient and update norms recorded every
step; weight norms, activation summaries and the parameters and updates of 602 entries (closed
under hidden-unit permutations) every 5 steps. Observables analysed: the permutation-invariant
ones (metrics, weight norms, activation summaries, output biases, sorted per-unit statistics),
and per-parameter trajectories after weight matching (--align weights) or directly (--vary data).
At the defaults it takes about 3 minutes on 2 CPU cores and writes about 1 GiB.
"""
ALIGNMENTS = ("weights", "none")
PIXEL_GRID = (10, 14, 18)
"""Rows and columns of the input pixels whose first-layer weights (to every unit) are recorded."""
MIN_ANALYSED = 32
"""Fewest recorded steps after burn-in (assess_many decides nothing below 32)."""
INVARIANT_GROUPS = ("metrics", "weight norms", "activations", "output biases")
"""Groups listed observable by observable (tables, curves); "unit statistics", "parameters" and
"updates" are summarised per layer."""
VERDICT_COLOURS = {
    "ergodic": "#cdeccd",
    "non-ergodic": "#f6c9c0",
    "non-stationary": "#f6e3b4",
    "inconclusive": "#e6e6e6",
}
_BLOCK = 64  # observables per assess_many call (progress granularity; results do not depend on it)


@dataclass(frozen=True)
class ErgodicitySettings(StudySettings):
    """Options of the ergodicity study beyond training (:class:`TrainConfig`).

    Example::

        python -m experiments.ergodicity --seeds 256 --burn-in 0.3 --align none
    """

    burn_in: float = opt(
        0.25,
        "--burn-in",
        "fraction of the steps dropped before the analysis "
        "(default: a quarter of the steps, i.e. 750 of the default 3000)",
    )
    probe_every: int = opt(
        5,
        "--probe-every",
        "record weight norms, activation summaries, "
        "parameters and updates every n steps (loss, accuracy, gradient and "
        "update norms are recorded at every step)",
    )
    align: str = opt(
        "weights",
        "--align",
        "per-parameter analysis under --vary init|both: weights = "
        "align hidden units to a reference member by weight matching (Git Re-Basin) on "
        "the final parameters; none = skip it (--vary data needs no alignment)",
        choices=ALIGNMENTS,
    )
    alpha: float = opt(
        0.05,
        "--alpha",
        "level of a non-ergodic verdict (0.8 alpha for the mean "
        "test, 0.2 alpha for the distribution check), of the 1 - alpha intervals, "
        "and the Benjamini-Hochberg false discovery rate",
    )
    shown: int = opt(3, "--members-shown", "members drawn in the trajectory figure")

    def __post_init__(self):
        check_burn_in(self.burn_in, "burn-in")
        if not isinstance(self.probe_every, int) or self.probe_every < 1:
            raise ValueError(f"probe-every must be an integer >= 1, got {self.probe_every!r}")
        if self.align not in ALIGNMENTS:
            raise ValueError(f"unknown alignment {self.align!r}; valid: {', '.join(ALIGNMENTS)}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha!r}")
        if not isinstance(self.shown, int) or self.shown < 1:
            raise ValueError(f"members-shown must be an integer >= 1, got {self.shown!r}")


# ------------------------------------------------------------------------------------------------
# What to record


def recorded_parameters(config: TrainConfig) -> list[str]:
    """Names of the parameter entries the study records, in the store's order.

    Every entry of every parameter array except the first kernel (784 x h1), of which only the rows
    of the :data:`PIXEL_GRID` input pixels are kept (to every unit). Hidden-unit permutations move
    entries only within this set, so the aligned trajectory of any recorded entry is recorded too.
    """
    pixels = [r * 28 + c for r in PIXEL_GRID for c in PIXEL_GRID]
    names = []
    for name, shape in param_shapes(make_model(config)).items():
        rows = pixels if name == "Dense_0/kernel" else range(shape[0])
        names += [f"{name}[{','.join(map(str, (r, *rest)))}]" for r in rows for rest in np.ndindex(*shape[1:])]
    return names


def probe_config(config: TrainConfig, settings: ErgodicitySettings) -> ProbeConfig:
    """The recording of the study (see the module docstring)."""
    return ProbeConfig(
        probes="params,updates,weight_norms,act_summary",
        index=" ".join(recorded_parameters(config)),
        every=settings.probe_every,
    )


def burn_in_steps(settings: ErgodicitySettings, total_steps: int) -> int:
    """The burn-in in steps (default: a quarter, ``total_steps // 4``), checked against the recording
    length."""
    burn = windows.burn_in_steps(settings.burn_in, total_steps)
    analysed = len(range(-(-burn // settings.probe_every) * settings.probe_every, total_steps, settings.probe_every))
    if analysed < MIN_ANALYSED:
        raise ValueError(
            f"burn-in {burn} of {total_steps} steps, recorded every {settings.probe_every}, leaves "
            f"{analysed} recorded steps to analyse; the ergodicity tests need at least "
            f"{MIN_ANALYSED}: raise --steps, or lower --burn-in or --probe-every"
        )
    return burn


# ------------------------------------------------------------------------------------------------
# Observables


class ObservableGroup(NamedTuple):
    """Observables analysed together.

    name: "metrics", "weight norms", "activations", "output biases", "unit statistics",
      "parameters" or "updates".
    family: the Benjamini-Hochberg family: "invariant", "parameters" or "updates".
    x: float32 ``[S, P, T]`` (member, observable, recorded step); diverged members are NaN.
    names: ``[P]`` observable names; layers: ``[P]`` row of the per-layer table each belongs to.
    steps: int ``[T]`` training step of each time index; burn: first time index analysed.
    """

    name: str
    family: str
    x: np.ndarray
    names: tuple
    layers: tuple
    steps: np.ndarray
    burn: int

    @property
    def every(self) -> int:
        """Training steps between consecutive time indices."""
        return int(self.steps[1] - self.steps[0]) if len(self.steps) > 1 else 1


def _columns(x: np.ndarray, positions) -> np.ndarray:
    """``[S, T, P]`` recorded array, columns ``positions`` -> contiguous float32 ``[S, p, T]``."""
    return np.ascontiguousarray(np.moveaxis(x[..., positions], -1, 1), dtype=np.float32)


def _param_array(run: Run, params: np.ndarray, name: str) -> np.ndarray:
    """Every entry of parameter array ``name`` from the recorded params ``[S, T, P]`` ->
    ``[S, T, *shape]`` (the array must be recorded whole)."""
    shape = run.layout.param_shapes[name]
    names = [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]
    return params[..., run.index("params", names)].reshape(params.shape[:2] + tuple(shape))


def _unit_statistics(run: Run, params: np.ndarray, n_hidden: int):
    """Sorted per-unit statistics ``[S, T, P]`` with names and layer labels: for each hidden layer,
    its biases and its units' outgoing weight norms (rows of the next kernel), each sorted in
    descending order per member and step (invariant under permutations of the units)."""
    parts, names, layers = [], [], []
    for l in range(n_hidden):
        stats = {
            "bias": _param_array(run, params, f"Dense_{l}/bias"),
            "outgoing norm": np.linalg.norm(_param_array(run, params, f"Dense_{l + 1}/kernel"), axis=-1),
        }
        for stat, v in stats.items():
            parts.append(-np.sort(-v, axis=-1))
            names += [f"Dense_{l} unit {stat} #{r + 1}" for r in range(v.shape[-1])]
            layers += [f"Dense_{l} units: {stat} (sorted)"] * v.shape[-1]
    return np.concatenate(parts, axis=-1), names, layers


def aligned_columns(run: Run, perms: list[np.ndarray]) -> np.ndarray:
    """Column map int ``[S, P]`` of the recorded ``params``/``updates``: aligned entry ``i`` of member
    s is recorded column ``cols[s, i]`` (take ``x[s, :, cols[s]]``). ``perms`` from
    :func:`rvsp_jax.analysis.match_weights`. Raises ValueError when a permutation leaves the
    recorded set (the recording is not closed under hidden-unit permutations)."""
    shapes = run.layout.param_shapes
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes.values()])
    q = np.concatenate([off + run.layout.param_index[name] for name, off in zip(shapes, offsets)])
    like = {}
    for name, shape in shapes.items():
        layer, leaf = name.split("/")
        like.setdefault(layer, {})[leaf] = np.zeros((perms[0].shape[0], *shape), np.float32)
    index = permutation_index(like, perms)  # [S, n_params]
    position = np.full(offsets[-1], -1, np.int64)
    position[q] = np.arange(q.size)
    cols = position[index[:, q]]
    if (cols < 0).any():
        raise ValueError(
            "the recorded parameters are not closed under hidden-unit permutations; "
            "record them with probe_config (or index=all) to align them"
        )
    return cols


def _alignment(run: Run, diverged: np.ndarray, settings: ErgodicitySettings):
    """``(cols or None, description dict)`` of the per-parameter alignment."""
    vary = run.config.vary
    if vary == "data":
        return np.arange(run.layout.size("params"))[None].repeat(len(diverged), 0), {
            "method": "none needed (vary=data: one shared initialisation, units aligned by construction)",
            "aligned": True,
            "reference_member": None,
        }
    if settings.align == "none":
        return None, {
            "method": f"not aligned (vary={vary}, --align none): per-parameter analysis skipped",
            "aligned": False,
            "reference_member": None,
        }
    finite = np.flatnonzero(~diverged)
    if finite.size == 0:
        return None, {"method": "not aligned: every member diverged", "aligned": False, "reference_member": None}
    ref = int(finite[0])
    params = run.final().params
    perms = match_weights(params, ref)
    others = finite[finite != ref]
    moved = np.mean([np.mean(p[others] != np.arange(p.shape[1])) for p in perms]) if others.size else 0.0
    return aligned_columns(run, perms), {
        "method": f"weight matching to member {ref} (Git Re-Basin, Ainsworth et al. 2023; "
        "per-layer linear_sum_assignment iterated over layers, on the final parameters, "
        "applied to the whole recorded trajectory)",
        "aligned": True,
        "reference_member": ref,
        "units_moved_fraction": float(moved),
    }


def load_groups(run: Run, settings: ErgodicitySettings, burn_in: int):
    """Every observable group of a recorded run (see the module docstring) and the alignment used.

    Returns ``(groups: list[ObservableGroup], alignment: dict, diverged: bool [S])``. Members that
    diverged during training are set to NaN in every group (their frozen probes are not data).
    """
    diverged = np.asarray(run.final().diverged, bool)
    probe_steps = run.steps
    probe_burn = int(np.searchsorted(probe_steps, burn_in))
    n_hidden = len(run.config.widths)
    out_layer = f"Dense_{n_hidden}"

    def group(name, family, x, names, layers, steps, burn):
        x[diverged] = np.nan
        return ObservableGroup(name, family, x, tuple(names), tuple(layers), steps, burn)

    metric_names = [f"metrics/{m}" for m in METRICS]
    groups = [
        group(
            "metrics",
            "invariant",
            np.ascontiguousarray(np.stack([run[m][:] for m in metric_names], 1), np.float32),
            metric_names,
            ["training"] * len(METRICS),
            run.metric_steps,
            burn_in,
        )
    ]
    norms = run.probe_names["weight_norms"]
    groups.append(
        group(
            "weight norms",
            "invariant",
            _columns(run["weight_norms"][:], slice(None)),
            norms,
            [n[5:-1].split("/")[0] for n in norms],
            probe_steps,
            probe_burn,
        )
    )
    acts = run.probe_names["activations/summary"]
    groups.append(
        group(
            "activations",
            "invariant",
            _columns(run["activations/summary"][:], slice(None)),
            acts,
            [n.split("/")[0] for n in acts],
            probe_steps,
            probe_burn,
        )
    )
    params = run["params"][:]
    n_out = run.layout.param_shapes[f"{out_layer}/bias"][0]
    bias_names = [f"{out_layer}/bias[{k}]" for k in range(n_out)]
    groups.append(
        group(
            "output biases",
            "invariant",
            _columns(params, run.index("params", bias_names)),
            bias_names,
            [out_layer] * n_out,
            probe_steps,
            probe_burn,
        )
    )
    stats, names, layers = _unit_statistics(run, params, n_hidden)
    groups.append(
        group("unit statistics", "invariant", _columns(stats, slice(None)), names, layers, probe_steps, probe_burn)
    )
    del stats
    cols, alignment = _alignment(run, diverged, settings)
    if cols is not None:
        names = run.probe_names["params"]
        layers = [n.split("[")[0] for n in names]
        for kind, fam in (("params", "parameters"), ("updates", "updates")):
            x = params if kind == "params" else run["updates"][:]
            aligned = np.take_along_axis(x, cols[:, None, :], axis=-1)
            groups.append(group(fam, fam, _columns(aligned, slice(None)), names, layers, probe_steps, probe_burn))
            del x, aligned
        if alignment["reference_member"] is not None:
            after, before = groups[-2].x[~diverged, :, -1], params[~diverged, -1]
            alignment["final_variance_ratio"] = float(np.var(after, axis=0).mean() / np.var(before, axis=0).mean())
    return groups, alignment, diverged


# ------------------------------------------------------------------------------------------------
# Analysis


class GroupResult(NamedTuple):
    """Verdicts of one group: ``result`` over its P observables, ``qvalue`` float ``[P]`` the
    Benjamini-Hochberg adjusted distribution-check p-values and ``mean_qvalue`` the adjusted
    mean-test p-values (within the group's family), and, for the :data:`INVARIANT_GROUPS`, the
    variance-scaling and Omega(t) curves after burn-in (else None)."""

    group: ObservableGroup
    result: ErgodicityResult
    qvalue: np.ndarray
    scaling: VarianceScaling | None
    omega: FluctuationMetric | None
    mean_qvalue: np.ndarray | None = None


class Analysis(NamedTuple):
    """Everything the summary, figures and report are made from."""

    results: dict
    alignment: dict
    diverged: np.ndarray
    test_accuracy: MemberSummary
    burn_in: int
    alpha: float


def _assess_blocks(x: np.ndarray, burn: int, alpha: float, bar, spacing: int = 1) -> ErgodicityResult:
    """:func:`assess_many` over ``x: [S, P, T]`` in blocks of observables (same numbers as one call:
    its bootstrap draws are shared across observables); reasons in training steps."""
    parts = []
    for i in range(0, x.shape[1], _BLOCK):
        parts.append(assess_many(x[:, i : i + _BLOCK], burn_in=burn, alpha=alpha, rng=0, spacing=spacing))
        bar.update(parts[-1].slope.shape[0])
    fields = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts])
        for f in dataclasses.fields(ErgodicityResult)
        if f.name not in ("n_steps", "alpha")
    }
    return ErgodicityResult(**fields, n_steps=parts[0].n_steps, alpha=parts[0].alpha)


def analyse(
    groups: list[ObservableGroup],
    alignment: dict,
    diverged: np.ndarray,
    test_accuracy: np.ndarray,
    settings: ErgodicitySettings,
    burn_in: int,
    *,
    progress: bool = True,
) -> Analysis:
    """Ergodicity verdicts of every observable (float64 numerics of :mod:`rvsp_jax.analysis`)."""
    total = sum(g.x.shape[1] for g in groups)
    assessed = {}
    with tqdm(
        total=total, desc="ergodicity analysis", unit="obs", disable=not progress_enabled(progress), dynamic_ncols=True
    ) as bar:
        for g in groups:
            assessed[g.name] = _assess_blocks(g.x, g.burn, settings.alpha, bar, g.every)
    qvalues = {"ks_pvalue": {}, "mean_pvalue": {}}
    for family in dict.fromkeys(g.family for g in groups):
        members = [g for g in groups if g.family == family]
        for field, out in qvalues.items():
            q = _bh(np.concatenate([getattr(assessed[g.name], field) for g in members]), settings.alpha)
            for g, part in zip(members, np.split(q, np.cumsum([g.x.shape[1] for g in members])[:-1])):
                out[g.name] = part
    results = {}
    for g in groups:
        curves = g.name in INVARIANT_GROUPS
        window = g.x[..., g.burn :]
        results[g.name] = GroupResult(
            g,
            assessed[g.name],
            qvalues["ks_pvalue"][g.name],
            variance_scaling(window, n_boot=0) if curves else None,
            fluctuation_metric(window) if curves else None,
            qvalues["mean_pvalue"][g.name],
        )
    test = np.where(diverged, np.nan, np.asarray(test_accuracy, np.float64))
    return Analysis(results, alignment, diverged, across_members(test), burn_in, settings.alpha)


def _bh(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaN (test not run) stays NaN and does not count."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = fdr_bh(p[ok], alpha).pvalues_adjusted
    return q


def _median(v) -> float | None:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _counts(verdicts) -> dict:
    v = np.asarray(verdicts)
    return {k: int((v == k).sum()) for k in VERDICT_COLOURS}


def _group_numbers(gr: GroupResult, m: np.ndarray, alpha: float, every: int) -> dict:
    """Verdict counts and effect sizes of the observables ``m`` (bool mask) of a group."""
    res = gr.result
    v = res.verdict[m]
    non = v == "non-ergodic"
    inc = (v == "inconclusive") & (res.steps_needed[m] > 0)
    return {
        "n": int(m.sum()),
        **_counts(v),
        "non_ergodic_surviving_bh": int(
            (non & ((gr.mean_qvalue[m] < 0.8 * alpha) | (gr.qvalue[m] < 0.2 * alpha))).sum()
        ),
        "median_ratio": _median(res.ratio[m]),
        "median_ratio_non_ergodic": _median(res.ratio[m][non]),
        "median_var_mu_share_non_ergodic": _median((res.var_mu / res.gamma0)[m][non]),
        "median_mde_share_ergodic": _median((res.mde_var_mu / res.gamma0)[m][v == "ergodic"]),
        "median_tau_steps": _median(res.tau_int[m] * every),
        "steps_needed_median": _median(res.steps_needed[m][inc].astype(np.float64) * every),
        "steps_needed_max": int(res.steps_needed[m][inc].astype(np.int64).max() * every) if inc.any() else None,
        "ks_rejections": int((res.ks_pvalue[m] < 0.2 * alpha).sum()),
        "ks_rejections_bh": int((gr.qvalue[m] < 0.2 * alpha).sum()),
    }


def _layer_rows(gr: GroupResult, alpha: float) -> dict:
    """Per-layer verdict counts and effect sizes of a group summarised per layer."""
    layers = np.asarray(gr.group.layers)
    return {
        layer: _group_numbers(gr, layers == layer, alpha, gr.group.every) for layer in dict.fromkeys(gr.group.layers)
    }


def _observable(gr: GroupResult, j: int) -> dict:
    res, group, every = gr.result, gr.group, gr.group.every
    return {
        "group": group.name,
        "verdict": str(res.verdict[j]),
        "reason": str(res.reason[j]),
        "ratio": res.ratio[j],
        "ratio_ci": [res.ratio_lo[j], res.ratio_hi[j]],
        "mean_pvalue": res.mean_pvalue[j],
        "mean_qvalue_bh": gr.mean_qvalue[j],
        "var_mu": res.var_mu[j],
        "var_mu_ci": [res.var_mu_lo[j], res.var_mu_hi[j]],
        "mde_var_mu": res.mde_var_mu[j],
        "gamma0": res.gamma0[j],
        "lrv": res.lrv[j],
        "drift": res.drift[j],
        "drift_pvalue": res.drift_pvalue[j],
        "steps_needed": int(res.steps_needed[j]) * every,
        "slope": res.slope[j],
        "slope_ci": [res.slope_lo[j], res.slope_hi[j]],
        "omega_exponent": res.omega_exponent[j],
        "ks_stat": res.ks_stat[j],
        "ks_pvalue": res.ks_pvalue[j],
        "ks_qvalue_bh": gr.qvalue[j],
        "ks_decisive": bool(res.ks_decisive[j]),
        "tau_int": res.tau_int[j],
        "tau_int_steps": res.tau_int[j] * every,
        "tau_resolved": bool(res.tau_resolved[j]),
        "batch_length": int(res.batch_length[j]),
        "n_batches": int(res.n_batches[j]),
        "fit_start": res.fit_start[j],
        "n_members": res.n_members[j],
        "n_diverged": res.n_diverged[j],
        "n_steps": res.n_steps,
        "step_spacing": every,
    }


def summarize(analysis: Analysis, config: TrainConfig, settings: ErgodicitySettings, probes: ProbeConfig) -> dict:
    """``summary.json`` content (pure numbers): per observable of the invariant groups and the unit
    statistics its verdict and numbers; per layer of the unit statistics, parameters and updates the
    verdict counts; per parameter (columns) its verdict, slope and p-values."""
    observables, layers, per_parameter, counts, groups = {}, {}, {}, {}, {}
    for name, gr in analysis.results.items():
        res = gr.result
        counts[name] = _counts(res.verdict)
        groups[name] = _group_numbers(gr, np.ones(res.verdict.shape, bool), analysis.alpha, gr.group.every)
        if gr.group.family == "invariant":
            for j, obs in enumerate(gr.group.names):
                observables[obs] = _observable(gr, j)
        if name not in INVARIANT_GROUPS:
            layers[name] = _layer_rows(gr, analysis.alpha)
        if gr.group.family != "invariant":
            per_parameter[name] = {
                "names": list(gr.group.names),
                "verdict": res.verdict.tolist(),
                "ratio": res.ratio,
                "mean_pvalue": res.mean_pvalue,
                "mean_qvalue_bh": gr.mean_qvalue,
                "var_mu": res.var_mu,
                "mde_var_mu": res.mde_var_mu,
                "gamma0": res.gamma0,
                "steps_needed": res.steps_needed * gr.group.every,
                "slope": res.slope,
                "ks_pvalue": res.ks_pvalue,
                "ks_qvalue_bh": gr.qvalue,
                "tau_int_steps": res.tau_int * gr.group.every,
            }
    n = len(analysis.diverged)
    return {
        "experiment": EXPERIMENT,
        "question": "is one training run representative of all runs (time average = ensemble average)?",
        "config": config.to_dict(),
        "settings": settings.to_dict(),
        "probes": {
            "kinds": probes.to_dict()["probes"],
            "every": probes.every,
            "batch": probes.batch,
            "n_parameters_recorded": len(probes.index.split()),
        },
        "defaults": {
            **TRAIN_DEFAULTS,
            "burn_in": "steps // 4",
            **{f.name: f.default for f in dataclasses.fields(ErgodicitySettings) if f.name != "burn_in"},
        },
        "steps": len(analysis.results["metrics"].group.steps),
        "burn_in": analysis.burn_in,
        "alpha": analysis.alpha,
        "n_members": n,
        "n_diverged": int(analysis.diverged.sum()),
        "diverged_members": np.flatnonzero(analysis.diverged).tolist(),
        "test_accuracy": analysis.test_accuracy._asdict(),
        "alignment": analysis.alignment,
        "verdict_counts": counts,
        "groups": groups,
        "observables": observables,
        "layers": layers,
        "per_parameter": per_parameter,
    }


# ------------------------------------------------------------------------------------------------
# Figures


def _headline(analysis: Analysis) -> list[tuple[GroupResult, int]]:
    """The four observables of the trajectory and histogram figures: loss, gradient norm, first
    kernel's norm, first output bias."""
    picks = [
        ("metrics", "metrics/loss"),
        ("metrics", "metrics/grad_norm"),
        ("weight norms", "norm(Dense_0/kernel)"),
        ("output biases", None),
    ]
    out = []
    for group, name in picks:
        gr = analysis.results[group]
        out.append((gr, 0 if name is None else gr.group.names.index(name)))
    return out


def _shown(analysis: Analysis, k: int) -> np.ndarray:
    return np.flatnonzero(~analysis.diverged)[:k]


def _display(steps: np.ndarray, x: np.ndarray, points: int = 300):
    """Block means of ``x: [..., T]`` so that at most ``points`` remain (display only)."""
    k = max(1, -(-len(steps) // points))
    n = len(steps) // k * k
    block = lambda a: a[..., :n].reshape(a.shape[:-1] + (n // k, k)).mean(-1)  # noqa: E731
    return block(steps.astype(float)), block(x)


def _verdict_title(gr: GroupResult, j: int) -> str:
    res = gr.result
    return f"{gr.group.names[j]}: {res.verdict[j]}"


def figure_trajectories(analysis: Analysis, shown: int = 3):
    """Ensemble mean with its 5-95% member band, a few members and their time averages, per
    headline observable."""
    fig, axes = plots.subplots(2, 2, width="double", height=4.4)
    members = _shown(analysis, shown)
    for ax, (gr, j) in zip(axes.flat, _headline(analysis)):
        g = gr.group
        x = g.x[:, j].astype(np.float64)
        ok = np.isfinite(x).all(-1)
        t, xd = _display(g.steps, x)
        lo, hi = np.nanpercentile(xd[ok], [5, 95], axis=0)
        ax.axvspan(0, g.steps[g.burn], color="0.93", linewidth=0, label="burn-in")
        plots.plot_band(ax, t, xd[ok].mean(0), lo, hi, label="ensemble mean, 5-95% band", color=plots.PALETTE[0])
        t0, t1 = g.steps[g.burn], g.steps[-1]
        for c, s in zip(plots.PALETTE[1:], members):
            ax.plot(t, xd[s], color=c, linewidth=0.5, alpha=0.8, label=f"member {s}")
            ax.hlines(x[s, g.burn :].mean(), t0, t1, colors=c, linestyles="--", linewidth=0.9)
        ax.hlines(
            x[ok][:, g.burn :].mean(), t0, t1, colors="k", linestyles=":", linewidth=1.0, label="ensemble time average"
        )
        ax.set(xlabel="step", ylabel=g.names[j], title=_verdict_title(gr, j))
    axes.flat[0].legend(loc="upper right")
    fig.suptitle(
        "Trajectories (members drawn as block means of at most 300 points; dashed: time averages after burn-in)",
        fontsize=8,
    )
    return fig


class _PlainLog(ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.1, 2, 30), on the ticks matplotlib would label."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _curve_panels(analysis: Analysis, kind: str):
    fig, axes = plots.subplots(2, 2, width="double", height=4.4)
    for ax, name in zip(axes.flat, INVARIANT_GROUPS):
        gr = analysis.results[name]
        every = gr.group.every
        if kind == "scaling":
            x_axis = gr.scaling.windows.astype(float) * every
            y = gr.scaling.variance
        else:
            T = gr.omega.omega.shape[-1]
            idx = np.unique(np.round(np.geomspace(1, T, 200)).astype(int)) - 1
            x_axis = (idx + 1.0) * every
            y = gr.omega.omega[:, idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = y / y[:, :1]
        good = np.isfinite(rel).all(-1) & (rel > 0).all(-1)
        few = good.sum() <= 6
        for j in np.flatnonzero(good):
            ax.plot(
                x_axis,
                rel[j],
                linewidth=0.7,
                alpha=0.8 if few else 0.4,
                label=gr.group.names[j] if few else None,
                color=None if few else plots.PALETTE[5],
            )
        if good.any():
            gm = np.exp(np.log(rel[good]).mean(0))
            plots.loglog_with_reference(
                ax,
                x_axis,
                gm,
                -1.0,
                label="geometric mean",
                color="k" if few else plots.PALETTE[0],
                ref_label="slope -1 (ergodic)",
            )
        else:
            ax.text(0.5, 0.5, "no fluctuating observable", ha="center", transform=ax.transAxes)
        ylabel = "Var(time average), relative" if kind == "scaling" else "Omega(t), relative"
        xlabel = "window W (steps)" if kind == "scaling" else "steps averaged t"
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(_PlainLog())
            axis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
        ax.legend(loc="best", fontsize=6)
    return fig


def figure_variance_scaling(analysis: Analysis):
    """Variance across members of the W-step time average against W (log-log, slope -1 reference)."""
    return _curve_panels(analysis, "scaling")


def figure_omega(analysis: Analysis):
    """Thirumalai-Mountain fluctuation metric Omega(t) (log-log, slope -1 reference)."""
    return _curve_panels(analysis, "omega")


def figure_histograms(analysis: Analysis, cross_steps: int = 8):
    """One member's time samples after burn-in against the ensemble cross-sections at
    ``cross_steps`` steps spread over the same window (what the distribution check compares)."""
    fig, axes = plots.subplots(2, 2, width="double", height=4.4)
    for ax, (gr, j) in zip(axes.flat, _headline(analysis)):
        g, res = gr.group, gr.result
        window = g.x[:, j, g.burn :].astype(np.float64)
        ok = np.isfinite(window).all(-1)
        if not ok.any():  # every member diverged or overflowed in this observable
            ax.text(
                0.5,
                0.5,
                f"{g.names[j]}:\nno member with finite values",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=7,
            )
            ax.set_axis_off()
            continue
        member = int(np.flatnonzero(ok)[0])
        at = np.unique(np.linspace(0, window.shape[-1] - 1, cross_steps).round().astype(int))
        cross = window[ok][:, at]
        plots.hist_compare(
            ax,
            window[member],
            cross,
            labels=(
                f"member {member}: {window.shape[-1]} steps",
                f"ensemble: {int(ok.sum())} members x {len(at)} steps",
            ),
            bins=40,
        )
        p = res.ks_pvalue[j]
        ax.set(
            xlabel=g.names[j],
            ylabel="density",
            title=f"{_verdict_title(gr, j)}\nKS p = {fmt(p, 2)}, BH q = {fmt(gr.qvalue[j], 2)}",
        )
        ax.legend(loc="upper right")
    return fig


def _fixed(v: float) -> str:
    return f"{v:.2f}" if np.isfinite(v) else "—"


def _interval(v: float, lo: float, hi: float) -> str:
    return f"{_fixed(v)} [{_fixed(lo)}, {_fixed(hi)}]" if np.isfinite(v) else "—"


def _table_cells(gr: GroupResult, j: int) -> list[str]:
    res, every = gr.result, gr.group.every
    need = int(res.steps_needed[j]) * every
    return [
        str(res.verdict[j]),
        _interval(res.ratio[j], res.ratio_lo[j], res.ratio_hi[j]),
        fmt(res.mean_pvalue[j], 2),
        _share(
            res.var_mu[j] if res.verdict[j] == "non-ergodic" else res.mde_var_mu[j],
            res.gamma0[j],
            "" if res.verdict[j] == "non-ergodic" else "< ",
        ),
        _signed_pct(res.drift[j]),
        fmt(res.ks_pvalue[j], 2) + ("" if res.ks_decisive[j] else "*"),
        fmt(res.tau_int[j] * every, 3) + ("" if res.tau_resolved[j] else "+"),
        f"{need:,}" if need else "—",
    ]


def _share(v: float, gamma0: float, prefix: str = "") -> str:
    return f"{prefix}{v / gamma0:.2%}" if np.isfinite(v) and gamma0 > 0 else "—"


def _signed_pct(v: float) -> str:
    return f"{v:+.0%}" if np.isfinite(v) else "—"


TABLE_COLUMNS = (
    "verdict",
    "ratio [CI]",
    "mean p",
    "var(mu) / var",
    "spread drift",
    "KS p",
    "tau (steps)",
    "steps needed",
)
LAYER_COLUMNS = (
    "n",
    "ergodic",
    "non-ergodic",
    "non-stat.",
    "inconcl.",
    "non-erg. (BH)",
    "median ratio",
    "median steps needed",
)


def _invariant_index(analysis: Analysis) -> list[tuple[GroupResult, int]]:
    return [
        (analysis.results[name], j) for name in INVARIANT_GROUPS for j in range(len(analysis.results[name].group.names))
    ]


def _invariant_rows(analysis: Analysis):
    rows, cells = [], []
    for name in INVARIANT_GROUPS:
        gr = analysis.results[name]
        for j, obs in enumerate(gr.group.names):
            rows.append(obs)
            cells.append(_table_cells(gr, j))
    return rows, cells


def _layer_table(summary: dict):
    rows, cells = [], []
    for group, layers in summary["layers"].items():
        for layer, r in layers.items():
            rows.append(layer if group == "unit statistics" else f"{layer} ({group})")
            need = r["steps_needed_median"]
            cells.append(
                [
                    r["n"],
                    r["ergodic"],
                    r["non-ergodic"],
                    r["non-stationary"],
                    r["inconclusive"],
                    r["non_ergodic_surviving_bh"],
                    fmt(r["median_ratio"], 3),
                    f"{need:,.0f}" if need else "—",
                ]
            )
    return rows, cells


def figure_verdicts(analysis: Analysis):
    """Verdict table of the permutation-invariant observables."""
    rows, cells = _invariant_rows(analysis)
    fig, ax = plots.subplots(width="double", height=0.6 + 0.16 * len(rows))
    table = plots.verdict_table(ax, rows, TABLE_COLUMNS, cells, VERDICT_COLOURS)
    table.auto_set_column_width(list(range(-1, len(TABLE_COLUMNS))))
    return fig


def figure_verdicts_by_layer(summary: dict):
    """Verdict counts per layer: sorted unit statistics, aligned parameters and updates."""
    rows, cells = _layer_table(summary)
    fig, ax = plots.subplots(width="double", height=0.6 + 0.16 * max(1, len(rows)))
    if rows:
        plots.verdict_table(ax, rows, LAYER_COLUMNS, cells)
    else:
        ax.set_axis_off()
    return fig


class Drawn(NamedTuple):
    """What the figures are drawn from: the analysis, its summary and the settings."""

    analysis: Analysis
    summary: dict
    settings: ErgodicitySettings


FIGURES = {
    "trajectories": (
        "Ensemble mean with its 5-95% band across members, a few members (block means) and "
        "their time averages after burn-in (dashed), against the ensemble's time average "
        "(dotted).",
        lambda d: figure_trajectories(d.analysis, d.settings.shown),
    ),
    "variance_scaling": (
        "Variance across members of the W-step time average against W, relative to the "
        "shortest window (one recorded step), after burn-in; dashed: slope -1, the ergodic "
        "short-memory reference (a plateau means member-specific time averages). Descriptive:"
        " the verdict rests on the long-run-variance ANOVA.",
        lambda d: figure_variance_scaling(d.analysis),
    ),
    "omega": (
        "Fluctuation metric Omega(t) (spread of the members' running time averages) relative "
        "to its first value, after burn-in; dashed: slope -1 (ergodic).",
        lambda d: figure_omega(d.analysis),
    ),
    "histograms": (
        "One member's values over the analysed window against the ensemble's cross-sections "
        "at 8 steps spread over the same window (an illustration of what the distribution "
        "check compares; the check itself pools other members' values from every one of a "
        "member's thinned steps).",
        lambda d: figure_histograms(d.analysis),
    ),
    "verdicts": (
        "Verdict per permutation-invariant observable: ratio of the between-member variance "
        "of the time average to its ergodic expectation with its interval (1 = ergodic), "
        "mean-test p-value, member-specific variance as a share of the observable's variance "
        "(non-ergodic: estimated; otherwise '<' the smallest share detectable with 80% "
        "power), change of the members' spread over the window, distribution-check p-value (*"
        " not decisive: window < 50 tau), integrated autocorrelation time in training steps "
        "(+ a lower bound), steps that would decide an inconclusive one.",
        lambda d: figure_verdicts(d.analysis),
    ),
    "verdicts_by_layer": (
        "Verdict counts per layer: sorted per-unit statistics and (aligned) per-parameter "
        "trajectories; non-ergodic ones that survive a Benjamini-Hochberg adjustment within "
        "the family; median ratio; median training steps that would decide the inconclusive "
        "ones.",
        lambda d: figure_verdicts_by_layer(d.summary),
    ),
}
"""name -> (caption, maker) of every figure (:mod:`rvsp_jax.studies.figures`); a maker draws from
a :class:`Drawn`."""


def write_figures(analysis: Analysis, summary: dict, folder: Path, settings: ErgodicitySettings) -> list[str]:
    """Render every figure of :data:`FIGURES` into ``folder`` (PNG and PDF); returns their names."""
    return list(save_figures(FIGURES, Drawn(analysis, summary, settings), folder))


# ------------------------------------------------------------------------------------------------
# Report


def _count_text(c: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in c.items() if k in VERDICT_COLOURS)


def _pct_text(v) -> str:
    return "—" if v is None else f"{v:.2%}"


def _steps_text(v) -> str:
    return "—" if v is None else f"{v:,.0f}"


def group_sentence(name: str, g: dict) -> str:
    """One plain sentence per observable group: counts of each verdict, effect sizes, steps."""
    parts = [f"**{name}** ({g['n']}): {_count_text(g)}."]
    if g["non-ergodic"]:
        parts.append(
            f"Non-ergodic ones: time averages spread {_fixed(g['median_ratio_non_ergodic'])}x "
            f"(median) as much as ergodic fluctuations allow; member-specific means carry "
            f"a median {_pct_text(g['median_var_mu_share_non_ergodic'])} of the "
            f"observable's variance ({g['non_ergodic_surviving_bh']} of {g['non-ergodic']} "
            "survive a Benjamini-Hochberg adjustment)."
        )
    if g["ergodic"]:
        parts.append(
            f"Ergodic ones exclude member-specific means above a median "
            f"{_pct_text(g['median_mde_share_ergodic'])} of the variance (80% power)."
        )
    if g["inconclusive"] and g["steps_needed_median"]:
        parts.append(
            f"Inconclusive ones change too slowly to decide: they need a median "
            f"{_steps_text(g['steps_needed_median'])} analysed training steps (up to "
            f"{_steps_text(g['steps_needed_max'])}; lower bounds)."
        )
    if g["non-stationary"]:
        parts.append(
            "Non-stationary ones: the members' spread around the ensemble mean still grows or shrinks in the window."
        )
    return " ".join(parts)


def answer(summary: dict) -> str:
    """The headline answer in a few sentences, from the per-observable verdicts."""
    obs = {k: v for k, v in summary["observables"].items() if v["group"] in INVARIANT_GROUPS}
    by = {v: [k for k, o in obs.items() if o["verdict"] == v] for v in VERDICT_COLOURS}

    def listed(verdict: str) -> str:
        names = by[verdict]
        shown = f" ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})" if names else ""
        return f"{len(names)} {verdict}{shown}"

    n = len(obs)
    text = [
        f"**Answer.** Of {n} permutation-invariant observables, {listed('ergodic')}, "
        f"{listed('non-ergodic')}, {listed('non-stationary')}, {listed('inconclusive')}."
    ]
    if by["non-ergodic"]:
        text.append(
            "For the non-ergodic ones one run is not representative of the ensemble: its "
            "time average differs from the ensemble's by more than its own fluctuations "
            "explain (or its distribution over time does)."
        )
    if by["ergodic"]:
        text.append(
            "For the ergodic ones one run's time average stands for the ensemble's, up to "
            "the smallest member-specific offset the test can see (table below)."
        )
    if by["non-stationary"]:
        text.append(
            "The non-stationary ones are still changing in the analysed window (their "
            "spread across members grows or shrinks), so their time average has no fixed "
            "value to agree on yet."
        )
    need = [obs[k]["steps_needed"] for k in by["inconclusive"] if obs[k]["steps_needed"]]
    analysed = summary["steps"] - summary["burn_in"]
    if need:
        text.append(
            f"The inconclusive ones change too slowly for {analysed:,} analysed steps: "
            f"deciding them needs a median {np.median(need):,.0f} analysed steps (a lower "
            "bound); train longer (--steps) or lower --burn-in."
        )
    undecided = len(by["inconclusive"]) + len(by["non-stationary"])
    if undecided > n / 2:
        text.append(
            f"So at this size the question is mostly undecided: {undecided} of {n} "
            "observables are still drifting or change more slowly than the window "
            "resolves."
        )
        if need and np.median(need) > 4 * analysed:
            text.append(
                f"Their steps needed are {np.median(need) / analysed:.0f}x the analysed "
                "window; for an observable that is still drifting this lower bound grows "
                "with the window (its correlation time is as long as whatever window it is "
                "given), so a longer run alone may not decide it: it has not reached a "
                "stationary regime on this time scale."
            )
    return " ".join(text)


READING = [
    "**ergodic**: the members' time averages differ from each other only as much as each member's "
    "own fluctuations predict (the ratio in the table is near 1). The verdict says how small a "
    'member-specific offset it rules out: "no member-specific mean larger than sd ..." is the '
    "offset spread that would have been detected 80% of the time.",
    "**non-ergodic**: the time averages differ more than that (ratio above 1, with its interval): "
    "each run settles around its own value, so one run does not stand for the ensemble. Rarely, "
    "the means agree but the distribution over time differs (the distribution check; only trusted "
    "when the window spans 50 autocorrelation times).",
    "**non-stationary**: the spread of the members around the ensemble mean grows or shrinks by "
    '25% or more over the window (and significantly so). The question "does the time average '
    'converge to the ensemble average" presumes a window in which nothing drifts; choose a later '
    "window (--burn-in) or train longer.",
    "**inconclusive**: the data cannot decide. Usually the observable changes so slowly "
    "(autocorrelation time tau) that the window holds too few independent stretches; the verdict "
    "then says how many steps would decide it (3 batches of at least 6 tau). Also: too few members, "
    "too few steps, or no fluctuation at all.",
    "How much to trust them: on processes whose answer is known (white noise, AR(1), slow "
    "switching, shared trends; 256 members, 500-8,000 steps) the rate of a wrong non-ergodic "
    "verdict stays at about alpha, and member-specific means are found as often as by an ideal "
    "ANOVA on white noise (docs/calibration.md, `python -m benchmarks.calibration`).",
]


def _alignment_text(alignment: dict) -> str:
    if "units_moved_fraction" not in alignment:
        return alignment["method"]
    return (
        f"{alignment['method']}; {alignment['units_moved_fraction']:.0%} of the other members' "
        "hidden units moved, and the across-member variance of the final recorded parameters "
        f"fell to {alignment['final_variance_ratio']:.2f}x its unaligned value"
    )


def write_report(analysis: Analysis, summary: dict, folder: Path, command: str | None) -> Path:
    """``report.md``: findings as numbers, the tables, the figures, timings and the configuration."""
    cfg, s = summary["config"], summary["settings"]
    counts = summary["verdict_counts"]
    invariant = {k: sum(counts[g][k] for g in INVARIANT_GROUPS) for k in VERDICT_COLOURS}
    n_inv = sum(invariant.values())
    rep = Report("Ergodicity: is one training run representative of all runs?")
    rep.text(
        f"{summary['n_members']} members of the {'-'.join(map(str, [784, *cfg['widths'], 10]))} "
        f"{cfg['activation']} MLP trained for {summary['steps']:,} steps ({cfg['optimizer']}, lr "
        f"{cfg['lr']}, batch {cfg['batch_size']}, {cfg['dataset']}, vary={cfg['vary']}); the first "
        f"{summary['burn_in']:,} steps are burn-in. For each observable the question is whether a "
        "member's time average equals the ensemble average. It is answered on the deviations of "
        "each member from the ensemble-mean path (a trend all members share cancels): do the "
        "members' time averages differ by more than each member's own, autocorrelated, "
        "fluctuations explain (a long-run-variance ANOVA)? Is the window stationary (does the "
        "members' spread drift)? Does one member's distribution over time match the ensemble's "
        "(a KS check)?"
    )
    rep.section("Findings")
    rep.text(answer(summary))
    acc = analysis.test_accuracy
    rep.bullets(
        [
            f"Permutation-invariant observables ({n_inv}): {_count_text(invariant)}.",
            *(group_sentence(g, summary["groups"][g]) for g in summary["groups"]),
            f"Diverged members: {summary['n_diverged']} of {summary['n_members']} (excluded from every statistic).",
            f"Final test accuracy, mean over members with 95% t-interval: {fmt_ci(acc, 4)}.",
            f"Per-parameter alignment: {_alignment_text(analysis.alignment)}.",
            f"Verdicts use raw levels (alpha = {summary['alpha']}: 0.8 alpha for the mean test, "
            "0.2 alpha for the distribution check); mean-test and distribution-check p-values are "
            "also Benjamini-Hochberg adjusted within each family (invariant observables, parameters, "
            "updates), and the non-ergodic verdicts that survive are counted per group and layer.",
        ]
    )
    rep.section("How to read the verdicts")
    rep.bullets(READING)
    rep.section("Verdicts per observable")
    rows, cells = _invariant_rows(analysis)
    rep.table(["observable", *TABLE_COLUMNS], [[r, *c] for r, c in zip(rows, cells)])
    rep.text(
        "Ratio: between-member variance of the time average over what ergodic fluctuations "
        "predict, with its 1 - alpha interval. Each verdict's reason, in words, follows; all "
        "numbers are in summary.json (`observables.<name>`)."
    )
    rep.bullets([f"{r}: {gr.result.reason[j]}" for r, (gr, j) in zip(rows, _invariant_index(analysis))])
    rep.section("Verdicts per layer")
    rows, cells = _layer_table(summary)
    if rows:
        rep.table(["layer", *LAYER_COLUMNS], [[r, *c] for r, c in zip(rows, cells)])
    if not analysis.alignment["aligned"]:
        rep.text("Per-parameter analysis skipped: " + analysis.alignment["method"] + ".")
    rep.section("Figures")
    for name, caption in captions(FIGURES).items():
        rep.figure(name, caption)
    rep.section("Timings")
    t = summary["timings"]
    rep.table(["stage", "seconds"], [[k.removesuffix("_s"), fmt(v, 3)] for k, v in t.items()])
    rep.section("Configuration")
    rep.text(
        f"Defaults of the command: {TRAIN_DEFAULTS['seeds']} members, "
        f"{TRAIN_DEFAULTS['steps']} steps, burn-in a quarter of the steps, probes every "
        f"{ErgodicitySettings.probe_every} steps, vary=both, sgd lr 0.1, sigmoid, --align "
        f"weights. This run: probes {summary['probes']['kinds']} every "
        f"{summary['probes']['every']} steps ({summary['probes']['n_parameters_recorded']} "
        f"parameters), burn-in {summary['burn_in']}, align {s['align']}."
    )
    rep.config({"train": cfg, "ergodicity": s}, command)
    return rep.write(folder)


# ------------------------------------------------------------------------------------------------
# The whole study


def record_runs(
    config: TrainConfig,
    settings: ErgodicitySettings,
    out,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> Run:
    """Train and record (or, with ``resume``, continue or reuse) the run in ``out``; a burn-in that
    leaves too few recorded steps is refused before anything is trained."""
    data = dataset if dataset is not None else load(config.dataset, data_dir=config.data_dir)
    burn_in_steps(settings, config.total_steps(int(data.train_labels.shape[0])))
    return record.run(
        config,
        probe_config(config, settings),
        Path(out),
        resume=resume,
        overwrite=overwrite,
        dataset=data,
        experiment=EXPERIMENT,
        command=command,
        progress=progress,
    )


def write_results(
    run: Run,
    settings: ErgodicitySettings,
    folder,
    *,
    command: str | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    training_s: float | None = None,
) -> dict:
    """Analyse the recorded ``run`` (a plain run, or one grid point of a sweep) and write
    ``summary.json``, ``report.md`` and ``figures/`` into ``folder``; returns the summary. Timings
    of analysis, figures and report are measured separately and stored in the summary."""
    folder = Path(folder)
    config = run.config
    burn_in = burn_in_steps(settings, int(run.manifest["total_steps"]))
    probes = probe_config(config, settings)
    t1 = time.perf_counter()
    groups, alignment, diverged = load_groups(run, settings, burn_in)
    if diverged.all():
        raise ValueError(
            f"every member of {run.path} diverged (non-finite loss or parameters), so "
            "there is nothing to analyse; lower --lr"
        )
    analysis = analyse(groups, alignment, diverged, run.final().test_accuracy, settings, burn_in, progress=progress)
    summary = summarize(analysis, config, settings, probes)
    t2 = time.perf_counter()
    write_figures(analysis, summary, folder / "figures", settings)
    t3 = time.perf_counter()
    summary["timings"] = {
        "training_s": training_s,
        "training_recorded_s": run.manifest.get("timing", {}).get("seconds"),
        "analysis_s": t2 - t1,
        "figures_s": t3 - t2,
    }
    write_report(analysis, summary, folder, command)
    summary["timings"]["report_s"] = time.perf_counter() - t3
    write_summary(folder, summary)
    return summary


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`): per observable
    group, the fraction of its processes given each verdict, and the median variance ratio
    (between-member variance of the time average over its ergodic expectation)."""
    groups = summary["groups"]
    share = lambda g, v: groups[g][v] / groups[g]["n"] if groups[g]["n"] else float("nan")  # noqa: E731
    return {
        **{f"{v} (fraction)": {g: share(g, v) for g in groups} for v in VERDICT_COLOURS},
        "variance ratio (median)": {g: groups[g]["median_ratio"] for g in groups},
    }


def manifest_entry(settings: ErgodicitySettings, manifest: dict) -> dict:
    """What the run folder's ``manifest["study"]`` records beyond the settings (see
    :mod:`rvsp_jax.studies.runner`): the burn-in in steps."""
    return {"burn_in": burn_in_steps(settings, int(manifest["total_steps"]))}
