"""Tests of rvsp_jax.data: IDX reader, checksums, source resolution, downloads, tfds adapter.

Everything runs offline: downloads go to a closed local port or to a local HTTP server.
Known answers (label counts, first labels, sums, sizes) are from shared/data/mnist/README.md.
"""

import functools
import gzip
import hashlib
import http.server
import logging
import re
import struct
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rvsp_jax.data as data
from rvsp_jax.data import DATASETS, DataError, Dataset, load, read_idx, sources, to_model_inputs
from rvsp_jax.data import dataset as dataset_module
from rvsp_jax.data.checksums import PUBLISHED
from rvsp_jax.data.idx import decompress, parse_idx

BUNDLED = Path(data.__file__).parent / "mnist"
STEMS = [spec.stem for spec in PUBLISHED["mnist"]]
CLOSED = "http://127.0.0.1:9/"  # discard port: nothing listens, connection refused at once

# shared/data/mnist/README.md
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_TEN = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
PAYLOAD_SIZES = [47_040_016, 60_008, 7_840_016, 10_008]


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed uint8 IDX file holding ``array`` (header per LeCun's format spec)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def payload(stem: str) -> bytes:
    return gzip.decompress((BUNDLED / f"{stem}.gz").read_bytes())


def make_folder(folder: Path, *, files: dict[str, bytes] | None = None, source: Path = BUNDLED) -> Path:
    """A folder of symlinks to the four files in ``source``, except ``files`` (name -> bytes)
    which are written as given (each replacing the file of the same stem)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = files or {}
    for stem in STEMS:
        own = [n for n in files if n.split(".")[0] == stem]
        if own:
            (folder / own[0]).write_bytes(files[own[0]])
        else:
            src = next(p for p in (source / f"{stem}.gz", source / stem) if p.exists())
            (folder / src.name).symlink_to(src)
    return folder


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load("mnist", source="bundled")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    """The four MNIST files, uncompressed (faster to decode than the .gz for precedence tests)."""
    folder = tmp_path_factory.mktemp("raw_mnist")
    for stem in STEMS:
        (folder / stem).write_bytes(payload(stem))
    return folder


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No environment folder, a private user cache, no system folder, mirrors that refuse."""
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": tmp_path / "no-system"})
    monkeypatch.setattr(sources, "MIRRORS", {"mnist": (CLOSED,), "fashion_mnist": (CLOSED,)})


# ---------------------------------------------------------------- known answers on real MNIST


def test_bundled_files_match_published_sums_and_sizes():
    for spec, size in zip(PUBLISHED["mnist"], PAYLOAD_SIZES):
        p = payload(spec.stem)
        assert len(p) == size
        assert hashlib.sha256(p).hexdigest() == spec.sha256


def test_mnist_known_answers(mnist):
    assert DATASETS == ("mnist", "fashion_mnist")
    assert mnist.name == "mnist" and mnist.source.startswith("bundled copy")
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_labels.shape == (60000,)
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_labels.shape == (10000,)
    for x in (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels):
        assert x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(mnist.train_labels, minlength=10), TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(mnist.test_labels, minlength=10), TEST_COUNTS)
    np.testing.assert_array_equal(mnist.train_labels[:10], FIRST_TEN)
    for images in (mnist.train_images, mnist.test_images):
        assert images.min() == 0 and images.max() == 255
    # every digit has ink, and the 28x28 border is mostly blank (MNIST digits are centred in 20x20)
    assert (mnist.train_images.reshape(60000, -1).max(axis=1) > 0).all()
    assert mnist.train_images[:, 0, :].mean() < 1.0


def test_to_model_inputs(mnist):
    x = to_model_inputs(mnist.test_images)
    assert x.dtype == np.float32 and x.shape == (10000, 784)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), mnist.test_images.reshape(10000, 784))
    np.testing.assert_allclose(x, mnist.test_images.reshape(10000, 784) / 255.0, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(to_model_inputs(mnist.test_images.reshape(10000, 784)), x)
    with pytest.raises(ValueError, match="expects uint8"):
        to_model_inputs(mnist.test_images.astype(np.float32))
    with pytest.raises(ValueError, match=r"images\[None\]"):
        to_model_inputs(mnist.test_images[0, 0])


def test_second_load_is_cached_and_read_only(mnist):
    again = load("mnist", source="bundled")
    assert again.train_images is mnist.train_images
    with pytest.raises(ValueError, match="read-only"):
        again.train_labels[0] = 3


def test_read_idx_on_real_files(mnist):
    labels = read_idx(BUNDLED / "t10k-labels-idx1-ubyte.gz", shape=(10000,))
    np.testing.assert_array_equal(labels, mnist.test_labels)
    images = read_idx(BUNDLED / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(images, mnist.train_images)


def test_summary_logged_once(raw_dir, tmp_path, caplog):
    folder = make_folder(tmp_path / "d", source=raw_dir)
    with caplog.at_level(logging.INFO, logger="rvsp_jax.data"):
        first = load("mnist", data_dir=folder)
        second = load("mnist", data_dir=folder)
    summaries = [r for r in caplog.records if r.name == "rvsp_jax.data" and "loaded mnist" in r.getMessage()]
    assert len(summaries) == 1
    assert str(folder) in summaries[0].getMessage() and "sha256" in summaries[0].getMessage()
    assert second.train_images is first.train_images


def test_dataset_validates_fields(mnist):
    with pytest.raises(ValueError, match="train_images must be a 3-D uint8"):
        Dataset(
            mnist.train_images.astype(np.float32),
            mnist.train_labels,
            mnist.test_images,
            mnist.test_labels,
            name="mnist",
            source="test",
        )
    with pytest.raises(ValueError, match="100 images but 99 labels"):
        Dataset(
            mnist.train_images[:100],
            mnist.train_labels[:99],
            mnist.test_images,
            mnist.test_labels,
            name="mnist",
            source="test",
        )
    small = Dataset(
        mnist.train_images[:100],
        mnist.train_labels[:100],
        mnist.test_images[:10],
        mnist.test_labels[:10],
        name="mnist",
        source="subset",
    )
    assert "train=(100, 28, 28)" in repr(small)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        load("cifar10")
    with pytest.raises(ValueError, match="unknown source 'web'"):
        load("mnist", source="web")
    with pytest.raises(ValueError, match="data_dir is used only with"):
        load("mnist", data_dir="/tmp", source="bundled")
    with pytest.raises(DataError, match="no bundled copy of fashion_mnist"):
        load("fashion_mnist", source="bundled")
    with pytest.raises(DataError, match="no system package provides mnist"):
        load("mnist", source="system")
    with pytest.raises(DataError, match="source='download'"):
        load("mnist", source="cache")


# ---------------------------------------------------------------- IDX reader


@settings(max_examples=60, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 50)),
        st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)),
    ),
    seed=st.integers(0, 2**32 - 1),
    compress=st.booleans(),
    cut=st.floats(0.0, 1.0, exclude_max=True),
)
def test_idx_roundtrip_and_any_truncation_rejected(shape, seed, compress, cut):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    raw = idx_bytes(array)
    blob = gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
    decoded = parse_idx(decompress(blob, origin="x"), origin="x", shape=shape)
    np.testing.assert_array_equal(decoded, array)
    truncated = blob[: int(cut * len(blob))]
    with pytest.raises(DataError, match="x: .*truncated"):
        parse_idx(decompress(truncated, origin="x"), origin="x", shape=shape)


LABEL_HEADER = payload("t10k-labels-idx1-ubyte")[:8]


@pytest.mark.parametrize(
    "change, message",
    [
        ({3: 0x03}, r"bad IDX magic number 0x00000803, expected 0x00000801 \(uint8, 1-D labels\)"),
        ({2: 0x0D}, r"bad IDX magic number 0x00000d01, expected 0x00000801"),
        ({0: 0x01}, r"bad IDX magic number 0x01000801"),
        ({6: 0x27, 7: 0x0F}, r"IDX header gives dimensions \(9999,\), expected \(10000,\)"),
    ],
    ids=["images-magic-in-labels", "float32-dtype", "nonzero-lead", "wrong-count"],
)
def test_corrupt_header_rejected(tmp_path, change, message):
    assert LABEL_HEADER == bytes.fromhex("00000801 00002710")  # magic, 10000 (README)
    p = bytearray(payload("t10k-labels-idx1-ubyte"))
    for i, b in change.items():
        p[i] = b
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(p), mtime=0))
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: {message}"):
        read_idx(path, shape=(10000,))


def test_wrong_image_dims_rejected(tmp_path):
    p = bytearray(payload("t10k-images-idx3-ubyte"))
    p[12:16] = struct.pack(">I", 27)  # columns 28 -> 27
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes(p))
    with pytest.raises(DataError, match=r"IDX header gives dimensions \(10000, 28, 27\), expected \(10000, 28, 28\)"):
        read_idx(path, shape=(10000, 28, 28))
    with pytest.raises(DataError, match=r"280000 unexpected bytes after the 7560000 data bytes"):
        read_idx(path)  # no expected shape: the header is self-consistent but the data is too long


def test_truncated_raw_file_rejected(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(payload("t10k-images-idx3-ubyte")[:-100])
    with pytest.raises(
        DataError,
        match=f"{re.escape(str(path))}: truncated: the header promises 7840000 data bytes "
        r"\(10000x28x28\) but only 7839900 follow",
    ):
        read_idx(path, shape=(10000, 28, 28))


def test_truncated_gzip_rejected(tmp_path):
    gz = (BUNDLED / "t10k-images-idx3-ubyte.gz").read_bytes()
    for keep in (len(gz) // 2, len(gz) - 4):  # mid-stream, and inside the CRC/size trailer
        path = tmp_path / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(gz[:keep])
        with pytest.raises(DataError, match=f"{re.escape(str(path))}: truncated gzip stream"):
            read_idx(path)


def test_corrupt_gzip_rejected(tmp_path):
    gz = bytearray((BUNDLED / "t10k-labels-idx1-ubyte.gz").read_bytes())
    crc = gz.copy()
    crc[-8] ^= 0xFF  # first byte of the CRC32 trailer
    flipped = gz.copy()
    flipped[len(gz) // 2 : len(gz) // 2 + 8] = bytes(8)  # zero 8 bytes of deflate data
    for blob, message in ((crc, "corrupt gzip stream .*CRC check failed"), (flipped, "gzip stream")):
        path = tmp_path / "t10k-labels-idx1-ubyte.gz"
        path.write_bytes(bytes(blob))
        with pytest.raises(DataError, match=f"{re.escape(str(path))}: .*{message}"):
            read_idx(path)


# ---------------------------------------------------------------- checksums through load


def test_flipped_pixels_fail_checksum(tmp_path):
    p = bytearray(payload("t10k-images-idx3-ubyte"))
    p[16 + 14 * 28 + 14] ^= 0xFF  # centre pixel of the first test image
    actual = hashlib.sha256(bytes(p)).hexdigest()
    folder = make_folder(tmp_path / "d", files={"t10k-images-idx3-ubyte": bytes(p)})
    expected = PUBLISHED["mnist"][2].sha256
    with pytest.raises(
        DataError,
        match=f"{re.escape(str(folder / 't10k-images-idx3-ubyte'))}: checksum mismatch: "
        f"sha256 of the decompressed payload is {actual}, the "
        f"published sum of t10k-images-idx3-ubyte is {expected}",
    ):
        load("mnist", data_dir=folder)


def test_corrupt_file_rejected_by_load(tmp_path):
    p = bytearray(payload("t10k-labels-idx1-ubyte"))
    p[3] = 0x03
    folder = make_folder(tmp_path / "d", files={"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(p))})
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: bad IDX magic number"):
        load("mnist", data_dir=folder)


def test_recompressed_and_uncompressed_copies_accepted(tmp_path, mnist):
    images = gzip.compress(payload("t10k-images-idx3-ubyte"), compresslevel=1, mtime=0)
    assert hashlib.md5(images).hexdigest() != PUBLISHED["mnist"][2].md5_gz  # really another .gz
    folder = make_folder(
        tmp_path / "d",
        files={
            "t10k-images-idx3-ubyte.gz": images,
            "t10k-labels-idx1-ubyte": payload("t10k-labels-idx1-ubyte"),  # uncompressed
        },
    )
    ds = load("mnist", data_dir=folder)
    np.testing.assert_array_equal(ds.test_images, mnist.test_images)
    np.testing.assert_array_equal(ds.test_labels, mnist.test_labels)
    assert ds.source == f"data_dir {folder.resolve()}"


def test_each_file_verified_once(raw_dir, tmp_path, monkeypatch):
    calls = []
    check = dataset_module.check_payload
    monkeypatch.setattr(dataset_module, "check_payload", lambda *a, **k: calls.append(1) or check(*a, **k))
    dataset_module.clear_cache()
    load("mnist", data_dir=make_folder(tmp_path / "a", source=raw_dir))
    assert len(calls) == 4
    load("mnist", data_dir=make_folder(tmp_path / "b", source=raw_dir))  # same files via new links
    assert len(calls) == 4
    copy = tmp_path / "c"  # a new file with the same bytes is checked again
    make_folder(
        copy, files={"t10k-labels-idx1-ubyte": (raw_dir / "t10k-labels-idx1-ubyte").read_bytes()}, source=raw_dir
    )
    load("mnist", data_dir=copy)
    assert len(calls) == 5


# ---------------------------------------------------------------- source resolution


def test_precedence_data_dir_env_cache_bundled(raw_dir, tmp_path, monkeypatch):
    explicit = make_folder(tmp_path / "explicit", source=raw_dir)
    env_root = tmp_path / "env"
    make_folder(env_root / "mnist", source=raw_dir)  # <dataset>/ layout
    cache = make_folder(sources.cache_dir("mnist"), source=raw_dir)
    assert cache == tmp_path / "xdg" / "rvsp_jax" / "mnist"  # XDG_CACHE_HOME honoured

    monkeypatch.setenv(sources.ENV_VAR, str(env_root))
    assert load("mnist", data_dir=explicit).source == f"data_dir {explicit.resolve()}"
    assert load("mnist").source == f"{sources.ENV_VAR} folder {(env_root / 'mnist').resolve()}"

    direct = make_folder(tmp_path / "env_direct", source=raw_dir)  # files directly in the folder
    monkeypatch.setenv(sources.ENV_VAR, str(direct))
    assert load("mnist").source == f"{sources.ENV_VAR} folder {direct.resolve()}"

    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "explicit" / ".."))  # no mnist files: fall through
    assert load("mnist").source == f"user cache {cache}"
    monkeypatch.delenv(sources.ENV_VAR)
    assert load("mnist").source == f"user cache {cache}"
    assert load("mnist", source="cache").source == f"user cache {cache}"

    for f in cache.iterdir():
        f.unlink()
    assert load("mnist").source == f"bundled copy ({BUNDLED.resolve()})"


def test_explicit_data_dir_without_files_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"data_dir {re.escape(str(empty))} does not hold the mnist files .*--data-dir"):
        load("mnist", data_dir=empty)  # the bundled copy exists, but is not silently used
    with pytest.raises(DataError, match=f"data_dir {re.escape(str(tmp_path / 'nope'))} is not a folder"):
        load("mnist", data_dir=tmp_path / "nope")


def test_env_var_errors(raw_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataError, match=f"{sources.ENV_VAR}={re.escape(str(tmp_path / 'missing'))} is not a folder"):
        load("mnist")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train-labels-idx1-ubyte").symlink_to(raw_dir / "train-labels-idx1-ubyte")
    monkeypatch.setenv(sources.ENV_VAR, str(partial))
    with pytest.raises(
        DataError, match="holds only some of the mnist files: missing train-images-idx3-ubyte.gz, t10k-images"
    ):
        load("mnist")


def test_system_folder_is_used_and_verified(tmp_path, monkeypatch):
    # MNIST files posing as the Debian Fashion-MNIST package: found there, rejected by checksum
    system = make_folder(tmp_path / "fashion-mnist")
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": system})
    for source in ("auto", "system"):
        with pytest.raises(
            DataError,
            match=f"{re.escape(str(system))}/train-images-idx3-ubyte.gz: checksum mismatch"
            ".*published sum of train-images-idx3-ubyte is c59f468a",
        ):
            load("fashion_mnist", source=source)


# ---------------------------------------------------------------- downloads


def test_fashion_download_fails_fast_offline(tmp_path):
    cache = sources.cache_dir("fashion_mnist")
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load("fashion_mnist")
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 5.0, f"offline failure took {elapsed:.1f} s"
    for part in (
        "fashion_mnist not found locally",
        f"user cache {cache}",
        f"system folder {tmp_path / 'no-system'}",
        f"download of fashion_mnist file train-images-idx3-ubyte.gz failed ({CLOSED}train-images-idx3-ubyte.gz",
        "apt-get install dataset-fashion-mnist",
        f"into {cache}",
        "--data-dir",
    ):
        assert part in message, part
    assert not any(cache.iterdir())  # no partial files left behind


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server over a folder; yields (folder, base URL)."""
    folder = tmp_path / "mirror"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_into_cache(mirror, mnist, monkeypatch):
    folder, url = mirror
    make_folder(folder)  # t10k: the original .gz (published md5); train: recompressed (sha256 fallback)
    monkeypatch.setattr(sources, "MIRRORS", {"mnist": (CLOSED, url)})  # first mirror refuses
    cache = sources.cache_dir("mnist")
    ds = load("mnist", source="download")
    assert ds.source == f"downloaded from {url} into {cache}"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in STEMS)  # no .part left
    for stem in STEMS:
        assert (cache / f"{stem}.gz").read_bytes() == (BUNDLED / f"{stem}.gz").read_bytes()
    np.testing.assert_array_equal(ds.train_images, mnist.train_images)
    assert load("mnist").source == f"user cache {cache}"  # auto now finds the cache first
    again = load("mnist", source="download")  # nothing missing: nothing fetched
    assert again.source == f"user cache {cache} (all files present, nothing downloaded)"


def test_download_rejects_altered_file(mirror, monkeypatch):
    folder, url = mirror
    p = bytearray(payload("t10k-labels-idx1-ubyte"))
    p[100] = (p[100] + 1) % 10
    make_folder(folder, files={"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(p))})
    monkeypatch.setattr(sources, "MIRRORS", {"mnist": (url,)})
    cache = sources.cache_dir("mnist")
    with pytest.raises(
        DataError,
        match="download of mnist file t10k-labels-idx1-ubyte.gz failed .*"
        "md5 of the download is [0-9a-f]{32}, published "
        "ec29112dd5afa0611ce80d1b7f02629c, and .*checksum mismatch",
    ):
        load("mnist", source="download")
    # the three good files are in place, the altered one and its temp file are not
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in STEMS[:3])


# ---------------------------------------------------------------- tensorflow_datasets


def test_tfds_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(DataError, match=r'needs tensorflow_datasets.*pip install "rvsp-jax\[tfds\]"'):
        load("mnist", source="tfds")


def test_tfds_adapter(monkeypatch, mnist):
    def fake_load(name, split, batch_size, as_supervised):
        assert (name, split, batch_size, as_supervised) == ("mnist", ["train", "test"], -1, True)
        return [
            (mnist.train_images[..., None], mnist.train_labels.astype(np.int64)),
            (mnist.test_images[..., None], mnist.test_labels.astype(np.int64)),
        ]

    fake = types.SimpleNamespace(load=fake_load, as_numpy=lambda x: x)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    dataset_module.clear_cache()
    try:
        ds = load("mnist", source="tfds")
        assert ds.source.startswith("tensorflow_datasets")
        assert ds.train_images.shape == (60000, 28, 28) and ds.train_labels.dtype == np.uint8
        np.testing.assert_array_equal(ds.test_labels, mnist.test_labels)

        fake.load = lambda *a, **k: [
            (mnist.train_images[..., None], mnist.train_labels.astype(np.int64) + 1),
            (mnist.test_images[..., None], mnist.test_labels),
        ]
        dataset_module.clear_cache()
        with pytest.raises(DataError, match=r"tfds mnist train_labels: values outside 0..9"):
            load("mnist", source="tfds")
    finally:
        dataset_module.clear_cache()


def test_cache_dir_ignores_relative_xdg(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert sources.cache_dir("fashion_mnist") == Path.home() / ".cache" / "rvsp_jax" / "fashion_mnist"
