"""A hyperparameter sweep in one compiled ensemble; every grid point analysed as its own ensemble.

    python -m experiments.sweep --lr 0.01,0.03,0.1,0.3 --seeds 64
    python -m experiments.sweep --lr 0.05 --opt-kwargs '{"momentum": [0.0, 0.5, 0.9]}' --seeds 32
    python -m experiments.sweep --out results/sweep/run1 --resume ...   # same options as before

Every training flag of :class:`rvsp_jax.config.TrainConfig` (a comma-separated ``--lr`` or lists in
``--opt-kwargs`` make the grid), the flags of :class:`rvsp_jax.studies.sweep.SweepSettings`, and
--out/--resume/--overwrite/--devices. Writes the run folder, summary.json, report.md and
figures/sweep.{png,pdf}: ergodicity verdicts, update PSD band ratio and tail verdicts against the
swept hyperparameter.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import sweep


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        sweep.EXPERIMENT,
        __doc__.splitlines()[0],
        sweep.SweepSettings,
        argv,
        train_defaults=sweep.TRAIN_DEFAULTS,
        allow_sweep=True,
    )
    cli.run_study(sweep, run)  # the sweep study analyses the whole grid itself
    print(f"sweep: {run.out}\n  report: {run.out / 'report.md'}\n  summary: {run.out / 'summary.json'}")


if __name__ == "__main__":
    main()
