"""Minibatch gradient noise measured after training, from recorded parameters.

A run recorded with ``ProbeConfig(probes="params", index="all")`` holds every member's parameters
``theta_t`` at the probed steps. At such a step this module rebuilds, for one member:

- the minibatches it draws at steps ``t, t+1, ..., t+M-1`` (:func:`minibatch_indices`, from
  :meth:`rvsp_jax.training.ensemble.Ensemble.orders`: the first is the minibatch of step ``t`` itself, the
  others those its next iterations would use);
- their gradients at the *frozen* weights ``theta_t``, ``g_m = grad L_{B_m}(theta_t)``;
- the reference gradient ``G = grad L_R(theta_t)``, the mean over a fixed subset ``R`` of the
  training set (:func:`reference_subset`), standing in for the full-data gradient;
- the gradient noise ``xi_m = g_m - G``, and the per-example gradients on ``R``, from which
  :func:`rvsp_jax.analysis.gradient_noise_scale` gives ``B_simple = tr(Sigma) / |G|^2``
  (McCandlish et al. 2018).

The M noise vectors are the same minibatch noise the member meets along its iterations, with the
weights' drift over those M steps removed, so they are independent draws of one distribution (what
the tail-index estimators of :mod:`rvsp_jax.analysis.tails` assume).

Gradients are float32 and flat in the recording's parameter order (flax's leaf order, each array
raveled: ``jax.flatten_util.ravel_pytree`` order), so ``noise[:, j]`` is the entry named
``run.probe_names["params"][j]``. Inputs are scaled as the trainer scales them
(``uint8 * (1/255)`` in float32), so the gradient of the step's own minibatch reproduces the
trainer's recorded ``grads`` probe up to float32 rounding of differently batched matrix products.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rvsp_jax.analysis.noise_scale import NoiseScale, gradient_noise_scale
from rvsp_jax.analysis.result import Result
from rvsp_jax.training.ensemble import Ensemble
from rvsp_jax.training.model import MLP, init_params, loss_and_accuracy

__all__ = ["GradientNoise", "inputs", "make_noise_fn", "minibatch_indices", "reference_subset", "unravel_fn"]

_REFERENCE_STREAM = 0x67726566  # "gref": stream tag of the reference-subset draw


@dataclasses.dataclass(frozen=True, eq=False)
class GradientNoise(Result):
    """Gradient noise of one member at one step (float32).

    noise: ``[M, P]`` minibatch gradients minus the reference gradient, ``g_m - G``.
    reference_grad: ``[P]`` ``G``, the mean gradient over the reference subset (the mean of its
      per-example gradients).
    minibatch_sq_norms: ``[M]`` ``|g_m|^2``.
    scale: :class:`~rvsp_jax.analysis.NoiseScale` of scalars from the reference subset's
      per-example gradients (``B_simple``, ``tr(Sigma)``, ``|G|^2``, unbiased estimates).
    """

    noise: jax.Array
    reference_grad: jax.Array
    minibatch_sq_norms: jax.Array
    scale: NoiseScale


def inputs(images: np.ndarray) -> np.ndarray:
    """Model inputs float32 ``[..., 784]`` of uint8 images ``[..., 28, 28]``, scaled exactly as the
    trainer scales a minibatch (``x.astype(float32) * float32(1/255)``)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise ValueError(f"inputs expects uint8 images [..., H, W], got {images.dtype} {images.shape}")
    flat = images.reshape(*images.shape[:-2], -1)
    return flat.astype(np.float32) * np.float32(1.0 / 255.0)


def reference_subset(n_train: int, size: int, base_seed: int) -> np.ndarray:
    """Sorted indices int64 ``[size]`` of the fixed reference subset of the training set, drawn
    without replacement by ``numpy.random.default_rng((tag, base_seed))`` (the same for every
    member, every ``S`` and every ``vary``)."""
    if not 2 <= size <= n_train:
        raise ValueError(f"the reference subset needs between 2 and {n_train} (the training set) examples, got {size}")
    rng = np.random.default_rng([_REFERENCE_STREAM, base_seed % 2**64])
    return np.sort(rng.choice(n_train, size, replace=False)).astype(np.int64)


def minibatch_indices(ensemble: Ensemble, step: int, count: int = 1) -> np.ndarray:
    """Training-set indices int32 ``[S, count, B]`` of the minibatches every member draws at steps
    ``step, step + 1, ..., step + count - 1`` (the trainer's own order, from
    :meth:`~rvsp_jax.training.ensemble.Ensemble.orders`; steps past the end of training continue the order).

    ``count`` is at most the steps per epoch, so the steps span at most two epochs.
    """
    spe, b = ensemble.steps_per_epoch, ensemble.config.batch_size
    if not 1 <= count <= spe:
        raise ValueError(f"count must be between 1 and the steps per epoch ({spe}), got {count}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    orders = ensemble.orders(step // spe)[: ensemble.members, :, : spe * b]  # [S, 2, spe * B]
    batches = orders.reshape(ensemble.members, 2 * spe, b)  # this epoch's batches, then the next's
    pos = step % spe
    return batches[:, pos : pos + count]


def unravel_fn(model: MLP) -> Callable[[np.ndarray], dict]:
    """The function mapping a flat parameter vector ``[P]`` (the recording's ``index="all"`` order)
    back to the model's parameter pytree."""
    template = jax.eval_shape(partial(init_params, model), jax.random.PRNGKey(0))
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)
    return ravel_pytree(zeros)[1]


def make_noise_fn(model: MLP) -> Callable[..., GradientNoise]:
    """A jitted ``noise(params, x, y, x_ref, y_ref) -> GradientNoise`` for one member.

    params: one member's parameter pytree (``unravel_fn(model)(flat)``).
    x: float32 ``[M, B, 784]``, y: ``[M, B]``: M minibatches (:func:`inputs` of their images).
    x_ref: float32 ``[n, 784]``, y_ref: ``[n]``: the reference subset, ``n >= 2``.

    Every gradient is of ``loss_and_accuracy``'s mean cross-entropy, computed in float32;
    per-example gradients come from ``jax.vmap(jax.grad)`` over the reference examples.
    """

    def loss(params, x, y):
        return loss_and_accuracy(model, params, x, y)[0]

    def flat_grad(params, x, y):
        return ravel_pytree(jax.grad(loss)(params, x, y))[0]

    def one_example(params, x, y):
        return flat_grad(params, x[None], y[None])

    @jax.jit
    def noise(params, x, y, x_ref, y_ref) -> GradientNoise:
        g = jax.vmap(flat_grad, in_axes=(None, 0, 0))(params, x, y)  # [M, P]
        per_example = jax.vmap(one_example, in_axes=(None, 0, 0))(params, x_ref, y_ref)  # [n, P]
        reference = jnp.mean(per_example, axis=0)
        return GradientNoise(g - reference, reference, jnp.sum(g * g, axis=-1), gradient_noise_scale(per_example))

    return noise
