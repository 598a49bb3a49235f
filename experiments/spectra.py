"""Parameter updates as time series: ACF and Welch PSD per layer, spectral slope, smooth vs jittery,
ADF/KPSS by phase with Benjamini-Hochberg control (section 4 of the RVSP study).

    python -m experiments.spectra                      # 32 members, 4,000 SGD steps (~25 s, 2 cores)
    python -m experiments.spectra --seeds 64 --steps 6000 --probe-index 32 --optimizer adam --lr 1e-3
    python -m experiments.spectra --out results/spectra/run1 --resume    # reuse the recording, re-analyse

Every training flag of :class:`rvsp_jax.config.TrainConfig`, the analysis flags of
:class:`rvsp_jax.studies.spectra.SpectraSettings`, and --out/--resume/--overwrite/--devices. Writes
the run folder (manifest, recorded updates), summary.json, report.md and figures/.
"""

from __future__ import annotations

import shlex
import sys

from rvsp_jax import cli, devices
from rvsp_jax.runfolder import RunFolderError
from rvsp_jax.store import StoreError
from rvsp_jax.studies import spectra


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(spectra.EXPERIMENT, __doc__.splitlines()[0], spectra.TRAIN_DEFAULTS)
    cli.add_dataclass_arguments(parser, spectra.SpectraSettings, title="analysis")
    args = parser.parse_args(argv)
    devices.use_host_devices(args.devices)
    config = cli.parse_train_config(parser, args)
    try:
        settings = cli.dataclass_from_args(spectra.SpectraSettings, args)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    out = args.out or cli.default_out(spectra.EXPERIMENT)
    command = shlex.join(["python", "-m", "experiments.spectra", *(sys.argv[1:] if argv is None else argv)])
    try:
        spectra.run_study(config, settings, out, resume=args.resume, overwrite=args.overwrite,
                          command=command)
    except (RunFolderError, StoreError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"spectra: {out}\n  report: {out / 'report.md'}\n  summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
