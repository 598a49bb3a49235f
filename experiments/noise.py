"""The optimizer as a stochastic process: minibatch gradient noise, its tail index across parameters
vs along iterations, and the gradient noise scale B_simple over training (section 6 of the RVSP study).

    python -m experiments.noise                          # 16 members, 3,000 SGD steps (~1 min, 2 cores)
    python -m experiments.noise --seeds 32 --noise-steps 20 --minibatches 512 --batch-size 64
    python -m experiments.noise --out results/noise/run1 --resume     # reuse the recording, re-analyse

Every training flag of :class:`rvsp_jax.config.TrainConfig`, the flags of
:class:`rvsp_jax.studies.noise.NoiseSettings`, and --out/--resume/--overwrite/--devices. Writes the
run folder (manifest, recorded parameters and gradients), summary.json, report.md and figures/.
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError
from rvsp_jax.studies import noise


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(noise.EXPERIMENT, __doc__.splitlines()[0], noise.TRAIN_DEFAULTS)
    cli.add_dataclass_arguments(parser, noise.NoiseSettings, title="gradient noise")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        settings = cli.dataclass_from_args(noise.NoiseSettings, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    out = args.out or cli.default_out(noise.EXPERIMENT)
    command = shlex.join(["python", "-m", "experiments.noise", *(sys.argv[1:] if argv is None else argv)])
    try:
        noise.run_study(config, settings, out, resume=args.resume, overwrite=args.overwrite,
                        command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"noise: {out}\n  report: {out / 'report.md'}\n  summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
