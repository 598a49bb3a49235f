"""experiments.noise end to end at tiny size (files, figures, summary), minibatch gradients rebuilt by
rvsp_jax.gradient_noise against the trainer's recorded ones (across an epoch boundary), and the
study's pieces with known answers (Gaussian references, recording schedule, standardisation)."""

import json

import numpy as np
import pytest

from experiments.noise import main
from rvsp_jax.config import TrainConfig
from rvsp_jax.data import load
from rvsp_jax.ensemble import Ensemble
from rvsp_jax.gradient_noise import inputs, make_noise_fn, minibatch_indices, reference_subset, unravel_fn
from rvsp_jax.model import make_model
from rvsp_jax.store import open_run
from rvsp_jax.studies.noise import NoiseSettings, _standardised, gaussian_reference

from test_study_spectra import assert_figures

FIGURES = ("tail_index", "tail_by_layer", "noise_scale", "noise_distribution")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise") / "run"
    # batch 512: 117 steps per epoch, so the noise step 160 lies in the second epoch
    main(["--seeds", "3", "--steps", "240", "--batch-size", "512", "--block", "2", "--noise-steps", "3",
          "--minibatches", "16", "--reference-examples", "640", "--tail-sample", "256", "--out", str(out)])
    return out


def test_the_experiment_writes_every_promised_file(study):
    for name in ("manifest.json", "summary.json", "report.md", "final.npz"):
        assert (study / name).is_file(), name
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["probe_config"]["index"] == "all" and manifest["probe_config"]["every"] == 80
    assert_figures(study / "figures", FIGURES)
    report = (study / "report.md").read_text()
    assert all(f"figures/{name}.png" in report for name in FIGURES)
    assert "Xie et al. (2023)" in report and "python -m experiments.noise" in report


def test_rebuilt_minibatch_gradients_reproduce_the_recorded_ones_across_an_epoch(study):
    run = open_run(study)
    config, data = run.config, load("mnist")
    ens = Ensemble(config, data)
    assert ens.steps_per_epoch == 117 and list(run.steps) == [0, 80, 160]
    model = make_model(config)
    unravel, noise_fn = unravel_fn(model), make_noise_fn(model)
    x, y = inputs(data.train_images), data.train_labels
    ref = reference_subset(ens.n_train, 640, config.base_seed)
    params, grads = run["params"][:], run["grads"][:]
    worst = 0.0
    for k, step in enumerate(run.steps):
        batch = minibatch_indices(ens, int(step), 2)  # [S, 2, B]: this step's minibatch and the next
        for s in range(config.seeds):
            out = noise_fn(unravel(params[s, k]), x[batch[s]], y[batch[s]], x[ref], y[ref])
            rebuilt = np.asarray(out.noise + out.reference_grad)  # [2, P] minibatch gradients
            scale = np.abs(grads[s, k]).max()
            worst = max(worst, np.abs(rebuilt[0] - grads[s, k]).max() / scale)
            # the next step's minibatch is a different one: the check can fail
            assert np.abs(rebuilt[1] - grads[s, k]).max() > 1e-2 * scale
    # float32 rounding of differently batched products (measured: 2.7e-7 to 4.4e-7 of the largest entry)
    assert worst < 1e-5


def test_summary_numbers(study):
    summary = json.loads((study / "summary.json").read_text())
    assert summary["steps"] == [0, 80, 160] and summary["members"]["used"] == 3
    assert summary["groups"] == ["all", "Dense_0", "Dense_1", "Dense_2"]
    assert summary["minibatches"] == 16 and summary["reference_examples"] == 640
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
    # B_simple is a ratio of noisy estimates (|G|^2 can even be negative); tr(Sigma) is a variance
    assert first["n"] == 3 and np.isfinite(first["mean"]) and scale["trace_sigma"]["first"]["lo"] > 0
    assert all(np.isfinite(s["mean"]) for s in scale["b_simple_two_batch"]["by_step"])
    xie = summary["xie_2023_pattern"]
    assert set(xie) == set(summary["groups"])
    for group, v in xie.items():
        assert v["reproduced"] == (v["heavy_across_parameters"] and not v["heavy_along_iterations"])
        assert v["heavy_along_iterations"] == summary["tail_index"]["along_iterations"]["simsekli"][group][
            "verdict"].startswith("heavier")


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
