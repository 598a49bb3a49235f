"""The simple gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` of McCandlish et al. (2018).

S. McCandlish, J. Kaplan, D. Amodei and the OpenAI Dota Team, "An Empirical Model of Large-Batch
Training", arXiv:1812.06162 (2018). ``G`` is the true (full-data) gradient, ``Sigma`` the covariance of
one example's gradient; ``B_simple`` is the batch size at which the minibatch gradient's noise power
``tr(Sigma)/B`` equals the signal power ``|G|^2``. Two estimators:

- :func:`gradient_noise_scale` from per-example gradients;
- :func:`two_batch_noise_scale` from squared norms of minibatch gradients at two batch sizes
  (their Appendix A.1), which needs no per-example gradients;
- :func:`pooled_noise_scale`: the ratio of the means of ``tr(Sigma)`` and ``|G|^2`` over repeats
  (members), with a bootstrap interval and a flag where the estimate is not to be trusted (numpy).

Both return unbiased estimates of ``tr(Sigma)`` and ``|G|^2`` and their ratio; the ratio itself is not
unbiased (and is negative when the ``|G|^2`` estimate is), which is why McCandlish et al. average
``tr(Sigma)`` and ``|G|^2`` over many steps before dividing: pass the repeats on the averaging axis.
Pure JAX, batched over leading axes, computed in the dtype of the input (at least float32).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rvsp_jax.analysis._common import as_int, as_jax_float
from rvsp_jax.analysis.result import Result

__all__ = [
    "N_OVER_B",
    "NoiseScale",
    "PooledNoiseScale",
    "gradient_noise_scale",
    "pooled_noise_scale",
    "two_batch_noise_scale",
]

N_OVER_B = 10
""":func:`pooled_noise_scale` flags an estimate from ``n`` examples when ``n < 10 x B_simple``."""


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseScale(Result):
    """Noise-scale estimates, each of shape ``[...]``.

    Attributes:
      b_simple: ``trace_sigma / grad_sq``, the simple noise scale (in examples).
      trace_sigma: unbiased estimate of ``tr(Sigma)``, the per-example gradient variance summed over
        parameters.
      grad_sq: unbiased estimate of ``|G|^2``, the squared norm of the true gradient.
    """

    b_simple: jax.Array
    trace_sigma: jax.Array
    grad_sq: jax.Array


def gradient_noise_scale(per_example_grads, *, axis: int = -2) -> NoiseScale:
    """``B_simple`` from ``n`` per-example gradients (McCandlish et al. 2018).

    With ``g_1..g_n`` the per-example gradients and ``gbar`` their mean::

        tr(Sigma)_hat = (1/(n-1)) * sum_i |g_i - gbar|^2        (unbiased sample variance, summed)
        |G|^2_hat     = |gbar|^2 - tr(Sigma)_hat / n            (bias correction: E|gbar|^2 = |G|^2 + tr(Sigma)/n)
        B_simple      = tr(Sigma)_hat / |G|^2_hat

    This equals :func:`two_batch_noise_scale` with ``b_small=1`` (the mean of ``|g_i|^2``) and
    ``b_big=n`` (``|gbar|^2``) exactly, an identity the tests check.

    Args:
      per_example_grads: ``[..., n, P]`` with ``n >= 2`` examples of a ``P``-parameter gradient
        (flatten a parameter pytree with ``jax.flatten_util.ravel_pytree`` or concatenate leaves).
      axis: the examples axis (default -2, just before the parameter axis, which stays last).

    Returns:
      :class:`NoiseScale` with fields of shape ``[...]`` (the input's shape without the examples
      and parameter axes).
    """
    g = as_jax_float(per_example_grads)
    if axis != -2 and g.ndim >= 2:
        pos = as_int(axis, "axis")
        if not -g.ndim <= pos < g.ndim or pos % g.ndim == g.ndim - 1:
            raise ValueError(
                f"gradient_noise_scale: axis={axis} must name the examples axis of [..., n, P], "
                f"not the parameter axis (last) nor beyond the {g.ndim} axes."
            )
        g = jnp.moveaxis(g, pos, -2)
    if g.ndim < 2:
        raise ValueError(
            f"gradient_noise_scale: expected per-example gradients [..., n, P], got shape {g.shape}; "
            "add a parameter axis (P=1) for scalar gradients."
        )
    n = g.shape[-2]
    if n < 2:
        raise ValueError(f"gradient_noise_scale: need n >= 2 examples on axis -2, got n={n}.")
    mean = jnp.mean(g, axis=-2)  # [..., P]
    trace_sigma = jnp.sum((g - mean[..., None, :]) ** 2, axis=(-2, -1)) / (n - 1)
    grad_sq = jnp.sum(mean**2, axis=-1) - trace_sigma / n
    return NoiseScale(trace_sigma / grad_sq, trace_sigma, grad_sq)


def two_batch_noise_scale(sq_norm_small, sq_norm_big, b_small, b_big, *, axis: int | None = -1) -> NoiseScale:
    """``B_simple`` from minibatch gradient norms at two batch sizes (McCandlish et al. 2018, App. A.1).

    For a minibatch gradient ``G_B`` averaged over ``B`` examples, ``E|G_B|^2 = |G|^2 + tr(Sigma)/B``.
    Two batch sizes ``b_small < b_big`` give the unbiased estimates::

        |G|^2_hat     = (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
        tr(Sigma)_hat = (|G_small|^2 - |G_big|^2) / (1/b_small - 1/b_big)

    which are averaged over ``axis`` (repeated measurements: steps, or independent batch pairs)
    before the ratio ``B_simple = tr(Sigma)_hat / |G|^2_hat``, as McCandlish et al. recommend (they
    use an exponential moving average; the plain mean here is its equal-weight counterpart).

    Args:
      sq_norm_small: ``[..., m]`` squared L2 norms ``|G_small|^2`` of gradients averaged over
        ``b_small`` examples (``jnp.sum(g**2, -1)`` of a ``[..., m, P]`` array of gradients).
      sq_norm_big: ``[..., m]`` squared norms ``|G_big|^2`` at ``b_big`` examples; broadcastable
        with ``sq_norm_small``.
      b_small, b_big: batch sizes, ``0 < b_small < b_big``.
      axis: axis of repeats to average over; ``None`` averages nothing (one estimate per entry).

    Returns:
      :class:`NoiseScale` with the averaging axis removed.
    """
    if not (0 < b_small < b_big):
        raise ValueError(f"two_batch_noise_scale: need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}.")
    small, big = jnp.broadcast_arrays(as_jax_float(sq_norm_small), as_jax_float(sq_norm_big))
    grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace_sigma = (small - big) / (1.0 / b_small - 1.0 / b_big)
    if axis is not None:
        if small.ndim == 0:
            raise ValueError("two_batch_noise_scale: axis given but the norms are scalars; pass axis=None.")
        grad_sq = jnp.mean(grad_sq, axis=axis)
        trace_sigma = jnp.mean(trace_sigma, axis=axis)
    return NoiseScale(trace_sigma / grad_sq, trace_sigma, grad_sq)


@dataclasses.dataclass(frozen=True, eq=False)
class PooledNoiseScale(Result):
    """:func:`pooled_noise_scale` per step, each ``[K]`` float64 (``n_examples`` an int).

    b_simple: ``mean tr(Sigma) / mean |G|^2`` over the repeats (NaN where the mean ``|G|^2`` <= 0);
    lo, hi: 95% percentile bootstrap interval over repeats (``hi`` NaN where the resampled ``|G|^2``
    mean is not positive often enough to bound it); flagged: bool, ``n_examples < N_OVER_B x
    b_simple`` or mean ``|G|^2 <= 0`` (the estimate is dominated by the noise of ``|G|^2``).
    """

    b_simple: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    flagged: np.ndarray
    n_examples: int


def pooled_noise_scale(
    trace_sigma, grad_sq, n_examples: int, *, seed: int = 0, resamples: int = 2000
) -> PooledNoiseScale:
    """``B_simple`` as a ratio of means over repeats (e.g. members), per step.

    A per-repeat ratio ``tr(Sigma)_i / |G|^2_i`` is biased and heavy-tailed when ``|G|^2_i`` is small
    next to its own noise (about ``tr(Sigma) / n`` for ``n`` examples), which is the case when ``n`` is
    not much larger than ``B_simple`` itself; McCandlish et al. (2018) therefore average numerator
    and denominator first. This does so over the repeats of each step and flags the steps where
    ``n_examples < N_OVER_B x B_simple``.

    Args:
      trace_sigma, grad_sq: ``[R, K]`` unbiased per-repeat estimates (:func:`gradient_noise_scale`),
        repeats on axis 0 (non-finite repeats, e.g. diverged members, are left out per step).
      n_examples: examples each estimate was made from.
      seed, resamples: the bootstrap (repeats resampled with replacement, ``numpy.random.default_rng``).

    Returns:
      :class:`PooledNoiseScale`; numpy float64.
    """
    trace_sigma, grad_sq = (np.asarray(v, np.float64) for v in (trace_sigma, grad_sq))
    if trace_sigma.shape != grad_sq.shape or trace_sigma.ndim != 2:
        raise ValueError(
            f"pooled_noise_scale: trace_sigma and grad_sq must both be [R, K], got "
            f"{trace_sigma.shape} and {grad_sq.shape}"
        )
    ok = np.isfinite(trace_sigma) & np.isfinite(grad_sq)
    steps = trace_sigma.shape[1]
    rng = np.random.default_rng(seed)
    ratio, lo, hi = (np.full(steps, np.nan) for _ in range(3))
    flagged = np.zeros(steps, bool)
    for k in range(steps):
        t, g = trace_sigma[ok[:, k], k], grad_sq[ok[:, k], k]
        if not t.size:
            continue
        ratio[k] = t.mean() / g.mean() if g.mean() > 0 else np.nan
        flagged[k] = not (g.mean() > 0 and n_examples >= N_OVER_B * ratio[k])
        if t.size >= 2:
            pick = rng.integers(0, t.size, (resamples, t.size))
            tb, gb = t[pick].mean(1), g[pick].mean(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = np.where(gb > 0, tb / gb, np.inf)
            lo[k], hi[k] = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")
    return PooledNoiseScale(ratio, lo, np.where(np.isinf(hi), np.nan, hi), flagged, int(n_examples))
