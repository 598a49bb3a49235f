"""Cost of recording: training throughput with and without probes, bytes on disk, peak memory.

    python -m benchmarks.recording                  # S=256, 200 steps (long run: 800), chunk 20
    python -m benchmarks.recording --seeds 32 --steps 60 --long-steps 120 --rounds 1   # quick look

Throughput, in one subprocess, in ``--rounds`` interleaved rounds (medians reported, so that load
from other processes hits every mode alike) of three modes:

- ``none``: the ensemble trained without any probe or store (``Ensemble.chunks``), the baseline;
- ``probes``: ``record.run`` with 1,024 update probes per member (``--probe-index total=1024``);
- ``full``: ``record.run`` with all 13,002 updates of every member at every step;
- ``full-unwritten``: the ensemble with the ``full`` probe, its chunks handed to the host and
  dropped: the cost of recording that is in this library's hands, without the file system's.

Throughput is model-steps/s (steps/s x S) after the first chunk (compilation excluded), up to the
moment the writer has put the last chunk on disk; an overhead is the median over rounds of
``baseline rate / rate - 1`` within a round. The CPU time per step of the whole process (all
threads) is printed too: on a machine shared with other work it varies less than wall time.
Peak RSS of ``full`` is measured in two more subprocesses of different run lengths (it must not
grow with the number of steps). Last, plain file writes (64 MiB blocks, no zarr) are timed while the
ensemble trains without recording (``--beside-steps``): ``full`` writes 13.3 MB per step at S=256,
so the rate any writer gets next to the training bounds its throughput whatever this library does.
Prints the machine and the command, and
ends with ``overhead_probes=... overhead_full=... peak_rss_gib_short=... peak_rss_gib_long=...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = {"probes": ("updates", "total=1024"), "full": ("updates", "all")}


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _baseline(ens) -> tuple[float, float]:
    """Steps/s, CPU and system (kernel) CPU seconds per step of training ``ens`` without a store,
    after the first chunk."""
    import jax

    from rvsp_jax.training.ensemble import host_state

    first = first_stop = cpu = None
    # started like record.run (a state placed by put_state), so both compile one step function
    for chunk in ens.chunks(ens.put_state(host_state(ens.init()))):
        jax.block_until_ready(chunk.state)
        if first is None:
            first, first_stop, cpu = time.perf_counter(), chunk.stop, os.times()
    steps = ens.total_steps - first_stop
    end = os.times()
    return (
        steps / (time.perf_counter() - first),
        (end.user + end.system - cpu.user - cpu.system) / steps,
        (end.system - cpu.system) / steps,
    )


def _plain_writes(folder: Path, ens=None, gib: int = 4) -> dict:
    """Write 64 MiB blocks to new files in ``folder`` on a thread: ``gib`` GiB with nothing else
    running (``ens`` None), or for as long as ``ens`` trains without recording beside them.

    Returns the write rate (bytes/s), the kernel CPU seconds per byte written (the process's system
    time; training alone uses almost none) and, beside training, its model-steps/s after its first
    chunk. The rate beside training is what any writer gets from this machine while the ensemble
    trains: an upper bound for recording, which also writes while it trains.
    """
    import threading

    block = np.random.default_rng(0).integers(0, 256, 64 << 20, dtype=np.uint8)
    stop, written = threading.Event(), [0]

    def write() -> None:
        index = 0
        while not stop.is_set() and (ens is not None or index < gib * 16):
            with open(folder / f"block-{index}.bin", "wb", buffering=0) as f:
                f.write(block.data)
            written[0] += block.nbytes
            index += 1
            if index % 16 == 0:  # keep at most 1 GiB of these files on disk
                for old in range(index - 16, index - 8):
                    (folder / f"block-{old}.bin").unlink(missing_ok=True)

    folder.mkdir(parents=True, exist_ok=True)
    thread = threading.Thread(target=write, daemon=True)
    t0, cpu0 = time.perf_counter(), os.times()
    thread.start()
    rate = _baseline(ens)[0] * ens.members if ens is not None else None
    stop.set()
    thread.join()
    seconds, kernel = time.perf_counter() - t0, os.times().system - cpu0.system
    shutil.rmtree(folder, ignore_errors=True)
    return {"bytes_per_s": written[0] / seconds, "kernel_per_byte": kernel / written[0], "model_steps_per_s": rate}


def _recorded(mode: str, config, out: Path) -> dict:
    from rvsp_jax.io.record import ProbeConfig, run

    probes, index = MODES[mode]
    recorded = run(config, ProbeConfig(probes=probes, index=index), out, overwrite=True, progress=False)
    timing = recorded.manifest["timing"]
    return {
        "steps_per_s": timing["steady_steps_per_second"],
        "bytes": _disk_bytes(out),
        "cpu_per_step": timing["steady_cpu_seconds_per_step"],
        "sys_per_step": timing["steady_system_seconds_per_step"],
        "probes": recorded["updates"].shape[2],
    }


def _child(args) -> dict:
    """One subprocess's measurements (``--child throughput`` or ``--child full``)."""
    from rvsp_jax.config import TrainConfig
    from rvsp_jax.training import devices

    devices.use_host_devices(args.devices)
    config = TrainConfig(seeds=args.seeds, steps=args.child_steps, chunk=args.chunk)
    if args.child == "full":
        return _recorded("full", config, args.out)
    from rvsp_jax.training.ensemble import Ensemble
    from rvsp_jax.training.model import make_model
    from rvsp_jax.training.probes import ProbeConfig, make_probe

    baseline = Ensemble(config)
    full_probe, _ = make_probe(ProbeConfig(probes="updates", index="all"), make_model(config), baseline.dataset, config)
    unwritten = Ensemble(config, baseline.dataset, probe=full_probe)
    modes = ("none", "probes", "full", "full-unwritten")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    system: dict[str, list[float]] = {m: [] for m in modes}
    sizes = {}
    for _ in range(args.rounds):
        for mode, ens in (("none", baseline), ("full-unwritten", unwritten)):
            rate, cpu_per_step, sys_per_step = _baseline(ens)
            rates[mode].append(rate)
            cpu[mode].append(cpu_per_step)
            system[mode].append(sys_per_step)
        for mode in MODES:
            result = _recorded(mode, config, args.out / mode)
            rates[mode].append(result["steps_per_s"])
            cpu[mode].append(result["cpu_per_step"])
            system[mode].append(result["sys_per_step"])
            sizes[mode] = result["bytes"]
            shutil.rmtree(args.out / mode)
    writes = {}
    if args.beside_steps:
        writes["alone"] = _plain_writes(args.out / "alone")
        writes["beside"] = _plain_writes(
            args.out / "beside", Ensemble(dataclasses.replace(config, steps=args.beside_steps), baseline.dataset)
        )
    return {"rates": rates, "cpu": cpu, "system": system, "bytes": sizes, "writes": writes}


def _spawn(kind: str, steps: int, args, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.recording",
        "--child",
        kind,
        "--child-steps",
        str(steps),
        "--out",
        str(out),
        "--seeds",
        str(args.seeds),
        "--chunk",
        str(args.chunk),
        "--rounds",
        str(args.rounds),
        "--beside-steps",
        str(args.beside_steps),
    ]
    if args.devices:
        cmd += ["--devices", str(args.devices)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"benchmark child {kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.platform()}; {cpu}; cpu_count={os.cpu_count()}; memory {memory:.1f} GiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recording", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=256, help="ensemble members S (default 256)")
    parser.add_argument("--steps", type=int, default=200, help="steps of the throughput and short runs")
    parser.add_argument("--long-steps", type=int, default=800, help="steps of the long full run")
    parser.add_argument("--chunk", type=int, default=20, help="steps per training chunk")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds")
    parser.add_argument("--devices", type=int, default=None, help="CPU host devices (default: one per core)")
    parser.add_argument(
        "--beside-steps",
        type=int,
        default=2000,
        help="steps of the training run beside which plain file writes are timed (0: skip)",
    )
    parser.add_argument("--child", choices=("throughput", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args)
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(result))
        return

    import jax

    from rvsp_jax.training import devices

    devices.setup_host_devices()  # before JAX starts: one CPU host device per core (env RVSP_JAX_HOST_DEVICES)
    print(f"machine: {_machine()}; jax {jax.__version__}; devices {devices.describe()}")
    print(f"load average at start (1/5/15 min): {os.getloadavg()}")
    print(f"command: python -m benchmarks.recording {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(
        f"S={args.seeds}, chunk={args.chunk}, {args.rounds} round(s) of {args.steps} steps per mode; "
        "sigmoid 784-16-16-10, SGD, batch 32",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="rvsp-recording-", dir=os.environ.get("RVSP_BENCH_DIR")) as tmp:
        work = Path(tmp)
        tp = _spawn("throughput", args.steps, args, work / "throughput")
        rates, cpu, system = ({m: np.array(v) for m, v in tp[k].items()} for k in ("rates", "cpu", "system"))
        for mode in rates:
            rounds = ", ".join(f"{r * args.seeds:,.0f}" for r in rates[mode])
            print(
                f"  {mode:14s}: {np.median(rates[mode]) * args.seeds:9,.0f} model-steps/s (median; "
                f"rounds: {rounds}); CPU {np.median(cpu[mode]) * 1e3:.1f} ms/step, of which kernel "
                f"{np.median(system[mode]) * 1e3:.1f}; "
                f"{args.steps} steps on disk {tp['bytes'].get(mode, 0) / 2**20:,.1f} MiB",
                flush=True,
            )
        # overhead of each round against the baseline of the same round, then the median
        overhead = {m: float(np.median(rates["none"] / rates[m] - 1)) for m in rates if m != "none"}
        overhead_cpu = {m: float(np.median(cpu[m] / cpu["none"] - 1)) for m in rates if m != "none"}
        print(
            "CPU-time overhead (all threads; less sensitive to other load): "
            + ", ".join(f"{m} {v:.3f}" for m, v in overhead_cpu.items()),
            flush=True,
        )
        print(
            f"overhead of full-unwritten (training, the probe and the hand-over to the host, no "
            f"file system): {overhead['full-unwritten']:.3f}",
            flush=True,
        )
        runs = {}
        for steps in (args.steps, args.long_steps):
            runs[steps] = _spawn("full", steps, args, work / f"full-{steps}")
            shutil.rmtree(work / f"full-{steps}", ignore_errors=True)
            print(
                f"  full {steps:5d} steps in its own process: peak RSS {runs[steps]['peak_rss_gib']:.2f} GiB, "
                f"{runs[steps]['steps_per_s'] * args.seeds:,.0f} model-steps/s, disk "
                f"{runs[steps]['bytes'] / 2**20:,.1f} MiB",
                flush=True,
            )
        per_step = 4 * args.seeds * 13_002
        print(
            f"full updates: {per_step / 1e6:.1f} MB per step, written at "
            f"{np.median(rates['full']) * per_step / 2**20:,.0f} MiB/s",
            flush=True,
        )
        if tp["writes"]:
            alone, beside = tp["writes"]["alone"], tp["writes"]["beside"]
            ceiling = beside["bytes_per_s"] / per_step * args.seeds
            print(
                f"plain file writes (64 MiB blocks, no zarr): alone {alone['bytes_per_s'] / 2**20:,.0f} "
                f"MiB/s, {alone['kernel_per_byte'] * 2**20 * 1e3:.2f} ms of kernel CPU per MiB; beside "
                f"the training ({args.beside_steps} steps, no recording) "
                f"{beside['bytes_per_s'] / 2**20:,.0f} MiB/s, "
                f"{beside['kernel_per_byte'] * 2**20 * 1e3:.2f} ms per MiB, while it trains at "
                f"{beside['model_steps_per_s']:,.0f} model-steps/s. At {per_step / 1e6:.1f} MB per step "
                f"that rate carries at most {ceiling:,.0f} model-steps/s of full recording (overhead >= "
                f"{max(0.0, np.median(rates['none']) * args.seeds / ceiling - 1):.3f}); full recording's "
                f"kernel CPU: {np.median(system['full'] - system['none']) / per_step * 2**20 * 1e3:.2f} "
                "ms per MiB",
                flush=True,
            )
    print(
        f"overhead_probes={overhead['probes']:.3f} overhead_full={overhead['full']:.3f} "
        f"peak_rss_gib_short={runs[args.steps]['peak_rss_gib']:.2f} "
        f"peak_rss_gib_long={runs[args.long_steps]['peak_rss_gib']:.2f}"
    )


if __name__ == "__main__":
    main()
