"""``python -m experiments.activation_compare`` end to end at tiny size (sigmoid vs ReLU), the paired
design (same init keys, same data keys, same initial weights), its numbers against the recording, a
diverged member dropped from its pairs, and the numerics (paired tests against scipy, per-entry
statistics of processes with known answers)."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import assert_finite_summary, assert_valid_figure
from scipy import stats
from sizes import small

from experiments.activation_compare import main
from rvsp_jax.io.runfolder import read_manifest, write_manifest
from rvsp_jax.io.store import open_run
from rvsp_jax.studies import activation_compare as cmp
from rvsp_jax.training.ensemble import member_keys
from rvsp_jax.training.model import init_params, make_model

ARGS = [
    *small("activation_compare"),
    "--devices",
    str(len(jax.devices())),
]
FIGURES = (
    "distributions",
    "variance_paired",
    "update_psd",
    "smoothness",
    "stationarity",
    "training",
    "inactivity",
    "windows",
)
SETTINGS = cmp.CompareSettings(activations="sigmoid,relu", probe_index="2", probe_batch=8, nperseg=32)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run"
    main([*ARGS, "--out", str(out)])
    return out


# ---- numerics -----------------------------------------------------------------------------------


def test_paired_test_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=12)
    b = a + 0.4 + rng.normal(scale=0.5, size=12)
    t = cmp.paired_test(a, b)
    ref = stats.ttest_rel(b, a)
    assert t.t_stat == pytest.approx(ref.statistic, rel=1e-12)
    assert t.t_pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (t.diff.lo, t.diff.hi) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    w = stats.wilcoxon(b - a)
    assert (t.w_stat, t.w_pvalue) == (pytest.approx(w.statistic), pytest.approx(w.pvalue, rel=1e-10))
    assert (t.n, t.excluded) == (12, 0)


def test_paired_test_drops_pairs_with_a_diverged_member():
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    b = np.array([1.5, 2.7, 3.0, np.inf, 5.2])
    t = cmp.paired_test(a, b)
    assert (t.n, t.excluded) == (3, 2)
    assert t.diff.mean == pytest.approx(np.mean([0.5, 0.7, 0.2]))
    assert t.t_pvalue == pytest.approx(stats.ttest_rel([1.5, 2.7, 5.2], [1.0, 2.0, 5.0]).pvalue)
    same = cmp.paired_test(np.ones(4), np.ones(4))
    assert (same.w_stat, same.w_pvalue) == (0.0, 1.0) and np.isnan(same.t_pvalue)


def test_layer_ranges():
    names = ["Dense_0/bias[1]", "Dense_0/kernel[3,2]", "Dense_1/bias[0]", "Dense_2/kernel[4,1]"]
    assert cmp.layer_ranges(names) == {"Dense_0": (0, 2), "Dense_1": (2, 3), "Dense_2": (3, 4)}
    with pytest.raises(ValueError, match="not contiguous"):
        cmp.layer_ranges(["Dense_0/bias[1]", "Dense_1/bias[0]", "Dense_0/kernel[0,0]"])


def test_entry_statistics_of_known_processes():
    """White noise (variance 4): log10 variance log10(4), excess kurtosis 0, band-power ratio 1
    (log 0), beta 0, stationary. AR(1) with phi = 0.7: smooth (ratio > 1). A constant entry is left out
    of the kurtosis; an excluded member is NaN. Per member 5 entries x 2000 steps; tolerances are about
    4 standard errors: log10 var 0.006 (SE; measured |error| <= 0.013 over three seeds), kurtosis
    sqrt(24/10000) = 0.049 (measured <= 0.082), log band ratio ~0.008 (<= 0.023), beta ~0.02 (<= 0.041)."""
    rng = np.random.default_rng(1)
    s, t, p = 4, 2000, 6
    white = 2.0 * rng.normal(size=(s, t, p))
    white[:, :, 0] = 0.25  # a constant entry: variance 0
    st = cmp.entry_statistics(white, np.array([False, False, False, True]), nperseg=128, alpha=0.05)
    keep = slice(0, 3)
    np.testing.assert_allclose(st["log10_var"][keep], np.log10(4.0 * 5 / 6), atol=0.025)
    np.testing.assert_allclose(st["excess_kurtosis"][keep], 0.0, atol=0.2)
    np.testing.assert_allclose(st["log10_band_power_ratio"][keep], 0.0, atol=0.03)
    np.testing.assert_allclose(st["spectral_beta"][keep], 0.0, atol=0.08)
    assert np.all(st["stationary_fraction"][keep] >= 4 / 6)  # the constant entry is "invalid"
    assert np.isnan(st["log10_var"][3]) and np.isnan(st["psd"][3]).all()
    assert st["stationarity_bh"]["n"] == 3 * p and st["stationarity_bh"]["invalid"] == pytest.approx(1 / 6)
    e = rng.normal(size=(2, t + 200, 3))
    ar = np.zeros_like(e)
    for k in range(1, e.shape[1]):
        ar[:, k] = 0.7 * ar[:, k - 1] + e[:, k]
    smooth = cmp.entry_statistics(ar[:, 200:], nperseg=128, alpha=0.05)
    assert np.all(smooth["log10_band_power_ratio"] > 0.5) and np.all(smooth["spectral_beta"] > 0.3)


def test_relative_derivative_matches_the_recorded_thresholds():
    """phi' < 0.19 max phi' is exactly the recorded summaries: sigmoid y < 0.05 or y > 0.95, tanh
    |y| > 0.9, relu y == 0 (away from the boundary itself, where rounding decides)."""
    y = np.linspace(0.001, 0.999, 2001)
    y = y[np.abs(np.abs(y - 0.5) - 0.45) > 1e-6]
    np.testing.assert_array_equal(cmp.relative_derivative(y, "sigmoid") < 0.19, (y < 0.05) | (y > 0.95))
    t = np.linspace(-0.999, 0.999, 2001)
    t = t[np.abs(np.abs(t) - 0.9) > 1e-6]
    np.testing.assert_array_equal(cmp.relative_derivative(t, "tanh") < 0.19, np.abs(t) > 0.9)
    r = np.array([0.0, 0.0, 1e-30, 2.0])
    np.testing.assert_array_equal(cmp.relative_derivative(r, "relu"), [0, 0, 1, 1])
    out = cmp.inactivity(np.array([[[0.0, 1.0], [0.5, 0.97]]], np.float32), "sigmoid", (0.05, 0.19, 0.5))
    np.testing.assert_allclose(out["below"], [[0.5, 0.75, 0.75]])  # 4 y (1-y) = 0, 0, 1, 0.116
    assert out["exact_zero"][0] == 0.5


def test_loss_matched_windows_find_the_same_loss():
    """Two exponential loss curves, one twice as fast: the target is the slow curve's lowest loss
    after the start; each window is centred on its curve's first crossing, kept inside the steps."""
    t = np.arange(400.0)
    curves = {"slow": np.exp(-t / 200), "fast": np.exp(-t / 100)}
    target, windows, crossing = cmp.loss_matched_windows(curves, 10, 64)
    assert target == pytest.approx(np.exp(-399 / 200))
    assert crossing == {"slow": 399, "fast": 200}
    assert windows == {"slow": (336, 400), "fast": (168, 232)}
    assert cmp.window_length(400, 40) == 100 and cmp.window_length(60, 6) == 32
    assert cmp.window_length(60, 6, 100) == 54


def test_proportion_intervals_stay_inside_zero_one():
    """The t-interval of [0, 0, 0.01, 0, 0.2] reaches below 0; the bootstrap interval does not."""
    from rvsp_jax.analysis import across_members
    from rvsp_jax.present.report import proportion_summary

    x = np.array([0.0, 0.0, 0.01, 0.0, 0.2, np.nan])
    assert across_members(x).lo < 0
    p = proportion_summary(x)
    assert 0 <= p.lo <= p.mean <= p.hi <= 1 and p.mean == pytest.approx(0.042)
    assert (p.n, p.excluded) == (5, 1)
    assert proportion_summary(x) == proportion_summary(x)  # seeded: reproducible
    flat = proportion_summary(np.full((4, 2), 0.5))
    np.testing.assert_allclose([flat.lo, flat.hi], [[0.5, 0.5]] * 2)
    assert np.isnan(proportion_summary(np.array([0.3])).lo)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown activation"):
        cmp.CompareSettings(activations="sigmoid,swish")
    with pytest.raises(ValueError, match="at least two different"):
        cmp.CompareSettings(activations="relu,relu")
    with pytest.raises(ValueError, match="burn_in"):
        cmp.CompareSettings(burn_in=1.0)
    with pytest.raises(ValueError, match="probe index"):
        cmp.CompareSettings(probe_index="some")


# ---- end to end ---------------------------------------------------------------------------------


def test_every_promised_file_is_written(study):
    for name in ("manifest.json", "summary.json", "report.md"):
        assert (study / name).is_file(), name
    for v in ("sigmoid", "relu"):
        assert read_manifest(study / "runs" / v)["status"] == "complete"
    for name in FIGURES:
        assert_valid_figure(study / "figures", name)
    manifest = read_manifest(study)
    assert manifest["status"] == "complete" and set(manifest["runs"]) == {"sigmoid", "relu"}
    report = (study / "report.md").read_text()
    assert all(f"figures/{name}.png" in report for name in FIGURES)
    assert "python -m experiments.activation_compare" in report and "paired t" in report


def test_windows_rules_and_like_for_like_inactivity_are_reported(study):
    s = json.loads((study / "summary.json").read_text())
    sel = s["window_selection"]
    assert set(s["windows"]) >= {"equal_steps", "loss_matched"}
    assert s["windows"]["equal_steps"]["steps"] == {"sigmoid": [6, 60], "relu": [6, 60]}
    for v, (a, b) in s["windows"]["loss_matched"]["steps"].items():
        assert b - a == sel["width"] == 32 and 6 <= a and b <= 60
        assert sel["loss_matched_mean_loss"][v]["n"] == 3
    assert isinstance(sel["loss_matched"], bool) and sel["stationary_accept"] == cmp.STATIONARY_ACCEPT
    assert [b["steps"] for b in sel["stationary_candidates"]] == [[6, 38]]
    assert ("stationary" in s["windows"]) == sel["stationary_candidates"][0]["accepted"]
    rule = sel["stationarity_rule"]
    assert set(rule) == set(s["windows"])
    for w in rule.values():
        assert w["accepted"] == all(
            d["stationary_fraction"] >= cmp.STATIONARY_ACCEPT and d["variance_drift"] <= cmp.DRIFT_ACCEPT
            for d in w["by_variant"].values()
        )
    assert set(s["rules"]) >= {"difference", "variance", "intermittency", "stationarity", "loss_matched", "inactivity"}
    for w in s["windows"].values():
        for kind in cmp.KINDS:
            for layer in s["layers"]:
                assert set(w["metrics"][kind][layer]) == set(cmp.METRICS)
                frac = w["metrics"][kind][layer]["stationary_fraction"]["by_variant"]
                assert all(0 <= f["lo"] <= f["mean"] <= f["hi"] <= 1 for f in frac.values())
    inact = s["inactivity"]
    assert inact["thresholds"] == list(cmp.INACTIVE_THRESHOLDS) and set(inact["layers"]) == {"Dense_0", "Dense_1"}
    for d in inact["layers"].values():
        for when in ("start", "end"):
            assert set(d[when]["below"]) == {f"{c:g}" for c in cmp.INACTIVE_THRESHOLDS}
            relu = d[when]["below"]["0.19"]["by_variant"]["relu"]
            assert relu["mean"] == pytest.approx(d[when]["exact_zero"]["by_variant"]["relu"]["mean"])
    # the like-for-like fraction at the initial weights equals the recorded step-0 summaries
    for v, stat in (("sigmoid", "saturated"), ("relu", "zero")):
        rec = s["activation_statistics"][v][f"Dense_1/{stat}"]["start"]["mean"]
        assert inact["layers"]["Dense_1"]["start"]["below"]["0.19"]["by_variant"][v]["mean"] == pytest.approx(rec)
    report = (study / "report.md").read_text()
    for text in (
        "## Rules",
        "## Analysed windows",
        "loss-matched",
        "stationarity-accepted",
        "target loss",
        "Inactive units, like for like",
        "exact zero",
        "Diverged members",
        "sigmoid: 0 of 3",
        "By the stationarity rule",
    ):
        assert text in report, text
    assert "more stable" not in report.replace("does not call a variant 'more stable'", "")


def test_the_design_is_paired(study):
    s = json.loads((study / "summary.json").read_text())
    assert s["paired_design"] == {
        "vary": "both",
        "init_keys_identical": True,
        "data_keys_identical": True,
        "configs_differ_only_in_activation": True,
    }
    # same init key and shapes -> the same initial weights whatever the activation
    sig, relu = (open_run(study / "runs" / v).config for v in ("sigmoid", "relu"))
    keys, _ = member_keys(sig.base_seed, jax.numpy.arange(3), sig.vary)
    a, b = (init_params(make_model(c), keys[1]) for c in (sig, relu))  # one member (eager init is slow)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert not np.array_equal(keys[0], keys[1])  # vary=both: members have their own init keys


def test_summary_numbers_agree_with_the_recording(study):
    s = json.loads((study / "summary.json").read_text())
    assert s["variants"] == ["sigmoid", "relu"] and s["pairs"] == ["relu - sigmoid"]
    assert s["burn_in_steps"] == 6 and s["analysed_steps"] == 54
    assert s["layers"] == ["Dense_0", "Dense_1", "Dense_2"]
    assert s["entries"] == {"Dense_0": 4, "Dense_1": 4, "Dense_2": 4}
    logvar = {}
    for v in ("sigmoid", "relu"):
        g = np.asarray(open_run(study / "runs" / v)["grads"][:, 6:, 4:8], np.float64)  # Dense_1 entries
        logvar[v] = np.log10(g.var(1, ddof=1).mean(-1))
        got = s["grads"]["Dense_1"]["log10_var"]["by_variant"][v]
        assert got["mean"] == pytest.approx(logvar[v].mean(), rel=1e-6) and got["n"] == 3
    paired = s["grads"]["Dense_1"]["log10_var"]["paired"]["relu - sigmoid"]
    ref = stats.ttest_rel(logvar["relu"], logvar["sigmoid"])
    assert paired["t_pvalue"] == pytest.approx(ref.pvalue, rel=1e-5) and paired["n"] == 3
    for kind in cmp.KINDS:
        for layer in s["layers"]:
            assert set(s[kind][layer]) == set(cmp.METRICS)
            for v in s["variants"]:
                f = s["stationarity_bh"][kind][layer][v]
                assert sum(f[k] for k in ("stationary", "unit-root", "inconclusive", "invalid")) == pytest.approx(1)
    assert set(s["activation_statistics"]["relu"]) == {"Dense_0/zero", "Dense_0/dead", "Dense_1/zero", "Dense_1/dead"}
    assert set(s["activation_statistics"]["sigmoid"]) == {"Dense_0/saturated", "Dense_1/saturated"}
    assert_finite_summary(s)


def test_a_diverged_member_leaves_its_pairs(study, tmp_path):
    copy = tmp_path / "diverged"
    shutil.copytree(study, copy)
    m = read_manifest(copy / "runs" / "relu")
    m["result"]["diverged_at"] = [-1, 30, -1]
    m["result"]["test_accuracy"][1] = float("nan")
    write_manifest(copy / "runs" / "relu", m)
    runs = {v: open_run(copy / "runs" / v) for v in ("sigmoid", "relu")}
    s = cmp.analyse(runs, SETTINGS, progress=False).summary
    assert s["members"]["relu"]["diverged"] == 1 and s["members"]["sigmoid"]["diverged"] == 0
    d = s["updates"]["Dense_0"]["log10_var"]
    assert d["by_variant"]["relu"].n == 2 and d["by_variant"]["sigmoid"].n == 3
    assert (d["paired"]["relu - sigmoid"].n, d["paired"]["relu - sigmoid"].excluded) == (2, 1)
    assert s["test_accuracy_paired"]["relu - sigmoid"].n == 2
    assert s["stationarity_bh"]["updates"]["Dense_0"]["relu"]["n"] == 2 * 4


def test_a_variant_with_every_member_diverged_is_refused_in_one_line(study, tmp_path):
    copy = tmp_path / "all_diverged"
    shutil.copytree(study, copy)
    m = read_manifest(copy / "runs" / "relu")
    m["result"]["diverged_at"] = [3, 5, 7]
    write_manifest(copy / "runs" / "relu", m)
    runs = {v: open_run(copy / "runs" / v) for v in ("sigmoid", "relu")}
    with pytest.raises(ValueError, match=r"every member diverged .* relu \(3 of 3\).*lower --lr"):
        cmp.analyse(runs, SETTINGS, progress=False)


def test_the_burn_in_is_the_fraction_of_every_study():
    from rvsp_jax.studies.windows import burn_in_steps

    # floor, as windows.burn_in_steps gives every study (round would give 188 of 1875 and 7 of 67)
    for total, fraction in [(60, 0.1), (600, 0.1), (1875, 0.1), (67, 0.1), (150, 1 / 3)]:
        assert cmp.check_steps(total, fraction) == burn_in_steps(fraction, total)
    assert cmp.check_steps(1875, 0.1) == 187 and cmp.check_steps(60, 0.1) == 6
    with pytest.raises(ValueError, match="31 steps after the burn-in are too few"):
        cmp.check_steps(34, 0.1)


def test_refusals(study, tmp_path, capsys):
    with pytest.raises(SystemExit, match="already exists"):
        main([*ARGS, "--out", str(study)])
    with pytest.raises(SystemExit, match="different settings"):
        main([*ARGS, "--burn-in", "0.2", "--out", str(study), "--resume"])
    with pytest.raises(SystemExit):
        main([*ARGS, "--activations", "relu", "--out", str(tmp_path / "x")])
    assert "at least two different" in capsys.readouterr().err


def test_sweep_statistics_repeat_the_paired_differences_of_the_equal_steps_window(study):
    summary = json.loads((study / "summary.json").read_text())
    stats = cmp.sweep_statistics(summary)
    updates = summary["windows"]["equal_steps"]["metrics"]["updates"]
    for layer, entry in updates.items():
        got = stats["updates log10_var: paired difference"][f"{layer} (relu - sigmoid)"]
        assert got == entry["log10_var"]["paired"]["relu - sigmoid"]["diff"]["mean"]
    assert set(stats["test accuracy"]) == {"sigmoid", "relu"}
