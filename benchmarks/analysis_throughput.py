"""Throughput of the batched analysis (ADF, KPSS, ACF, Welch) against the per-series references.

    python -m benchmarks.analysis_throughput            # full run (~15 min on 2 cores)
    python -m benchmarks.analysis_throughput --quick    # smoke run (seconds)

Part 1, on one set of N series of length T (AR(1)/random-walk mixture): time per series of
statsmodels ``adfuller(autolag="AIC")``, ``kpss``, ``acf(fft=True)`` and ``scipy.signal.welch``
called series by series on a subsample, and of the batched ``rvsp_jax.analysis`` versions on all N,
with the speedups and the largest disagreement on the subsample.
Part 2, the full pipeline (acf, welch, adf, kpss) over members x params series of length T
(default 256 x 13,002 of T = 512, one parameter trajectory per network weight), generated and
analysed one member at a time, so memory stays bounded: wall time and peak RSS.
Prints the machine and the command; the last line holds the figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import sys
import time
import warnings

import numpy as np
import scipy.signal
from statsmodels.tsa.stattools import acf as sm_acf
from statsmodels.tsa.stattools import adfuller
from statsmodels.tsa.stattools import kpss as sm_kpss

from rvsp_jax.analysis.spectral import acf, welch
from rvsp_jax.analysis.stationarity import VERDICTS, _stationarity_codes, adf, kpss
from rvsp_jax.training import devices


def simulate(key: int, n: int, length: int) -> np.ndarray:
    """[n, length] float64: half random walks, half AR(1) with phi ~ U(0, 0.99), seeded by key."""
    rng = np.random.default_rng(key)
    phi = np.where(np.arange(n) % 2 == 0, 1.0, rng.uniform(0.0, 0.99, size=n))
    e = rng.standard_normal((length, n))
    for t in range(1, length):
        e[t] += phi * e[t - 1]
    return np.ascontiguousarray(e.T)


def per_series_seconds(fn, rows) -> float:
    start = time.perf_counter()
    for row in rows:
        fn(row)
    return (time.perf_counter() - start) / len(rows)


def batched_seconds(fn, x):
    start = time.perf_counter()
    out = fn(x)
    return (time.perf_counter() - start) / x.shape[0], out


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def describe_machine(argv: list[str]) -> None:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("numpy", "scipy", "statsmodels", "jax")
    )
    print(
        f"machine: {platform.platform()}; {platform.processor() or platform.machine()}; "
        f"cpu_count={os.cpu_count()}; python {platform.python_version()}"
    )
    print(f"versions: {versions}")
    print(f"load average at start (1/5/15 min): {os.getloadavg()}")
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    env = "".join(f"{k}={os.environ[k]} " for k in names if k in os.environ)
    print(f"command: {env}python -m benchmarks.analysis_throughput {' '.join(argv)}".rstrip())


def compare_single_series(args) -> dict[str, float]:
    x = simulate(args.seed, args.n, args.t)
    ref = x[: args.ref_n]
    print(f"\n[1] N={args.n} series of T={args.t}; references on {len(ref)} series, one at a time")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kpss InterpolationWarning, adfuller FutureWarning
        references = {
            "adf": lambda r: adfuller(r, autolag="AIC", result_object=True),
            "kpss": lambda r: sm_kpss(r, result_object=True),
            "acf": lambda r: sm_acf(r, nlags=args.nlags, fft=True),
            "welch": lambda r: scipy.signal.welch(r, nperseg=args.nperseg),
        }
        batched = {
            "adf": adf,
            "kpss": kpss,
            "acf": lambda b: acf(b, args.nlags),
            "welch": lambda b: welch(b, nperseg=args.nperseg),
        }
        speedups = {}
        print(
            f"{'test':6s} {'reference ms/series':>20s} {'batched ms/series':>18s} "
            f"{'speedup':>8s}  max rel. diff on the subsample"
        )
        for name in references:
            ref_s = per_series_seconds(references[name], ref)
            ours_s, out = batched_seconds(batched[name], x)
            diff = _max_rel_diff(name, out, [references[name](r) for r in ref])
            speedups[name] = ref_s / ours_s
            print(f"{name:6s} {ref_s * 1e3:20.4f} {ours_s * 1e3:18.5f} {speedups[name]:8.1f}  {diff}")
        whole = time.perf_counter()
        scipy.signal.welch(x, nperseg=args.nperseg, axis=-1)
        print(
            f"(scipy.signal.welch on the whole [N, T] array at once: "
            f"{(time.perf_counter() - whole) / args.n * 1e3:.5f} ms/series)"
        )
    return speedups


def _max_rel_diff(name, out, refs) -> str:
    k = len(refs)
    if name == "adf":
        stat = np.array([r.statistic for r in refs])
        lags = np.array([r.lags for r in refs])
        rel = np.max(np.abs(out.stat[:k] - stat) / np.abs(stat))
        return f"stat {rel:.1e}, usedlag equal: {bool(np.all(out.usedlag[:k] == lags))}"
    if name == "kpss":
        stat = np.array([r.statistic for r in refs])
        lags = np.array([r.lags for r in refs])
        rel = np.max(np.abs(out.stat[:k] - stat) / np.abs(stat))
        return f"stat {rel:.1e}, lags equal: {bool(np.all(out.lags[:k] == lags))}"
    if name == "welch":
        psd = np.array([r[1] for r in refs])
        return f"psd {np.max(np.abs(out[1][:k] - psd) / np.max(np.abs(psd))):.1e} (of max)"
    return f"acf {np.max(np.abs(out[:k] - np.array(refs))):.1e} (abs)"


def full_pipeline(args) -> tuple[float, float]:
    total = args.members * args.params
    print(
        f"\n[2] full pipeline: {args.members} members x {args.params} params = {total:,} "
        f"series of T={args.pipeline_t}, one member (chunk) at a time"
    )
    stage = dict.fromkeys(("generate", "acf", "welch", "adf", "kpss"), 0.0)
    verdicts = np.zeros(len(VERDICTS), dtype=np.int64)
    start = time.perf_counter()
    for member in range(args.members):
        t0 = time.perf_counter()
        x = simulate(args.seed + 1 + member, args.params, args.pipeline_t)
        t1 = time.perf_counter()
        acf(x, args.nlags)
        t2 = time.perf_counter()
        welch(x, nperseg=min(args.nperseg, args.pipeline_t))
        t3 = time.perf_counter()
        a = adf(x)
        t4 = time.perf_counter()
        k = kpss(x)
        t5 = time.perf_counter()
        # the compact int8 codes behind stationarity_verdict (which returns names): counted here
        verdicts += np.bincount(_stationarity_codes(a, k), minlength=len(VERDICTS))
        for name, dt in zip(stage, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            stage[name] += dt
        if args.progress and (member + 1) % max(1, args.members // 8) == 0:
            print(f"  {member + 1}/{args.members} members, {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start
    print("stage seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in stage.items()))
    print("verdicts: " + ", ".join(f"{n} {c}" for n, c in zip(VERDICTS, verdicts)))
    print(
        f"wall {wall:.3f} s ({wall / total * 1e3:.4f} ms/series incl. generation); "
        f"load average at end: {os.getloadavg()}"
    )
    return wall, peak_rss_gib()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="series in part 1")
    parser.add_argument("--t", type=int, default=2_000, help="length of the part-1 series")
    parser.add_argument("--ref-n", type=int, default=200, help="series run through the references")
    parser.add_argument("--members", type=int, default=256, help="ensemble members in part 2")
    parser.add_argument("--params", type=int, default=13_002, help="series per member in part 2")
    parser.add_argument("--pipeline-t", type=int, default=512, help="length of part-2 series")
    parser.add_argument("--nlags", type=int, default=40, help="ACF lags")
    parser.add_argument("--nperseg", type=int, default=256, help="Welch segment length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="print progress in part 2")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    devices.setup_host_devices()  # before JAX starts: one CPU host device per core (env RVSP_JAX_HOST_DEVICES)
    if args.quick:
        args.n, args.t, args.ref_n = 200, 256, 10
        args.members, args.params, args.pipeline_t = 2, 500, 128
    args.ref_n = min(args.ref_n, args.n)
    describe_machine(argv)
    speedups = compare_single_series(args)
    wall, rss = full_pipeline(args)
    print(
        f"adf_speedup={speedups['adf']:.1f} kpss_speedup={speedups['kpss']:.1f} "
        f"acf_speedup={speedups['acf']:.1f} welch_speedup={speedups['welch']:.1f} "
        f"full_pipeline_s={wall:.3f} peak_rss_gib={rss:.2f}"
    )


if __name__ == "__main__":
    main()
