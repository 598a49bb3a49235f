"""experiments.optimizers end to end at tiny size (one run per variant, files, figures, summary; plain
SGD's update PSD equals lr^2 times its gradient PSD on the recorded data), variant parsing and theory
selection, and the filter comparison on simulated optax runs with known answers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_figures
from sizes import small

from experiments.optimizers import main
from rvsp_jax.analysis import MemberSummary, across_members
from rvsp_jax.config import TrainConfig
from rvsp_jax.studies import optimizers as opt
from rvsp_jax.studies.optimizers import PRESETS, Variant, fit_theory, parse_variants

FIGURES = ("update_acf", "update_psd", "psd_prediction", "prediction_error")
BASE = TrainConfig()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("optimizers") / "study"
    main(
        [
            *small("optimizers", frozen_batches=64),
            "--out",
            str(out),
        ]
    )
    return out


def test_the_experiment_writes_one_run_per_variant_and_the_comparison(study):
    for name in ("manifest.json", "summary.json", "report.md"):
        assert (study / name).is_file(), name
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["status"] == "complete" and set(manifest["runs"]) == {"sgd", "momentum"}
    for variant in ("sgd", "momentum"):
        run_manifest = json.loads((study / "runs" / variant / "manifest.json").read_text())
        assert run_manifest["status"] == "complete" and run_manifest["total_steps"] == 96
        assert set(run_manifest["arrays"]) >= {"updates", "grads"}
    assert_figures(study / "figures", FIGURES)
    report = (study / "report.md").read_text()
    assert all(f"figures/{name}.png" in report for name in FIGURES)
    assert "optax.sgd(lr=0.01, momentum=0.9)" in report


def test_summary_and_the_exact_sgd_filter_on_recorded_data(study):
    summary = json.loads((study / "summary.json").read_text())
    sgd, momentum = summary["variants"]["sgd"], summary["variants"]["momentum"]
    assert sgd["lr"] == 0.1 and momentum["opt_kwargs"] == {"momentum": 0.9}
    for v in (sgd, momentum):
        assert v["members"]["used"] == 3 and v["test_accuracy"]["n"] == 3
        assert set(v["layers"]) == {"Dense_0", "Dense_1", "Dense_2"}
        for d in v["layers"].values():
            assert np.isfinite(d["acf_lag1"]["mean"]) and np.isfinite(d["spectral_slope"]["mean"])
    assert sgd["theory"]["kind"] == "momentum" and sgd["theory"]["beta"] == 0
    assert momentum["theory"]["beta"] == 0.9 and not momentum["theory"]["approximate"]
    for layer, err in sgd["theory"]["median_relative_error"].items():
        # d = -lr g up to float32 rounding of theta + d (measured: ~3e-6)
        assert err["hi"] < 1e-4, (layer, err)
    for layer, err in momentum["theory"]["median_relative_error"].items():
        assert 0 < err["mean"] < 0.5, (layer, err)
    # momentum correlates updates: lag-1 ACF near beta, far above plain SGD's
    for layer in sgd["layers"]:
        assert momentum["layers"][layer]["acf_lag1"]["mean"] > 0.6 > sgd["layers"][layer]["acf_lag1"]["mean"]


def test_out_of_sample_prediction_windows_and_rules_are_reported(study):
    summary = json.loads((study / "summary.json").read_text())
    assert set(summary["rules"]) >= {"prediction", "likely_cause", "sanity_check", "shape", "stationary_window"}
    for name, v in summary["variants"].items():
        assert v["analysed_window"]["steps"] == [9, 96] and isinstance(v["analysed_window"]["accepted"], bool)
        assert "sanity check" in v["theory"]["role"]
        p = v["prediction"]
        assert "out-of-sample" in p["role"] and p["frozen_batches"] == 64
        assert p["window"]["steps"] == [72, 96]
        for layer, d in p["layers"].items():
            assert d["verdict"] in ("matches", "mismatch", "inconclusive"), (name, layer)
            assert d["median_relative_error"]["n"] == 3 and 0 < d["floor"]["mean"] < d["threshold"]["mean"] < 2
            assert d["error_over_floor"] == pytest.approx(d["median_relative_error"]["mean"] / d["floor"]["mean"])
            assert (d["likely_cause"] is None) == (d["verdict"] == "matches" and not d["bands_off"])
        for d in v["layers"].values():
            assert set(d["spectral_shape"]["fractions"]) == {"white", "lorentzian", "power-law", "indistinguishable"}
            assert d["slope_fit_range"] == [pytest.approx(1 / 32), 0.5]
    report = (study / "report.md").read_text()
    for text in (
        "## Rules",
        "## Analysed windows",
        "steps 72-96",
        "Out-of-sample test",
        "floor",
        "Sanity check (in-sample identity, not evidence for the theory)",
        "shape summary",
    ):
        assert text in report, text
    assert "matches the measured update PSD" not in report


def test_a_variant_with_every_member_diverged_is_refused_in_one_line(study, tmp_path):
    import shutil

    from rvsp_jax.io.store import open_run

    copy = tmp_path / "diverged"
    shutil.copytree(study / "runs" / "sgd", copy)
    with np.load(copy / "final.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["diverged"] = np.ones_like(arrays["diverged"])
    np.savez(copy / "final.npz", **arrays)
    settings = opt.OptimizerSettings(probe_index="2", nlags=10, nperseg=32, frozen_batches=64)
    with pytest.raises(ValueError, match=r"every member of variant sgd .* diverged \(3 of 3.*lower --lr"):
        opt.analyse_variant(open_run(copy), PRESETS["sgd"], settings)


def _white_noise_fit(variant, grads, noise_var, noise_sq, start=0):
    updates = simulate(variant.config(BASE).make_optimizer(), grads)
    s, t, p = grads.shape
    noise = opt.FrozenNoise(noise_var, noise_sq, 512)
    fit = opt.predict_from_noise(updates, NAMES, variant, np.ones(s, bool), noise, start=start, nperseg=256)
    floor = opt.metric_floor(s, [3, 2], t - start, 256, 512)
    return fit, floor


def test_prediction_from_independent_white_noise_matches_down_to_the_floor():
    """White gradients of variance 4 through real optax momentum and SGD, predicted from the
    variance of 512 independent draws: the error sits at the floor (measured ratio 0.97-1.06), below
    the threshold (level off by 1.25x); a prediction with twice the variance is a mismatch. The floor
    is the metric of an exact theory (about 0.17 at 16 Welch segments)."""
    rng = np.random.default_rng(3)
    S, T = 4, 2048
    grads = (2.0 * rng.standard_normal((S, T, 5))).astype(np.float32)
    frozen = 2.0 * rng.standard_normal((S, 512, 5))
    for variant in (Variant("momentum", "sgd", 0.01, '{"momentum": 0.9}'), PRESETS["sgd"]):
        fit, floor = _white_noise_fit(variant, grads, frozen.var(1, ddof=1), (frozen**2).mean(1), start=64)
        err, fl = across_members(fit.rel_error), across_members(floor.floor)
        limit = across_members(floor.threshold).mean
        assert np.all(fl.mean > 0.1) and np.all(fl.mean < 0.3) and np.all(limit > fl.mean), fl.mean
        for l in range(2):
            verdict = opt.prediction_verdict(MemberSummary(*(np.asarray(a)[l] for a in err)), limit[l])
            assert verdict == "matches", (variant.name, err.mean, fl.mean)
        # the same prediction with its level off by 2x is a mismatch
        half = opt.FrozenNoise(frozen.var(1, ddof=1) * 2, (frozen**2).mean(1) * 2, 512)
        updates = simulate(variant.config(BASE).make_optimizer(), grads)
        off = opt.predict_from_noise(updates, NAMES, variant, np.ones(S, bool), half, start=64, nperseg=256)
        e2 = across_members(off.rel_error)
        assert all(
            opt.prediction_verdict(MemberSummary(*(np.asarray(a)[l] for a in e2)), limit[l]) == "mismatch"
            for l in range(2)
        )
        assert np.all(np.abs(fit.log_ratio_low) < 0.2) and np.all(np.abs(fit.log_ratio_high) < 0.2)


def test_prediction_from_white_noise_misses_correlated_gradients_and_names_the_cause():
    """AR(1) gradients (phi = 0.8) with the marginal variance of the frozen measurement: the white
    prediction misses (error far above the floor), with excess power below f = 0.1 and a deficit
    above f = 0.25 (a shape the likely-cause rule does not put in one band)."""
    rng = np.random.default_rng(4)
    S, T, phi = 4, 2048, 0.8
    e = rng.standard_normal((S, T + 200, 5))
    g = np.zeros_like(e)
    for t in range(1, e.shape[1]):
        g[:, t] = phi * g[:, t - 1] + np.sqrt(1 - phi**2) * e[:, t]
    grads = g[:, 200:].astype(np.float32)
    ones = np.ones((S, 5))
    fit, floor = _white_noise_fit(PRESETS["sgd"], grads, ones, ones)
    err, limit = across_members(fit.rel_error), across_members(floor.threshold).mean
    for l in range(2):
        m = MemberSummary(*(np.asarray(a)[l] for a in err))
        assert opt.prediction_verdict(m, limit[l]) == "mismatch"
    assert np.all(fit.log_ratio_low > np.log10(opt.BAND_FACTOR))
    assert np.all(fit.log_ratio_high < -np.log10(opt.BAND_FACTOR))
    assert "excess low-frequency" in opt.mismatch_cause(0.5, 0.0, "momentum")
    assert "noise level differs" in opt.mismatch_cause(0.5, 0.4, "adam") and "Adam" in opt.mismatch_cause(
        0.5, 0.4, "adam"
    )


def test_parse_variants_presets_optax_names_learning_rates_and_json():
    v = parse_variants("sgd, momentum:0.02,rmsprop", BASE)
    assert [x.name for x in v] == ["sgd", "momentum", "rmsprop"]
    assert v[0] == PRESETS["sgd"] and v[1].lr == 0.02 and v[1].kwargs() == {"momentum": 0.9}
    assert v[2].optimizer == "rmsprop" and v[2].lr == BASE.lr
    (j,) = parse_variants('[{"name": "m99", "optimizer": "sgd", "lr": 0.001, "opt_kwargs": {"momentum": 0.99}}]', BASE)
    assert j == Variant("m99", "sgd", 0.001, '{"momentum": 0.99}')
    cfg = j.config(BASE)
    assert (cfg.optimizer, cfg.lr, cfg.opt_kwargs) == ("sgd", 0.001, '{"momentum": 0.99}')
    assert cfg.seeds == BASE.seeds
    for bad, needle in (
        ("sgd,sgd", "distinct"),
        ("nosuch", "unknown variant"),
        ("sgd:fast", "learning rate"),
        ("[{]", "JSON"),
        ('[{"lr": 1}]', "optimizer"),
        ('[{"optimizer": "sgd", "beta": 1}]', "unknown keys"),
        ('[{"optimizer": "sgd", "opt_kwargs": {"nope": 1}}]', "rejected"),
    ):
        with pytest.raises(ValueError, match=needle):
            parse_variants(bad, BASE)


def test_the_command_line_refuses_optimizer_and_bad_variants(capsys):
    for args, needle in ((["--optimizer", "adam"], "--variants"), (["--variants", "sgd,nosuch"], "unknown variant")):
        with pytest.raises(SystemExit):
            main(args)
        assert needle in capsys.readouterr().err


def test_theory_is_chosen_from_the_optimizer():
    assert PRESETS["sgd"].theory() == ("momentum", 0.0)
    assert PRESETS["momentum"].theory() == ("momentum", 0.9)
    assert PRESETS["nesterov"].theory() == ("nesterov", 0.9)
    assert PRESETS["adam"].theory() == ("adam", 0.9)
    assert Variant("a", "adam", 1e-3, '{"b1": 0.8}').theory() == ("adam", 0.8)
    assert Variant("n", "sgd", 0.1, '{"nesterov": true}').theory() == ("momentum", 0.0)  # no momentum
    assert Variant("r", "rmsprop", 1e-3).theory() is None


def simulate(tx, grads):
    """Updates of optax transformation ``tx`` fed ``grads: [S, T, P]`` (independent scalars)."""
    g = jnp.asarray(grads.transpose(1, 0, 2))  # [T, S, P]
    params = jnp.zeros(g.shape[1:], g.dtype)

    def step(state, gt):
        u, state = tx.update(gt, state, params)
        return state, u

    _, updates = jax.lax.scan(step, tx.init(params), g)
    return np.asarray(updates).transpose(1, 0, 2)


NAMES = [f"Dense_0/bias[{i}]" for i in range(3)] + [f"Dense_1/bias[{i}]" for i in range(2)]


@pytest.mark.parametrize(
    "variant, tolerance",
    [
        (Variant("sgd", "sgd", 0.1), 1e-6),  # d = -lr g exactly: float32 rounding only (measured 3.6e-8)
        (Variant("momentum", "sgd", 0.01, '{"momentum": 0.9}'), 0.01),  # measured at most 2.1e-3
        (Variant("nesterov", "sgd", 0.01, '{"momentum": 0.9, "nesterov": true}'), 0.01),  # measured 7.4e-4
    ],
)
def test_fit_theory_on_simulated_optax_runs(variant, tolerance):
    """White and AR(1) gradients through the real optax optimizer: the measured update PSD follows
    |H|^2 x gradient PSD. The residual for momentum is Welch's window leakage across the filter's
    1/(1-beta)^2 low-frequency peak and the start-up transient."""
    rng = np.random.default_rng(0)
    S, T = 3, 4096
    white = rng.standard_normal((S, T, 3))
    ar = np.empty((S, T, 2))
    ar[:, 0] = rng.standard_normal((S, 2))
    for t in range(1, T):
        ar[:, t] = 0.5 * ar[:, t - 1] + rng.standard_normal((S, 2))
    grads = np.concatenate([white, ar], axis=2).astype(np.float32)
    updates = simulate(variant.config(BASE).make_optimizer(), grads)
    usable = np.array([True, True, False])
    fit = fit_theory(updates, grads, NAMES, variant, usable, start=64, nperseg=256)
    assert fit.kind == variant.theory()[0] and fit.rel_error.shape == (3, 2)
    assert np.isnan(fit.rel_error[2]).all() and np.isnan(fit.measured[2]).all()
    assert np.nanmax(fit.rel_error[:2]) < tolerance, fit.rel_error
    # both curves share the normalisation by the measured power
    df = fit.freqs[1]
    np.testing.assert_allclose(fit.measured[:2].sum(-1) * df, 1.0, rtol=1e-9)
    assert fit_theory(updates, grads, NAMES, Variant("r", "rmsprop", 1e-3), usable) is None


def test_adam_approximation_is_close_for_stationary_white_gradients():
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((2, 4096, 5)).astype(np.float32)
    variant = Variant("adam", "adam", 1e-3)
    updates = simulate(optax.adam(1e-3), grads)
    fit = fit_theory(updates, grads, NAMES, variant, np.ones(2, bool), start=512, nperseg=256)
    # approximation: vhat ~ E[g^2] with b2 = 0.999 (measured at most 0.031)
    assert np.nanmax(fit.rel_error) < 0.1, fit.rel_error


def test_sweep_statistics_repeat_band_ratios_and_prediction_errors(study):
    summary = json.loads((study / "summary.json").read_text())
    stats = opt.sweep_statistics(summary)
    for name, v in summary["variants"].items():
        assert stats["test accuracy"][name] == v["test_accuracy"]["mean"]
        for layer, entry in v["layers"].items():
            assert stats["band power ratio low/high"][f"{name} {layer}"] == entry["band_power_ratio"]["mean"]
        for layer, entry in v["prediction"]["layers"].items():
            assert (
                stats["prediction: median relative error"][f"{name} {layer}"] == entry["median_relative_error"]["mean"]
            )
