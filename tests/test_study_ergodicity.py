"""``python -m experiments.ergodicity`` end to end at a tiny size (4 members, 80 steps): every promised
file, valid PNG/PDF, a verdict for every observable, resume/refusal/--help; the per-parameter
alignment of recorded columns against a planted permutation; diverged members excluded and counted.

One training configuration is compiled for the whole file (module fixture); the other tests reuse
its run folder.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import matplotlib.image as mpimg
import numpy as np
import pytest

from experiments.ergodicity import main
from rvsp_jax.analysis import ERGODICITY_VERDICTS, apply_permutations, match_weights
from rvsp_jax.config import TrainConfig
from rvsp_jax.io.store import FinalResult, open_run, save_final
from rvsp_jax.studies import ergodicity as E
from rvsp_jax.training.model import make_model
from rvsp_jax.training.probes import param_shapes, select_parameters

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG specification (RFC 2083), section 3.1
TINY = [
    "--seeds",
    "4",
    "--steps",
    "80",
    "--chunk",
    "40",
    "--block",
    "2",
    "--probe-every",
    "2",
    "--burn-in",
    "0.125",
]  # 10 of the 80 steps
FIGURES = ("trajectories", "variance_scaling", "omega", "histograms", "verdicts", "verdicts_by_layer")
INVARIANT_OBSERVABLES = 4 + 6 + 6 + 10  # metrics, weight norms, activation summaries, output biases


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ergodicity") / "run"
    main([*TINY, "--out", str(out)])
    return out


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_end_to_end_writes_every_promised_file(tiny, capsys):
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["experiment"] == "ergodicity"
    assert manifest["study"]["status"] == "complete" and manifest["study"]["burn_in"] == 10
    run = open_run(tiny)
    for name in ("metrics/loss", "metrics/grad_norm", "params", "updates", "weight_norms", "activations/summary"):
        assert np.isfinite(run[name][:]).all(), name
    assert run["params"].shape == (4, 40, 602)  # 80 steps every 2; the 602 recorded entries
    for name in FIGURES:
        png = (tiny / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE), name
        image = mpimg.imread(tiny / "figures" / f"{name}.png")
        assert image.ndim == 3 and min(image.shape[:2]) > 300 and image.std() > 0, name
        pdf = (tiny / "figures" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF"), name
    report = (tiny / "report.md").read_text()
    for name in FIGURES:
        assert f"figures/{name}.png" in report
    assert "weight matching to member 0" in report and "python -m experiments.ergodicity" in report
    # the report names every verdict in words and explains them
    assert "## How to read the verdicts" in report and "**Answer.**" in report
    for verdict in ERGODICITY_VERDICTS:
        assert f"**{verdict}**" in report, verdict
    s = summary_of(tiny)
    for group, g in s["groups"].items():
        assert f"**{group}** ({g['n']}):" in report, group


def test_summary_has_a_verdict_and_numbers_for_every_observable(tiny):
    s = summary_of(tiny)
    for key in (
        "config",
        "settings",
        "defaults",
        "alignment",
        "verdict_counts",
        "observables",
        "layers",
        "per_parameter",
        "timings",
        "test_accuracy",
        "n_diverged",
        "burn_in",
    ):
        assert key in s, key
    assert s["config"]["seeds"] == 4 and s["config"]["vary"] == "both" and s["steps"] == 80
    assert s["defaults"]["seeds"] == 256 and s["defaults"]["steps"] == 3000
    assert s["n_diverged"] == 0 and s["burn_in"] == 10
    obs = s["observables"]
    assert len(obs) == INVARIANT_OBSERVABLES + 64  # + sorted unit statistics: 2 layers x 2 x 16
    for name, o in obs.items():
        assert o["verdict"] in ERGODICITY_VERDICTS, name
        assert o["n_members"] == 4 and o["n_diverged"] == 0, name
        for key in (
            "ratio",
            "ratio_ci",
            "mean_pvalue",
            "mean_qvalue_bh",
            "var_mu",
            "var_mu_ci",
            "mde_var_mu",
            "drift",
            "drift_pvalue",
            "steps_needed",
            "slope",
            "slope_ci",
            "omega_exponent",
            "ks_stat",
            "ks_pvalue",
            "ks_decisive",
            "tau_int",
        ):
            assert key in o, (name, key)
        assert o["reason"], name
        if o["verdict"] == "inconclusive" and o["steps_needed"]:
            assert o["steps_needed"] > o["n_steps"] * o["step_spacing"], name
        if o["verdict"] == "ergodic":
            assert o["reason"].startswith("no member-specific mean larger than"), name
    # per group: counts of each verdict add up, effect sizes and steps needed are stated
    for group, g in s["groups"].items():
        assert sum(g[v] for v in ERGODICITY_VERDICTS) == g["n"] == sum(s["verdict_counts"][group].values())
        for key in ("median_ratio", "median_mde_share_ergodic", "steps_needed_median", "non_ergodic_surviving_bh"):
            assert key in g, (group, key)
    # the per-step metrics fluctuate at every step: the descriptive numbers and tau are finite
    for name in ("metrics/loss", "metrics/accuracy", "metrics/grad_norm", "metrics/update_norm"):
        o = obs[name]
        assert all(
            np.isfinite(v)
            for v in (o["slope"], *o["slope_ci"], o["omega_exponent"], o["tau_int"], o["drift"], o["gamma0"])
        ), name
        assert o["slope_ci"][0] <= o["slope"] <= o["slope_ci"][1]
        if np.isfinite(o["ks_pvalue"]):
            assert o["ks_pvalue"] <= o["ks_qvalue_bh"] <= 1
        if o["tau_resolved"]:
            assert o["ratio_ci"][0] <= o["ratio"] <= o["ratio_ci"][1]
            assert o["mean_pvalue"] <= o["mean_qvalue_bh"] <= 1 and o["mde_var_mu"] > 0
        assert o["n_steps"] == 70
    # SGD: the update is -lr x gradient, so their norms give identical verdict numbers
    assert obs["metrics/update_norm"]["slope"] == pytest.approx(obs["metrics/grad_norm"]["slope"])
    assert obs["metrics/update_norm"]["verdict"] == obs["metrics/grad_norm"]["verdict"]
    # per-parameter analysis after weight matching: 602 parameters and 602 updates, every layer
    assert s["alignment"]["aligned"] and s["alignment"]["reference_member"] == 0
    assert 0 < s["alignment"]["units_moved_fraction"] <= 1
    for family in ("parameters", "updates"):
        assert sum(s["verdict_counts"][family].values()) == 602
        assert set(s["per_parameter"][family]["verdict"]) <= set(ERGODICITY_VERDICTS)
        assert sum(r["n"] for r in s["layers"][family].values()) == 602
    for key in ("training_s", "analysis_s", "figures_s", "report_s"):
        assert np.isfinite(s["timings"][key]) and s["timings"][key] >= 0
    acc = s["test_accuracy"]
    assert 0 <= acc["mean"] <= 1 and acc["n"] == 4


def test_resume_reuses_the_recording_and_redoes_the_analysis(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(tiny, out)
    trained = json.loads((out / "manifest.json").read_text())["timing"]
    drawn = []  # figures were checked above; here only that they are redrawn (saves ~10 s)
    monkeypatch.setattr(
        E, "write_figures", lambda analysis, summary, folder, settings: drawn.append((analysis.burn_in, folder))
    )
    main([*TINY[:-1], "0.2", "--out", str(out), "--resume"])  # another burn-in (16 steps): analysis only
    captured = capsys.readouterr()
    assert "already complete" in captured.out + captured.err
    assert json.loads((out / "manifest.json").read_text())["timing"] == trained
    assert drawn == [(16, out / "figures")]
    s = summary_of(out)
    assert s["burn_in"] == 16 and s["observables"]["metrics/loss"]["n_steps"] == 64
    assert s["observables"]["Dense_2/bias[0]"]["n_steps"] == 32  # probe steps 16, 18, ..., 78


def test_refusals_and_bad_options(tiny, capsys):
    with pytest.raises(SystemExit, match="already exists"):
        main([*TINY, "--out", str(tiny)])
    with pytest.raises(SystemExit, match="at least 32"):
        main([*TINY[:-1], "0.9875", "--out", str(tiny / "never")])  # 79 of 80 steps
    assert not (tiny / "never").exists()
    with pytest.raises(SystemExit):
        main([*TINY, "--align", "sideways"])
    assert "invalid choice" in capsys.readouterr().err


def test_help_documents_every_option_and_the_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--seeds",
        "--vary",
        "--optimizer",
        "--lr",
        "--activation",
        "--steps",
        "--burn-in",
        "--dataset",
        "--data-dir",
        "--out",
        "--resume",
        "--overwrite",
        "--probe-every",
        "--align",
        "--alpha",
        "--members-shown",
    ):
        assert flag in text, flag
    assert "(default: 256)" in text and "(default: 3000)" in text and "burn-in a quarter" in text


def test_burn_in_defaults_to_a_quarter_and_needs_32_analysed_steps():
    s = E.ErgodicitySettings()
    assert E.burn_in_steps(s, 3000) == 750
    assert E.burn_in_steps(E.ErgodicitySettings(burn_in=0, probe_every=5), 160) == 0
    with pytest.raises(ValueError, match="at least 32"):
        E.burn_in_steps(E.ErgodicitySettings(burn_in=1 / 160, probe_every=5), 160)  # steps 5..155: 31
    with pytest.raises(ValueError, match="burn-in"):
        E.ErgodicitySettings(burn_in=-1)


def _fake_run(config: TrainConfig, names: list[str]):
    shapes = param_shapes(make_model(config))
    index = select_parameters(" ".join(names), shapes, config.base_seed)
    return SimpleNamespace(layout=SimpleNamespace(param_shapes=shapes, param_index=index))


def _record(params, run) -> np.ndarray:
    """Recorded columns [S, P] of an ensemble's params, in the store's order."""
    return np.concatenate(
        [
            np.asarray(params[name.split("/")[0]][name.split("/")[1]]).reshape(params["Dense_0"]["bias"].shape[0], -1)[
                :, idx
            ]
            for name, idx in run.layout.param_index.items()
        ],
        axis=1,
    )


def test_aligned_columns_recover_a_planted_permutation_exactly():
    config = TrainConfig()
    names = E.recorded_parameters(config)
    assert len(names) == 16 + 9 * 16 + 16 + 256 + 10 + 160
    run = _fake_run(config, names)
    rng = np.random.default_rng(0)
    one = {
        f"Dense_{l}": {"kernel": rng.standard_normal((i, o)), "bias": rng.standard_normal(o)}
        for l, (i, o) in enumerate([(784, 16), (16, 16), (16, 10)])
    }
    ensemble = jax.tree_util.tree_map(lambda a: np.stack([a] * 3), one)
    planted = [np.stack([np.arange(16), rng.permutation(16), rng.permutation(16)]) for _ in range(2)]
    shuffled = apply_permutations(ensemble, planted)
    x = _record(shuffled, run)  # [3, 602]: members 1, 2 are member 0 with their units shuffled
    assert not np.array_equal(x[1], x[0])
    cols = E.aligned_columns(run, match_weights(shuffled, 0))
    aligned = np.take_along_axis(x, cols, axis=1)
    np.testing.assert_array_equal(aligned, np.broadcast_to(x[0], aligned.shape))
    # a recording that is not closed under permutations is refused
    partial = _fake_run(config, [n for n in names if n != "Dense_1/kernel[3,4]"])
    with pytest.raises(ValueError, match="not closed under hidden-unit permutations"):
        E.aligned_columns(partial, planted)


def test_diverged_members_are_excluded_and_counted(tiny, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny, out)
    run = open_run(out)
    final = run.final()
    diverged = np.array([False, True, False, False])
    save_final(
        out, FinalResult(final.params, final.test_loss, final.test_accuracy, diverged, np.where(diverged, 30, -1))
    )
    settings = E.ErgodicitySettings(probe_every=2, burn_in=0.125)
    groups, alignment, flagged = E.load_groups(run, settings, 10)
    assert np.array_equal(flagged, diverged) and alignment["reference_member"] == 0
    for g in groups:
        assert np.isnan(g.x[1]).all() and np.isfinite(g.x[[0, 2, 3]]).all(), g.name
    analysis = E.analyse(groups, alignment, flagged, final.test_accuracy, settings, 10, progress=False)
    for gr in analysis.results.values():
        assert (gr.result.n_diverged == 1).all() and (gr.result.n_members == 3).all()
    assert analysis.test_accuracy.n == 3 and analysis.test_accuracy.excluded == 1
    assert analysis.test_accuracy.mean == pytest.approx(np.mean(final.test_accuracy[[0, 2, 3]]))


@pytest.mark.parametrize(
    "vary, align, method, families",
    [
        ("data", "weights", "none needed", {"parameters", "updates"}),
        ("both", "none", "not aligned", set()),
    ],
)
def test_which_alignment_is_used_and_reported(tiny, tmp_path, vary, align, method, families):
    out = tmp_path / "run"
    shutil.copytree(tiny, out, ignore=shutil.ignore_patterns("figures"))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["config"]["vary"] = vary  # the branch depends only on the recorded config
    (out / "manifest.json").write_text(json.dumps(manifest))
    run = open_run(out)
    settings = E.ErgodicitySettings(probe_every=2, burn_in=0.125, align=align)
    groups, alignment, diverged = E.load_groups(run, settings, 10)
    assert method in alignment["method"]
    assert {g.family for g in groups} - {"invariant"} == families
    if vary == "data":  # identity: the recorded columns as they are
        params = next(g for g in groups if g.name == "parameters")
        np.testing.assert_array_equal(params.x, np.moveaxis(run["params"][:], -1, 1))
    analysis = E.analyse(groups, alignment, diverged, run.final().test_accuracy, settings, 10, progress=False)
    summary = E.summarize(analysis, run.config, settings, run.probe_config)
    summary["timings"] = {"training_s": 0.0}
    report = E.write_report(analysis, summary, out, None).read_text()
    assert method in report
    assert ("Per-parameter analysis skipped" in report) == (not families)
    assert set(summary["per_parameter"]) == families


def test_a_run_where_most_or_all_members_diverge_still_reports_or_refuses_in_one_line(tmp_path, capsys):
    # ReLU with lr 1e6: measured, 7 of 8 members diverge at steps 2-4 (member 4 survives)
    diverging = [
        "--seeds",
        "8",
        "--steps",
        "80",
        "--chunk",
        "40",
        "--block",
        "2",
        "--probe-every",
        "2",
        "--burn-in",
        "0.125",
        "--activation",
        "relu",
        "--lr",
        "1e6",
    ]
    out = tmp_path / "most"
    main([*diverging, "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert 4 <= summary["n_diverged"] < 8
    assert "Diverged members:" in (out / "report.md").read_text()
    assert all((out / "figures" / f"{name}.png").exists() for name in FIGURES)
    with pytest.raises(SystemExit) as exit_:
        main([*diverging[:-1], "1e30", "--out", str(tmp_path / "all")])
    assert "every member" in str(exit_.value.code) and "diverged" in str(exit_.value.code)


def test_sweep_statistics_repeat_the_verdict_shares_and_ratios_of_the_summary(tiny):
    summary = json.loads((tiny / "summary.json").read_text())
    stats = E.sweep_statistics(summary)
    for group, g in summary["groups"].items():
        shares = [stats[f"{v} (fraction)"][group] for v in E.VERDICT_COLOURS]
        assert sum(shares) == pytest.approx(1.0) and shares[0] == g["ergodic"] / g["n"]
        assert stats["variance ratio (median)"][group] == g["median_ratio"]
