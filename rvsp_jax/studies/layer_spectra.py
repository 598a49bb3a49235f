"""Per-layer measurements of recorded processes shared by the spectra and optimizers studies.

For every member and layer of a recording ``[S, T, P]``: the ACF, Welch and periodogram PSDs,
spectral slope, band-power ratio, flatness, Ljung-Box whiteness and the spectral shape (white vs
Lorentzian vs power law by AIC) (:func:`measure_layers` -> :class:`LayerSpectra`), the words the
reports use for a layer's shape, and the stationarity check of an analysed window
(:func:`window_stationarity`). Layers are read from probe entry names (``Dense_0/kernel[412,3]``).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from rvsp_jax.analysis import (
    STATIONARITY_VERDICTS,
    acf,
    across_members,
    band_power_ratio,
    fdr_bh,
    is_constant,
    ljung_box,
    measure_drift,
    periodogram,
    spectral_flatness,
    spectral_slope,
    welch,
)
from rvsp_jax.analysis.spectral import SHAPE_VERDICTS, _spectral_shape_codes
from rvsp_jax.analysis.stationarity import _stationarity_codes_of
from rvsp_jax.present.report import fmt, fmt_ci, pct, progress_enabled, proportion_summary

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
_LAYER = re.compile(r"^([^/]+)/")


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


def measure_layers(
    x,
    names,
    usable: np.ndarray,
    *,
    start: int = 0,
    nlags: int = 50,
    nperseg: int = 256,
    lb_lag: int = 10,
    alpha: float = 0.05,
    progress: bool = False,
    desc: str = "spectra",
) -> LayerSpectra:
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
    out = {
        k: np.full(shape, np.nan)
        for k in (
            "slope",
            "band_ratio",
            "smooth",
            "flatness",
            "constant",
            "slope_r2",
            "shape_phi",
            "shape_beta",
            "shape_delta_aic",
        )
    }
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
        sh = _spectral_shape_codes(fp[keep], pp[:, keep], margin=SHAPE_MARGIN)  # int8 codes, compact
        codes = np.where(sh.verdict < 0, np.nan, sh.verdict)
        out["shape"][s] = np.stack(
            [per_layer(np.where(np.isnan(codes), np.nan, codes == v), groups) for v in range(len(SHAPE_VERDICTS))],
            axis=-1,
        )
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
    return LayerSpectra(
        tuple(groups),
        np.array([len(i) for i in groups.values()]),
        n_steps,
        freqs,
        acfs,
        psds,
        white_rejected=white,
        **out,
    )


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


def window_stationarity(
    x,
    names,
    usable: np.ndarray,
    *,
    start: int = 0,
    stop: int | None = None,
    alpha: float = 0.05,
    progress: bool = False,
) -> WindowStationarity:
    """ADF + KPSS and the variance drift of every process of ``x: [S, T, P]`` between ``start`` and
    ``stop``, per member and layer (see :class:`WindowStationarity`)."""
    groups = layer_groups(names)
    stop = x.shape[1] if stop is None else stop
    shape = (x.shape[0], len(groups))
    stationary, drift = np.full(shape, np.nan), np.full(shape, np.nan)
    invalid = STATIONARITY_VERDICTS.index("invalid")
    passed = tested = 0
    drifts = []
    for s in tqdm(
        np.flatnonzero(usable), desc="window stationarity", disable=not progress_enabled(progress), leave=False
    ):
        d = member_series(x, s, start, stop)
        raw, _ = _stationarity_codes_of(d, alpha)  # int8 codes, compact
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
    return WindowStationarity(
        int(start),
        int(stop),
        stationary,
        drift,
        float(frac),
        med,
        bool(frac >= STATIONARY_ACCEPT and med <= DRIFT_ACCEPT),
    )


def window_stationarity_summary(w: WindowStationarity, layers, steps) -> dict:
    """JSON-ready summary of a :class:`WindowStationarity` (``steps``: the run's recorded steps)."""
    return {
        "steps": [int(steps[w.start]), int(steps[w.stop - 1]) + 1],
        "pooled_stationary_fraction": w.pooled_stationary,
        "pooled_variance_drift": w.pooled_drift,
        "accepted": w.accepted,
        "stationary_accept": STATIONARY_ACCEPT,
        "drift_accept": DRIFT_ACCEPT,
        "layers": {
            layer: {
                "stationary_fraction": proportion_summary(w.stationary[:, l]),
                "variance_drift": across_members(w.drift[:, l]),
            }
            for l, layer in enumerate(layers)
        },
    }


def window_stationarity_text(w: dict) -> str:
    """The report's sentence about a window's stationarity (with its rule)."""
    return (
        f"Analysed window: steps {w['steps'][0]}-{w['steps'][1]}. "
        f"{pct(w['pooled_stationary_fraction'])} of its testable processes pass ADF + KPSS (raw) and "
        f"the median |relative variance drift| is {fmt(w['pooled_variance_drift'], 2)}: "
        + ("stationary" if w["accepted"] else "NOT stationary")
        + f" by the rule (at least {w['stationary_accept']:.0%} pass and drift at most "
        f"{w['drift_accept']}), so the spectra below "
        + (
            "describe a steady process."
            if w["accepted"]
            else "average over a changing process and describe the window, not a stationary spectrum."
        )
    )


def shape_summary(sp: LayerSpectra, l: int) -> dict:
    """JSON-ready spectral-shape summary of layer ``l`` of ``sp``."""
    return {
        "fractions": {v: proportion_summary(sp.shape[:, l, i]) for i, v in enumerate(SHAPE_VERDICTS)},
        "phi": across_members(sp.shape_phi[:, l]),
        "beta_whittle": across_members(sp.shape_beta[:, l]),
        "delta_aic_median": across_members(sp.shape_delta_aic[:, l]),
        "criterion": f"AIC of the Whittle likelihood of each process's periodogram (0 < f < 1/2), "
        f"margin {SHAPE_MARGIN}",
        "majority": SHAPE_MAJORITY,
    }


def shape_word(d: dict) -> str:
    """The shape rule: a model is named when it wins for more than :data:`SHAPE_MAJORITY` of the
    processes (mean over members); otherwise 'mixed'."""
    fr = d["fractions"]
    for v in ("power-law", "lorentzian", "white"):
        m = fr[v].mean
        if m is not None and np.isfinite(m) and m > SHAPE_MAJORITY:
            beta = d["beta_whittle"].mean
            if v == "power-law" and np.isfinite(beta) and abs(beta) < SHAPE_MIN_BETA:
                return (
                    f"nearly white with a {'blue' if beta < 0 else 'red'} tilt (a power law wins "
                    f"by AIC, |beta| < {SHAPE_MIN_BETA})"
                )
            return {"power-law": "power law", "lorentzian": "Lorentzian (AR(1))", "white": "white"}[v]
    return "mixed (no model wins for most processes)"


def shape_text(d: dict, slope: dict, r2: dict) -> str:
    fr = d["fractions"]
    word = shape_word(d)
    text = (
        f"shape {word}: "
        + ", ".join(f"{v} {pct(fr[v].mean)}" for v in SHAPE_VERDICTS)
        + f" of processes; Lorentzian phi {fmt_ci(d['phi'])}"
    )
    if word == "power law":
        text += f"; power-law exponent (Whittle) {fmt_ci(d['beta_whittle'])}"
    else:
        text += f"; log-log slope {fmt_ci(slope)} (r^2 {fmt(r2.mean, 2)}) is a shape summary, not a power-law exponent"
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


def stack_results(results: list):
    """Results (frozen dataclasses of arrays, e.g. AdfResult) of several batches stacked on a new
    axis 0; non-array fields (maxlag, regression) are taken from the first."""

    def join(values):
        first = values[0]
        if isinstance(first, np.ndarray):
            return np.stack(values)
        if isinstance(first, dict):
            return {k: join([v[k] for v in values]) for k in first}
        return first

    return type(results[0])(
        **{f.name: join([getattr(r, f.name) for r in results]) for f in dataclasses.fields(results[0])}
    )
