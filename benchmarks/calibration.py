"""Size and power of the ergodicity verdict (:func:`rvsp_jax.analysis.assess_many`) on processes
whose answer is known.

    python -m benchmarks.calibration                       # S = 256, T = 500, 2000, 8000, 200 reps
    python -m benchmarks.calibration --reps 50 --steps 500 # a quick look

For every process and T it simulates ``reps`` independent ensembles of S members, calls
``assess_many`` once per chunk of ensembles (the ensembles are the observable axis) and prints the
rate of each verdict with a 95% Wilson interval for the rate that matters (non-ergodic under the
ergodic nulls: the size; non-ergodic or non-stationary under the alternatives: the power), next
to the oracle: a one-way ANOVA on the raw values grouped by member (exact for white noise, invalid
under autocorrelation), at the same alpha. For the autocorrelated nulls it also prints the true
integrated autocorrelation time and the median estimates of the verdict's batch-means estimator
and of Sokal's window on member-demeaned autocorrelations (their bias at small T/tau; Sokal's
on the first chunk of ensembles, at most 32). Seeds are
fixed (``--seed``): the same command prints the same table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np
import scipy.signal
import scipy.stats

from rvsp_jax.analysis import assess_many, integrated_autocorr_time
from rvsp_jax.training import devices

VERDICTS = ("ergodic", "non-ergodic", "non-stationary", "inconclusive")
_CHUNK_ELEMENTS = 1 << 25  # float64 elements simulated at once (256 MiB)


def _ar1(rng, shape, phi):
    e = rng.standard_normal(shape)
    e[..., 0] /= math.sqrt(1.0 - phi**2)
    return scipy.signal.lfilter([1.0], [1.0, -phi], e, axis=-1)


def _switching(rng, shape, p):
    """Symmetric two-state (+-1) Markov chain, switch probability p per step, stationary start,
    plus N(0, 1) noise."""
    start = rng.choice([-1.0, 1.0], size=shape[:-1] + (1,))
    flips = np.cumsum(rng.random(shape) < p, axis=-1) % 2
    return start * (1.0 - 2.0 * flips) + rng.standard_normal(shape)


def _trend(T):
    t = np.arange(T) / T
    return 3.0 * t + np.sin(8.0 * np.pi * t)


def _ar_tau(phi):
    return (1 + phi) / (1 - phi)


def _switch_tau(p):
    lam = 1.0 - 2.0 * p
    return (_ar_tau(lam) + 1.0) / 2.0  # signal variance 1 with tau (1+l)/(1-l), plus white noise 1


# name -> (simulate(rng, (S, R, T)) -> x, true tau or None)
NULLS = {
    "white noise, Gaussian": (lambda r, s: r.standard_normal(s), 1.0),
    "white noise, exponential": (lambda r, s: r.exponential(size=s), 1.0),
    "AR(1) phi = 0.5": (lambda r, s: _ar1(r, s, 0.5), _ar_tau(0.5)),
    "AR(1) phi = 0.9": (lambda r, s: _ar1(r, s, 0.9), _ar_tau(0.9)),
    "AR(1) phi = 0.99": (lambda r, s: _ar1(r, s, 0.99), _ar_tau(0.99)),
    "AR(1) phi = 0.995": (lambda r, s: _ar1(r, s, 0.995), _ar_tau(0.995)),
    "two-state switching p = 0.01 + noise": (lambda r, s: _switching(r, s, 0.01), _switch_tau(0.01)),
    "two-state switching p = 0.002 + noise": (lambda r, s: _switching(r, s, 0.002), _switch_tau(0.002)),
    "shared trend + white noise": (lambda r, s: _trend(s[-1]) + r.standard_normal(s), 1.0),
    "shared trend + AR(1) phi = 0.9": (lambda r, s: _trend(s[-1]) + _ar1(r, s, 0.9), _ar_tau(0.9)),
}


def _intercepts(var):
    return lambda r, s: math.sqrt(var) * r.standard_normal(s[:-1] + (1,)) + r.standard_normal(s)


def _slopes(r, s):
    t = np.arange(s[-1]) / s[-1]
    return 0.05 * r.standard_normal(s[:-1] + (1,)) * t + r.standard_normal(s)


def _basins(r, s):
    return 0.02 * r.choice([-1.0, 1.0], size=s[:-1] + (1,)) + r.standard_normal(s)


ALTERNATIVES = {
    "random intercept var(mu) = 1": (_intercepts(1.0), None),
    "random intercept var(mu) = 1e-2": (_intercepts(1e-2), None),
    "random intercept var(mu) = 1e-3": (_intercepts(1e-3), None),
    "random intercept var(mu) = 1e-4": (_intercepts(1e-4), None),
    "member slopes b t/T, b ~ N(0, 0.05^2)": (_slopes, None),
    "two basins mu = +-0.02": (_basins, None),
    "random walk from a common start": (lambda r, s: np.cumsum(r.standard_normal(s), axis=-1), None),
}


def oracle_anova(x: np.ndarray, alpha: float) -> np.ndarray:
    """One-way ANOVA on the raw values grouped by member: x [S, R, T] -> reject [R] (bool)."""
    S, _, T = x.shape
    m = x.mean(axis=-1)  # [S, R]
    between = T * ((m - m.mean(axis=0)) ** 2).sum(axis=0) / (S - 1)
    within = ((x - m[..., None]) ** 2).sum(axis=(0, 2)) / (S * (T - 1))
    return scipy.stats.f.sf(between / within, S - 1, S * (T - 1)) < alpha


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def run_cell(simulate, S: int, T: int, reps: int, seed: int, alpha: float, with_tau: bool):
    """Verdict counts, oracle rejections and tau estimates of ``reps`` ensembles."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(reps, _CHUNK_ELEMENTS // (S * T)))
    counts = dict.fromkeys(VERDICTS, 0)
    oracle = 0
    taus, sokal, needed = [], [], []
    for lo in range(0, reps, chunk):
        x = simulate(rng, (S, min(chunk, reps - lo), T))
        res = assess_many(x, alpha=alpha, describe=False)
        for v in VERDICTS:
            counts[v] += int((res.verdict == v).sum())
        oracle += int(oracle_anova(x, alpha).sum())
        needed += list(res.steps_needed[res.verdict == "inconclusive"])
        if with_tau:
            taus += list(res.tau_int[res.tau_resolved])
            if lo == 0:  # Sokal's estimate on the first chunk only (it is not used by the verdict)
                sokal += list(integrated_autocorr_time(x[:, :32]))
        del x
    return counts, oracle, taus, sokal, needed


def _pct(v: float) -> str:
    return f"{100 * v:.1f}" if np.isfinite(v) else "—"


def machine() -> str:
    cpu = (
        subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
        if sys.platform.startswith("linux")
        else []
    )
    return "\n".join(
        [
            f"nproc: {os.cpu_count()}",
            f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}",
            *cpu,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--members", type=int, default=256, help="members S per ensemble")
    ap.add_argument("--steps", default="500,2000,8000", help="series lengths T (comma-separated)")
    ap.add_argument("--reps", type=int, default=200, help="ensembles per cell")
    ap.add_argument("--reps-long", type=int, default=None, help="ensembles per cell at the longest T (default: --reps)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--only", default="", help="run only processes whose name contains this")
    args = ap.parse_args(argv)
    devices.setup_host_devices()  # before JAX starts: one CPU host device per core (env RVSP_JAX_HOST_DEVICES)
    steps = [int(s) for s in args.steps.split(",")]
    long_reps = args.reps if args.reps_long is None else args.reps_long
    print("command: python -m benchmarks.calibration " + " ".join(sys.argv[1:] if argv is None else argv))
    print(machine())
    print(
        f"\nS = {args.members} members, alpha = {args.alpha}; reps per cell: {args.reps} "
        f"(T = {max(steps)}: {long_reps}); intervals: 95% Wilson.\n"
    )
    t_all = time.perf_counter()
    for title, table, key in (
        ("Ergodic nulls: rate of each verdict (size = non-ergodic)", NULLS, "size"),
        (
            "Non-ergodic alternatives: rate of each verdict (power = non-ergodic + non-stationary)",
            ALTERNATIVES,
            "power",
        ),
    ):
        print(f"### {title}\n")
        head = [
            "process",
            "T",
            "reps",
            "ergodic %",
            "non-ergodic %",
            "non-stationary %",
            "inconclusive %",
            f"{key} % [95% CI]",
            "oracle ANOVA %",
        ]
        if key == "size":
            head += ["tau true", "tau batch means (median)", "tau Sokal (median)"]
        head += ["median steps needed (inconclusive)", "s"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for i, (name, (simulate, tau)) in enumerate(table.items()):
            if args.only and args.only not in name:
                continue
            for T in steps:
                reps = long_reps if T == max(steps) else args.reps
                t0 = time.perf_counter()
                seed = args.seed + 1000 * i + T + (0 if key == "size" else 500_000)
                counts, oracle, taus, sokal, needed = run_cell(
                    simulate, args.members, T, reps, seed, args.alpha, tau is not None
                )
                k = counts["non-ergodic"] + (counts["non-stationary"] if key == "power" else 0)
                lo, hi = wilson(k, reps)
                row = [
                    name,
                    str(T),
                    str(reps),
                    *(_pct(counts[v] / reps) for v in VERDICTS),
                    f"{_pct(k / reps)} [{_pct(lo)}, {_pct(hi)}]",
                    _pct(oracle / reps),
                ]
                if key == "size":
                    row += [
                        f"{tau:.3g}",
                        f"{np.median(taus):.3g} ({len(taus)} resolved)" if taus else "— (none resolved)",
                        f"{np.nanmedian(sokal):.3g}",
                    ]
                row += [f"{int(np.median(needed)):,}" if needed else "—", f"{time.perf_counter() - t0:.0f}"]
                print("| " + " | ".join(row) + " |", flush=True)
        print()
    print(f"total: {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
