"""Train an ensemble and record its trajectories into a run folder.

    python -m experiments.train --seeds 64 --steps 2000 --probes params,updates --probe-index 32
    python -m experiments.train --out results/train/run1 --resume ...   # same options as before

Every training flag of :class:`rvsp_jax.config.TrainConfig`, every recording flag of
:class:`rvsp_jax.record.ProbeConfig`, and --out/--resume/--overwrite/--devices. Read the run with
``rvsp_jax.store.open_run(path)``.
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.record import ProbeConfig, run
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser("train", "Train an ensemble and record its trajectories.")
    cli.add_dataclass_arguments(parser, ProbeConfig, title="recording")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        probes = cli.dataclass_from_args(ProbeConfig, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    out = args.out or cli.default_out("train")
    command = shlex.join(["python", "-m", "experiments.train", *(sys.argv[1:] if argv is None else argv)])
    try:
        recorded = run(config, probes, out, resume=args.resume, overwrite=args.overwrite,
                       experiment="train", command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    accuracy = recorded.manifest.get("result", {}).get("test_accuracy", [])
    print(f"run: {out} ({recorded.manifest['status']}, {recorded.steps_completed} steps, "
          f"S={config.seeds}, arrays: {', '.join(recorded.arrays)})")
    if accuracy:
        print(f"test accuracy: mean {sum(accuracy) / len(accuracy):.4f} over {len(accuracy)} members")
    print(f"read it with: rvsp_jax.store.open_run({str(out)!r})")


if __name__ == "__main__":
    main()
