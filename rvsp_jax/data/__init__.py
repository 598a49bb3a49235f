"""Data layer: MNIST and Fashion-MNIST from verified IDX files.

    >>> from rvsp_jax.data import load, to_model_inputs
    >>> ds = load("mnist")                     # bundled copy, works offline
    >>> x = to_model_inputs(ds.train_images)   # float32 [60000, 784] in [0, 1]

Modules: ``idx`` (the file format), ``checksums`` (published names, shapes and sums),
``sources`` (where files come from, downloads, tfds), ``dataset`` (``Dataset``, ``load``).
"""

from rvsp_jax.data.checksums import DATASETS
from rvsp_jax.data.dataset import Dataset, clear_cache, load, to_model_inputs
from rvsp_jax.data.errors import DataError
from rvsp_jax.data.idx import read_idx

__all__ = ["DATASETS", "DataError", "Dataset", "clear_cache", "load", "read_idx", "to_model_inputs"]
