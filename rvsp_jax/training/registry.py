"""The named building blocks a :class:`~rvsp_jax.config.TrainConfig` chooses from: hidden
activations, kernel initialisers and optax optimizers.

:mod:`rvsp_jax.config` validates the names against these tables (and re-exports them, so
``from rvsp_jax.config import ACTIVATIONS`` keeps working); :mod:`rvsp_jax.training.model` builds
the network from them. Adding an entry here adds a choice to ``--activation`` or ``--init``.
Importing this module only builds the two dicts (JAX's functions are referenced, not called).
"""

from __future__ import annotations

import functools
import inspect

import jax
import optax

ACTIVATIONS = {  # name -> elementwise function
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jax.numpy.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
    "identity": lambda x: x,
}
INITIALIZERS = {  # name -> constructor of a flax kernel initialiser (called with no arguments)
    "lecun_normal": jax.nn.initializers.lecun_normal,
    "lecun_uniform": jax.nn.initializers.lecun_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "he_normal": jax.nn.initializers.he_normal,
    "he_uniform": jax.nn.initializers.he_uniform,
    "normal": lambda: jax.nn.initializers.normal(stddev=1.0),
}


@functools.lru_cache(maxsize=1)
def optimizer_names() -> tuple[str, ...]:
    """Every optax optimizer constructor that takes a ``learning_rate`` (sgd, adam, adamw, ...)."""
    names = []
    for name in dir(optax):
        obj = getattr(optax, name)
        if name.startswith("_") or not inspect.isfunction(obj):
            continue
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if next(iter(params), None) == "learning_rate":
            names.append(name)
    return tuple(sorted(names))
