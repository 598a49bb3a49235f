"""SGD vs momentum vs Adam (any optax optimizer): update ACF and PSD side by side, with the
optimizer-filter prediction from the gradient PSD overlaid (section 5 of the RVSP study).

    python -m experiments.optimizers                              # sgd, momentum, adam (~45 s, 2 cores)
    python -m experiments.optimizers --variants sgd,nesterov,rmsprop:1e-3 --seeds 32
    python -m experiments.optimizers --out results/optimizers/run1 --resume   # reuse finished variants

Every training flag of :class:`rvsp_jax.config.TrainConfig` (shared by all variants; --optimizer is
replaced by --variants), the flags of :class:`rvsp_jax.studies.optimizers.OptimizerSettings`, and
--out/--resume/--overwrite/--devices. Writes runs/<variant>/ (one recorded run each), summary.json,
report.md and figures/.
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError
from rvsp_jax.studies import optimizers


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(optimizers.EXPERIMENT, __doc__.splitlines()[0], optimizers.TRAIN_DEFAULTS)
    cli.add_dataclass_arguments(parser, optimizers.OptimizerSettings, title="comparison")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    if config.optimizer != "sgd":
        parser.error("--optimizer has no effect here: name the optimizers in --variants")
    try:
        settings = cli.dataclass_from_args(optimizers.OptimizerSettings, args)
        optimizers.parse_variants(settings.variants, config)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the study folder to continue")
    out = args.out or cli.default_out(optimizers.EXPERIMENT)
    command = shlex.join(["python", "-m", "experiments.optimizers",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        optimizers.run_study(config, settings, out, resume=args.resume, overwrite=args.overwrite,
                             command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"optimizers: {out}\n  report: {out / 'report.md'}\n  summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
