"""The pure training step of one member, and the types it reads and returns.

:func:`member_step` is a module-level pure function of one member's state and minibatch: no mesh, no
member axis, nothing captured but the model and the optimizer, so it can be called (and jitted) on
one member alone. The ensemble (:mod:`rvsp_jax.training.ensemble`) vmaps :func:`member_minibatch_step`
over a block of members inside its schedule (:mod:`rvsp_jax.training.schedule`).

Called on one member alone, outside any mesh, the step reproduces that member's trajectory in the
ensemble bit for bit when it is computed as the schedule computes it: vmapped over a block of
``config.block`` lanes (the member in one lane; a lane never depends on the others, e.g. copies of
it), jitted, looped or scanned over the steps (tests/test_step.py; for Adam compare with an ensemble
on one device, since XLA compiles a single-device program's square root and division differently).
Called unbatched, as it is, it agrees to float32 rounding: XLA picks another kernel for an unbatched
dot than for a batched one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rvsp_jax.training.model import loss_and_accuracy


class EnsembleState(NamedTuple):
    """Training state, every leaf with a leading member axis ``[S_pad, ...]`` in the ensemble; one
    member's state (what :func:`member_step` takes) has the same fields without that axis."""

    params: Any
    opt_state: Any
    diverged: jax.Array  # bool [S_pad] (one member: bool [])
    diverged_at: jax.Array  # int32 [S_pad]: step at which the member diverged, -1 if it has not


MemberState = EnsembleState
"""One member's :class:`EnsembleState`: ``params`` and ``opt_state`` pytrees of one network,
``diverged`` bool ``[]``, ``diverged_at`` int32 ``[]``."""


class StepMetrics(NamedTuple):
    """Per-member scalars of one step (float32): minibatch loss and accuracy before the update,
    global L2 norm of the gradient and of the applied update."""

    loss: jax.Array
    accuracy: jax.Array
    grad_norm: jax.Array
    update_norm: jax.Array


class StepContext(NamedTuple):
    """What a probe sees at one step of one member: parameters before and after the update, the
    gradient, and the minibatch (``x: [B, 784]`` float32, ``y: [B]``)."""

    params: Any
    new_params: Any
    grads: Any
    x: jax.Array
    y: jax.Array


Probe = Callable[[StepContext], Any]
"""A pure function of one member's :class:`StepContext` returning a pytree of arrays to record."""


def tree_where(cond, a, b):
    """``jnp.where(cond, a, b)`` leaf by leaf of two pytrees of one structure."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


def all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf is finite (bool ``[]``)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def minibatch(order: jax.Array, pos, images: jax.Array, labels: jax.Array, batch_size: int):
    """Minibatch ``pos`` of an epoch order: ``x`` float32 ``[B, P]`` scaled to [0, 1] and ``y [B]``.

    ``order``: int32 ``[N]``, a permutation of the training set (:mod:`rvsp_jax.training.orders`);
    ``pos``: int32 ``[]``, the step's position in its epoch; ``images``: uint8 ``[N, P]``;
    ``labels``: ``[N]``. Batch ``pos`` is ``order[pos * B : (pos + 1) * B]``.
    """
    idx = jax.lax.dynamic_slice_in_dim(order, pos * batch_size, batch_size)
    x = images[idx].astype(jnp.float32) * (1.0 / 255.0)
    y = labels[idx]
    return x, y


def member_step(
    model,
    tx: optax.GradientTransformation,
    state: MemberState,
    x: jax.Array,
    y: jax.Array,
    step,
    active=True,
    probe: Probe | None = None,
) -> tuple[MemberState, StepMetrics, Any]:
    """One optimizer update of one member; pure (jit it with ``model``, ``tx`` and ``probe`` bound,
    e.g. ``jax.jit(functools.partial(member_step, model, tx))``).

    Arguments, one member (no member axis):

    - ``state``: :class:`MemberState`, ``params`` and ``opt_state`` pytrees of one network
      (``params["Dense_0"]["kernel"]: [784, 16]``, ...), ``diverged`` bool ``[]``, ``diverged_at``
      int32 ``[]``;
    - ``x``: float32 ``[B, 784]``, ``y``: int ``[B]`` (a :func:`minibatch`);
    - ``step``: int32 ``[]``, the global step (recorded in ``diverged_at`` if the member diverges);
    - ``active``: bool ``[]``, False for the masked steps past the end of training (a no-op);
    - ``probe``: optional :data:`Probe`, evaluated on this step's :class:`StepContext`.

    Returns ``(new_state, metrics, probes)``: ``metrics`` a :class:`StepMetrics` of float32 ``[]``
    (NaN once the member had diverged before this step), ``probes`` the probe's pytree (None without
    a probe; floating leaves NaN from the step at which the member diverges on). A member whose loss
    or new parameters are not finite is marked diverged at ``step`` and keeps its old parameters and
    optimizer state from then on.
    """
    params, opt_state, diverged, diverged_at = state
    (loss, acc), grads = jax.value_and_grad(partial(loss_and_accuracy, model), has_aux=True)(params, x, y)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & all_finite(new_params)
    move = active & ~diverged & finite
    now_diverged = active & ~diverged & ~finite
    new_params = tree_where(move, new_params, params)
    new_opt = tree_where(move, new_opt, opt_state)
    nan = jnp.float32(jnp.nan)
    metrics = StepMetrics(
        *(
            jnp.where(diverged, nan, v.astype(jnp.float32))
            for v in (loss, acc, optax.tree.norm(grads), optax.tree.norm(updates))
        )
    )
    probes = None
    if probe is not None:
        # a member that diverged at this step or before records NaN (not its frozen values)
        gone = diverged | now_diverged
        probes = jax.tree_util.tree_map(
            lambda v: jnp.where(gone, jnp.asarray(jnp.nan, v.dtype), v) if jnp.issubdtype(v.dtype, jnp.floating) else v,
            probe(StepContext(params, new_params, grads, x, y)),
        )
    new_state = MemberState(new_params, new_opt, diverged | now_diverged, jnp.where(now_diverged, step, diverged_at))
    return new_state, metrics, probes


def member_minibatch_step(
    model, tx, batch_size: int, state: MemberState, order, step, pos, active, images, labels, probe: Probe | None = None
):
    """:func:`minibatch` ``pos`` of ``order`` followed by :func:`member_step`: what the schedule
    vmaps over a block of members (``state`` and ``order [N]`` per member; ``step``, ``pos``,
    ``active``, ``images [N, P]`` and ``labels [N]`` shared)."""
    x, y = minibatch(order, pos, images, labels, batch_size)
    return member_step(model, tx, state, x, y, step, active, probe)
