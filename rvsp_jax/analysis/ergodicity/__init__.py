"""Ergodicity of an ensemble of scalar processes: do time averages equal ensemble averages?

Every function takes ``x: [S, ..., T]``: members on axis 0 (the project convention), time on the
last axis, any number of observables in between (``[S, T]`` one observable, ``[S, P, T]`` P of
them); results keep the middle axes. ``member_axis=`` and ``axis=`` name other member and time axes
(a stored ``[S, T, P]`` array: ``axis=1``); per-member results keep the member axis in place, and a
new axis (blocks, lags, windows) takes the time axis' place. Input may be numpy or JAX, of any float
dtype; all numerics run on the host in numpy/scipy float64 and return float64 arrays.

The verdict (:func:`assess` / :func:`assess_many`: "ergodic", "non-ergodic", "non-stationary" or
"inconclusive", with its reason, effect size and, when undecided, the steps that would decide it)
rests on tests with a measured size and power (docs/calibration.md):

- a **long-run-variance ANOVA** on the deviations ``x_s(t) - <x(t)>`` from the ensemble-mean path
  (shared trends cancel): the between-member variance of the time averages against what each
  member's own long-run variance predicts, from lugsail batch means with a batch length adapted to
  the measured integrated autocorrelation time (:mod:`rvsp_jax.analysis.lrv`);
- a **variance-drift test** of the deviations (members spreading apart or converging: the window is
  not stationary);
- a **distribution check** (:func:`distribution_check`): one member's thinned time samples against
  the other members' values at the same steps, KS, Fisher-combined over independent pairs.

Descriptive tools, not used by the verdict:

- :func:`ensemble_mean`, :func:`ensemble_variance`: cross-sections per step; :func:`time_averages`
  (block means per member), :func:`running_average`.
- :func:`variance_scaling`: variance across members of the W-step time average for log-spaced W and
  its log-log slope with a member-bootstrap interval (-1: ergodic with short memory; 0: a plateau,
  member-specific means; a 1/W + var(mu) curve still has a local slope near -0.8, which is why the
  verdict no longer reads it).
- :func:`fluctuation_metric`: the Thirumalai-Mountain fluctuation metric
  ``Omega(t) = mean_s (xbar_s(t) - <xbar(t)>)^2`` of the running time averages (D. Thirumalai,
  R. D. Mountain, T. R. Kirkpatrick, Phys. Rev. A 39, 3563 (1989)), ~1/t when ergodic.
- :func:`tamsd`, :func:`ergodicity_breaking`: time-averaged MSD and the ergodicity-breaking
  parameter ``EB = <TAMSD^2>/<TAMSD>^2 - 1`` (R. Metzler, J.-H. Jeon, A. G. Cherstvy, E. Barkai,
  Phys. Chem. Chem. Phys. 16, 24128 (2014)); Brownian motion: ``EB ~ (4/3) lag/T``.
- :func:`integrated_autocorr_time`: Sokal's adaptive-window tau of the member-demeaned pooled ACF
  (biased low when T/tau is small: measured in docs/calibration.md; the verdict uses the
  batch-means tau of :func:`rvsp_jax.analysis.lrv.long_run_variance` instead).

Diverged members: a member whose series (of that observable, burn-in included) holds any NaN or inf
is excluded from every ensemble statistic and counted (``n_diverged``); it is never averaged in.
:func:`finite_members` returns the mask. Per-member outputs (:func:`time_averages`,
:func:`running_average`, :func:`tamsd`) are NaN for such a member.

Large inputs are processed in blocks of observables so that temporaries stay around 32 MiB.

Modules: :mod:`.results` (result types, :data:`VERDICTS`), :mod:`.averages` (cross-sections,
time averages, tau, TAMSD and EB), :mod:`.scaling` (variance scaling, fluctuation metric),
:mod:`.distribution` (the distribution check), :mod:`.verdict` (:func:`assess_many`,
:func:`assess`); ``_base`` holds the shared building blocks. Every name is importable from
``rvsp_jax.analysis.ergodicity`` as before the split.
"""

from __future__ import annotations

from rvsp_jax.analysis.ergodicity._base import (  # noqa: F401  (used by lrv and the tests)
    _as_ensemble,
    _as_rng,
    _check_alpha,
    _deviations,
    _flat,
    _map_observables,
    _ols_slope,
    _safe_log,
    finite_members,
)
from rvsp_jax.analysis.ergodicity.averages import (
    ensemble_mean,
    ensemble_variance,
    ergodicity_breaking,
    integrated_autocorr_time,
    running_average,
    tamsd,
    time_averages,
)
from rvsp_jax.analysis.ergodicity.distribution import distribution_check
from rvsp_jax.analysis.ergodicity.results import (
    VERDICTS,
    DistributionCheck,
    ErgodicityResult,
    FluctuationMetric,
    VarianceScaling,
)
from rvsp_jax.analysis.ergodicity.scaling import fluctuation_metric, variance_scaling
from rvsp_jax.analysis.ergodicity.verdict import assess, assess_many

__all__ = [
    "VERDICTS",
    "DistributionCheck",
    "ErgodicityResult",
    "FluctuationMetric",
    "VarianceScaling",
    "assess",
    "assess_many",
    "distribution_check",
    "ensemble_mean",
    "ensemble_variance",
    "ergodicity_breaking",
    "finite_members",
    "fluctuation_metric",
    "integrated_autocorr_time",
    "running_average",
    "tamsd",
    "time_averages",
    "variance_scaling",
]
