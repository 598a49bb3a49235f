"""The small sizes at which every experiment runs end to end: its command-line flags.

One list per experiment, used by the study tests (``tests/test_study_*.py``, ``tests/test_sweep.py``)
and by ``benchmarks/summary_stability.py``, which compares summaries at exactly these sizes. Flags
whose meaning may change between checkouts (``--burn-in``, ``--devices``, ``--out``) are left to the
callers. Plain data: importing it starts nothing.
"""

from __future__ import annotations

SMALL_FLAGS = {
    "train": [
        "--seeds",
        "3",
        "--steps",
        "40",
        "--chunk",
        "20",
        "--block",
        "2",
        "--probes",
        "params,updates",
        "--probe-index",
        "4",
    ],
    "pixels": ["--seeds", "3", "--steps", "60", "--pca-images", "1500", "--nlags", "10", "--nperseg", "32"],
    "activations": [
        "--seeds",
        "3",
        "--steps",
        "60",
        "--chunk",
        "20",
        "--block",
        "2",
        "--activation",
        "relu",
        "--probe-every",
        "2",
        "--probe-batch",
        "8",
    ],
    "activation_compare": [
        "--seeds",
        "3",
        "--steps",
        "60",
        "--chunk",
        "20",
        "--block",
        "2",
        "--activations",
        "sigmoid,relu",
        "--probe-index",
        "2",
        "--probe-batch",
        "8",
        "--nperseg",
        "32",
    ],
    "ergodicity": ["--seeds", "4", "--steps", "160", "--chunk", "40", "--block", "2", "--probe-every", "2"],
    "spectra": [
        "--seeds",
        "3",
        "--steps",
        "96",
        "--chunk",
        "48",
        "--block",
        "2",
        "--probe-index",
        "2",
        "--nlags",
        "10",
        "--nperseg",
        "32",
    ],
    "optimizers": [
        "--seeds",
        "3",
        "--steps",
        "96",
        "--chunk",
        "48",
        "--block",
        "2",
        "--probe-index",
        "2",
        "--nlags",
        "10",
        "--nperseg",
        "32",
        "--variants",
        "sgd,momentum",
        "--frozen-batches",
        "16",
    ],
    "noise": [
        "--seeds",
        "3",
        "--steps",
        "240",
        "--batch-size",
        "512",
        "--block",
        "2",
        "--noise-steps",
        "3",
        "--minibatches",
        "32",
        "--reference-examples",
        "640",
        "--tail-sample",
        "256",
    ],
    "sweep": [
        "--lr",
        "0.05,0.5",
        "--seeds",
        "4",
        "--steps",
        "200",
        "--chunk",
        "100",
        "--block",
        "2",
        "--probe-index",
        "2",
    ],
}


def small(name: str, *extra: str, **replace) -> list[str]:
    """The flags of experiment ``name`` (a copy), with ``replace``'s flags given other values
    (``frozen_batches=64`` sets ``--frozen-batches 64``) and ``extra`` appended."""
    flags = list(SMALL_FLAGS[name])
    for key, value in replace.items():
        flag = "--" + key.replace("_", "-")
        flags[flags.index(flag) + 1] = str(value)
    return [*flags, *extra]
