"""The ``Dataset`` record, ``load`` (resolve, read, verify, cache) and ``to_model_inputs``."""

import dataclasses
import logging
import os
import threading
from pathlib import Path

import numpy as np

from rvsp_jax.data import sources
from rvsp_jax.data.checksums import DATASETS, PUBLISHED, IdxFile, check_payload
from rvsp_jax.data.errors import DataError
from rvsp_jax.data.idx import decompress, parse_idx

__all__ = ["Dataset", "clear_cache", "load", "to_model_inputs"]

logger = logging.getLogger("rvsp_jax.data")

_LOCK = threading.Lock()
_ARRAYS: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
"""(name, kind, folder or source) -> decoded, verified, read-only arrays of the four files."""
_VERIFIED: set[tuple[int, int, int, int, str]] = set()
"""(st_dev, st_ino, st_size, st_mtime_ns, expected sha256) of every file checked against that sum."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set with its published train/test split.

    train_images: uint8 [N_train, H, W] (60000 x 28 x 28 for mnist and fashion_mnist).
    train_labels: uint8 [N_train], class indices 0..9.
    test_images: uint8 [N_test, H, W] (10000 x 28 x 28).
    test_labels: uint8 [N_test].
    name: the data set, one of ``DATASETS``.
    source: where it was loaded from, for people (e.g. ``"bundled copy (/.../mnist)"``).

    Arrays returned by ``load`` are read-only and shared by every load of the same files:
    copy before modifying. Constructing one by hand (e.g. a small synthetic set in a test) checks
    the dtypes and shapes agree.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str
    source: str

    def __post_init__(self):
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            for field, x, ndim in ((f"{split}_images", images, 3), (f"{split}_labels", labels, 1)):
                if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != ndim:
                    raise ValueError(
                        f"Dataset.{field} must be a {ndim}-D uint8 numpy array, got "
                        f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}"
                    )
            if len(images) != len(labels):
                raise ValueError(f"Dataset {split} split: {len(images)} images but {len(labels)} labels")

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.train_images.shape}, "
            f"test={self.test_images.shape}, source={self.source!r})"
        )


def load(name: str = "mnist", *, data_dir: str | os.PathLike | None = None, source: str = "auto") -> Dataset:
    """Load data set ``name`` ("mnist" or "fashion_mnist") with its published train/test split.

    data_dir: a folder holding the four IDX files (.gz or uncompressed, directly or in
      ``<name>/``); when given it is the only place looked at (see ``sources.resolve``).
    source: "auto" (data_dir, $RVSP_JAX_DATA_DIR, user cache, bundled copy or system package,
      then a download), or only one of "bundled", "system", "cache", "download", "tfds".

    Every file's decompressed payload is checked against its published sha256 (once per process
    per file), so recompressed copies are accepted and altered ones rejected. The decoded arrays
    are cached per (name, resolved folder): a second load of the same data is free. A one-time
    summary is logged (INFO) on logger "rvsp_jax.data".
    Raises ValueError for an unknown name or source; DataError (a ValueError) naming the file or
    source when files are missing, truncated, corrupt or cannot be fetched, with the remedy.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if source not in sources.SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {sources.SOURCES}")
    if source == "tfds":
        if data_dir is not None:
            raise ValueError("data_dir is not used with source='tfds'; drop one of the two")
        description = f"tensorflow_datasets (tfds.load({name!r}))"
        arrays = _cached((name, "tfds", ""), lambda: sources.read_tfds(name), description)
    else:
        location = sources.resolve(name, data_dir=data_dir, source=source)
        arrays = _cached(
            (name, "folder", str(location.folder)),
            lambda: _read_folder(location.folder, name),
            location.description,
        )
        description = location.description
    return Dataset(**arrays, name=name, source=description)


def _cached(key, read, description: str) -> dict[str, np.ndarray]:
    with _LOCK:
        arrays = _ARRAYS.get(key)
        if arrays is None:
            arrays = read()
            for x in arrays.values():
                x.flags.writeable = False
            _ARRAYS[key] = arrays
            logger.info(
                "loaded %s from %s: train %s images, test %s images%s",
                key[0],
                description,
                len(arrays["train_images"]),
                len(arrays["test_images"]),
                "" if key[1] == "tfds" else "; sha256 of all four payloads matches the published sums",
            )
    return arrays


def _read_folder(folder, name: str) -> dict[str, np.ndarray]:
    files = sources.locate(folder, name)
    arrays = {}
    for spec, file in zip(PUBLISHED[name], files):
        if file is None:  # removed since resolve looked
            raise DataError(f"{folder}: {spec.gz_name} is missing. {sources.remedy(name)}")
        arrays[spec.field] = _read_verified(file, spec)
    return arrays


def _read_verified(file, spec: IdxFile) -> np.ndarray:
    """Decode one IDX file and check its payload's sha256 unless this very file (same device,
    inode, size and mtime, taken from the open descriptor) passed the same check before in this
    process."""
    origin = str(file)
    if isinstance(file, Path):
        with open(file, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, spec.sha256)
    else:  # a resource inside a zip: no stat, verify every time (arrays are cached anyway)
        raw, stamp = file.read_bytes(), None
    payload = decompress(raw, origin=origin)
    array = parse_idx(payload, origin=origin, shape=spec.shape)
    if stamp is None or stamp not in _VERIFIED:
        check_payload(payload, spec, origin=origin)
        if stamp is not None:
            _VERIFIED.add(stamp)
    return array


def clear_cache() -> None:
    """Forget the decoded arrays and verified files of this process (the next load rereads)."""
    with _LOCK:
        _ARRAYS.clear()
        _VERIFIED.clear()


def to_model_inputs(images: np.ndarray) -> np.ndarray:
    """Flatten uint8 images and scale them to [0, 1] for the MLP.

    images: uint8 [N, H, W] or [N, D] (e.g. ``Dataset.train_images``).
    Returns float32 [N, H*W] equal to ``images / 255`` (0 -> 0.0, 255 -> 1.0 exactly), a new array.
    """
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise ValueError(
            f"to_model_inputs expects uint8 pixel values 0..255, got dtype {x.dtype}; pass the "
            "Dataset's images as they are"
        )
    if x.ndim not in (2, 3):
        raise ValueError(
            f"to_model_inputs expects images [N, H, W] or [N, D], got shape {x.shape}; for one image use images[None]"
        )
    return np.divide(x.reshape(len(x), -1), np.float32(255), dtype=np.float32)
