"""experiments.noise end to end at tiny size (files, figures, summary, the rebuilt minibatch gradients
against the recorded ones), and the study's pieces with known answers (Gaussian references,
recording schedule, standardisation)."""

import json

import numpy as np
import pytest

from experiments.noise import main
from rvsp_jax.config import TrainConfig
from rvsp_jax.studies.noise import NoiseSettings, _standardised, gaussian_reference

from test_study_spectra import assert_figures

FIGURES = ("tail_index", "tail_by_layer", "noise_scale", "noise_distribution")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise") / "run"
    main(["--seeds", "3", "--steps", "60", "--block", "2", "--noise-steps", "3", "--minibatches", "16",
          "--reference-examples", "64", "--tail-sample", "256", "--out", str(out)])
    return out


def test_the_experiment_writes_every_promised_file(study):
    for name in ("manifest.json", "summary.json", "report.md", "final.npz"):
        assert (study / name).is_file(), name
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["probe_config"]["index"] == "all" and manifest["probe_config"]["every"] == 20
    assert_figures(study / "figures", FIGURES)
    report = (study / "report.md").read_text()
    assert all(f"figures/{name}.png" in report for name in FIGURES)
    assert "Xie et al. (2023)" in report and "python -m experiments.noise" in report


def test_summary_numbers(study):
    summary = json.loads((study / "summary.json").read_text())
    assert summary["steps"] == [0, 20, 40] and summary["members"]["used"] == 3
    assert summary["groups"] == ["all", "Dense_0", "Dense_1", "Dense_2"]
    assert summary["minibatches"] == 16 and summary["reference_examples"] == 64
    # the rebuilt minibatch of each noise step reproduces the trainer's recorded gradient
    assert summary["minibatch_check_max_relative_difference"] < 1e-5
    for where in ("across_parameters", "along_iterations"):
        for estimator in ("hill", "simsekli"):
            for group, d in summary["tail_index"][where][estimator].items():
                s = d["overall"]
                assert s["n"] == 3 and s["lo"] <= s["mean"] <= s["hi"] and 0 < s["mean"] < 50, (where, group)
                assert len(d["by_step"]) == 3 and np.isfinite(d["gaussian_reference"])
                assert d["verdict"].endswith("Gaussian samples of the same size")
    g = summary["gaussian_reference"]
    assert g["across_parameters"]["all"]["n"] == 256 and g["along_iterations"]["all"]["n"] == 16
    assert g["across_parameters"]["Dense_2"]["n"] == 170  # every last-layer parameter has a gradient
    scale = summary["noise_scale"]
    first = scale["b_simple"]["first"]
    # 64 reference examples leave |G|^2 (hence B_simple) noisy, even negative; tr(Sigma) is a variance
    assert first["n"] == 3 and np.isfinite(first["mean"]) and scale["trace_sigma"]["first"]["lo"] > 0
    assert all(np.isfinite(s["mean"]) for s in scale["b_simple_two_batch"]["by_step"])
    assert set(summary["xie_2023_pattern"]) == {"heavy_across_parameters", "heavy_along_iterations",
                                                "reproduced"}


def test_gaussian_references_of_the_estimators():
    hill_4096, block_4096 = gaussian_reference(4096)
    assert abs(block_4096 - 2) < 0.05  # the block-sum estimator is consistent for alpha = 2
    hill_64, block_64 = gaussian_reference(64)
    assert abs(block_64 - 2) < 0.2  # median, robust to the skew of small samples
    assert hill_64 < hill_4096 and hill_4096 > 6  # Hill's estimate of light tails grows with n


def test_settings_schedule_and_validation():
    s = NoiseSettings()
    assert s.every(3000, 1875) == 250 and s.every(100_000, 1875) == 1875 and s.every(5, 1875) == 1
    probes = NoiseSettings(points=3).probes(TrainConfig(steps=60), 60_000)
    assert (probes.kinds, probes.index, probes.every) == (("params", "grads"), "all", 20)
    for kwargs in (dict(points=0), dict(minibatches=3), dict(reference=1), dict(tail_sample=2)):
        with pytest.raises(ValueError):
            NoiseSettings(**kwargs)


def test_standardised_noise_has_unit_scale():
    rng = np.random.default_rng(0)
    xi = rng.standard_normal((50, 6)) * np.array([1, 2, 3, 4, 5, 0.0]) + 7
    active = np.array([True] * 5 + [False])
    across, along = _standardised(xi, active)
    assert across.shape == (5,) and np.isclose(across.std(), 1)
    assert along.shape == (250,)
    np.testing.assert_allclose(along.reshape(50, 5).std(0), 1)
    np.testing.assert_allclose(along.reshape(50, 5).mean(0), 0, atol=1e-12)
