"""rvsp-jax: neural-network training as random variables and stochastic processes.

Data flows one way: ``data -> model -> ensemble -> record/store -> analysis -> experiments``.

Importing the package asks JAX for one CPU host device per core (see :mod:`rvsp_jax.devices`), so
that the ensemble's members are split over every core. Import ``rvsp_jax`` before running any JAX
computation, or set ``RVSP_JAX_HOST_DEVICES`` / ``XLA_FLAGS`` yourself.
"""

from rvsp_jax.devices import use_host_devices as _use_host_devices

__version__ = "0.1.0"

try:
    _use_host_devices()
except ValueError as _e:  # a bad RVSP_JAX_HOST_DEVICES: say so, keep JAX's default devices
    import warnings as _warnings

    _warnings.warn(f"{_e}; using JAX's default devices (the experiments refuse it)", stacklevel=2)
