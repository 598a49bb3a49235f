"""The figure protocol of every study: a table of figure makers with captions, saved in one place.

A study declares ``FIGURES = {name: (caption, maker)}``, where ``maker(subject)`` draws one
:class:`matplotlib.figure.Figure` from the study's analysed result (``subject``) and touches no file,
or returns None when the figure does not apply to this result (e.g. no variant has a theory). A
caption is a string, or a function of the subject for one that names its numbers.
:func:`save_figures` draws every one inside :func:`rvsp_jax.present.plots.paper_style` and writes
``folder/<name>.png|pdf`` with :func:`rvsp_jax.present.plots.save_figure`; the report refers to the
same names and captions (:func:`captions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from rvsp_jax.present import plots

FigureTable = Mapping[str, tuple[str, Callable]]
"""name -> (caption, maker); ``maker(subject)`` returns a Figure."""


def caption_of(caption, subject=None) -> str:
    """A table's caption as text (a callable one is called with the subject)."""
    return caption(subject) if callable(caption) else caption


def captions(table: FigureTable, subject=None) -> dict[str, str]:
    """name -> caption of every figure in ``table``, in its order."""
    return {name: caption_of(caption, subject) for name, (caption, _) in table.items()}


def draw(table: FigureTable, subject) -> dict:
    """name -> Figure for every maker of ``table`` that applies (drawn in the paper style, no files)."""
    with plots.paper_style():
        figures = {name: make(subject) for name, (_, make) in table.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def save_figures(table: FigureTable, subject, folder) -> dict[str, str]:
    """Draw every figure of ``table`` from ``subject`` and write ``folder/<name>.png|pdf`` (one at a
    time, each closed once saved); returns name -> caption of the figures written."""
    folder = Path(folder)
    written = {}
    with plots.paper_style():
        for name, (caption, make) in table.items():
            fig = make(subject)
            if fig is not None:
                plots.save_figure(fig, folder, name)
                written[name] = caption_of(caption, subject)
    return written
