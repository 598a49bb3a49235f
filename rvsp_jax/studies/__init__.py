"""The RVSP study: one module per question, each turning run folders into numbers, figures and a report.

Experiments (``experiments/<name>.py``) are thin command lines over these modules. A study trains and
records through :func:`rvsp_jax.io.record.run`, reads the recording with
:func:`rvsp_jax.io.store.open_run`, analyses it with :mod:`rvsp_jax.analysis`, draws with
:mod:`rvsp_jax.present.plots` and writes ``summary.json``/``report.md`` with :mod:`rvsp_jax.present.report`.
Studies that train several variants keep each one as a complete run folder under ``runs/<variant>/``
(see :mod:`rvsp_jax.studies.folder`).
"""
