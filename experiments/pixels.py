"""Section 1 of the RVSP study: pixels as random variables, the minibatch stream as a process.

    python -m experiments.pixels --seeds 32 --epochs 1
    python -m experiments.pixels --out results/pixels/run1 --resume      # redo the analysis

Nothing is trained: the streams are the trainer's real minibatch orders for the training flags
given (--seeds, --base-seed, --vary, --batch-size, --steps/--epochs, --dataset), shuffled and
label-sorted. Writes manifest.json, arrays.npz, summary.json, report.md and figures/ to --out
(default results/pixels/<timestamp>).
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.studies import pixels

DEFAULTS = {"seeds": 32}


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser("pixels", "Pixel statistics and the minibatch stream as a random process.",
                             train_defaults=DEFAULTS)
    cli.add_dataclass_arguments(parser, pixels.PixelSettings, title="pixels analysis")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        settings = cli.dataclass_from_args(pixels.PixelSettings, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to redo")
    out = args.out or cli.default_out("pixels")
    command = shlex.join(["python", "-m", "experiments.pixels", *(sys.argv[1:] if argv is None else argv)])
    try:
        analysis = pixels.run(config, settings, out, resume=args.resume, overwrite=args.overwrite,
                              command=command)
    except (RunFolderError, ValueError) as e:
        sys.exit(f"error: {e}")
    pca = analysis.summary["pca"]
    print(f"pixels: {pca['components_for']['0.95']} principal components explain 95% of the pixel "
          f"variance; streams of S={config.seeds} members x {analysis.summary['stream']['steps']} steps")
    print(f"report: {out}/report.md  summary: {out}/summary.json  figures: {out}/figures/")


if __name__ == "__main__":
    main()
