"""Result types and verdict names of :mod:`rvsp_jax.analysis.ergodicity`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from rvsp_jax.analysis.result import Result

VERDICTS = ("ergodic", "non-ergodic", "non-stationary", "inconclusive")


# ----------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True, eq=False)
class VarianceScaling(Result):
    """Variance across members of the W-step time average, and its log-log slope.

    windows: [K]            window lengths W (int, log-spaced).
    variance: [..., K]      mean over the non-overlapping W-blocks (aligned to the end of the series)
                            of the across-member variance (ddof=1) of the block means.
    slope: [...]            least-squares slope of log(variance) on log(W) over W >= fit_start.
    lo, hi: [...]           percentile bootstrap interval of the slope (members resampled).
    fit_start: [...]        first window of the fit (int).
    tau_int: [...]          integrated autocorrelation time used for fit_start (NaN if given).
    """

    RENAMED: ClassVar[dict[str, str]] = {"ci_low": "lo", "ci_high": "hi"}

    windows: np.ndarray
    variance: np.ndarray
    slope: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    fit_start: np.ndarray
    tau_int: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class FluctuationMetric(Result):
    """Thirumalai-Mountain fluctuation metric of the running time averages.

    omega: [..., T]   Omega(t) for t = 1..T (index t-1); ddof=0 over the finite members.
    exponent: [...]   least-squares slope of log Omega on log t over t >= fit_start (log-spaced
                      points); -1 when ergodic with short memory, 0 with a random intercept,
                      +1 for a random walk.
    fit_start: [...]  first t of the fit (int).
    """

    omega: np.ndarray
    exponent: np.ndarray
    fit_start: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionCheck(Result):
    """One member's time samples against the other members' values at the same steps (KS).

    stat: [...]      mean KS distance D over the pairs.
    pvalue: [...]    Fisher combination of the pairs' KS p-values (NaN if not computable).
    n_pairs: [...]   independent pairs compared (int).
    thin: [...]      thinning stride of the member series (int).
    n_samples: [...] thinned samples per member (int).
    """

    stat: np.ndarray
    pvalue: np.ndarray
    n_pairs: np.ndarray
    thin: np.ndarray
    n_samples: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ErgodicityResult(Result):
    """Verdict on ergodicity and the numbers behind it (see :func:`assess_many` for the rule).

    From :func:`assess_many` every field but ``n_steps``/``alpha`` is an array over the observable
    axes ``[...]`` (``verdict``/``reason`` of dtype str); from :func:`assess` they are scalars.

    verdict            "ergodic", "non-ergodic", "non-stationary" or "inconclusive".
    reason             one sentence in plain words with the numbers that decided it.
    steps_needed       for an inconclusive verdict because the series is short for its memory: the
                       analysed steps that would decide it (a lower bound); else 0.
    ratio              between-member variance of the time average over its ergodic expectation
                       (1 = ergodic in the mean); ratio_lo/high its (1 - alpha) interval.
    mean_pvalue        p-value of the long-run-variance ANOVA (F with mean_df1, mean_df2 dof).
    var_mu             member-specific variance of the means, (ratio - 1) lrv / n (may be < 0 by
                       chance), var_mu_lo/high its interval (clipped at 0).
    mde_var_mu         smallest var(mu) the ANOVA finds with 80% power here.
    lrv, gamma0        long-run variance and variance of the deviations from the ensemble mean.
    tau_int            integrated autocorrelation time lrv / gamma0 (steps; batch means; a lower
                       bound where ``tau_resolved`` is False); tau_upper its conservative bound.
    decay_length       correlation decay length 2 sum k gamma(k) / sum gamma(k) (steps).
    batch_length, n_batches
                       the batch means of the test (L >= 6 tau and >= 10 decay lengths, K >= 3,
                       where resolved).
    drift, drift_pvalue
                       fitted relative change of the deviations' mean square over the window, and
                       the variance-drift test's p-value.
    ks_stat, ks_pvalue distribution check (mean KS distance, Fisher-combined p-value);
                       ks_decisive: whether the window spans 50 tau_upper (only then may it decide).
    slope, slope_lo, slope_hi, fit_start, omega_exponent
                       descriptive: variance-scaling slope with its bootstrap interval (NaN with
                       n_boot = 0), its first window, and the Omega(t) exponent.
    n_members          finite members used; ``n_diverged`` members excluded (non-finite values).
    n_steps            steps analysed (after burn-in); ``alpha`` the level of "non-ergodic".
    """

    RENAMED: ClassVar[dict[str, str]] = {
        f"{q}_ci_{end}": f"{q}_{new}"
        for q in ("ratio", "var_mu", "slope")
        for end, new in (("low", "lo"), ("high", "hi"))
    }

    verdict: np.ndarray | str
    reason: np.ndarray | str
    steps_needed: np.ndarray | int
    ratio: np.ndarray | float
    ratio_lo: np.ndarray | float
    ratio_hi: np.ndarray | float
    mean_pvalue: np.ndarray | float
    mean_df1: np.ndarray | float
    mean_df2: np.ndarray | float
    var_mu: np.ndarray | float
    var_mu_lo: np.ndarray | float
    var_mu_hi: np.ndarray | float
    mde_var_mu: np.ndarray | float
    lrv: np.ndarray | float
    gamma0: np.ndarray | float
    tau_int: np.ndarray | float
    tau_upper: np.ndarray | float
    decay_length: np.ndarray | float
    tau_resolved: np.ndarray | bool
    batch_length: np.ndarray | int
    n_batches: np.ndarray | int
    drift: np.ndarray | float
    drift_pvalue: np.ndarray | float
    ks_stat: np.ndarray | float
    ks_pvalue: np.ndarray | float
    ks_decisive: np.ndarray | bool
    slope: np.ndarray | float
    slope_lo: np.ndarray | float
    slope_hi: np.ndarray | float
    fit_start: np.ndarray | int
    omega_exponent: np.ndarray | float
    n_members: np.ndarray | int
    n_diverged: np.ndarray | int
    n_steps: int
    alpha: float
