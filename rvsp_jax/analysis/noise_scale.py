"""The simple gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` of McCandlish et al. (2018).

S. McCandlish, J. Kaplan, D. Amodei and the OpenAI Dota Team, "An Empirical Model of Large-Batch
Training", arXiv:1812.06162 (2018). ``G`` is the true (full-data) gradient, ``Sigma`` the covariance of
one example's gradient; ``B_simple`` is the batch size at which the minibatch gradient's noise power
``tr(Sigma)/B`` equals the signal power ``|G|^2``. Two estimators:

- :func:`gradient_noise_scale` from per-example gradients;
- :func:`two_batch_noise_scale` from squared norms of minibatch gradients at two batch sizes
  (their Appendix A.1), which needs no per-example gradients.

Both return unbiased estimates of ``tr(Sigma)`` and ``|G|^2`` and their ratio; the ratio itself is not
unbiased (and is negative when the ``|G|^2`` estimate is), which is why McCandlish et al. average
``tr(Sigma)`` and ``|G|^2`` over many steps before dividing: pass the repeats on the averaging axis.
Pure JAX, batched over leading axes, computed in the dtype of the input (at least float32).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["NoiseScale", "gradient_noise_scale", "two_batch_noise_scale"]


class NoiseScale(NamedTuple):
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


def _float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def gradient_noise_scale(per_example_grads) -> NoiseScale:
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

    Returns:
      :class:`NoiseScale` with fields of shape ``[...]``.
    """
    g = _float(per_example_grads)
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
        raise ValueError(
            f"two_batch_noise_scale: need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}."
        )
    small, big = jnp.broadcast_arrays(_float(sq_norm_small), _float(sq_norm_big))
    grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace_sigma = (small - big) / (1.0 / b_small - 1.0 / b_big)
    if axis is not None:
        if small.ndim == 0:
            raise ValueError("two_batch_noise_scale: axis given but the norms are scalars; pass axis=None.")
        grad_sq = jnp.mean(grad_sq, axis=axis)
        trace_sigma = jnp.mean(trace_sigma, axis=axis)
    return NoiseScale(trace_sigma / grad_sq, trace_sigma, grad_sq)
