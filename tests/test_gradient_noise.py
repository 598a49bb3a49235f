"""rvsp_jax.analysis.gradient_noise: minibatch indices over epoch boundaries, flat parameter order, per-example
gradients against the analytic softmax gradient of the last layer, noise and noise scale against
direct per-example computation. (That rebuilt minibatch gradients reproduce the trainer's recorded
ones, across an epoch boundary, is tested on the noise study's recording in test_study_noise.py, so
that one compiled training run serves both.)"""

import jax
import jax.flatten_util
import numpy as np
import pytest

from rvsp_jax.analysis import gradient_noise_scale
from rvsp_jax.analysis.gradient_noise import inputs, make_noise_fn, minibatch_indices, reference_subset, unravel_fn
from rvsp_jax.config import TrainConfig
from rvsp_jax.data import Dataset, to_model_inputs
from rvsp_jax.training.ensemble import Ensemble
from rvsp_jax.training.model import init_params, loss_and_accuracy, make_model
from rvsp_jax.training.probes import ProbeConfig, make_probe

N_TRAIN = 96  # 3 minibatches of 32 per epoch
CONFIG = TrainConfig(seeds=3, steps=8, chunk=4, block=2)
PROBES = ProbeConfig(probes="params,grads", index="all", batch=4)


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)

    def images(n):  # sparse like MNIST: 70% of the pixels are 0
        return (rng.integers(0, 256, (n, 28, 28)) * (rng.random((n, 28, 28)) < 0.3)).astype(np.uint8)

    return Dataset(
        images(N_TRAIN),
        rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        images(8),
        rng.integers(0, 10, 8, dtype=np.uint8),
        "mnist",
        "synthetic",
    )


def test_minibatch_indices_cover_an_epoch_once_and_continue_into_the_next(tiny_data):
    ens = Ensemble(CONFIG, tiny_data)
    spanning = minibatch_indices(ens, 2, 3)  # steps 2 (epoch 0), 3 and 4 (epoch 1)
    assert spanning.shape == (3, 3, 32)
    for k, t in enumerate((2, 3, 4)):
        np.testing.assert_array_equal(spanning[:, k], minibatch_indices(ens, t)[:, 0])
    epoch1 = minibatch_indices(ens, 3, 3).reshape(3, -1)
    for s in range(3):
        np.testing.assert_array_equal(np.sort(epoch1[s]), np.arange(N_TRAIN))
    assert not np.array_equal(epoch1[0], epoch1[1])  # vary=both: members draw their own orders
    with pytest.raises(ValueError, match="steps per epoch"):
        minibatch_indices(ens, 0, 4)


def test_unravel_matches_the_recorded_parameter_names(tiny_data):
    model = make_model(CONFIG)
    unravel = unravel_fn(model)
    names = make_probe(PROBES, model, tiny_data, CONFIG)[1].arrays["params"]
    flat = np.arange(len(names), dtype=np.float32)
    tree = unravel(flat)
    for j in (0, 5, 17, 412 * 16 + 3 + 16, len(names) - 1):
        layer, rest = names[j].split("/")
        leaf, idx = rest[:-1].split("[")
        assert tree[layer][leaf][tuple(int(i) for i in idx.split(","))] == j


def test_reference_gradient_of_the_last_layer_is_the_softmax_residual(tiny_data):
    """Known answer: d loss / d bias_2 = softmax(logits) - onehot(y), d / d kernel_2 = h2 outer that."""
    data = tiny_data
    model = make_model(CONFIG)
    params = init_params(model, jax.random.PRNGKey(3))
    ref = reference_subset(data.train_labels.shape[0], 12, 0)
    x, y = inputs(data.train_images[ref]), data.train_labels[ref]
    batches = inputs(data.train_images[:36]).reshape(3, 12, 784), data.train_labels[:36].reshape(3, 12)
    out = make_noise_fn(model)(params, *batches, x, y)

    fwd = model.apply({"params": params}, x)
    residual = np.asarray(jax.nn.softmax(fwd.logits)) - np.eye(10)[y]  # [n, 10]
    h2 = np.asarray(fwd.post[-1])  # [n, 16]
    tree = unravel_fn(model)(np.asarray(out.reference_grad))
    np.testing.assert_allclose(tree["Dense_2"]["bias"], residual.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tree["Dense_2"]["kernel"], h2.T @ residual / len(y), rtol=1e-5, atol=1e-7)

    # noise = minibatch gradient - reference gradient, each from jax.grad directly
    grad = jax.jit(
        lambda xb, yb: jax.flatten_util.ravel_pytree(
            jax.grad(lambda p: loss_and_accuracy(model, p, xb, yb)[0])(params)
        )[0]
    )
    for m in range(3):
        direct = np.asarray(grad(batches[0][m], batches[1][m]) - grad(x, y))
        np.testing.assert_allclose(np.asarray(out.noise[m]), direct, rtol=1e-4, atol=1e-6)
        g = np.asarray(grad(batches[0][m], batches[1][m]))
        assert np.isclose(out.minibatch_sq_norms[m], np.sum(g**2), rtol=1e-5)
    # B_simple from per-example gradients taken one at a time
    per_example = np.stack([np.asarray(grad(x[i : i + 1], y[i : i + 1])) for i in range(len(y))])
    expected = gradient_noise_scale(per_example)
    np.testing.assert_allclose(out.scale.trace_sigma, expected.trace_sigma, rtol=1e-4)
    np.testing.assert_allclose(out.scale.grad_sq, expected.grad_sq, rtol=1e-3)
    np.testing.assert_allclose(out.scale.b_simple, expected.b_simple, rtol=1e-3)


def test_inputs_scale_as_the_trainer_and_reference_subset_is_a_fixed_draw():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = inputs(images)
    assert x.shape == (1, 256) and x.dtype == np.float32
    assert x[0, 0] == 0 and x[0, 255] == np.float32(255) * np.float32(1 / 255)
    np.testing.assert_allclose(x, to_model_inputs(images), rtol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        inputs(images.astype(np.float32))

    a = reference_subset(60_000, 100, 7)
    assert np.array_equal(a, reference_subset(60_000, 100, 7)) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, reference_subset(60_000, 100, 8))
    with pytest.raises(ValueError, match="reference subset"):
        reference_subset(100, 101, 0)
