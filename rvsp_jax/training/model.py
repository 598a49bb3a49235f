"""The 3Blue1Brown MNIST network: a Flax MLP 784 -> widths -> 10 with softmax cross-entropy.

Parameters are flax linen's nested dict ``{"Dense_0": {"kernel": [784, h1], "bias": [h1]}, ...}``;
the ensemble adds a leading member axis ``[S, ...]`` to every leaf. The default (16, 16) network
has 784*16+16 + 16*16+16 + 16*10+10 = 13,002 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rvsp_jax.config import TrainConfig
from rvsp_jax.training.registry import ACTIVATIONS, INITIALIZERS

N_PIXELS = 28 * 28
N_CLASSES = 10


class Forward(NamedTuple):
    """Per-example outputs of a forward pass: ``pre[l], post[l]: [B, h_l]``, ``logits: [B, 10]``."""

    pre: tuple
    post: tuple
    logits: jax.Array


class MLP(nn.Module):
    """Dense layers with a named activation between them; returns :class:`Forward` (float32)."""

    widths: Sequence[int] = (16, 16)
    activation: str = "sigmoid"
    initializer: str = "lecun_normal"

    @nn.compact
    def __call__(self, x: jax.Array) -> Forward:
        act = ACTIVATIONS[self.activation]
        kernel_init = INITIALIZERS[self.initializer]()
        pre, post = [], []
        for width in self.widths:
            z = nn.Dense(width, kernel_init=kernel_init)(x)
            x = act(z)
            pre.append(z)
            post.append(x)
        logits = nn.Dense(N_CLASSES, kernel_init=kernel_init)(x)
        return Forward(tuple(pre), tuple(post), logits)


def make_model(config: TrainConfig) -> MLP:
    return MLP(widths=config.widths, activation=config.activation, initializer=config.init)


def init_params(model: MLP, key: jax.Array) -> dict:
    """One member's parameters (the ``params`` collection) from its init key."""
    return model.init(key, jnp.zeros((1, N_PIXELS), jnp.float32))["params"]


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def loss_and_accuracy(model: MLP, params, x: jax.Array, y: jax.Array):
    """Mean softmax cross-entropy and accuracy of one member on ``x: [B, 784]``, ``y: [B]`` (float32).

    The loss is ``optax.softmax_cross_entropy_with_integer_labels`` averaged over the batch.
    """
    logits = model.apply({"params": params}, x).logits
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y.astype(jnp.int32)).mean()
    accuracy = (jnp.argmax(logits, -1) == y).mean()
    return loss, accuracy
