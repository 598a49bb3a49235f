"""Private helpers shared by the estimators of :mod:`rvsp_jax.analysis` (not public API).

- input coercion (:func:`as_real`) and integer arguments (:func:`as_int`);
- the axis convention (:func:`time_last`, :func:`restore_time`, :func:`ensemble_last`,
  :func:`restore_members`, :func:`restore_ensemble`): estimators work on ``[..., T]`` (series) or
  ``[S, ..., T]`` (ensembles) and these move a caller's ``axis`` / ``member_axis`` there and the
  results back;
- the block mapper (:func:`block_slices`, :func:`map_rows`), so temporaries stay small whatever the
  batch;
- the FFT autocovariance (:func:`fft_autocov`).

Every helper does exactly what the code it replaced did (same operations in the same order), so
results are bit-identical to before.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterator

import numpy as np
import scipy.fft

WORKERS = os.cpu_count() or 1
"""Threads for the batched FFTs."""

# ----------------------------------------------------------------------------------------------
# Input coercion


def as_real(
    x,
    *,
    name: str = "x",
    min_ndim: int = 1,
    what: str = "a time axis (last axis)",
    hint: str = "Pass x: [..., T].",
    allow_bool: bool = True,
) -> np.ndarray:
    """``np.asarray(x)`` (any array-like: numpy, JAX, a stored array) checked to be real with at
    least ``min_ndim`` axes; raises ValueError naming ``name`` otherwise. No dtype conversion."""
    arr = np.asarray(x)
    if arr.ndim < min_ndim:
        got = "a scalar" if arr.ndim == 0 else f"shape {arr.shape}"
        raise ValueError(f"{name} must have {what}; got {got}. {hint}")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or (allow_bool and arr.dtype == bool)):
        raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}.")
    return arr


def as_jax_float(x):
    """``jnp.asarray(x)``, promoted to the default float dtype unless it is floating already (the
    JAX estimators compute in the input's float dtype, at least float32)."""
    import jax.numpy as jnp

    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def as_int(value, name: str, minimum: int | None = None) -> int:
    """An integer argument (not a bool), at least ``minimum`` if given, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}.")
    return value


# ----------------------------------------------------------------------------------------------
# The axis convention


def _axis_index(axis, ndim: int, name: str) -> int:
    axis = as_int(axis, name)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} axes.")
    return axis % ndim


def _is_jax(x) -> bool:
    return type(x).__module__.split(".")[0] in ("jax", "jaxlib")


def time_last(x, axis, *, keep_jax: bool = False) -> tuple[object, int | None]:
    """Moves the time axis ``axis`` of x last; returns ``(x', position)``.

    ``axis=-1`` (the default of every series estimator) or None leaves x as it is (not even
    converted) and returns position None. Otherwise x is coerced with ``np.asarray`` (JAX arrays
    stay JAX arrays with ``keep_jax``) and the returned position is ``axis`` normalised to
    ``0..ndim-1``, for :func:`restore_time`.
    """
    if axis is None or (isinstance(axis, int) and not isinstance(axis, bool) and axis == -1):
        return x, None
    jax_in = keep_jax and _is_jax(x)
    if not jax_in:
        x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"axis={axis} was given but x is a scalar; x needs a time axis.")
    pos = _axis_index(axis, x.ndim, "axis")
    if pos == x.ndim - 1:
        return x, pos
    if jax_in:
        import jax.numpy as jnp

        return jnp.moveaxis(x, pos, -1), pos
    return np.moveaxis(x, pos, -1), pos


def restore_time(out, pos: int | None, *, keeps_axis: bool):
    """Puts an estimator's output back in the caller's layout.

    ``keeps_axis``: the output replaces time by a new last axis (lags, frequencies, windows), which
    moves to the time axis' place ``pos``; otherwise time was reduced away and nothing moves.
    """
    if pos is None or not keeps_axis or out is None:
        return out
    if _is_jax(out):
        import jax.numpy as jnp

        return jnp.moveaxis(out, -1, pos)
    return np.moveaxis(out, -1, pos)


def ensemble_last(x, member_axis, axis) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Moves the member axis first and the time axis last: ``x' : [S, ..., T]``.

    ``(member_axis, axis) == (0, -1)``, the defaults, leave x untouched and give positions None.
    Otherwise returns the normalised ``(member, time)`` positions for :func:`restore_members` /
    :func:`restore_ensemble`. The other axes keep their order.
    """
    if member_axis == 0 and axis == -1:
        return x, None
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"x must have a member axis and a time axis; got shape {x.shape}. For a single series use x[None]."
        )
    ma = _axis_index(member_axis, x.ndim, "member_axis")
    ta = _axis_index(axis, x.ndim, "axis")
    if ma == ta:
        raise ValueError(f"member_axis={member_axis} and axis={axis} name the same axis.")
    return np.moveaxis(x, (ma, ta), (0, -1)), (ma, ta)


def restore_members(out, pos: tuple[int, int] | None, *, keeps_time: bool = True):
    """Per-member output -> the caller's layout. ``keeps_time``: ``[S, ..., K]`` (K replacing time)
    gets members back on ``member_axis`` and K on ``axis``; otherwise ``[S, ...]`` (time reduced)
    gets members back where they were among the remaining axes."""
    if pos is None:
        return out
    if keeps_time:
        return np.moveaxis(out, (0, -1), pos)
    ma, ta = pos
    return np.moveaxis(out, 0, ma - (ma > ta))


def restore_ensemble(out, pos: tuple[int, int] | None):
    """Ensemble output ``[..., K]`` (members reduced, K replacing time) -> K where time was among
    the axes that remain once the member axis is gone."""
    if pos is None:
        return out
    ma, ta = pos
    return np.moveaxis(out, -1, ta - (ta > ma))


# ----------------------------------------------------------------------------------------------
# Blocks


def block_slices(n: int, per_block: int) -> Iterator[slice]:
    """Slices of at most ``max(1, per_block)`` consecutive indices covering ``range(n)``."""
    step = max(1, per_block)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def map_rows(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, row_cost: int, block_elements: int) -> np.ndarray:
    """Applies fn: [B, T] -> [B, *K] to x: [..., T] in row blocks; returns [..., *K].

    row_cost: elements of the largest temporary per row; a block holds about ``block_elements``.
    """
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[0]
    block = max(1, block_elements // max(1, row_cost))
    if n <= block:
        out = fn(flat)
        return out.reshape(lead + out.shape[1:])
    first = fn(flat[:block])
    out = np.empty((n,) + first.shape[1:], dtype=first.dtype)
    out[:block] = first
    for rows in block_slices(n, block):
        if rows.start:
            out[rows] = fn(flat[rows])
    return out.reshape(lead + out.shape[1:])


# ----------------------------------------------------------------------------------------------
# FFT autocovariance


def fft_autocov(
    x: np.ndarray, min_length: int, keep: int, pool: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Lag sums ``sum_t x_t x_{t+k}``, k = 0..keep-1, along the last axis of x, by FFT (float64).

    The transform length is ``next_fast_len(min_length)`` (at least ``T + keep - 1`` for no
    wrap-around). ``pool`` maps the power spectrum ``|rfft(x)|^2`` before the inverse transform
    (e.g. a sum over members). Returns ``[..., keep]``.
    """
    nfft = scipy.fft.next_fast_len(min_length, real=True)
    spec = scipy.fft.rfft(x, n=nfft, axis=-1, workers=WORKERS)
    power = spec.real**2 + spec.imag**2
    if pool is not None:
        power = pool(power)
    return scipy.fft.irfft(power, n=nfft, axis=-1, workers=WORKERS)[..., :keep]


# ----------------------------------------------------------------------------------------------
# Verdicts: names (the public convention) and compact int8 codes (for counting many series)


def verdict_names(codes, vocabulary: tuple[str, ...], *, invalid: str | None = None) -> np.ndarray:
    """The names of int verdict codes: ``np.asarray(vocabulary)[codes]``, a numpy str array
    (dtype ``<U..``) of the codes' shape. With ``invalid``, a negative code (a series that could not
    be judged) gets that name, which lies outside ``vocabulary``."""
    codes = np.asarray(codes)
    if invalid is None:
        return np.asarray(vocabulary)[codes]
    return np.asarray((*vocabulary, invalid))[np.where(codes < 0, len(vocabulary), codes)]


def verdict_codes(verdicts, vocabulary: tuple[str, ...]) -> np.ndarray:
    """int8 index into ``vocabulary`` of each verdict name (-1 for a name outside it); integer codes
    are returned unchanged, so callers may pass either."""
    v = np.asarray(verdicts)
    if v.dtype.kind in "iu":
        return v
    if v.dtype.kind not in "UO":
        raise ValueError(f"verdicts must be names (str) or integer codes; got dtype {v.dtype}.")
    codes = np.full(v.shape, -1, np.int8)
    for i, name in enumerate(vocabulary):
        codes[v == name] = i
    return codes
