"""Parameter updates as time series: ACF and Welch PSD per layer, spectral shape (white vs Lorentzian vs
power law by AIC), smooth vs jittery, ADF/KPSS by phase with Benjamini-Hochberg control (section 4).

    python -m experiments.spectra                      # 32 members, 4,000 SGD steps (~25 s, 2 cores)
    python -m experiments.spectra --seeds 64 --steps 6000 --probe-index 32 --optimizer adam --lr 1e-3
    python -m experiments.spectra --out results/spectra/run1 --resume    # reuse the recording, re-analyse

Every training flag of :class:`rvsp_jax.config.TrainConfig`, the analysis flags of
:class:`rvsp_jax.studies.spectra.SpectraSettings`, and --out/--resume/--overwrite/--devices. Writes
the run folder (manifest, recorded updates), summary.json, report.md and figures/. The report states
the analysed window, whether it is stationary, and the rule behind every sentence.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import spectra


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        spectra.EXPERIMENT,
        __doc__.splitlines()[0],
        spectra.SpectraSettings,
        argv,
        train_defaults=spectra.TRAIN_DEFAULTS,
    )
    if cli.run_study(spectra, run) is None:  # a sweep: one line per grid point is printed
        return
    print(f"spectra: {run.out}\n  report: {run.out / 'report.md'}\n  summary: {run.out / 'summary.json'}")


if __name__ == "__main__":
    main()
