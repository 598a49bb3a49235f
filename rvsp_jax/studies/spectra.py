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

import dataclasses
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.present import plots
from rvsp_jax.io import record
from rvsp_jax.io import store
from rvsp_jax.analysis import (
    STATIONARITY_VERDICTS, across_members, acf, adf, band_power_ratio, fdr_bh, is_constant, kpss,
    ljung_box, measure_drift, periodogram, spectral_flatness, spectral_slope, stationarity_verdict,
    stationarity_verdicts, welch)
from rvsp_jax.analysis.spectral import SHAPE_VERDICTS, spectral_shape
from rvsp_jax.config import TrainConfig, opt
from rvsp_jax.training.probes import ProbeConfig
from rvsp_jax.studies import per_point
from rvsp_jax.present.report import Report, fmt, fmt_ci, pct, progress_enabled, proportion_summary, write_summary

EXPERIMENT = "spectra"
TRAIN_DEFAULTS = {"seeds": 32, "steps": 4000, "chunk": 500}
"""Defaults of this experiment's training flags: 32 members, 4,000 steps (2.1 epochs) of the
sigmoid 784-16-16-10 network with SGD at lr 0.1 (25 s in all, measured on 2 shared CPU cores)."""
PHASES = ("early", "middle", "late")
STATIONARY_ACCEPT = 0.8
"""The analysed window is called stationary when at least this fraction of the testable processes
pass ADF + KPSS (raw, level alpha) ..."""
DRIFT_ACCEPT = 0.5
"""... and the median |relative variance drift| over 4 sub-windows is at most this."""
SHAPE_MAJORITY = 0.5
"""A layer's spectra are called power-law (or Lorentzian) when that model wins for more than this
fraction of its processes (mean across members)."""
SHAPE_MARGIN = 2.0
"""AIC margin of :func:`~rvsp_jax.analysis.spectral.spectral_shape`."""
SHAPE_MIN_BETA = 0.2
"""A power law that wins with a mean Whittle exponent |beta| below this is called a tilt of a nearly
white spectrum, not a power law."""
VERDICT_COLORS = {"stationary": plots.PALETTE[2], "unit-root": plots.PALETTE[1],
                  "inconclusive": "0.75", "invalid": "0.2"}
_LAYER = re.compile(r"^([^/]+)/")


@dataclass(frozen=True)
class SpectraSettings:
    """Options of the updates-as-time-series analysis (the training flags are separate).

    Example::

        python -m experiments.spectra --seeds 32 --steps 6000 --probe-index 32 --nlags 100
    """

    index: str = opt("16", "--probe-index", "update processes recorded: K per parameter array, "
                     "total=N, all, or names like 'Dense_0/kernel[412,3]'")
    nlags: int = opt(50, "--nlags", "ACF lags")
    nperseg: int = opt(256, "--nperseg", "Welch segment length (clipped to the series length)")
    burn_in: float = opt(0.1, "--burn-in", "fraction of the steps left out of the ACF and PSD "
                         "(the stationarity phases always cover all steps)")
    lb_lag: int = opt(10, "--lb-lag", "Ljung-Box test of lags 1..L")
    alpha: float = opt(0.05, "--alpha", "test level and Benjamini-Hochberg false discovery rate")

    def __post_init__(self):
        if self.nlags < 1 or self.nperseg < 4 or self.lb_lag < 1:
            raise ValueError(f"nlags and lb_lag must be >= 1 and nperseg >= 4, got nlags={self.nlags}, "
                             f"lb_lag={self.lb_lag}, nperseg={self.nperseg}")
        if not 0 <= self.burn_in < 1:
            raise ValueError(f"burn_in is a fraction of the steps in [0, 1), got {self.burn_in}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        ProbeConfig(index=self.index)  # syntax check

    def probes(self) -> ProbeConfig:
        """Record every step's updates of the selected parameters."""
        return ProbeConfig(probes="updates", index=self.index, every=1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- shared measurements ---------------------------------------------------------------------

def layer_of(name: str) -> str:
    """``Dense_0`` of a probe entry name such as ``Dense_0/kernel[412,3]``."""
    m = _LAYER.match(name)
    if m is None:
        raise ValueError(f"cannot read the layer of probe entry {name!r}")
    return m.group(1)


def layer_groups(names) -> dict[str, np.ndarray]:
    """Layer -> positions int64 ``[P_l]`` of its entries in ``names`` (layers in order of appearance)."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault(layer_of(name), []).append(j)
    return {layer: np.asarray(idx, np.int64) for layer, idx in groups.items()}


def usable_members(run: store.Run) -> np.ndarray:
    """bool ``[S]``: members that did not diverge (a complete run's ``final.npz``)."""
    return ~np.asarray(run.final().diverged, bool)


def members_summary(usable: np.ndarray) -> dict:
    """How many members were analysed and which were excluded as diverged."""
    return {"total": int(usable.size), "used": int(usable.sum()),
            "diverged": int((~usable).sum()), "diverged_ids": np.flatnonzero(~usable).tolist()}


class LayerSpectra(NamedTuple):
    """Per-member, per-layer summaries of recorded processes (float64; excluded members' rows NaN).

    layers: layer names ``[L]``; counts: processes per layer int ``[L]``; nobs: series length T.
    freqs: ``[F]`` Welch frequencies (cycles per recorded step).
    acf: ``[S, L, nlags+1]`` mean over the layer's processes of each one's ACF.
    psd: ``[S, L, F]`` mean over the layer's processes of each one's Welch PSD divided by its
      total power (``sum(psd) * df = 1``: white noise is flat at 2).
    slope: ``[S, L]`` mean spectral slope beta; band_ratio: ``[S, L]`` median band-power ratio;
    smooth: ``[S, L]`` fraction of processes with band ratio > 1; flatness: ``[S, L]`` mean
    spectral flatness; white_rejected: ``[S, L]`` fraction whose Ljung-Box test (lags 1..L)
    rejects white noise under Benjamini-Hochberg control over all processes of usable members.
    constant: ``[S, L]`` fraction of processes that never change (e.g. the weights of a pixel that
    is 0 in every image: their updates are exactly 0); they are left out of every other summary.
    slope_r2: ``[S, L]`` mean r^2 of the log-log slope fits (fit range: every Welch bin f > 0).
    shape: ``[S, L, 4]`` fraction of the layer's processes whose periodogram is best described as
      white, Lorentzian (AR(1)), power law or indistinguishable (:data:`SHAPE_VERDICTS`, by
      :func:`~rvsp_jax.analysis.spectral.spectral_shape`: Whittle likelihood, AIC margin
      :data:`SHAPE_MARGIN`); shape_phi, shape_beta: ``[S, L]`` mean fitted AR(1) coefficient and
      Whittle power-law exponent; shape_delta_aic: ``[S, L]`` median AIC(Lorentzian) - AIC(power law).
    """

    layers: tuple
    counts: np.ndarray
    nobs: int
    freqs: np.ndarray
    acf: np.ndarray
    psd: np.ndarray
    slope: np.ndarray
    band_ratio: np.ndarray
    smooth: np.ndarray
    flatness: np.ndarray
    white_rejected: np.ndarray
    constant: np.ndarray
    slope_r2: np.ndarray | None = None
    shape: np.ndarray | None = None
    shape_phi: np.ndarray | None = None
    shape_beta: np.ndarray | None = None
    shape_delta_aic: np.ndarray | None = None


def member_series(x, s: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Member ``s``'s processes ``[P, T']`` (float64) of a recorded ``x: [S, T, P]`` between
    steps ``start`` and ``stop`` (a lazy zarr array reads only that member's chunks)."""
    return np.asarray(x[s, start:stop, :], np.float64).T


def per_layer(values: np.ndarray, groups: dict, reduce=np.nanmean) -> np.ndarray:
    """values: ``[P, ...]`` -> ``[L, ...]`` reduced over each layer's entries (NaN entries are
    skipped by the default ``nanmean``; a layer with none left is NaN, without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([reduce(values[idx], axis=0) for idx in groups.values()])


def normalised_psd(freqs: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """psd: ``[..., F]`` divided by its total power ``sum(psd) * df`` (NaN for a zero PSD)."""
    df = freqs[1] - freqs[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return psd / (psd.sum(axis=-1, keepdims=True) * df)


def measure_layers(x, names, usable: np.ndarray, *, start: int = 0, nlags: int = 50,
                   nperseg: int = 256, lb_lag: int = 10, alpha: float = 0.05,
                   progress: bool = False, desc: str = "spectra") -> LayerSpectra:
    """ACF, Welch PSD and their summaries of every process in ``x: [S, T, P]`` from step ``start``,
    per member (one member is read at a time) and per layer of ``names`` (``[P]`` probe entry
    names). Members where ``usable`` is False get NaN rows. ``nperseg`` and ``nlags`` are clipped
    to the series length. See :class:`LayerSpectra`."""
    groups = layer_groups(names)
    n_members, n_steps = x.shape[0], x.shape[1] - start
    nlags, nperseg = min(nlags, n_steps - 1), min(nperseg, n_steps)
    lb_lag = min(lb_lag, n_steps - 1)
    n_freq = nperseg // 2 + 1
    shape = (n_members, len(groups))
    out = {k: np.full(shape, np.nan) for k in ("slope", "band_ratio", "smooth", "flatness", "constant",
                                               "slope_r2", "shape_phi", "shape_beta", "shape_delta_aic")}
    out["shape"] = np.full((*shape, len(SHAPE_VERDICTS)), np.nan)
    acfs, psds = np.full((*shape, nlags + 1), np.nan), np.full((*shape, n_freq), np.nan)
    lb_p = np.full((n_members, x.shape[2]), np.nan)
    freqs = np.fft.rfftfreq(nperseg)
    for s in tqdm(np.flatnonzero(usable), desc=desc, disable=not progress_enabled(progress), leave=False):
        d = member_series(x, s, start)
        constant = is_constant(d)
        out["constant"][s] = per_layer(constant, groups)
        d[constant] = np.nan  # every statistic of a constant process is NaN, and skipped
        acfs[s] = per_layer(acf(d, nlags), groups)
        freqs, psd = welch(d, nperseg=nperseg)
        psds[s] = per_layer(normalised_psd(freqs, psd), groups)
        ratio = band_power_ratio(freqs, psd)
        slope = spectral_slope(freqs, psd)
        out["slope"][s] = per_layer(slope.beta, groups)
        out["slope_r2"][s] = per_layer(slope.r2, groups)
        fp, pp = periodogram(d)
        keep = (fp > 0) & (fp < 0.5)  # no DC, no Nyquist bin (its periodogram has 1 dof, not 2)
        sh = spectral_shape(fp[keep], pp[:, keep], margin=SHAPE_MARGIN)
        codes = np.where(sh.verdict < 0, np.nan, sh.verdict)
        out["shape"][s] = np.stack([per_layer(np.where(np.isnan(codes), np.nan, codes == v), groups)
                                    for v in range(len(SHAPE_VERDICTS))], axis=-1)
        out["shape_phi"][s] = per_layer(sh.phi, groups)
        out["shape_beta"][s] = per_layer(sh.beta, groups)
        out["shape_delta_aic"][s] = per_layer(sh.delta_aic, groups, np.nanmedian)
        out["band_ratio"][s] = per_layer(ratio, groups, np.nanmedian)
        out["smooth"][s] = per_layer(np.where(np.isnan(ratio), np.nan, ratio > 1), groups)
        out["flatness"][s] = per_layer(spectral_flatness(psd), groups)
        lb_p[s] = ljung_box(d, [lb_lag]).pvalue[:, 0]
    p = lb_p[usable]
    rejected = np.where(np.isnan(p), np.nan, fdr_bh(p, alpha).reject)
    white = np.full(shape, np.nan)
    white[usable] = per_layer(rejected.T, groups).T
    return LayerSpectra(tuple(groups), np.array([len(i) for i in groups.values()]), n_steps, freqs,
                        acfs, psds, white_rejected=white, **out)


class WindowStationarity(NamedTuple):
    """Is the analysed window ``[start, stop)`` (recorded steps) stationary?

    stationary: ``[S, L]`` fraction of each member's testable (non-constant) processes in each
    layer that ADF + KPSS judge stationary (raw, level alpha); drift: ``[S, L]`` median over the
    layer's processes of ``|relative variance drift|`` (:func:`~rvsp_jax.analysis.measure_drift`
    over 4 sub-windows); pooled_stationary, pooled_drift: the same over every process of every
    usable member; accepted: the rule (pooled_stationary >= :data:`STATIONARY_ACCEPT` and
    pooled_drift <= :data:`DRIFT_ACCEPT`).
    """

    start: int
    stop: int
    stationary: np.ndarray
    drift: np.ndarray
    pooled_stationary: float
    pooled_drift: float
    accepted: bool


def window_stationarity(x, names, usable: np.ndarray, *, start: int = 0, stop: int | None = None,
                        alpha: float = 0.05, progress: bool = False) -> WindowStationarity:
    """ADF + KPSS and the variance drift of every process of ``x: [S, T, P]`` between ``start`` and
    ``stop``, per member and layer (see :class:`WindowStationarity`)."""
    groups = layer_groups(names)
    stop = x.shape[1] if stop is None else stop
    shape = (x.shape[0], len(groups))
    stationary, drift = np.full(shape, np.nan), np.full(shape, np.nan)
    invalid = STATIONARITY_VERDICTS.index("invalid")
    passed = tested = 0
    drifts = []
    for s in tqdm(np.flatnonzero(usable), desc="window stationarity", disable=not progress_enabled(progress), leave=False):
        d = member_series(x, s, start, stop)
        raw, _ = stationarity_verdicts(d, alpha)
        ok = raw != invalid
        with np.errstate(invalid="ignore", divide="ignore"):
            stationary[s] = per_layer(np.where(ok, raw == 0, np.nan), groups)
            dr = np.abs(measure_drift(d, max(2, d.shape[-1] // 4)).var_drift)
        dr = np.where(np.isfinite(dr), dr, np.nan)
        drift[s] = per_layer(dr, groups, np.nanmedian)
        passed, tested = passed + int((raw == 0).sum()), tested + int(ok.sum())
        drifts.append(dr[np.isfinite(dr)])
    frac = passed / tested if tested else float("nan")
    pooled = np.concatenate(drifts) if drifts else np.zeros(0)
    med = float(np.median(pooled)) if pooled.size else float("nan")
    return WindowStationarity(int(start), int(stop), stationary, drift, float(frac), med,
                              bool(frac >= STATIONARY_ACCEPT and med <= DRIFT_ACCEPT))


def window_stationarity_summary(w: WindowStationarity, layers, steps) -> dict:
    """JSON-ready summary of a :class:`WindowStationarity` (``steps``: the run's recorded steps)."""
    return {"steps": [int(steps[w.start]), int(steps[w.stop - 1]) + 1],
            "pooled_stationary_fraction": w.pooled_stationary, "pooled_variance_drift": w.pooled_drift,
            "accepted": w.accepted, "stationary_accept": STATIONARY_ACCEPT, "drift_accept": DRIFT_ACCEPT,
            "layers": {layer: {"stationary_fraction": proportion_summary(w.stationary[:, l]),
                               "variance_drift": across_members(w.drift[:, l])}
                       for l, layer in enumerate(layers)}}


def window_stationarity_text(w: dict) -> str:
    """The report's sentence about a window's stationarity (with its rule)."""
    return (f"Analysed window: steps {w['steps'][0]}-{w['steps'][1]}. "
            f"{pct(w['pooled_stationary_fraction'])} of its testable processes pass ADF + KPSS (raw) and "
            f"the median |relative variance drift| is {fmt(w['pooled_variance_drift'], 2)}: "
            + ("stationary" if w["accepted"] else "NOT stationary")
            + f" by the rule (at least {w['stationary_accept']:.0%} pass and drift at most "
            f"{w['drift_accept']}), so the spectra below "
            + ("describe a steady process." if w["accepted"] else
               "average over a changing process and describe the window, not a stationary spectrum."))


def shape_summary(sp: LayerSpectra, l: int) -> dict:
    """JSON-ready spectral-shape summary of layer ``l`` of ``sp``."""
    return {"fractions": {v: proportion_summary(sp.shape[:, l, i]) for i, v in enumerate(SHAPE_VERDICTS)},
            "phi": across_members(sp.shape_phi[:, l]), "beta_whittle": across_members(sp.shape_beta[:, l]),
            "delta_aic_median": across_members(sp.shape_delta_aic[:, l]),
            "criterion": f"AIC of the Whittle likelihood of each process's periodogram (0 < f < 1/2), "
                         f"margin {SHAPE_MARGIN}", "majority": SHAPE_MAJORITY}


def shape_word(d: dict) -> str:
    """The shape rule: a model is named when it wins for more than :data:`SHAPE_MAJORITY` of the
    processes (mean over members); otherwise 'mixed'."""
    fr = d["fractions"]
    for v in ("power-law", "lorentzian", "white"):
        m = fr[v].mean
        if m is not None and np.isfinite(m) and m > SHAPE_MAJORITY:
            beta = d["beta_whittle"].mean
            if v == "power-law" and np.isfinite(beta) and abs(beta) < SHAPE_MIN_BETA:
                return (f"nearly white with a {'blue' if beta < 0 else 'red'} tilt (a power law wins "
                        f"by AIC, |beta| < {SHAPE_MIN_BETA})")
            return {"power-law": "power law", "lorentzian": "Lorentzian (AR(1))", "white": "white"}[v]
    return "mixed (no model wins for most processes)"


def shape_text(d: dict, slope: dict, r2: dict) -> str:
    fr = d["fractions"]
    word = shape_word(d)
    text = (f"shape {word}: " + ", ".join(f"{v} {pct(fr[v].mean)}" for v in SHAPE_VERDICTS)
            + f" of processes; Lorentzian phi {fmt_ci(d['phi'])}")
    if word == "power law":
        text += f"; power-law exponent (Whittle) {fmt_ci(d['beta_whittle'])}"
    else:
        text += (f"; log-log slope {fmt_ci(slope)} (r^2 {fmt(r2.mean, 2)}) is a shape summary, not a "
                 "power-law exponent")
    return text


def lorentzian_normalised(freqs: np.ndarray, phi: float) -> np.ndarray:
    """The AR(1) spectrum ``1 / |1 - phi e^{-2 pi i f}|^2`` on ``freqs`` (Welch bins, 0..1/2) scaled to
    unit power like :func:`normalised_psd` (``sum * df = 1``)."""
    s = 1.0 / ((1 - phi) ** 2 + 4 * phi * np.sin(np.pi * freqs) ** 2)
    return s / (s.sum() * (freqs[1] - freqs[0]))


def below_nyquist(freqs: np.ndarray, psd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs, psd)`` without the Nyquist bin (f = 1/2 cycle per step), for figures: a one-sided
    density leaves that bin undoubled, so it would show as a spurious drop to half."""
    keep = freqs < 0.5
    return freqs[keep], psd[..., keep]


def _stack(results: list):
    """Results (frozen dataclasses of arrays, e.g. AdfResult) of several batches stacked on a new
    axis 0; non-array fields (maxlag, regression) are taken from the first."""
    def join(values):
        first = values[0]
        if isinstance(first, np.ndarray):
            return np.stack(values)
        if isinstance(first, dict):
            return {k: join([v[k] for v in values]) for k in first}
        return first
    return type(results[0])(**{f.name: join([getattr(r, f.name) for r in results])
                               for f in dataclasses.fields(results[0])})


def phase_bounds(n_steps: int, phases=PHASES) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` of equal consecutive windows covering ``n_steps`` recorded steps."""
    edges = np.linspace(0, n_steps, len(phases) + 1).round().astype(int)
    return [(name, int(a), int(b)) for name, a, b in zip(phases, edges[:-1], edges[1:])]


class PhaseVerdicts(NamedTuple):
    """Joint ADF + KPSS verdict codes (indices into ``STATIONARITY_VERDICTS``) per phase.

    phases: ``(name, start, stop)`` recorded-step windows; raw, fdr_bh: int8 ``[phases, S, P]``,
    each test at level alpha, or with its p-values Benjamini-Hochberg adjusted over every process
    of usable members in the phase; -1 for excluded members.
    """

    phases: list
    raw: np.ndarray
    fdr_bh: np.ndarray


def phase_verdicts(x, usable: np.ndarray, *, alpha: float = 0.05, progress: bool = False
                   ) -> PhaseVerdicts:
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
        a_res, k_res = _stack(adfs), _stack(kpsses)
        raw[k, members] = stationarity_verdict(a_res, k_res, alpha)
        adjusted[k, members] = stationarity_verdict(a_res, k_res, alpha, adjust="fdr_bh")
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
            out[name] = np.stack([(c == v).sum(1) / ((c >= 0) & (c != invalid)).sum(1)
                                  for c in (codes[:, idx] for idx in groups.values())], axis=1)
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


def check_usable(usable: np.ndarray, what: str = "the run") -> None:
    """Refuse an analysis with no member left (every member diverged)."""
    if not usable.any():
        raise ValueError(f"every member of {what} diverged ({usable.size} of {usable.size}: non-finite "
                         "loss or parameters); nothing is left to analyse: lower --lr (or use a gentler "
                         "--optimizer) and run again")


def analyse(run: store.Run, settings: SpectraSettings, *, progress: bool = False) -> SpectraResult:
    """Measure the recorded update processes of a complete run (see the module docstring)."""
    if "updates" not in run.arrays:
        raise ValueError(f"{run.path} has no recorded updates; record with probes=updates")
    usable = usable_members(run)
    check_usable(usable, str(run.path))
    x, names = run["updates"], run.probe_names["updates"]
    start = int(settings.burn_in * x.shape[1])
    if x.shape[1] - start < 8:
        raise ValueError(f"{x.shape[1] - start} steps after the burn-in are too few for spectra; "
                         "train longer (--steps) or lower --burn-in")
    spectra = measure_layers(x, names, usable, start=start, nlags=settings.nlags,
                             nperseg=settings.nperseg, lb_lag=settings.lb_lag, alpha=settings.alpha,
                             progress=progress)
    verdicts = phase_verdicts(x, usable, alpha=settings.alpha, progress=progress)
    window = window_stationarity(x, names, usable, start=start, alpha=settings.alpha, progress=progress)
    return SpectraResult(run, settings, usable, spectra, verdicts, layer_groups(names), window)


def _smooth_word(s) -> str:
    if not np.isfinite(s.lo):
        return "undetermined"
    return "smooth (low-frequency)" if s.lo > 1 else "jittery (high-frequency)" if s.hi < 1 else \
        "neither smooth nor jittery (band ratio interval contains 1)"


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
            entry[kind] = {layer: {
                "counts": {v: int((codes[:, idx] == i).sum()) for i, v in enumerate(STATIONARITY_VERDICTS)},
                "fraction_of_testable": {v: proportion_summary(f[:, l]) for v, f in fractions.items()}}
                for l, (layer, idx) in enumerate(result.groups.items())}
        stationarity[name] = entry
    return {
        "experiment": EXPERIMENT, "run": str(run.path), "config": run.config.to_dict(),
        "settings": result.settings.to_dict(), "members": members_summary(result.usable),
        "series_length": sp.nobs, "burn_in_steps": int(run.steps.size - sp.nobs),
        "test_accuracy": across_members(np.where(result.usable, run.final().test_accuracy, np.nan)),
        "layers": layers, "stationarity": stationarity,
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


def figures(result: SpectraResult, folder: Path) -> dict[str, str]:
    """Draw every figure into ``folder``; returns name -> caption."""
    sp = result.spectra
    n_layers = len(sp.layers)
    lags = np.arange(sp.acf.shape[-1])
    captions = {}
    with plots.paper_style():
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
        plots.save_figure(fig, folder, "acf_by_layer")
        captions["acf_by_layer"] = ("ACF of parameter updates per layer: mean over the layer's "
                                    "processes, band = 95% t-interval across members")

        fig, axes = plots.subplots(1, n_layers, width="double", height=2.2, squeeze=False, sharey=True)
        for l, ax in enumerate(axes[0]):
            f, p = below_nyquist(sp.freqs, sp.psd[:, l])
            plots.plot_psd_bands(ax, f, p, np.full(f.shape, 2.0), label="median",
                                 theory_label="white noise")
            phi = across_members(sp.shape_phi[:, l]).mean
            if np.isfinite(phi):
                ax.plot(f, lorentzian_normalised(sp.freqs, phi)[sp.freqs < 0.5], color="0.4",
                        linestyle=":", linewidth=1.0, label=f"Lorentzian, phi = {fmt(phi, 2)}")
            word = shape_word(shape_summary(sp, l))
            ax.set(title=f"{sp.layers[l]}: {word.split(' (')[0]}", xlabel="frequency (cycles/step)")
        axes[0, 0].set_ylabel("normalised PSD")
        axes[0, 0].legend()
        plots.save_figure(fig, folder, "psd_by_layer")
        captions["psd_by_layer"] = ("Welch PSD of updates normalised to unit power, per layer: median "
                                    "over members of the layer mean, band 5-95% of members; "
                                    "dashed: white noise; dotted: the AR(1) (Lorentzian) spectrum at the "
                                    "mean fitted phi; title: the shape rule's verdict")

        fig, axes = plots.subplots(1, 3, width="double", height=2.0)
        x = np.arange(n_layers)
        for ax, values, label, ref in ((axes[0], sp.slope, "log-log slope (shape summary)", 0.0),
                                       (axes[1], sp.band_ratio, "band-power ratio (low/high)", 1.0),
                                       (axes[2], sp.white_rejected, "Ljung-Box rejects white (FDR)", None)):
            m = across_members(values)
            ax.errorbar(x, m.mean, yerr=[m.mean - m.lo, m.hi - m.mean], fmt="o", capsize=2)
            if ref is not None:
                ax.axhline(ref, color="k", linestyle="--", linewidth=0.8)
            ax.set(xticks=x, xticklabels=sp.layers, ylabel=label)
        axes[1].set_yscale("log")
        plots.save_figure(fig, folder, "spectral_summary")
        captions["spectral_summary"] = ("Spectral slope, band-power ratio (> 1 smooth, < 1 jittery) "
                                        "and fraction of non-white processes per layer; mean and 95% "
                                        "t-interval across members")

        fig, axes = plots.subplots(1, n_layers, width="double", height=2.2, squeeze=False, sharey=True)
        names = [p[0] for p in result.verdicts.phases]
        for l, (layer, idx) in enumerate(result.groups.items()):
            ax, bottom = axes[0, l], np.zeros(len(names))
            for v, verdict in enumerate(STATIONARITY_VERDICTS):
                share = np.array([np.mean(codes[:, idx][result.usable] == v) if result.usable.any()
                                  else np.nan for codes in result.verdicts.fdr_bh])
                ax.bar(names, share, bottom=bottom, color=VERDICT_COLORS[verdict], label=verdict)
                bottom += np.nan_to_num(share)
            ax.set(title=layer, ylim=(0, 1))
        axes[0, 0].set_ylabel("fraction of update processes")
        axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        plots.save_figure(fig, folder, "stationarity")
        captions["stationarity"] = ("ADF + KPSS verdicts of every update process by phase, each test's "
                                    "p-values Benjamini-Hochberg adjusted over the phase's processes")
    return captions


def report(result: SpectraResult, summary: dict, captions: dict, command: str | None) -> Report:
    """The markdown report of the study."""
    sp, s = result.spectra, result.settings
    members = summary["members"]
    rep = Report("Parameter updates as time series")
    rep.text(f"{members['used']} of {members['total']} members analysed "
             f"({members['diverged']} diverged and excluded); {sum(sp.counts)} update processes per "
             f"member over {sp.nobs} steps after a burn-in of {summary['burn_in_steps']} steps. "
             f"Intervals are 95% t-intervals across members (fractions: percentile-bootstrap "
             f"intervals). Test accuracy: {fmt_ci(summary['test_accuracy'])}.",
             window_stationarity_text(summary["analysed_window"]))
    rep.section("Rules")
    rep.text("Every sentence of the findings follows from the numbers by one of these rules:")
    rep.bullets([f"{k}: {v}." for k, v in RULES.items()])
    rep.section("Findings")
    bullets = []
    for layer, d in summary["layers"].items():
        bullets.append(f"{layer}: lag-1 ACF {fmt_ci(d['acf_lag1'])}; "
                       f"{shape_text(d['spectral_shape'], d['spectral_slope'], d['spectral_slope_r2'])}; "
                       f"band-power ratio {fmt_ci(d['band_power_ratio'])}: "
                       f"{_smooth_word(d['band_power_ratio'])}; white noise rejected (Ljung-Box, "
                       f"lags 1..{s.lb_lag}, FDR {s.alpha}) for {fmt_ci(d['ljung_box_white_rejected_fdr'])} "
                       "of the processes.")
    for phase, d in summary["stationarity"].items():
        parts = [f"{layer} {fmt_ci(v['fraction_of_testable']['stationary'])}"
                 for layer, v in d["fdr_bh"].items()]
        bullets.append(f"{phase} steps {d['steps'][0]}-{d['steps'][1]}: fraction of the non-constant "
                       f"processes that are stationary (ADF and "
                       f"KPSS agree, BH-adjusted): " + ", ".join(parts) + ".")
    rep.bullets(bullets)
    rep.section("Autocorrelation and spectra")
    rep.text("Processes that never change (constant: the weights of pixels that are 0 in every "
             "image the member saw) are left out of these summaries; their share is in the table.")
    header = ["layer", "processes", "constant", "ACF lag 1", "spectral slope", "slope r^2", "band ratio",
              "smooth fraction", "flatness", "non-white (FDR)"]
    rows = [[layer, d["processes"], *(fmt_ci(d[k]) for k in (
        "constant_fraction", "acf_lag1", "spectral_slope", "spectral_slope_r2", "band_power_ratio",
        "smooth_fraction", "spectral_flatness", "ljung_box_white_rejected_fdr"))]
        for layer, d in summary["layers"].items()]
    rep.table(header, rows)
    first = next(iter(summary["layers"].values()))
    rep.text(f"The slope is an OLS fit of log10 PSD on log10 f over the Welch bins "
             f"{fmt(first['slope_fit_range'][0])}-{fmt(first['slope_fit_range'][1])} cycles/step. "
             "Spectral shape: each process's periodogram (0 < f < 1/2) is fitted by white noise, a "
             "Lorentzian (the AR(1) spectrum c / |1 - phi e^{-iw}|^2) and a power law c f^-beta by "
             f"Whittle maximum likelihood; the lowest AIC wins if it beats the others by {SHAPE_MARGIN} "
             "(else 'indistinguishable', or 'white' when white is within the margin).")
    rep.table(["layer", *[f"{v} (fraction)" for v in SHAPE_VERDICTS], "Lorentzian phi", "power-law beta (Whittle)",
               "median AIC(Lor.) - AIC(pow.)", "shape"],
              [[layer, *[fmt_ci(d["spectral_shape"]["fractions"][v]) for v in SHAPE_VERDICTS],
                fmt_ci(d["spectral_shape"]["phi"]), fmt_ci(d["spectral_shape"]["beta_whittle"]),
                fmt_ci(d["spectral_shape"]["delta_aic_median"]), shape_word(d["spectral_shape"])]
               for layer, d in summary["layers"].items()])
    for name in ("acf_by_layer", "psd_by_layer", "spectral_summary"):
        rep.figure(name, captions[name])
    rep.section("Stationarity by phase")
    rep.text(f"ADF (constant, AIC lag) and KPSS (level, automatic lag) per process; a test rejects at "
             f"level {s.alpha}, raw or after Benjamini-Hochberg adjustment of its p-values over all "
             "processes of the phase (false discovery rate control). Counts are processes summed over "
             "members; the stationary fraction is of each member's non-constant (testable) processes, "
             "with a percentile-bootstrap interval across members.")
    header = ["phase", "layer", *[f"{v} (BH)" for v in STATIONARITY_VERDICTS], "stationary (raw)",
              "stationary fraction (BH)"]
    rows = []
    for phase, d in summary["stationarity"].items():
        for layer, v in d["fdr_bh"].items():
            rows.append([f"{phase} ({d['steps'][0]}-{d['steps'][1]})", layer,
                         *[v["counts"][k] for k in STATIONARITY_VERDICTS],
                         d["raw"][layer]["counts"]["stationary"],
                         fmt_ci(v["fraction_of_testable"]["stationary"])])
    rep.table(header, rows)
    rep.figure("stationarity", captions["stationarity"])
    rep.section("Configuration")
    rep.config({"train": result.run.config.to_dict(), "spectra": s.to_dict()}, command)
    return rep


def record_runs(config: TrainConfig, settings: SpectraSettings, out, *, resume: bool = False,
                overwrite: bool = False, command: str | None = None, progress: bool = True,
                dataset=None) -> store.Run:
    """Train and record (or, with ``resume``, reuse) the ensemble in ``out``."""
    return record.run(config, settings.probes(), Path(out), resume=resume, overwrite=overwrite,
                      dataset=dataset, experiment=EXPERIMENT, command=command, progress=progress)


def write_results(run: store.Run, settings: SpectraSettings, folder, *, command: str | None = None,
                  progress: bool = True, dataset=None) -> dict:
    """Analyse ``run`` (a plain run or one grid point of a sweep) and write ``summary.json``,
    ``report.md`` and ``figures/`` into ``folder``; returns the summary."""
    folder = Path(folder)
    result = analyse(run, settings, progress=progress)
    summary = summarise(result)
    write_summary(folder, summary)
    captions = figures(result, folder / "figures")
    report(result, summary, captions, command).write(folder)
    return summary


def sweep_statistics(summary: dict) -> dict[str, dict[str, float]]:
    """Headline numbers of one grid point (for :mod:`rvsp_jax.studies.per_point`): per layer the
    across-member mean of the low/high band-power ratio (white noise gives 1), of the lag-1
    autocorrelation and of the spectral slope, and the fraction of the analysed window's processes
    that the window's stationarity check accepts."""
    layers = summary["layers"]
    window = summary["analysed_window"]
    return {"band power ratio low/high": {k: v["band_power_ratio"]["mean"] for k, v in layers.items()},
            "ACF lag 1": {k: v["acf_lag1"]["mean"] for k, v in layers.items()},
            "spectral slope": {k: v["spectral_slope"]["mean"] for k, v in layers.items()},
            "stationary in the window (fraction)": {
                k: v["stationary_fraction"]["mean"] for k, v in window["layers"].items()}}


def run_study(config: TrainConfig, settings: SpectraSettings, out, *, resume: bool = False,
              overwrite: bool = False, command: str | None = None, progress: bool = True) -> Path:
    """Train and record (or, with ``resume``, reuse) the ensemble in ``out``, analyse it and write
    ``summary.json``, ``report.md`` and ``figures/``; returns ``out``. A sweep is recorded once and
    every grid point analysed as its own ensemble into ``out/points/`` (:mod:`.per_point`)."""
    out = Path(out)
    if config.sweep_axes():
        per_point.run(sys.modules[__name__], config, settings, out, resume=resume, overwrite=overwrite,
                      command=command, progress=progress, title="Spectra")
        return out
    run = record_runs(config, settings, out, resume=resume, overwrite=overwrite, command=command,
                      progress=progress)
    write_results(run, settings, out, command=command, progress=progress)
    return out
