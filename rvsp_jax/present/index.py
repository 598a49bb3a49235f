"""``results/index.md``: one page linking every run folder's report and figures, for browsing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rvsp_jax.io import atomic
from rvsp_jax.present.report import markdown_table


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Run folders below ``root`` that have a ``report.md`` (sub-runs of a study are not listed)."""
    root = Path(root)
    found = sorted(p.parent for p in root.rglob("report.md"))
    return [p for p in found if not any(q != p and q in p.parents for q in found)]


def write_index(root: str | os.PathLike, runs: list[Path] | None = None, title: str = "rvsp-jax results") -> Path:
    """Write ``<root>/index.md`` linking each run's report, summary and figures (PNG, with PDF).

    ``runs`` defaults to :func:`find_runs`; paths in the page are relative to ``root``, so the page
    works wherever the folder is copied. Written atomically.
    """
    root = Path(root)
    runs = find_runs(root) if runs is None else [Path(r) for r in runs]
    rows, sections = [], []
    for run in runs:
        rel = run.relative_to(root).as_posix()
        m = _manifest(run)
        name = m.get("experiment", run.name)
        figures = sorted((run / "figures").glob("*.png")) if (run / "figures").is_dir() else []
        rows.append(
            [
                f"[{name}]({rel}/report.md)",
                m.get("status", "—"),
                m.get("command") or "—",
                f"[summary.json]({rel}/summary.json)",
                str(len(figures)),
            ]
        )
        links = [f"[{f.stem}]({rel}/figures/{f.name}) ([PDF]({rel}/figures/{f.stem}.pdf))" for f in figures]
        sections.append(
            f"### {name}\n\n[report]({rel}/report.md) · " + " · ".join(links)
            if links
            else f"### {name}\n\n[report]({rel}/report.md)"
        )
    text = (
        f"# {title}\n\n{len(runs)} run folder(s). Each report states its configuration and its "
        "findings with uncertainty across members.\n\n"
        + markdown_table(["experiment", "status", "command", "numbers", "figures"], rows)
        + "\n\n## Figures\n\n"
        + "\n\n".join(sections)
        + "\n"
    )
    path = root / "index.md"
    return atomic.write_text(path, text)
