"""Run-folder lifecycle: the manifest (atomic JSON) and the checks made before training starts.

An existing run folder is never replaced without ``overwrite``, and only if it is one of ours: its
``manifest.json`` carries this package's format name (:data:`FORMAT`) and every other entry in it is
one a run writes (:data:`RUN_ENTRIES`). ``overwrite`` also refuses an empty ``--out``, the current
directory or one of its parents, the file-system root and the home folder. The old run is first
moved aside (:func:`create`) and deleted only once the new one has started (:func:`discard`), so a
refusal or a crash in between loses nothing. ``resume`` needs the same configuration as the
manifest. A folder that cannot be written, or a disk without room for the estimated size of the
recording, is refused before any training, with the estimate in the message.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

from rvsp_jax.io import atomic

MANIFEST = "manifest.json"
FORMAT = "rvsp-jax run 1"
RUN_ENTRIES = frozenset(
    {
        MANIFEST,
        "arrays",
        "checkpoint.npz",
        "final.npz",
        "summary.json",
        "report.md",
        "figures",
        "runs",
        "points",
        "lock",
    }
)
"""Names a run folder (or a study folder) holds; with ``overwrite`` anything else makes it refuse.
Temporary files of atomic writes (``*.tmp``) are also accepted."""
ASIDE_PREFIX = ".replaced-"
"""Moved-aside old runs are ``<parent>/.<name>.replaced-<pid>`` until the new run has started."""
DISK_MARGIN = 1.1
DISK_SLACK = 4 << 20  # bytes added to every estimate (manifests, zarr metadata, filesystem blocks)


class RunFolderError(ValueError):
    """A run folder cannot be used as asked; the message names the problem and the remedy."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to a temporary file next to ``path``, then rename it over ``path``."""
    atomic.write_text(path, _dumps(obj) + "\n")


def _dumps(obj, indent: str = "") -> str:
    """JSON with one key per line and every list on one line (long index lists stay readable)."""
    if not isinstance(obj, dict) or not obj:
        return json.dumps(obj)
    inner = indent + "  "
    items = ",\n".join(f"{inner}{json.dumps(str(k))}: {_dumps(v, inner)}" for k, v in obj.items())
    return "{\n" + items + "\n" + indent + "}"


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json_atomic(Path(folder) / MANIFEST, manifest)


REQUIRED_KEYS = ("format", "status")
RUN_KEYS = ("config", "probe_config", "probes", "arrays", "steps_completed", "total_steps", "members")
"""Keys a recorded run's manifest has besides :data:`REQUIRED_KEYS` (a study folder's has others)."""


def read_manifest(folder: Path, keys: tuple[str, ...] = ()) -> dict:
    """The manifest of a run folder; RunFolderError when the folder is not a readable run folder.

    A manifest that is not UTF-8 JSON, not an object, of another format or without ``status`` is
    refused with its path and the remedy (it is never repaired or deleted here)."""
    path = Path(folder) / MANIFEST
    damaged = (
        f"; the run folder {folder} is damaged: restore {MANIFEST} from a backup, or delete "
        "the folder yourself (or choose another --out) to start anew"
    )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise RunFolderError(f"{folder} is not a run folder: it has no {MANIFEST}") from None
    except IsADirectoryError:
        raise RunFolderError(f"{path} is a folder, not a manifest; {folder} is not a run folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} is not valid JSON ({e}){damaged}") from None
    except OSError as e:
        raise RunFolderError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict):
        raise RunFolderError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object{damaged}")
    if manifest.get("format") != FORMAT:
        raise RunFolderError(f"{path} is not an {FORMAT!r} manifest (format {manifest.get('format')!r})")
    missing = [k for k in (*REQUIRED_KEYS, *keys) if k not in manifest]
    if missing:
        raise RunFolderError(f"{path} lacks {', '.join(missing)}{damaged}")
    return manifest


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that determine a run's numbers and files."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "zarr"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _status(folder: Path) -> str:
    try:
        m = read_manifest(folder)
    except RunFolderError:
        return "not a run folder"
    return f"status {m.get('status')}, {m.get('steps_completed')}/{m.get('total_steps')} steps"


def _unsafe_target(out: Path) -> str | None:
    """Why ``out`` must never be replaced (root, home, the working directory or a parent of it)."""
    if str(out).strip() == "" or str(out) == ".":
        return "it is empty or '.', the current directory"
    resolved = Path(os.path.realpath(out))
    cwd = Path(os.path.realpath(os.getcwd()))
    if resolved == cwd or resolved in cwd.parents:
        return f"it is the current directory {cwd} or one of its parents"
    if resolved == Path(resolved.anchor) or len(resolved.parts) <= 2:
        return f"it resolves to {resolved}, the file-system root or a folder just below it"
    home = Path(os.path.realpath(os.path.expanduser("~")))
    if resolved == home or resolved in home.parents:
        return f"it is the home folder {home} or one of its parents"
    return None


def _foreign_entries(out: Path) -> list[str]:
    """Entries of ``out`` that no run writes (see :data:`RUN_ENTRIES`)."""
    return sorted(e.name for e in out.iterdir() if e.name not in RUN_ENTRIES and not e.name.endswith(".tmp"))


def check_new(out: Path, overwrite: bool) -> None:
    """Refuse to start a new run in ``out`` if that would replace something without ``overwrite``,
    or anything that is not one of our run folders even with it.

    A missing or empty folder is fine; with ``overwrite`` so is a run folder whose manifest has our
    format and which holds nothing but what a run writes.
    """
    out = Path(out)
    if str(out).strip() == "":
        raise RunFolderError("--out is empty; name the run folder, e.g. --out results/train/run1")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder; choose another --out")
    if overwrite:
        reason = _unsafe_target(out)
        if reason is not None:
            raise RunFolderError(
                f"--overwrite refuses --out {str(out)!r}: {reason}; name a run "
                "folder of its own, e.g. --out results/train/run1"
            )
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise RunFolderError(
            f"run folder {out} already exists ({_status(out)}); pass --resume to "
            "continue it, --overwrite to replace it, or choose another --out"
        )
    owner = lock_owner(out)
    if owner is not None:
        raise RunFolderError(
            f"run folder {out} is in use by {owner}; --overwrite will not replace a "
            "run that is training: wait for it to finish or stop it first"
        )
    if not (out / MANIFEST).exists():
        raise RunFolderError(
            f"{out} is not empty and has no {MANIFEST}: it is not a run folder, "
            "so --overwrite will not delete it; choose another --out"
        )
    try:
        read_manifest(out)
    except RunFolderError as e:
        raise RunFolderError(
            f"{e}; it is not an rvsp-jax run folder, so --overwrite will not delete it; choose another --out"
        ) from None
    foreign = _foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunFolderError(
            f"{out} holds files a run does not write ({shown}), so --overwrite will "
            "not delete it; move them out or choose another --out"
        )


def check_resume(out: Path, config: dict, probe_config: dict, defaults: dict | None = None) -> dict:
    """The manifest of the run to continue in ``out``; refuses when it was made with another config.

    ``defaults``: config values that a manifest written before a field existed is taken to have."""
    out = Path(out)
    if not out.exists():
        raise RunFolderError(f"nothing to resume: {out} does not exist (drop --resume to start it)")
    manifest = read_manifest(out, RUN_KEYS)
    diffs = [
        f"{section}.{k}: run folder has {old[k]!r}, this command gives {new[k]!r}"
        for section, old, new in (
            ("config", {**(defaults or {}), **manifest["config"]}, config),
            ("probes", manifest["probe_config"], probe_config),
        )
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    if diffs:
        raise RunFolderError(
            f"cannot resume {out} with a different configuration:\n  "
            + "\n  ".join(diffs)
            + "\nrepeat the original options, or start a new run (another --out, "
            "or --overwrite)"
        )
    return manifest


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def disk_slack(needed_bytes: int) -> int:
    """Room asked for beyond an estimate: 10% of it plus 4 MiB (manifests, zarr metadata, file
    system blocks); it scales with the run, so a small run fits on a small disk."""
    return int(needed_bytes * (DISK_MARGIN - 1)) + DISK_SLACK


def check_writable(out: Path, needed_bytes: int) -> None:
    """Refuse when ``out`` cannot be created or written, or its disk has less free space than
    ``needed_bytes`` + :func:`disk_slack` (the estimate is in the message)."""
    out = Path(out)
    base = _existing_ancestor(out)
    if not base.is_dir():
        raise RunFolderError(f"cannot create run folder {out}: {base} is a file, not a folder; choose another --out")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"cannot write run folder {out}: {base} is not writable; choose another --out or fix its permissions"
        )
    needed = needed_bytes + disk_slack(needed_bytes)
    free = shutil.disk_usage(base).free
    if free < needed:
        raise RunFolderError(
            f"not enough free disk for {out}: the recording still needs about {human_bytes(needed)} "
            f"(estimate {human_bytes(needed_bytes)} + 10% + {human_bytes(DISK_SLACK)}) but "
            f"{base} has {human_bytes(free)} free; free space, choose another --out, or record "
            "less (--probe-index, --probe-every, --probes, --steps)"
        )


def create(out: Path, overwrite: bool) -> Path | None:
    """Make an empty run folder ``out``; with ``overwrite``, first move the previous run folder
    aside (call :func:`check_new` before). Returns where the old run went (None if there was none);
    pass it to :func:`discard` once the new run has started, or to :func:`restore` if it failed."""
    out = Path(out)
    aside = None
    if overwrite and out.is_dir() and any(out.iterdir()):
        aside = out.with_name(f".{out.name}{ASIDE_PREFIX}{os.getpid()}")
        if aside.exists():
            raise RunFolderError(
                f"cannot move the old run {out} aside: {aside} exists (left by an "
                "earlier --overwrite that was interrupted); check it, remove it, "
                "then run again"
            )
        try:
            os.rename(out, aside)
        except OSError as e:
            raise RunFolderError(f"cannot move the old run {out} aside to {aside}: {e}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        restore(out, aside)
        raise RunFolderError(f"cannot create run folder {out}: {e}") from None
    return aside


def discard(aside: Path | None) -> None:
    """Delete an old run moved aside by :func:`create` (only such a folder: its name says so)."""
    if aside is not None and aside.name.startswith(".") and ASIDE_PREFIX in aside.name:
        shutil.rmtree(aside, ignore_errors=True)


def restore(out: Path, aside: Path | None) -> None:
    """Put an old run moved aside by :func:`create` back in ``out`` (after the new run failed to
    start); what the new run had written in ``out`` is removed first (only files a run writes)."""
    if aside is None or not aside.exists():
        return
    out = Path(out)
    if out.exists():
        if _foreign_entries(out):
            return  # someone put files there meanwhile: leave both folders as they are
        shutil.rmtree(out, ignore_errors=True)
    os.rename(aside, out)


LOCK = "lock"


class RunLock:
    """An exclusive lock on a run folder: ``flock`` on ``<folder>/lock``, which holds the owner's
    pid, host and start time for the refusal message.

    The kernel releases a ``flock`` when its process dies, so a lock left by a killed run (kill -9,
    a crash, a reboot) is stale by construction and the next :meth:`acquire` simply takes it; the
    file itself is left in place (it names the last owner). Within one process the same folder can
    be locked once (a second lock of it is refused like another process's).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._file = None

    def acquire(self) -> RunLock:
        import fcntl

        try:
            f = open(self.path, "a+", encoding="utf-8")
        except OSError as e:
            raise RunFolderError(f"cannot lock run folder {self.folder}: {e}") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip()
            f.close()
            raise RunFolderError(
                f"run folder {self.folder} is in use by {_describe_owner(owner)}; "
                "wait for it to finish or stop it, or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": platform.node(), "started": _now_text()}))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._file is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def _now_text() -> str:
    import datetime as _dt

    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _describe_owner(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"process {owner['pid']} on {owner['host']} (since {owner['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def lock_owner(folder: Path) -> str | None:
    """Who holds the lock of ``folder`` now (a description), or None when nobody does."""
    import fcntl

    path = Path(folder) / LOCK
    try:
        f = open(path, encoding="utf-8")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _describe_owner(f.read().strip())
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def lock_new(out: Path) -> RunLock:
    """Lock the freshly created (empty) run folder ``out``; refuses when another process holds it or
    has meanwhile put a run there (two commands started into one ``--out`` at once)."""
    lock = RunLock(out).acquire()
    others = sorted(e.name for e in Path(out).iterdir() if e.name != LOCK)
    if others:
        lock.release()
        raise RunFolderError(
            f"run folder {out} was just created by another process ({_status(Path(out))}); choose another --out"
        )
    return lock
