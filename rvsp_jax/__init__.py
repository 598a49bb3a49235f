"""rvsp-jax: neural-network training as random variables and stochastic processes.

Data flows one way: ``data -> model -> ensemble -> record/store -> analysis -> experiments``.

The public namespace, for notebooks (each name is imported on first use, so ``import rvsp_jax`` is
cheap and starts neither JAX nor matplotlib)::

    import rvsp_jax as rj

    rj.devices.use_host_devices()              # optional: one CPU host device per core (before JAX starts)
    result = rj.train(rj.TrainConfig(seeds=8, steps=200))              # in memory (rvsp_jax.ensemble.train)
    run = rj.record_run(rj.TrainConfig(seeds=8, steps=200),
                        rj.ProbeConfig(probes="params"), "results/train/demo")   # on disk
    run = rj.open("results/train/demo")        # a Run (run folder) or a Study (study folder)
    rj.analysis.acf(run.series("params"))      # [S, P, T], time last

- :class:`TrainConfig` (:mod:`rvsp_jax.config`), :class:`ProbeConfig` (:mod:`rvsp_jax.probes`).
- :func:`train`: :func:`rvsp_jax.ensemble.train`, the ensemble trained in memory.
- :func:`record_run`: :func:`rvsp_jax.record.run`, the ensemble trained and recorded into a run
  folder. ``rvsp_jax.record`` stays the *module* (``from rvsp_jax.record import run`` keeps working,
  and a module attribute of a package is the submodule once it is imported, so a function under that
  name could not last); the function is therefore exposed as ``record_run``.
- :func:`open`: :func:`rvsp_jax.store.open_folder`, a :class:`Run` or a :class:`Study`.
- :mod:`analysis`, :mod:`devices`: the modules.

Importing the package has no side effects: it does not change JAX's devices. The entry points
(experiments, ``python -m rvsp_jax.launch``, benchmarks, tests) ask JAX for one CPU host device per
core before JAX starts (see :mod:`rvsp_jax.devices`); in a notebook call
``rvsp_jax.devices.use_host_devices()`` first if you want that split.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ATTRS = {
    "TrainConfig": ("rvsp_jax.config", "TrainConfig"),
    "ProbeConfig": ("rvsp_jax.probes", "ProbeConfig"),
    "train": ("rvsp_jax.ensemble", "train"),
    "record_run": ("rvsp_jax.record", "run"),
    "open": ("rvsp_jax.store", "open_folder"),
    "Run": ("rvsp_jax.store", "Run"),
    "Study": ("rvsp_jax.store", "Study"),
}
_MODULES = ("analysis", "devices", "record", "store")

__all__ = ["TrainConfig", "ProbeConfig", "train", "record_run", "open", "Run", "Study",
           "analysis", "devices", "record", "store", "__version__"]


def __getattr__(name: str):
    if name in _ATTRS:
        module, attr = _ATTRS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import sets the attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
