"""Pixel statistics and minibatch-stream numerics (rvsp_jax.analysis.pixels) against numpy/scipy and
exact answers: moments and covariance vs numpy.cov, PCA vs the SVD of the centred data, sampling
moments vs scipy.stats.hypergeom and a Monte Carlo over random permutations."""

import numpy as np
import pytest
from scipy import stats

from rvsp_jax.analysis import pixels as px


def random_images(n=300, h=5, w=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    x[:, 0, 0] = 0  # one constant pixel, as MNIST's borders
    x[:, 1, :] = x[:, 2, :] // 2 + rng.integers(0, 60, size=(n, w), dtype=np.uint8)  # correlated rows
    return x


def test_pixel_moments_equal_numpy_on_scaled_images():
    x = random_images()
    m = px.pixel_moments(x)
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(m.mean, ref.mean(0), rtol=1e-13)
    np.testing.assert_allclose(m.var, ref.var(0), rtol=1e-12, atol=1e-16)
    assert m.var[0, 0] == 0 and m.n == 300


def test_pixel_moments_stream_in_blocks(monkeypatch):
    x = random_images(n=1000)
    whole = px.pixel_moments(x)
    monkeypatch.setattr(px, "_ROWS", 64)  # 16 blocks
    blocked = px.pixel_moments(x)
    np.testing.assert_allclose(blocked.mean, whole.mean, rtol=1e-15)
    np.testing.assert_allclose(blocked.var, whole.var, rtol=1e-13)
    np.testing.assert_allclose(
        px.pixel_covariance(x), np.cov(x.reshape(1000, -1) / 255, rowvar=False), rtol=1e-10, atol=1e-15
    )


@pytest.mark.parametrize("ddof", [0, 1])
def test_pixel_covariance_equals_numpy_cov(ddof):
    x = random_images()
    ref = np.cov(x.reshape(len(x), -1) / 255.0, rowvar=False, ddof=ddof)
    np.testing.assert_allclose(px.pixel_covariance(x, ddof=ddof), ref, rtol=1e-10, atol=1e-15)


def test_correlation_matrix_equals_corrcoef_and_blanks_constant_pixels():
    x = random_images()
    corr = px.correlation_matrix(px.pixel_covariance(x))
    flat = x.reshape(len(x), -1) / 255.0
    keep = flat.std(0) > 0
    np.testing.assert_allclose(
        corr[np.ix_(keep, keep)], np.corrcoef(flat[:, keep], rowvar=False), rtol=1e-10, atol=1e-12
    )
    assert np.isnan(corr[0]).all() and np.isnan(corr[:, 0]).all()  # pixel (0, 0) is constant


def test_pca_spectrum_equals_the_svd_of_the_centred_data():
    x = random_images()
    flat = x.reshape(len(x), -1) / 255.0
    sing = np.linalg.svd(flat - flat.mean(0), compute_uv=False)
    pca = px.pca_spectrum(px.pixel_covariance(x))
    np.testing.assert_allclose(pca.eigenvalues, sing**2 / (len(x) - 1), rtol=1e-9, atol=1e-14)
    assert np.all(np.diff(pca.eigenvalues) <= 0)
    np.testing.assert_allclose(pca.explained.sum(), 1.0, rtol=1e-12)
    # components are unit eigenvectors: C v = l v
    cov = px.pixel_covariance(x)
    v, l = pca.components[0], pca.eigenvalues[0]
    np.testing.assert_allclose(cov @ v, l * v, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(pca.components, axis=1), 1.0, rtol=1e-12)


def test_participation_ratio_of_known_spectra():
    d = 7
    assert px.pca_spectrum(np.eye(d)).participation_ratio == pytest.approx(d)
    u = np.arange(1.0, d + 1)
    assert px.pca_spectrum(np.outer(u, u)).participation_ratio == pytest.approx(1.0)
    # eigenvalues 3, 1: (4)^2 / (9 + 1) = 1.6
    assert px.pca_spectrum(np.diag([1.0, 3.0])).participation_ratio == pytest.approx(1.6)


def test_components_for():
    explained = np.array([0.5, 0.3, 0.15, 0.05])
    assert px.components_for(explained, 0.5) == 1
    assert px.components_for(explained, 0.8) == 2
    assert px.components_for(explained, 0.81) == 3
    assert px.components_for(explained, 1.0) == 4
    with pytest.raises(ValueError, match="fraction"):
        px.components_for(explained, 0.0)


def test_correlation_by_distance_equals_a_brute_force_loop():
    h, w = 4, 5
    rng = np.random.default_rng(1)
    corr = np.corrcoef(rng.normal(size=(40, h * w)), rowvar=False)
    corr[3, :] = corr[:, 3] = np.nan
    res = px.correlation_by_distance(corr, (h, w))
    groups: dict[int, list[float]] = {}
    for i in range(h * w):
        for j in range(i + 1, h * w):
            if np.isfinite(corr[i, j]):
                (ri, ci), (rj, cj) = divmod(i, w), divmod(j, w)
                groups.setdefault(int(round(np.hypot(ri - rj, ci - cj))), []).append(corr[i, j])
    assert res.distance.tolist() == sorted(groups)
    np.testing.assert_allclose(res.mean, [np.mean(groups[d]) for d in sorted(groups)], rtol=1e-12)
    assert res.count.tolist() == [len(groups[d]) for d in sorted(groups)]


def test_batch_indices_cut_epochs_like_the_trainer():
    rng = np.random.default_rng(2)
    n, b = 23, 5  # 4 batches per epoch, 3 examples dropped
    orders = np.stack([np.stack([rng.permutation(n) for _ in range(3)]) for _ in range(2)])  # [2, 3, 23]
    idx = px.batch_indices(orders, b, steps=10)
    assert idx.shape == (2, 10, 5)
    for s in range(2):
        for t in range(10):
            e, pos = divmod(t, n // b)
            np.testing.assert_array_equal(idx[s, t], orders[s, e, pos * b : (pos + 1) * b])
    with pytest.raises(ValueError, match="epochs of orders"):
        px.batch_indices(orders, b, steps=13)


def test_label_sorted_sorts_by_label_and_keeps_the_order_within_a_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=50)
    orders = np.stack([rng.permutation(50) for _ in range(3)])
    out = px.label_sorted(orders, labels)
    for s in range(3):
        assert sorted(out[s]) == list(range(50))
        assert np.all(np.diff(labels[out[s]]) >= 0)
        for c in range(4):
            np.testing.assert_array_equal(out[s][labels[out[s]] == c], orders[s][labels[orders[s]] == c])


def test_batch_means_counts_and_entropy():
    values = np.arange(10.0)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    idx = np.array([[0, 1, 2, 3], [6, 7, 8, 9], [0, 2, 4, 6]])
    np.testing.assert_allclose(px.batch_means(values, idx), [1.5, 7.5, 3.0])
    counts = px.label_counts(labels, idx, n_classes=4)
    np.testing.assert_array_equal(counts, [[2, 2, 0, 0], [0, 0, 0, 4], [1, 1, 1, 1]])
    # entropies: two equal classes 1 bit, one class 0 bits, four equal classes 2 bits
    np.testing.assert_allclose(px.label_entropy(counts), [1.0, 0.0, 2.0], atol=1e-15)
    np.testing.assert_allclose(px.label_entropy([1, 1, 2]), 1.5)  # -(2 * 1/4 log 1/4 + 1/2 log 1/2)
    with pytest.raises(ValueError, match="labels must lie"):
        px.label_counts(labels, idx, n_classes=3)


def test_sampling_moments_of_indicators_are_hypergeometric():
    rng = np.random.default_rng(4)
    n, k, b = 1000, 137, 32
    values = np.zeros(n)
    values[rng.choice(n, k, replace=False)] = 1.0
    m = px.sampling_moments(values, b)
    ref = stats.hypergeom(n, k, b)  # scipy: population n, k successes, b draws
    assert b * m.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert b * b * m.var == pytest.approx(ref.var(), rel=1e-12)
    assert m.lag_corr == pytest.approx(-b / (n - b))


def test_sampling_moments_match_shuffled_epochs_by_monte_carlo():
    """Batch means of 4000 shuffled epochs (N = 200, B = 20). The variance per batch position,
    averaged over the 10 positions, has a relative Monte Carlo error of about 0.5% (measured over
    five seeds: |error| <= 0.9%), asserted within 3%; the correlation of two batches of one epoch
    (exact -B/(N-B) = -0.111) has standard error about 1/sqrt(4000) = 0.016, asserted within 0.064."""
    rng = np.random.default_rng(5)
    n, b, reps = 200, 20, 4000
    values = rng.exponential(size=n)
    m = px.sampling_moments(values, b)
    orders = np.stack([rng.permutation(n) for _ in range(reps)])[:, None, :]
    means = px.batch_means(values, px.batch_indices(orders, b, steps=n // b))  # [reps, 10]
    assert means.var(0, ddof=1).mean() == pytest.approx(m.var, rel=0.03)
    # the batches of a whole epoch use every value once: their means average to mu exactly
    np.testing.assert_allclose(means.mean(1), m.mean, rtol=1e-13)
    r = np.corrcoef(means[:, 0], means[:, 1])[0, 1]
    assert abs(r - m.lag_corr) < 4 / np.sqrt(reps)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        px.pixel_moments(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="square"):
        px.pca_spectrum(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no variance"):
        px.pca_spectrum(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="batch_size"):
        px.sampling_moments(np.ones(5), 5)
    with pytest.raises(ValueError, match="orders must be"):
        px.batch_indices(np.zeros((2, 10), int), 2, 3)
