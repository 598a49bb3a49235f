"""``python -m experiments.activations`` end to end at tiny size (ReLU: zero and dead fractions), its
numbers against the recorded arrays, diverged members left out, and the numerics (Wasserstein-1
against scipy, drift of a shifted sample, phase bounds)."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import assert_finite_summary, assert_valid_figure
from scipy import stats
from sizes import small

from experiments.activations import main
from rvsp_jax.io.runfolder import read_manifest, write_manifest
from rvsp_jax.io.store import open_run
from rvsp_jax.studies import activations as act
from rvsp_jax.studies import windows

ARGS = [
    *small("activations"),
    "--devices",
    str(len(jax.devices())),
]
FIGURES = (
    "activation_quantiles",
    "unit_quantiles",
    "wasserstein_drift",
    "activation_histograms",
    "layer_statistics",
    "stationarity_by_phase",
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("activations") / "run"
    main([*ARGS, "--out", str(out)])
    return out


def test_wasserstein_1d_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 37))
    b = rng.standard_t(3, size=(20, 37)) + 0.3
    ours = act.wasserstein_1d(a, b)
    ref = [stats.wasserstein_distance(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    np.testing.assert_allclose(act.wasserstein_1d(a.T, b.T, axis=0), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="equal sizes"):
        act.wasserstein_1d(a, b[:, :5])


def test_drift_of_a_shifted_and_a_permuted_sample():
    """W1 between a sample and itself shifted by c is |c|; a re-ordering of the sample is distance 0."""
    rng = np.random.default_rng(1)
    base = rng.uniform(size=(8, 3))  # [B, h]
    shifts = np.array([0.0, 0.5, -1.25])
    y = np.stack([base + c for c in shifts])  # [T=3, B, h]
    y[1] = y[1][rng.permutation(8)]  # order over the batch does not matter
    np.testing.assert_allclose(act.drift_from_start(y), np.abs(shifts)[:, None] * np.ones(3), atol=1e-15)
    assert act.drift_from_start(np.stack([y, y])).shape == (2, 3, 3)


def test_phase_bounds_split_evenly():
    assert windows.phase_bounds(30, 3) == [(0, 10), (10, 20), (20, 30)]
    assert windows.phase_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert windows.phase_names(3) == ("early", "middle", "late")
    with pytest.raises(ValueError, match="phases"):
        windows.phase_bounds(2, 3)


def test_every_promised_file_is_written(study):
    for name in ("manifest.json", "summary.json", "report.md", "final.npz"):
        assert (study / name).is_file(), name
    for name in FIGURES:
        assert_valid_figure(study / "figures", name)
    report = (study / "report.md").read_text()
    assert all(f"figures/{name}.png" in report for name in FIGURES)
    assert "python -m experiments.activations" in report and "Configuration" in report


def test_summary_numbers_agree_with_the_recording(study):
    s = json.loads((study / "summary.json").read_text())
    run = open_run(study)
    assert s["members"] == {"total": 3, "diverged": 0, "analysed": 3, "diverged_ids": []}
    assert s["recorded_steps"] == 30 and s["last_step"] == 58
    assert set(s["layers"]) == {"Dense_0", "Dense_1"}
    post = np.asarray(run["activations/post"][:])  # [S, T, 2 * 8 * 16]
    y0 = post[..., : 8 * 16].reshape(3, 30, 8, 16)  # Dense_0: [S, T, B, h]
    layer = s["layers"]["Dense_0"]
    # W1 drift at the end: mean over units of the distance between last and first recording
    w = np.array(
        [[stats.wasserstein_distance(y0[m, -1, :, u], y0[m, 0, :, u]) for u in range(16)] for m in range(3)]
    ).mean(1)
    assert layer["drift"]["end"]["mean"] == pytest.approx(w.mean(), rel=1e-5)
    assert layer["drift"]["end"]["n"] == 3
    q_end = np.quantile(y0[:, -1].reshape(3, -1), act.QUANTILES, axis=1).mean(1)
    np.testing.assert_allclose(layer["quantiles"]["end"]["mean"], q_end, rtol=1e-5)
    # ReLU statistics: zero fraction and dead fraction, recomputed from the activations
    zero_end = (y0[:, -1] == 0).mean((1, 2)).mean()
    dead_end = (y0[:, -1] == 0).all(1).mean(1).mean()
    assert layer["statistics"]["zero"]["end"]["mean"] == pytest.approx(zero_end, abs=1e-6)
    assert layer["statistics"]["dead"]["end"]["mean"] == pytest.approx(dead_end, abs=1e-6)
    assert "saturated" not in layer["statistics"]
    for family, phases in s["stationarity"].items():
        assert list(phases) == ["early", "middle", "late"], family
        for p in phases.values():
            assert sum(p["bh"][v] for v in ("stationary", "unit-root", "inconclusive", "invalid")) == pytest.approx(1.0)
    assert s["stationarity"]["Dense_0/unit_mean"]["early"]["bh"]["n"] == 3 * 16
    assert_finite_summary(s)


def test_a_diverged_member_is_excluded_and_counted(study, tmp_path):
    copy = tmp_path / "diverged"
    shutil.copytree(study, copy)
    manifest = read_manifest(copy)
    manifest["result"]["diverged_at"] = [-1, 17, -1]
    manifest["result"]["test_accuracy"][1] = float("nan")
    write_manifest(copy, manifest)
    a = act.analyse(open_run(copy), act.ActivationSettings(probe_every=2, probe_batch=8), progress=False)
    s = a.summary
    assert s["members"]["diverged"] == 1 and s["members"]["diverged_ids"].tolist() == [1]
    drift = s["layers"]["Dense_0"]["drift"]["end"]
    assert drift.n == 2 and drift.excluded == 1
    full = json.loads((study / "summary.json").read_text())["layers"]["Dense_0"]["drift"]["end"]
    assert drift.mean != pytest.approx(full["mean"])  # member 1 really was left out
    assert s["stationarity"]["Dense_0/unit_mean"]["early"]["bh"]["n"] == 2 * 16
    assert s["test_accuracy"].n == 2


def test_the_report_states_its_window_and_rules(study):
    s = json.loads((study / "summary.json").read_text())
    w = s["analysed_window"]
    assert w["training_steps"] == [0, 58] and w["recorded_steps"] == [0, 30]
    for fam, by_phase in w["stationary_by_phase"].items():
        for p, word in by_phase.items():
            frac = s["stationarity"][fam][p]["bh"]["stationary"]
            assert word == act.stationarity_word(frac), (fam, p)
            assert word in ("stationary", "mixed", "mostly non-stationary", "undetermined")
    assert set(s["rules"]) >= {"numbers", "stationary_phase", "saturated", "intervals"}
    zero = s["layers"]["Dense_0"]["statistics"]["zero"]["end"]
    assert 0 <= zero["lo"] <= zero["hi"] <= 1  # bootstrap interval of a fraction
    report = (study / "report.md").read_text()
    for text in (
        "Analysed window: every recording, steps 0-58",
        "## Rules",
        "stationary_phase",
        "zero (phi' = 0) fraction",
        "of series)",
    ):
        assert text in report, text


def test_every_member_diverged_is_refused_in_one_line(study, tmp_path):
    copy = tmp_path / "all_diverged"
    shutil.copytree(study, copy)
    manifest = read_manifest(copy)
    manifest["result"]["diverged_at"] = [2, 17, 5]
    write_manifest(copy, manifest)
    with pytest.raises(ValueError, match=r"every member of .* diverged \(3 of 3.*lower --lr"):
        act.analyse(open_run(copy), act.ActivationSettings(probe_every=2, probe_batch=8), progress=False)


def test_refusals(study, tmp_path, capsys):
    with pytest.raises(SystemExit, match="already exists"):
        main([*ARGS, "--out", str(study)])
    with pytest.raises(SystemExit, match="different configuration"):
        main([*ARGS, "--lr", "0.2", "--out", str(study), "--resume"])
    with pytest.raises(SystemExit):
        main([*ARGS, "--probe-batch", "1", "--out", str(tmp_path / "x")])
    assert "probe_batch must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="too few"):
        main([*ARGS, "--phases", "4", "--out", str(tmp_path / "y")])


def test_sweep_statistics_repeat_the_last_recording_of_every_layer_statistic(study):
    summary = json.loads((study / "summary.json").read_text())
    stats = act.sweep_statistics(summary)
    for layer, entry in summary["layers"].items():
        assert stats["dead (last recording)"][layer] == entry["statistics"]["dead"]["end"]["mean"]
        assert 0 <= stats["dead (last recording)"][layer] <= 1
        assert stats["drift from the start (last recording)"][layer] == entry["drift"]["end"]["mean"]
