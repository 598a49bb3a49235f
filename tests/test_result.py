"""The one result base of the analysis API: every result type subclasses it, reads as a table, converts
to plain values, unpacks like the NamedTuples it replaced, is a pytree, and reads former field names
with a warning."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import jax
import numpy as np
import pytest

import rvsp_jax.analysis as analysis
from rvsp_jax.analysis import (
    Result,
    across_members,
    adf,
    ljung_box,
    tail_verdict,
)
from rvsp_jax.analysis.ergodicity import assess, variance_scaling


def _result_types():
    """Every result class the analysis package defines (walks its modules)."""
    import importlib
    import pkgutil

    found = {}
    for info in pkgutil.walk_packages(analysis.__path__, "rvsp_jax.analysis."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and dataclasses.is_dataclass(obj):
                found[obj.__qualname__] = obj
    return found


def test_every_result_type_is_a_frozen_result():
    types = _result_types()
    assert len(types) >= 20  # drift, lrv, spectral, stationarity, tails, ergodicity, pixels, ...
    for name, cls in types.items():
        assert issubclass(cls, Result), name
        assert cls.__dataclass_params__.frozen, name
        assert cls.__repr__ is Result.__repr__, name  # not the dataclass's field dump


def test_no_namedtuple_results_are_left():
    for info_name in dir(analysis):
        obj = getattr(analysis, info_name)
        if inspect.isclass(obj) and issubclass(obj, tuple):
            assert not hasattr(obj, "_fields"), f"{info_name} is still a NamedTuple"


def test_repr_gives_shapes_of_large_arrays_and_values_of_small_ones():
    x = np.random.default_rng(0).normal(size=(5, 200))
    r = adf(x)
    text = repr(r)
    assert text.startswith("AdfResult(stat=float64[5], pvalue=float64[5], usedlag=int64[5]")
    assert "maxlag=" + str(r.maxlag) in text and "regression='c'" in text
    s = across_members(x[:, :3])
    assert "n=[5, 5, 5]" in repr(s)


def test_summary_and_html_show_every_field_with_numbers():
    x = np.random.default_rng(1).normal(size=(6, 300))
    r = adf(x)
    text = r.summary()
    lines = text.splitlines()
    assert lines[0] == "AdfResult: Augmented Dickey-Fuller test of every series (H0: unit root)"
    assert len(lines) == 2 + len(r._fields)
    stat_line = next(line for line in lines if line.startswith("stat "))
    assert f"mean {r.stat.mean():.4g}" in stat_line and f"{r.stat.min():.4g}" in stat_line
    assert "0 of 6 True" in next(line for line in lines if line.startswith("constant"))
    html = r._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == 1 + len(r._fields)
    assert "<code>pvalue</code>" in html


def test_summary_counts_verdicts_and_non_finite_values():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(6, 400)), rng.standard_t(1.5, size=(6, 400))])
    v = tail_verdict(x)
    row = Result.summary(v).splitlines()
    verdict_row = next(line for line in row if line.startswith("verdict "))
    values, counts = np.unique(v.verdict, return_counts=True)
    for value, count in zip(values, counts):
        assert f"{value} {count}" in verdict_row
    s = across_members(np.array([[1.0, np.nan], [2.0, np.nan], [4.0, 1.0]]))
    sem_row = next(line for line in s.summary().splitlines() if line.startswith("sem "))
    assert "nan" in sem_row  # a two-entry array is shown in full


def test_to_dict_converts_arrays_and_nested_values():
    r = adf(np.random.default_rng(3).normal(size=(3, 120)))
    d = r.to_dict()
    assert list(d) == list(r._fields)
    assert isinstance(d["stat"], np.ndarray) and d["stat"].shape == (3,)
    assert isinstance(d["critical_values"], dict) and set(d["critical_values"]) == {"1%", "5%", "10%"}
    one = assess(np.random.default_rng(4).normal(size=(6, 300))).to_dict()
    assert isinstance(one["ratio"], float) and isinstance(one["verdict"], str)
    lb = ljung_box(jax.numpy.asarray(np.random.default_rng(5).normal(size=(2, 100))), 5).to_dict()
    assert lb["bp_stat"] is None and lb["stat"].shape == (2, 5)
    from rvsp_jax.analysis.summary import MemberSummary

    ones = jax.numpy.ones(3)
    held = MemberSummary(ones, ones, ones, ones, ones, jax.numpy.float32(2.0)).to_dict()
    assert all(type(held[k]) is np.ndarray for k in ("mean", "sem", "lo", "hi", "n"))
    assert held["excluded"] == 2.0 and type(held["excluded"]) is float


def test_results_unpack_and_index_like_the_namedtuples_they_replaced():
    x = np.random.default_rng(6).normal(size=(7, 3))
    s = across_members(x)
    mean, sem, lo, hi, n, excluded = s
    assert mean is s.mean and hi is s.hi and s[2] is s.lo and len(s) == 6
    assert s._asdict()["n"] is s.n and s._fields == ("mean", "sem", "lo", "hi", "n", "excluded")
    t = s._replace(n=np.zeros(3, int))
    assert t.n.sum() == 0 and s.n.sum() == 21 and t.mean is s.mean
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mean = np.zeros(3)


def test_results_are_pytrees_and_leave_jit():
    s = across_members(np.random.default_rng(7).normal(size=(5, 2)))
    doubled = jax.tree_util.tree_map(lambda a: a * 2, s)
    assert type(doubled) is type(s)
    np.testing.assert_array_equal(doubled.hi, s.hi * 2)
    leaves = jax.tree_util.tree_leaves(s)
    assert len(leaves) == 6
    from rvsp_jax.analysis.summary import MemberSummary

    out = jax.jit(lambda a: MemberSummary(a, a + 1, a - 1, a + 2, a * 0, a * 0))(np.float32(1.5))
    assert isinstance(out, MemberSummary) and float(out.hi) == 3.5


def test_former_interval_names_read_with_a_warning():
    rng = np.random.default_rng(8)
    vs = variance_scaling(rng.normal(size=(8, 256)), n_boot=50)
    with pytest.warns(DeprecationWarning, match="VarianceScaling.ci_low is now VarianceScaling.lo"):
        assert vs.ci_low is vs.lo
    r = assess(rng.normal(size=(6, 300)))
    for old, new in [("ratio_ci_high", "ratio_hi"), ("var_mu_ci_low", "var_mu_lo"), ("slope_ci_high", "slope_hi")]:
        with pytest.warns(DeprecationWarning, match=new):
            assert getattr(r, old) == getattr(r, new)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = r.nonsense
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = r.ratio_hi  # the current name does not warn


def test_variance_scaling_alpha_gives_the_former_ci_intervals_bit_for_bit():
    x = np.random.default_rng(9).normal(size=(10, 300))
    new = variance_scaling(x, n_boot=200, alpha=0.05)
    with pytest.warns(DeprecationWarning, match="alpha = 1 - ci"):
        old = variance_scaling(x, n_boot=200, ci=0.95)
    np.testing.assert_array_equal(new.lo, old.lo)
    np.testing.assert_array_equal(new.hi, old.hi)
    with pytest.raises(ValueError, match="significance level"):
        variance_scaling(x, n_boot=10, alpha=0.95)


def test_results_compare_by_value():
    x = np.random.default_rng(10).normal(size=(6, 3))
    x[0, 1] = np.nan
    a, b = across_members(x), across_members(x.copy())
    assert a == b and not (a != b)
    assert a != across_members(x + 1)
    assert a != adf(np.random.default_rng(0).normal(size=(3, 50)))
    r1, r2 = (adf(np.random.default_rng(11).normal(size=(3, 60))) for _ in range(2))
    assert r1 == r2  # dict and str fields too
    with pytest.raises(TypeError):
        hash(a)
