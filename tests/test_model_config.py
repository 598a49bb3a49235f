"""The model's shape and parameter count, config validation, and the generated command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rvsp_jax import cli
from rvsp_jax.config import ACTIVATIONS, TrainConfig, optimizer_names
from rvsp_jax.training.model import MLP, count_params, init_params, loss_and_accuracy, make_model


def test_parameter_count_is_3b1b_network():
    params = init_params(make_model(TrainConfig()), jax.random.PRNGKey(0))
    # 784*16+16 + 16*16+16 + 16*10+10 (3Blue1Brown's network)
    assert count_params(params) == 13_002
    assert params["Dense_0"]["kernel"].shape == (784, 16)
    assert params["Dense_2"]["kernel"].shape == (16, 10)
    assert not np.any(np.asarray(params["Dense_1"]["bias"]))


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "gelu"])
def test_forward_exposes_pre_and_post_activations(activation):
    model = MLP(widths=(16, 8), activation=activation)
    params = init_params(model, jax.random.PRNGKey(1))
    x = jax.random.uniform(jax.random.PRNGKey(2), (5, 784))
    out = model.apply({"params": params}, x)
    assert [p.shape for p in out.pre] == [(5, 16), (5, 8)]
    np.testing.assert_allclose(out.post[1], ACTIVATIONS[activation](out.pre[1]), rtol=1e-6)
    assert out.logits.shape == (5, 10)


def test_loss_is_softmax_cross_entropy():
    model = MLP()
    params = init_params(model, jax.random.PRNGKey(3))
    x = jax.random.uniform(jax.random.PRNGKey(4), (7, 784))
    y = jnp.array([0, 1, 2, 3, 4, 5, 6])
    loss, acc = loss_and_accuracy(model, params, x, y)
    logits = np.asarray(model.apply({"params": params}, x).logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(loss, -logp[np.arange(7), np.asarray(y)].mean(), rtol=1e-5)
    assert acc == np.mean(logits.argmax(1) == np.asarray(y))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seeds=0), "seeds"),
        (dict(lr=0.0), "learning rate must be a finite number > 0"),
        (dict(lr=-1.0), "learning rate must be a finite number > 0"),
        (dict(lr=float("inf")), "learning rate must be a finite number > 0, got inf"),
        (dict(lr=float("nan")), "learning rate must be a finite number > 0, got nan"),
        (dict(opt_kwargs='{"momentum": Infinity}'), "opt_kwargs 'momentum' must be finite"),
        (dict(base_seed=-1), r"base_seed must be an integer from 0 to 2\*\*64 - 1"),
        (dict(base_seed=2**64), r"base_seed must be an integer from 0 to 2\*\*64 - 1"),
        (dict(optimizer="sgdd"), "unknown optimizer 'sgdd'; valid choices: .*adam.*sgd"),
        (dict(activation="relu6x"), "unknown activation 'relu6x'; valid choices: sigmoid, relu, tanh"),
        (dict(dataset="cifar"), "unknown dataset 'cifar'; valid choices: mnist, fashion_mnist"),
        (dict(vary="members"), "unknown vary 'members'; valid choices: both, data, init"),
        (dict(widths=()), "widths"),
        (dict(opt_kwargs="{momentum: 0.9}"), "opt_kwargs must be a JSON object"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_config_is_rejected_with_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_batch_larger_than_data_and_bad_optimizer_kwargs():
    with pytest.raises(ValueError, match="batch_size 70000 is larger than the training set"):
        TrainConfig(batch_size=70_000).total_steps(60_000)
    with pytest.raises(ValueError, match="rejected opt_kwargs"):
        TrainConfig(optimizer="adam", opt_kwargs='{"momentum": 0.9}').make_optimizer()


def test_optimizer_names_cover_the_common_ones():
    names = optimizer_names()
    assert {"sgd", "adam", "adamw", "rmsprop", "lion"} <= set(names)
    tx = TrainConfig(optimizer="sgd", opt_kwargs={"momentum": 0.9}).make_optimizer()
    assert tx.init({"w": jnp.zeros(2)})  # momentum state exists


def test_registries_live_with_the_model_and_config_reexports_them():
    from rvsp_jax import config
    from rvsp_jax.training import registry

    assert config.ACTIVATIONS is registry.ACTIVATIONS
    assert config.INITIALIZERS is registry.INITIALIZERS
    assert config.optimizer_names is registry.optimizer_names
    assert cli_choices("--activation") == tuple(registry.ACTIVATIONS)
    with pytest.raises(ValueError, match="unknown activation 'swish'; valid choices: sigmoid, relu"):
        TrainConfig(activation="swish")


def cli_choices(flag):
    import dataclasses

    (f,) = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag") == flag]
    return f.metadata["choices"]


def test_steps_and_epochs():
    assert TrainConfig(batch_size=32).total_steps(60_000) == 1875
    assert TrainConfig(batch_size=32, epochs=0.5).total_steps(60_000) == 938
    assert TrainConfig(steps=10, epochs=3).total_steps(60_000) == 10


def test_config_round_trip_and_digest():
    c = TrainConfig(seeds=3, widths=(32, 16), optimizer="adam", lr=1e-3)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.digest() == TrainConfig.from_dict(c.to_dict()).digest()
    assert c.digest() != TrainConfig(seeds=4, widths=(32, 16), optimizer="adam", lr=1e-3).digest()
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"seedz": 3})


def test_command_line_is_generated_from_the_config():
    parser = cli.make_parser("demo", "demo")
    args = parser.parse_args(
        [
            "--seeds",
            "7",
            "--widths",
            "32,8",
            "--optimizer",
            "adam",
            "--opt-kwargs",
            '{"b1": 0.8}',
            "--steps",
            "5",
            "--vary",
            "data",
        ]
    )
    cfg = cli.parse_train_config(parser, args)
    assert cfg == TrainConfig(seeds=7, widths=(32, 8), optimizer="adam", opt_kwargs={"b1": 0.8}, steps=5, vary="data")
    assert cfg.opt_kwargs == {"b1": 0.8} and cfg.opt_kwargs["b1"] == 0.8
    help_text = parser.format_help()
    for flag in (
        "--seeds",
        "--base-seed",
        "--vary",
        "--optimizer",
        "--lr",
        "--opt-kwargs",
        "--activation",
        "--widths",
        "--batch-size",
        "--steps",
        "--epochs",
        "--dataset",
        "--data-dir",
        "--out",
        "--resume",
        "--overwrite",
        "--devices",
    ):
        assert flag in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--activation", "swishy"])
    bad = parser.parse_args(["--lr", "-1"])
    with pytest.raises(SystemExit):
        cli.parse_train_config(parser, bad)
