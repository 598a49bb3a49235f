"""Invariants of the ensemble trainer: member s is the same whatever S and whatever the device
split; same config, same bits; vary=data/init share what they promise; divergence is contained;
and one member reaches a real test accuracy on the full MNIST."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rvsp_jax.config import TrainConfig
from rvsp_jax.training.ensemble import Ensemble, host_state, member_keys, train

SMALL = dict(steps=24, chunk=8, optimizer="adam", lr=1e-3, activation="relu")


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def batch_probe(ctx):
    """Record the minibatch a member saw (its labels and a pixel checksum) and its first weights."""
    return {"y": ctx.y, "xsum": ctx.x.sum(), "w0": ctx.params["Dense_0"]["kernel"][300, :4]}


@pytest.fixture(scope="module")
def four():
    return train(TrainConfig(seeds=4, **SMALL), probe=batch_probe)


def test_member_is_bit_identical_whatever_the_ensemble_size(four):
    one = train(TrainConfig(seeds=1, **SMALL), probe=batch_probe)
    three = train(TrainConfig(seeds=3, **SMALL), probe=batch_probe)
    for name in ("loss", "accuracy", "grad_norm", "update_norm"):
        np.testing.assert_array_equal(getattr(one.metrics, name)[0], getattr(four.metrics, name)[0])
        np.testing.assert_array_equal(getattr(three.metrics, name)[2], getattr(four.metrics, name)[2])
    for a, b in zip(leaves(one.params), leaves(four.params)):
        np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(one.probes["w0"][0], four.probes["w0"][0])
    assert one.metrics.loss.shape == (1, 24) and four.metrics.loss.shape == (4, 24)
    # members really differ from each other
    assert not np.array_equal(four.metrics.loss[0], four.metrics.loss[1])


def test_same_config_gives_identical_bits(four):
    again = train(TrainConfig(seeds=4, **SMALL), probe=batch_probe)
    for a, b in zip(
        leaves((four.params, four.metrics, four.probes)), leaves((again.params, again.metrics, again.probes))
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(four.test_accuracy, again.test_accuracy)


def test_vary_data_shares_init_and_vary_init_shares_minibatches(four):
    data = Ensemble(TrainConfig(seeds=3, vary="data", **SMALL))
    p = host_state(data.init(), 3).params
    for leaf in leaves(p):
        assert np.all(leaf == leaf[:1])
    init = train(TrainConfig(seeds=3, vary="init", **SMALL), probe=batch_probe)
    assert np.all(init.probes["y"] == init.probes["y"][:1])
    assert np.all(init.probes["xsum"] == init.probes["xsum"][:1])
    w0 = init.probes["w0"][:, 0]
    assert not np.array_equal(w0[0], w0[1])  # inits differ
    # vary=both: different minibatches and different inits
    assert not np.array_equal(four.probes["y"][0], four.probes["y"][1])
    assert not np.array_equal(four.probes["w0"][0, 0], four.probes["w0"][1, 0])


def test_member_keys_are_fold_in_of_the_member_id():
    ids = jnp.arange(5)
    init_keys, data_keys = member_keys(7, ids, "both")
    root = jax.random.PRNGKey(7)
    expected = jax.random.fold_in(jax.random.fold_in(root, 1), 3)
    np.testing.assert_array_equal(data_keys[3], expected)
    i2, d2 = member_keys(7, ids, "data")
    assert np.all(np.asarray(i2) == np.asarray(i2)[:1]) and len(np.unique(np.asarray(d2), axis=0)) == 5


def test_minibatches_are_without_replacement_within_an_epoch():
    cfg = TrainConfig(seeds=2, steps=1, chunk=1)
    ens = Ensemble(cfg)
    orders = ens.orders(0)
    assert orders.shape[1:] == (2, 60_000)
    for member in orders[:2]:
        for epoch in member:
            assert np.array_equal(np.sort(epoch), np.arange(60_000))
    assert not np.array_equal(orders[0, 0], orders[0, 1])  # a new order each epoch
    assert not np.array_equal(orders[0, 0], orders[1, 0])  # and each member


_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    from rvsp_jax.training.devices import use_host_devices
    use_host_devices()  # RVSP_JAX_HOST_DEVICES, before JAX starts (importing rvsp_jax does not)
    import numpy as np, jax
    from rvsp_jax.config import TrainConfig
    from rvsp_jax.training.ensemble import train
    out = {"devices": len(jax.devices())}
    for name, kwargs in json.loads(sys.argv[1]).items():
        r = train(TrainConfig(seeds=5, **kwargs))
        out[name] = {"loss": r.metrics.loss.tolist(),
                     "w": np.asarray(r.params["Dense_1"]["kernel"]).ravel().tolist()}
    print(json.dumps(out))
""")


def test_one_two_and_three_host_devices_agree():
    """SGD is bitwise equal on 1, 2 and 3 devices. Adam is bitwise equal on 2 and 3 devices and
    within float32 rounding (measured max |diff| 4.8e-7 on a loss of ~2.3) on one device: XLA
    compiles its elementwise square root and division differently for a single-device program."""
    configs = {"sgd": dict(SMALL, optimizer="sgd", lr=0.1, activation="sigmoid"), "adam": SMALL}
    results = {}
    for n in (1, 2, 3):
        env = dict(os.environ, RVSP_JAX_HOST_DEVICES=str(n))
        out = subprocess.run(
            [sys.executable, "-c", _DEVICE_SCRIPT, json.dumps(configs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        assert results[n]["devices"] == n
    for n in (2, 3):  # S=5 is padded on 2 and 3 devices, and the padding dropped
        assert np.array(results[n]["sgd"]["loss"]).shape == (5, 24)
        for key in ("loss", "w"):
            np.testing.assert_array_equal(results[n]["sgd"][key], results[1]["sgd"][key])
            np.testing.assert_array_equal(results[n]["adam"][key], results[2]["adam"][key])
            np.testing.assert_allclose(results[n]["adam"][key], results[1]["adam"][key], rtol=1e-6, atol=1e-6)


def test_diverging_member_is_frozen_and_the_others_unchanged(four):
    cfg = TrainConfig(seeds=4, **SMALL)
    ens = Ensemble(cfg)
    state = host_state(ens.init())
    blown = jax.tree_util.tree_map(np.array, state)
    blown.params["Dense_0"]["kernel"][1] *= 1e38  # member 1 overflows at its first step
    metrics, final = [], None
    for chunk in ens.chunks(ens.put_state(blown)):
        metrics.append(chunk.metrics.loss)
        final = host_state(chunk.state, 4)
    loss = np.concatenate(metrics, axis=1)
    assert final.diverged.tolist() == [False, True, False, False]
    assert final.diverged_at.tolist() == [-1, 0, -1, -1]
    assert np.all(np.isnan(loss[1, 1:]))
    keep = [0, 2, 3]
    np.testing.assert_array_equal(loss[keep], four.metrics.loss[keep])
    for a, b, start in zip(leaves(final.params), leaves(four.params), leaves(blown.params)):
        np.testing.assert_array_equal(a[keep], b[keep])
        np.testing.assert_array_equal(a[1], start[1])  # frozen where it diverged


def test_huge_learning_rate_marks_members_diverged():
    r = train(TrainConfig(seeds=3, steps=30, chunk=10, optimizer="sgd", lr=1e6, activation="relu"))
    assert r.diverged.all()
    assert np.all(r.diverged_at >= 0) and np.all(r.diverged_at < 30)
    for s, t in enumerate(r.diverged_at):
        assert np.all(np.isnan(r.metrics.loss[s, t + 1 :]))
    assert all(np.isfinite(leaf).all() for leaf in leaves(r.params))  # frozen before the overflow


@pytest.mark.parametrize(
    "kwargs, floor",
    [
        # measured on the full MNIST test set after one epoch of batch 32 (1,875 steps), members 0-7:
        # ReLU + Adam(3e-3): 0.9322 0.9288 0.9351 0.9313 0.9282 0.9378 0.9330 0.9275;
        # sigmoid + SGD(1.0): 0.9281 0.9210 0.9250 0.9165 0.9148 0.9273 0.9271 0.9194. Member 0 is tested.
        (dict(activation="relu", optimizer="adam", lr=3e-3), 0.93),
        (dict(activation="sigmoid", optimizer="sgd", lr=1.0), 0.92),
    ],
)
def test_one_epoch_on_full_mnist_reaches_measured_accuracy(kwargs, floor):
    r = train(TrainConfig(seeds=1, epochs=1, chunk=625, **kwargs))
    assert r.metrics.loss.shape == (1, 1875)
    assert r.test_accuracy[0] >= floor, r.test_accuracy


# ---- probe buffers: reused once released, never while a view of them is held ----------------------


def _address(parts):
    return [p.__array_interface__["data"][0] for p in parts.parts]


def test_released_probe_buffers_are_reused_and_held_ones_are_never_overwritten(four):
    cfg = TrainConfig(seeds=4, **{**SMALL, "steps": 64})  # 8 chunks of 8 steps
    ens = Ensemble(cfg, probe=batch_probe)
    # the caller copies each chunk and lets it go: later chunks are written into earlier buffers
    copies, addresses = [], []
    for chunk in ens.chunks(ens.init()):
        addresses.append(_address(chunk.probes["w0"]))
        copies.append(np.array(chunk.probes["w0"]))
        del chunk
    assert len({tuple(a) for a in addresses}) < len(addresses)
    # the caller keeps every chunk's views: nothing is reused, and every view keeps its values
    held = [chunk.probes["w0"] for chunk in ens.chunks(ens.init())]
    assert len({tuple(_address(h)) for h in held}) == len(held)
    for kept, copy in zip(held, copies):
        np.testing.assert_array_equal(np.asarray(kept), copy)
    # and both equal train() (which copies), the first 24 steps of which are `four`'s
    np.testing.assert_array_equal(np.concatenate(copies, axis=1)[:, :24], four.probes["w0"])
