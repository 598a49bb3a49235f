"""Section 3 of the RVSP study: sigmoid vs ReLU (and tanh) as a paired design.

    python -m experiments.activation_compare --seeds 16 --epochs 1
    python -m experiments.activation_compare --activations sigmoid,relu --optimizer sgd \
        --opt-kwargs '{"momentum": 0.9}' --lr 0.02
    python -m experiments.activation_compare --out results/activation_compare/run1 --resume

Trains one ensemble per activation with otherwise identical flags (same seeds: same initial weights
and same minibatch order for member s of every variant), recording gradients and updates every step;
reports per-layer distributions, variances next to kurtosis with paired tests, update PSDs and
smooth-vs-jittery scores and stationarity fractions, at equal steps, in loss-matched windows and in a
stationarity-accepted window (--window steps), plus a like-for-like inactive fraction (phi' below
the same fraction of its maximum for every activation; exact zeros separately). The report states
its windows and the rule behind every sentence. Writes runs/<activation>/, summary.json, report.md and figures/ to
--out (default results/activation_compare/<timestamp>). --activation is ignored (see --activations).
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import activation_compare as compare

DEFAULTS = {"seeds": 16, "epochs": 1.0}


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        "activation_compare",
        "Activation functions compared as a paired design.",
        compare.CompareSettings,
        argv,
        train_defaults=DEFAULTS,
        settings_title="activation comparison",
    )
    result = cli.run_study(compare, run)
    if result is None:  # a sweep: one line per grid point is printed
        return
    s = result.summary
    print(
        "test accuracy: "
        + ", ".join(f"{v} {s['test_accuracy'][v].mean:.4f}" for v in s["variants"])
        + f" (S={run.config.seeds} pairs)"
    )
    print(f"report: {run.out}/report.md  summary: {run.out}/summary.json  figures: {run.out}/figures/")


if __name__ == "__main__":
    main()
