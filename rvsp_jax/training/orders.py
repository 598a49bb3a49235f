"""Host data orders: the permutation of the training set each member visits in each epoch.

Member s's order in epoch e is ``numpy.random.Generator(PCG64(SeedSequence([k0, k1, e])))
.permutation(N)`` with ``(k0, k1)`` its data key (:func:`rvsp_jax.training.keys.member_keys`):
drawn on the host because a sort-based permutation of 60,000 indices per member is the slowest op
XLA would run here (tens of seconds for 256 members on 2 cores, against 0.2 s for numpy). Each
epoch is cut into ``N // batch_size`` minibatches in that order (the incomplete last one dropped).
"""

from __future__ import annotations

import numpy as np


def epoch_order(data_key, epoch: int, n_train: int) -> np.ndarray:
    """One member's order in one epoch: int32 ``[N]``, a permutation of ``range(n_train)``;
    ``data_key``: the member's raw data key ``[2]`` (uint32)."""
    seed = (int(data_key[0]), int(data_key[1]), int(epoch))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    return rng.permutation(n_train).astype(np.int32)


def orders(data_keys: np.ndarray, epoch: int, n_train: int) -> np.ndarray:
    """Orders of epochs ``epoch`` and ``epoch + 1`` of every member: int32 ``[S, 2, N]`` from
    ``data_keys [S, 2]``. Members that share a data key (``vary=init``) share the order, and it is
    computed once."""
    cache: dict[tuple, np.ndarray] = {}
    out = np.empty((len(data_keys), 2, n_train), np.int32)
    for s, key in enumerate(data_keys):
        for j, e in enumerate((epoch, epoch + 1)):
            seed = (int(key[0]), int(key[1]), int(e))
            if seed not in cache:
                cache[seed] = epoch_order(key, e, n_train)
            out[s, j] = cache[seed]
    return out
