"""rvsp-jax: neural-network training as random variables and stochastic processes.

Data flows one way: ``data -> model -> ensemble -> record/store -> analysis -> experiments``.
"""

__version__ = "0.1.0"
