"""Is one training run representative of all runs? Ergodicity of an ensemble's training processes.

    python -m experiments.ergodicity --seeds 256                  # the defaults (a few minutes)
    python -m experiments.ergodicity --vary data --steps 2000 --burn-in 500
    python -m experiments.ergodicity --out results/ergodicity/run1 --resume   # same options again

Writes the run folder (default results/ergodicity/<timestamp>): manifest.json, the recorded arrays,
summary.json, report.md and figures/*.png|pdf. See :mod:`rvsp_jax.studies.ergodicity`.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError
from rvsp_jax.studies import ergodicity


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser("ergodicity", ergodicity.DESCRIPTION,
                             train_defaults=ergodicity.TRAIN_DEFAULTS)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    cli.add_dataclass_arguments(parser, ergodicity.ErgodicitySettings, title="ergodicity analysis")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        settings = cli.dataclass_from_args(ergodicity.ErgodicitySettings, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    out = args.out or cli.default_out("ergodicity")
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "experiments.ergodicity", *argv])
    try:
        result = ergodicity.run_study(config, settings, out, resume=args.resume,
                                      overwrite=args.overwrite, command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    counts = result.summary["verdict_counts"]
    print(f"run: {out} ({result.summary['n_members']} members, {result.summary['n_diverged']} "
          "diverged)")
    for group, c in counts.items():
        print(f"  {group}: " + ", ".join(f"{v} {k}" for k, v in c.items()))
    print(f"report: {out}/report.md")


if __name__ == "__main__":
    main()
