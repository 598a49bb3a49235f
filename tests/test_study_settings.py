"""Every study's settings round-trip through a dict (from_dict . to_dict), shared flags mean one
thing (--burn-in a fraction of the steps, --probe-index the field probe_index), and every study
module declares the protocol that rvsp_jax.studies.runner runs."""

import dataclasses
import importlib
import json

import pytest

from rvsp_jax import cli
from rvsp_jax.studies import windows

STUDIES = {
    "activation_compare": "CompareSettings",
    "activations": "ActivationSettings",
    "ergodicity": "ErgodicitySettings",
    "noise": "NoiseSettings",
    "optimizers": "OptimizerSettings",
    "pixels": "PixelSettings",
    "spectra": "SpectraSettings",
    "sweep": "SweepSettings",
}


def _settings(name):
    return getattr(importlib.import_module(f"rvsp_jax.studies.{name}"), STUDIES[name])


@pytest.mark.parametrize("name", STUDIES)
def test_settings_round_trip_through_a_dict_and_json(name):
    cls = _settings(name)
    s = cls()
    assert s.to_dict() == dataclasses.asdict(s)
    assert cls.from_dict(s.to_dict()) == s
    assert cls.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # lists back to tuples
    with pytest.raises(ValueError, match="unknown settings"):
        cls.from_dict({**s.to_dict(), "no_such_setting": 1})


@pytest.mark.parametrize("name", STUDIES)
def test_burn_in_and_probe_index_mean_one_thing(name):
    fields = {f.name: f for f in dataclasses.fields(_settings(name))}
    flags = {f.metadata["flag"]: f.name for f in fields.values() if "flag" in f.metadata}
    if "burn_in" in fields:
        assert 0 <= fields["burn_in"].default < 1  # a fraction of the steps
        with pytest.raises(ValueError, match="fraction"):
            _settings(name)(burn_in=1.0)
    assert "index" not in fields  # the recorded parameters are always probe_index
    if "--probe-index" in flags:
        assert flags["--probe-index"] == "probe_index"
    if "--burn-in" in flags:
        assert flags["--burn-in"] == "burn_in"


def test_burn_in_fraction_to_steps():
    assert windows.burn_in_steps(0.25, 3000) == 750 == 3000 // 4
    assert windows.burn_in_steps(0.25, 3003) == 3003 // 4
    assert windows.burn_in_steps(0.334, 150) == 50 and windows.burn_in_steps(1 / 3, 150) == 50
    assert windows.burn_in_steps(0.125, 80) == 10 and windows.burn_in_steps(0.0, 80) == 0
    for bad in (-0.1, 1.0, 10, True, "0.2"):
        with pytest.raises(ValueError, match="fraction"):
            windows.check_burn_in(bad)


@pytest.mark.parametrize("name", [*STUDIES])
def test_every_study_declares_the_protocol_of_the_runner(name):
    study = importlib.import_module(f"rvsp_jax.studies.{name}")
    assert isinstance(study.EXPERIMENT, str) and isinstance(study.TITLE, str)
    assert study.FOLDER in ("run", "study")
    for fn in ("record_runs", "write_results"):
        assert callable(getattr(study, fn)), fn
    if not getattr(study, "SWEEPS_ITSELF", False) and name != "pixels":
        assert callable(study.sweep_statistics)
    assert not hasattr(study, "run_study") and not hasattr(study, "run")  # one runner for all


def test_parse_experiment_fills_probe_index(tmp_path):
    from rvsp_jax.studies import spectra

    run = cli.parse_experiment(
        spectra.EXPERIMENT,
        "x",
        spectra.SpectraSettings,
        ["--probe-index", "3", "--burn-in", "0.2", "--out", str(tmp_path / "o")],
    )
    assert run.settings.probe_index == "3" and run.settings.burn_in == 0.2


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_declares_a_table_of_figure_makers_with_captions(name):
    from rvsp_jax.studies.figures import captions

    study = importlib.import_module(f"rvsp_jax.studies.{name}")
    assert study.FIGURES and not hasattr(study, "figures")
    for fig_name, (caption, maker) in study.FIGURES.items():
        assert callable(maker), fig_name
        assert callable(caption) or (isinstance(caption, str) and caption), fig_name
    static = {k for k, (c, _) in study.FIGURES.items() if not callable(c)}
    assert set(captions({k: study.FIGURES[k] for k in static})) == static
