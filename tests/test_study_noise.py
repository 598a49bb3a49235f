"""experiments.noise end to end at tiny size (files, figures, summary, report windows and rules),
minibatch gradients rebuilt by rvsp_jax.analysis.gradient_noise against the trainer's recorded ones (across an
epoch boundary), diverged members, and the study's pieces with known answers (Gaussian references,
scale-matched null and standardisation on simulated noise, pixel strata, pooled noise scale,
recording schedule)."""

import json

import numpy as np
import pytest
from conftest import assert_figures
from sizes import small

from experiments.noise import main
from rvsp_jax.analysis.gradient_noise import inputs, make_noise_fn, minibatch_indices, reference_subset, unravel_fn
from rvsp_jax.config import TrainConfig
from rvsp_jax.data import load
from rvsp_jax.io.store import open_run
from rvsp_jax.studies import noise
from rvsp_jax.studies.noise import (
    NoiseSettings,
    NoUsableMembersError,
    _standardised,
    gaussian_reference,
    measure_step,
    parameter_groups,
)
from rvsp_jax.training.ensemble import Ensemble
from rvsp_jax.training.model import make_model

FIGURES = ("tail_index", "tail_by_layer", "noise_scale", "noise_distribution")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise") / "run"
    # batch 512: 117 steps per epoch, so the noise step 160 lies in the second epoch
    main(
        [
            *small("noise"),
            "--out",
            str(out),
        ]
    )
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
    # the report states its windows, their stationarity and every rule it applies
    assert "**Windows.** all: noise steps 0, 80, 160; early: noise steps 0, 80; late: noise steps 160" in report
    assert "**Stationarity.**" in report and "## Rules" in report
    for rule in (
        "simsekli_2019",
        "xie_2023",
        "along_gaussian",
        "across_heavier_than_scale_matched_gaussian",
        "across_heavier_than_covariance_matched_gaussian",
        "sparse",
        "infinite-variance",
        "b_simple",
    ):
        assert f"- **{rule}**: " in report, rule
    assert "3 of 3 members analysed (none diverged)" in report


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
    groups = ["all", "Dense_0", "Dense_0 lit <5%", "Dense_0 lit 5-50%", "Dense_0 lit >50%", "Dense_1", "Dense_2"]
    assert summary["groups"] == groups
    assert summary["minibatches"] == 32 and summary["reference_examples"] == 640
    assert summary["windows"] == {"all": [0, 80, 160], "early": [0, 80], "late": [160]}
    assert "stationary by construction" in summary["stationarity"]
    assert set(summary["rules"]) >= {"simsekli_2019", "xie_2023", "b_simple", "heavier", "sparse"}
    # the rebuilt minibatch of each noise step reproduces the trainer's recorded gradient
    assert summary["minibatch_check_max_relative_difference"] < 1e-5
    strata = summary["pixel_strata"]
    assert sum(strata["pixels"].values()) == 784 and strata["never_lit_pixels"] > 0
    assert sum(strata["parameters"].values()) == 784 * 16  # every first-layer weight in one stratum
    assert summary["group_sizes"]["Dense_0"] == 784 * 16 + 16
    verdict_names = {"gaussian", "heavy-tailed", "infinite-variance", "inconclusive"}
    for w in ("all", "early", "late"):
        for group in groups:
            entry = summary["tails"][w][group]
            across, along = entry["across_parameters"], entry["along_iterations"]
            for kind in ("raw", "null", "covariance", "standardised", "raw_minus_null", "raw_minus_covariance"):
                for est in ("hill", "simsekli"):
                    s = across[kind][est]
                    assert s["n"] == 3 and (s["lo"] is None or s["lo"] <= s["mean"] <= s["hi"]), (w, group, kind)
            for kind in ("raw", "null", "covariance", "standardised"):
                assert set(across["verdicts"][kind]) == verdict_names
                assert sum(across["verdicts"][kind][v]["mean"] for v in verdict_names) == pytest.approx(1)
            assert sum(along["verdicts"][v]["mean"] for v in verdict_names) == pytest.approx(1)
            assert sum(along["verdicts_dense"][v]["mean"] for v in verdict_names) == pytest.approx(1)
            assert 0 <= along["sparse"]["mean"] <= 1
            for v in verdict_names:  # fractions keep their intervals inside [0, 1]
                f = along["verdicts"][v]
                assert f["lo"] is None or 0 <= f["lo"] <= f["mean"] <= f["hi"] <= 1
            d = entry["decisions"]
            assert d["simsekli_2019"] in (
                "supported",
                "supported for a minority of parameters",
                "only in sparse parameters",
                "not supported",
                "undetermined",
            )
            assert not d["simsekli_2019"].startswith("supported") or d["along_infinite_variance_dense"]
            share = d["across_gap_share_of_scale_heterogeneity"]
            assert share is None or np.isfinite(share)
            assert (d["xie_2023"] == "reproduced") == (
                d["across_heavier_than_gaussian_uncontrolled"] and d["along_gaussian"]
            )
            assert d["across_explained_by_gaussian_structure"] == (
                d["across_heavier_than_gaussian_uncontrolled"]
                and not (
                    d["across_heavier_than_scale_matched_gaussian"]
                    or d["across_heavier_than_covariance_matched_gaussian"]
                )
            )
    g = summary["gaussian_reference"]
    assert g["across_parameters"]["all"]["plain"]["n"] == 256
    assert g["along_iterations"]["all"]["n"] == 32
    for group in groups:
        for kind in ("plain", "standardised"):
            for est in ("hill", "simsekli"):
                r = g["across_parameters"][group][kind][est]
                assert r["lo"] <= r["median"] <= r["hi"], (group, kind, est)
        r = g["along_iterations"][group]["simsekli"]
        assert r["lo"] <= r["median"] <= r["hi"]
    scale = summary["noise_scale"]
    first = scale["b_simple"]["first"]
    # B_simple is a ratio of noisy estimates (|G|^2 can even be negative); tr(Sigma) is a variance
    assert first["n"] == 3 and np.isfinite(first["mean"]) and scale["trace_sigma"]["first"]["lo"] > 0
    pooled = scale["pooled"]
    assert len(pooled["b_simple"]) == 3 and pooled["n_examples"] == 640
    for ratio, flagged in zip(pooled["b_simple"], pooled["flagged"]):
        assert flagged == (ratio is None or 640 < 10 * ratio)
    assert all(np.isfinite(s["mean"]) for s in scale["b_simple_two_batch"]["by_step"])


def test_diverged_members_are_counted_and_none_left_is_a_one_line_error(study, monkeypatch, capsys):
    run = open_run(study)
    settings = NoiseSettings(points=3, minibatches=32, reference=640, tail_sample=256)
    monkeypatch.setattr(noise, "usable_members", lambda run: np.array([True, False, True]))
    result = noise.analyse(run, settings)
    summary = noise.summarise(result)
    assert summary["members"]["used"] == 2 and summary["members"]["diverged_ids"] == [1]
    assert summary["tails"]["all"]["all"]["along_iterations"]["hill"].n == 2
    text = noise.report(result, summary, {k: k for k in FIGURES}, None).markdown()
    assert "2 of 3 members analysed (1 diverged (NaN/inf) and excluded: members [1])" in text
    monkeypatch.setattr(noise, "usable_members", lambda run: np.zeros(3, bool))
    with pytest.raises(NoUsableMembersError, match="all 3 members .* diverged"):
        noise.analyse(run, settings)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                *small("noise"),
                "--out",
                str(study),
                "--resume",
            ]
        )
    message = str(exc.value)
    assert message.startswith("error: noise: all 3 members") and "\n" not in message


def test_pixel_strata_of_the_first_layer():
    names = [f"Dense_0/kernel[{i},{j}]" for i in range(4) for j in range(2)]
    names += ["Dense_0/bias[0]", "Dense_1/kernel[0,0]"]
    lit = np.array([0.0, 0.04, 0.3, 0.9])
    groups = parameter_groups(names, lit)
    assert list(groups) == ["all", "Dense_0", "Dense_0 lit <5%", "Dense_0 lit 5-50%", "Dense_0 lit >50%", "Dense_1"]
    assert groups["Dense_0 lit <5%"].tolist() == [0, 1, 2, 3]  # pixels 0 (never lit) and 1
    assert groups["Dense_0 lit 5-50%"].tolist() == [4, 5] and groups["Dense_0 lit >50%"].tolist() == [6, 7]
    assert groups["Dense_0"].tolist() == list(range(9)) and groups["Dense_1"].tolist() == [9]


def _noise_groups(p):
    return {"all": np.arange(p), "half": np.arange(p // 2)}


def test_scale_matched_null_explains_gaussian_noise_with_heterogeneous_scales():
    # Gaussian noise whose parameters have log-normal scales (log-sd 1.5): across parameters a scale
    # mixture, heavy-tailed for the uncontrolled estimator; along iterations Gaussian.
    rng = np.random.default_rng(0)
    m, p = 64, 2048
    xi = (rng.standard_normal((m, p)) * np.exp(1.5 * rng.standard_normal(p))).astype(np.float32)
    out = measure_step(xi, np.ones(p, np.float32), _noise_groups(p), 1024, np.random.default_rng(1))
    raw, null, cov, std = (out["across"][k]["simsekli"][0] for k in ("raw", "null", "covariance", "standardised"))
    ref = noise.across_reference(m, 1024)
    # measured: raw 1.03, scale-matched null 1.04, covariance-matched null 1.03, standardised 1.98
    # (Gaussian samples standardised the same way: median 1.98)
    assert raw < 1.4 and abs(raw - null) < 0.15 and abs(raw - cov) < 0.15
    assert abs(std - ref["standardised"]["simsekli"]["median"]) < 0.15
    gaussian, heavy, iv, inconclusive = out["along_verdicts"][0]
    assert gaussian > 0.9 and iv < 0.02  # measured 0.94 and 0.0
    assert out["across_verdicts"]["standardised"][0][2] < 0.1  # infinite-variance (measured 0)


def test_sparse_parameters_are_counted_and_left_out_of_the_dense_verdicts():
    # half the parameters: a spike train (exactly 0 in ~80% of minibatches, like a rarely lit pixel)
    rng = np.random.default_rng(6)
    m, p = 128, 400
    g = rng.standard_normal((m, p))
    g[:, :200] = np.where(rng.uniform(size=(m, 200)) < 0.8, 0.0, rng.exponential(size=(m, 200)) ** 3)
    g = g.astype(np.float32)
    g_ref = g.mean(axis=0)
    out = measure_step(g - g_ref, g_ref, _noise_groups(p), 256, np.random.default_rng(7))
    np.testing.assert_allclose(out["sparse"], [0.5, 1.0])
    # measured: 99.5% of the spike trains read infinite-variance; none of the Gaussian half does
    assert out["along_verdicts"][1][2] > 0.9 and out["along_verdicts_dense"][0][2] == 0
    assert out["along_verdicts_dense"][0][0] > 0.9 and np.isnan(out["along_verdicts_dense"][1]).all()


def test_stable_noise_is_infinite_variance_along_iterations_and_across_after_standardising():
    from scipy.stats import levy_stable

    m, p = 256, 1024
    xi = levy_stable.rvs(1.2, 0.0, size=(m, p), random_state=3).astype(np.float32)
    xi *= np.exp(np.random.default_rng(4).standard_normal(p)).astype(np.float32)
    out = measure_step(xi, np.ones(p, np.float32), _noise_groups(p), 1024, np.random.default_rng(5))
    # measured: along 0.69 of parameters infinite-variance (n = 256, the rest inconclusive); across,
    # standardised, 15 of the 16 minibatches; raw 1.05 against 1.31 for the scale-matched null (robust
    # scales); the covariance-matched null (1.04) takes the sample covariance and inherits the tail
    assert out["along_verdicts"][0][2] > 0.5 and out["along_verdicts"][0][0] == 0
    assert out["across_verdicts"]["standardised"][0][2] > 0.8
    assert out["across"]["raw"]["simsekli"][0] < out["across"]["null"]["simsekli"][0] - 0.2
    np.testing.assert_array_equal(out["along_verdicts_dense"], out["along_verdicts"])  # no exact zeros
    assert out["sparse"].tolist() == [0, 0]


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


def test_sweep_statistics_repeat_the_late_window_tail_numbers(study):
    summary = json.loads((study / "summary.json").read_text())
    stats = noise.sweep_statistics(summary)
    late = summary["tails"]["late"]
    assert set(stats["along: gaussian (fraction)"]) == set(late)
    for group, entry in late.items():
        verdicts = entry["along_iterations"]["verdicts"]
        assert stats["along: gaussian (fraction)"][group] == verdicts["gaussian"]["mean"]
        assert 0 <= stats["along: infinite-variance (fraction)"][group] <= 1
    assert stats["noise scale B_simple (last step)"]["all"] == summary["noise_scale"]["b_simple"]["last"]["mean"] > 0
