"""Typed config fields: ``TrainConfig.opt_kwargs`` / ``sweep`` are read-only mappings and
``ProbeConfig.probes`` a tuple of names; the command line parses their text (rvsp_jax.cli), the
constructors still read the old string forms, and a manifest written when they were strings loads
equal, digests the same and resumes."""

import copy
import json
import pickle

import pytest

from rvsp_jax import cli
from rvsp_jax.config import JSONObject, TrainConfig, with_sweep_flags
from rvsp_jax.io import runfolder
from rvsp_jax.io.record import _DEFAULTS
from rvsp_jax.training.probes import ProbeConfig

# The "config" and "probe_config" of a manifest as the code before typed fields wrote them (JSON
# text inside the JSON), with the digest that code gave (TrainConfig.digest at commit 3d3a83a).
LEGACY_CONFIG = {
    "seeds": 4,
    "base_seed": 0,
    "vary": "both",
    "optimizer": "sgd",
    "lr": 0.05,
    "opt_kwargs": '{"momentum": 0.9, "nesterov": true}',
    "activation": "sigmoid",
    "widths": [16, 16],
    "init": "lecun_normal",
    "batch_size": 32,
    "steps": 20,
    "epochs": 1.0,
    "dataset": "mnist",
    "data_dir": None,
    "chunk": 200,
    "block": 8,
    "sweep": '{"lr": [0.05, 0.5], "momentum": [0.5, 0.9]}',
}
LEGACY_DIGEST = "a6f4865ee98b0a3b"
LEGACY_POINT_DIGESTS = ["a1bb6c8d14328058", "f8e59d2cc1b5f625", "78ce838371004955", "34aa14f6114422ba"]
LEGACY_PROBES = {"probes": "updates,params", "index": "3", "every": 1, "batch": 64, "compress": "none"}

TYPED = TrainConfig(
    seeds=4,
    optimizer="sgd",
    lr=0.05,
    opt_kwargs={"momentum": 0.9, "nesterov": True},
    sweep={"lr": (0.05, 0.5), "momentum": (0.5, 0.9)},
    steps=20,
)
TYPED_PROBES = ProbeConfig(probes=("updates", "params"), index="3")


def test_a_legacy_manifest_config_loads_equal_to_the_typed_config_and_digests_the_same():
    loaded = TrainConfig.from_dict(json.loads(json.dumps(LEGACY_CONFIG)))
    assert loaded == TYPED and hash(loaded) == hash(TYPED)
    assert TYPED.to_dict() == LEGACY_CONFIG  # what check_resume compares, key by key
    assert TYPED.digest() == loaded.digest() == LEGACY_DIGEST
    assert [TYPED.point(g).digest() for g in range(4)] == LEGACY_POINT_DIGESTS
    assert TrainConfig().digest() == "4e16981b8915cc5a"  # no opt_kwargs / sweep: as before
    assert TrainConfig.from_dict(TYPED.to_dict()) == TYPED
    probes = ProbeConfig.from_dict(LEGACY_PROBES)
    assert probes == TYPED_PROBES and probes.probes == probes.kinds == ("updates", "params")
    assert TYPED_PROBES.to_dict() == LEGACY_PROBES
    # a manifest may also hold the new forms (a list, a JSON object): read the same
    assert ProbeConfig.from_dict({**LEGACY_PROBES, "probes": ["updates", "params"]}) == TYPED_PROBES
    assert (
        TrainConfig.from_dict(
            {
                **LEGACY_CONFIG,
                "opt_kwargs": {"momentum": 0.9, "nesterov": True},
                "sweep": {"lr": [0.05, 0.5], "momentum": [0.5, 0.9]},
            }
        )
        == TYPED
    )


def test_a_run_recorded_with_string_fields_can_be_resumed_with_the_typed_config(tmp_path):
    manifest = {
        "format": runfolder.FORMAT,
        "status": "running",
        **{k: None for k in runfolder.RUN_KEYS},
        "config": LEGACY_CONFIG,
        "probe_config": LEGACY_PROBES,
    }
    (tmp_path / runfolder.MANIFEST).write_text(json.dumps(manifest))
    assert runfolder.check_resume(tmp_path, TYPED.to_dict(), TYPED_PROBES.to_dict(), _DEFAULTS)
    with pytest.raises(runfolder.RunFolderError, match="config.opt_kwargs"):
        other = TrainConfig.from_dict({**LEGACY_CONFIG, "opt_kwargs": {"momentum": 0.8, "nesterov": True}})
        runfolder.check_resume(tmp_path, other.to_dict(), TYPED_PROBES.to_dict(), _DEFAULTS)
    with pytest.raises(runfolder.RunFolderError, match="probes.probes"):
        runfolder.check_resume(
            tmp_path, TYPED.to_dict(), ProbeConfig(probes=("updates",), index="3").to_dict(), _DEFAULTS
        )


def test_string_and_mapping_forms_are_one_config():
    text = TrainConfig(optimizer="adam", opt_kwargs='{"b1": 0.8}', sweep='{"lr": [0.001, 0.01]}')
    typed = TrainConfig(optimizer="adam", opt_kwargs={"b1": 0.8}, sweep={"lr": [0.001, 0.01]})
    assert text == typed and hash(text) == hash(typed) and text.digest() == typed.digest()
    assert isinstance(typed.opt_kwargs, JSONObject) and typed.opt_kwargs == {"b1": 0.8}
    assert typed.opt_kwargs["b1"] == 0.8 and dict(typed.sweep) == {"lr": (0.001, 0.01)}
    assert "lr" in typed.sweep and "b1" not in typed.sweep and list(typed.sweep.keys()) == ["lr"]
    assert typed.optimizer_kwargs() == {"b1": 0.8} and typed.sweep_axes() == {"lr": [0.001, 0.01]}
    # read-only: the mapping cannot be changed in place, nor through what it hands out
    with pytest.raises(TypeError):
        typed.opt_kwargs["b1"] = 0.9
    typed.optimizer_kwargs()["b1"] = 0.9
    assert typed.opt_kwargs["b1"] == 0.8
    # key order is kept (a sweep's axes are its grid order), so a reordered sweep is another config
    swapped = TrainConfig(sweep={"momentum": [0.5, 0.9], "lr": [0.1, 0.2]})
    assert swapped != TrainConfig(sweep={"lr": [0.1, 0.2], "momentum": [0.5, 0.9]})
    # still usable where the field used to be JSON text
    assert json.loads(typed.opt_kwargs) == {"b1": 0.8} and TrainConfig().sweep == "{}"
    for c in (typed, TYPED):
        assert pickle.loads(pickle.dumps(c)) == c and copy.deepcopy(c) == c
        assert isinstance(pickle.loads(pickle.dumps(c)).opt_kwargs, JSONObject)


def test_a_json_object_is_a_mapping_by_key_and_its_text_by_len_iteration_and_truthiness():
    m = JSONObject({"lr": [0.1, 0.2], "momentum": 0.9})
    text = '{"lr": [0.1, 0.2], "momentum": 0.9}'
    # the mapping: lookup by key, membership, keys/values/items, dict() and ** (read-only values)
    assert m["lr"] == (0.1, 0.2) and m.get("momentum") == 0.9 and m.get("b1", 0.5) == 0.5
    with pytest.raises(KeyError):
        m["b1"]
    assert "lr" in m and "b1" not in m and "{" not in m  # keys, not substrings of the text
    assert list(m.keys()) == ["lr", "momentum"] and list(m.values()) == [(0.1, 0.2), 0.9]
    assert list(m.items()) == [("lr", (0.1, 0.2)), ("momentum", 0.9)]
    assert dict(m) == {"lr": (0.1, 0.2), "momentum": 0.9} and (lambda **kw: kw)(**m) == dict(m)
    assert isinstance(JSONObject({"a": {"b": 1}})["a"], JSONObject)
    # the text: len, iteration, truthiness and integer indexing / slicing are the str's
    assert str(m) == text and len(m) == len(text) == 35 and len(m.keys()) == 2
    assert list(m) == list(text) and "".join(m) == text and m[0] == "{" and m[1:5] == '"lr"'
    empty = JSONObject()
    assert bool(empty) and len(empty) == 2 and list(empty) == ["{", "}"]
    assert not empty.keys() and empty == {} and len(empty.keys()) == 0
    # which is what keeps the code written for the JSON-text fields working
    assert json.loads(m) == {"lr": [0.1, 0.2], "momentum": 0.9} and json.loads(empty) == {}
    assert f"{empty}" == "{}" and m.startswith('{"lr"') and json.dumps(empty) == '"{}"'


def test_non_canonical_text_is_read_as_its_mapping():
    compact = TrainConfig(opt_kwargs='{"momentum":0.9}')
    assert compact == TrainConfig(opt_kwargs={"momentum": 0.9})
    assert compact.to_dict()["opt_kwargs"] == '{"momentum": 0.9}'  # canonical text from now on


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(opt_kwargs=[("momentum", 0.9)]), "opt_kwargs must be a JSON object"),
        (dict(opt_kwargs={"momentum": object()}), "opt_kwargs must be a JSON object of JSON values"),
        (dict(opt_kwargs={"momentum": [0.5, 0.9]}), "opt_kwargs 'momentum' is a list"),
        (dict(opt_kwargs={"momentum": float("inf")}), "opt_kwargs 'momentum' must be finite"),
        (dict(sweep={"lr": ()}), "non-empty list of finite numbers"),
        (dict(sweep=[0.1]), "JSON object of lists"),
    ],
)
def test_bad_mappings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_probes_tuple_and_the_old_text():
    assert ProbeConfig().probes == ("params", "updates", "weight_norms", "act_summary")
    assert ProbeConfig(probes="params, updates") == ProbeConfig(probes=("params", "updates"))
    assert ProbeConfig(probes="none").probes == ProbeConfig(probes=()).probes == ()
    assert ProbeConfig(probes=()).to_dict()["probes"] == "none"
    assert ProbeConfig.from_dict(ProbeConfig(probes=()).to_dict()) == ProbeConfig(probes=())
    with pytest.raises(ValueError, match="unknown probe kind"):
        ProbeConfig(probes=("params", "weights"))
    with pytest.raises(ValueError, match="tuple of probe kinds"):
        ProbeConfig(probes=3)
    assert ProbeConfig(index=64) == ProbeConfig(index="64")  # an integer K per parameter array


def test_sweep_flags_take_mappings():
    values = with_sweep_flags(
        {"lr": (0.01, 0.1), "opt_kwargs": {"momentum": [0.5, 0.9], "nesterov": True}, "sweep": {}}
    )
    assert values["lr"] == 0.01 and values["opt_kwargs"] == {"nesterov": True}
    assert values["sweep"] == {"lr": [0.01, 0.1], "momentum": [0.5, 0.9]}
    assert TrainConfig(**values).grid()[-1] == {"lr": 0.1, "momentum": 0.9}


def test_the_command_line_parses_the_text_into_typed_fields():
    parser = cli.make_parser("demo", "demo")
    cli.add_dataclass_arguments(parser, ProbeConfig, title="recording")
    args = parser.parse_args(
        [
            "--optimizer",
            "sgd",
            "--opt-kwargs",
            '{"momentum": [0.5, 0.9], "nesterov": true}',
            "--lr",
            "0.1,0.2",
            "--probes",
            "updates,grads",
        ]
    )
    assert args.opt_kwargs == {"momentum": [0.5, 0.9], "nesterov": True}
    config = cli.parse_train_config(parser, args)
    assert config.opt_kwargs == {"nesterov": True}
    assert config.sweep == {"lr": [0.1, 0.2], "momentum": [0.5, 0.9]}
    assert cli.dataclass_from_args(ProbeConfig, args).probes == ("updates", "grads")
    assert cli.dataclass_from_args(ProbeConfig, parser.parse_args(["--probes", "none"])).probes == ()
    defaults = parser.parse_args([])
    assert cli.parse_train_config(parser, defaults) == TrainConfig()
    assert cli.dataclass_from_args(ProbeConfig, defaults) == ProbeConfig()
    help_text = " ".join(parser.format_help().split())
    assert "(default: params,updates,weight_norms,act_summary)" in help_text and "(default: {})" in help_text
    for bad in (["--opt-kwargs", "{momentum: 0.9}"], ["--opt-kwargs", "[0.9]"], ["--sweep", "nope"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
