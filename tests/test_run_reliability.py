"""Run reliability: every refusal up front and in one line (hyperparameters, seeds, devices, damaged
manifests), one writer per run folder (locks), Ctrl-C/SIGTERM stop at a chunk boundary with a
checkpoint and the --resume command, divergence reported and recorded as NaN, disk estimates that
count only what is left, final.npz rebuilt by --resume. Processes are real subprocesses at tiny size."""

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from conftest import PROBES, ROOT, SMALL, assert_same_recording, hooked_train_script, record_small, subprocess_env
from conftest import TRAIN_ARGS as ARGS

from experiments.train import main
from rvsp_jax.config import TrainConfig
from rvsp_jax.io import record, runfolder, store
from rvsp_jax.io.runfolder import RunFolderError, RunLock
from rvsp_jax.training.ensemble import member_keys, root_key
from rvsp_jax.training.probes import ProbeConfig

ENV = subprocess_env()

# experiments.train that sends itself SIGNAL from the training loop when it takes the host copy of
# its first checkpoint (chunk 1 done, chunk 2 computing): as a Ctrl-C mid-run, at a fixed point
SIGNAL_AT_FIRST_CHECKPOINT = hooked_train_script(
    "rvsp_jax.io.record",
    "host_state",
    """
    if calls == 1:
        os.kill(os.getpid(), getattr(signal, os.environ["SEND_SIGNAL"]))
""",
)


@pytest.fixture
def reference(small_run):
    return small_run


def exit_message(call) -> str:
    with pytest.raises(SystemExit) as exit_:
        call()
    return str(exit_.value.code)


# ---- refusals up front -------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_learning_rates_are_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([f"--lr={value}", "--out", "unused"])
    assert exit_.value.code == 2
    assert f"the learning rate must be a finite number > 0, got {float(value)}" in capsys.readouterr().err


def test_an_option_of_the_wrong_type_is_refused_before_any_folder_exists(tmp_path):
    out = tmp_path / "run"
    message = exit_message(lambda: main([*ARGS, "--opt-kwargs", '{"momentum": "x"}', "--out", str(out)]))
    assert message.startswith("error: optax.sgd cannot run with opt_kwargs") and "\n" not in message
    assert not out.exists()


@pytest.mark.parametrize("flag", ["0", "-1"])
def test_device_counts_below_one_are_refused_by_the_parser(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--devices", flag, "--out", "unused"])
    assert exit_.value.code == 2
    assert "number of host devices must be >= 1" in capsys.readouterr().err


def test_a_malformed_host_device_variable_is_refused_and_does_not_break_import(monkeypatch, capsys):
    monkeypatch.setenv("RVSP_JAX_HOST_DEVICES", "abc")
    with pytest.raises(SystemExit) as exit_:
        main(["--out", "unused"])
    assert exit_.value.code == 2
    assert "RVSP_JAX_HOST_DEVICES must be an integer >= 1, got 'abc'" in capsys.readouterr().err
    imported = subprocess.run(
        [sys.executable, "-c", "import rvsp_jax"],
        env={**ENV, "RVSP_JAX_HOST_DEVICES": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0 and imported.stderr == ""  # importing sets no devices, so no warning


def test_seeds_cover_the_full_64_bit_range_without_wrapping(capsys):
    assert np.array_equal(root_key(5), jax.random.PRNGKey(5))  # old seeds keep their trajectories
    assert np.array_equal(root_key(2**32 - 1), jax.random.PRNGKey(2**32 - 1))
    ids = jax.numpy.arange(2)
    keys = {seed: np.asarray(member_keys(seed, ids, "both")[0]) for seed in (0, 2**32, 2**64 - 1)}
    assert not np.array_equal(keys[0], keys[2**32]) and not np.array_equal(keys[0], keys[2**64 - 1])
    assert TrainConfig(base_seed=2**64 - 1).base_seed == 2**64 - 1
    with pytest.raises(SystemExit) as exit_:
        main(["--base-seed", str(2**64), "--out", "unused"])
    assert exit_.value.code == 2 and "base_seed must be an integer from 0 to 2**64 - 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, needle",
    [
        (bytes(range(256)) * 4, "is not valid JSON"),
        (b"[1, 2, 3]", "holds a JSON list, not a manifest object"),
        (json.dumps({"format": runfolder.FORMAT, "config": {}}).encode(), "lacks status"),
    ],
)
def test_a_damaged_manifest_is_an_error_naming_the_file_and_the_remedy(tmp_path, content, needle):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_bytes(content)
    message = exit_message(lambda: main([*ARGS, "--out", str(out), "--resume"]))
    assert needle in message and str(out / "manifest.json") in message and "damaged" in message
    assert "\n" not in message
    assert (out / "manifest.json").read_bytes() == content  # nothing repaired or deleted


# ---- one writer per run folder -----------------------------------------------------------------
def test_a_locked_run_folder_refuses_resume_and_overwrite_naming_the_owner(reference):
    with RunLock(reference.path):
        with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()} on "):
            record_small(reference.path, resume=True)
        with pytest.raises(RunFolderError, match="will not replace a run that is training"):
            record_small(reference.path, overwrite=True)
    assert record_small(reference.path, resume=True).complete  # released: usable again


def test_a_lock_left_by_a_killed_process_is_stale_and_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from rvsp_jax.io.runfolder import RunLock
        lock = RunLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    assert runfolder.lock_owner(out).startswith(f"process {holder.pid} on ")
    holder.kill()
    holder.wait(timeout=30)
    assert runfolder.lock_owner(out) is None
    RunLock(out).acquire().release()


def test_two_commands_started_into_one_folder_one_wins_the_other_is_refused(tmp_path):
    out = tmp_path / "shared"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.train", *ARGS, "--lr", lr, "--out", str(out)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lr in ("0.1", "0.2")
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for rc, _, err in results if rc == 1)
    assert any(s in loser for s in ("in use by process", "just created by another process", "already exists")), loser
    assert "Traceback" not in loser
    winner_lr = next(lr for (rc, _, _), lr in zip(results, ("0.1", "0.2")) if rc == 0)
    recorded = store.open_run(out)
    assert recorded.complete and recorded.config.lr == float(winner_lr)


# ---- signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_checkpoints_prints_the_resume_command_and_resumes_bit_for_bit(reference, tmp_path, sig):
    out = tmp_path / "stopped"
    stopped = subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_FIRST_CHECKPOINT, *ARGS, "--out", str(out)],
        cwd=ROOT,
        env={**ENV, "SEND_SIGNAL": sig},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    line = next(ln for ln in stopped.stderr.splitlines() if ln.startswith("interrupted: "))
    assert f"stopped by {sig} at step 10 of 30, checkpoint written" in line
    command = shlex.split(line.split("continue with: ")[1])
    assert command[:3] == ["python", "-m", "experiments.train"] and command[-1] == "--resume"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["steps_completed"] == 10
    resumed = subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_recording(store.open_run(out), reference)


def test_the_resume_command_drops_overwrite_and_names_the_folder():
    assert (
        record.resume_command("python -m experiments.train --seeds 3 --overwrite", Path("r/x"))
        == "python -m experiments.train --seeds 3 --out r/x --resume"
    )
    assert (
        record.resume_command("python -m experiments.spectra --out a", Path("a"))
        == "python -m experiments.spectra --out a --resume"
    )


# ---- divergence --------------------------------------------------------------------------------
def test_diverged_members_are_reported_excluded_and_recorded_as_nan(tmp_path, capsys):
    out = tmp_path / "diverging"
    main(
        [
            "--seeds",
            "6",
            "--steps",
            "30",
            "--chunk",
            "10",
            "--block",
            "1",
            "--activation",
            "relu",
            "--lr",
            "10000",
            "--probes",
            "params,updates",
            "--probe-index",
            "4",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    recorded = store.open_run(out)
    at = np.asarray(recorded.manifest["result"]["diverged_at"])
    assert (at >= 0).sum() == 3 and (at < 0).sum() == 3  # measured: members 0-2 diverge at steps 3-4
    assert f"diverged: 3 of 6 members (non-finite loss or parameters; the first at step {at[at >= 0].min()})" in printed
    accuracy = np.asarray(recorded.manifest["result"]["test_accuracy"])
    assert f"test accuracy: mean {accuracy[at < 0].mean():.4f} over 3 members that did not diverge" in printed
    params = np.asarray(recorded["params"][...])
    for s, step in enumerate(at):
        if step >= 0:
            assert np.isfinite(params[s, :step]).all() and np.isnan(params[s, step:]).all()
        else:
            assert np.isfinite(params[s]).all()


# ---- disk and final results --------------------------------------------------------------------
def test_the_disk_check_scales_with_the_run_and_counts_only_what_is_left(reference, tmp_path, monkeypatch):
    ens, layout = record._ensemble(SMALL, PROBES, None)
    specs = record._specs(ens, layout, PROBES)
    new = record._needed_bytes(reference.path, ens, specs, resume=False)
    left = record._needed_bytes(reference.path, ens, specs, resume=True)
    written = sum(f.stat().st_size for f in (reference.path / "arrays").rglob("*") if f.is_file())
    assert sum(s.nbytes for s in specs) <= written < sum(s.nbytes for s in specs) + 100_000  # + metadata
    assert left == new - sum(s.nbytes for s in specs) and left < new / 4  # temporaries and states only
    assert runfolder.disk_slack(452_000) < 5 << 20  # a 452 kB run fits on a 30 MiB disk
    free = SimpleNamespace(total=30 << 20, used=0, free=30 << 20)
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda p: free)
    metrics_only = record.run(SMALL, ProbeConfig(probes="none"), tmp_path / "small", progress=False)
    assert metrics_only.complete


def test_resume_rebuilds_a_deleted_final_npz_from_the_last_checkpoint(reference, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference.path, out)
    (out / "final.npz").unlink()
    assert not store.open_run(out).complete
    rebuilt = record_small(out, resume=True)
    assert rebuilt.complete
    a, b = rebuilt.final(), reference.final()
    assert np.array_equal(a.test_accuracy, b.test_accuracy) and np.array_equal(a.test_loss, b.test_loss)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        assert np.array_equal(x, y)


def test_resume_refuses_a_chunk_lost_before_the_checkpoint(reference, tmp_path):
    import shutil

    out = tmp_path / "holed"
    shutil.copytree(reference.path, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(status="running")
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "final.npz").unlink()
    chunk = next(p for p in sorted((out / "arrays" / "params" / "c").rglob("*")) if p.is_file())
    chunk.unlink()
    with pytest.raises(store.StoreError, match="params"):
        record_small(out, resume=True)


def test_resume_of_a_complete_run_with_a_lost_chunk_says_so_instead_of_nothing_to_do(reference, tmp_path):
    import shutil

    out = tmp_path / "holed_complete"
    shutil.copytree(reference.path, out)
    next(p for p in sorted((out / "arrays" / "updates" / "c").rglob("*")) if p.is_file()).unlink()
    assert not store.open_run(out).complete
    with pytest.raises(store.StoreError, match="updates"):
        record_small(out, resume=True)
