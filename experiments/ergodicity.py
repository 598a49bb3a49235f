"""Is one training run representative of all runs? Ergodicity of an ensemble's training processes.

    python -m experiments.ergodicity --seeds 256                  # the defaults (a few minutes)
    python -m experiments.ergodicity --vary data --steps 2000 --burn-in 0.25
    python -m experiments.ergodicity --out results/ergodicity/run1 --resume   # same options again
    python -m experiments.ergodicity --lr 0.03,0.1,0.3 --seeds 64     # each lr its own ensemble

Writes the run folder (default results/ergodicity/<timestamp>): manifest.json, the recorded arrays,
summary.json, report.md and figures/*.png|pdf. See :mod:`rvsp_jax.studies.ergodicity`.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import ergodicity


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        "ergodicity",
        ergodicity.DESCRIPTION,
        ergodicity.ErgodicitySettings,
        argv,
        train_defaults=ergodicity.TRAIN_DEFAULTS,
        raw_description=True,
        settings_title="ergodicity analysis",
    )
    result = cli.run_study(ergodicity, run)
    if result is None:  # a sweep: one line per grid point is printed
        return
    print(f"run: {run.out} ({result.summary['n_members']} members, {result.summary['n_diverged']} diverged)")
    for group, g in result.summary["groups"].items():
        print("  " + ergodicity.group_sentence(group, g).replace("**", ""))
    print(f"report: {run.out}/report.md")


if __name__ == "__main__":
    main()
