"""Benjamini-Hochberg against statsmodels multipletests(method="fdr_bh"), and FDR control."""

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from rvsp_jax.analysis.multiple_testing import fdr_bh


def _reference(p, alpha):
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    return reject, adjusted


@pytest.mark.parametrize("size", [1, 2, 7, 100, 5000])
def test_fdr_bh_equals_statsmodels(size):
    rng = np.random.default_rng(size)
    for alpha in (0.01, 0.05, 0.2):
        # mixture of nulls, signals, exact ties, zeros and ones
        p = np.where(rng.random(size) < 0.3, rng.random(size) * 1e-3, rng.random(size))
        p[rng.random(size) < 0.1] = 0.5
        p[rng.random(size) < 0.02] = 0.0
        p[rng.random(size) < 0.02] = 1.0
        reject, adjusted = fdr_bh(p, alpha)
        ref_reject, ref_adjusted = _reference(p, alpha)
        np.testing.assert_array_equal(reject, ref_reject)
        np.testing.assert_array_equal(adjusted, ref_adjusted)


def test_nan_pvalues_are_left_out_of_the_family():
    rng = np.random.default_rng(1)
    p = rng.random(300) ** 3
    p[rng.random(300) < 0.2] = np.nan
    keep = ~np.isnan(p)
    reject, adjusted = fdr_bh(p, 0.05)
    ref_reject, ref_adjusted = _reference(p[keep], 0.05)
    np.testing.assert_array_equal(reject[keep], ref_reject)
    np.testing.assert_array_equal(adjusted[keep], ref_adjusted)
    assert not reject[~keep].any() and np.isnan(adjusted[~keep]).all()
    assert ref_reject.any()  # the comparison covers rejections
    all_nan = fdr_bh(np.full(4, np.nan))
    assert not all_nan.reject.any() and np.isnan(all_nan.pvalues_adjusted).all()


def test_axis_none_flattens_and_axis_k_makes_families():
    rng = np.random.default_rng(2)
    p = rng.random((4, 6, 50)) ** 2
    flat = fdr_bh(p)
    ref_reject, ref_adjusted = _reference(p.ravel(), 0.05)
    assert flat.reject.shape == p.shape
    np.testing.assert_array_equal(flat.pvalues_adjusted.ravel(), ref_adjusted)
    np.testing.assert_array_equal(flat.reject.ravel(), ref_reject)
    per_family = fdr_bh(p, axis=1)
    for i in range(4):
        for j in range(50):
            ref_reject, ref_adjusted = _reference(p[i, :, j], 0.05)
            np.testing.assert_array_equal(per_family.pvalues_adjusted[i, :, j], ref_adjusted)
            np.testing.assert_array_equal(per_family.reject[i, :, j], ref_reject)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdr_bh([0.1, 1.5])
    with pytest.raises(ValueError, match="alpha"):
        fdr_bh([0.1], alpha=0.0)
    with pytest.raises(ValueError, match="axis"):
        fdr_bh(np.ones((2, 3)) / 2, axis=2)


def test_bh_controls_false_discovery_rate_on_a_mixture():
    # 400 repetitions of m = 500 one-sided z-tests, 80% true nulls, alternatives shifted by 3 sd.
    # BH (independent tests) guarantees E[FDP] = pi0 * alpha = 0.04 <= alpha; unadjusted tests
    # at alpha have E[FDP] near 0.04 * 400 / (0.04 * 400 + 0.91 * 100) ~ 0.15 here.
    rng = np.random.default_rng(3)
    reps, m, alpha = 400, 500, 0.05
    null = rng.random((reps, m)) < 0.8
    z = rng.standard_normal((reps, m)) + np.where(null, 0.0, 3.0)
    p = scipy.stats.norm.sf(z)
    reject = fdr_bh(p, alpha, axis=-1).reject
    false = np.sum(reject & null, axis=-1)
    fdp = false / np.maximum(np.sum(reject, axis=-1), 1)
    assert fdp.mean() <= alpha
    assert 0.02 <= fdp.mean()  # close to pi0 * alpha, not trivially zero
    assert np.sum(reject & ~null) / np.sum(~null) > 0.4  # and it still finds signals
    raw = p < alpha
    raw_fdp = np.sum(raw & null, axis=-1) / np.maximum(np.sum(raw, axis=-1), 1)
    assert raw_fdp.mean() > 2 * alpha  # uncorrected tests would fail this check
