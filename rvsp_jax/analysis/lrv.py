"""Long-run variance of an ensemble's fluctuations by lugsail batch means, and the mean-ergodicity ANOVA.

Every function takes ``x: [S, ..., T]`` (members first, time last) and works on the deviations
``d_s(t) = x_s(t) - <x(t)>`` from the ensemble-mean path over the finite members, so a trend shared
by every member cancels. Numerics in numpy float64.

**Long-run variance.** For a stationary deviation process with autocovariance ``gamma(k)``,
``sigma^2 = sum_k gamma(k) = tau_int gamma(0)`` and the variance of an n-step time average is
``V(n) = sigma^2/n - G/n^2 + (tail terms)``, ``G = 2 sum_k k gamma(k)``. Batch means of length L
(K = n // L batches per member, aligned to the end of the series) estimate sigma^2 by
``BM(L) = L * sum_{s,k} (b_sk - m_s)^2 / ((S-1)(K-1))``, biased by ``-G (K+1)/(K L)``, which needs
L of ~30 tau for a 1% error. The *lugsail* (flat-top) combination
``LBM(L) = 2 BM(L) - BM(L/2)`` (D. Vats, J. M. Flegal, "Lugsail lag windows for estimating
time-average covariance matrices", Biometrika 109, 2022) cancels the first-order term: its
expectation is ``sigma^2 - G/n`` exactly to first order, which is also the first-order expectation
of ``n * Var(time average)``; so the ratio of the two is unbiased to first order and the residual,
for exponentially decaying correlations (AR(1), two-state switching), is below 0.1% once
``L >= 6 tau`` (computed exactly for AR(1): 1.0005 at L = 6 tau, 1.006 at 4 tau; plain batch
means at 4 tau: 1.15).

**Adaptive batch length (and tau).** On a grid of even L (ratio <= 1.25, closed under doubling)
the estimator gives ``tau(L) = LBM(L) / gamma0_hat`` (gamma0 of the deviations about each member's
mean, with the ``1/n`` loss from that demeaning added back) and a correlation decay length
``decay(L) = L (LBM(L) - BM(L)) / LBM(L)`` (an estimate of ``G / sigma^2``). For ``L << tau``,
tau(L) grows like 1.5 L. The selected L is the smallest grid value with ``L >= 3 tau(L)`` and
``L >= 5 decay(L)`` (Sokal's self-consistent window rule, applied to batch means; the decay rule
catches a slow component under fast noise, whose tau_int understates how slowly it decorrelates),
and the test runs at **2L** with at least ``MIN_BATCHES`` batches: ``>= 6 tau`` and ``>= 10`` decay
lengths, and a selection that saw a chance-low variance does not hand the test a low denominator
(see :func:`_select`). Where no L qualifies, tau is not resolved by the series: the largest tau(L)
seen is then only a lower bound, and so is the number of steps it implies. Measured bias of tau
(docs/calibration.md): within a few percent down to T = 20 tau, where Sokal's window on
member-demeaned autocorrelations is biased low by 20-60%.

**Mean-ergodicity ANOVA.** ``F = n * sum_s m_s^2 / ((S-1) LBM(L))``, m_s the member's time average
of its deviation over the last ``n = K L`` steps: the between-member variance of the time average
relative to what the members' own long-run variance predicts (1 when ergodic in the mean; ``1 + n
var(mu) / sigma^2`` with member-specific means of variance var(mu)). Reference: F with ``S - 1``
and Satterthwaite degrees of freedom of the lugsail estimate (exact for Gaussian batch means:
``LBM = sigma^2 (a chi2_{(S-1)(K-1)} - b chi2_{(S-1)K}) / (S-1)``). Its power against member-specific
means equals that of a one-way ANOVA on the raw values of white noise (same non-centrality, slightly
fewer denominator degrees of freedom).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.stats

from rvsp_jax.analysis.result import Result

__all__ = [
    "BATCH_TAUS",
    "MIN_BATCHES",
    "SELECT_DECAYS",
    "SELECT_TAUS",
    "LongRunVariance",
    "batch_grid",
    "long_run_variance",
    "lugsail_df",
]

SELECT_TAUS = 3.0
"""The selected L satisfies L >= SELECT_TAUS * tau(L); the test runs at 2L (>= 6 tau)."""
SELECT_DECAYS = 5.0
"""... and L >= SELECT_DECAYS * decay(L) (2L >= 10 decay lengths). For AR(1) this is no stricter
than the tau rule (decay = 2 phi / (1 - phi^2) < tau / 2), but for a slow component under fast
noise (tau small, decay long) it is the binding one: two-state switching (p = 0.01) plus unit
noise has tau = 50 but decays like a chain with tau 99, and batches of 5 tau left the ratio 4%
high (5.3% rejections at 4%)."""
BATCH_TAUS = 2 * SELECT_TAUS
"""Test batch length in integrated autocorrelation times (at least)."""
MIN_BATCHES = 3
"""Fewest test batches for a decision (so decisions need at least ~18 tau steps)."""
_TAU_MARGIN = 2.0
"""Standard errors of the lugsail estimate added to tau for the conservative bound tau_upper."""


@dataclasses.dataclass(frozen=True, eq=False)
class LongRunVariance(Result):
    """Lugsail batch-means long-run variance of the deviations and the mean-ergodicity ANOVA.

    Arrays over the observable axes ``[...]`` (float64 unless said).

    resolved       bool: a batch length satisfies the rule with >= MIN_BATCHES batches at 2L.
    batch_length   the test's batch length (twice the selected L; where not resolved, the largest
                   grid L, with 2 batches).
    n_batches      K = n_used // L (int); n_used = K L steps at the end of the series are used.
    lrv            long-run variance sigma^2 of the deviations (lugsail at L).
    gamma0         variance of the deviations (corrected for member demeaning).
    tau            lrv / gamma0: integrated autocorrelation time in steps (a lower bound where not
                   resolved); tau_upper: tau plus 2 standard errors (the conservative bound the
                   guards use).
    decay          correlation decay length G / sigma^2 = 2 sum_k k gamma(k) / sum_k gamma(k)
                   (steps), from L (lugsail - plain batch means) / lugsail.
    needed_length  the test batch length the rule asks for, 2 max(3 tau, 5 decay) (a lower bound
                   where not resolved); decisions need MIN_BATCHES of them.
    ratio          F: between-member variance of the n_used-step time average over its ergodic
                   expectation lrv / n_used (1 = ergodic in the mean).
    df1, df2       degrees of freedom of the F reference (S - 1; Satterthwaite for the lugsail).
    pvalue         upper-tail p-value of ratio (NaN where not resolved).
    """

    resolved: np.ndarray
    batch_length: np.ndarray
    n_batches: np.ndarray
    n_used: np.ndarray
    lrv: np.ndarray
    gamma0: np.ndarray
    tau: np.ndarray
    tau_upper: np.ndarray
    decay: np.ndarray
    needed_length: np.ndarray
    ratio: np.ndarray
    df1: np.ndarray
    df2: np.ndarray
    pvalue: np.ndarray


def batch_grid(T: int) -> np.ndarray:
    """Even batch lengths 2, 4, 6, then {4, 5, 6, 7} x 2^j up to T // 2 (at least 2 batches):
    consecutive ratio <= 1.25, and closed under doubling (the test runs at twice the selected L).
    [G] int."""
    if T < 4:
        return np.zeros(0, dtype=np.int64)
    j = np.arange(1, max(2, int(math.log2(T)) + 1))
    g = np.unique(np.concatenate([[2, 4, 6], (np.array([4, 5, 6, 7])[:, None] * 2**j).ravel()]))
    return g[g <= T // 2].astype(np.int64)


def lugsail_df(K, members) -> np.ndarray:
    """Satterthwaite degrees of freedom of the pooled lugsail estimate with K batches.

    Per member (Gaussian batch means, half batches h, full batches their pair means):
    ``LBM/sigma^2 = c1 chi2_{K-1} - c2 chi2_K`` with ``c1 = 2/(K-1) - 1/(2K-1)``, ``c2 = 1/(2K-1)``;
    its variance ``2 (K-1) c1^2 + 2 K c2^2`` (about 5/K for large K, against 2/K for plain batch
    means); pooled over ``members - 1`` independent contrasts.
    """
    K = np.asarray(K, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        c1 = 2.0 / (K - 1.0) - 1.0 / (2.0 * K - 1.0)
        c2 = 1.0 / (2.0 * K - 1.0)
        v = 2.0 * (K - 1.0) * c1**2 + 2.0 * K * c2**2
        return np.where(K >= 2, 2.0 * (np.asarray(members, float) - 1.0) / v, np.nan)


def _lrv_block(dev: np.ndarray, n: np.ndarray, grid: np.ndarray):
    """Lugsail numbers for every grid L. dev: [S, p, T] (0 for excluded members), n: [p] members.

    Returns per grid L ([p, G]): lugsail lrv, plain batch means, gamma0, the numerator
    n_used * sum m^2 / (S-1), and K.
    """
    S, p, T = dev.shape
    G = grid.size
    cs = np.concatenate([np.zeros((S, p, 1)), np.cumsum(dev, axis=-1)], axis=-1)
    sq = np.concatenate(
        [np.zeros((p, 1)), np.cumsum(np.einsum("spt,spt->pt", dev, dev), axis=-1)], axis=-1
    )  # [p, T+1]: cumulative sum over steps of sum_s d^2
    dof = np.maximum(n - 1, 1).astype(float)  # [p]
    lrv = np.full((p, G), np.nan)
    plain = np.full((p, G), np.nan)
    gam = np.full((p, G), np.nan)
    num = np.full((p, G), np.nan)
    Ks = T // grid
    for g, (L, K) in enumerate(zip(grid, Ks)):
        used = K * L
        start = T - used
        half = L // 2
        c = cs[..., start::half]  # [S, p, 2K+1] cumulative sums at the half-batch edges (a view)
        hs = c[..., 1:] - c[..., :-1]  # half-batch sums
        bs = c[..., 2::2] - c[..., :-2:2]  # full-batch sums
        msum = c[..., -1] - c[..., 0]  # [S, p]
        msq = np.einsum("sp,sp->p", msum, msum) / used**2  # sum_s m_s^2
        # sum_{s,k} (b - m)^2 = sum b^2 - K sum m^2 (and likewise for the 2K half batches)
        ss_b = np.einsum("spk,spk->p", bs, bs) / L**2 - K * msq
        ss_h = np.einsum("spk,spk->p", hs, hs) / half**2 - 2 * K * msq
        plain[:, g] = L * ss_b / (dof * (K - 1))
        lrv[:, g] = 2.0 * plain[:, g] - half * ss_h / (dof * (2 * K - 1))
        c0 = (sq[:, T] - sq[:, start] - used * msq) / (dof * (used - 1))
        gam[:, g] = ((used - 1) * c0 + lrv[:, g]) / used
        num[:, g] = used * msq / dof
    return lrv, plain, gam, num, np.broadcast_to(Ks, (p, G))


def _select(
    lrv, plain, gam, num, Ks, grid, n, *, batch_taus=SELECT_TAUS, batch_decays=SELECT_DECAYS, min_batches=MIN_BATCHES
):
    """Chosen batch length per observable and the ANOVA at it. Inputs [p, G] (n: [p]).

    The rule is checked at L (the smallest grid L with L >= 3 tau(L) and L >= 5 decay(L)) and the
    test runs at 2L, whose lugsail estimate 2 BM(2L) - BM(L) enters BM(L) with the opposite sign to
    the selection's 2 BM(L) - BM(L/2): a selection that happened to see a low long-run variance
    does not hand the test a low denominator (selecting and testing at the same L did: 21%
    rejections at 5% among the ensembles where the rule fired early).
    """
    p, G = lrv.shape
    double = np.searchsorted(grid, 2 * grid)
    has_double = (double < G) & (grid[np.minimum(double, G - 1)] == 2 * grid)
    double = np.where(has_double, double, G - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = lrv / gam
        # first-order bias of plain batch means: lugsail - BM(L) = G / L, so decay = G / sigma^2
        decay = grid * (lrv - plain) / lrv
        need = np.maximum(batch_taus * tau, batch_decays * decay)
        test_ok = has_double[None, :] & (Ks[:, double] >= min_batches) & (lrv[:, double] > 0)
        ok = test_ok & (lrv > 0) & (gam > 0) & (grid[None, :] >= need)
    resolved = ok.any(axis=-1) & (n >= 2)
    sel = np.where(resolved, np.argmax(ok, axis=-1), G - 1)
    pick = np.where(resolved, double[sel], G - 1)
    take = lambda a, i=pick: np.take_along_axis(a, i[:, None], axis=-1)[:, 0]  # noqa: E731
    L, K = grid[pick], take(Ks)
    lrv_, gam_, num_ = take(lrv), take(gam), take(num)
    with np.errstate(invalid="ignore", divide="ignore"):
        finite = lambda a: np.where(np.isfinite(a), a, -np.inf)  # noqa: E731
        # unresolved: the largest values seen on the grid are lower bounds of the true ones
        tau_ = np.where(resolved, lrv_ / gam_, finite(tau).max(axis=-1))
        need_ = np.where(resolved, 2 * take(need, sel), 2 * finite(need).max(axis=-1))
        tau_, need_ = (np.where(np.isfinite(a), a, np.nan) for a in (tau_, need_))
        df1 = (n - 1).astype(float)
        df2 = lugsail_df(K, n)
        ratio = num_ / lrv_
        tau_up = tau_ * (1.0 + _TAU_MARGIN * np.sqrt(2.0 / df2))
        pvalue = np.where(resolved, scipy.stats.f.sf(ratio, df1, df2), np.nan)
    return dict(
        resolved=resolved,
        batch_length=L.astype(np.int64),
        n_batches=K.astype(np.int64),
        n_used=(L * K).astype(np.int64),
        lrv=np.where(resolved, lrv_, np.nan),
        gamma0=gam_,
        tau=tau_,
        tau_upper=tau_up,
        decay=np.where(resolved, take(decay), np.nan),
        needed_length=need_,
        ratio=np.where(resolved, ratio, np.nan),
        df1=df1,
        df2=df2,
        pvalue=pvalue,
    )


def lrv_block(dev: np.ndarray, n: np.ndarray) -> dict:
    """:class:`LongRunVariance` fields as a dict of [p] arrays for a block (dev, n from deviations)."""
    grid = batch_grid(dev.shape[-1])
    if grid.size == 0:
        p = dev.shape[1]
        nan = np.full(p, np.nan)
        zeros = np.zeros(p, np.int64)
        return dict(
            resolved=np.zeros(p, bool),
            batch_length=zeros,
            n_batches=zeros,
            n_used=zeros,
            lrv=nan,
            gamma0=nan,
            tau=nan,
            tau_upper=nan,
            decay=nan,
            needed_length=nan,
            ratio=nan,
            df1=nan,
            df2=nan,
            pvalue=nan,
        )
    return _select(*_lrv_block(dev, n, grid), grid, n)


def long_run_variance(x, *, member_axis: int = 0, axis: int = -1) -> LongRunVariance:
    """Lugsail batch-means long-run variance and mean-ergodicity ANOVA of x: [S, ..., T].

    See the module docstring for the estimator, the batch-length rule and the F reference.
    Members with a non-finite value are excluded. Returns a :class:`LongRunVariance` of arrays over
    ``x.shape[1:-1]`` (x's shape without ``member_axis`` and ``axis``, the member and time axes).
    """
    from rvsp_jax.analysis._common import ensemble_last
    from rvsp_jax.analysis.ergodicity._base import _as_ensemble, _deviations, _flat, _map_observables

    x = _as_ensemble(ensemble_last(x, member_axis, axis)[0])
    fields = [f.name for f in dataclasses.fields(LongRunVariance)]

    def block(b):
        dev, _, n = _deviations(b)
        out = lrv_block(dev, n)
        return tuple(out[k] for k in fields)

    parts = _map_observables(block, _flat(x), cost=4)
    lead = x.shape[1:-1]
    return LongRunVariance(**{k: a.reshape(lead) for k, a in zip(fields, parts)})
