"""Hyperparameter sweeps: member (g, s) of a sweep equals member s of a plain run at grid point g
(bit for bit for SGD and momentum, to float32 rounding for Adam), the grid is parsed from the
command line and recorded in the manifest, and experiments.sweep analyses every grid point."""

import json

import jax
import numpy as np
import pytest
from sizes import small

from experiments.optimizers import main as optimizers_main
from experiments.pixels import main as pixels_main
from experiments.spectra import main as spectra_main
from experiments.sweep import main as sweep_main
from rvsp_jax import cli
from rvsp_jax.config import TrainConfig, with_sweep_flags
from rvsp_jax.io.record import run
from rvsp_jax.studies import per_point
from rvsp_jax.studies.figures import captions, draw
from rvsp_jax.training.ensemble import train
from rvsp_jax.training.probes import ProbeConfig

BASE = dict(seeds=3, steps=12, chunk=6, block=1)


def assert_members_equal(sweep, plain, g, S, exact=True):
    pairs = [
        (a[g * S : (g + 1) * S], b)
        for a, b in zip(jax.tree_util.tree_leaves(sweep.params), jax.tree_util.tree_leaves(plain.params))
    ]
    pairs.append((sweep.metrics.loss[g * S : (g + 1) * S], plain.metrics.loss))
    for a, b in pairs:
        if exact:
            assert np.array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "optimizer, kwargs, sweep, exact",
    [
        ("sgd", {}, {"lr": [0.05, 0.5]}, True),
        ("sgd", {"momentum": 0.9}, {"lr": [0.05, 0.2], "momentum": [0.5, 0.9]}, True),
        ("adam", {}, {"lr": [1e-3, 3e-3], "b1": [0.8, 0.9]}, False),
    ],
)
def test_the_last_grid_point_equals_a_plain_run_with_its_values(optimizer, kwargs, sweep, exact):
    # the last point is the one furthest from the plain defaults: every axis at its last value,
    # members 3 (G - 1) .. 3 G - 1 (one compilation each for the sweep and the plain run)
    config = TrainConfig(
        **BASE, optimizer=optimizer, lr=sweep["lr"][0], opt_kwargs=json.dumps(kwargs), sweep=json.dumps(sweep)
    )
    assert config.members == 3 * len(config.grid())
    g = len(config.grid()) - 1
    assert all(config.grid()[g][k] == v[-1] for k, v in sweep.items())
    assert_members_equal(train(config), train(config.point(g)), g, 3, exact)


def test_grid_is_cartesian_first_axis_slowest_and_points_are_plain_configs():
    config = TrainConfig(**BASE, optimizer="sgd", sweep='{"lr": [0.1, 0.2], "momentum": [0.0, 0.9]}')
    assert config.grid() == [
        {"lr": 0.1, "momentum": 0.0},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.2, "momentum": 0.0},
        {"lr": 0.2, "momentum": 0.9},
    ]
    point = config.point(3)
    assert (point.lr, json.loads(point.opt_kwargs), point.sweep) == (0.2, {"momentum": 0.9}, "{}")
    assert config.grid_hyperparams() == {"learning_rate": [0.1, 0.1, 0.2, 0.2], "momentum": [0.0, 0.9, 0.0, 0.9]}


@pytest.mark.parametrize(
    "sweep, needle",
    [
        ('{"lr": []}', "non-empty list of finite numbers"),
        ('{"lr": [0.1, 0.1]}', "repeats a value"),
        ('{"lr": [0.1, -1]}', "every swept learning rate must be > 0"),
        ('{"momentm": [0.5]}', "not a hyperparameter of optax.sgd"),
        ("[0.1]", "JSON object of lists"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(sweep, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(sweep=sweep)


def test_command_line_lists_become_the_sweep():
    values = with_sweep_flags(
        {"lr": (0.01, 0.1), "opt_kwargs": '{"momentum": [0.5, 0.9], "nesterov": true}', "sweep": "{}"}
    )
    assert values["lr"] == 0.01 and json.loads(values["opt_kwargs"]) == {"nesterov": True}
    assert json.loads(values["sweep"]) == {"lr": [0.01, 0.1], "momentum": [0.5, 0.9]}
    inv = cli.parse_experiment("train", "x", argv=["--lr", "0.01,0.1", "--out", "unused"], allow_sweep=True)
    assert inv.config.sweep_axes() == {"lr": [0.01, 0.1]} and inv.config.members == 16


def test_the_pixel_study_refuses_a_sweep_with_the_reason(capsys):
    with pytest.raises(SystemExit) as exit_:
        pixels_main(["--lr", "0.01,0.1", "--out", "unused"])
    assert exit_.value.code == 2
    assert "does not depend on the optimizer's hyperparameters" in capsys.readouterr().err


def test_a_grid_point_reads_like_the_plain_run_with_its_values(tmp_path):
    config = TrainConfig(**BASE, lr=0.05, sweep='{"lr": [0.05, 0.5]}')
    probes = ProbeConfig(probes="updates,params", index="3")
    sweep, plain = (
        run(config, probes, tmp_path / "s", progress=False),
        run(config.point(1), probes, tmp_path / "p", progress=False),
    )
    view = sweep.point(1)
    assert view.config == plain.config and sweep.point(0).config.lr == 0.05
    for name in sweep.arrays:
        for sel in ((), (slice(1, None), slice(3, 5)), ([2, 0],), (-1,), (np.array([True, False, True]),)):
            a = view[name][sel] if sel else np.asarray(view[name])
            b = np.asarray(plain[name])[sel] if sel else np.asarray(plain[name])
            assert np.array_equal(a, b, equal_nan=True), (name, sel)
    assert view["params"].shape == plain["params"].shape
    for a, b in zip(jax.tree_util.tree_leaves(view.final()), jax.tree_util.tree_leaves(plain.final())):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for key in ("ids", "init_keys", "data_keys"):
        assert view.manifest["members"][key] == plain.manifest["members"][key]
    assert view.manifest["result"] == plain.manifest["result"]
    assert view.manifest["members"]["sweep_ids"] == [3, 4, 5]
    assert plain.point(0) is plain and len(sweep.points()) == 2
    with pytest.raises(IndexError, match="no point 2"):
        sweep.point(2)


SPECTRA = small("spectra", "--burn-in", "0.25")


def test_a_study_on_a_sweep_gives_each_point_the_numbers_of_its_plain_run(tmp_path, capsys):
    spectra_main([*SPECTRA, "--lr", "0.05,0.5", "--out", str(tmp_path / "sweep")])
    spectra_main([*SPECTRA, "--lr", "0.5", "--out", str(tmp_path / "plain")])
    point = json.loads((tmp_path / "sweep" / "points" / "1-lr=0.5" / "summary.json").read_text())
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert point.pop("run") != plain.pop("run")
    assert point == plain  # the unchanged analysis of the same members: every number equal
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["grid"] == {"axes": {"lr": [0.05, 0.5]}, "seeds": 3, "points": [{"lr": 0.05}, {"lr": 0.5}]}
    assert [p["folder"] for p in summary["points"]] == ["points/0-lr=0.05", "points/1-lr=0.5"]
    stats = summary["points"][1]["statistics"]
    assert stats["band power ratio low/high"]["Dense_0"] == pytest.approx(
        plain["layers"]["Dense_0"]["band_power_ratio"]["mean"]
    )
    text = (tmp_path / "sweep" / "report.md").read_text()
    assert "(points/1-lr=0.5/report.md)" in text and "band power ratio low/high: Dense_0" in text
    for folder in (tmp_path / "sweep", tmp_path / "sweep" / "points" / "0-lr=0.05"):
        assert any((folder / "figures").glob("*.png")) and (folder / "report.md").stat().st_size > 0
    assert (tmp_path / "sweep" / "figures" / "statistics.png").stat().st_size > 0
    # the sweep's figure is declared in per_point.FIGURES, saved by save_figures, captioned in the report
    caption = "Spectra: headline statistics against lr"
    assert f"![{caption}](figures/statistics.png)" in text
    assert captions(per_point.FIGURES, per_point.Drawn(summary, "Spectra")) == {"statistics": caption}
    (fig,) = draw(per_point.FIGURES, per_point.Drawn(summary, "Spectra")).values()  # no file written
    assert len([a for a in fig.axes if a.get_visible()]) == len(stats)


def test_the_optimizer_comparison_on_a_sweep_compares_the_variants_at_each_point(tmp_path):
    out = tmp_path / "study"
    optimizers_main(
        [
            *small("optimizers"),
            "--lr",
            "0.01,0.1",
            "--out",
            str(out),
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert all(p["analysed"] for p in summary["points"])
    for p in summary["points"]:
        point = json.loads((out / p["folder"] / "summary.json").read_text())
        # each variant analysed with the grid point's learning rate (its own preset lr replaced)
        assert {v: e["lr"] for v, e in point["variants"].items()} == {
            "sgd": p["point"]["lr"],
            "momentum": p["point"]["lr"],
        }
        assert point["variants"]["momentum"]["opt_kwargs"] == {"momentum": 0.9}
        assert set(p["statistics"]["test accuracy"]) == {"sgd", "momentum"}
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_swept_key_an_optimizer_lacks_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        optimizers_main(
            ["--variants", "sgd,adam", "--opt-kwargs", '{"momentum": [0.5, 0.9]}', "--out", str(tmp_path / "x")]
        )
    assert exit_.value.code == 2 and "not a hyperparameter of optax.adam" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_manifest_and_open_run_describe_every_member(tmp_path):
    config = TrainConfig(**BASE, lr=0.05, sweep='{"lr": [0.05, 0.5]}')
    recorded = run(config, ProbeConfig(probes="none"), tmp_path / "run", progress=False)
    assert recorded.grid == [{"lr": 0.05}, {"lr": 0.5}]
    assert {g: m.tolist() for g, m in recorded.groups.items()} == {0: [0, 1, 2], 1: [3, 4, 5]}
    assert recorded.hyperparams()["learning_rate"].tolist() == pytest.approx([0.05] * 3 + [0.5] * 3)
    members = recorded.manifest["members"]
    assert members["seed_index"] == [0, 1, 2, 0, 1, 2] and members["init_keys"][0] == members["init_keys"][3]
    assert recorded.manifest["grid"]["configs"][1]["lr"] == 0.5


def test_the_sweep_study_analyses_every_grid_point(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep_main(
        [
            "--lr",
            "0.05,0.5",
            "--seeds",
            "4",
            "--steps",
            "200",
            "--chunk",
            "100",
            "--block",
            "2",
            "--probe-index",
            "2",
            "--out",
            str(out),
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [p["point"] for p in summary["points"]] == [{"lr": 0.05}, {"lr": 0.5}]
    assert summary["window"] == {"from_step": 50, "to_step": 200, "steps": 150}
    for p in summary["points"]:
        assert p["analysed"] and p["parameters"] == 12 and p["members"] == 4
        assert sum(p["ergodicity"].values()) == pytest.approx(1.0)
        assert sum(p["tails"].values()) == pytest.approx(1.0)
        assert p["updates"] in ("smooth", "jittery", "near-white") and p["band_ratio_median"] > 0
    text = (out / "report.md").read_text()
    assert "Analysed window: steps 50-200" in text and "Rules:" in text and "lr=0.5" in text
    assert (out / "figures" / "sweep.png").stat().st_size > 0
