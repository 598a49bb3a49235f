"""The run store: chunk layout, the background writer, checkpoints, lazy reading, the manifest, the
refusals made before training, and a disk-full failure that leaves the run resumable."""

import errno
import json
import os
import shutil
import threading
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zarr.storage
from conftest import PROBES, SMALL, assert_same_recording, record_small

from rvsp_jax.io import runfolder, store
from rvsp_jax.io.record import run
from rvsp_jax.io.runfolder import RunFolderError
from rvsp_jax.io.store import ChunkWriter, StoreError, chunk_shape, open_run
from rvsp_jax.training import devices as dev
from rvsp_jax.training.ensemble import member_keys
from rvsp_jax.training.probes import ProbeConfig


@pytest.fixture
def reference(small_run):
    return small_run


# ---- layout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, step_chunk, want",
    [
        ((3, 30), 10, (3, 10)),
        ((3, 30, 13_002), 10, (3, 10, 3251)),  # 13,002 = 4 x 3251 - 2: no padded edge chunk
        ((256, 1000, 13_002), 20, (64, 20, 3251)),  # 64 x 20 x 3251 x 4 B = 15.9 MiB
        ((256, 1000, 1024), 200, (20, 200, 1024)),  # at most 16 MiB // 819,200 B = 20 members
        ((4, 5, 7), 10, (4, 5, 7)),  # never larger than the array
        ((2, 10, 10**6), 10, (2, 10, 4082)),  # 245 even pieces of P
        ((2, 5000, 10**6), 2000, (1, 2000, 2097)),  # one member, at most 16 MiB // (2000 x 4 B)
    ],
)
def test_chunk_shape_spans_one_training_chunk_and_at_most_16_mib(shape, step_chunk, want):
    assert chunk_shape(shape, step_chunk) == want
    assert np.prod(want) * 4 <= store.TARGET_CHUNK_BYTES
    # chunks tile the array with less than one chunk's worth of padding per axis
    for n, c in zip(shape[:1] + shape[2:], want[:1] + want[2:]):
        assert -(-n // c) * c - n < -(-n // c)


def test_member_chunks_never_straddle_two_devices_parts():
    # S=100 on 2 devices in blocks of 8: parts of 56 and 44 members; chunks divide 56
    assert chunk_shape((100, 1000, 13_002), 20, member_part=56) == (56, 20, 3251)  # 14.6 MB
    assert chunk_shape((300, 1000, 13_002), 20, member_part=150) == (50, 20, 3251)  # 64 fit; 50 | 150
    assert chunk_shape((100, 1000, 1024), 20, member_part=56) == (56, 20, 1024)
    assert chunk_shape((3, 30, 10), 10, member_part=16) == (3, 10, 10)  # one part holds them all
    assert chunk_shape((256, 1000, 13_002), 20, member_part=128) == (64, 20, 3251)


@pytest.mark.parametrize("chunks", [(4, 6, 10), (3, 6, 4), (8, 6, 10), (5, 6, 10), (2, 6, 3)])
def test_writing_member_parts_chunk_by_chunk_equals_writing_the_whole_array(tmp_path, chunks):
    x = np.random.default_rng(0).standard_normal((8, 6, 10)).astype(np.float32)
    parts = dev.MemberParts([x[:5], x[5:]])  # parts that some chunks straddle
    assert parts.shape == (8, 6, 10) and parts.starts == (0, 5) and parts.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(parts), x)
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(parts, copy=False)
    spec = store.ArraySpec("a", (8, 15, 10), chunks, "float32", "none")
    array = store.create_arrays(tmp_path, [spec])["a"]
    store.write_by_chunk(array, 6, parts)  # steps 6-11
    store.write_by_chunk(array, 12, dev.MemberParts([x[:5, :3], x[5:, :3]]))  # a short last chunk
    got = array[:]
    assert np.isnan(got[:, :6]).all()
    np.testing.assert_array_equal(got[:, 6:12], x)
    np.testing.assert_array_equal(got[:, 12:], x[:, :3])


def test_a_failed_chunk_write_on_a_writer_thread_reaches_the_caller(tmp_path, monkeypatch):
    x = np.ones((8, 6, 10), np.float32)
    array = store.create_arrays(tmp_path, [store.ArraySpec("a", (8, 6, 10), (2, 6, 10), "float32", "none")])["a"]
    original, calls = zarr.storage.LocalStore.set, []

    async def full_disk_on_the_third_chunk(self, key, value):
        calls.append(key)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_disk_on_the_third_chunk)
    with pytest.raises(OSError, match="No space left"):
        store.write_by_chunk(array, 0, x)
    assert len(calls) == 4  # the four member chunks were written side by side


def test_one_part_is_handed_out_as_is_unless_a_copy_is_asked_for():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    parts = dev.MemberParts([x])
    assert np.asarray(parts) is x
    copied = np.array(parts)  # numpy asks for a copy
    assert not np.shares_memory(copied, x)
    np.testing.assert_array_equal(copied, x)


def test_arrays_and_manifest_of_a_recorded_run(reference):
    m = reference.manifest
    assert m["status"] == "complete" and m["steps_completed"] == m["total_steps"] == 30
    assert m["config"] == SMALL.to_dict() and m["config_hash"] == SMALL.digest()
    assert m["probe_config"] == PROBES.to_dict()
    init_keys, data_keys = member_keys(SMALL.base_seed, jnp.arange(3), SMALL.vary)
    assert m["members"] == {
        "ids": [0, 1, 2],
        "init_keys": np.asarray(init_keys).tolist(),
        "data_keys": np.asarray(data_keys).tolist(),
        "grid_point": [0, 0, 0],
        "seed_index": [0, 1, 2],
        "hyperparams": {"learning_rate": [0.1] * 3},
    }
    assert m["grid"] == {"axes": {}, "points": [{}], "seeds": 3, "configs": [SMALL.to_dict()]}
    assert set(m["versions"]) >= {"jax", "flax", "optax", "numpy", "zarr"} and m["device"].startswith("cpu")
    # members chunked along the devices' parts: blocks of 2 padded to 2 x devices, split evenly
    part = dev.padded_members(3, dev.member_mesh(), SMALL.block) // len(jax.devices())
    assert m["arrays"]["updates"] == {
        "shape": [3, 30, 13_002],
        "chunks": [min(part, 3), 10, 3251],
        "dtype": "float32",
        "compress": "none",
        "time": "probe_step",
    }
    assert len(m["probes"]["names"]["params"]) == 13_002 and len(m["probes"]["probe_batch"]) == 8
    assert reference.config == SMALL and reference.probe_config == PROBES
    assert not [p for p in reference.path.rglob("*.tmp")]  # atomic writes left no temporaries
    f = reference.final()
    np.testing.assert_array_equal(f.test_accuracy, np.float32(m["result"]["test_accuracy"]))
    assert f.params["Dense_0"]["kernel"].shape == (3, 784, 16) and 0 < f.test_accuracy.min() <= 1
    assert f.diverged.tolist() == [False] * 3 and f.diverged_at.tolist() == [-1] * 3


def test_run_index_finds_named_entries(reference):
    idx = reference.index("updates", ["Dense_2/kernel[15,9]", "Dense_0/bias[0]"])
    assert idx.tolist() == [13_001, 0]
    with pytest.raises(KeyError, match="has no entries"):
        reference.index("updates", ["Dense_9/bias[0]"])
    with pytest.raises(KeyError, match="no array 'gradients'"):
        reference["gradients"]


def test_to_xarray_names_the_missing_package(reference):
    try:
        import xarray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs the xarray package"):
            reference.to_xarray()
    else:
        ds = reference.to_xarray()
        assert ds["updates"].shape == (3, 30, 13_002)


# ---- lazy reading ---------------------------------------------------------------------------------


def test_slicing_one_probe_reads_only_its_own_chunks(reference, monkeypatch):
    reads = []
    original = zarr.storage.LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        reads.append((os.path.relpath(str(self.root), reference.path / "arrays"), key))
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    run_ = open_run(reference.path)
    for name in ("params", "grads", "updates"):
        run_[name]  # opening reads metadata only
    assert sorted(reads) == [(name, "zarr.json") for name in ("grads", "params", "updates")]
    reads.clear()
    column = run_["updates"][:, :, 5]  # one parameter's [S, T] series
    member_chunks = -(-3 // run_["updates"].chunks[0])
    # every member chunk of the 3 step chunks, P chunk 0 only
    assert sorted(reads) == [("updates", f"c/{i}/{t}/0") for i in range(member_chunks) for t in range(3)]
    np.testing.assert_array_equal(column, reference["updates"][:, :, 5])


def test_slicing_works_with_the_other_arrays_chunk_files_deleted(reference, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(reference.path, copy)
    for name in reference.arrays:
        if name != "updates":
            shutil.rmtree(copy / "arrays" / name / "c")
    np.testing.assert_array_equal(open_run(copy)["updates"][1, 3:7, 100:200], reference["updates"][1, 3:7, 100:200])


# ---- writer and checkpoints -----------------------------------------------------------------------


def test_writer_writes_in_order_and_propagates_the_first_error():
    done = []

    def write(item):
        if item == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(item)

    writer = ChunkWriter(write)
    for i in range(3):
        writer.put(i)
    writer.put(3)
    with pytest.raises(OSError, match="No space left"):
        for i in range(4, 100):  # the failure surfaces at a later put (items after it are dropped)
            writer.put(i)
        writer.close()
    assert done == [0, 1, 2]
    with pytest.raises(OSError, match="No space left"):
        writer.close()


def test_writer_queue_is_bounded():
    release, started = threading.Event(), threading.Event()

    def write(item):
        started.set()
        release.wait()

    writer = ChunkWriter(write, maxsize=1)
    writer.put(0)
    started.wait()
    writer.put(1)  # fills the queue while item 0 is being written
    assert writer._queue.full()
    release.set()
    writer.close()
    assert writer._queue.empty()


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32).reshape(3, 2), "n": np.array([1, 2, 3], np.int32)}
    store.save_checkpoint(tmp_path, 40, state)
    step, back = store.load_checkpoint(tmp_path, state)
    assert step == 40 and back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["w"], state["w"])
    assert store.load_checkpoint(tmp_path / "none", state) is None
    with pytest.raises(StoreError, match="does not match"):
        store.load_checkpoint(tmp_path, {"w": np.zeros((3, 5), np.float32), "n": state["n"]})


# ---- refusals before training ---------------------------------------------------------------------


def test_existing_run_folder_is_not_overwritten_without_overwrite(reference, tmp_path):
    before = (reference.path / "manifest.json").read_bytes()
    with pytest.raises(RunFolderError, match="already exists .*--resume.*--overwrite"):
        record_small(reference.path)
    assert (reference.path / "manifest.json").read_bytes() == before
    other = tmp_path / "papers"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(RunFolderError, match="not a run folder"):
        record_small(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"


def test_overwrite_replaces_a_run_folder(reference, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(reference.path, out)
    (out / "arrays" / "updates" / "c" / "0" / "0" / "0").write_bytes(b"garbage")
    assert_same_recording(record_small(out, overwrite=True), reference)


def test_unwritable_folder_is_refused_before_training(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(RunFolderError, match="not writable"):
        record_small(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_folder_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        record_small(tmp_path / "file" / "run")


def test_too_little_disk_is_refused_with_the_estimate(tmp_path, monkeypatch):
    # params, updates, grads, 6 weight norms, pre and post of 8 x 32 units, 6 summaries; 4 metrics
    # (whole chunks, as zarr stores them: members in parts of 2, 10 steps, parameters in 4 parts;
    # 4 checksum bytes per chunk)
    def whole(shape, chunks):
        return int(np.prod([-(-n // c) for n, c in zip(shape, chunks)])) * (4 * int(np.prod(chunks)) + 4)

    spec_bytes = (
        3 * whole((3, 30, 13_002), (2, 10, 3251))
        + 2 * whole((3, 30, 6), (2, 10, 6))
        + 2 * whole((3, 30, 256), (2, 10, 256))
        + 4 * whole((3, 30), (3, 10))
    )
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=10**12, used=10**12, free=10**6))
    with pytest.raises(RunFolderError) as info:
        record_small(tmp_path / "run")
    message = str(info.value)
    assert "not enough free disk" in message and "976.56 KiB free" in message
    estimate = float(message.split("(estimate ")[1].split(" MiB")[0]) * 2**20
    state_bytes = 3 * 4 * 13_002 + 3 * 5  # params float32, opt_state of sgd empty, diverged flags
    # the arrays, the checkpoint and final state with their temporaries, and one temporary copy of
    # the largest chunk per write thread (at most the largest array, 3 x 30 x 3 x 13,002 float32)
    base = spec_bytes + 4 * state_bytes
    assert base - 0.01 * 2**20 < estimate < base + store.WRITE_THREADS * 4 * 3 * 30 * 3 * 13_002
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_configuration(reference):
    with pytest.raises(RunFolderError, match="probes.index: run folder has 'all', this command gives '8'"):
        run(SMALL, ProbeConfig(**{**PROBES.to_dict(), "index": "8"}), reference.path, resume=True, progress=False)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        record_small(reference.path / "missing", resume=True)


def test_resume_of_a_complete_run_changes_nothing(reference):
    before = (reference.path / "manifest.json").read_bytes()
    again = record_small(reference.path, resume=True)
    assert again.complete and (reference.path / "manifest.json").read_bytes() == before


# ---- a full disk while writing ------------------------------------------------------------------


def test_disk_full_while_writing_stops_cleanly_and_the_run_resumes_bit_for_bit(reference, tmp_path, monkeypatch):
    out = tmp_path / "full"
    real_write = store.write_steps
    calls = []

    def fill_disk(arrays, start, every, metrics, probes):
        calls.append(start)
        if len(calls) == 2:  # the second chunk: part of it lands on disk, then the disk is full
            real_write(arrays, start, every, metrics, {})
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(arrays, start, every, metrics, probes)

    monkeypatch.setattr(store, "write_steps", fill_disk)
    with pytest.raises(StoreError) as info:
        record_small(out)
    message = str(info.value)
    assert "No space left on device" in message and "continue from step 10" in message
    assert "--resume" in message
    stopped = open_run(out)
    assert stopped.manifest["status"] == "running" and stopped.steps_completed == 10
    with pytest.raises(FileNotFoundError, match="finish it with --resume"):
        stopped.final()
    monkeypatch.setattr(store, "write_steps", real_write)
    assert_same_recording(record_small(out, resume=True), reference)
    assert json.loads((out / "manifest.json").read_text())["timing"]["started_at_step"] == 10
    assert runfolder.read_manifest(out)["status"] == "complete"


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(reference, tmp_path):
    out = tmp_path / "early"
    shutil.copytree(reference.path, out)
    (out / "checkpoint.npz").unlink()
    (out / "final.npz").unlink()
    shutil.rmtree(out / "arrays" / "params")  # arrays half created
    manifest = runfolder.read_manifest(out)
    manifest.update(status="running", steps_completed=0)
    runfolder.write_manifest(out, manifest)
    resumed = record_small(out, resume=True)
    assert_same_recording(resumed, reference)
    assert [s["from_step"] for s in resumed.manifest["sessions"]] == [0, 0]
