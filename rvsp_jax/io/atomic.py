"""Atomic file writes: the whole new content or the old file, never a half-written one.

Every file the library writes whole (manifests, summaries, reports, checkpoints, the index, arrays)
goes through :func:`write_bytes`: the bytes go to ``<name>.tmp`` beside the target (run folders
accept such temporary names), then :func:`os.replace` renames it over the target, which POSIX makes
atomic within one file system. A failed write removes the temporary file and leaves the target as
it was. (Figures use unique temporary names instead, :func:`rvsp_jax.present.plots.save_figure`.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` by ``data`` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` by ``text`` (UTF-8) atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))
