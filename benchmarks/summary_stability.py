"""Do the numbers stay the same? Every experiment at a tiny size, its summary.json compared with another
checkout's (e.g. before and after a reorganisation of the code).

    python -m benchmarks.summary_stability --out /tmp/after                       # this checkout
    python -m benchmarks.summary_stability --repo ../before --out /tmp/before     # another checkout
    python -m benchmarks.summary_stability --compare /tmp/before /tmp/after

Each experiment runs as ``python -m experiments.<name>`` in the checkout given by ``--repo`` (its own
code: the checkout's folder comes first on ``sys.path``) with the small flags below, on 2 CPU host
devices, into ``<out>/<name>``. ``--compare`` walks both folders' ``summary.json`` files (sweeps:
also ``points/*/summary.json``; studies with variants: ``runs/*/final.npz``; plain runs:
``final.npz``) and lists every value that differs, ignoring what legitimately changes from one run
to the next: timings (keys ``timings`` and ``*_s``), absolute paths (``run``, ``command``,
``source``) and the summary's ``schema`` key (added in schema 1). Floats are compared exactly: the
claim is bit-identical numbers, not close ones. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# the flags of every experiment at the sizes of the tests (one list for both: tests/sizes.py)
_SIZES = Path(__file__).resolve().parents[1] / "tests" / "sizes.py"
_spec = importlib.util.spec_from_file_location("rvsp_jax_test_sizes", _SIZES)
_sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sizes)
SMALL = _sizes.SMALL_FLAGS

IGNORED = {"timings", "run", "command", "source", "schema", "created", "updated"}


def record(repo: Path, out: Path, only: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(repo), "TQDM_DISABLE": "1"}
    for name in only:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", f"experiments.{name}", *SMALL[name], "--devices", "2", "--out", str(out / name)]
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        status = "ok" if done.returncode == 0 else f"FAILED ({done.returncode})"
        print(f"{name:20s} {status} in {time.perf_counter() - t0:6.1f} s", flush=True)
        if done.returncode:
            print(done.stderr[-2000:])


def _diff(a, b, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED or k.endswith("_s"):
                continue
            if k not in a or k not in b:
                found.append(f"{path}/{k}: only in {'the second' if k not in a else 'the first'}")
            else:
                _diff(a[k], b[k], f"{path}/{k}", found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", found)
    elif a != b:
        found.append(f"{path}: {str(a)[:60]} != {str(b)[:60]}")


def compare(first: Path, second: Path) -> list[str]:
    found: list[str] = []
    names = sorted(
        {p.relative_to(first) for p in first.rglob("summary.json")}
        | {p.relative_to(second) for p in second.rglob("summary.json")}
    )
    for rel in names:
        a, b = first / rel, second / rel
        if not (a.exists() and b.exists()):
            found.append(f"{rel}: only in {'the first' if a.exists() else 'the second'}")
            continue
        _diff(json.loads(a.read_text()), json.loads(b.read_text()), str(rel), found)
    for a in sorted(first.rglob("final.npz")):
        b = second / a.relative_to(first)
        if not b.exists():
            found.append(f"{a.relative_to(first)}: only in the first")
            continue
        with np.load(a) as fa, np.load(b) as fb:
            for key in sorted(set(fa.files) | set(fb.files)):
                if key not in fa.files or key not in fb.files or not np.array_equal(fa[key], fb[key], equal_nan=True):
                    found.append(f"{a.relative_to(first)}:{key} differs")
    print(f"compared {len(names)} summary.json and {len(list(first.rglob('final.npz')))} final.npz files")
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.summary_stability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="checkout whose code runs (default: this one)",
    )
    p.add_argument("--out", type=Path, help="folder of the run folders to write")
    p.add_argument("--only", default=",".join(SMALL), help="experiments, comma separated")
    p.add_argument(
        "--compare", type=Path, nargs=2, metavar=("FIRST", "SECOND"), help="compare two folders written by --out"
    )
    args = p.parse_args(argv)
    if args.compare:
        found = compare(*args.compare)
        print("\n".join(found) if found else "every number is identical")
        sys.exit(1 if found else 0)
    if args.out is None:
        p.error("give --out (to record) or --compare FIRST SECOND")
    print(f"machine: {os.cpu_count()} CPUs; code: {args.repo.resolve()}")
    record(args.repo.resolve(), args.out.resolve(), [n for n in args.only.split(",") if n])


if __name__ == "__main__":
    main()
