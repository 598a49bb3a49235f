"""Section 1 of the RVSP study: pixels as random variables, the minibatch stream as a process.

    python -m experiments.pixels --seeds 32 --epochs 1
    python -m experiments.pixels --out results/pixels/run1 --resume      # redo the analysis

Nothing is trained: the streams are the trainer's real minibatch orders for the training flags
given (--seeds, --base-seed, --vary, --batch-size, --steps/--epochs, --dataset), shuffled and
label-sorted. Writes manifest.json, arrays.npz, summary.json, report.md and figures/ to --out
(default results/pixels/<timestamp>).
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import pixels

DEFAULTS = {"seeds": 32}


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        "pixels",
        "Pixel statistics and the minibatch stream as a random process.",
        pixels.PixelSettings,
        argv,
        train_defaults=DEFAULTS,
        settings_title="pixels analysis",
        allow_sweep=False,
    )
    summary = cli.run_study(pixels, run).summary  # (pixels refuses a sweep when parsing)
    pca = summary["pca"]
    print(
        f"pixels: {pca['components_for']['0.95']} principal components explain 95% of the pixel "
        f"variance; streams of S={run.config.seeds} members x {summary['stream']['steps']} steps"
    )
    print(f"report: {run.out}/report.md  summary: {run.out}/summary.json  figures: {run.out}/figures/")


if __name__ == "__main__":
    main()
