"""The notebook API and what other tools see: an import without side effects, the lazy public
namespace, ``rvsp_jax.open`` (Run or Study), ``Run.series`` / ``diverged`` / ``summary`` (also on a
sweep's grid point), zarr ``dimension_names`` read by xarray, the summary schema, quiet mode and
process 0 as the one writer of study outputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import rvsp_jax
from rvsp_jax.config import TrainConfig
from rvsp_jax.io import runfolder, store
from rvsp_jax.io.store import Run, StoreError, Study, open_run
from rvsp_jax.present import plots, report
from rvsp_jax.studies.folder import finish_study, open_study, train_variant
from rvsp_jax.training.probes import ProbeConfig

ROOT = Path(__file__).resolve().parents[1]
SWEEP = TrainConfig(
    seeds=2, steps=20, chunk=10, block=1, optimizer="sgd", lr=0.1, activation="sigmoid", sweep='{"lr": [0.1, 0.5]}'
)
"""Two grid points of two seeds: members 0-1 at lr 0.1, members 2-3 at lr 0.5."""
PROBES = ProbeConfig(probes="params,updates", index="6")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "RVSP_JAX_HOST_DEVICES")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study folder with one recorded variant (a sweep), its summary written and marked complete."""
    out = tmp_path_factory.mktemp("api") / "study"
    open_study(out, "demo", {"what": "a test"})
    train_variant(out, "sweep", SWEEP, PROBES, experiment="demo", progress=False)
    report.write_summary(out, {"experiment": "demo", "settings": {"what": "a test"}, "value": np.float32(1.5)})
    finish_study(out)
    return out


# ---- 1. no side effects at import; 2. the lazy namespace ------------------------------------------


def test_importing_the_package_starts_nothing_and_keeps_jax_default_devices():
    out = _python(
        "import sys, rvsp_jax; print('jax' in sys.modules, 'matplotlib' in sys.modules); "
        "import jax; print(jax.device_count())"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "1"]
    assert "Warning" not in out.stderr
    bad = _python("import rvsp_jax, jax; print(jax.device_count())", RVSP_JAX_HOST_DEVICES="abc")
    assert bad.returncode == 0 and bad.stdout.strip() == "1" and "RVSP_JAX" not in bad.stderr


def test_training_and_recording_import_no_analysis_or_presentation():
    # the data flow is one way (training -> io -> analysis -> present -> studies): a command that
    # only trains and records (experiments.train) loads neither the analysis package (scipy.stats,
    # statsmodels: ~2 s of start-up, once paid by every such command) nor the presentation layer
    out = _python(
        "import sys, experiments.train; "
        "print(*(any(m == p or m.startswith(p + '.') for m in sys.modules) "
        "for p in ('rvsp_jax.analysis', 'rvsp_jax.present', 'rvsp_jax.studies', 'statsmodels', 'matplotlib')))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"] * 5


def test_the_entry_points_set_the_host_devices_and_warn_on_a_bad_variable():
    code = "from rvsp_jax import devices; devices.setup_host_devices(); import jax; print(jax.device_count())"
    assert _python(code, RVSP_JAX_HOST_DEVICES="3").stdout.strip() == "3"
    bad = _python(code, RVSP_JAX_HOST_DEVICES="abc")
    assert bad.returncode == 0 and bad.stdout.strip() == "1"
    assert "RVSP_JAX_HOST_DEVICES must be an integer >= 1, got 'abc'" in bad.stderr


def test_importing_plots_leaves_the_umask_alone_until_the_first_save():
    out = _python(
        "import os; os.umask(0o027); import rvsp_jax.present.plots as p; "
        "m = os.umask(0o022); os.umask(m); print(oct(m), p._UMASK)"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0o27", "[]"]


def test_the_public_namespace_is_lazy_and_names_the_library_objects():
    import rvsp_jax.analysis
    import rvsp_jax.io.record
    import rvsp_jax.training.ensemble

    assert rvsp_jax.TrainConfig is TrainConfig and rvsp_jax.ProbeConfig is ProbeConfig
    assert rvsp_jax.train is rvsp_jax.training.ensemble.train
    assert rvsp_jax.record is rvsp_jax.io.record.run  # the function: the module lives in io/
    assert rvsp_jax.devices is sys.modules["rvsp_jax.training.devices"]
    assert rvsp_jax.open is store.open_folder and rvsp_jax.Run is Run and rvsp_jax.Study is Study
    assert rvsp_jax.analysis is sys.modules["rvsp_jax.analysis"]
    assert set(rvsp_jax.__all__) <= set(dir(rvsp_jax))
    assert {"TrainConfig", "ProbeConfig", "train", "record", "open", "analysis"} <= set(rvsp_jax.__all__)
    for name in rvsp_jax.__all__:
        assert getattr(rvsp_jax, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rvsp_jax.nothing  # noqa: B018


# ---- 3. open(): Run or Study ----------------------------------------------------------------------


def test_open_gives_a_study_for_a_study_folder_with_lazily_opened_runs(study):
    s = rvsp_jax.open(study)
    assert isinstance(s, Study)
    assert s.path == study and s.experiment == "demo" and s.status == "complete"
    assert s.manifest["settings"] == {"what": "a test"} == s.settings
    assert list(s.runs) == ["sweep"] and len(s.runs) == 1
    assert s.runs._open == {}  # nothing opened yet
    run = s.runs["sweep"]
    assert isinstance(run, Run) and run.path == study / "runs" / "sweep" and s.runs["sweep"] is run
    with pytest.raises(KeyError, match="no run 'other'"):
        s.runs["other"]
    assert s.summary["value"] == 1.5 and s.summary["schema"] == report.SUMMARY_SCHEMA
    assert repr(s) == f"Study({str(study)!r}, demo, complete, runs=['sweep'])"


def test_open_gives_a_run_for_a_run_folder_and_refuses_anything_else(study, tmp_path):
    run = rvsp_jax.open(study / "runs" / "sweep")
    assert type(run) is Run and run.config.seeds == 2
    with pytest.raises(StoreError) as info:
        open_run(study)
    message = str(info.value)
    assert "\n" not in message and "study folder (demo)" in message and "rvsp_jax.open" in message
    with pytest.raises(StoreError, match="is a run folder, not a study folder"):
        Study(study / "runs" / "sweep")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / runfolder.MANIFEST).write_text(json.dumps({"format": runfolder.FORMAT, "status": "complete"}))
    for opener in (rvsp_jax.open, open_run):
        with pytest.raises(StoreError) as info:
            opener(odd)
        assert "\n" not in str(info.value) and "neither a run folder nor a study folder" in str(info.value)
    with pytest.raises(runfolder.RunFolderError, match="is not a run folder: it has no"):
        rvsp_jax.open(tmp_path)


# ---- 4. series, diverged, summary (also on a grid point) ------------------------------------------


def test_series_is_float64_with_time_last(study):
    run = open_run(study / "runs" / "sweep")
    stored = run["params"][:]
    x = run.series("params")
    assert x.dtype == np.float64 and x.shape == (4, stored.shape[2], stored.shape[1])
    np.testing.assert_array_equal(x, np.moveaxis(stored, 1, -1).astype(np.float64))
    names = run.probe_names["params"]
    picked = run.series("params", entries=[names[3], names[1]], members=[2, 0])
    np.testing.assert_array_equal(picked, np.moveaxis(stored[[2, 0]][:, :, [3, 1]], 1, -1))
    np.testing.assert_array_equal(run.series("params", entries=names[2]), x[:, [2]])
    np.testing.assert_array_equal(run.series("updates", members=slice(1, 3)), np.moveaxis(run["updates"][1:3], 1, -1))
    np.testing.assert_array_equal(run.series("loss"), run["metrics/loss"][:].astype(np.float64))
    with pytest.raises(KeyError, match="has no entries"):
        run.series("params", entries=["nope"])
    with pytest.raises(ValueError, match="no entries"):
        run.series("loss", entries=[0])


def test_series_diverged_and_summary_on_a_grid_point_are_those_members(study):
    run = open_run(study / "runs" / "sweep")
    point = run.point(1)
    np.testing.assert_array_equal(point.series("params"), run.series("params")[2:4])
    np.testing.assert_array_equal(
        point.series("params", entries=[run.probe_names["params"][0]], members=[1]),
        run.series("params", members=[3])[:, :1],
    )
    np.testing.assert_array_equal(point.series("loss", members=np.array([False, True])), run.series("loss")[3:4])
    assert point.diverged.dtype == bool and point.diverged.shape == (2,)
    np.testing.assert_array_equal(point.diverged, run.diverged[2:4])
    np.testing.assert_array_equal(point.diverged, point.final().diverged)
    assert run.summary is None and point.summary is None  # a variant's folder has no summary


def test_diverged_of_complete_and_unfinished_runs(study, tmp_path):
    run = open_run(study / "runs" / "sweep")
    assert run.diverged.dtype == bool and run.diverged.shape == (4,)
    np.testing.assert_array_equal(run.diverged, run.final().diverged)
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    manifest = runfolder.read_manifest(copy)
    manifest.update(status="running", steps_completed=10)
    manifest.pop("result")
    runfolder.write_manifest(copy, manifest)
    loss = zarr.open_array(copy / "arrays" / "metrics" / "loss", mode="r+")
    loss[1, 9] = np.nan  # member 1 "diverged" before step 10
    loss[2, 15] = np.nan  # past the steps completed: not known yet
    unfinished = open_run(copy)
    np.testing.assert_array_equal(unfinished.diverged, [False, True, False, False])
    np.testing.assert_array_equal(unfinished.point(0).diverged, [False, True])
    manifest.update(steps_completed=0)
    runfolder.write_manifest(copy, manifest)
    np.testing.assert_array_equal(open_run(copy).diverged, np.zeros(4, bool))


# ---- 5. dimension_names and xarray -----------------------------------------------------------------


def test_arrays_carry_dimension_names(study):
    arrays = study / "runs" / "sweep" / "arrays"
    assert zarr.open_array(arrays / "params", mode="r").metadata.dimension_names == (
        "member",
        "probe_step",
        "params_entry",
    )
    assert zarr.open_array(arrays / "metrics" / "loss", mode="r").metadata.dimension_names == ("member", "step")


def test_xarray_opens_a_run_lazily_without_the_library(study):
    xr = pytest.importorskip("xarray")
    run = open_run(study / "runs" / "sweep")
    tree = xr.open_datatree(run.path / "arrays", engine="zarr", consolidated=False)
    params = tree["params"]
    assert params.dims == ("member", "probe_step", "params_entry")
    np.testing.assert_array_equal(params.values, run["params"][:])
    loss = tree["metrics"]["loss"]
    assert loss.dims == ("member", "step")
    np.testing.assert_array_equal(loss.values, run["metrics/loss"][:])
    group = xr.open_zarr(run.path / "arrays" / "metrics", consolidated=False)
    assert dict(group.sizes) == {"member": 4, "step": 20}


def test_a_run_recorded_without_dimension_names_still_opens(study, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(study / "runs" / "sweep", copy)
    for meta in (copy / "arrays").rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        if doc.pop("dimension_names", None) is not None:
            meta.write_text(json.dumps(doc))
    assert zarr.open_array(copy / "arrays" / "params", mode="r").metadata.dimension_names is None
    old, new = open_run(copy), open_run(study / "runs" / "sweep")
    np.testing.assert_array_equal(old.series("params"), new.series("params"))
    assert old.complete


# ---- 6. summary schema; 7. quiet mode; 8. one writer -----------------------------------------------


def test_write_summary_adds_the_schema_first(tmp_path):
    path = report.write_summary(tmp_path, {"a": np.nan, "b": np.arange(2)})
    text = path.read_text()
    assert json.loads(text) == {"schema": "rvsp-jax summary 1", "a": None, "b": [0, 1]}
    assert list(json.loads(text))[0] == "schema"
    assert json.loads(report.write_summary(tmp_path, {"schema": "x"}).read_text()) == {"schema": "x"}


@pytest.mark.parametrize(
    "value, enabled",
    [
        (None, True),
        ("", True),
        ("0", True),
        ("false", True),
        ("False", True),
        ("1", False),
        ("true", False),
        ("yes", False),
    ],
)
def test_progress_honours_tqdm_disable(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    assert report.progress_enabled() is enabled
    assert report.progress_enabled(True) is enabled  # quiet mode wins over a default True passed down
    assert report.progress_enabled(False) is False


def test_only_process_zero_writes_study_outputs(monkeypatch, tmp_path):
    monkeypatch.setattr("rvsp_jax.training.devices.is_writer", lambda: False)
    rep = report.Report("t").text("x")
    assert rep.write(tmp_path) == tmp_path / "report.md"
    assert report.write_summary(tmp_path, {"a": 1}) == tmp_path / "summary.json"
    fig, ax = plots.subplots()
    ax.plot([0, 1])
    assert plots.save_figure(fig, tmp_path / "figures", "f") == [
        tmp_path / "figures" / "f.png",
        tmp_path / "figures" / "f.pdf",
    ]
    assert not fig.axes  # closed all the same
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("rvsp_jax.training.devices.is_writer", lambda: True)
    assert rep.write(tmp_path).read_text() == "# t\n\nx\n"
    assert report.write_summary(tmp_path, {"a": 1}).is_file()
    fig, _ = plots.subplots()
    assert all(p.is_file() for p in plots.save_figure(fig, tmp_path / "figures", "f"))
