"""experiments.spectra end to end at tiny size (files, figures, summary, resume, refusal), and the
study's measurements on processes with known answers (AR(1) ACF and band ratio, random walks
vs white noise by phase, excluded members, constant processes)."""

import json

import numpy as np
import pytest
from conftest import assert_figures
from sizes import small

from experiments.spectra import main
from rvsp_jax.analysis import STATIONARITY_VERDICTS
from rvsp_jax.analysis.spectral import SHAPE_VERDICTS
from rvsp_jax.studies.layer_spectra import layer_groups, layer_of, measure_layers, normalised_psd
from rvsp_jax.studies.spectra import layer_verdict_fractions, phase_bounds, phase_verdicts

FIGURES = ("acf_by_layer", "psd_by_layer", "spectral_summary", "stationarity")
ARGS = small("spectra", "--burn-in", "0.25")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("spectra") / "run"
    main([*ARGS, "--out", str(out)])
    return out


def test_the_experiment_writes_every_promised_file(study):
    for name in ("manifest.json", "summary.json", "report.md", "final.npz"):
        assert (study / name).is_file(), name
    assert_figures(study / "figures", FIGURES)
    report = (study / "report.md").read_text()
    for name in FIGURES:
        assert f"figures/{name}.png" in report
    assert "Configuration" in report and "python -m experiments.spectra" in report


def test_summary_holds_finite_numbers_with_intervals_and_verdict_counts(study):
    summary = json.loads((study / "summary.json").read_text())
    assert summary["members"] == {"total": 3, "used": 3, "diverged": 0, "diverged_ids": []}
    assert summary["series_length"] == 72 and summary["burn_in_steps"] == 24
    assert set(summary["layers"]) == {"Dense_0", "Dense_1", "Dense_2"}
    for layer, d in summary["layers"].items():
        assert d["processes"] == 4  # 2 per parameter array, kernel and bias
        for key in (
            "acf_lag1",
            "spectral_slope",
            "band_power_ratio",
            "spectral_flatness",
            "ljung_box_white_rejected_fdr",
            "smooth_fraction",
            "constant_fraction",
        ):
            s = d[key]
            assert s["n"] == 3 and s["excluded"] == 0, (layer, key)
            assert s["lo"] <= s["mean"] <= s["hi"], (layer, key)
        assert -1 < d["acf_lag1"]["mean"] < 1
    assert list(summary["stationarity"]) == ["early", "middle", "late"]
    assert [p["steps"] for p in summary["stationarity"].values()] == [[0, 32], [32, 64], [64, 96]]
    for phase in summary["stationarity"].values():
        for kind in ("raw", "fdr_bh"):
            for v in phase[kind].values():
                assert sum(v["counts"].values()) == 3 * 4 and set(v["counts"]) == set(STATIONARITY_VERDICTS)


def test_the_report_states_its_window_shape_fits_and_rules(study):
    summary = json.loads((study / "summary.json").read_text())
    w = summary["analysed_window"]
    assert w["steps"] == [24, 96] and isinstance(w["accepted"], bool)
    assert 0 <= w["pooled_stationary_fraction"] <= 1
    assert w["accepted"] == (
        w["pooled_stationary_fraction"] >= w["stationary_accept"] and w["pooled_variance_drift"] <= w["drift_accept"]
    )
    assert set(summary["rules"]) >= {"shape", "stationary_window", "smooth_jittery"}
    for d in summary["layers"].values():
        sh = d["spectral_shape"]
        assert set(sh["fractions"]) == set(SHAPE_VERDICTS)
        assert sum(f["mean"] for f in sh["fractions"].values()) == pytest.approx(1)
        assert all(0 <= f["lo"] <= f["hi"] <= 1 for f in sh["fractions"].values())
        assert -1 < sh["phi"]["mean"] < 1 and "AIC" in sh["criterion"]
        assert d["slope_fit_range"] == [pytest.approx(1 / 32), 0.5] and d["spectral_slope_r2"]["n"] == 3
    report = (study / "report.md").read_text()
    for text in (
        "Analysed window: steps 24-96",
        "by the rule",
        "## Rules",
        "Whittle",
        "AIC",
        "3 of 3 members analysed (0 diverged",
    ):
        assert text in report, text


def test_shape_word_follows_its_rule():
    from rvsp_jax.analysis import MemberSummary
    from rvsp_jax.studies.spectra import shape_word

    def d(fractions, beta):
        one = lambda m: MemberSummary(m, 0.0, m, m, 3, 0)  # noqa: E731
        return {"fractions": {v: one(f) for v, f in zip(SHAPE_VERDICTS, fractions)}, "beta_whittle": one(beta)}

    assert shape_word(d([0.1, 0.2, 0.7, 0.0], 1.1)) == "power law"
    assert shape_word(d([0.1, 0.2, 0.7, 0.0], -0.08)).startswith("nearly white with a blue tilt")
    assert shape_word(d([0.0, 0.9, 0.1, 0.0], 1.5)) == "Lorentzian (AR(1))"
    assert shape_word(d([0.4, 0.3, 0.3, 0.0], 1.5)).startswith("mixed")


def test_a_run_whose_members_all_diverge_is_refused_in_one_line(study, tmp_path):
    """Every member marked diverged in final.npz (as the trainer marks a member whose loss or
    parameters turn non-finite, e.g. ReLU at --lr 1e6, which overflows within two steps): the
    analysis stops with one line naming the remedy instead of a traceback from an empty reduction."""
    import shutil

    from rvsp_jax.io.store import open_run
    from rvsp_jax.studies.spectra import SpectraSettings, analyse

    copy = tmp_path / "diverged"
    shutil.copytree(study, copy)
    with np.load(copy / "final.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["diverged"] = np.ones_like(arrays["diverged"])
    arrays["diverged_at"] = np.full_like(arrays["diverged_at"], 2)
    np.savez(copy / "final.npz", **arrays)
    settings = SpectraSettings(probe_index="2", nlags=10, nperseg=32, burn_in=0.25)
    with pytest.raises(ValueError, match=r"every member of .* diverged \(3 of 3.*lower --lr"):
        analyse(open_run(copy), settings)


def test_resume_reuses_the_recording_and_redoes_the_analysis_and_refuses_to_overwrite(study, capsys):
    manifest = (study / "manifest.json").read_text()
    (study / "summary.json").unlink()
    main([*ARGS, "--out", str(study), "--resume"])
    assert (study / "summary.json").is_file()
    assert (study / "manifest.json").read_text() == manifest  # nothing retrained
    with pytest.raises(SystemExit, match="already exists"):
        main([*ARGS, "--out", str(study)])
    with pytest.raises(SystemExit):
        main([*ARGS, "--burn-in", "1.5", "--out", str(study)])
    assert "burn_in" in capsys.readouterr().err


# ---- measurements on known processes -------------------------------------------------------------


def ar1(rng, phi, shape, n):
    e = rng.standard_normal((*shape, n))
    x = np.empty_like(e)
    x[..., 0] = e[..., 0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[..., t] = phi * x[..., t - 1] + e[..., t]
    return x


NAMES = [f"Dense_0/kernel[{i},0]" for i in range(4)] + [f"Dense_1/bias[{i}]" for i in range(3)]


def test_layer_names_and_groups():
    assert layer_of("Dense_12/kernel[412,3]") == "Dense_12"
    groups = layer_groups(NAMES)
    assert list(groups) == ["Dense_0", "Dense_1"]
    np.testing.assert_array_equal(groups["Dense_1"], [4, 5, 6])
    with pytest.raises(ValueError, match="layer"):
        layer_of("bias")


def test_measure_layers_recovers_ar1_correlation_and_smooth_vs_jittery():
    rng = np.random.default_rng(1)
    S, T = 4, 4096
    smooth = ar1(rng, 0.7, (S, 4), T)  # Dense_0: phi = 0.7, low-frequency power
    jittery = ar1(rng, -0.5, (S, 3), T)  # Dense_1: phi = -0.5, high-frequency power
    x = np.concatenate([smooth, jittery], axis=1).transpose(0, 2, 1).astype(np.float32)  # [S, T, P]
    x[:, :, 3] = 0.25  # a parameter that never changes
    usable = np.array([True, True, True, False])
    sp = measure_layers(x, NAMES, usable, start=96, nlags=5, nperseg=256)
    assert sp.layers == ("Dense_0", "Dense_1") and list(sp.counts) == [4, 3] and sp.nobs == T - 96
    assert np.isnan(sp.acf[3]).all() and np.isnan(sp.slope[3]).all()  # excluded member
    # AR(1): acf phi^k (tolerance ~ 3 standard errors of the mean over 3-4 series of 4000 steps)
    np.testing.assert_allclose(sp.acf[:3, 0, :4], np.broadcast_to(0.7 ** np.arange(4), (3, 4)), atol=0.03)
    np.testing.assert_allclose(sp.acf[:3, 1, :4], np.broadcast_to((-0.5) ** np.arange(4), (3, 4)), atol=0.03)
    # band power: AR(1) PSD 1/|1 - phi e^{-iw}|^2 puts more power below fs/4 for phi > 0
    assert (sp.band_ratio[:3, 0] > 2).all() and (sp.band_ratio[:3, 1] < 0.5).all()
    np.testing.assert_array_equal(sp.smooth[:3], [[1, 0]] * 3)
    np.testing.assert_allclose(sp.constant[:3], [[0.25, 0]] * 3)
    assert (sp.white_rejected[:3] == 1).all()
    # normalised PSD integrates to 1 per series, so the layer mean does too
    df = sp.freqs[1] - sp.freqs[0]
    np.testing.assert_allclose(sp.psd[:3].sum(-1) * df, 1.0, rtol=1e-12)
    assert (sp.slope[:3, 0] > 0.3).all() and (sp.slope[:3, 1] < 0).all()
    # the slope is not 0, yet the spectral shape is Lorentzian (AR(1)), not a power law
    lorentzian = SHAPE_VERDICTS.index("lorentzian")
    np.testing.assert_array_equal(sp.shape[:3, :, lorentzian], [[1, 1]] * 3)
    np.testing.assert_allclose(sp.shape_phi[:3], [[0.7, -0.5]] * 3, atol=0.03)
    assert (sp.shape_delta_aic[:3] < -10).all() and np.isnan(sp.shape[3]).all()
    assert (sp.slope_r2[:3] > 0).all()


def test_white_noise_is_flat_and_rarely_rejected():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2048, 7))
    sp = measure_layers(x, NAMES, np.ones(3, bool), nlags=3, nperseg=128)
    assert np.abs(sp.acf[:, :, 1]).max() < 0.05
    np.testing.assert_allclose(np.nanmean(sp.psd, axis=(0, 1))[1:-1].mean(), 2.0, rtol=0.05)
    assert np.abs(sp.slope).max() < 0.2 and (sp.flatness > 0.8).all()
    assert sp.white_rejected.mean() <= 2 / 21  # FDR 0.05 over 21 true nulls: rarely any rejection
    freqs = np.fft.rfftfreq(8)
    np.testing.assert_allclose(normalised_psd(freqs, np.ones(5)).sum() * freqs[1], 1.0)


def test_phase_verdicts_separate_random_walks_from_white_noise():
    rng = np.random.default_rng(3)
    S, T = 3, 1500
    walks = np.cumsum(rng.standard_normal((S, T, 3)), axis=1)
    white = rng.standard_normal((S, T, 4))
    x = np.concatenate([white, walks], axis=2)  # Dense_0 = 4 white, Dense_1 = 3 walks
    usable = np.array([True, False, True])
    pv = phase_verdicts(x, usable)
    assert [p[1:] for p in pv.phases] == [(0, 500), (500, 1000), (1000, 1500)]
    assert pv.fdr_bh.shape == (3, S, 7) and (pv.fdr_bh[:, 1] == -1).all()
    stationary = STATIONARITY_VERDICTS.index("stationary")
    unit_root = STATIONARITY_VERDICTS.index("unit-root")
    assert (pv.fdr_bh[:, [0, 2], :4] == stationary).mean() >= 0.9
    assert (pv.fdr_bh[:, [0, 2], 4:] == unit_root).mean() >= 0.8
    fractions = layer_verdict_fractions(pv.fdr_bh[0], layer_groups(NAMES))
    assert set(fractions) == set(STATIONARITY_VERDICTS) - {"invalid"}
    assert np.isnan(fractions["stationary"][1]).all()
    total = sum(f[[0, 2]] for f in fractions.values())
    np.testing.assert_allclose(total, 1.0)
    # invalid (constant) processes leave the denominator: 1 of 4 stationary among 3 testable is 1/3
    codes = np.array([[0, 3, 2, 1, 0, 0, 3]], np.int8)
    f = layer_verdict_fractions(codes, layer_groups(NAMES))
    np.testing.assert_allclose(
        [f["stationary"][0, 0], f["unit-root"][0, 0], f["stationary"][0, 1]], [1 / 3, 1 / 3, 1.0]
    )
    assert phase_bounds(10) == [("early", 0, 3), ("middle", 3, 7), ("late", 7, 10)]
