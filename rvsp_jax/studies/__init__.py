"""The RVSP study: one module per question, each turning run folders into numbers, figures and a report.

Experiments (``experiments/<name>.py``) are thin command lines over these modules. A study trains and
records through :func:`rvsp_jax.io.record.run`, reads the recording with
:func:`rvsp_jax.io.store.open_run`, analyses it with :mod:`rvsp_jax.analysis`, draws with
:mod:`rvsp_jax.present.plots` and writes ``summary.json``/``report.md`` with :mod:`rvsp_jax.present.report`.
Studies that train several variants keep each one as a complete run folder under ``runs/<variant>/``
(see :mod:`rvsp_jax.studies.folder`).

Every study declares one protocol (settings, ``record_runs``, ``write_results``, ``sweep_statistics``
and a ``FIGURES`` table of figure makers with captions) and is run by
:func:`rvsp_jax.studies.runner.run_study`, which does the folders, recording, summary, figures,
report and completion for all of them (a sweep config: every grid point through
:mod:`rvsp_jax.studies.per_point`). Shared pieces live in modules named for what they hold:
:mod:`~rvsp_jax.studies.members` (usable and diverged members), :mod:`~rvsp_jax.studies.layer_spectra`
(per-layer spectra and window stationarity), :mod:`~rvsp_jax.studies.windows` (the burn-in, a
fraction of the steps everywhere), :mod:`~rvsp_jax.studies.figures` (saving a ``FIGURES`` table) and
:mod:`~rvsp_jax.studies.settings` (``to_dict``/``from_dict`` of every settings class).
"""
