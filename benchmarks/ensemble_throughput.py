"""Ensemble training throughput: model-steps/s for several S, device splits, and a per-seed loop.

    python -m benchmarks.ensemble_throughput                  # S in 1,64,256,1024; 600 steps
    python -m benchmarks.ensemble_throughput --members 256 --steps 400 --block 8,16
    python -m benchmarks.ensemble_throughput --members 256 --sweep-grid 4   # + sweep vs plain run

Every configuration runs in its own subprocess (the number of host devices is fixed when JAX starts),
trains ``--steps`` steps after one warm-up chunk (which includes compilation, reported separately),
and reports model-steps/s = members x steps / seconds. The per-seed loop trains the same members one
after another as ensembles of one on a single device (block 1): what a for-loop over seeds costs.
A model-step of the 784-16-16-10 MLP at batch 32 is 6 x 32 x 12,960 = 2.49 MFLOP (forward + backward
matmuls); the float32 matmul peak is measured here with a 2048^3 XLA dot over all cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _worker(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rvsp_jax.training import devices

    devices.setup_host_devices()  # before JAX starts: RVSP_JAX_HOST_DEVICES (set by _run)
    from rvsp_jax.config import TrainConfig
    from rvsp_jax.data import load
    from rvsp_jax.training.ensemble import Ensemble

    if spec["kind"] == "peak":
        n = 2048
        a = jnp.ones((n, n), jnp.float32)
        dot = jax.jit(lambda x, y: x @ y)
        dot(a, a).block_until_ready()
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            dot(a, a).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
        return {"gflops": best / 1e9}

    data = load("mnist")
    members, steps = spec["members"], spec["steps"]
    cfg = dict(steps=spec["chunk"] + steps, chunk=spec["chunk"], block=spec["block"])

    def timed(seeds, block, devices=None, sweep="{}"):
        ens = Ensemble(TrainConfig(seeds=seeds, sweep=sweep, **dict(cfg, block=block)), data, devices=devices)
        t0 = time.perf_counter()
        chunks = ens.chunks(ens.init())
        first = next(chunks)
        jax.block_until_ready(first.state)
        t1 = time.perf_counter()
        last = first
        for last in chunks:  # noqa: B007 - run the generator to its last chunk
            pass
        jax.block_until_ready(last.state)
        return t1 - t0, time.perf_counter() - t1

    if spec["kind"] == "loop":
        seeds = spec["loop_seeds"]
        warm, run = zip(*(timed(1, 1, devices=jax.devices()[:1]) for _ in range(seeds)))
        return {"model_steps_per_s": seeds * steps / sum(run), "compile_s": warm[0]}
    if spec["kind"] == "sweep":  # a grid of G learning rates x members / G seeds, same total members
        g = spec["grid"]
        lrs = [round(0.01 * 3**i, 6) for i in range(g)]
        warm, run = timed(members // g, spec["block"], sweep=json.dumps({"lr": lrs}))
        return {"model_steps_per_s": members // g * g * steps / run, "compile_s": warm}
    warm, run = timed(members, spec["block"])
    padded = -(-members // (len(jax.devices()) * spec["block"])) * len(jax.devices()) * spec["block"]
    return {
        "model_steps_per_s": members * steps / run,
        "compile_s": warm,
        "padded": padded,
        "devices": len(jax.devices()),
        "np": np.__version__,
    }


def _run(spec: dict, devices: int | None) -> dict:
    env = dict(os.environ)
    if devices is not None:
        env["RVSP_JAX_HOST_DEVICES"] = str(devices)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ensemble_throughput", "--worker", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ensemble_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--members", default="1,64,256,1024", help="ensemble sizes S, comma separated")
    p.add_argument("--steps", type=int, default=600, help="timed steps after the warm-up chunk")
    p.add_argument("--chunk", type=int, default=200, help="steps per compiled chunk")
    p.add_argument("--block", default="8", help="members per block, comma separated to compare")
    p.add_argument("--devices", type=int, default=os.cpu_count(), help="host devices of the default split")
    p.add_argument("--loop-seeds", type=int, default=4, help="seeds timed in the per-seed loop")
    p.add_argument(
        "--sweep-grid", type=int, default=4, help="grid points of the sweep-vs-plain comparison (0 skips it)"
    )
    p.add_argument("--sweep-members", type=int, default=256, help="total members of that comparison")
    p.add_argument("--sweep-rounds", type=int, default=3, help="paired rounds of that comparison")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return

    import jax

    from rvsp_jax.training import devices

    devices.setup_host_devices()  # before JAX starts: one CPU host device per core (env RVSP_JAX_HOST_DEVICES)

    print(f"# {' '.join(['python -m benchmarks.ensemble_throughput'] + (argv or sys.argv[1:]))}")
    print(
        f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; python {platform.python_version()}, jax {jax.__version__}"
    )
    flops_per_step = 6 * 32 * (784 * 16 + 16 * 16 + 16 * 10)
    peak = _run({"kind": "peak"}, args.devices)["gflops"]
    print(f"float32 matmul peak (XLA 2048^3 dot): {peak:.1f} GFLOP/s")
    base = {"steps": args.steps, "chunk": args.chunk}
    loop = _run(dict(base, kind="loop", members=1, block=1, loop_seeds=args.loop_seeds), 1)
    print(
        f"per-seed loop (1 device, block 1): {loop['model_steps_per_s']:,.0f} model-steps/s "
        f"(compile+first chunk {loop['compile_s']:.1f} s)"
    )
    print(
        f"{'S':>6} {'block':>5} {'devices':>7} {'model-steps/s':>14} {'vs loop':>8} "
        f"{'GFLOP/s':>8} {'of peak':>8} {'compile+1st chunk s':>20}"
    )
    headline = None
    for members in [int(m) for m in args.members.split(",")]:
        for block in [int(b) for b in args.block.split(",")]:
            for n_devices in sorted({args.devices, 1}, reverse=True):
                r = _run(dict(base, kind="ensemble", members=members, block=block), n_devices)
                rate = r["model_steps_per_s"]
                gflops = rate * flops_per_step / 1e9
                print(
                    f"{members:>6} {block:>5} {n_devices:>7} {rate:>14,.0f} "
                    f"{rate / loop['model_steps_per_s']:>7.2f}x {gflops:>8.1f} {gflops / peak:>7.1%} "
                    f"{r['compile_s']:>20.1f}",
                    flush=True,
                )
                if members == 256 and n_devices == args.devices and headline is None:
                    headline = (rate, rate / loop["model_steps_per_s"], gflops / peak)
    if headline:
        print(
            f"members=256 model_steps_per_s={headline[0]:.0f} vs_loop={headline[1]:.2f} "
            f"frac_of_matmul_peak={headline[2]:.3f}"
        )
    if args.sweep_grid > 1:
        # paired, interleaved rounds: a sweep of G learning rates against a plain run, same members
        rates = {"plain": [], "sweep": []}
        for _ in range(args.sweep_rounds):
            for kind in ("plain", "sweep"):
                spec = dict(
                    base,
                    kind="ensemble" if kind == "plain" else "sweep",
                    members=args.sweep_members,
                    block=8,
                    grid=args.sweep_grid,
                )
                rates[kind].append(_run(spec, args.devices)["model_steps_per_s"])
        med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        print(
            f"sweep of {args.sweep_grid} learning rates x {args.sweep_members // args.sweep_grid} seeds "
            f"vs plain S={args.sweep_members} ({args.sweep_rounds} paired rounds, medians): "
            f"{med['sweep']:,.0f} vs {med['plain']:,.0f} model-steps/s; "
            f"sweep_cost={med['plain'] / med['sweep'] - 1:+.3f}"
        )


if __name__ == "__main__":
    main()
