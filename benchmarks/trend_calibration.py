"""Size and power of the batch-size gathering's trend verdict (:func:`rvsp_jax.studies.batch_sizes.trend`).

    python -m benchmarks.trend_calibration --reps 1000

The verdict ("falls" / "rises" at level 0.05, else "inconclusive") is a two-sided permutation test of
Spearman's rho between log(lr/B) and the cells' median tail index. Null: the cells' indices are
exchangeable (i.i.d. Gaussian, no trend). Alternatives: index = -slope * z + noise with z the
standardised log(lr/B) of the grid and unit-variance Gaussian noise. Grids: 2 batch sizes x 3 lr
(6 cells, the default reproduction; exact permutations) and 3 x 3 (9 cells; 2,000 random
permutations per test). Rates with 95% Wilson intervals; prints the machine.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from rvsp_jax.studies.batch_sizes import trend

GRIDS = {"2 x 3": ([32, 128], [0.03, 0.1, 0.3]), "3 x 3": ([32, 64, 128], [0.03, 0.1, 0.3])}
SLOPES = (0.0, 0.5, 1.0, 2.0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.trend_calibration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reps", type=int, default=1000, help="simulated gatherings per cell")
    args = p.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| grid | slope | falls | rises | falls 95% interval |")
    print("|---|---|---|---|---|")
    for name, (bs, lrs) in GRIDS.items():
        x = np.log([lr / b for b in bs for lr in lrs])
        z = (x - x.mean()) / x.std()
        for slope in SLOPES:
            rng = np.random.default_rng([len(x), int(slope * 10)])
            verdicts = [
                trend(x, -slope * z + rng.normal(size=x.size), n_perm=2000, seed=r)["verdict"] for r in range(args.reps)
            ]
            falls, rises = verdicts.count("falls"), verdicts.count("rises")
            lo, hi = proportion_confint(falls, args.reps, alpha=0.05, method="wilson")
            print(
                f"| {name} | {slope:g} | {falls / args.reps:.1%} | {rises / args.reps:.1%} | [{lo:.1%}, {hi:.1%}] |",
                flush=True,
            )


if __name__ == "__main__":
    main()
