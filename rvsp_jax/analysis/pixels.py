"""Pixel statistics of an image set, and the minibatch stream that training draws from it.

Section 1 of the RVSP study treats an image as a random vector of D = H x W pixel intensities and
the sequence of minibatches as a random process. Pure numpy functions, float64 throughout; images
are uint8 ``[N, H, W]`` scaled by 1/255 (as :func:`rvsp_jax.data.to_model_inputs` does):

- :func:`pixel_moments`, :func:`class_means`, :func:`image_means`: per-pixel mean and (population)
  variance maps, per-class mean images, per-image mean intensity.
- :func:`pixel_covariance`, :func:`correlation_matrix`, :func:`pca_spectrum`,
  :func:`components_for`, :func:`correlation_by_distance`: the pixel covariance (equals
  ``numpy.cov(x, rowvar=False)``), its correlation matrix, its eigen-spectrum (the PCA variances,
  equal to the squared singular values of the centred data over N - 1) and the mean correlation
  of pixel pairs as a function of their distance.
- :func:`batch_indices`, :func:`label_sorted`, :func:`batch_means`, :func:`label_counts`,
  :func:`label_entropy`: the minibatch stream of a run (which examples each member sees at each
  step) and scalar processes of it; :func:`sampling_moments` gives their exact moments under
  sampling without replacement (a shuffled epoch).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rvsp_jax.analysis.result import Result

__all__ = [
    "DistanceCorrelation",
    "PcaSpectrum",
    "PixelMoments",
    "SamplingMoments",
    "batch_indices",
    "batch_means",
    "class_means",
    "components_for",
    "correlation_by_distance",
    "correlation_matrix",
    "image_means",
    "label_counts",
    "label_entropy",
    "label_sorted",
    "pca_spectrum",
    "pixel_covariance",
    "pixel_moments",
    "sampling_moments",
]

_ROWS = 8192  # images per block in the streaming sums (a block is ~50 MiB of float64 at D = 784)


@dataclasses.dataclass(frozen=True, eq=False)
class PixelMoments(Result):
    """Per-pixel ``mean`` and population variance ``var`` (ddof 0), float64 ``[H, W]``, of ``n``
    images, in intensity units (0 = black, 1 = white)."""

    mean: np.ndarray
    var: np.ndarray
    n: int


@dataclasses.dataclass(frozen=True, eq=False)
class PcaSpectrum(Result):
    """Eigen-decomposition of a covariance matrix ``[D, D]``, largest variance first.

    eigenvalues: [D] float64 >= 0 (rounding negatives clipped to 0): variance along each component.
    components: [D, D] unit eigenvectors as rows (``components[k]`` goes with ``eigenvalues[k]``).
    explained: [D] eigenvalues / their sum (fraction of the total pixel variance).
    participation_ratio: (sum l)^2 / sum l^2, the effective number of dimensions (D for an isotropic
      covariance, 1 for a rank-one one).
    """

    eigenvalues: np.ndarray
    components: np.ndarray
    explained: np.ndarray
    participation_ratio: float


@dataclasses.dataclass(frozen=True, eq=False)
class DistanceCorrelation(Result):
    """Mean correlation of pixel pairs by distance: ``distance`` [K] (int, pixels, rounded Euclidean),
    ``mean`` [K] float64 mean correlation of the pairs at that distance, ``count`` [K] pairs used."""

    distance: np.ndarray
    mean: np.ndarray
    count: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class SamplingMoments(Result):
    """Exact moments of the mean of a batch of B values drawn without replacement from N values.

    mean: [...] population mean mu; var: [...] ``sigma^2 / B * (N - B) / (N - 1)`` (sigma^2 the
    population variance); lag_corr: correlation of the means of two disjoint batches of the same
    permutation, ``-B / (N - B)`` (the autocorrelation at every lag inside one shuffled epoch).
    """

    mean: np.ndarray
    var: np.ndarray
    lag_corr: float


def _as_images(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 3 or x.dtype != np.uint8 or x.shape[0] < 2:
        raise ValueError(
            f"images must be uint8 [N, H, W] with N >= 2 (as Dataset.train_images), got {x.dtype} {x.shape}"
        )
    return x


def _row_blocks(x: np.ndarray):
    flat = x.reshape(x.shape[0], -1)
    for lo in range(0, flat.shape[0], _ROWS):
        yield flat[lo : lo + _ROWS].astype(np.float64)


def pixel_moments(images) -> PixelMoments:
    """Mean and population variance of every pixel over ``images: uint8 [N, H, W]``.

    Sums of the raw integer intensities and their squares are exact in float64 (all below 2^53), so
    the only rounding is the final division: equals ``(images / 255).mean(0)`` and ``.var(0)`` to
    ~1e-15 relative.
    """
    x = _as_images(images)
    n = x.shape[0]
    s = np.zeros(x.shape[1] * x.shape[2])
    ss = np.zeros_like(s)
    for block in _row_blocks(x):
        s += block.sum(0)
        ss += (block * block).sum(0)
    mean = s / (n * 255.0)
    var = (n * ss - s * s) / (float(n) * n * 255.0**2)
    return PixelMoments(mean.reshape(x.shape[1:]), np.maximum(var, 0.0).reshape(x.shape[1:]), n)


def image_means(images) -> np.ndarray:
    """Mean intensity of every image: ``images: uint8 [N, H, W]`` -> float64 ``[N]`` in [0, 1]."""
    x = _as_images(images)
    return x.reshape(x.shape[0], -1).sum(1, dtype=np.int64) / (255.0 * x.shape[1] * x.shape[2])


def class_means(images, labels, n_classes: int = 10) -> np.ndarray:
    """Mean image of every class: float64 ``[n_classes, H, W]`` (NaN for a class with no image)."""
    x = _as_images(images)
    y = np.asarray(labels)
    if y.shape != x.shape[:1]:
        raise ValueError(f"labels must be [N] with N = {x.shape[0]} images, got shape {y.shape}")
    out = np.full((n_classes, *x.shape[1:]), np.nan)
    for c in range(n_classes):
        if np.any(y == c):
            out[c] = x[y == c].mean(0, dtype=np.float64) / 255.0
    return out


def pixel_covariance(images, ddof: int = 1) -> np.ndarray:
    """Covariance of the D = H x W pixels over ``images: uint8 [N, H, W]``: float64 ``[D, D]``.

    Accumulates ``X^T X`` of the integer intensities block by block (exact in float64), then
    ``(N X^T X - s s^T) / (N (N - ddof)) / 255^2`` with s the column sums (also exact until the last
    division). Equals ``numpy.cov(images.reshape(N, -1) / 255, rowvar=False, ddof=ddof)``.
    """
    x = _as_images(images)
    n = x.shape[0]
    d = x.shape[1] * x.shape[2]
    if not 0 <= ddof < n:
        raise ValueError(f"ddof must be in [0, N) = [0, {n}), got {ddof}")
    gram = np.zeros((d, d))
    s = np.zeros(d)
    for block in _row_blocks(x):
        gram += block.T @ block
        s += block.sum(0)
    return (n * gram - np.outer(s, s)) / (float(n) * (n - ddof) * 255.0**2)


def correlation_matrix(cov) -> np.ndarray:
    """Pearson correlations ``cov_ij / sqrt(cov_ii cov_jj)`` from a covariance ``[D, D]`` (float64);
    rows and columns of constant pixels (zero variance) are NaN, the other diagonal entries 1."""
    c = np.asarray(cov, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square matrix [D, D], got shape {c.shape}")
    sd = np.sqrt(np.clip(np.diag(c), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = c / np.outer(sd, sd)
    corr[sd == 0, :] = np.nan
    corr[:, sd == 0] = np.nan
    np.fill_diagonal(corr, np.where(sd > 0, 1.0, np.nan))
    return np.clip(corr, -1.0, 1.0)


def pca_spectrum(cov) -> PcaSpectrum:
    """Principal components of a covariance ``[D, D]`` (``numpy.linalg.eigh``, sorted descending).

    The eigenvalues are the PCA variances: for ``cov = pixel_covariance(images)`` they equal the
    squared singular values of the centred data divided by N - 1 (scikit-learn's
    ``PCA().explained_variance_``). Float64.
    """
    c = np.asarray(cov, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square matrix [D, D], got shape {c.shape}")
    values, vectors = np.linalg.eigh(c)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0.0, None)
    total = values.sum()
    if not total > 0:
        raise ValueError("the covariance has no variance (every pixel is constant)")
    return PcaSpectrum(values, vectors[:, order].T, values / total, float(total**2 / np.sum(values**2)))


def components_for(explained, fraction: float) -> int:
    """Fewest leading components whose ``explained`` fractions sum to at least ``fraction``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    cum = np.cumsum(np.asarray(explained, np.float64))
    # tolerate the last bits of rounding in the running sum when fraction = 1
    return int(min(np.searchsorted(cum, fraction - 1e-12) + 1, cum.size))


def correlation_by_distance(corr, shape: tuple[int, int]) -> DistanceCorrelation:
    """Mean correlation of pixel pairs ``(i, j), i < j``, grouped by their distance on the image grid.

    corr: ``[D, D]`` (D = H x W, pixels in row-major order, NaN entries skipped); shape: (H, W).
    Distance is the Euclidean distance between the pixels' (row, column) positions rounded to the
    nearest integer; distances with no finite pair are left out.
    """
    c = np.asarray(corr, np.float64)
    h, w = shape
    if c.shape != (h * w, h * w):
        raise ValueError(f"corr must be [H*W, H*W] = [{h * w}, {h * w}] for shape {shape}, got {c.shape}")
    rows, cols = np.divmod(np.arange(h * w), w)
    i, j = np.triu_indices(h * w, k=1)
    dist = np.rint(np.hypot(rows[i] - rows[j], cols[i] - cols[j])).astype(np.int64)
    vals = c[i, j]
    ok = np.isfinite(vals)
    count = np.bincount(dist[ok], minlength=dist.max() + 1)
    total = np.bincount(dist[ok], weights=vals[ok], minlength=dist.max() + 1)
    keep = count > 0
    return DistanceCorrelation(np.flatnonzero(keep), total[keep] / count[keep], count[keep])


# ---- the minibatch stream -----------------------------------------------------------------------


def batch_indices(orders, batch_size: int, steps: int) -> np.ndarray:
    """Examples of every step's minibatch: ``orders: int [S, E, N]`` -> int64 ``[S, steps, B]``.

    ``orders[s, e]`` is member s's visiting order in epoch e (a permutation of the N examples, as
    :meth:`rvsp_jax.training.ensemble.Ensemble.orders` returns them); each epoch is cut into N // B
    minibatches in order, the incomplete last one dropped, exactly as the trainer does: step t of
    member s uses ``orders[s, t // (N // B)][(t % (N // B)) * B:][:B]``.
    """
    o = np.asarray(orders)
    if o.ndim != 3:
        raise ValueError(f"orders must be [S, E, N] (members, epochs, examples), got shape {o.shape}")
    n = o.shape[-1]
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and N = {n}, got {batch_size}")
    per_epoch = n // batch_size
    if steps > o.shape[1] * per_epoch:
        raise ValueError(f"{steps} steps need {-(-steps // per_epoch)} epochs of orders, got {o.shape[1]}")
    batches = o[:, :, : per_epoch * batch_size].reshape(o.shape[0], -1, batch_size)
    return batches[:, :steps].astype(np.int64)


def label_sorted(orders, labels) -> np.ndarray:
    """Each order re-arranged by label, ascending; examples of one label keep their relative order.

    orders: int [..., N] permutations; labels: [N]. Returns int [..., N]: a member's shuffled order
    becomes "all 0s, then all 1s, ..." with the within-class order still random.
    """
    o = np.asarray(orders)
    y = np.asarray(labels)
    return np.take_along_axis(o, np.argsort(y[o], axis=-1, kind="stable"), axis=-1)


def batch_means(values, index) -> np.ndarray:
    """Mean of ``values: [N]`` over each minibatch ``index: int [..., B]`` -> float64 ``[...]``."""
    return np.asarray(values, np.float64)[np.asarray(index)].mean(-1)


def label_counts(labels, index, n_classes: int = 10) -> np.ndarray:
    """Label histogram of each minibatch: ``index: int [..., B]`` -> int64 ``[..., n_classes]``."""
    y = np.asarray(labels).astype(np.int64)[np.asarray(index)]
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
    return (y[..., None] == np.arange(n_classes)).sum(-2, dtype=np.int64)


def label_entropy(counts) -> np.ndarray:
    """Shannon entropy in bits of each label histogram ``counts: [..., C]`` -> float64 ``[...]``
    (0 log 0 = 0; 0 for a single-class batch, log2(C) for a perfectly balanced one)."""
    c = np.asarray(counts, np.float64)
    p = c / c.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(-1)


def sampling_moments(values, batch_size: int) -> SamplingMoments:
    """Moments of the mean of ``batch_size`` of the N ``values: [..., N]`` drawn without replacement.

    A batch of a shuffled epoch is such a draw, so its mean has ``mean`` mu and variance
    ``sigma^2 / B (N - B) / (N - 1)`` (the finite-population correction), and two disjoint batches
    of one epoch have correlation ``-B / (N - B)``. For 0/1 indicator values, B x the batch mean is
    hypergeometric and these are ``scipy.stats.hypergeom(N, K, B)``'s mean and variance over B
    (resp. B^2). Float64.
    """
    v = np.asarray(values, np.float64)
    n = v.shape[-1]
    if not 1 <= batch_size < n:
        raise ValueError(f"batch_size must be between 1 and N - 1 = {n - 1}, got {batch_size}")
    sigma2 = v.var(-1)
    return SamplingMoments(v.mean(-1), sigma2 / batch_size * (n - batch_size) / (n - 1), -batch_size / (n - batch_size))
