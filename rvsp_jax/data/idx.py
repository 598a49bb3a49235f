"""The IDX container of MNIST-style data sets (LeCun et al.): gzip detection, header, payload.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the row-major data. Only dtype byte 0x08 (unsigned byte) is accepted, which is
what MNIST and Fashion-MNIST use: magic 0x00000803 for images ``[N, 28, 28]`` and 0x00000801 for
labels ``[N]``. Files may be gzip-compressed (detected by the gzip magic ``1f 8b``, not by name).
"""

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rvsp_jax.data.errors import DataError

__all__ = ["GZIP_MAGIC", "UINT8_TYPE", "decompress", "parse_idx", "read_idx"]

GZIP_MAGIC = b"\x1f\x8b"
UINT8_TYPE = 0x08
_KIND = {1: "labels", 3: "images"}


def decompress(raw: bytes, *, origin: str) -> bytes:
    """The IDX payload held in a file's bytes.

    raw: the file's bytes; gunzipped when they start with the gzip magic ``1f 8b``, else
      returned as they are (an uncompressed IDX file).
    origin: the file's name or path, used in error messages.

    Raises DataError naming ``origin`` when the gzip stream is truncated (ends before its
    end-of-stream marker) or corrupt (bad deflate data, CRC or length check failed).
    """
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DataError(
            f"{origin}: truncated gzip stream ({exc}); the file is incomplete: delete it and fetch it again"
        ) from exc
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{origin}: corrupt gzip stream ({exc}); delete the file and fetch it again") from exc


def parse_idx(payload: bytes, *, origin: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """Decode an uncompressed uint8 IDX payload.

    payload: header + data bytes of one IDX file.
    origin: the file's name or path, used in error messages.
    shape: the expected dimensions, e.g. ``(60000, 28, 28)``; when given, the magic number must
      be ``0x0000080<len(shape)>`` and the header's dimensions must equal it.

    Returns a read-only uint8 array ``[d1, ..., dn]``, a zero-copy view of ``payload``.
    Raises DataError naming ``origin`` on a bad magic number or dtype byte, unexpected
    dimensions, or a payload shorter (truncated) or longer than the header promises.
    """
    if len(payload) < 4:
        raise DataError(f"{origin}: truncated: {len(payload)} bytes, too short for an IDX magic number")
    zero, dtype, ndim = int.from_bytes(payload[:2], "big"), payload[2], payload[3]
    magic = int.from_bytes(payload[:4], "big")
    want_ndim = None if shape is None else len(shape)
    if zero != 0 or dtype != UINT8_TYPE or ndim == 0 or (want_ndim is not None and ndim != want_ndim):
        want = (
            f"0x{(UINT8_TYPE << 8) | want_ndim:08x} (uint8, {want_ndim}-D {_KIND.get(want_ndim, 'array')})"
            if want_ndim is not None
            else "0x000008NN (uint8, NN dimensions)"
        )
        raise DataError(
            f"{origin}: bad IDX magic number 0x{magic:08x}, expected {want}; the file is not an "
            "IDX file of this kind, or it is corrupt"
        )
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{origin}: truncated: {len(payload)} bytes, the IDX header alone needs {header}")
    dims = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if shape is not None and dims != tuple(shape):
        raise DataError(
            f"{origin}: IDX header gives dimensions {dims}, expected {tuple(shape)}; the file is "
            "corrupt or belongs to another data set or split"
        )
    n_data = int(np.prod(dims, dtype=np.int64))
    have = len(payload) - header
    if have < n_data:
        raise DataError(
            f"{origin}: truncated: the header promises {n_data} data bytes ({'x'.join(map(str, dims))}) "
            f"but only {have} follow; the file is incomplete: delete it and fetch it again"
        )
    if have > n_data:
        raise DataError(
            f"{origin}: {have - n_data} unexpected bytes after the {n_data} data bytes the header "
            f"promises ({'x'.join(map(str, dims))}); the file is corrupt"
        )
    return np.frombuffer(payload, dtype=np.uint8, count=n_data, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, *, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a uint8 IDX file, gzip-compressed or not (detected by its magic bytes).

    path: the file. shape: the expected dimensions (see ``parse_idx``).
    Returns a read-only uint8 array ``[d1, ..., dn]``. Raises DataError naming the file when it
    is truncated or corrupt (see ``decompress`` and ``parse_idx``); OSError if it cannot be read.
    This does not check the published checksums; ``rvsp_jax.data.load`` does.
    """
    origin = str(path)
    return parse_idx(decompress(Path(path).read_bytes(), origin=origin), origin=origin, shape=shape)
