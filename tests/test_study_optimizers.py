"""experiments.optimizers end to end at tiny size (one run per variant, files, figures, summary; plain
SGD's update PSD equals lr^2 times its gradient PSD on the recorded data), variant parsing and theory
selection, and the filter comparison on simulated optax runs with known answers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.optimizers import main
from rvsp_jax.config import TrainConfig
from rvsp_jax.studies.optimizers import PRESETS, Variant, fit_theory, parse_variants

from test_study_spectra import assert_figures

FIGURES = ("update_acf", "update_psd", "psd_theory", "theory_error")
BASE = TrainConfig()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("optimizers") / "study"
    main(["--seeds", "3", "--steps", "96", "--chunk", "48", "--block", "2", "--probe-index", "2",
          "--nlags", "10", "--nperseg", "32", "--variants", "sgd,momentum", "--out", str(out)])
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


def test_parse_variants_presets_optax_names_learning_rates_and_json():
    v = parse_variants("sgd, momentum:0.02,rmsprop", BASE)
    assert [x.name for x in v] == ["sgd", "momentum", "rmsprop"]
    assert v[0] == PRESETS["sgd"] and v[1].lr == 0.02 and v[1].kwargs() == {"momentum": 0.9}
    assert v[2].optimizer == "rmsprop" and v[2].lr == BASE.lr
    (j,) = parse_variants(
        '[{"name": "m99", "optimizer": "sgd", "lr": 0.001, "opt_kwargs": {"momentum": 0.99}}]', BASE)
    assert j == Variant("m99", "sgd", 0.001, '{"momentum": 0.99}')
    cfg = j.config(BASE)
    assert (cfg.optimizer, cfg.lr, cfg.opt_kwargs) == ("sgd", 0.001, '{"momentum": 0.99}')
    assert cfg.seeds == BASE.seeds
    for bad, needle in (("sgd,sgd", "distinct"), ("nosuch", "unknown variant"), ("sgd:fast", "learning rate"),
                        ("[{]", "JSON"), ('[{"lr": 1}]', "optimizer"), ('[{"optimizer": "sgd", "beta": 1}]',
                                                                          "unknown keys"),
                        ('[{"optimizer": "sgd", "opt_kwargs": {"nope": 1}}]', "rejected")):
        with pytest.raises(ValueError, match=needle):
            parse_variants(bad, BASE)


def test_the_command_line_refuses_optimizer_and_bad_variants(capsys):
    for args, needle in ((["--optimizer", "adam"], "--variants"),
                         (["--variants", "sgd,nosuch"], "unknown variant")):
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


@pytest.mark.parametrize("variant, tolerance", [
    (Variant("sgd", "sgd", 0.1), 1e-6),  # d = -lr g exactly: float32 rounding only (measured 3.6e-8)
    (Variant("momentum", "sgd", 0.01, '{"momentum": 0.9}'), 0.01),  # measured at most 2.1e-3
    (Variant("nesterov", "sgd", 0.01, '{"momentum": 0.9, "nesterov": true}'), 0.01),  # measured 7.4e-4
])
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
