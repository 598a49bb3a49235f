"""Run-folder safety: --overwrite replaces only our own run folders and never the user's files, an
empty or root-like --out is refused, and a run that cannot fit in memory is refused before anything
is allocated. The command-line cases run ``python -m experiments.train`` as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import assert_same_recording, record_small

from rvsp_jax.config import TrainConfig
from rvsp_jax.data import load
from rvsp_jax.io import record, runfolder
from rvsp_jax.io.runfolder import RunFolderError
from rvsp_jax.training import footprint
from rvsp_jax.training.ensemble import Ensemble

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--seeds",
    "2",
    "--steps",
    "4",
    "--chunk",
    "2",
    "--block",
    "1",
    "--probes",
    "params",
    "--probe-index",
    "3",
    "--devices",
    "1",
]


def cli(*args, cwd=ROOT, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RVSP_JAX_HOST_DEVICES": "1"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_project(folder: Path) -> dict[str, str]:
    """A folder a user cares about, with a manifest.json of its own; returns its files' contents."""
    (folder / "src").mkdir(parents=True)
    files = {
        "manifest.json": json.dumps({"name": "my app"}),
        "notes.txt": "do not lose me",
        "src/main.py": "print('hello')\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def assert_intact(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        assert (folder / name).read_text() == text, name


def test_overwrite_refuses_a_folder_whose_manifest_is_not_ours(tmp_path):
    project = tmp_path / "project"
    files = user_project(project)
    done = cli(*TINY, "--out", str(project), "--overwrite")
    assert done.returncode == 1, done.stderr
    assert "not an rvsp-jax run folder" in done.stderr and "Traceback" not in done.stderr
    assert_intact(project, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # nothing moved aside


def test_overwrite_refuses_a_run_folder_holding_files_a_run_does_not_write(tmp_path):
    out = tmp_path / "run"
    record_small(out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"holds files a run does not write \(notes.txt\)"):
        runfolder.check_new(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "final.npz").exists()


def test_empty_out_is_refused_by_the_parser_and_nothing_in_the_cwd_is_touched(tmp_path):
    files = user_project(tmp_path / "cwd")
    done = cli(*TINY, "--out", "", "--overwrite", cwd=tmp_path / "cwd")
    assert done.returncode == 2 and "--out: is empty" in done.stderr, done.stderr
    assert_intact(tmp_path / "cwd", files)


@pytest.mark.parametrize("target", [".", "..", "/", "~"])
def test_overwrite_refuses_the_cwd_its_parents_the_root_and_home(tmp_path, monkeypatch, target):
    files = user_project(tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(RunFolderError, match="--overwrite refuses --out"):
        runfolder.check_new(Path(os.path.expanduser(target)), overwrite=True)
    assert_intact(tmp_path / "cwd", files)


def test_overwrite_of_the_cwd_through_the_cli_is_refused_with_one_line(tmp_path):
    files = user_project(tmp_path / "cwd")
    done = cli(*TINY, "--out", ".", "--overwrite", cwd=tmp_path / "cwd")
    assert done.returncode == 1 and "current directory" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert_intact(tmp_path / "cwd", files)


def test_overwrite_replaces_our_run_and_leaves_nothing_aside(tmp_path):
    out = tmp_path / "run"
    first = record_small(out)
    again = record_small(out, overwrite=True)
    assert_same_recording(again, first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_replacement_that_fails_to_start_puts_the_old_run_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    record_small(out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("simulated failure while starting")

    monkeypatch.setattr(record, "_start", broken)
    with pytest.raises(OSError, match="simulated"):
        record_small(out, overwrite=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_billion_seeds_are_refused_up_front_with_the_numbers(tmp_path):
    done = cli("--seeds", "1000000000", "--steps", "10", "--out", str(tmp_path / "big"), timeout=60)
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert "1,000,000,000 members needs about" in line and "TiB" in line and "--seeds" in line
    assert "Traceback" not in line and not (tmp_path / "big").exists()


def test_footprint_scales_with_members_and_counts_what_the_trainer_keeps():
    data = load("mnist")
    plain = Ensemble(TrainConfig(seeds=8, steps=4, chunk=4, block=1), data, devices=jax.devices()[:1]).footprint()
    twice = Ensemble(TrainConfig(seeds=16, steps=4, chunk=4, block=1), data, devices=jax.devices()[:1]).footprint()
    assert twice.state == 2 * plain.state and twice.orders == 2 * plain.orders
    # 13,002 float32 parameters, the optimizer state of inject_hyperparams(sgd) (its int32 count
    # and float32 learning rate), the diverged flag (1 byte) and step (4 bytes), 5 copies of 8
    # members; orders: int32 [S, 2, 60000] on the host and on the device
    assert plain.state == footprint.STATE_COPIES * 8 * (13002 * 4 + 4 + 4 + 5)
    assert plain.orders == 2 * 8 * 2 * 60000 * 4
    with pytest.raises(footprint.FootprintError, match="members needs about"):
        footprint.check(plain._replace(orders=1 << 60), jax.devices()[:1], members=8)
