"""One paper style for every figure, atomic figure files, and the few plot helpers experiments share.

Usage::

    from rvsp_jax.present import plots

    with plots.paper_style():
        fig, ax = plots.subplots()
        plots.plot_band(ax, t, mean, lo, hi, label="ensemble mean")
        ax.set(xlabel="step", ylabel="loss")
        plots.save_figure(fig, run_dir / "figures", "loss")   # figures/loss.png and loss.pdf

Figures are made with :class:`matplotlib.figure.Figure` (no pyplot, no GUI): PNGs are rendered by
Agg whatever backend the session uses. Create and draw figures *inside* :func:`paper_style`, since
matplotlib reads most style settings when an artist is created. This module writes files; the
analysis modules never do.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "PALETTE",
    "PAPER_RC",
    "hist_compare",
    "loglog_with_reference",
    "markdown_table",
    "paper_style",
    "plot_band",
    "plot_members",
    "plot_psd_bands",
    "save_figure",
    "subplots",
    "verdict_table",
]

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Black last so that it is free for theory/reference curves.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

DPI = 300
WIDTHS = {"single": 3.4, "double": 7.0}  # inches: one column / full width of a two-column paper

PAPER_RC: dict[str, object] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "xtick.major.size": 3,
    "ytick.major.size": 3,
    "image.cmap": "viridis",
    "figure.dpi": 150,
    "figure.constrained_layout.use": True,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # embed TrueType, editable text in the PDF
    "ps.fonttype": 42,
}

FIGURE_FORMATS = ("png", "pdf")


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply :data:`PAPER_RC` for the duration of a ``with`` block (or as a decorator)."""
    with mpl.rc_context(PAPER_RC):
        yield


def subplots(
    nrows: int = 1, ncols: int = 1, *, width: str | float = "single", height: float | None = None, **kwargs
) -> tuple[Figure, object]:
    """A pyplot-free figure and axes sized for a paper.

    Args:
      nrows, ncols: grid of axes.
      width: ``"single"`` (3.4 in), ``"double"`` (7.0 in) or inches.
      height: inches; default ``0.75 * width / ncols * nrows`` (panels of aspect 4:3).
      **kwargs: passed to :meth:`Figure.subplots` (``sharex``, ``sharey``, ``squeeze``, ...).

    Returns:
      ``(fig, axes)`` as :meth:`Figure.subplots` returns them.
    """
    w = WIDTHS[width] if isinstance(width, str) else float(width)
    h = 0.75 * w / ncols * nrows if height is None else float(height)
    fig = Figure(figsize=(w, h), layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _close(fig: Figure) -> None:
    """Release ``fig``; also drop it from pyplot's registry if pyplot manages it."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()


def save_figure(fig: Figure, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write ``folder/name.png`` (300 dpi) and ``folder/name.pdf`` atomically, then close ``fig``.

    Each file is rendered to a temporary file in ``folder`` and moved into place with
    :func:`os.replace`, so a reader never sees a half-written figure and an interrupted run leaves
    the previous file intact. The figure is closed even when writing fails.

    Args:
      fig: the figure.
      folder: created if missing.
      name: file stem without extension or directories, e.g. ``"acf_by_layer"``.

    Returns:
      ``[png_path, pdf_path]``.

    With several processes only process 0 writes (:func:`rvsp_jax.training.devices.is_writer`); the others
    close the figure and return the paths it would have written.
    """
    if not name or os.sep in name or "/" in name or Path(name).suffix.lower() in {".png", ".pdf"}:
        raise ValueError(f"save_figure: name must be a bare file stem like 'acf', got {name!r}.")
    folder = Path(folder)
    from rvsp_jax.training.devices import is_writer

    if not is_writer():
        _close(fig)
        return [folder / f"{name}.{fmt}" for fmt in FIGURE_FORMATS]
    paths = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in FIGURE_FORMATS:
            final = folder / f"{name}.{fmt}"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".{fmt}.tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fig.savefig(fh, format=fmt, dpi=DPI)
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; figures are ordinary files
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            paths.append(final)
    finally:
        _close(fig)
    return paths


_UMASK: list[int] = []
"""The process's umask, read at the first save (reading it means setting it, so not at import)."""


def _umask() -> int:
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def plot_band(ax, t, mean, lo, hi, label: str | None = None, *, color=None, alpha: float = 0.25):
    """``mean`` as a line over ``t`` with the band ``[lo, hi]`` shaded in the same colour.

    Args: ``t, mean, lo, hi: [T]``. Returns ``(line, band)``.
    """
    (line,) = ax.plot(t, mean, label=label, color=color)
    band = ax.fill_between(t, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line, band


def plot_members(ax, t, x, *, color="0.5", alpha: float = 0.5, linewidth: float = 0.5, label: str | None = None):
    """One thin line per member: ``x: [k, T]`` over ``t: [T]`` (pass ``x[:k]`` to show a few).

    Only the first line carries ``label`` so that the legend gets one entry. Returns the k lines.
    """
    x = np.atleast_2d(np.asarray(x))
    lines = ax.plot(t, x.T, color=color, alpha=alpha, linewidth=linewidth)
    if label is not None and lines:
        lines[0].set_label(label)
    return lines


def loglog_with_reference(
    ax, x, y, slope: float, label: str | None = None, *, ref_label: str | None = None, color=None
):
    """``y`` against ``x`` on log-log axes, with a dashed reference line ``y = c x^slope``.

    The reference passes through the data's centre in log space (mean of ``log x`` and ``log y``
    over the positive, finite points), so it shows the slope, not a fit. Returns
    ``(data_line, ref_line)``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        raise ValueError("loglog_with_reference: no positive finite (x, y) pairs to plot on log axes.")
    (data,) = ax.plot(x[ok], y[ok], label=label, color=color)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    xr = np.exp([lx.min(), lx.max()])
    yr = np.exp(ly.mean() + slope * (np.log(xr) - lx.mean()))
    (ref,) = ax.plot(
        xr,
        yr,
        linestyle="--",
        color="0.2",
        linewidth=0.8,
        label=ref_label if ref_label is not None else f"slope {slope:g}",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    return data, ref


def plot_psd_bands(
    ax,
    freqs,
    psd,
    theory=None,
    *,
    label: str | None = "median",
    color=None,
    theory_label: str = "theory",
    quantiles: tuple[float, float] = (5.0, 95.0),
):
    """Median PSD across members with the 5-95% band, log-log, and an optional theory curve.

    Args:
      freqs: ``[F]``; the ``f = 0`` bin is dropped (log axis).
      psd: ``[S, F]`` one PSD per member; NaN rows (excluded members) are ignored.
      theory: optional ``[F]`` curve drawn dashed in black.
      quantiles: band percentiles.

    Returns:
      ``(median_line, band, theory_line_or_None)``.
    """
    freqs, psd = np.asarray(freqs, dtype=float), np.atleast_2d(np.asarray(psd, dtype=float))
    if psd.shape[-1] != freqs.shape[0]:
        raise ValueError(f"plot_psd_bands: psd [S, F] must match freqs [F], got {psd.shape} and {freqs.shape}.")
    keep = freqs > 0
    f = freqs[keep]
    lo, med, hi = np.nanpercentile(psd[:, keep], [quantiles[0], 50.0, quantiles[1]], axis=0)
    line, band = plot_band(ax, f, med, lo, hi, label=label, color=color)
    theory_line = None
    if theory is not None:
        (theory_line,) = ax.plot(
            f, np.asarray(theory, dtype=float)[keep], linestyle="--", color="k", linewidth=0.8, label=theory_label
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    return line, band, theory_line


def hist_compare(ax, a, b, labels: Sequence[str] = ("a", "b"), *, bins: int = 50, density: bool = True):
    """Histograms of ``a`` and ``b`` on shared bins, as two translucent filled steps.

    NaNs are ignored. Returns the two patch lists from :meth:`Axes.hist`.
    """
    a, b = np.ravel(np.asarray(a, dtype=float)), np.ravel(np.asarray(b, dtype=float))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise ValueError("hist_compare: both samples need at least one finite value.")
    both = np.concatenate([a, b])
    try:
        edges = np.histogram_bin_edges(both, bins=bins)
    except ValueError:  # a range too narrow (or too wide) for float64 bins: one bin per side
        lo, hi = float(both.min()), float(both.max())
        edges = np.array([lo, hi if hi > lo else lo + 1.0])
    out = []
    for values, lab in zip((a, b), labels):
        _, _, patches = ax.hist(values, bins=edges, density=density, histtype="stepfilled", alpha=0.45, label=lab)
        out.append(patches)
    return out


def _check_table(rows: Sequence[str], cols: Sequence[str], cells: Sequence[Sequence[object]]) -> list[list[str]]:
    cells = [[str(c) for c in row] for row in cells]
    if len(cells) != len(rows) or any(len(r) != len(cols) for r in cells):
        raise ValueError(
            f"table: cells must be {len(rows)} rows x {len(cols)} columns to match rows and cols, got "
            f"{[len(r) for r in cells]}."
        )
    return cells


def verdict_table(
    ax,
    rows: Sequence[str],
    cols: Sequence[str],
    cells: Sequence[Sequence[object]],
    colors: Mapping[str, str] | None = None,
):
    """Draw a table of verdicts on ``ax`` (axis hidden); ``colors`` maps a cell's text to its face colour.

    Args: ``cells[i][j]`` is the entry for ``rows[i]`` and ``cols[j]``. Returns the Table.
    """
    cells = _check_table(rows, cols, cells)
    colours = colors or {}
    face = [[colours.get(c, "white") for c in row] for row in cells]
    ax.set_axis_off()
    table = ax.table(
        cellText=cells, rowLabels=list(rows), colLabels=list(cols), cellColours=face, loc="center", cellLoc="center"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(mpl.rcParams["legend.fontsize"])
    for cell in table.get_celld().values():
        cell.set_linewidth(mpl.rcParams["axes.linewidth"])
    return table


def markdown_table(
    rows: Sequence[str], cols: Sequence[str], cells: Sequence[Sequence[object]], corner: str = ""
) -> str:
    """The same table as GitHub-flavoured markdown, for ``report.md`` (:func:`rvsp_jax.present.report.
    markdown_table` with the row labels as the first column); ``|`` in text is escaped."""
    from rvsp_jax.present.report import markdown_table as table

    cells = _check_table(rows, cols, cells)
    return table([corner, *cols], [[r, *row] for r, row in zip(rows, cells)]) + "\n"
