"""Integrity of a run folder on real recorded runs: a checksum per chunk, missing, flipped, truncated
and corrupt chunk files as errors that name the array, the chunk and the file, a complete run with
files gone not reported complete, damaged checkpoints and final results as errors with the remedy,
and the check that --resume makes of the chunks before its checkpoint."""

import io
import json
import os
import shutil

import jax
import numpy as np
import pytest
import zarr
import zarr.codecs
from conftest import PROBES, SMALL, record_small

from rvsp_jax.io import record, runfolder, store
from rvsp_jax.io.store import StoreError, open_run
from rvsp_jax.training.probes import ProbeConfig


@pytest.fixture
def reference(small_run):
    return small_run


@pytest.fixture
def copy(reference, tmp_path):
    """A fresh copy of the reference run folder, to damage."""
    out = tmp_path / "copy"
    shutil.copytree(reference.path, out)
    return out


def chunk_file(folder, name, index):
    return folder / "arrays" / name / "c" / "/".join(map(str, index))


def flip_byte(path, at=None):
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def assert_error(info, *needles):
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)


# ---- checksums ------------------------------------------------------------------------------------


def test_every_new_array_ends_its_codecs_in_a_crc32c_checksum(reference):
    for name in reference.arrays:
        codecs = zarr.open_array(reference.path / "arrays" / name, mode="r").metadata.codecs
        assert isinstance(codecs[-1], zarr.codecs.Crc32cCodec), (name, codecs)
    assert reference.complete and reference.problems() == []
    reference.verify(data=True)


def test_one_flipped_byte_in_an_uncompressed_chunk_is_an_error_naming_the_file(reference, copy):
    assert reference.manifest["arrays"]["updates"]["compress"] == "none"
    target = chunk_file(copy, "updates", (0, 1, 0))
    flip_byte(target)
    run = open_run(copy)
    with pytest.raises(StoreError) as info:
        run["updates"][:, 10:20, :100]
    assert_error(
        info, str(target), "damaged", "chunk (0, 1, 0) of array 'updates' (steps 10-19)", "checksum", "--overwrite"
    )
    with pytest.raises(StoreError, match="damaged"):
        np.asarray(run["updates"])
    with pytest.raises(StoreError, match="damaged"):
        run.verify(data=True)
    # the chunks around it read as before
    np.testing.assert_array_equal(run["updates"][:, :10], reference["updates"][:, :10])
    np.testing.assert_array_equal(run["updates"][:, 10:20, 3251:], reference["updates"][:, 10:20, 3251:])
    assert run.complete  # every file is there; the damage is found when the chunk is read


def test_a_truncated_chunk_is_an_error_naming_the_file(copy):
    for name, index in [("updates", (0, 2, 3)), ("metrics/loss", (0, 0))]:  # uncompressed, zstd
        target = chunk_file(copy, name, index)
        target.write_bytes(target.read_bytes()[:37])
        with pytest.raises(StoreError) as info:
            open_run(copy)[name][:]
        assert_error(info, str(target), f"chunk {index} of array {name!r}", "damaged")


def test_a_chunk_of_random_bytes_is_an_error_naming_the_file(copy):
    target = chunk_file(copy, "metrics/accuracy", (0, 1))
    target.write_bytes(os.urandom(target.stat().st_size))
    with pytest.raises(StoreError) as info:
        open_run(copy)["metrics/accuracy"][0]
    assert_error(info, str(target), "array 'metrics/accuracy'", "(steps 10-19)")


def test_arrays_recorded_without_checksums_still_read_and_truncation_is_still_named(reference, copy):
    """Runs recorded before the checksum codec: rewrite one array as it was then, bytes codec only."""
    values = reference["params"][:]
    old = zarr.open_array(reference.path / "arrays" / "params", mode="r")
    zarr.create_array(
        copy / "arrays" / "params",
        shape=old.shape,
        chunks=old.chunks,
        dtype=old.dtype,
        fill_value=np.nan,
        compressors=None,
        overwrite=True,
    )[:] = values
    run = open_run(copy)
    assert not any(isinstance(c, zarr.codecs.Crc32cCodec) for c in run["params"].metadata.codecs)
    np.testing.assert_array_equal(run["params"][:], values)
    assert run.complete
    target = chunk_file(copy, "params", (0, 1, 1))
    target.write_bytes(target.read_bytes()[:-8])
    with pytest.raises(StoreError) as info:
        open_run(copy)["params"][:, 5:15]
    assert_error(info, str(target), "chunk (0, 1, 1) of array 'params'")


# ---- missing chunk files --------------------------------------------------------------------------


def test_a_deleted_chunk_is_an_error_naming_array_chunk_and_file_and_the_run_is_not_complete(reference, copy):
    target = chunk_file(copy, "updates", (0, 1, 0))
    target.unlink()
    run = open_run(copy)
    assert run.manifest["status"] == "complete" and not run.complete
    with pytest.raises(StoreError) as info:
        run["updates"][:, 10:, :10]
    assert_error(info, str(target), "is missing", "chunk (0, 1, 0) of array 'updates' (steps 10-19)", "--overwrite")
    for read in (
        lambda: np.asarray(run["updates"]),
        lambda: run["updates"].oindex[:, 12, [1, 5]],
        lambda: run["updates"].vindex[[0, 1], [12, 13], [0, 0]],
        lambda: run["updates"][1, 19, 3],
    ):
        with pytest.raises(StoreError, match="is missing"):
            read()
    # slices that do not touch it read as before
    for where in [
        np.s_[:, :10],
        np.s_[:, 20:],
        np.s_[:, 10:20, 3251:],
        np.s_[1, 5],
        np.s_[2, 15],
    ]:  # members in chunks of 2
        np.testing.assert_array_equal(run["updates"][where], reference["updates"][where])
    np.testing.assert_array_equal(run["params"][:], reference["params"][:])
    (problem,) = run.problems()
    assert str(target) in problem and "'updates'" in problem
    with pytest.raises(StoreError, match="is missing"):
        run.verify()


def test_a_deleted_array_folder_counts_its_missing_chunks(copy):
    shutil.rmtree(copy / "arrays" / "grads" / "c")
    run = open_run(copy)
    assert not run.complete
    (problem,) = run.problems()
    n = int(np.prod([-(-s // c) for s, c in zip(run["grads"].shape, run["grads"].chunks)]))
    assert "array 'grads'" in problem and f"and {n - 1} more missing chunk files" in problem
    (copy / "arrays" / "grads" / "zarr.json").unlink()
    with pytest.raises(StoreError, match="zarr.json is missing: array 'grads'"):
        open_run(copy)["grads"]
    assert "zarr.json is missing" in open_run(copy).problems()[0]


def test_an_unfinished_run_reads_nan_past_its_checkpoint_and_refuses_holes_before_it(reference, copy):
    manifest = runfolder.read_manifest(copy)
    manifest.update(status="running", steps_completed=10)
    runfolder.write_manifest(copy, manifest)
    (copy / "final.npz").unlink()
    for index in [(0, 2, 0), (0, 1, 0), (1, 1, 0)]:  # past the checkpoint at step 10: not yet written
        chunk_file(copy, "updates", index).unlink()
    run = open_run(copy)
    assert run.problems() == [] and not run.complete
    assert np.isnan(run["updates"][:2, 10:, :10]).all() and np.isnan(run["updates"][2, 10:20, :10]).all()
    np.testing.assert_array_equal(run["updates"][:, :10], reference["updates"][:, :10])
    chunk_file(copy, "updates", (0, 0, 3)).unlink()
    with pytest.raises(StoreError, match=r"chunk \(0, 0, 3\) of array 'updates' \(steps 0-9\)"):
        open_run(copy)["updates"][:, :10]


# ---- the check made by --resume -------------------------------------------------------------------


def test_verify_chunks_catches_a_chunk_deleted_below_the_step_and_ignores_those_above(copy):
    manifest = runfolder.read_manifest(copy)
    store.verify_chunks(copy, manifest, 30)
    target = chunk_file(copy, "metrics/grad_norm", (0, 1))
    target.unlink()
    store.verify_chunks(copy, manifest, 10)  # chunk 1 holds steps 10-19: not needed yet
    with pytest.raises(StoreError) as info:
        store.verify_chunks(copy, manifest, 20)
    assert_error(
        info,
        str(target),
        "chunk (0, 1) of array 'metrics/grad_norm' (steps 10-19)",
        "lies before step 20",
        "--overwrite",
    )
    assert store.missing_chunks(copy, manifest, 30) == [("metrics/grad_norm", (0, 1), target)]
    chunk_file(copy, "activations/post", (0, 2, 0)).unlink()
    with pytest.raises(StoreError, match="1 more chunk files are missing"):
        store.verify_chunks(copy, manifest, 30)


def test_verify_chunks_counts_probe_steps_by_the_probe_interval(tmp_path):
    """Probes every 2 steps: chunk 1 of a probe array holds records 5-9, steps 10-18."""
    sparse = record.run(SMALL, ProbeConfig(probes="params", index="8", every=2), tmp_path / "every2", progress=False)
    assert sparse["params"].shape[1] == 15 and sparse["params"].chunks[1] == 5
    target = chunk_file(sparse.path, "params", (0, 1, 0))
    target.unlink()
    store.verify_chunks(sparse.path, sparse.manifest, 10)
    with pytest.raises(StoreError, match=r"chunk \(0, 1, 0\) of array 'params' \(steps 10-18\)"):
        store.verify_chunks(sparse.path, sparse.manifest, 11)
    with pytest.raises(StoreError, match=r"\(steps 10-18\)"):
        open_run(sparse.path)["params"][:, 7]
    assert open_run(sparse.path)["params"][:, 10:].shape == (3, 5, 48)


# ---- checkpoints ----------------------------------------------------------------------------------


def training_state_like():
    ens, _ = record._ensemble(SMALL, PROBES, None)  # compiled (and cached) by the reference run
    return jax.eval_shape(ens.init)


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_damaged_checkpoints_are_errors_naming_the_file_and_the_remedy(copy):
    like = training_state_like()
    path = copy / "checkpoint.npz"
    step, state = store.load_checkpoint(copy, like)
    assert step == 30
    intact = path.read_bytes()
    leaf = {
        "step": np.int64(30),
        **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state))},
    }
    damage = {
        "random bytes": os.urandom(len(intact)),
        "truncated": intact[: len(intact) // 2],
        "flipped byte": intact[: len(intact) // 2]
        + bytes([intact[len(intact) // 2] ^ 1])
        + intact[len(intact) // 2 + 1 :],
        "wrong keys": npz_bytes(step=np.int64(30), weights=np.zeros(3, np.float32)),
        "no step": npz_bytes(**{k: v for k, v in leaf.items() if k != "step"}),
        "object array": npz_bytes(**{**leaf, "leaf_00000": np.array([{"x": 1}] * 3, dtype=object)}),
        "empty": b"",
    }
    for how, data in damage.items():
        path.write_bytes(data)
        with pytest.raises(StoreError) as info:
            store.load_checkpoint(copy, like)
        assert_error(info, str(path), "delete it and run again with --resume")
        assert "allow_pickle" not in str(info.value), how


def test_deleting_a_damaged_checkpoint_and_resuming_restarts_from_step_0(reference, copy):
    manifest = runfolder.read_manifest(copy)
    manifest.update(status="running", steps_completed=20)
    runfolder.write_manifest(copy, manifest)
    (copy / "final.npz").unlink()
    path = copy / "checkpoint.npz"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(StoreError, match="checkpoint.npz is damaged"):
        record_small(copy, resume=True)
    path.unlink()  # the remedy
    resumed = record_small(copy, resume=True)
    assert resumed.complete and resumed.manifest["sessions"][-1]["from_step"] == 0
    for name in reference.arrays:
        np.testing.assert_array_equal(resumed[name][:], reference[name][:], err_msg=name)


# ---- final results --------------------------------------------------------------------------------


def test_a_deleted_final_npz_makes_the_run_incomplete_with_the_resume_remedy(reference, copy):
    assert store.final_ok(reference.path)
    (copy / "final.npz").unlink()
    run = open_run(copy)
    assert not run.complete and not store.final_ok(copy)
    with pytest.raises(StoreError) as info:
        run.final()
    assert isinstance(info.value, FileNotFoundError)
    assert_error(
        info,
        str(copy / "final.npz"),
        "run again with --resume and the same options to rebuild it from the last checkpoint",
    )
    assert "final.npz does not exist" in run.problems()[0]


def test_a_damaged_final_npz_is_an_error_with_the_resume_remedy(reference, copy):
    path = copy / "final.npz"
    intact = path.read_bytes()
    for data in (
        intact[: len(intact) // 3],
        os.urandom(len(intact)),
        npz_bytes(test_loss=np.zeros(3, np.float32)),
        intact[: len(intact) // 2] + bytes([intact[len(intact) // 2] ^ 1]) + intact[len(intact) // 2 + 1 :],
    ):
        path.write_bytes(data)
        with pytest.raises(StoreError) as info:
            open_run(copy).final()
        assert_error(info, str(path), "--resume and the same options to rebuild it")
        assert not store.final_ok(copy)
    path.write_bytes(intact[: len(intact) // 3])
    assert not open_run(copy).complete
    path.write_bytes(intact)
    final = open_run(copy).final()
    np.testing.assert_array_equal(final.test_accuracy, reference.final().test_accuracy)
    assert json.loads((copy / "manifest.json").read_text())["status"] == "complete"
