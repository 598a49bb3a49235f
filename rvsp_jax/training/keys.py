"""Member keys: every member's init and data keys, derived by ``fold_in`` from the root seed.

::

    init key of s = fold_in(fold_in(root, 0), s if vary in {both, init} else 0)
    data key of s = fold_in(fold_in(root, 1), s if vary in {both, data} else 0)

so member s's keys do not depend on how many other members there are. A sweep's member
``g * seeds + s`` takes the keys of seed ``s`` (:func:`seed_ids`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rvsp_jax.config import TrainConfig


def root_key(base_seed: int) -> jax.Array:
    """The raw threefry key ``[hi, lo]`` (uint32) of a seed in ``[0, 2**64)``; for seeds below 2**32
    it equals ``jax.random.PRNGKey(base_seed)``, which would silently wrap larger ones without x64."""
    if not 0 <= int(base_seed) < 2**64:
        raise ValueError(f"base_seed must be from 0 to 2**64 - 1, got {base_seed}")
    seed = int(base_seed)
    return jnp.asarray(np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32))


def member_keys(base_seed: int, members: jax.Array, vary: str):
    """Init and data keys ``[S, 2]`` (uint32 raw keys) of the given member ids ``members: [S]``."""
    root = root_key(base_seed)
    init_root, data_root = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    init_ids = members if vary in ("both", "init") else jnp.zeros_like(members)
    data_ids = members if vary in ("both", "data") else jnp.zeros_like(members)
    fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
    return fold(init_root, init_ids), fold(data_root, data_ids)


def seed_ids(members: jax.Array, config: TrainConfig) -> jax.Array:
    """The seed index of each member id (``members: [S_pad]`` int): member ``g * seeds + s`` of a
    sweep is seed ``s``, so it starts from the same weights and data order as member ``s`` of a
    plain run; padding members (ids past the last real one) keep their own id."""
    real = config.members
    return jnp.where(members < real, members % config.seeds, members)
