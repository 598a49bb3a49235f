"""The human side of a run folder: ``report.md`` (tables, figures, findings) and ``summary.json``.

A :class:`Report` collects markdown blocks and is written atomically at the end; numbers are
formatted with their uncertainty across members (:func:`fmt_ci`). ``summary.json`` holds the same
numbers for programs (numpy scalars and arrays are converted by :func:`json_ready`; NaN becomes
null) and names its format in ``"schema"`` (:data:`SUMMARY_SCHEMA`; see ``docs/summary.md``).

With several processes only process 0 writes (:func:`rvsp_jax.training.devices.is_writer`): the others'
:func:`write_summary` and :meth:`Report.write` return the path without writing. Progress bars follow
:func:`progress_enabled` (``TQDM_DISABLE`` turns them off).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rvsp_jax.analysis.summary import MemberSummary
from rvsp_jax.io import atomic
from rvsp_jax.io.progress import progress_enabled  # noqa: F401 -- re-exported: the studies' import


def json_ready(obj):
    """A JSON-ready copy of ``obj`` (what :func:`write_summary` writes), made of plain Python values:
    dicts with ``str`` keys, NamedTuples (``_asdict``) as dicts, lists and tuples as lists, numpy
    arrays as nested lists, numpy scalars as ``float``/``int``/``bool``, NaN and inf as ``None``,
    paths as ``str``; anything else (str, int, bool, None) is returned as it is. A summary passed
    through it reads as ``summary.json`` will read back (the per-point analysis of a sweep uses that)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict"):  # NamedTuple results such as MemberSummary
        return json_ready(obj._asdict())
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


SUMMARY_SCHEMA = "rvsp-jax summary 1"
"""The ``"schema"`` of every ``summary.json`` written by :func:`write_summary` (docs/summary.md)."""


def _writer() -> bool:
    from rvsp_jax.training.devices import is_writer

    return is_writer()


def write_summary(folder: str | os.PathLike, summary: dict) -> Path:
    """Write ``summary.json`` atomically (temporary file, then rename); return its path.

    ``"schema": SUMMARY_SCHEMA`` is added as the first key (a ``"schema"`` already in ``summary``
    is kept). Only process 0 writes (:func:`rvsp_jax.training.devices.is_writer`); other processes return
    the path without writing."""
    path = Path(folder) / "summary.json"
    if not _writer():
        return path
    summary = {"schema": SUMMARY_SCHEMA, **summary}
    return atomic.write_text(path, json.dumps(json_ready(summary), indent=1, allow_nan=False) + "\n")


def fmt(x, digits: int = 3) -> str:
    """A number in ``digits`` significant digits; NaN/None as an em dash."""
    if x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):.{digits}g}"


def pct(x) -> str:
    """A fraction as a percentage (``0.25`` -> ``25%``); None/NaN as an em dash."""
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


def fmt_ci(s: MemberSummary, digits: int = 3) -> str:
    """``mean [lo, hi]`` of a :class:`MemberSummary` (with ``n=…`` when members were excluded)."""
    text = f"{fmt(s.mean, digits)} [{fmt(s.lo, digits)}, {fmt(s.hi, digits)}]"
    return text + (f" (n={s.n}, {s.excluded} excluded)" if s.excluded else "")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table; cells are formatted with :func:`fmt` unless already strings."""
    cell = lambda v: v if isinstance(v, str) else fmt(v)  # noqa: E731
    lines = ["| " + " | ".join(str(h).replace("|", "\\|") for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """A markdown report built block by block, written atomically as ``report.md``."""

    def __init__(self, title: str):
        self.blocks: list[str] = [f"# {title}"]

    def section(self, title: str, level: int = 2) -> Report:
        self.blocks.append("#" * level + " " + title)
        return self

    def text(self, *paragraphs: str) -> Report:
        self.blocks.extend(p.strip() for p in paragraphs)
        return self

    def bullets(self, items: Iterable[str]) -> Report:
        self.blocks.append("\n".join(f"- {i}" for i in items))
        return self

    def table(self, header: Sequence[str], rows: Iterable[Sequence]) -> Report:
        self.blocks.append(markdown_table(header, rows))
        return self

    def figure(self, name: str, caption: str) -> Report:
        """Embed ``figures/<name>.png`` (the PDF beside it is linked)."""
        self.blocks.append(f"![{caption}](figures/{name}.png)\n\n*{caption}* ([PDF](figures/{name}.pdf))")
        return self

    def config(self, config: dict, command: str | None = None) -> Report:
        """A collapsible block with the configuration (and the command that made the run)."""
        body = json.dumps(json_ready(config), indent=1)
        cmd = f"Command: `{command}`\n\n" if command else ""
        self.blocks.append(f"{cmd}<details><summary>Configuration</summary>\n\n```json\n{body}\n```\n</details>")
        return self

    def markdown(self) -> str:
        return "\n\n".join(self.blocks) + "\n"

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``report.md`` atomically; return its path (process 0 only: other processes
        return the path without writing)."""
        path = Path(folder) / "report.md"
        if not _writer():
            return path
        return atomic.write_text(path, self.markdown())


def proportion_summary(x, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> MemberSummary:
    """Mean over members of per-member proportions ``x: [S, ...]`` with a percentile bootstrap
    interval (members resampled with replacement, ``n_boot`` times, numpy ``default_rng(seed)``).

    Unlike a t-interval the bootstrap interval of a mean of values in [0, 1] stays inside [0, 1]
    (it never reaches below 0 when a proportion is near 0). ``sem`` is the bootstrap standard error;
    non-finite members are excluded and counted as in
    :func:`~rvsp_jax.analysis.summary.across_members`; fewer than two finite members give a NaN
    interval. Float64.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(x, np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must have a members axis of length >= 1, got shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    rng = np.random.default_rng(seed)
    out = np.full((4, flat.shape[1]), np.nan)
    n = np.isfinite(flat).sum(0)
    for j in range(flat.shape[1]):
        v = flat[np.isfinite(flat[:, j]), j]
        if v.size:
            out[0, j] = v.mean()
        if v.size >= 2:
            means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(-1)
            out[1, j] = means.std(ddof=1)
            out[2:, j] = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    shape = x.shape[1:]
    mean, sem, lo, hi = (o.reshape(shape)[()] for o in out)
    return MemberSummary(mean, sem, lo, hi, n.reshape(shape)[()], (x.shape[0] - n).reshape(shape)[()])
