"""Optimizer filter theory (rvsp_jax.analysis.optimizer_filters) against the real optax optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import signal

from rvsp_jax.analysis.optimizer_filters import (
    ema_transfer,
    momentum_transfer,
    nesterov_transfer,
    predicted_update_psd,
)

LR, BETA = 0.1, 0.9


def run_optimizer(tx, grads):
    """Feed ``grads: [T, S]`` as the gradients of S independent scalar parameters; updates ``[S, T]``."""
    params = jnp.zeros(grads.shape[1], grads.dtype)

    def step(state, g):
        update, state = tx.update(g, state, params)
        return state, update

    _, updates = jax.lax.scan(step, tx.init(params), grads)
    return np.asarray(updates, dtype=np.float64).T


# ---------------------------------------------------------------------------------------------------
# Exact check: the squared DFT of the optimizer's impulse response is the power gain.

TRANSFORMS = {
    "momentum": (lambda: optax.sgd(LR, momentum=BETA), lambda f: momentum_transfer(f, BETA, LR)),
    "nesterov": (lambda: optax.sgd(LR, momentum=BETA, nesterov=True), lambda f: nesterov_transfer(f, BETA, LR)),
    "ema": (lambda: optax.ema(BETA, debias=False), lambda f: ema_transfer(f, BETA)),
    "plain_sgd": (lambda: optax.sgd(LR), lambda f: momentum_transfer(f, 0.0, LR)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_gain_equals_impulse_response_spectrum(name):
    make_tx, gain = TRANSFORMS[name]
    n = 1024  # beta^1024 ~ 1e-47: the truncated impulse response is exact in float32
    impulse = np.zeros((n, 1), np.float32)
    impulse[0] = 1.0
    h = run_optimizer(make_tx(), jnp.asarray(impulse))[0]
    freqs = np.fft.rfftfreq(n)
    measured = np.abs(np.fft.rfft(h)) ** 2
    np.testing.assert_allclose(np.asarray(gain(freqs)), measured, rtol=1e-4)


def test_gains_known_values_and_stability_near_one():
    # f = 0: 1/(1-beta)^2 (momentum, nesterov: ((1+b)-b)^2 = 1 too), 1 (EMA); f = 1/2: 1/(1+beta)^2,
    # (1+2beta)^2/(1+beta)^2, (1-beta)^2/(1+beta)^2. Hand-derived from |a - b e^{-iw}|^2/|1 - p e^{-iw}|^2.
    f = np.array([0.0, 0.5])
    np.testing.assert_allclose(momentum_transfer(f, 0.5), [4.0, 1 / 2.25], rtol=1e-6)
    np.testing.assert_allclose(nesterov_transfer(f, 0.5), [4.0, 4 / 2.25], rtol=1e-6)
    np.testing.assert_allclose(ema_transfer(f, 0.5, lr=2.0), [4.0, 4 * 0.25 / 2.25], rtol=1e-6)
    # beta = 0.9999 in float32: the naive 1 - 2b cos w + b^2 loses every digit at f = 0.
    np.testing.assert_allclose(momentum_transfer(np.float32(0.0), np.float32(0.9999)), 1e8, rtol=1e-3)
    # frequency scaling: gains depend on f / fs only
    np.testing.assert_allclose(
        momentum_transfer(np.array([5.0]), BETA, fs=40.0), momentum_transfer(np.array([0.125]), BETA), rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------------
# Statistical check: white gradient noise through the real optimizers, Welch PSD averaged over series.

S, T, BURN, NPERSEG = 256, 4096, 1000, 256


@pytest.fixture(scope="module")
def white_grads():
    return np.random.default_rng(0).standard_normal((T, S)).astype(np.float32)


def _welch_mean(x):
    freqs, psd = signal.welch(x, nperseg=NPERSEG)
    return freqs, psd.mean(axis=0)


@pytest.mark.parametrize(
    "kind, make_tx",
    [
        ("momentum", lambda: optax.sgd(LR, momentum=BETA)),
        ("nesterov", lambda: optax.sgd(LR, momentum=BETA, nesterov=True)),
        # Adam is checked in the regime where the approximation holds: mean-zero white g of unit
        # variance and the default b2 = 0.999, so after the burn-in vhat ~ E[g^2] = 1 to within ~3%
        # and the update is the b1-EMA of g scaled by lr / sqrt(E[g^2]).
        ("adam", lambda: optax.adam(LR, b1=BETA)),
    ],
)
def test_update_psd_matches_prediction_for_white_gradients(white_grads, kind, make_tx):
    updates = run_optimizer(make_tx(), jnp.asarray(white_grads))[:, BURN:]
    grads = white_grads.T[:, BURN:].astype(np.float64)
    freqs, update_psd = _welch_mean(updates)
    _, grad_psd = _welch_mean(grads)
    extra = {"grad_second_moment": np.mean(grads**2)} if kind == "adam" else {}
    pred = np.asarray(predicted_update_psd(freqs, grad_psd, BETA, LR, kind=kind, **extra), np.float64)
    rel = np.abs(update_psd / pred - 1.0)[1:]  # f = 0 bin: Welch's detrend removes it
    # Measured: median 0.02% (momentum, nesterov), 0.22% (adam); worst bin 3.5-3.8%, at the lowest
    # nonzero frequency, where the Hann window leaks the 1/(1-beta)^2 peak.
    assert np.median(rel) < 0.01
    assert rel.max() < 0.06
    # against the analytic white-noise PSD (one-sided density 2 sigma^2; DC and Nyquist are
    # not doubled by scipy): sampling noise of ~S*T/NPERSEG segments; measured median 0.9-1.0%.
    white = np.where((freqs == 0) | (freqs == 0.5), 1.0, 2.0)
    pred_white = np.asarray(predicted_update_psd(freqs, white, BETA, LR, kind=kind, **extra), np.float64)
    assert np.median(np.abs(update_psd / pred_white - 1.0)[1:]) < 0.03


def test_wrong_filter_is_rejected(white_grads):
    # Negative control: the heavy-ball prediction does not fit Nesterov's updates (ratio 1+4b(1+b)sin^2).
    updates = run_optimizer(optax.sgd(LR, momentum=BETA, nesterov=True), jnp.asarray(white_grads))[:, BURN:]
    freqs, update_psd = _welch_mean(updates)
    _, grad_psd = _welch_mean(white_grads.T[:, BURN:].astype(np.float64))
    wrong = np.asarray(predicted_update_psd(freqs, grad_psd, BETA, LR, kind="momentum"), np.float64)
    assert np.median(np.abs(update_psd / wrong - 1.0)[1:]) > 1.0


def test_predicted_update_psd_batches_and_validates():
    freqs = np.linspace(0, 0.5, 9)
    psd = np.random.default_rng(1).uniform(1, 2, size=(2, 3, 9))
    out = predicted_update_psd(freqs, psd, 0.5, 0.1)
    assert out.shape == (2, 3, 9)
    np.testing.assert_allclose(out, momentum_transfer(freqs, 0.5, 0.1) * psd, rtol=1e-6)
    m2 = np.array([[1.0, 2.0, 4.0]] * 2)
    adam = predicted_update_psd(freqs, psd, 0.5, 0.1, kind="adam", grad_second_moment=m2)
    np.testing.assert_allclose(adam, ema_transfer(freqs, 0.5, 0.1) * psd / m2[..., None], rtol=1e-6)
    with pytest.raises(ValueError, match="grad_second_moment"):
        predicted_update_psd(freqs, psd, 0.5, kind="adam")
    with pytest.raises(ValueError, match="kind must be"):
        predicted_update_psd(freqs, psd, 0.5, kind="rmsprop")
    with pytest.raises(ValueError, match=r"\[\.\.\., F\]"):
        predicted_update_psd(freqs, psd[..., :4], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        momentum_transfer(freqs, 1.0)
    with pytest.raises(ValueError, match="fs"):
        ema_transfer(freqs, 0.5, fs=0.0)
