"""The split ensemble: the pure step of one member, called without a mesh, reproduces the ensemble's
member s bit for bit; the host orders and the key derivation are the ensemble's; a TrainResult and a
recorded Run of the same configuration read the same with the same names."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PROBES, SMALL

from rvsp_jax.config import TrainConfig
from rvsp_jax.data import load
from rvsp_jax.training import orders, step
from rvsp_jax.training.ensemble import Ensemble, TrainResult, host_state, train
from rvsp_jax.training.model import make_model
from rvsp_jax.training.probes import make_probe


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def member(tree, s):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[s], tree)


def _one_member(ens, s, looped):
    """Member s trained by the pure step alone, on the default device (no mesh, no shard_map): its
    state and orders taken from the ensemble, the step vmapped over a block of ``config.block``
    copies of it (how the schedule computes every member; a lane does not depend on its
    neighbours), the steps scanned (or looped over in Python)."""
    cfg = ens.config
    state = member(host_state(ens.init()), s)
    block = jax.tree_util.tree_map(lambda a: np.repeat(a[None], cfg.block, axis=0), state)
    images = jnp.asarray(ens.dataset.train_images.reshape(ens.n_train, -1))
    labels = jnp.asarray(ens.dataset.train_labels)
    fn = jax.vmap(
        functools.partial(step.member_minibatch_step, ens.model, ens.tx, cfg.batch_size),
        in_axes=(0, 0, None, None, None, None, None),
    )
    order = np.repeat(ens.orders(0)[s, 0][None], cfg.block, axis=0)
    t = np.arange(ens.total_steps, dtype=np.int32)
    assert ens.total_steps <= ens.steps_per_epoch
    if looped:
        jfn, losses = jax.jit(fn), []
        for i in t:
            block, metrics, _ = jfn(block, order, i, i, True, images, labels)
            losses.append(np.asarray(metrics.loss))
        return member(block, 0), np.stack(losses, axis=1)[0]

    @jax.jit
    def scanned(block):
        def body(st, i):
            st, metrics, _ = fn(st, order, i, i, True, images, labels)
            return st, metrics.loss

        return jax.lax.scan(body, block, t)

    block, losses = scanned(block)
    return member(block, 0), np.asarray(losses)[:, 0]


@pytest.mark.parametrize("looped", [False, True])
@pytest.mark.parametrize(
    "kwargs, devices",
    [
        (dict(optimizer="sgd", lr=0.1, activation="sigmoid"), None),  # SGD: any device count
        # Adam compiles differently for a single-device program (tests/test_ensemble.py): compared with
        # the ensemble on one device
        (dict(optimizer="adam", lr=1e-3, activation="relu"), 1),
    ],
)
def test_pure_step_on_one_member_equals_ensemble_member_bit_for_bit(kwargs, devices, looped):
    cfg = TrainConfig(seeds=3, steps=12, chunk=6, block=2, **kwargs)
    devs = None if devices is None else jax.devices()[:devices]
    ens = Ensemble(cfg, devices=devs)
    result = train(cfg, ens.dataset, devices=devs)
    s = 2
    final, losses = _one_member(ens, s, looped)
    np.testing.assert_array_equal(losses, result.metrics.loss[s])
    for a, b in zip(leaves(final.params), leaves(result.params)):
        np.testing.assert_array_equal(a, b[s])
    assert not final.diverged and final.diverged_at == -1


def test_member_step_unbatched_on_one_member():
    """``member_step`` called on one member as it is (no block, no vmap): shapes as documented, the
    ensemble's first step to float32 rounding (an unbatched dot is another XLA kernel), a probe that
    sees the step's context, and a non-finite member frozen and marked."""
    cfg = TrainConfig(seeds=2, steps=4, chunk=4, block=2)
    probe = lambda ctx: {"w": ctx.new_params["Dense_0"]["kernel"][0, :3], "y": ctx.y}  # noqa: E731
    ens = Ensemble(cfg, probe=probe)
    chunk = next(ens.chunks(ens.init()))
    state = member(host_state(ens.init()), 1)
    x, y = step.minibatch(
        jnp.asarray(ens.orders(0)[1, 0]),
        0,
        jnp.asarray(ens.dataset.train_images.reshape(ens.n_train, -1)),
        jnp.asarray(ens.dataset.train_labels),
        cfg.batch_size,
    )
    assert x.shape == (cfg.batch_size, 784) and x.dtype == jnp.float32 and y.shape == (cfg.batch_size,)
    new, metrics, probes = jax.jit(ens.step, static_argnames="probe")(state, x, y, 0, probe=True)
    assert all(np.shape(v) == () for v in metrics)
    np.testing.assert_allclose(float(metrics.loss), chunk.metrics.loss[1, 0], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(probes["y"]), np.asarray(chunk.probes["y"])[1, 0])
    np.testing.assert_allclose(np.asarray(probes["w"]), np.asarray(chunk.probes["w"])[1, 0], rtol=1e-5)
    blown = state._replace(params=jax.tree_util.tree_map(lambda a: a * np.float32(1e38), state.params))
    frozen, metrics, _ = step.member_step(ens.model, ens.tx, blown, x, y, jnp.int32(7))
    assert bool(frozen.diverged) and int(frozen.diverged_at) == 7
    for a, b in zip(leaves(frozen.params), leaves(blown.params)):
        np.testing.assert_array_equal(a, b)


def test_orders_module_is_the_ensembles_orders():
    ens = Ensemble(TrainConfig(seeds=3, steps=1, chunk=1, vary="both"))
    got = ens.orders(2)
    for s in range(3):
        np.testing.assert_array_equal(got[s, 0], orders.epoch_order(ens._data_keys[s], 2, ens.n_train))
        np.testing.assert_array_equal(got[s, 1], orders.epoch_order(ens._data_keys[s], 3, ens.n_train))
    np.testing.assert_array_equal(got, orders.orders(ens._data_keys, 2, ens.n_train))


def test_minibatch_is_the_slice_of_the_order_scaled_to_one():
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 4)
    labels = np.arange(10, dtype=np.int32)
    order = np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7], np.int32)
    x, y = step.minibatch(jnp.asarray(order), 1, jnp.asarray(images), jnp.asarray(labels), 3)
    np.testing.assert_array_equal(np.asarray(y), [0, 5, 9])
    np.testing.assert_array_equal(np.asarray(x), images[[0, 5, 9]].astype(np.float32) * (1.0 / 255.0))


def test_train_result_reads_with_the_names_of_the_recorded_run(small_run):
    """``train`` and ``record.run`` of one configuration and probes: the same values under the same
    names (final(), metrics, result[name], series, steps, members, grid, groups, hyperparams)."""
    data = load(SMALL.dataset, data_dir=SMALL.data_dir)
    probe, layout = make_probe(PROBES, make_model(SMALL), data, SMALL)
    result = train(SMALL, data, probe=probe, probe_every=PROBES.every)
    run = small_run
    assert set(run.arrays) <= set(result.arrays)
    for name in run.arrays:
        np.testing.assert_array_equal(np.asarray(result[name]), run[name][:], err_msg=name)
    for name in ("loss", "metrics/grad_norm", "updates"):
        np.testing.assert_array_equal(result.series(name), run.series(name), err_msg=name)
    np.testing.assert_array_equal(
        result.series("updates", entries=[0, 5], members=[2, 0]), run.series("updates", entries=[0, 5], members=[2, 0])
    )
    for a, b in zip(result.metrics, run.metrics):
        np.testing.assert_array_equal(a, b)
    fa, fb = result.final(), run.final()
    assert type(fa) is type(fb) and fa._fields == fb._fields
    for a, b in zip(leaves(fa), leaves(fb)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(result.diverged, run.diverged)
    for name in ("steps", "metric_steps", "members"):
        np.testing.assert_array_equal(getattr(result, name), getattr(run, name), err_msg=name)
    assert result.steps_completed == run.steps_completed and result.complete and run.complete
    assert result.grid == run.grid and result.points() == [result] and result.point(0) is result
    assert {g: m.tolist() for g, m in result.groups.items()} == {g: m.tolist() for g, m in run.groups.items()}
    assert {k: v.tolist() for k, v in result.hyperparams().items()} == {
        k: v.tolist() for k, v in run.hyperparams().items()
    }
    # the old field names are still there
    assert result.test_loss is fa.test_loss and result.params is fa.params
    with pytest.raises(KeyError, match="no array"):
        result["nothing"]


class _SweepConfig:
    """Stands in for a TrainConfig with a 2-point sweep of 2 seeds (what TrainResult reads of it)."""

    seeds = 2

    def grid(self):
        return [{"lr": 0.1}, {"lr": 0.2}]

    def grid_hyperparams(self):
        return {"learning_rate": [0.1, 0.2]}

    def point(self, g):
        return ("point", g)


def test_train_result_grid_points_are_the_members_of_each_point():
    s, t = 4, 6
    metrics = step.StepMetrics(*(np.arange(s * t, dtype=np.float32).reshape(s, t) + k for k in range(4)))
    result = TrainResult(
        _SweepConfig(),
        {"w": np.arange(s * 3.0).reshape(s, 3)},
        metrics,
        {"updates": np.zeros((s, 3, 5))},
        np.arange(s, dtype=np.float32),
        np.ones(s, np.float32),
        np.zeros(s, bool),
        np.full(s, -1),
        0.0,
        probe_every=2,
    )
    assert result.grid == [{"lr": 0.1}, {"lr": 0.2}]
    assert {g: m.tolist() for g, m in result.groups.items()} == {0: [0, 1], 1: [2, 3]}
    assert result.hyperparams()["learning_rate"].tolist() == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert result.steps.tolist() == [0, 2, 4] and result.metric_steps.tolist() == list(range(t))
    second = result.point(1)
    assert second.config == ("point", 1) and second.members.tolist() == [0, 1]
    np.testing.assert_array_equal(second.metrics.loss, metrics.loss[2:])
    np.testing.assert_array_equal(second.params["w"], result.params["w"][2:])
    np.testing.assert_array_equal(second.test_loss, [2, 3])
    assert second["updates"].shape == (2, 3, 5) and len(result.points()) == 2
    with pytest.raises(IndexError):
        result.point(2)
