"""Run every experiment of the study at a small size and write results/index.md linking it all.

    python -m experiments.reproduce                       # 8 seeds, ~10 minutes on 2 CPU cores
    python -m experiments.reproduce --only pixels,spectra --seeds 4 --out results/reproduce/quick

Each experiment writes its own run folder under --out (default results/reproduce/<timestamp>);
--resume continues an interrupted reproduction (finished experiments are reused).

The sweep (tail index against learning rate) runs once per --batch-sizes value into
<out>/sweep/b<B>/ (batch size changes array shapes, so it cannot be a vmap axis), and the runs are
gathered into <out>/batch_sizes/ (rvsp_jax.studies.batch_sizes): tail index against lr, against B
and against lr/B, the figure of Simsekli et al. (2019).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from rvsp_jax import cli
from rvsp_jax.present.index import write_index
from rvsp_jax.studies import batch_sizes as batch_study
from rvsp_jax.training import devices

SMALL = {  # per experiment: the flags of its small size (--seeds is added from the command line)
    "pixels": ["--steps", "600"],
    "activations": ["--steps", "600", "--probe-every", "5"],
    "activation_compare": ["--steps", "600"],
    "spectra": ["--steps", "800"],
    "optimizers": ["--steps", "800"],
    "noise": ["--steps", "800"],
    "ergodicity": ["--steps", "800", "--burn-in", "0.25"],
    "sweep": ["--lr", "0.03,0.1,0.3", "--steps", "600"],  # once per --batch-sizes value, then gathered
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=8, help="ensemble members of every experiment (default: 8)")
    p.add_argument(
        "--only",
        default=",".join(SMALL),
        help=f"experiments to run, comma separated (default: all: {', '.join(SMALL)})",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="folder of the run folders (default: results/reproduce/<timestamp>)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted reproduction")
    p.add_argument("--overwrite", action="store_true", help="replace existing run folders")
    p.add_argument("--devices", type=int, default=None, help="CPU host devices (default: one per core)")
    p.add_argument(
        "--batch-sizes",
        default="32,128",
        help="batch sizes of the sweep, comma separated: "
        "one sweep run each, gathered into <out>/batch_sizes (default: 32,128)",
    )
    args = p.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(SMALL))
    if unknown:
        p.error(f"unknown experiment(s) {unknown}; valid: {', '.join(SMALL)}")
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        p.error(f"--batch-sizes must be distinct integers >= 1, got {args.batch_sizes!r}")
    devices.use_host_devices(args.devices)
    out = args.out or cli.default_out("reproduce")
    for name in chosen:
        runs = (
            [(out / name, [])] if name != "sweep" else [(out / name / f"b{b}", ["--batch-size", str(b)]) for b in sizes]
        )
        for folder, extra in runs:
            flags = ["--seeds", str(args.seeds), *SMALL[name], *extra, "--out", str(folder)]
            if args.resume and (folder / "manifest.json").exists():
                flags.append("--resume")
            elif args.overwrite:
                flags.append("--overwrite")
            print(f"== {name}: python -m experiments.{name} {' '.join(flags)}", flush=True)
            importlib.import_module(f"experiments.{name}").main(flags)
        if name == "sweep":
            with cli.exit_on_user_error():
                gathered = batch_study.gather(
                    [folder for folder, _ in runs],
                    out / "batch_sizes",
                    command=f"python -m experiments.reproduce --only sweep --batch-sizes {args.batch_sizes}",
                )
            print(f"== batch sizes {sizes} gathered: {gathered / 'report.md'}", flush=True)
    index = write_index(out, title="rvsp-jax: the study at a small size")
    print(f"index of this reproduction: {index}")
    results = Path("results")
    if results.resolve() in out.resolve().parents:
        print(f"index of every run under results/: {write_index(results)}")


if __name__ == "__main__":
    main()
