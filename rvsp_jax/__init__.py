"""rvsp-jax: neural-network training as random variables and stochastic processes.

Data flows one way, and the sub-packages follow it::

    data/      MNIST: sources, checksums, the in-memory Dataset
    training/  model, ensemble (the compiled step and its schedule), probes, devices, footprint
    io/        run folders (safety, locks), the chunked store, recording
    analysis/  pure estimators (batched, equal to statsmodels / scipy), gradient noise, pixels
    present/   figures, reports, the index of run folders
    studies/   one module per question: what it trains, its analysis, summary, figures, report
    config.py, cli.py, launch.py   the configuration, the command lines, the multi-process launcher

The public namespace, for notebooks (each name is imported on first use, so ``import rvsp_jax`` is
cheap and starts neither JAX nor matplotlib)::

    import rvsp_jax as rj

    rj.devices.use_host_devices()              # optional: one CPU host device per core (before JAX starts)
    result = rj.train(rj.TrainConfig(seeds=8, steps=200))   # in memory (rvsp_jax.training.ensemble)
    run = rj.record(rj.TrainConfig(seeds=8, steps=200),
                    rj.ProbeConfig(probes="params"), "results/train/demo")   # on disk
    run = rj.open("results/train/demo")        # a Run (run folder) or a Study (study folder)
    rj.analysis.acf(run.series("params"))      # [S, P, T], time last

- :class:`TrainConfig` (:mod:`rvsp_jax.config`), :class:`ProbeConfig` (:mod:`rvsp_jax.training.probes`).
- :func:`train`: :func:`rvsp_jax.training.ensemble.train`, the ensemble trained in memory.
- :func:`record`: :func:`rvsp_jax.io.record.run`, the ensemble trained and recorded into a run
  folder.
- :func:`open`: :func:`rvsp_jax.io.store.open_folder`, a :class:`Run` or a :class:`Study`.
- :mod:`analysis`, ``devices`` (:mod:`rvsp_jax.training.devices`), ``store``
  (:mod:`rvsp_jax.io.store`): the modules.

Importing the package has no side effects: it does not change JAX's devices. The entry points
(experiments, ``python -m rvsp_jax.launch``, benchmarks, tests) ask JAX for one CPU host device per
core before JAX starts (see :mod:`rvsp_jax.training.devices`); in a notebook call
``rvsp_jax.training.devices.use_host_devices()`` first if you want that split.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ATTRS = {
    "TrainConfig": ("rvsp_jax.config", "TrainConfig"),
    "ProbeConfig": ("rvsp_jax.training.probes", "ProbeConfig"),
    "train": ("rvsp_jax.training.ensemble", "train"),
    "record": ("rvsp_jax.io.record", "run"),
    "open": ("rvsp_jax.io.store", "open_folder"),
    "Run": ("rvsp_jax.io.store", "Run"),
    "Study": ("rvsp_jax.io.store", "Study"),
}
_MODULES = {"analysis": "rvsp_jax.analysis", "devices": "rvsp_jax.training.devices", "store": "rvsp_jax.io.store"}
"""Modules reachable as attributes (``rvsp_jax.store.open_run``); their homes follow the layout."""

__all__ = [
    "TrainConfig",
    "ProbeConfig",
    "train",
    "record",
    "open",
    "Run",
    "Study",
    "analysis",
    "devices",
    "store",
    "__version__",
]


def __getattr__(name: str):
    if name in _ATTRS:
        module, attr = _ATTRS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
