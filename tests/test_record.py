"""Probes: index selection and names, the probe function against direct computation, and a recorded
run whose numbers are checked against each other (updates = parameter differences exactly,
activations = a fresh forward pass, summaries and norms recomputed from recorded values).

The recorded run is conftest's ``small_run`` (``SMALL`` with ``PROBES``), shared with the store,
integrity, reliability and command-line tests, so one compiled ensemble and one recording serve them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PROBES, SMALL

from rvsp_jax.config import TrainConfig
from rvsp_jax.data import load, to_model_inputs
from rvsp_jax.io.record import run
from rvsp_jax.training.ensemble import StepContext
from rvsp_jax.training.model import init_params, make_model
from rvsp_jax.training.probes import ProbeConfig, make_probe, param_shapes, probe_batch, select_parameters

SHAPES = {
    "Dense_0/bias": (16,),
    "Dense_0/kernel": (784, 16),
    "Dense_1/bias": (16,),
    "Dense_1/kernel": (16, 16),
    "Dense_2/bias": (10,),
    "Dense_2/kernel": (16, 10),
}


@pytest.fixture
def recorded(small_run):
    return small_run


def as_tree(flat: np.ndarray, shapes) -> dict:
    """Parameters ``{"Dense_0": {"kernel": ...}}`` from an ``index="all"`` vector ``[..., 13002]``."""
    tree, offset = {}, 0
    for name, shape in shapes.items():
        layer, leaf = name.split("/")
        size = int(np.prod(shape))
        tree.setdefault(layer, {})[leaf] = flat[..., offset : offset + size].reshape(*flat.shape[:-1], *shape)
        offset += size
    assert offset == flat.shape[-1]
    return tree


# ---- configuration and index selection ----------------------------------------------------------


def test_param_shapes_are_flax_leaf_order_of_the_13002_parameter_network():
    shapes = param_shapes(make_model(SMALL))
    assert shapes == SHAPES and list(shapes) == list(SHAPES)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 13_002


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(probes="params,weights"), "unknown probe kind"),
        (dict(probes="none,params"), "unknown probe kind"),
        (dict(every=0), "every must be an integer >= 1"),
        (dict(batch=0), "batch must be an integer >= 1"),
        (dict(index="some"), "cannot read the probe index"),
        (dict(index="Dense_0/kernel[1,x]"), "bad index"),
        (dict(index="Dense_0/kernel[1,2] junk"), "cannot read the probe index"),
        (dict(compress="lzma"), "unknown compression"),
    ],
)
def test_probe_config_rejects_bad_values_with_the_remedy(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ProbeConfig(**kwargs)


def test_probe_config_none_records_metrics_only_and_round_trips():
    assert ProbeConfig(probes="none").kinds == ()
    assert ProbeConfig.from_dict(PROBES.to_dict()) == PROBES


def test_k_per_array_is_a_seeded_draw_without_replacement():
    a = select_parameters("20", SHAPES, base_seed=0)
    sizes = {name: int(np.prod(s)) for name, s in SHAPES.items()}
    assert {n: len(v) for n, v in a.items()} == {n: min(20, s) for n, s in sizes.items()}
    for name, idx in a.items():
        assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < sizes[name]
    np.testing.assert_array_equal(a["Dense_0/kernel"], select_parameters("20", SHAPES, 0)["Dense_0/kernel"])
    assert not np.array_equal(a["Dense_0/kernel"], select_parameters("20", SHAPES, 1)["Dense_0/kernel"])
    assert select_parameters("20", SHAPES, 0)["Dense_2/bias"].tolist() == list(range(10))


def test_total_n_and_all_select_the_right_counts():
    total = select_parameters("total=1024", SHAPES, 3)
    assert sum(len(v) for v in total.values()) == 1024
    # uniform over all parameters: Dense_0/kernel holds 12544/13002 of them
    assert 900 < len(total["Dense_0/kernel"]) < 1024
    every = select_parameters("all", SHAPES, 3)
    assert all(np.array_equal(v, np.arange(np.prod(SHAPES[n]))) for n, v in every.items())
    with pytest.raises(ValueError, match="between 1 and the number of parameters"):
        select_parameters("total=20000", SHAPES, 0)


def test_explicit_names_select_exactly_those_entries_and_bad_names_are_refused():
    model, data = make_model(SMALL), load("mnist")
    probes = ProbeConfig(probes="updates", index="Dense_2/bias[7]; Dense_0/kernel[412, 3] Dense_0/kernel[0,15]")
    _, layout = make_probe(probes, model, data, SMALL)
    # storage order: by parameter array (flax order), then flat index
    assert layout.arrays["updates"] == ("Dense_0/kernel[0,15]", "Dense_0/kernel[412,3]", "Dense_2/bias[7]")
    assert layout.param_index["Dense_0/kernel"].tolist() == [15, 412 * 16 + 3]
    for spec, needle in [
        ("Dense_3/kernel[0,0]", "no parameter array 'Dense_3/kernel'"),
        ("Dense_0/kernel[784,0]", "out of range"),
        ("Dense_0/kernel[5]", "out of range"),
        ("Dense_0/bias[1] Dense_0/bias[1]", "listed twice"),
    ]:
        with pytest.raises(ValueError, match=needle):
            select_parameters(spec, SHAPES, 0)


def test_probe_batch_is_seeded_distinct_and_in_range():
    b = probe_batch(0, 10_000, 64)
    assert len(np.unique(b)) == 64 and b.min() >= 0 and b.max() < 10_000
    np.testing.assert_array_equal(b, probe_batch(0, 10_000, 64))
    assert not np.array_equal(b, probe_batch(1, 10_000, 64))
    with pytest.raises(ValueError, match="larger than the test split"):
        probe_batch(0, 10, 11)


def test_names_of_activation_and_summary_arrays():
    _, layout = make_probe(
        ProbeConfig(probes="activations,act_summary,weight_norms", batch=2), make_model(SMALL), load("mnist"), SMALL
    )
    pre = layout.arrays["activations/pre"]
    assert len(pre) == 2 * 32 and pre[0] == "Dense_0/pre[0,0]" and pre[17] == "Dense_0/pre[1,1]"
    assert pre[32] == "Dense_1/pre[0,0]" and layout.arrays["activations/post"][5] == "Dense_0/post[0,5]"
    assert layout.arrays["activations/summary"] == (
        "Dense_0/mean",
        "Dense_0/var",
        "Dense_0/saturated",
        "Dense_1/mean",
        "Dense_1/var",
        "Dense_1/saturated",
    )
    assert layout.arrays["weight_norms"][1] == "norm(Dense_0/kernel)"
    relu = TrainConfig(**{**SMALL.to_dict(), "activation": "relu", "widths": (16, 16)})
    _, layout = make_probe(ProbeConfig(probes="act_summary"), make_model(relu), load("mnist"), relu)
    assert layout.arrays["activations/summary"][:4] == ("Dense_0/mean", "Dense_0/var", "Dense_0/zero", "Dense_0/dead")


# ---- the probe function on one member -----------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_probe_function_equals_direct_numpy_computation(activation):
    config = TrainConfig(**{**SMALL.to_dict(), "activation": activation, "widths": (16, 16)})
    model, data = make_model(config), load("mnist")
    probes = ProbeConfig(probes="params,updates,grads,weight_norms,activations,act_summary", index="7", batch=5)
    probe, layout = make_probe(probes, model, data, config)
    params = init_params(model, jax.random.PRNGKey(3))
    # push some units into saturation / death so the summaries are not trivially 0
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[:4].set(-8.0).at[4:6].set(8.0)
    noise = jax.tree_util.tree_map(lambda p: 1e-3 * jnp.ones_like(p), params)
    new_params = jax.tree_util.tree_map(jnp.add, params, noise)
    grads = jax.tree_util.tree_map(lambda p: 2.0 * p, params)
    out = jax.jit(probe)(StepContext(params, new_params, grads, jnp.zeros((4, 784)), jnp.zeros(4)))
    flat = {name: np.asarray(params[name.split("/")[0]][name.split("/")[1]]).reshape(-1) for name in SHAPES}
    flat_new = {name: np.asarray(new_params[name.split("/")[0]][name.split("/")[1]]).reshape(-1) for name in SHAPES}
    want = np.concatenate([flat[n][idx] for n, idx in layout.param_index.items()])
    want_new = np.concatenate([flat_new[n][idx] for n, idx in layout.param_index.items()])
    np.testing.assert_array_equal(out["params"], want)
    np.testing.assert_array_equal(out["updates"], want_new - want)  # float32 difference, exact
    np.testing.assert_array_equal(out["grads"], 2 * want)
    np.testing.assert_allclose(
        out["weight_norms"], [np.linalg.norm(flat[n].astype(np.float64)) for n in SHAPES], rtol=1e-6
    )
    x = to_model_inputs(data.test_images[layout.probe_batch])
    fwd = model.apply({"params": params}, x)
    np.testing.assert_allclose(
        out["activations/pre"], np.concatenate([np.ravel(z) for z in fwd.pre]), rtol=1e-6, atol=1e-6
    )
    y = [np.asarray(v, np.float64) for v in fwd.post]
    stats = []
    for v in y:
        stats += [v.mean(), v.var()]
        if activation == "sigmoid":
            stats.append(np.mean((v < 0.05) | (v > 0.95)))
        elif activation == "tanh":
            stats.append(np.mean(np.abs(v) > 0.9))
        else:
            stats += [np.mean(v == 0), np.mean(np.all(v == 0, axis=0))]
    np.testing.assert_allclose(out["activations/summary"], stats, rtol=1e-5, atol=1e-6)
    saturated = np.asarray(out["activations/summary"])[2]
    assert saturated >= 6 / 16 - 1e-6  # the 6 pushed units are saturated (sigmoid/tanh) or 4 dead (relu)


# ---- a recorded run -----------------------------------------------------------------------------


def test_recorded_run_has_the_declared_arrays_and_shapes(recorded):
    assert recorded.complete and recorded.steps_completed == 30
    assert recorded["metrics/loss"].shape == (3, 30)
    assert recorded["params"].shape == (3, 30, 13_002) and recorded["activations/pre"].shape == (3, 30, 8 * 32)
    np.testing.assert_array_equal(recorded.steps, np.arange(30))
    for name in recorded.arrays:
        assert np.all(np.isfinite(recorded[name][:])), name
    assert recorded.probe_names["updates"][:2] == ("Dense_0/bias[0]", "Dense_0/bias[1]")


def test_updates_equal_differences_of_recorded_parameters_exactly(recorded):
    params, updates = recorded["params"][:], recorded["updates"][:]
    np.testing.assert_array_equal(updates[:, :-1], params[:, 1:] - params[:, :-1])
    final = np.concatenate(
        [recorded.final().params[n.split("/")[0]][n.split("/")[1]].reshape(3, -1) for n in SHAPES], axis=1
    )
    np.testing.assert_array_equal(updates[:, -1], final - params[:, -1])
    assert np.all(np.abs(updates).max(axis=2) > 0)  # every member moved at every step


def test_step_norms_agree_with_recorded_updates_and_gradients(recorded):
    updates, grads = recorded["updates"][:].astype(np.float64), recorded["grads"][:].astype(np.float64)
    np.testing.assert_allclose(recorded["metrics/update_norm"][:], np.linalg.norm(updates, axis=2), rtol=1e-5)
    np.testing.assert_allclose(recorded["metrics/grad_norm"][:], np.linalg.norm(grads, axis=2), rtol=1e-5)
    # plain SGD: the update is -lr * grad up to float32 rounding of -lr * g (spacing of u) and of
    # theta + u (spacing of theta)
    params, u32 = recorded["params"][:], recorded["updates"][:, :-1]
    bound = np.spacing(np.maximum(np.abs(params[:, :-1]), np.abs(params[:, 1:]))).astype(np.float64) + 2 * np.spacing(
        np.abs(u32)
    )
    error = np.abs(updates[:, :-1] - (-SMALL.lr * grads[:, :-1]))
    assert np.all(error <= bound + 1e-12), (error - bound).max()


def test_weight_norms_equal_norms_of_recorded_parameters(recorded):
    tree = as_tree(recorded["params"][:].astype(np.float64), SHAPES)
    norms = np.stack(
        [np.linalg.norm(tree[n.split("/")[0]][n.split("/")[1]].reshape(3, 30, -1), axis=2) for n in SHAPES], axis=2
    )
    np.testing.assert_allclose(recorded["weight_norms"][:], norms, rtol=1e-6)


def test_activations_equal_a_fresh_forward_pass_of_recorded_parameters(recorded):
    """Float32 tolerance: measured max |difference| 8.3e-7 for pre-activations (|z| <= 1.9) and
    1.5e-7 for post-activations (different summation order inside the compiled, vmapped step)."""
    model, data = make_model(SMALL), load("mnist")
    x = to_model_inputs(data.test_images[recorded.layout.probe_batch])
    np.testing.assert_array_equal(recorded.layout.probe_batch, probe_batch(SMALL.base_seed, 10_000, 8))
    params = as_tree(recorded["params"][:], SHAPES)
    fwd = jax.vmap(jax.vmap(lambda p: model.apply({"params": p}, x)))(params)  # [S, T, B, h]
    pre = np.concatenate([np.asarray(z).reshape(3, 30, -1) for z in fwd.pre], axis=2)
    post = np.concatenate([np.asarray(y).reshape(3, 30, -1) for y in fwd.post], axis=2)
    np.testing.assert_allclose(recorded["activations/pre"][:], pre, rtol=0, atol=4e-6)
    np.testing.assert_allclose(recorded["activations/post"][:], post, rtol=0, atol=1e-6)


def test_activation_summary_recomputed_from_recorded_activations(recorded):
    post = recorded["activations/post"][:].astype(np.float64).reshape(3, 30, 2, 8, 16)
    want = np.stack(
        [post.mean(axis=(3, 4)), post.var(axis=(3, 4)), ((post < 0.05) | (post > 0.95)).mean(axis=(3, 4))], axis=3
    ).reshape(3, 30, 6)
    np.testing.assert_allclose(recorded["activations/summary"][:], want, rtol=1e-5, atol=1e-7)


def test_probe_every_records_the_same_parameters_at_every_nth_step(recorded, tmp_path):
    sparse = run(SMALL, ProbeConfig(probes="params", index="all", every=3), tmp_path / "every3", progress=False)
    np.testing.assert_array_equal(sparse.steps, np.arange(0, 30, 3))
    assert sparse["params"].shape == (3, 10, 13_002)
    np.testing.assert_array_equal(sparse["params"][:], recorded["params"][:, ::3])
    np.testing.assert_array_equal(sparse["metrics/loss"][:], recorded["metrics/loss"][:])
