"""``python -m experiments.pixels`` end to end at tiny size (files, figures, summary keys, refusals),
and the study's minibatch streams against the minibatches the trainer really used (a probe that
records each step's labels and mean intensity, over several epochs of a small data set)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_finite_summary, assert_valid_figure
from sizes import small

from experiments.pixels import main
from rvsp_jax.config import TrainConfig
from rvsp_jax.data import Dataset, load
from rvsp_jax.studies import pixels
from rvsp_jax.training.ensemble import train

ARGS = [
    *small("pixels"),
    "--devices",
    str(len(jax.devices())),
]
FIGURES = (
    "pixel_maps",
    "class_means",
    "pca_spectrum",
    "pca_components",
    "pixel_correlation",
    "stream_traces",
    "label_histogram",
    "stream_acf",
    "stream_psd",
    "stream_stationarity",
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixels") / "run"
    main([*ARGS, "--out", str(out)])
    return out


def test_every_promised_file_is_written(study):
    for name in ("manifest.json", "summary.json", "report.md", "arrays.npz"):
        assert (study / name).is_file(), name
    for name in FIGURES:
        assert_valid_figure(study / "figures", name)
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["experiment"] == "pixels"
    report = (study / "report.md").read_text()
    for name in FIGURES:
        assert f"figures/{name}.png" in report
    assert "Configuration" in report and "python -m experiments.pixels" in report


def test_summary_has_the_numbers(study):
    s = json.loads((study / "summary.json").read_text())
    assert s["data"]["images"] == 1500 and s["data"]["pixels"] == 784
    assert 0 < s["data"]["mean_intensity"] < 0.5
    assert 1 < s["pca"]["participation_ratio"] < 784
    assert 1 <= s["pca"]["components_for"]["0.9"] <= s["pca"]["components_for"]["0.99"] <= 784
    assert s["pca"]["decay_beta"] > 0
    assert s["correlation"]["at_distance_1"] > 0.3  # neighbouring pixels correlate strongly
    st = s["stream"]
    assert st["members"] == 3 and st["steps"] == 60 and st["nlags"] == 10
    for order in pixels.ORDERS:
        for obs in pixels.OBSERVABLES:
            o = st[order][obs]
            for key in (
                "time_mean",
                "time_var",
                "acf_lag1",
                "acf_mean_lags",
                "log10_band_power_ratio",
                "spectral_beta",
                "stationarity",
                "stationarity_bh",
                "ljung_box_reject_bh",
            ):
                assert key in o, (order, obs, key)
            fractions = o["stationarity_bh"]
            assert sum(fractions[v] for v in ("stationary", "unit-root", "inconclusive", "invalid")) == pytest.approx(
                1.0
            )
    shuffled = st["shuffled"]["intensity"]
    assert shuffled["time_mean"]["mean"] == pytest.approx(st["theory"]["intensity"]["mean"], abs=0.01)
    # the sorted stream of 60 steps sees only class 0 (5,923 zeros > 60 x 32): single-class batches
    assert st["sorted"]["counts"]["time_mean"]["mean"] == pytest.approx(3.2)
    assert st["sorted"]["entropy"]["time_mean"]["mean"] == 0.0
    assert_finite_summary(s)
    arrays = np.load(study / "arrays.npz")
    assert arrays["stream/shuffled/intensity"].shape == (3, 60)
    assert arrays["stream/sorted/counts"].shape == (3, 60, 10)
    np.testing.assert_array_equal(arrays["stream/sorted/counts"][..., 0], 32)


def test_resume_with_other_settings_and_a_taken_folder_are_refused(study):
    # (a successful --resume redoes the whole analysis; it is left out to keep the suite fast)
    with pytest.raises(SystemExit, match="different settings"):
        main([*ARGS[:-2], "--nlags", "12", "--out", str(study), "--resume"])
    with pytest.raises(SystemExit, match="already exists"):
        main([*ARGS, "--out", str(study)])


def test_bad_settings_are_parser_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*ARGS, "--nlags", "0", "--out", str(tmp_path / "x")])
    assert "nlags must be >= 1" in capsys.readouterr().err


def test_streams_are_the_minibatches_the_trainer_uses():
    """On a 640-image data set (20 steps per epoch), 50 steps cover three epochs: the study's shuffled
    stream equals, step by step, the labels and mean intensity of the trainer's actual minibatches."""
    full = load("mnist")
    small = Dataset(
        full.train_images[:640],
        full.train_labels[:640],
        full.test_images[:64],
        full.test_labels[:64],
        "mnist",
        "first 640 MNIST training images",
    )
    config = TrainConfig(seeds=3, steps=50, chunk=10, block=2, lr=0.01, widths=(2,))  # small: fast compile
    s = pixels.streams(config, small)
    res = train(config, small, probe=lambda ctx: {"y": ctx.y, "x": jnp.mean(ctx.x)})
    counts = (np.asarray(res.probes["y"])[..., None] == np.arange(10)).sum(-2)
    np.testing.assert_array_equal(s["shuffled"]["counts"], counts)
    np.testing.assert_allclose(s["shuffled"]["intensity"], res.probes["x"], rtol=1e-5)
    # the sorted order has the same examples per epoch, re-arranged by label
    sorted_labels = np.argmax(s["sorted"]["counts"], -1)
    assert np.all(np.diff(sorted_labels[:, :20], axis=-1) >= 0)
    np.testing.assert_array_equal(s["sorted"]["counts"][:, :20].sum(1), s["shuffled"]["counts"][:, :20].sum(1))
