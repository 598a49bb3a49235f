"""Runs that span processes: 2 local processes (``python -m rvsp_jax.launch``, gloo collectives, one
CPU device each) record into one run folder what 1 process records, bit for bit; a kill -9 of one
process mid-run ends the other at once and ``--resume`` then completes identical arrays; a peer's
death ends a process started without the launcher within seconds, with one clear line. Plus the
store's side (each process writes only its own members' chunks; resume refuses a process split that
would share a chunk), in-process.

The subprocess tests are real processes at tiny size (--seeds 4 --steps 40 --chunk 10); every one
costs a few JAX start-ups (about 5 s each on an idle 2-core machine, several times that under load),
so they are marked slow."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_recording

from rvsp_jax import launch
from rvsp_jax.io import store
from rvsp_jax.training import devices as dev

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--seeds",
    "4",
    "--steps",
    "40",
    "--chunk",
    "10",
    "--block",
    "1",
    "--probes",
    "params,updates,weight_norms",
    "--probe-index",
    "16",
]

# experiments.train whose process KILL_PROCESS kills itself (SIGKILL, as kill -9) when its writer is
# about to write the chunk starting at KILL_AT_STEP: after the first checkpoint, before the end
KILL_HOOK = textwrap.dedent("""
    import os, runpy, signal, sys, time
    from pathlib import Path
    if os.environ.get("RVSP_JAX_PROCESS_ID") == os.environ.get("KILL_PROCESS"):
        from rvsp_jax.io import store
        write = store.write_steps
        def write_or_die(arrays, start, *args, **kwargs):
            if start >= int(os.environ["KILL_AT_STEP"]):
                Path(os.environ["KILLED_FILE"]).write_text(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            return write(arrays, start, *args, **kwargs)
        store.write_steps = write_or_die
    sys.argv = ["experiments.train", *sys.argv[1:]]
    runpy.run_module("experiments.train", run_name="__main__")
""")


def gloo_available() -> bool:
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 -- an unknown option value on this jaxlib
        return False
    return True


pytestmark = pytest.mark.skipif(not gloo_available(), reason="this jaxlib has no gloo CPU collectives")


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hook")
    (folder / "mp_kill_hook.py").write_text(KILL_HOOK)
    return folder


def env_for(hook_dir, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RVSP_JAX_PROCESS")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(hook_dir)]), **extra}


def launched(processes: int, module: str, args, env, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rvsp_jax.launch", "--processes", str(processes), "--", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, hook_dir):
    """The run recorded by one process with 2 CPU devices (the members split as 2 processes split them)."""
    out = tmp_path_factory.mktemp("one_process") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.train", *ARGS, "--devices", "2", "--out", str(out)],
        cwd=ROOT,
        env=env_for(hook_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return store.open_run(out)


def assert_same_files(a: Path, b: Path) -> None:
    """Every stored array and every entry of final.npz of two run folders are bit-identical."""
    ra, rb = store.open_run(a), store.open_run(b)
    assert_same_recording(ra, rb)
    with np.load(a / "final.npz") as fa, np.load(b / "final.npz") as fb:
        assert fa.files == fb.files
        for key in fa.files:
            np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


# ---- subprocesses -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_record_into_one_folder_what_one_process_records(reference, hook_dir, tmp_path):
    out = tmp_path / "two"
    done = launched(2, "experiments.train", [*ARGS, "--out", str(out)], env_for(hook_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_files(reference.path, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "2 process(es)" in manifest["device"]
    assert not list(out.rglob("*.tmp"))
    assert done.stdout.count("run: ") == 1  # process 0 reports; the others' stdout is dropped


@pytest.mark.slow
def test_a_killed_process_stops_its_peer_at_once_and_resume_gives_identical_arrays(reference, hook_dir, tmp_path):
    out, killed = tmp_path / "killed", tmp_path / "killed_at"
    env = env_for(hook_dir, KILL_PROCESS="1", KILL_AT_STEP="20", KILLED_FILE=str(killed))
    done = launched(2, "mp_kill_hook", [*ARGS, "--out", str(out)], env)
    ended = time.time()
    assert done.returncode == 128 + signal.SIGKILL, done.stderr[-3000:]
    assert "launch: process 1 of 2" in done.stderr and "killed by SIGKILL" in done.stderr
    after = ended - float(killed.read_text())
    print(f"launcher exit {after:.2f} s after the kill -9 of process 1")
    assert after < 60
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["steps_completed"] < 40

    resumed = launched(2, "experiments.train", [*ARGS, "--out", str(out), "--resume"], env_for(hook_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"resumed from step {manifest['sessions'][-1]['from_step']}")
    assert manifest["status"] == "complete"
    assert_same_files(reference.path, out)


@pytest.mark.slow
def test_without_the_launcher_a_peers_death_ends_the_other_process_in_seconds(hook_dir, tmp_path):
    out, killed = tmp_path / "run", tmp_path / "killed_at"
    coordinator = f"127.0.0.1:{launch.free_port()}"
    procs = []
    for i in range(2):
        env = env_for(
            hook_dir,
            KILL_PROCESS="1",
            KILL_AT_STEP="20",
            KILLED_FILE=str(killed),
            RVSP_JAX_HOST_DEVICES="1",
            RVSP_JAX_PROCESS_ID=str(i),
            RVSP_JAX_PROCESS_COUNT="2",
            RVSP_JAX_COORDINATOR=coordinator,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "rvsp_jax.launch", "--worker", "--", "mp_kill_hook", *ARGS, "--out", str(out)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        _, err = procs[0].communicate(timeout=300)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    ended = time.time()
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode != 0, err[-3000:]
    after = ended - float(killed.read_text())
    print(f"process 0 exited ({procs[0].returncode}) {after:.2f} s after the kill -9 of process 1")
    assert after < 60
    ours = [ln for ln in err.splitlines() if ln.startswith("[process 0/2] error:")]
    jax_fatal = "Terminating process because the JAX distributed service detected fatal errors"
    print(ours[0] if ours else "JAX's own fatal error")
    assert ours or jax_fatal in err, err[-3000:]


# ---- in-process: each process writes its own members' chunks ---------------------------------------


def test_processes_write_only_their_own_members_chunks_and_together_the_whole_array(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 6, 10)).astype(np.float32)
    spec = store.ArraySpec("a", (8, 6, 10), (2, 6, 10), "float32", "none")
    array = store.create_arrays(tmp_path, [spec])["a"]
    first = dev.MemberParts([x[:2], x[2:4]], starts=[0, 2], members=8)  # process 0: members 0-3
    second = dev.MemberParts([x[4:6], x[6:]], starts=[4, 6], members=8)  # process 1: members 4-7
    assert first.shape == second.shape == (8, 6, 10) and not first.complete
    store.write_by_chunk(array, 0, first)
    got = array[:]
    np.testing.assert_array_equal(got[:4], x[:4])
    assert np.isnan(got[4:]).all()  # the other process's chunks are left to it
    store.write_by_chunk(array, 0, second)
    np.testing.assert_array_equal(array[:], x)
    with pytest.raises(ValueError, match="holds members 4-5, 6-7 of 8 only"):
        np.asarray(second)
    gathered = dev.MemberParts([x[4:]], starts=[4], members=8, gather=lambda: x)
    np.testing.assert_array_equal(np.asarray(gathered), x)


def test_a_chunk_shared_by_two_processes_is_refused_before_and_while_writing(tmp_path):
    spec = store.ArraySpec("updates", (8, 6, 10), (4, 6, 10), "float32", "none")
    metrics = store.ArraySpec("metrics/loss", (8, 6), (8, 6), "float32", "zstd")
    arrays = {s.name: s for s in (spec, metrics)}
    assert store.member_chunk_problem(arrays, {0: [(0, 4)], 1: [(4, 8)]}) is None
    assert store.member_chunk_problem(arrays, {0: [(0, 8)]}) is None  # one process writes it all
    problem = store.member_chunk_problem(arrays, {0: [(0, 2)], 1: [(2, 4)], 2: [(4, 6)], 3: [(6, 8)]})
    assert problem.startswith("updates: members 0-3 are one zarr chunk, but processes 0, 1 would")
    array = store.create_arrays(tmp_path, [spec])["updates"]
    x = np.ones((8, 6, 10), np.float32)
    with pytest.raises(store.StoreError, match="members 0-3 share one zarr chunk"):
        store.write_by_chunk(array, 0, dev.MemberParts([x[:2]], starts=[0], members=8))


def test_member_ranges_name_each_processs_members():
    import jax

    mesh = dev.member_mesh()
    d = mesh.size
    ranges = dev.member_ranges(mesh, padded=2 * d, members=2 * d - 1)
    assert list(ranges) == [jax.process_index()]
    assert ranges[0][0] == (0, 2) and ranges[0][-1] == (2 * d - 2, 2 * d - 1)  # padding left out


def test_the_launcher_refuses_a_command_line_without_a_module():
    for argv, words in ((["--processes", "2"], "the -- is required"), (["--processes", "2", "--"], "name the module")):
        with pytest.raises(SystemExit) as exit_:
            launch.main(argv)
        assert exit_.value.code == 2 or words in str(exit_.value.code)


STUDY = [
    "--seeds",
    "2",
    "--steps",
    "64",
    "--chunk",
    "32",
    "--block",
    "1",
    "--probe-index",
    "2",
    "--nlags",
    "8",
    "--nperseg",
    "16",
    "--variants",
    "momentum",
    "--frozen-batches",
    "16",
    "--lr",
    "0.05,0.2",
]


@pytest.mark.slow
def test_a_study_on_a_sweep_across_two_processes_writes_what_one_process_writes(hook_dir, tmp_path):
    # a study folder (open_study / train_variant / finish_study) with two grid points:
    # process 0 writes the folder, summaries, reports and figures; process 1 only its chunks
    one, two = tmp_path / "one", tmp_path / "two"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.optimizers", *STUDY, "--devices", "2", "--out", str(one)],
        cwd=ROOT,
        env=env_for(hook_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = launched(2, "experiments.optimizers", [*STUDY, "--out", str(two)], env_for(hook_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_files(one / "runs" / "momentum", two / "runs" / "momentum")
    for folder in ("points/0-lr=0.05", "points/1-lr=0.2"):
        a, b = (json.loads((o / folder / "summary.json").read_text()) for o in (one, two))
        assert a == b
    a, b = (json.loads((o / "summary.json").read_text()) for o in (one, two))
    assert a == b and json.loads((two / "manifest.json").read_text())["status"] == "complete"
    assert sorted(p.name for p in (two / "figures").iterdir()) == ["statistics.pdf", "statistics.png"]
    assert not list(two.rglob("*.tmp"))
