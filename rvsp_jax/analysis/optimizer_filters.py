"""Optimizers as linear filters of the gradient process: predicted update spectra.

A momentum optimizer turns the gradient sequence ``g_t`` of one parameter into its update sequence
``d_t`` by a linear time-invariant recursion, so (at stationarity) the update power spectral density
is the gradient PSD times the filter's power gain::

    PSD_update(f) = |H(e^{i w})|^2 * PSD_grad(f),    w = 2 pi f / fs.

Recursions, in optax's conventions (``optax.sgd(lr, momentum=beta, nesterov=...)`` is
``optax.trace(decay=beta, nesterov=...)`` followed by scaling by ``-lr``):

- heavy ball: ``u_t = beta u_{t-1} + g_t``, ``d_t = -lr u_t``, so ``H = -lr / (1 - beta e^{-iw})``;
- Nesterov: ``u_t`` as above, ``d_t = -lr (g_t + beta u_t)``, so
  ``H = -lr ((1 + beta) - beta e^{-iw}) / (1 - beta e^{-iw})``;
- Adam's first moment: ``m_t = b1 m_{t-1} + (1 - b1) g_t`` (``optax.ema(b1, debias=False)``), so
  ``H = (1 - b1) / (1 - b1 e^{-iw})``. Adam's update ``-lr mhat_t / (sqrt(vhat_t) + eps)`` is not
  linear; with ``b2`` near 1 and stationary gradients ``vhat_t`` is nearly constant at ``E[g^2]``
  and the update spectrum is approximately ``lr^2 |H|^2 PSD_grad / E[g^2]`` (the debiasing factor
  ``1/(1 - b1^t)`` tends to 1). This is an approximation; the tests bound its error in one regime.

Every gain is of the form ``|a - b e^{-iw}|^2 / |1 - p e^{-iw}|^2``, evaluated as
``((a - b)^2 + 4ab sin^2(w/2)) / ((1 - p)^2 + 4p sin^2(w/2))``, which stays accurate for ``p`` near 1
where ``1 - 2p cos w + p^2`` cancels catastrophically. The test compares these formulas against the
impulse responses of the real optax transformations and against Welch spectra of simulated runs.
Pure JAX, in the dtype of the inputs (at least float32); ``freqs`` in the units of ``fs`` (cycles per
step by default, as returned by ``scipy.signal.welch(x, fs=1.0)``).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from rvsp_jax.analysis._common import restore_time, time_last

__all__ = ["ema_transfer", "momentum_transfer", "nesterov_transfer", "predicted_update_psd"]


def _check_decay(name: str, value, fs) -> None:
    """Validate Python-number hyperparameters (traced values are left to the caller)."""
    if isinstance(value, (int, float)) and not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1) for a stable filter, got {value}.")
    if isinstance(fs, (int, float)) and not fs > 0:
        raise ValueError(f"fs must be a positive sampling frequency, got {fs}.")


def _first_order_gain(freqs, fs, a, b, p) -> jax.Array:
    """``|a - b e^{-iw}|^2 / |1 - p e^{-iw}|^2`` at ``w = 2 pi freqs / fs``; ``freqs: [...]``."""
    s2 = jnp.sin(jnp.pi * jnp.asarray(freqs, dtype=jnp.result_type(float)) / fs) ** 2
    return ((a - b) ** 2 + 4.0 * a * b * s2) / ((1.0 - p) ** 2 + 4.0 * p * s2)


def momentum_transfer(freqs, beta, lr=1.0, fs=1.0) -> jax.Array:
    """Power gain ``|H|^2 = lr^2 / |1 - beta e^{-iw}|^2`` of heavy-ball momentum (``optax.sgd``).

    Args:
      freqs: ``[...]`` frequencies in the units of ``fs``.
      beta: momentum ``0 <= beta < 1`` (``beta = 0`` is plain SGD, gain ``lr^2``).
      lr: learning rate; fs: sampling frequency (steps per unit time; 1 = cycles per step).

    Returns:
      ``[...]`` gain at each frequency.
    """
    _check_decay("momentum_transfer: beta", beta, fs)
    return lr**2 * _first_order_gain(freqs, fs, 1.0, 0.0, beta)


def nesterov_transfer(freqs, beta, lr=1.0, fs=1.0) -> jax.Array:
    """Power gain of optax's Nesterov momentum, ``lr^2 |(1+beta) - beta e^{-iw}|^2 / |1 - beta e^{-iw}|^2``.

    Matches ``optax.sgd(lr, momentum=beta, nesterov=True)``: ``d_t = -lr (g_t + beta u_t)``.
    Arguments and shapes as :func:`momentum_transfer`.
    """
    _check_decay("nesterov_transfer: beta", beta, fs)
    return lr**2 * _first_order_gain(freqs, fs, 1.0 + beta, beta, beta)


def ema_transfer(freqs, decay, lr=1.0, fs=1.0) -> jax.Array:
    """Power gain ``lr^2 (1-decay)^2 / |1 - decay e^{-iw}|^2`` of an exponential moving average.

    Adam's first moment (``decay = b1``; ``optax.ema(b1, debias=False)``), unit gain at ``f = 0``.
    Arguments and shapes as :func:`momentum_transfer`.
    """
    _check_decay("ema_transfer: decay", decay, fs)
    return lr**2 * _first_order_gain(freqs, fs, 1.0 - decay, 0.0, decay)


def predicted_update_psd(
    freqs,
    grad_psd,
    beta,
    lr=1.0,
    *,
    fs=1.0,
    kind: Literal["momentum", "nesterov", "adam"] = "momentum",
    grad_second_moment=None,
    axis: int = -1,
) -> jax.Array:
    """Update PSD predicted from the gradient PSD: ``PSD_update = |H|^2 * PSD_grad``.

    Any PSD convention works (one- or two-sided, any window) as long as ``grad_psd`` and the
    comparison use the same one, since the gain multiplies frequency by frequency.

    Args:
      freqs: ``[F]`` frequencies of ``grad_psd`` (units of ``fs``).
      grad_psd: ``[..., F]`` gradient PSD per series.
      beta: momentum (``kind="momentum"``/``"nesterov"``) or Adam's ``b1`` (``kind="adam"``).
      lr: learning rate.
      kind: ``"momentum"`` (heavy ball, :func:`momentum_transfer`), ``"nesterov"``
        (:func:`nesterov_transfer`) or ``"adam"`` (:func:`ema_transfer` divided by
        ``grad_second_moment``; an approximation valid for ``b2`` near 1, see the module docstring).
      grad_second_moment: ``[...]`` mean square ``E[g^2]`` of each gradient series; required for
        ``kind="adam"`` (it is the value Adam's ``vhat`` settles to), unused otherwise.
      axis: the frequency axis of ``grad_psd`` (default the last); the result keeps it there.

    Returns:
      ``[..., F]`` predicted update PSD.
    """
    grad_psd, pos = time_last(grad_psd, axis, keep_jax=True)
    return restore_time(
        _predicted_update_psd(freqs, grad_psd, beta, lr, fs, kind, grad_second_moment), pos, keeps_axis=True
    )


def _predicted_update_psd(freqs, grad_psd, beta, lr, fs, kind, grad_second_moment) -> jax.Array:
    grad_psd = jnp.asarray(grad_psd)
    freqs = jnp.asarray(freqs)
    if freqs.ndim != 1 or grad_psd.ndim < 1 or grad_psd.shape[-1] != freqs.shape[0]:
        raise ValueError(
            f"predicted_update_psd: need freqs [F] and grad_psd [..., F], got {freqs.shape} and {grad_psd.shape}."
        )
    if kind == "momentum":
        return momentum_transfer(freqs, beta, lr, fs) * grad_psd
    if kind == "nesterov":
        return nesterov_transfer(freqs, beta, lr, fs) * grad_psd
    if kind == "adam":
        if grad_second_moment is None:
            raise ValueError(
                "predicted_update_psd: kind='adam' needs grad_second_moment (E[g^2] per series), the "
                "level Adam's second-moment estimate normalises by."
            )
        scale = jnp.asarray(grad_second_moment)[..., None]
        return ema_transfer(freqs, beta, lr, fs) * grad_psd / scale
    raise ValueError(f"predicted_update_psd: kind must be 'momentum', 'nesterov' or 'adam', got {kind!r}.")
