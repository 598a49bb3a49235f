"""Shared test set-up, helpers and fixtures.

- Device set-up for the whole session, before any JAX computation: one CPU host device per core, as
  the experiments' entry points ask for (several tests split members over several devices).
- The small recorded run that the store, record, integrity, reliability and command-line tests
  share (``SMALL``, ``PROBES``, :func:`record_small`, the session fixture ``small_run``), so that
  the one compiled ensemble and one recording serve them all.
- Assertions shared by several test modules (:func:`assert_same_recording`, :func:`assert_figures`,
  :func:`assert_finite_summary`) and the ``python -c`` script that runs ``experiments.train`` with a
  library function hooked (:func:`hooked_train_script`).

Plain names are imported by the test modules with ``from conftest import ...`` (pytest puts this
folder on ``sys.path``); no test module imports another one.
"""

import atexit
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

# One persistent XLA compilation cache for the session and every subprocess it starts (they inherit
# the variable): a program compiled once (the small ensemble of the command-line tests, a study's
# step) is loaded, not compiled again, by the next test or process that builds it. Fresh for each
# session, so a run's time does not depend on earlier runs; a cache the user set is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="rvsp-jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

from rvsp_jax.training.devices import use_host_devices  # noqa: E402

use_host_devices()  # before anything below starts JAX's backends

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])  # if jax came first

import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rvsp_jax.config import TrainConfig  # noqa: E402
from rvsp_jax.io import store  # noqa: E402
from rvsp_jax.io.record import run  # noqa: E402
from rvsp_jax.training.probes import ProbeConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (the working directory and ``PYTHONPATH`` of the subprocess tests)."""

# ---- the shared small recording -----------------------------------------------------------------

SMALL = TrainConfig(seeds=3, steps=30, chunk=10, block=2)
"""3 members, 3 chunks of 10 steps; S=3 is padded (2 per block) so padding is exercised."""
PROBES = ProbeConfig(probes="params,updates,grads,weight_norms,activations,act_summary", index="all", batch=8)
TRAIN_ARGS = [
    "--seeds",
    str(SMALL.seeds),
    "--steps",
    str(SMALL.steps),
    "--chunk",
    str(SMALL.chunk),
    "--block",
    str(SMALL.block),
    "--probes",
    ",".join(PROBES.probes),
    "--probe-index",
    PROBES.index,
    "--probe-batch",
    str(PROBES.batch),
    "--devices",
    str(len(jax.devices())),
]
"""``python -m experiments.train`` flags that record ``SMALL`` with ``PROBES`` on this session's devices."""


def record_small(out, **kwargs):
    """The uninterrupted reference recording of ``SMALL`` with ``PROBES`` in ``out``."""
    return run(SMALL, PROBES, out, progress=False, **kwargs)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One recording of ``SMALL`` with ``PROBES`` for the whole session, opened as a ``Run``.

    Tests only read it, or run what must leave it as it is (``--resume`` of a complete run, a
    refused ``--overwrite``); a test that damages a run works on a copy of its folder."""
    return record_small(tmp_path_factory.mktemp("small") / "reference")


def assert_same_recording(a, b):
    """Every array, the final parameters and test metrics of two runs are bit-identical."""
    assert a.arrays == b.arrays and a.probe_names == b.probe_names
    for name in a.arrays:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    fa, fb = a.final(), b.final()
    for layer in fa.params:
        for leaf in fa.params[layer]:
            np.testing.assert_array_equal(fa.params[layer][leaf], fb.params[layer][leaf])
    for field in store.FinalResult._fields[1:]:
        np.testing.assert_array_equal(getattr(fa, field), getattr(fb, field))


# ---- study outputs ------------------------------------------------------------------------------


def assert_figures(folder: Path, names, *, min_side: int = 100) -> None:
    """Each figure ``name`` is a readable PNG (RGB(A), each side > ``min_side`` pixels) and a whole PDF."""
    for name in names:
        png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and min(image.shape[:2]) > min_side, png
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], pdf


def assert_valid_figure(folder: Path, name: str) -> None:
    """One figure, as :func:`assert_figures` without the size check."""
    assert_figures(folder, (name,), min_side=0)


def assert_finite_summary(obj, path="summary"):
    """MemberSummary-like dicts (mean/lo/hi) have finite means, unless every member was excluded."""
    if isinstance(obj, dict):
        if {"mean", "lo", "hi", "n"} <= set(obj):
            assert obj["n"] == 0 or obj["mean"] is not None, path
        for k, v in obj.items():
            assert_finite_summary(v, f"{path}.{k}")


# ---- experiments.train with a hook, in a subprocess ---------------------------------------------

_HOOKED_TRAIN = """\
import os, runpy, signal, sys, time
import {module} as _target
_original, _calls = _target.{function}, []
def _hooked(*args, **kwargs):
    _calls.append(1)
    calls = len(_calls)  # this call's number, from 1
{hook}
    return _original(*args, **kwargs)
_target.{function} = _hooked
sys.argv = ["experiments.train", *sys.argv[1:]]
runpy.run_module("experiments.train", run_name="__main__")
"""


def hooked_train_script(module: str, function: str, hook: str) -> str:
    """A ``python -c`` script that runs ``python -m experiments.train`` (its arguments are the
    script's) with ``module.function`` wrapped: ``hook`` (statements that see ``calls``, the number
    of this call, and may use ``os``, ``signal`` and ``time``) runs before each call of the original."""
    return _HOOKED_TRAIN.format(
        module=module, function=function, hook=textwrap.indent(textwrap.dedent(hook).strip(), "    ")
    )


def subprocess_env(**extra) -> dict:
    """The environment of a subprocess test: this one, the repository on ``PYTHONPATH``, and the
    session's host device count (so that it records what this process records)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "RVSP_JAX_HOST_DEVICES": str(len(jax.devices())), **extra}
