"""Where the data files come from: explicit folder, environment, user cache, bundled copy,
system package, a download from the canonical mirrors, or tensorflow_datasets.

``resolve`` picks the folder ``load`` reads; ``download`` fetches missing files into a folder;
``read_tfds`` adapts tensorflow_datasets. Nothing here decodes or verifies payloads except a
download, which checks each .gz against its published md5 before moving it into place.
"""

import hashlib
import http.client
import importlib.resources
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from rvsp_jax.data.checksums import PUBLISHED, IdxFile, check_payload
from rvsp_jax.data.errors import DataError
from rvsp_jax.data.idx import decompress

try:  # Python >= 3.11
    from importlib.resources.abc import Traversable
except ImportError:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ENV_VAR",
    "MIRRORS",
    "SOURCES",
    "SYSTEM_DIRS",
    "Location",
    "bundled_dir",
    "cache_dir",
    "download",
    "locate",
    "remedy",
    "read_tfds",
    "resolve",
]

logger = logging.getLogger("rvsp_jax.data")

Folder = Path | Traversable

ENV_VAR = "RVSP_JAX_DATA_DIR"
"""Environment variable naming a folder that holds the four files, directly or in ``<dataset>/``."""

SOURCES = ("auto", "bundled", "system", "cache", "download", "tfds")

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
"""Data set -> base URLs serving the original .gz files, tried in order."""

SYSTEM_DIRS: dict[str, Path] = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
"""Data set -> folder where a system package installs it."""

SYSTEM_PACKAGES: dict[str, str] = {"fashion_mnist": "dataset-fashion-mnist"}
"""Data set -> the Debian/Ubuntu package that installs it in ``SYSTEM_DIRS``."""

BUNDLED: dict[str, str] = {"mnist": "mnist"}
"""Data set -> its folder inside this package (package data)."""

CONNECT_TIMEOUT_S = 5.0
"""Socket timeout of a download (connect and each read), in seconds."""

_CHUNK = 1 << 20


class Location(NamedTuple):
    """A folder holding a data set's four files, and a human-readable account of it."""

    folder: Folder
    description: str


def cache_dir(name: str) -> Path:
    """The user cache folder of data set ``name``: ``$XDG_CACHE_HOME/rvsp_jax/<name>``, or
    ``~/.cache/rvsp_jax/<name>`` when XDG_CACHE_HOME is unset or not absolute (XDG spec)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "rvsp_jax" / name


def bundled_dir(name: str) -> Folder | None:
    """The copy of ``name`` shipped inside this package, or None if there is none."""
    if name not in BUNDLED:
        return None
    return importlib.resources.files(__package__).joinpath(BUNDLED[name])


def locate(folder: Folder, name: str) -> tuple[Folder | None, ...]:
    """The four files of ``name`` in ``folder`` (``<stem>.gz`` preferred, else uncompressed
    ``<stem>``), in ``PUBLISHED[name]`` order; None for each one missing."""
    found = []
    for spec in PUBLISHED[name]:
        hits = [folder.joinpath(n) for n in (spec.gz_name, spec.stem)]
        found.append(next((h for h in hits if h.is_file()), None))
    return tuple(found)


def _missing(folder: Folder, name: str) -> list[str]:
    if not folder.is_dir():
        return [spec.gz_name for spec in PUBLISHED[name]]
    return [s.gz_name for s, f in zip(PUBLISHED[name], locate(folder, name)) if f is None]


def _file_list(name: str) -> str:
    return ", ".join(spec.gz_name for spec in PUBLISHED[name])


def remedy(name: str) -> str:
    """How a user gets the files of ``name`` without this module's help (for error messages)."""
    ways = []
    if name in SYSTEM_PACKAGES:
        ways.append(f"apt-get install {SYSTEM_PACKAGES[name]} (installs them in {SYSTEM_DIRS[name]})")
    if name in BUNDLED:
        ways.append("reinstall rvsp-jax, whose package ships them")
    mirror = MIRRORS[name][0] if MIRRORS.get(name) else "a mirror"
    ways.append(f"download the four files ({_file_list(name)}) from {mirror} into {cache_dir(name)}")
    ways.append(f"pass --data-dir (load(data_dir=...)) or set {ENV_VAR} to a folder holding them")
    return "To get the files: " + "; or ".join(ways) + "."


def _complete(folder: Folder, name: str, label: str) -> bool:
    """True if ``folder`` holds all four files; False if none; DataError if only some."""
    missing = _missing(folder, name)
    if missing and len(missing) < len(PUBLISHED[name]):
        raise DataError(
            f"{label} {folder} holds only some of the {name} files: missing {', '.join(missing)}. "
            f"Put all four ({_file_list(name)}; .gz or uncompressed) there."
        )
    return not missing


def _search_root(root: Path, name: str, label: str) -> Location | None:
    """``root/<name>/`` or ``root`` itself, whichever holds the four files, else None."""
    for folder in (root / name, root):
        if _complete(folder, name, label):
            return Location(folder.resolve(), f"{label} {folder.resolve()}")
    return None


def resolve(name: str, *, data_dir: str | os.PathLike | None = None, source: str = "auto") -> Location:
    """The folder ``load`` reads data set ``name`` from (downloading into it if need be).

    source="auto" tries, in order: ``data_dir`` (used alone when given: a folder lacking the
    files is an error, not a fall-through); the folder in $RVSP_JAX_DATA_DIR (files directly or
    in ``<name>/``); the user cache ``cache_dir(name)``; the bundled copy (mnist) or the system
    package's folder (fashion_mnist); a download from ``MIRRORS[name]`` into the user cache.
    source="bundled" | "system" | "cache" use only that place; "download" fetches any missing
    files into the user cache (or ``data_dir``) first. "tfds" has no folder: see ``read_tfds``.
    Raises DataError saying where it looked, what failed, and how to get the files.
    """
    if source not in SOURCES or source == "tfds":
        raise ValueError(f"source={source!r} has no folder; choose one of {SOURCES[:-1]}")
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if source == "download":
            used = download(name, root)
            return Location(root.resolve(), _downloaded(root.resolve(), used, "data_dir"))
        if source != "auto":
            raise ValueError(
                f"data_dir is used only with source='auto' or 'download', not source={source!r}; drop one of the two"
            )
        if not root.is_dir():
            raise DataError(f"data_dir {root} is not a folder. {remedy(name)}")
        found = _search_root(root, name, "data_dir")
        if found is None:
            raise DataError(
                f"data_dir {root} does not hold the {name} files ({_file_list(name)}; .gz or "
                f"uncompressed, directly or in {root / name}). {remedy(name)}"
            )
        return found

    if source == "auto":
        return _resolve_auto(name)
    if source == "bundled":
        return _bundled(name, required=True)
    if source == "system":
        return _system(name, required=True)
    cache = cache_dir(name)
    if source == "download":
        used = download(name, cache)
        return Location(cache, _downloaded(cache, used, "user cache"))
    if not _complete(cache, name, "user cache"):  # source == "cache"
        raise DataError(
            f"user cache {cache} does not hold the {name} files; fetch them with "
            f"load({name!r}, source='download') or: {remedy(name)}"
        )
    return Location(cache, f"user cache {cache}")


def _resolve_auto(name: str) -> Location:
    looked = []
    env = os.environ.get(ENV_VAR, "")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(f"{ENV_VAR}={env} is not a folder; fix or unset it. {remedy(name)}")
        found = _search_root(root, name, f"{ENV_VAR} folder")
        if found is not None:
            return found
        looked.append(f"{ENV_VAR} folder {root} (no {name} files)")
    cache = cache_dir(name)
    if not _missing(cache, name):  # a partial cache is left for download to complete
        return Location(cache, f"user cache {cache}")
    looked.append(f"user cache {cache} (missing {', '.join(_missing(cache, name))})")
    for place in (_bundled, _system):
        found = place(name, required=False)
        if found is not None:
            return found
    if name in SYSTEM_DIRS:
        looked.append(f"system folder {SYSTEM_DIRS[name]} (no {name} files)")
    if name in BUNDLED:
        looked.append("bundled copy (missing from this install)")
    logger.debug("%s not found locally (%s); downloading", name, "; ".join(looked))
    try:
        used = download(name, cache)
    except DataError as exc:
        raise DataError(f"{name} not found locally (looked in: {'; '.join(looked)}), and {exc}") from exc
    return Location(cache, _downloaded(cache, used, "user cache"))


def _bundled(name: str, *, required: bool) -> Location | None:
    folder = bundled_dir(name)
    if folder is None:
        if required:
            raise DataError(f"no bundled copy of {name}; bundled: {', '.join(BUNDLED)}. Use source='auto'.")
        return None
    if _complete(folder, name, "bundled copy"):
        folder = folder.resolve() if isinstance(folder, Path) else folder
        return Location(folder, f"bundled copy ({folder})")
    if required:
        raise DataError(f"the bundled copy of {name} ({folder}) is missing. {remedy(name)}")
    return None


def _system(name: str, *, required: bool) -> Location | None:
    folder = SYSTEM_DIRS.get(name)
    if folder is None:
        if required:
            raise DataError(f"no system package provides {name} (known: {', '.join(SYSTEM_DIRS)}). Use source='auto'.")
        return None
    if _complete(folder, name, "system folder"):
        return Location(folder, f"system package {SYSTEM_PACKAGES.get(name, name)} ({folder})")
    if required:
        raise DataError(f"system folder {folder} does not hold the {name} files. {remedy(name)}")
    return None


def _downloaded(folder: Path, used: tuple[str, ...], label: str) -> str:
    if not used:
        return f"{label} {folder} (all files present, nothing downloaded)"
    return f"downloaded from {', '.join(used)} into {folder}"


def download(name: str, folder: str | os.PathLike, *, mirrors: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Fetch the files of ``name`` missing from ``folder`` (created if need be).

    Each file is tried on every mirror in turn (``MIRRORS[name]`` unless ``mirrors`` is given),
    with a ``CONNECT_TIMEOUT_S`` socket timeout and a tqdm progress bar (shown on a terminal
    only). It is streamed to a temporary file in ``folder``, checked against the published md5
    of the .gz (a recompressed copy is accepted when its decompressed payload has the published
    sha256 instead), and moved into place with ``os.replace``, so a failed or concurrent
    download never leaves a partial file under the final name. The first file that no mirror
    serves stops it (fail fast). Returns the mirrors used (empty if nothing was missing).
    Raises DataError listing each attempt's error and how to get the files by hand.
    """
    folder = Path(folder)
    mirrors = MIRRORS.get(name, ()) if mirrors is None else mirrors
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create download folder {folder}: {exc}. {remedy(name)}") from exc
    used: list[str] = []
    for spec, present in zip(PUBLISHED[name], locate(folder, name)):
        if present is not None:
            continue
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + spec.gz_name
            try:
                _fetch(url, folder / spec.gz_name, spec)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # URLError/timeouts are OSErrors; DataError (bad checksum) is a ValueError
                failures.append(f"{url}: {exc}")
                logger.debug("download of %s failed: %s", url, exc)
                continue
            if base not in used:
                used.append(base)
            break
        else:
            tried = "; ".join(failures) if failures else "no mirrors configured"
            raise DataError(f"download of {name} file {spec.gz_name} failed ({tried}). {remedy(name)}")
    return tuple(used)


def _fetch(url: str, dest: Path, spec: IdxFile) -> None:
    """Stream ``url`` into ``dest`` atomically after checking its published md5 (see download)."""
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            md5 = hashlib.md5(usedforsecurity=False)
            received = 0
            with (
                os.fdopen(fd, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=None,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total is not None and received != total:
                raise DataError(f"{url}: truncated download: {received} of {total} bytes")
            if md5.hexdigest() != spec.md5_gz:
                # not the original .gz: accept only a recompressed copy of the very same payload
                payload = decompress(Path(tmp).read_bytes(), origin=url)
                try:
                    check_payload(payload, spec, origin=url)
                except DataError as exc:
                    raise DataError(
                        f"{url}: md5 of the download is {md5.hexdigest()}, published {spec.md5_gz}, and {exc}"
                    ) from None
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_tfds(name: str) -> dict[str, np.ndarray]:
    """Data set ``name`` read through tensorflow_datasets (``tfds.load(name, batch_size=-1)``).

    Returns ``{"train_images": uint8 [60000, 28, 28], "train_labels": uint8 [60000], ...}``
    (the ``Dataset`` fields). The arrays cannot be checked against the published IDX sums, and
    tfds stores examples in its own order, so the order differs from the IDX files'.
    Raises DataError when tensorflow_datasets is not installed (``pip install "rvsp-jax[tfds]"``)
    or returns arrays of unexpected shape or labels outside 0..9.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            'source="tfds" needs tensorflow_datasets, which is not installed: '
            'pip install "rvsp-jax[tfds]" (or use source="auto", which reads the IDX files)'
        ) from exc
    splits = tfds.as_numpy(tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True))
    arrays = {}
    for (images, labels), prefix in zip(splits, ("train", "test")):
        arrays[f"{prefix}_images"] = np.asarray(images)
        arrays[f"{prefix}_labels"] = np.asarray(labels)
    out = {}
    for spec in PUBLISHED[name]:
        x = arrays[spec.field]
        if x.ndim == len(spec.shape) + 1 and x.shape[-1] == 1:  # images [N, 28, 28, 1]
            x = x[..., 0]
        if x.shape != spec.shape:
            raise DataError(f"tfds {name} {spec.field}: shape {x.shape}, expected {spec.shape}")
        top = 9 if x.ndim == 1 else 255
        if x.min() < 0 or x.max() > top:
            raise DataError(f"tfds {name} {spec.field}: values outside 0..{top}")
        out[spec.field] = x.astype(np.uint8)
    return out
