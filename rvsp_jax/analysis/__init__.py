"""Batched time-series and random-variable analysis of training trajectories (pure functions of arrays).

One axis convention: every estimator that takes a series takes ``axis=`` for its time (or
sample, or frequency) axis, default ``-1`` (time last, ``x: [..., T]``; the examples axis of
:func:`gradient_noise_scale` defaults to ``-2``, before the parameters), and is batched over all
the other axes; ensemble estimators (``[S, ..., T]``: :mod:`~rvsp_jax.analysis.ergodicity`,
:func:`long_run_variance`; :func:`across_members` on ``[S, ...]``) also take ``member_axis=``,
default ``0``. Input is any array-like (numpy, JAX, a stored array: ``adf(run["updates"],
axis=1)`` tests every member and parameter of a stored ``[S, T, P]`` array). A result that
reduces time (a statistic per series) has the input's shape without that axis; a result that
replaces time by a new axis (the lags of :func:`acf`, the frequencies of :func:`welch`, windows,
TAMSD lags) puts it where time was, as ``scipy.signal.welch(axis=)`` does, while an extra axis that
replaces nothing (the models of :func:`spectral_shape`, the two Hill thresholds of
:func:`tail_verdict`) stays last; ensemble results drop the member axis and per-member results
keep it in place. The defaults are the conventions the functions always had, so a call without
``axis``/``member_axis`` gives what it gave before, bit for bit.

Every estimator computes in float64 and returns numpy arrays unless its docstring says otherwise,
and is tested series by series against its reference (statsmodels, scipy) or a known analytic
answer. The exceptions are the estimators written in JAX so that they run inside ``jax.jit`` on the
training's device (:func:`hill`, :func:`simsekli_alpha`, :func:`gradient_noise_scale`,
:func:`two_batch_noise_scale` and the optimizer filters): they return JAX arrays in the input's
float dtype (float32 for recorded trajectories); ``np.asarray(..., np.float64)`` makes them numpy.

Every result is a frozen :class:`Result` (:mod:`~rvsp_jax.analysis.result`): ``repr`` shows its
fields' shapes, ``summary()`` (and ``_repr_html_`` in a notebook) a table of what they hold,
``to_dict()`` plain values; intervals are ``lo``/``hi`` (``<quantity>_lo``/``_hi``) at a
significance level called ``alpha`` everywhere.

Every verdict is a numpy str array (dtype ``<U..``; a str for one series from :func:`assess`) of
names from its module's vocabulary tuple: :data:`STATIONARITY_VERDICTS`
(:func:`stationarity_verdict`), :data:`SHAPE_VERDICTS` and :data:`SHAPE_MODELS`
(:func:`spectral_shape`'s ``verdict`` and ``best``; ``"invalid"``, :data:`SHAPE_INVALID`, outside
both, for a NaN series), :data:`ERGODICITY_VERDICTS` (:func:`assess`) and ``TAIL_VERDICTS``
(:func:`tail_verdict`). :func:`verdict_fractions` turns any of them into fractions. Modules:

- :mod:`~rvsp_jax.analysis.spectral`: acf, pacf, Ljung-Box, periodogram, Welch, spectral slope,
  band-power ratio ("smooth vs jittery"), spectral flatness.
- :mod:`~rvsp_jax.analysis.stationarity`: ADF, KPSS and their joint verdict.
- :mod:`~rvsp_jax.analysis.multiple_testing`: Benjamini-Hochberg FDR control.
- :mod:`~rvsp_jax.analysis.drift`: rolling mean and variance, drift summaries.
- :mod:`~rvsp_jax.analysis.ergodicity`: ensemble vs time averages, variance scaling, Omega(t),
  ergodicity breaking, distribution check, and the verdict :func:`assess`.
- :mod:`~rvsp_jax.analysis.lrv`: lugsail batch-means long-run variance, tau and the
  mean-ergodicity ANOVA behind :func:`assess`.
- :mod:`~rvsp_jax.analysis.alignment`: weight matching of hidden units across members.
- :mod:`~rvsp_jax.analysis.tails`, :mod:`~rvsp_jax.analysis.noise_scale`,
  :mod:`~rvsp_jax.analysis.optimizer_filters`: tail indices, gradient noise scale, optimizer filters.

    >>> from rvsp_jax.analysis import acf, welch, adf, kpss
"""

from rvsp_jax.analysis.alignment import align, apply_permutations, match_weights, permutation_index, permute_trajectory
from rvsp_jax.analysis.drift import DriftSummary, RollingMeanVar, measure_drift, rolling_mean_var
from rvsp_jax.analysis.ergodicity import VERDICTS as ERGODICITY_VERDICTS
from rvsp_jax.analysis.ergodicity import (
    DistributionCheck,
    ErgodicityResult,
    FluctuationMetric,
    VarianceScaling,
    assess,
    assess_many,
    distribution_check,
    ensemble_mean,
    ensemble_variance,
    ergodicity_breaking,
    finite_members,
    fluctuation_metric,
    integrated_autocorr_time,
    running_average,
    tamsd,
    time_averages,
    variance_scaling,
)
from rvsp_jax.analysis.lrv import LongRunVariance, long_run_variance
from rvsp_jax.analysis.multiple_testing import FdrResult, fdr_bh
from rvsp_jax.analysis.noise_scale import NoiseScale, gradient_noise_scale, pooled_noise_scale, two_batch_noise_scale
from rvsp_jax.analysis.optimizer_filters import ema_transfer, momentum_transfer, nesterov_transfer, predicted_update_psd
from rvsp_jax.analysis.result import Result
from rvsp_jax.analysis.spectral import (
    SHAPE_INVALID,
    SHAPE_MODELS,
    SHAPE_VERDICTS,
    LjungBoxResult,
    SpectralShape,
    SpectralSlope,
    acf,
    acf_confint,
    band_power_ratio,
    is_constant,
    ljung_box,
    pacf,
    periodogram,
    spectral_flatness,
    spectral_shape,
    spectral_slope,
    welch,
)
from rvsp_jax.analysis.stationarity import VERDICTS as STATIONARITY_VERDICTS
from rvsp_jax.analysis.stationarity import (
    AdfResult,
    KpssResult,
    adf,
    kpss,
    stationarity_verdict,
    stationarity_verdicts,
    verdict_fractions,
)
from rvsp_jax.analysis.summary import MemberSummary, across_members
from rvsp_jax.analysis.tails import TailVerdict, default_hill_k, hill, simsekli_alpha, tail_verdict
