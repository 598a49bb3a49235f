"""Size and power of rvsp_jax.analysis.tail_verdict, measured by simulation.

    python -m benchmarks.tail_calibration                 # 1,000 series per case, n = 512 and 4096 (~1 min)
    python -m benchmarks.tail_calibration --reps 200      # quicker, wider intervals

For each case (a law with a known answer) and sample size n, ``reps`` independent series are drawn
from one seed and :func:`~rvsp_jax.analysis.tails.tail_verdict` (alpha = 0.05) is applied; the table
gives the fraction of series per verdict with a 95% Wilson interval. Cases:

- ``gaussian``: N(0, 1), the answer is "gaussian" (expected rate 1 - alpha);
- ``t(3)``, ``t(4)``: Student-t, finite variance, tail index 3 and 4 ("heavy-tailed"; never
  "infinite-variance");
- ``lnmix(s)``: Gaussian scale mixture ``z * exp(s * w)``, z and w independent N(0, 1): all moments
  finite, excess kurtosis ``3 exp(4 s^2) - 3``; s <= 1 is the calibrated range, s = 1.25 and 1.5 are
  shown as beyond it (most of their variance sits in scales a sample of n rarely contains);
- ``stable(a)``: symmetric alpha-stable (``scipy.stats.levy_stable``, beta = 0), infinite variance
  for a < 2 ("infinite-variance").

Prints the machine, the command and a markdown table (the one in docs/calibration.md, Tails).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import scipy
from scipy.stats import levy_stable
from statsmodels.stats.proportion import proportion_confint

from rvsp_jax.analysis.tails import TAIL_VERDICTS, tail_verdict
from rvsp_jax.training import devices

CASES = (
    "gaussian",
    "t(3)",
    "t(4)",
    "lnmix(0.5)",
    "lnmix(1)",
    "lnmix(1.25)",
    "lnmix(1.5)",
    "stable(1)",
    "stable(1.2)",
    "stable(1.5)",
    "stable(1.7)",
    "stable(1.9)",
)
EXPECTED = {
    "gaussian": "gaussian",
    "t(3)": "heavy-tailed",
    "t(4)": "heavy-tailed",
    "lnmix(0.5)": "heavy-tailed",
    "lnmix(1)": "heavy-tailed",
    "lnmix(1.25)": "heavy-tailed",
    "lnmix(1.5)": "heavy-tailed",
    "stable(1)": "infinite-variance",
    "stable(1.2)": "infinite-variance",
    "stable(1.5)": "infinite-variance",
    "stable(1.7)": "infinite-variance",
    "stable(1.9)": "infinite-variance",
}


def draw(case: str, reps: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[reps, n]`` float64 samples of ``case``."""
    if case == "gaussian":
        return rng.standard_normal((reps, n))
    value = float(case[case.index("(") + 1 : -1])
    if case.startswith("t("):
        return rng.standard_t(value, (reps, n))
    if case.startswith("lnmix("):
        return rng.standard_normal((reps, n)) * np.exp(value * rng.standard_normal((reps, n)))
    if case.startswith("stable("):
        return levy_stable.rvs(value, 0.0, size=(reps, n), random_state=rng)
    raise ValueError(f"unknown case {case!r}")


def wilson(count: int, total: int) -> tuple[float, float]:
    lo, hi = proportion_confint(count, total, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def calibrate(sizes, reps: int, seed: int, alpha: float = 0.05) -> list[dict]:
    rows = []
    for n in sizes:
        for i, case in enumerate(CASES):
            rng = np.random.default_rng([seed, n, i])
            result = tail_verdict(draw(case, reps, n, rng), alpha=alpha)
            v = np.asarray(result.verdict)
            rates = {name: (int(np.sum(v == name)), *wilson(int(np.sum(v == name)), reps)) for name in TAIL_VERDICTS}
            rows.append(
                {
                    "case": case,
                    "n": n,
                    "expected": EXPECTED[case],
                    "rates": rates,
                    "median_tail_index": float(np.nanmedian(result.tail_index)),
                }
            )
    return rows


def table(rows: list[dict], reps: int) -> str:
    header = ["case", "n", "expected", *TAIL_VERDICTS, "median Hill (k = 5% n)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["case"], str(r["n"]), r["expected"]]
        for name in TAIL_VERDICTS:
            count, lo, hi = r["rates"][name]
            text = f"{count / reps:.3f} [{lo:.3f}, {hi:.3f}]"
            cells.append(f"**{text}**" if name == r["expected"] else text)
        cells.append(f"{r['median_tail_index']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=1000, help="series per case and n")
    p.add_argument("--sizes", default="512,4096", help="sample sizes n, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    devices.setup_host_devices()  # before JAX starts: one CPU host device per core (env RVSP_JAX_HOST_DEVICES)
    sizes = [int(s) for s in args.sizes.split(",")]
    args_text = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: python -m benchmarks.tail_calibration {args_text}".rstrip())
    print(
        f"machine: {platform.platform()}; {platform.processor() or platform.machine()}; "
        f"cpu_count={os.cpu_count()}; python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}"
    )
    start = time.perf_counter()
    rows = calibrate(sizes, args.reps, args.seed)
    print(
        f"{args.reps} series per case and n, alpha = 0.05, 95% Wilson intervals; {time.perf_counter() - start:.0f} s\n"
    )
    print(table(rows, args.reps))


if __name__ == "__main__":
    main()
