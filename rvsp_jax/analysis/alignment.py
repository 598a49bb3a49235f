"""Permutation symmetry of hidden units: align the members of an MLP ensemble by weight matching.

Permuting the units of a hidden layer (the columns of its kernel and its bias, and the rows of the
next kernel) leaves the network's function unchanged, so "parameter i" of two independently
initialised members need not mean the same unit. Weight matching (S. K. Ainsworth, J. Hayase,
S. Srinivasa, "Git Re-Basin: Merging Models modulo Permutation Symmetries", ICLR 2023, Algorithm 2)
finds, for each member, the hidden-unit permutations that make its weights most similar to a
reference member's; after :func:`align`, parameter i means (as nearly as the weights allow) the same
unit in every member, and ensemble statistics per parameter become meaningful. With ``vary="data"``
(one shared init) members are aligned by construction and this is not needed.

Parameters are flax linen's nested dict with a leading member axis, optionally wrapped in
``{"params": ...}``::

    {"Dense_0": {"kernel": [S, 784, h1], "bias": [S, h1]},
     "Dense_1": {"kernel": [S, h1, h2], "bias": [S, h2]},
     "Dense_2": {"kernel": [S, h2, 10], "bias": [S, 10]}}

Any number of ``Dense_i`` layers (numbered from 0, the last one the output layer, whose units are
not permuted). Permutations are returned as a list with one int array ``[S, h_l]`` per hidden layer,
with the convention ``new unit i = old unit perm[s, i]``.

Trajectories: leaves may carry extra axes between the member axis and the parameter axes, e.g. a
recorded trajectory ``kernel: [S, T, in, out]``; :func:`apply_permutations` (alias
:func:`permute_trajectory`) applies the same permutation at every step. Compute the permutations
on the final parameters (units do not swap during training, and late weights are the most
distinct). For a trajectory recorded as flat vectors ``[S, T, n_params]`` (``ravel_pytree`` order)
or for probe indices, use :func:`permutation_index`.

Similarities are computed on the host in float64 numpy; ``scipy.optimize.linear_sum_assignment``
solves each layer's assignment. Permuted parameters keep their array type (JAX in, JAX out).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

__all__ = ["align", "apply_permutations", "match_weights", "permutation_index", "permute_trajectory"]

_LAYER = re.compile(r"^Dense_(\d+)$")


# ----------------------------------------------------------------------------------------------
# Structure


def _unwrap(params):
    """Returns (layers: list of (kernel, bias) in order, rewrap: callable layers -> same structure)."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a nested dict of Dense_i layers; got {type(params).__name__}.")
    if set(params) == {"params"}:
        layers, rewrap = _unwrap(params["params"])
        return layers, lambda new: {"params": rewrap(new)}
    numbered = {}
    for name in params:
        match = _LAYER.match(str(name))
        if match is None:
            raise ValueError(
                f"unexpected key {name!r} in params: expected flax linen Dense layers named "
                "'Dense_0', 'Dense_1', ... (the MLP of rvsp_jax.training.model)."
            )
        numbered[int(match.group(1))] = name
    if sorted(numbered) != list(range(len(numbered))) or not numbered:
        raise ValueError(f"layers must be numbered Dense_0..Dense_{{L-1}} without gaps; got {sorted(params)}.")
    names = [numbered[i] for i in range(len(numbered))]
    layers = []
    for name in names:
        layer = params[name]
        if not isinstance(layer, Mapping) or set(layer) != {"kernel", "bias"}:
            raise ValueError(f"{name} must hold exactly 'kernel' and 'bias'; got {layer!r:.80}.")
        layers.append((layer["kernel"], layer["bias"]))

    def rewrap(new):
        out = dict(params)
        for name, (kernel, bias) in zip(names, new):
            out[name] = {"kernel": kernel, "bias": bias}
        return type(params)(out) if not isinstance(params, dict) else out

    return layers, rewrap


def _check_layers(layers, lead_ndim: int | None = None) -> tuple[int, ...]:
    """Validates shapes; returns the leading shape (member axis and any extra axes)."""
    k0 = np.shape(layers[0][0])
    if len(k0) < 2:
        raise ValueError(f"Dense_0/kernel must be [..., in, out]; got shape {k0}.")
    lead = k0[:-2]
    if lead_ndim is not None and len(lead) != lead_ndim:
        raise ValueError(f"kernels must have {lead_ndim} leading axes before [in, out]; Dense_0/kernel has shape {k0}.")
    prev_out = None
    for i, (kernel, bias) in enumerate(layers):
        ks, bs = np.shape(kernel), np.shape(bias)
        if len(ks) != len(lead) + 2 or ks[: len(lead)] != lead or bs != lead + ks[-1:]:
            raise ValueError(
                f"Dense_{i}: kernel {ks} and bias {bs} must be [*lead, in, out] and [*lead, out] with "
                f"the same leading axes {lead} as Dense_0."
            )
        if prev_out is not None and ks[-2] != prev_out:
            raise ValueError(f"Dense_{i}/kernel has {ks[-2]} inputs but Dense_{i - 1} has {prev_out} outputs.")
        prev_out = ks[-1]
    return lead


def _check_perms(perms, layers, n_members: int) -> list[np.ndarray]:
    widths = [np.shape(k)[-1] for k, _ in layers[:-1]]
    if len(perms) != len(widths):
        raise ValueError(f"perms must hold one array per hidden layer ({len(widths)}); got {len(perms)}.")
    out = []
    for l, (perm, h) in enumerate(zip(perms, widths)):
        perm = np.asarray(perm)
        if perm.shape != (n_members, h) or not np.issubdtype(perm.dtype, np.integer):
            raise ValueError(f"perms[{l}] must be an int array [S={n_members}, {h}]; got {perm.dtype} {perm.shape}.")
        if not np.array_equal(np.sort(perm, axis=-1), np.broadcast_to(np.arange(h), perm.shape)):
            raise ValueError(f"perms[{l}] has a row that is not a permutation of 0..{h - 1}.")
        out.append(perm)
    return out


def _take(a, perm: np.ndarray, axis: int):
    """Per-member gather along ``axis`` (-1 or -2) of a: [S, ..., *param]; perm: [S, n]."""
    S, n = perm.shape
    shape = (S,) + (1,) * (np.ndim(a) - 2) + (n,)
    if axis == -2:
        shape = (S,) + (1,) * (np.ndim(a) - 3) + (n, 1)
    idx = perm.reshape(shape)
    if isinstance(a, jax.Array):
        return jnp.take_along_axis(a, jnp.asarray(idx), axis=axis)
    return np.take_along_axis(np.asarray(a), idx, axis=axis)


def _permute_layers(layers, perms):
    out = []
    for l, (kernel, bias) in enumerate(layers):
        if l < len(perms):  # hidden layer: permute its units
            kernel, bias = _take(kernel, perms[l], -1), _take(bias, perms[l], -1)
        if l > 0:  # inputs come from the permuted previous layer
            kernel = _take(kernel, perms[l - 1], -2)
        out.append((kernel, bias))
    return out


# ----------------------------------------------------------------------------------------------
# Weight matching


def _reference_layers(layers, reference):
    """The reference network's (kernel, bias) pairs as float64, without member axis."""
    if isinstance(reference, numbers.Integral) and not isinstance(reference, bool):
        S = np.shape(layers[0][0])[0]
        if not -S <= reference < S:
            raise ValueError(f"reference={reference} is not a member index of an ensemble of {S}.")
        return [(np.asarray(k[reference], float), np.asarray(b[reference], float)) for k, b in layers]
    ref_layers, _ = _unwrap(reference)
    _check_layers(ref_layers, lead_ndim=0)
    if [np.shape(k) for k, _ in ref_layers] != [np.shape(k)[1:] for k, _ in layers]:
        raise ValueError("the reference network's layer shapes differ from the ensemble's.")
    return [(np.asarray(k, np.float64), np.asarray(b, np.float64)) for k, b in ref_layers]


def _similarity(ref, mem, perms, l):
    """A[s, i, j]: gain from putting member unit j at reference unit i in hidden layer l. [S, h, h]."""
    (rk, rb), (rk_next, _) = ref[l], ref[l + 1]
    kernel, bias = mem[l]
    if l > 0:
        kernel = _take(kernel, perms[l - 1], -2)
    kernel_next = mem[l + 1][0]
    if l + 1 < len(perms):
        kernel_next = _take(kernel_next, perms[l + 1], -1)
    return (
        np.einsum("ai,saj->sij", rk, kernel)
        + rb[None, :, None] * bias[:, None, :]
        + np.einsum("ib,sjb->sij", rk_next, kernel_next)
    )


def match_weights(params, reference=0, *, n_iter: int = 100) -> list[np.ndarray]:
    """Hidden-unit permutations that make each member's weights most similar to the reference's.

    Weight matching of Git Re-Basin (Ainsworth, Hayase & Srinivasa, ICLR 2023, Algorithm 2): for
    each member, maximise ``sum_l <W_l^ref, P_l W_l P_{l-1}^T> + <b_l^ref, P_l b_l>`` over the
    permutations ``P_l`` of the hidden layers by coordinate descent: starting from the identity,
    solve each layer's linear assignment (``scipy.optimize.linear_sum_assignment``, maximising)
    with the other layers' permutations fixed, in layer order, and keep a new permutation only if it
    raises that member's objective; stop after a sweep that changes nothing, or after ``n_iter``
    sweeps. (The paper visits layers in random order; the fixed order here makes it deterministic.)
    Float64; all members are handled at once, one assignment per member and layer.

    Args:
      params: ensemble parameters (see the module docstring), leaves ``[S, ...]``, numpy or JAX.
      reference: index of the reference member, or a parameter dict of one network (no member axis).
      n_iter: maximum number of sweeps over the layers.

    Returns:
      One int64 array ``[S, h_l]`` per hidden layer; the reference member gets the identity.
    """
    layers, _ = _unwrap(params)
    lead = _check_layers(layers, lead_ndim=1)
    n_iter = int(n_iter)
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1; got {n_iter}.")
    S = lead[0]
    ref = _reference_layers(layers, reference)
    mem = [(np.asarray(k, np.float64), np.asarray(b, np.float64)) for k, b in layers]
    perms = [np.tile(np.arange(np.shape(k)[-1]), (S, 1)) for k, _ in layers[:-1]]
    rows = np.arange(S)[:, None]
    for _ in range(n_iter):
        changed = False
        for l in range(len(perms)):
            sim = _similarity(ref, mem, perms, l)  # [S, h, h]
            h = sim.shape[-1]
            new = np.stack([scipy.optimize.linear_sum_assignment(a, maximize=True)[1] for a in sim])
            old_score = sim[rows, np.arange(h), perms[l]].sum(-1)
            new_score = sim[rows, np.arange(h), new].sum(-1)
            better = new_score > old_score + 1e-12 * np.maximum(1.0, np.abs(old_score))
            if better.any():
                perms[l] = np.where(better[:, None], new, perms[l])
                changed = True
        if not changed:
            break
    return [p.astype(np.int64) for p in perms]


def apply_permutations(params, perms):
    """Permutes the hidden units of every member: a functionally identical ensemble.

    For hidden layer l with ``perm = perms[l]: [S, h_l]``:
    ``kernel_l[s][..., :, i] <- kernel_l[s][..., :, perm[s, i]]``,
    ``bias_l[s][..., i] <- bias_l[s][..., perm[s, i]]``, and the rows of ``kernel_{l+1}`` likewise.
    Leaves are ``[S, ..., *param_shape]``: extra axes after the member axis (e.g. steps of a
    recorded trajectory ``[S, T, in, out]``) get the same permutation throughout. Array types are
    kept (a JAX leaf gives a JAX leaf, via ``jnp.take_along_axis``); exact (a gather, no arithmetic).
    """
    layers, rewrap = _unwrap(params)
    lead = _check_layers(layers)
    if not lead:
        raise ValueError("params need a leading member axis [S, ...]; for one network use params[None].")
    return rewrap(_permute_layers(layers, _check_perms(perms, layers, lead[0])))


def permute_trajectory(trajectory, perms):
    """Applies member permutations to a recorded trajectory with leaves ``[S, T, *param_shape]``.

    The same permutation at every step (compute it with :func:`match_weights` on the final
    parameters, ``jax.tree.map(lambda a: a[:, -1], trajectory)``). Same as :func:`apply_permutations`,
    which accepts any extra axes; this name checks that there is exactly one.
    """
    layers, _ = _unwrap(trajectory)
    _check_layers(layers, lead_ndim=2)
    return apply_permutations(trajectory, perms)


def align(params, reference=0, *, n_iter: int = 100):
    """Aligns every member to the reference: ``(aligned_params, perms)``.

    ``perms = match_weights(params, reference, n_iter=n_iter)`` and
    ``aligned_params = apply_permutations(params, perms)``; see those functions.
    """
    perms = match_weights(params, reference, n_iter=n_iter)
    return apply_permutations(params, perms), perms


def permutation_index(params, perms) -> np.ndarray:
    """Index map ``[S, n_params]`` for parameters flattened by ``jax.flatten_util.ravel_pytree``.

    With ``flat[s]`` one member's parameters raveled (``ravel_pytree`` order: leaves in
    ``jax.tree_util`` order, each row-major), the aligned parameters are
    ``np.take_along_axis(flat, index, axis=-1)``, and aligned parameter ``i`` of member s is its
    original parameter ``index[s, i]``. For a flat trajectory ``[S, T, n_params]`` use
    ``index[:, None, :]``; for recorded probe indices ``q``, ``index[:, q]`` tells which original
    parameter of each member plays probe i's role. ``params`` gives the structure (leaves ``[S, ...]``).
    """
    layers, rewrap = _unwrap(params)
    lead = _check_layers(layers, lead_ndim=1)
    S = lead[0]
    leaves, treedef = jax.tree_util.tree_flatten(rewrap(layers))
    offsets = np.cumsum([0] + [int(np.prod(np.shape(leaf)[1:])) for leaf in leaves])
    index_tree = jax.tree_util.tree_unflatten(
        treedef,
        [
            np.broadcast_to(np.arange(lo, hi).reshape(np.shape(leaf)[1:]), np.shape(leaf))
            for leaf, lo, hi in zip(leaves, offsets[:-1], offsets[1:])
        ],
    )
    permuted = jax.tree_util.tree_leaves(apply_permutations(index_tree, perms))
    return np.concatenate([np.asarray(p).reshape(S, -1) for p in permuted], axis=-1)
