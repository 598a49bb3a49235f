"""The ergodicity verdict: variance drift, long-run-variance ANOVA and distribution check combined by
:func:`assess_many` / :func:`assess` (see :mod:`rvsp_jax.analysis.ergodicity`)."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import scipy.stats

from rvsp_jax.analysis import lrv
from rvsp_jax.analysis._common import as_int as _as_int
from rvsp_jax.analysis._common import ensemble_last
from rvsp_jax.analysis.ergodicity._base import (
    _DRIFT_SEGMENTS,
    _RESOLVED_TAUS,
    _as_ensemble,
    _as_rng,
    _check_alpha,
    _deviations,
    _flat,
    _map_observables,
)
from rvsp_jax.analysis.ergodicity.distribution import _ks_block
from rvsp_jax.analysis.ergodicity.results import ErgodicityResult
from rvsp_jax.analysis.ergodicity.scaling import (
    _default_windows,
    _fit_start,
    _omega_block,
    _omega_exponent,
    _scaling_block,
)

# ----------------------------------------------------------------------------------------------
# Variance drift of the deviations


def _drift_block(dev: np.ndarray, valid: np.ndarray, n: np.ndarray, segments: int = _DRIFT_SEGMENTS):
    """Linear trend of the members' mean squared deviation over ``segments`` equal parts.

    dev: [S, p, T]. Per member s, u_sj = mean of d_s(t)^2 over part j; the contrast
    c_s = sum_j w_j u_sj (w: centred part index) is, across independent members, a sample with mean
    0 when the spread around the ensemble mean does not change: a one-sample t-test (n - 1 dof),
    valid whatever the autocorrelation within a member. Returns the fitted relative change of the
    mean squared deviation from the first to the last part ([p]) and the two-sided p-value ([p]).
    """
    S, p, T = dev.shape
    seg = T // segments
    if seg < 1:
        nan = np.full(p, np.nan)
        return nan, nan
    u = (dev[..., T - seg * segments :] ** 2).reshape(S, p, segments, seg).mean(axis=-1)
    w = np.arange(segments) - (segments - 1) / 2.0
    c = u @ (w / (w @ w))  # [S, p]: slope per part
    nf = np.maximum(n, 1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.where(valid, c, 0.0).sum(axis=0) / nf
        var_c = np.where(valid, (c - mean_c) ** 2, 0.0).sum(axis=0) / np.maximum(nf - 1, 1)
        level = np.where(valid[..., None], u, 0.0).sum(axis=(0, 2)) / (nf * segments)
        t = mean_c / np.sqrt(var_c / nf)
        pvalue = np.where((n > 2) & (var_c > 0), 2.0 * scipy.stats.t.sf(np.abs(t), n - 1), np.nan)
        change = mean_c * (segments - 1) / level
    return change, pvalue


# ----------------------------------------------------------------------------------------------
# Verdict


def _assess_block(x3, valid, uniforms, *, alpha, n_windows, min_blocks, thin_factor, max_pairs, describe=True):
    """All numbers of :func:`assess_many` for a block of observables x3: [S, p, T] (dict of [p])."""
    T = x3.shape[-1]
    dev, valid, n = _deviations(x3, valid)
    out = lrv.lrv_block(dev, n)
    out["drift"], out["drift_pvalue"] = _drift_block(dev, valid, n)
    tau = np.where(np.isfinite(out["tau"]), out["tau"], np.nan)
    windows = _default_windows(T, n_windows, min_blocks)
    start = _fit_start(tau, int(windows[-1]))
    out["fit_start"] = start
    if describe:
        _, out["slope"], out["slope_lo"], out["slope_hi"] = _scaling_block(
            dev, valid, n, start, windows, uniforms, alpha
        )
        omega = _omega_block(dev, n)
        out["omega_exponent"] = _omega_exponent(omega, _fit_start(tau, max(1, T // 2)))
        del omega
    else:
        for k in ("slope", "slope_lo", "slope_hi", "omega_exponent"):
            out[k] = np.full(x3.shape[1], np.nan)
    del dev
    out["ks_stat"], out["ks_pvalue"], *_ = _ks_block(x3, valid, out["tau_upper"], thin_factor, max_pairs)
    return out


def _effects(num: dict, *, alpha: float, alpha_mean: float, power: float) -> dict:
    """Effect size, its interval, and the smallest detectable member-specific variance ([p])."""
    ratio, df1, df2, lrv_, n_used = (num[k] for k in ("ratio", "df1", "df2", "lrv", "n_used"))
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(ratio) & (df1 > 0) & (df2 > 0)
        d1, d2 = np.where(ok, df1, 1.0), np.where(ok, df2, 1.0)
        lo = ratio / scipy.stats.f.ppf(1 - alpha / 2, d1, d2)
        hi = ratio / scipy.stats.f.ppf(alpha / 2, d1, d2)
        # F_obs ~ rho F(df1, df2) with rho = 1 + n var(mu) / sigma^2 (Gaussian member means), so
        # power(rho) = P(F > crit / rho): 80% at rho = crit / F_{0.2}.
        rho = scipy.stats.f.ppf(1 - alpha_mean, d1, d2) / scipy.stats.f.ppf(1 - power, d1, d2)
        unit = lrv_ / np.where(n_used > 0, n_used, np.nan)  # ergodic variance of a time average
    nan = np.nan
    return dict(
        ratio_lo=np.where(ok, lo, nan),
        ratio_hi=np.where(ok, hi, nan),
        var_mu=np.where(ok, (ratio - 1.0) * unit, nan),
        var_mu_lo=np.where(ok, np.maximum(lo - 1.0, 0.0) * unit, nan),
        var_mu_hi=np.where(ok, np.maximum(hi - 1.0, 0.0) * unit, nan),
        mde_var_mu=np.where(ok, (rho - 1.0) * unit, nan),
    )


def _g(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if np.isfinite(v) else "n/a"


def _p(v: float) -> str:
    """A p-value for a sentence: "p = 0.012", "p < 1e-16" (below double rounding), "p = n/a"."""
    if not np.isfinite(v):
        return "p = n/a"
    return "p < 1e-16" if v < 1e-16 else f"p = {v:.2g}"


def _decide(
    row: dict,
    *,
    T: int,
    alpha: float,
    alpha_mean: float,
    alpha_ks: float,
    drift_alpha: float,
    drift_tol: float,
    min_steps: int,
    min_members: int,
    spacing: int = 1,
) -> tuple[str, str, int]:
    """(verdict, reason, steps_needed) for one observable; the rule is documented in assess_many.

    Step counts in the reason are in units of ``spacing`` (steps between time indices);
    steps_needed is in time indices."""

    def st(v: float) -> str:
        return f"{v * spacing:,.0f}" if np.isfinite(v) else "n/a"

    n_div = row["n_diverged"]
    dropped = f" ({n_div} diverged member(s) excluded)" if n_div else ""
    if T < min_steps:
        return "inconclusive", (f"only {st(T)} steps after burn-in; need at least {st(min_steps)}"), min_steps
    if row["n_members"] < min_members:
        return (
            "inconclusive",
            (
                f"only {row['n_members']} finite members{dropped}; need at least {min_members} (more "
                "members, not more steps, would decide it)"
            ),
            0,
        )
    if not (row["gamma0"] > 0):
        return "inconclusive", f"no fluctuation across members (all members identical?){dropped}", 0
    tau, tau_up = row["tau"], row["tau_upper"]
    drift, drift_p = row["drift"], row["drift_pvalue"]
    if np.isfinite(drift_p) and drift_p < drift_alpha and abs(drift) >= drift_tol:
        way = "grows" if drift > 0 else "shrinks"
        return (
            "non-stationary",
            (
                f"the members' spread around the ensemble mean {way} by {abs(drift):.0%} over the "
                f"window (variance-drift test {_p(drift_p)} < {drift_alpha:g}): the window is not "
                "stationary, so time averages have no fixed ensemble value to converge to; choose a "
                f"later or shorter window (--burn-in){dropped}"
            ),
            0,
        )
    if not row["resolved"]:
        length = row["needed_length"]
        # capped so that it fits the int64 result (a runaway process can ask for 1e19 steps)
        need = int(min(math.ceil(lrv.MIN_BATCHES * length), 2**53)) if np.isfinite(length) else 0
        lower = f"at least {_g(tau * spacing)}" if np.isfinite(tau) else "unknown"
        return (
            "inconclusive",
            (
                f"the series is too short for its memory: its integrated autocorrelation time is "
                f"{lower} steps, and a decision needs {lrv.MIN_BATCHES} independent batches of at "
                f"least {lrv.BATCH_TAUS:g} tau; analyse at least {st(need)} steps (have {st(T)}; a "
                f"lower bound: the longer run will measure tau better){dropped}"
            ),
            need,
        )
    ratio, lo, hi = row["ratio"], row["ratio_lo"], row["ratio_hi"]
    share = row["var_mu"] / row["gamma0"]
    effect = (
        f"between-member variance of the time average {_g(ratio, 3)}x its ergodic "
        f"expectation [{_g(lo, 3)}, {_g(hi, 3)}]"
    )
    if row["mean_pvalue"] < alpha_mean:
        return (
            "non-ergodic",
            (
                f"members' time averages differ more than their own fluctuations explain: {effect}, "
                f"{_p(row['mean_pvalue'])} < {alpha_mean:g}; member-specific means of variance "
                f"{_g(row['var_mu'])} [{_g(row['var_mu_lo'])}, {_g(row['var_mu_hi'])}] "
                f"(sd {_g(math.sqrt(max(row['var_mu'], 0.0)))}, {share:.1%} of the step-to-step "
                f"variance){dropped}"
            ),
            0,
        )
    decisive = T >= _RESOLVED_TAUS * tau_up
    ks_p = row["ks_pvalue"]
    if decisive and np.isfinite(ks_p) and ks_p < alpha_ks:
        return (
            "non-ergodic",
            (
                f"time averages agree ({effect}), but a member's distribution over time differs from "
                f"the ensemble's at the same steps (distribution check {_p(ks_p)} < {alpha_ks:g}; "
                f"e.g. member-specific spread){dropped}"
            ),
            0,
        )
    mde = row["mde_var_mu"]
    if decisive:
        ks = f"distribution check {_p(ks_p)}" if np.isfinite(ks_p) else "distribution check not run"
    else:
        ks = (
            f"distribution check not decisive: needs {_RESOLVED_TAUS:g} tau = "
            f"{st(math.ceil(_RESOLVED_TAUS * tau_up))} steps"
        )
    return (
        "ergodic",
        (
            f"no member-specific mean larger than sd {_g(math.sqrt(mde))} (var(mu) >= {_g(mde)}, "
            f"{mde / row['gamma0']:.2%} of the step-to-step variance, would be found with 80% power); "
            f"{effect}, {_p(row['mean_pvalue'])}; tau = {_g(tau * spacing)} steps; {ks}{dropped}"
        ),
        0,
    )


_FLOAT_FIELDS = (
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "mean_pvalue",
    "var_mu",
    "var_mu_lo",
    "var_mu_hi",
    "mde_var_mu",
    "lrv",
    "gamma0",
    "tau_int",
    "tau_upper",
    "decay_length",
    "drift",
    "drift_pvalue",
    "slope",
    "slope_lo",
    "slope_hi",
    "omega_exponent",
    "ks_stat",
    "ks_pvalue",
    "mean_df1",
    "mean_df2",
)


def assess_many(
    x,
    *,
    burn_in: int = 0,
    alpha: float = 0.05,
    min_steps: int = 32,
    min_members: int = 4,
    slope_tol: float = 0.25,
    n_windows: int = 20,
    min_blocks: int = 4,
    n_boot: int = 1000,
    thin_factor: float = 3.0,
    max_pairs: int = 16,
    rng: int | np.random.Generator = 0,
    drift_alpha: float = 0.01,
    drift_tol: float = 0.25,
    ks_share: float = 0.2,
    power: float = 0.8,
    describe: bool = True,
    spacing: int = 1,
    member_axis: int = 0,
    axis: int = -1,
) -> ErgodicityResult:
    """Ergodicity verdict for every observable of x: [S, ..., T] (members, observables..., steps).

    Steps before ``burn_in`` are dropped. Per observable, members with any non-finite value (burn-in
    included) are excluded and counted in ``n_diverged``. On the remaining ``n_steps`` steps, with
    the deviations ``d_s(t) = x_s(t) - <x(t)>`` from the ensemble-mean path (a trend shared by every
    member cancels), float64:

    1. **Variance drift** (``drift``, ``drift_pvalue``): does the members' mean squared deviation
       change along the window? (t-test across members of a linear contrast over four quarters;
       see ``_drift_block``.)
    2. **Long-run variance and tau** (:mod:`rvsp_jax.analysis.lrv`): lugsail batch means of the
       deviations with an adaptive batch length (``L >= 6 tau`` and ``>= 10`` correlation decay
       lengths, at least 3 batches); ``tau_int`` is the resulting integrated autocorrelation time
       (``tau_upper`` 2 standard errors above).
    3. **Mean-ergodicity ANOVA** (``ratio``, ``mean_pvalue``): the between-member variance of the
       time average over its ergodic expectation ``lrv / n`` (1 = ergodic in the mean), F test.
       Effect size: ``ratio`` with its (1 - alpha) interval, the member-specific variance
       ``var_mu = (ratio - 1) lrv / n`` with interval, and ``mde_var_mu``, the smallest var(mu)
       found with probability ``power`` (80%) at this S, T and tau.
    4. **Distribution check** (``ks_pvalue``): :func:`distribution_check` thinned at 3 tau_upper.

    Decision rule, in this order:

    - "inconclusive" if ``n_steps < min_steps`` (32), fewer than ``min_members`` (4) finite
      members, or no fluctuation across members;
    - "non-stationary" if the drift test rejects at ``drift_alpha`` (0.01) and the fitted change of
      the mean squared deviation is at least ``drift_tol`` (25%) of its level: the mean test presumes
      a stationary window (members spreading apart, random walks, weight norms growing at
      member-specific rates);
    - "inconclusive" if no batch length resolves tau (the series is shorter than about
      ``3 * 6 tau`` steps, or 30 decay lengths); ``steps_needed`` says how many would (from the
      lower bounds the short series gives);
    - "non-ergodic" if the ANOVA rejects at ``alpha_mean = (1 - ks_share) alpha`` (0.04);
    - "non-ergodic" if the distribution check rejects at ``ks_share * alpha`` (0.01), only where the
      window spans at least 50 tau_upper (below that it is reported, never decisive);
    - otherwise "ergodic", worded as "no member-specific mean larger than sd(mde_var_mu)".

    The level is split (Bonferroni) so that the rate of "non-ergodic" on an ergodic, stationary
    process is at most alpha; measured rates for S = 256 and T = 500..8000 on white, AR(1),
    two-state switching and shared-trend processes are in docs/calibration.md. ``slope``,
    ``omega_exponent`` (variance scaling and Omega(t), :func:`variance_scaling`,
    :func:`fluctuation_metric`) are descriptive and do not enter the verdict; ``slope_tol`` is
    accepted for compatibility and unused. ``n_boot = 0`` skips the slope's bootstrap interval;
    ``describe=False`` skips the descriptive numbers altogether (NaN; the verdict is unchanged).
    ``spacing``: training steps between consecutive time indices (a probe recorded every 5 steps:
    5); the step counts written in ``reason`` are in training steps, every field stays in time
    indices.

    Cost depends on the shapes only (no data-dependent slow path; the distribution check's samples
    are at most 2,500 per member). Vectorised over observables (blocks of about 32 MiB of float64);
    the bootstrap draws (``rng``) are shared, so an observable gets the same numbers alone or in a
    batch. Returns an :class:`ErgodicityResult` of arrays over ``x.shape[1:-1]``: the observable
    axes, x's shape without ``member_axis`` (default 0) and ``axis`` (time, default -1), so a stored
    ``[S, T, P]`` array is ``assess_many(x, axis=1)``.
    """
    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    S, T0 = x.shape[0], x.shape[-1]
    burn_in = _as_int(burn_in, "burn_in", 0)
    if burn_in >= T0:
        raise ValueError(f"burn_in={burn_in} leaves no steps of the {T0} in x; pass burn_in < {T0}.")
    alpha = _check_alpha(alpha)
    drift_alpha = _check_alpha(drift_alpha, "drift_alpha")
    power = _check_alpha(power, "power")
    if not (isinstance(ks_share, numbers.Real) and 0 < ks_share < 1):
        raise ValueError(f"ks_share must be in (0, 1); got {ks_share!r}.")
    if not (isinstance(drift_tol, numbers.Real) and drift_tol >= 0):
        raise ValueError(f"drift_tol must be >= 0; got {drift_tol!r}.")
    min_steps = _as_int(min_steps, "min_steps", 2 * _as_int(min_blocks, "min_blocks", 1))
    min_members = _as_int(min_members, "min_members", 2)
    n_windows = _as_int(n_windows, "n_windows", 2)
    n_boot = _as_int(n_boot, "n_boot", 0)
    max_pairs = _as_int(max_pairs, "max_pairs", 1)
    if not (isinstance(slope_tol, numbers.Real) and 0 < slope_tol < 0.5):
        raise ValueError(f"slope_tol must be in (0, 0.5); got {slope_tol!r}.")
    if not (isinstance(thin_factor, numbers.Real) and thin_factor > 0):
        raise ValueError(f"thin_factor must be positive; got {thin_factor!r}.")
    spacing = _as_int(spacing, "spacing", 1)
    alpha_mean = (1.0 - float(ks_share)) * alpha
    alpha_ks = float(ks_share) * alpha

    full = _flat(x)
    P = full.shape[1]
    valid = np.isfinite(full).all(axis=-1)  # [S, P], burn-in included
    n_members = valid.sum(axis=0)
    x3 = full[..., burn_in:]
    T = x3.shape[-1]
    uniforms = _as_rng(rng).random((n_boot, S))
    keys = [
        "resolved",
        "batch_length",
        "n_batches",
        "n_used",
        "lrv",
        "gamma0",
        "tau",
        "tau_upper",
        "decay",
        "needed_length",
        "ratio",
        "df1",
        "df2",
        "pvalue",
        "drift",
        "drift_pvalue",
        "slope",
        "slope_lo",
        "slope_hi",
        "fit_start",
        "omega_exponent",
        "ks_stat",
        "ks_pvalue",
    ]
    if T >= min_steps:

        def block(b, v):
            out = _assess_block(
                b,
                v.T,
                uniforms,
                alpha=alpha,
                n_windows=n_windows,
                min_blocks=min_blocks,
                thin_factor=float(thin_factor),
                max_pairs=max_pairs,
                describe=bool(describe),
            )
            return tuple(out[k] for k in keys)

        parts = _map_observables(block, x3, valid.T, cost=6)
        num = dict(zip(keys, parts))
    else:
        num = {k: np.full(P, np.nan) for k in keys}
        num["resolved"] = np.zeros(P, bool)
        for k in ("batch_length", "n_batches", "n_used", "fit_start"):
            num[k] = np.zeros(P, np.int64)
    num.update(_effects(num, alpha=alpha, alpha_mean=alpha_mean, power=power))
    num["mean_pvalue"] = num.pop("pvalue")
    num["tau_int"] = num.pop("tau")
    num["decay_length"] = num.pop("decay")
    num["mean_df1"], num["mean_df2"] = num.pop("df1"), num.pop("df2")
    rows = dict(num, tau=num["tau_int"], n_members=n_members, n_diverged=S - n_members)
    decided = [
        _decide(
            {k: v[j] for k, v in rows.items()},
            T=T,
            alpha=alpha,
            alpha_mean=alpha_mean,
            alpha_ks=alpha_ks,
            drift_alpha=drift_alpha,
            drift_tol=float(drift_tol),
            min_steps=min_steps,
            min_members=min_members,
            spacing=spacing,
        )
        for j in range(P)
    ]
    lead = x.shape[1:-1]

    def shaped(a, dtype=None):
        return np.asarray(a, dtype=dtype).reshape(lead)

    tau_up = num["tau_upper"]
    return ErgodicityResult(
        verdict=shaped([d[0] for d in decided], dtype=str),
        reason=shaped([d[1] for d in decided], dtype=object),
        steps_needed=shaped([d[2] for d in decided], dtype=np.int64),
        **{k: shaped(num[k], float) for k in _FLOAT_FIELDS},
        tau_resolved=shaped(num["resolved"], bool),
        batch_length=shaped(num["batch_length"], np.int64),
        n_batches=shaped(num["n_batches"], np.int64),
        ks_decisive=shaped(num["resolved"] & (T >= _RESOLVED_TAUS * np.nan_to_num(tau_up, nan=np.inf)), bool),
        fit_start=shaped(num["fit_start"], np.int64),
        n_members=shaped(n_members),
        n_diverged=shaped(S - n_members),
        n_steps=T,
        alpha=alpha,
    )


def assess(
    x, *, burn_in: int = 0, alpha: float = 0.05, member_axis: int = 0, axis: int = -1, **kwargs
) -> ErgodicityResult:
    """Ergodicity verdict for one observable x: [S, T] (members by steps); scalar fields.

    Same numbers and rule as :func:`assess_many` (keyword arguments are passed through); for many
    observables call :func:`assess_many` once rather than this in a loop. ``member_axis`` and
    ``axis`` name the member and time axes of a 2-D x (defaults 0 and -1).
    """
    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    if x.ndim != 2:
        raise ValueError(
            f"assess takes one observable x: [S, T]; got shape {x.shape}. Use assess_many for x: [S, ..., T]."
        )
    res = assess_many(x, burn_in=burn_in, alpha=alpha, **kwargs)

    def scalar(a):
        return a.item() if isinstance(a, np.ndarray) else a

    return ErgodicityResult(**{f.name: scalar(getattr(res, f.name)) for f in dataclasses.fields(res)})
