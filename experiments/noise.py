"""The optimizer as a stochastic process: minibatch gradient noise, its tail index across parameters
vs along iterations, and the gradient noise scale B_simple over training (section 6 of the RVSP study).

Across parameters the noise is compared with a Gaussian of each parameter's own scale and
standardised per parameter; first-layer weights are also grouped by how often their pixel is lit;
tail_verdict calls each sample gaussian / heavy-tailed / infinite-variance / inconclusive; the report
answers Simsekli et al. (2019) vs Xie et al. (2023) by the rules it states, window by window.

    python -m experiments.noise                          # 16 members, 3,000 SGD steps (~5 min CPU, 2 cores)
    python -m experiments.noise --seeds 32 --noise-steps 20 --minibatches 512 --batch-size 64
    python -m experiments.noise --out results/noise/run1 --resume     # reuse the recording, re-analyse

Every training flag of :class:`rvsp_jax.config.TrainConfig`, the flags of
:class:`rvsp_jax.studies.noise.NoiseSettings`, and --out/--resume/--overwrite/--devices. Writes the
run folder (manifest, recorded parameters and gradients), summary.json, report.md and figures/.
When every member diverged it stops with a one-line error and exit status 1.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import noise


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        noise.EXPERIMENT,
        __doc__.splitlines()[0],
        noise.NoiseSettings,
        argv,
        train_defaults=noise.TRAIN_DEFAULTS,
        settings_title="gradient noise",
    )
    if cli.run_study(noise, run) is None:  # a sweep: one line per grid point is printed
        return
    print(f"noise: {run.out}\n  report: {run.out / 'report.md'}\n  summary: {run.out / 'summary.json'}")


if __name__ == "__main__":
    main()
