"""``python -m experiments.train``: SIGKILL mid-run then --resume ends bit for bit equal to an
uninterrupted run; refusals and the complete-run message through the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import ROOT, SMALL, assert_same_recording, hooked_train_script
from conftest import TRAIN_ARGS as ARGS

from experiments.train import main
from rvsp_jax.io.store import open_run

# Runs experiments.train with its second checkpoint held back, so the process is reliably killed
# with chunk 1 complete on disk and chunk 2's arrays written past the checkpoint.
HOLD_SECOND_CHECKPOINT = hooked_train_script(
    "rvsp_jax.io.store",
    "save_checkpoint",
    """
    if calls == 2:
        time.sleep(600)
""",
)


@pytest.fixture
def reference(small_run):
    return small_run


def steps_completed(out: Path) -> int:
    try:
        return json.loads((out / "manifest.json").read_text())["steps_completed"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def test_sigkill_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SECOND_CHECKPOINT, *ARGS, "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while steps_completed(out) < SMALL.chunk:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the first chunk never reached the disk"
        time.sleep(0.05)
    time.sleep(0.5)  # let it write chunk 2's arrays past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    killed = open_run(out)
    assert killed.manifest["status"] == "running" and killed.steps_completed == SMALL.chunk
    # data past the checkpoint is on disk (chunk 2 of the metrics): resume must overwrite it
    assert np.isfinite(killed["metrics/loss"][:, SMALL.chunk : 2 * SMALL.chunk]).all()
    zarr.open_array(out / "arrays" / "updates", mode="r+")[:, SMALL.chunk :] = 7.0  # simulate garbage

    resumed = subprocess.run(
        [sys.executable, "-m", "experiments.train", *ARGS, "--out", str(out), "--resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"run: {out} (complete, 30 steps" in resumed.stdout
    assert_same_recording(open_run(out), reference)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timing"]["started_at_step"] == SMALL.chunk
    assert manifest["command"].startswith("python -m experiments.train --seeds 3")


def test_cli_refuses_an_existing_folder_and_another_config(reference, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*ARGS, "--out", str(reference.path)])
    assert "already exists" in str(exit_.value.code) and "--resume" in str(exit_.value.code)
    with pytest.raises(SystemExit) as exit_:
        main([*ARGS, "--lr", "0.5", "--out", str(reference.path), "--resume"])
    assert "config.lr: run folder has 0.1, this command gives 0.5" in str(exit_.value.code)


def test_cli_resume_of_a_complete_run_says_so_and_exits_0(reference, capsys):
    main([*ARGS, "--out", str(reference.path), "--resume"])  # returns normally: exit status 0
    captured = capsys.readouterr()
    assert "already complete (30 steps); nothing to do" in captured.out + captured.err
    assert "(complete, 30 steps, S=3" in captured.out


def test_cli_flags_and_bad_probe_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--seeds",
        "--probes",
        "--probe-index",
        "--probe-every",
        "--probe-batch",
        "--compress",
        "--out",
        "--resume",
        "--overwrite",
        "--devices",
    ):
        assert flag in text
    with pytest.raises(SystemExit) as exit_:
        main(["--probes", "weights"])
    assert exit_.value.code == 2 and "unknown probe kind" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume"])
    assert "--resume needs --out" in capsys.readouterr().err
