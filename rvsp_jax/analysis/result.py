"""The one base of every analysis result: a frozen dataclass with ``to_dict()``, a readable
``__repr__``, ``summary()`` and ``_repr_html_`` (as arch's unit-root test results have).

Conventions every result follows (documented here once):

- **Arrays** are numpy, float64 unless the field's docstring says otherwise (int64 counts, bool
  flags, str verdicts). Fields over the batch have the batch shape ``[...]``.
- **Intervals** are two fields ``lo`` / ``hi`` (or ``<quantity>_lo`` / ``<quantity>_hi`` when a
  result carries several), at the level named by ``alpha``: a two-sided ``1 - alpha`` interval
  unless the docstring says the bounds are one-sided.
- **Levels** are significance levels called ``alpha`` everywhere (``0.05``, as statsmodels'
  ``alpha``), never a coverage (``0.95``).
- **Verdicts** are str arrays whose values come from the module's vocabulary tuple
  (``STATIONARITY_VERDICTS``, ``ERGODICITY_VERDICTS``, ``TAIL_VERDICTS``, ``SHAPE_VERDICTS``).

A result also behaves as the tuple of its field values, as the NamedTuples it replaces did
(``stat, pvalue = ljung_box(x, 10)``; ``res[0]``; ``res._fields``, ``res._asdict()``,
``res._replace(...)``), and is a JAX pytree of its fields. Field names a result had before a rename
still read, with a DeprecationWarning (the class's ``RENAMED`` table).
"""

from __future__ import annotations

import dataclasses
import html
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

__all__ = ["Result"]

_SHOW = 4  # arrays with at most this many entries are shown in full by __repr__


@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """Base of the analysis results: subclass it with ``@dataclass(frozen=True, eq=False)``.

    ``RENAMED`` maps a field's former name to its current one; reading the former name warns.
    """

    RENAMED: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # @dataclass adds a __repr__ only where the class has none of its own: keep this one
        cls.__repr__ = Result.__repr__
        import jax

        jax.tree_util.register_pytree_node(cls, _flatten, lambda _, children, cls=cls: cls(*children))

    # -- the tuple behaviour of the NamedTuples this replaces ------------------------------------

    @property
    def _fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    def _asdict(self) -> dict[str, Any]:
        """Field name -> value, as stored (no conversion; see :meth:`to_dict`)."""
        return {name: getattr(self, name) for name in self._fields}

    def _replace(self, **changes) -> Result:
        return dataclasses.replace(self, **changes)

    def __iter__(self):
        return iter(tuple(getattr(self, name) for name in self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def __getitem__(self, index):
        return tuple(self)[index]

    def __eq__(self, other) -> bool:
        """Same type and every field equal (arrays by value and shape, NaN equal to NaN)."""
        if type(other) is not type(self):
            return NotImplemented
        return all(_equal(a, b) for a, b in zip(self, other))

    __hash__ = None  # mutable numpy fields: not hashable (as a NamedTuple of arrays was not)

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: a former field name reads its new field
        new = type(self).RENAMED.get(name)
        if new is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warnings.warn(
            f"{type(self).__name__}.{name} is now {type(self).__name__}.{new}", DeprecationWarning, stacklevel=2
        )
        return getattr(self, new)

    # -- reading ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value with arrays (numpy or JAX) as numpy arrays, 0-d arrays as Python
        scalars, and nested results, mappings and tuples converted the same way."""
        return {name: _plain(getattr(self, name)) for name in self._fields}

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={_brief(getattr(self, name))}" for name in self._fields)
        return f"{type(self).__name__}({parts})"

    def summary(self) -> str:
        """A table of the fields: each one's type and shape and what it holds (a scalar's value,
        an array's mean and range and how many are NaN, a verdict array's count of each value)."""
        rows = self._summary_rows()
        width = max((len(name) for name, _, _ in rows), default=0)
        kind_width = max((len(kind) for _, kind, _ in rows), default=0)
        head = f"{type(self).__name__}: {_first_line(type(self).__doc__)}"
        lines = [head, "=" * len(head)]
        lines += [f"{name:<{width}}  {kind:<{kind_width}}  {text}".rstrip() for name, kind, text in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(kind)}</td>"
            f"<td>{html.escape(text)}</td></tr>"
            for name, kind, text in self._summary_rows()
        )
        title = html.escape(f"{type(self).__name__}: {_first_line(type(self).__doc__)}")
        return (
            f"<table><caption style='text-align:left'><b>{title}</b></caption>"
            f"<tr><th>field</th><th>type</th><th>holds</th></tr>{rows}</table>"
        )

    def _summary_rows(self) -> list[tuple[str, str, str]]:
        return [(name, _kind(v), _describe(v)) for name in self._fields for v in [getattr(self, name)]]


# ----------------------------------------------------------------------------------------------
# Helpers (private)


def _flatten(result: Result):
    return tuple(getattr(result, f.name) for f in dataclasses.fields(result)), None


def _equal(a, b) -> bool:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, Result) or isinstance(b, Result):
        return a == b
    if _is_array(a) or _is_array(b) or isinstance(a, (list, tuple)):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return False
        if x.dtype.kind in "fc" and y.dtype.kind in "fc":
            return bool(np.array_equal(x, y, equal_nan=True))
        return bool(np.array_equal(x, y))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


def _first_line(doc: str | None) -> str:
    """The docstring's first sentence (its first paragraph up to ". "), on one line."""
    text = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    return text.split(". ", 1)[0].rstrip(".:;")


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype")


def _plain(v):
    if isinstance(v, Result):
        return v.to_dict()
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return type(v)(_plain(x) for x in v)
    if _is_array(v):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a
    return v


def _kind(v) -> str:
    if _is_array(v):
        a = np.asarray(v)
        dtype = (
            "str"
            if a.dtype.kind == "U" or (a.dtype == object and all(isinstance(e, str) for e in a.flat))
            else str(a.dtype)
        )
        return f"{dtype}[{', '.join(map(str, a.shape))}]" if a.ndim else dtype
    if isinstance(v, Result):
        return type(v).__name__
    if isinstance(v, Mapping):
        return f"dict[{len(v)}]"
    return type(v).__name__


def _brief(v) -> str:
    if _is_array(v):
        a = np.asarray(v)
        if a.size <= _SHOW:
            return np.array2string(a, precision=4, separator=", ") if a.ndim else repr(a.item())
        return _kind(v)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k!r}: {_brief(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v)


def _describe(v) -> str:
    if isinstance(v, Result):
        return repr(v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_describe(x)}" for k, x in v.items())
    if not _is_array(v):
        return _brief(v)
    a = np.asarray(v)
    if a.ndim == 0 or a.size <= _SHOW:
        return _brief(v)
    if a.dtype.kind in "US" or (a.dtype == object and all(isinstance(e, str) for e in a.flat)):
        values, counts = np.unique(a, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return ", ".join(f"{values[i]} {counts[i]}" for i in order)
    if a.dtype == bool:
        return f"{int(a.sum())} of {a.size} True"
    if a.dtype.kind in "iuf":
        x = a.astype(np.float64)
        finite = np.isfinite(x)
        n_bad = a.size - int(finite.sum())
        if not finite.any():
            return f"all {a.size} non-finite"
        text = f"mean {x[finite].mean():.4g}, range [{x[finite].min():.4g}, {x[finite].max():.4g}]"
        return text + (f", {n_bad} non-finite" if n_bad else "")
    return _kind(v)
