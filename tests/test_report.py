"""Summaries across members (against scipy's t interval) and the report/summary writers."""

import json

import numpy as np
import pytest
from scipy import stats

from rvsp_jax.analysis.summary import across_members
from rvsp_jax.present.report import Report, fmt_ci, markdown_table, write_summary


def test_across_members_matches_scipy_t_interval_and_excludes_nonfinite():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(12, 5))
    x[3, 1] = np.nan
    x[7, 1] = np.inf
    s = across_members(x, alpha=0.1)
    for j in range(5):
        col = x[:, j][np.isfinite(x[:, j])]
        lo, hi = stats.t.interval(0.9, len(col) - 1, loc=col.mean(), scale=stats.sem(col))
        np.testing.assert_allclose([s.mean[j], s.lo[j], s.hi[j]], [col.mean(), lo, hi], rtol=1e-10, atol=1e-14)
    assert s.n.tolist() == [12, 10, 12, 12, 12] and s.excluded.tolist() == [0, 2, 0, 0, 0]


def test_across_members_coverage_under_the_null():
    rng = np.random.default_rng(1)
    s = across_members(rng.normal(size=(8, 20_000)))
    coverage = np.mean((s.lo <= 0) & (0 <= s.hi))
    assert abs(coverage - 0.95) < 4 * np.sqrt(0.95 * 0.05 / 20_000)


def test_single_member_has_no_interval_and_bad_level_raises():
    s = across_members(np.array([[1.0, 2.0]]))
    assert np.all(np.isnan(s.lo)) and s.mean.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="alpha"):
        across_members(np.zeros((3, 2)), alpha=1.5)
    with pytest.raises(ValueError, match="significance level"):
        across_members(np.zeros((3, 2)), 0.95)  # a coverage passed where alpha is expected


def test_across_members_former_level_argument_warns_and_agrees():
    x = np.random.default_rng(2).normal(size=(9, 4))
    with pytest.warns(DeprecationWarning, match="alpha = 1 - level"):
        old = across_members(x, level=0.9)
    new = across_members(x, alpha=0.1)
    np.testing.assert_allclose([old.lo, old.hi], [new.lo, new.hi], rtol=1e-12)
    with pytest.raises(ValueError, match="level"), pytest.warns(DeprecationWarning):
        across_members(x, level=1.5)


def test_report_and_summary_files(tmp_path):
    s = across_members(np.array([[1.0], [2.0], [np.nan]]))
    r = Report("Demo").section("Numbers").table(["a", "b"], [["x|y", 0.123456], ["z", np.nan]])
    r.figure("fig1", "A figure").text("Mean: " + fmt_ci(s.__class__(*(v[0] for v in s))))
    path = r.write(tmp_path)
    text = path.read_text()
    assert "| x\\|y | 0.123 |" in text and "| z | — |" in text
    assert "![A figure](figures/fig1.png)" in text and "(n=2, 1 excluded)" in text
    out = write_summary(
        tmp_path, {"a": np.float32(1.5), "b": np.array([1, 2]), "c": float("nan"), "s": s, "t": (np.bool_(True),)}
    )
    data = json.loads(out.read_text())
    assert data["a"] == 1.5 and data["b"] == [1, 2] and data["c"] is None and data["t"] == [True]
    assert data["s"]["excluded"] == [1]
    assert not list(tmp_path.glob("*.tmp"))
    assert markdown_table(["h"], [[3]]).splitlines()[2] == "| 3 |"
