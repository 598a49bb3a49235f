"""The published files of each data set: names, shapes and checksums, and how they are checked.

Sources of the sums:
- sha256 of the decompressed IDX payloads: ``shared/data/mnist/README.md`` of this project (the
  sums widely published for the original files). Checking the payload rather than the .gz bytes
  accepts recompressed copies (Debian's dataset-fashion-mnist, the bundled train files) and
  rejects altered ones.
- md5 of the original .gz files: MNIST from the same README; Fashion-MNIST from the
  zalandoresearch/fashion-mnist README (also torchvision ``datasets/mnist.py``). Used only to
  verify downloads from a mirror.
"""

import dataclasses
import hashlib
import types

from rvsp_jax.data.errors import DataError

__all__ = ["DATASETS", "PUBLISHED", "IdxFile", "check_payload", "md5_hex", "sha256_hex"]


@dataclasses.dataclass(frozen=True)
class IdxFile:
    """One published IDX file of a data set.

    stem: file name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
    field: the ``Dataset`` field it fills, e.g. ``"train_images"``.
    shape: its dimensions, e.g. ``(60000, 28, 28)``.
    sha256: hex sha256 of the decompressed IDX payload (header + data).
    md5_gz: hex md5 of the original published ``.gz`` file.
    """

    stem: str
    field: str
    shape: tuple[int, ...]
    sha256: str
    md5_gz: str

    @property
    def gz_name(self) -> str:
        """The published (compressed) file name, e.g. ``"train-images-idx3-ubyte.gz"``."""
        return self.stem + ".gz"


def _files(sums: dict[str, tuple[str, str]]) -> tuple[IdxFile, ...]:
    layout = (
        ("train-images-idx3-ubyte", "train_images", (60000, 28, 28)),
        ("train-labels-idx1-ubyte", "train_labels", (60000,)),
        ("t10k-images-idx3-ubyte", "test_images", (10000, 28, 28)),
        ("t10k-labels-idx1-ubyte", "test_labels", (10000,)),
    )
    return tuple(IdxFile(stem, field, shape, *sums[stem]) for stem, field, shape in layout)


PUBLISHED: types.MappingProxyType = types.MappingProxyType(
    {
        "mnist": _files(
            {
                "train-images-idx3-ubyte": (
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                "train-labels-idx1-ubyte": (
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
                "t10k-images-idx3-ubyte": (
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                "t10k-labels-idx1-ubyte": (
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            }
        ),
        "fashion_mnist": _files(
            {
                "train-images-idx3-ubyte": (
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                ),
                "train-labels-idx1-ubyte": (
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                    "25c81989df183df01b3e8a0aad5dffbe",
                ),
                "t10k-images-idx3-ubyte": (
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                    "bef4ecab320f06d8554ea6380940ec79",
                ),
                "t10k-labels-idx1-ubyte": (
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            }
        ),
    }
)
"""Data set name -> its four files, in the order train images, train labels, test images, test labels."""

DATASETS: tuple[str, ...] = tuple(PUBLISHED)
"""The valid data set names: ``("mnist", "fashion_mnist")``."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    """Hex md5 of ``data`` (an integrity check against published sums, not a security one)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def check_payload(payload: bytes, spec: IdxFile, *, origin: str) -> None:
    """Raise DataError unless sha256(payload) is the published sum of ``spec``.

    payload: the decompressed IDX bytes read from ``origin`` (a path or URL, named in the error
    together with the expected and actual sums).
    """
    actual = sha256_hex(payload)
    if actual != spec.sha256:
        raise DataError(
            f"{origin}: checksum mismatch: sha256 of the decompressed payload is {actual}, the "
            f"published sum of {spec.stem} is {spec.sha256}; the file is corrupt or altered: "
            "delete it and fetch it again"
        )
