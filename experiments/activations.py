"""Section 2 of the RVSP study: hidden activations as transformed random variables over training.

    python -m experiments.activations --seeds 16 --epochs 2 --activation sigmoid
    python -m experiments.activations --activation relu --probe-every 5
    python -m experiments.activations --out results/activations/run1 --resume   # redo the analysis

Trains an ensemble recording every hidden unit's pre-activation and activation on a fixed probe
batch; reports per-unit and per-layer quantiles, Wasserstein drift from step 0, stationarity by
phase and saturated/dead fractions, with the analysed window and the rule behind every sentence
stated in the report. Writes the run folder (manifest.json, arrays/), summary.json, report.md and
figures/ to --out (default results/activations/<timestamp>).
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import activations

DEFAULTS = {"seeds": 16, "epochs": 2.0}


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        "activations",
        "Hidden activations as transformed random variables.",
        activations.ActivationSettings,
        argv,
        train_defaults=DEFAULTS,
        settings_title="activations study",
    )
    result = cli.run_study(activations, run)
    if result is None:  # a sweep: one line per grid point is printed
        return
    s = result.summary
    print(
        f"activations ({run.config.activation}): S={run.config.seeds} ({s['members']['diverged']} "
        f"diverged), {s['recorded_steps']} recordings; test accuracy {s['test_accuracy'].mean:.4f}"
    )
    print(f"report: {run.out}/report.md  summary: {run.out}/summary.json  figures: {run.out}/figures/")


if __name__ == "__main__":
    main()
