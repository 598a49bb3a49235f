"""Section 2 of the RVSP study: hidden activations as transformed random variables over training.

    python -m experiments.activations --seeds 16 --epochs 2 --activation sigmoid
    python -m experiments.activations --activation relu --probe-every 5
    python -m experiments.activations --out results/activations/run1 --resume   # redo the analysis

Trains an ensemble recording every hidden unit's pre-activation and activation on a fixed probe
batch; reports per-unit and per-layer quantiles, Wasserstein drift from step 0, stationarity by
phase and saturated/dead fractions. Writes the run folder (manifest.json, arrays/), summary.json,
report.md and figures/ to --out (default results/activations/<timestamp>).
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError
from rvsp_jax.studies import activations

DEFAULTS = {"seeds": 16, "epochs": 2.0}


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser("activations", "Hidden activations as transformed random variables.",
                             train_defaults=DEFAULTS)
    cli.add_dataclass_arguments(parser, activations.ActivationSettings, title="activations study")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        settings = cli.dataclass_from_args(activations.ActivationSettings, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    out = args.out or cli.default_out("activations")
    command = shlex.join(["python", "-m", "experiments.activations", *(sys.argv[1:] if argv is None else argv)])
    try:
        analysis = activations.run(config, settings, out, resume=args.resume, overwrite=args.overwrite,
                                   command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    s = analysis.summary
    print(f"activations ({config.activation}): S={config.seeds} ({s['members']['diverged']} diverged), "
          f"{s['recorded_steps']} recordings; test accuracy {s['test_accuracy'].mean:.4f}")
    print(f"report: {out}/report.md  summary: {out}/summary.json  figures: {out}/figures/")


if __name__ == "__main__":
    main()
