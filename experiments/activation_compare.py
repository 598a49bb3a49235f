"""Section 3 of the RVSP study: sigmoid vs ReLU (and tanh) as a paired design.

    python -m experiments.activation_compare --seeds 16 --epochs 1
    python -m experiments.activation_compare --activations sigmoid,relu --optimizer sgd \
        --opt-kwargs '{"momentum": 0.9}' --lr 0.02
    python -m experiments.activation_compare --out results/activation_compare/run1 --resume

Trains one ensemble per activation with otherwise identical flags (same seeds: same initial weights
and same minibatch order for member s of every variant), recording gradients and updates every step;
reports per-layer distributions, variances with paired tests, update PSDs and smooth-vs-jittery
scores, and stationarity fractions. Writes runs/<activation>/, summary.json, report.md and figures/ to
--out (default results/activation_compare/<timestamp>). --activation is ignored (see --activations).
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError
from rvsp_jax.studies import activation_compare as compare

DEFAULTS = {"seeds": 16, "epochs": 1.0}


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser("activation_compare", "Activation functions compared as a paired design.",
                             train_defaults=DEFAULTS)
    cli.add_dataclass_arguments(parser, compare.CompareSettings, title="activation comparison")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        settings = cli.dataclass_from_args(compare.CompareSettings, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the study folder to continue")
    out = args.out or cli.default_out("activation_compare")
    command = shlex.join(["python", "-m", "experiments.activation_compare",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        analysis = compare.run(config, settings, out, resume=args.resume, overwrite=args.overwrite,
                               command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    s = analysis.summary
    print("test accuracy: " + ", ".join(f"{v} {s['test_accuracy'][v].mean:.4f}" for v in s["variants"])
          + f" (S={config.seeds} pairs)")
    print(f"report: {out}/report.md  summary: {out}/summary.json  figures: {out}/figures/")


if __name__ == "__main__":
    main()
