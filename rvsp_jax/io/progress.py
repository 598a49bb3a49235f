"""Whether to show progress bars (tqdm) at the edges of the library: recording, studies, experiments.

Kept apart from :mod:`rvsp_jax.present` so that recording (:mod:`rvsp_jax.io.record`) need not
import the presentation layer (and, through it, the whole analysis package) to draw its bar.
"""

from __future__ import annotations

import os

__all__ = ["progress_enabled"]


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show progress bars: ``progress`` when given, else True unless the environment
    variable ``TQDM_DISABLE`` is set to anything but ``""``, ``0`` or ``false`` (tqdm's own switch,
    which an explicit ``disable=`` would override). ``progress=True`` is also turned off by it:
    quiet mode wins, so a study that passes ``progress=True`` down stays quiet."""
    quiet = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    return (True if progress is None else bool(progress)) and not quiet
