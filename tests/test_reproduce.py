"""The reproduction command runs the chosen experiments and indexes every report and figure."""

import json
import re

import jax
import pytest

from experiments import reproduce
from rvsp_jax.studies.index import find_runs, write_index

TINY_PIXELS = ["--steps", "60", "--pca-images", "1500", "--nlags", "10", "--nperseg", "32"]


def test_reproduce_runs_an_experiment_and_links_every_file(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "SMALL", {"pixels": TINY_PIXELS})
    out = tmp_path / "repro"
    reproduce.main(["--seeds", "3", "--only", "pixels", "--out", str(out),
                    "--devices", str(len(jax.devices()))])
    index = (out / "index.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert "pixels/report.md" in links
    pngs = [link for link in links if link.endswith(".png")]
    assert len(pngs) == len(list((out / "pixels" / "figures").glob("*.png"))) > 0
    for link in links:
        assert (out / link).is_file(), link
    assert json.loads((out / "pixels" / "manifest.json").read_text())["status"] == "complete"
    # resuming reuses the finished run folder instead of refusing it
    reproduce.main(["--seeds", "3", "--only", "pixels", "--out", str(out), "--resume",
                    "--devices", str(len(jax.devices()))])


def test_unknown_experiment_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "pixels,nonsense", "--out", str(tmp_path)])


def test_index_lists_top_level_runs_only(tmp_path):
    for folder in ("a", "b", "b/runs/x"):
        (tmp_path / folder / "figures").mkdir(parents=True)
        (tmp_path / folder / "report.md").write_text("# r\n")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({"experiment": "alpha", "status": "complete"}))
    (tmp_path / "a" / "figures" / "f1.png").write_bytes(b"")
    assert [p.name for p in find_runs(tmp_path)] == ["a", "b"]
    text = write_index(tmp_path).read_text()
    assert "[alpha](a/report.md)" in text and "a/figures/f1.png" in text and "b/runs" not in text
