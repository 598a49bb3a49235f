"""Command-line flags generated once from the config dataclasses, shared by every experiment.

Each dataclass field carries ``metadata={"flag": ..., "help": ..., "choices": ...}`` (see
:func:`rvsp_jax.config.opt`); :func:`add_dataclass_arguments` turns the fields into argparse
options and :func:`dataclass_from_args` reads them back, so a flag means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import collections.abc
import contextlib
import dataclasses
import datetime as _dt
import json
import shlex
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from rvsp_jax.config import TrainConfig, with_sweep_flags
from rvsp_jax.training import devices


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _parse_names(text: str) -> tuple[str, ...]:
    """``a,b`` -> ``("a", "b")``; ``none`` (or nothing) -> ``()``."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    return () if names == ("none",) else names


def _parse_json_object(text: str) -> dict:
    """A JSON object (``'{"momentum": 0.9}'``) -> dict; lists in it stay lists (a sweep, see
    :func:`rvsp_jax.config.with_sweep_flags`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"momentum\": 0.9}}', got {text!r}: {e}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"momentum\": 0.9}}', got {text!r}")
    return value


def _parse_floats(text: str) -> float | tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return values[0] if len(values) == 1 else values


def _field_type(cls, f: dataclasses.Field):
    if f.metadata.get("sweepable"):
        return _parse_floats
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in (int, float, str):
        return hint
    if typing.get_origin(hint) is tuple:
        return _parse_names if typing.get_args(hint)[0] is str else _parse_ints
    if typing.get_origin(hint) is collections.abc.Mapping:
        return _parse_json_object
    if args and args[0] in (int, float, str):  # Optional[X] / X | None
        return args[0]
    raise TypeError(f"no command-line type for field {cls.__name__}.{f.name}: {hint}")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls, defaults: dict | None = None, title: str | None = None
) -> None:
    """Add one option per field of dataclass ``cls``; ``defaults`` overrides the class defaults."""
    group = parser.add_argument_group(title or cls.__name__)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "flag" not in meta:
            continue
        default = defaults.get(f.name, f.default)
        if isinstance(default, tuple):
            shown = ",".join(map(str, default)) or "none"
        elif isinstance(default, collections.abc.Mapping):
            shown = json.dumps(dict(default))
        else:
            shown = default
        group.add_argument(
            meta["flag"],
            dest=f.name,
            type=_field_type(cls, f),
            default=default,
            choices=meta.get("choices"),
            metavar=meta.get("metavar"),
            help=f"{meta['help']} (default: {shown})",
        )


def dataclass_from_args(cls, args: argparse.Namespace):
    """Build ``cls`` from parsed arguments; a ValueError from validation becomes a parser error."""
    names = [f.name for f in dataclasses.fields(cls) if "flag" in f.metadata]
    return cls(**{n: getattr(args, n) for n in names})


def _out_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name the run folder, e.g. --out results/train/run1")
    return Path(text)


def add_run_arguments(parser: argparse.ArgumentParser, experiment: str) -> None:
    """The run-folder options every experiment shares: --out, --resume, --overwrite, --devices."""
    group = parser.add_argument_group("run folder")
    group.add_argument(
        "--out", type=_out_path, default=None, help=f"run folder (default: results/{experiment}/<timestamp>)"
    )
    group.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    group.add_argument(
        "--devices",
        type=int,
        default=None,
        help="CPU host devices to split members over (default: one per core; env RVSP_JAX_HOST_DEVICES)",
    )


def default_out(experiment: str) -> Path:
    return Path("results") / experiment / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def make_parser(experiment: str, description: str, train_defaults: dict | None = None) -> argparse.ArgumentParser:
    """A parser with every :class:`TrainConfig` flag and the run-folder flags."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{experiment}", description=description)
    add_dataclass_arguments(parser, TrainConfig, train_defaults, "training")
    add_run_arguments(parser, experiment)
    return parser


def parse_train_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed arguments (lists of hyperparameter values become its
    ``sweep``, :func:`rvsp_jax.config.with_sweep_flags`); invalid values exit with the parser's
    message."""
    names = [f.name for f in dataclasses.fields(TrainConfig) if "flag" in f.metadata]
    try:
        return TrainConfig(**with_sweep_flags({n: getattr(args, n) for n in names}))
    except ValueError as e:
        parser.error(str(e))


class Invocation(NamedTuple):
    """A parsed experiment command line: the training config, the study settings, the raw arguments,
    the run folder and the command as it would be typed (for manifests and reports)."""

    config: TrainConfig
    settings: Any
    args: argparse.Namespace
    out: Path
    command: str


def parse_experiment(
    experiment: str,
    description: str,
    settings_cls=None,
    argv: list[str] | None = None,
    *,
    train_defaults: dict | None = None,
    settings_title: str = "analysis",
    raw_description: bool = False,
    validate: Callable[[TrainConfig, Any], None] | None = None,
    allow_sweep: bool = True,
) -> Invocation:
    """Parse ``python -m experiments.<experiment>``: every TrainConfig flag, the run-folder flags and
    the flags of the dataclass ``settings_cls``; set the host devices; invalid values (including a
    ValueError from ``validate(config, settings)``) exit with the parser's message. A sweep (several
    values of a hyperparameter) is refused where ``allow_sweep`` is False (a study that the
    optimizer's hyperparameters cannot change)."""
    parser = make_parser(experiment, description, train_defaults)
    if raw_description:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if settings_cls is not None:
        add_dataclass_arguments(parser, settings_cls, title=settings_title)
    args = parser.parse_args(argv)
    try:
        devices.use_host_devices(args.devices)
    except (ValueError, RuntimeError) as e:
        parser.error(f"--devices / RVSP_JAX_HOST_DEVICES: {e}")
    config = parse_train_config(parser, args)
    if config.sweep_axes() and not allow_sweep:
        parser.error(
            f"{', '.join(config.sweep_axes())} got several values (a sweep), but the "
            f"{experiment} study does not depend on the optimizer's hyperparameters, so "
            "every grid point would give the same numbers: give one value each"
        )
    try:
        settings = dataclass_from_args(settings_cls, args) if settings_cls is not None else None
        if validate is not None:
            validate(config, settings)
    except ValueError as e:
        parser.error(str(e))
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    out = args.out or default_out(experiment)
    typed = sys.argv[1:] if argv is None else argv
    return Invocation(config, settings, args, out, shlex.join(["python", "-m", f"experiments.{experiment}", *typed]))


@contextlib.contextmanager
def exit_on_user_error():
    """Turn the errors a user can fix (run folder taken or unwritable, disk full, bad data, bad values,
    too little memory) into ``error: <message>`` and exit status 1, and an interruption (Ctrl-C,
    SIGTERM) into one line with the ``--resume`` command and exit status 130, without a traceback."""
    from rvsp_jax.data import DataError
    from rvsp_jax.io.record import Interrupted
    from rvsp_jax.io.runfolder import RunFolderError
    from rvsp_jax.io.store import StoreError

    try:
        yield
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print(
            "interrupted (Ctrl-C); a recorded run continues from its last checkpoint with "
            "--resume and the same options",
            file=sys.stderr,
        )
        sys.exit(130)
    except (RunFolderError, StoreError, DataError, ValueError) as e:
        sys.exit(f"error: {e}")


def run_study(study, invocation: Invocation):
    """Run the study module ``study`` for a parsed command (:func:`parse_experiment`) through
    :func:`rvsp_jax.studies.runner.run_study`, with the errors a user can fix turned into one line
    (:func:`exit_on_user_error`). Returns its ``StudyResult``; for a sweep that the study splits into
    grid points, prints one line per point and returns None."""
    from rvsp_jax.studies import per_point, runner

    with exit_on_user_error():
        result = runner.run_study(
            study,
            invocation.config,
            invocation.settings,
            invocation.out,
            resume=invocation.args.resume,
            overwrite=invocation.args.overwrite,
            command=invocation.command,
        )
    if invocation.config.sweep_axes() and not getattr(study, "SWEEPS_ITSELF", False):
        print("\n".join(per_point.describe(invocation.out, result.summary)))
        return None
    return result
