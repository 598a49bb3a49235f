"""Run an experiment as several JAX processes: N local ones, or one task of a cluster job.

    python -m rvsp_jax.launch --processes 2 -- experiments.train --seeds 64 --out results/train/mp
    srun python -m rvsp_jax.launch --cluster -- experiments.train ...   # one per task (SLURM, ...)

``--processes N`` starts N child processes on this machine, each with ``--devices-per-process``
CPU host devices (default 1), gloo CPU collectives and a coordinator on a free localhost port. Each
child calls ``jax.distributed.initialize`` before any JAX computation, then runs the module as
``python -m`` would. The member mesh spans every process's devices; process 0 writes the run
folder's manifest, checkpoints and final results and every process its own members' chunks
(:mod:`rvsp_jax.io.record`). Ctrl-C or SIGTERM is forwarded to every child (the run stops at the end
of a chunk with a checkpoint); if a child dies, the others are killed at once and the launcher
exits non-zero naming it. Children's stdout, except process 0's, is dropped (``--all-output``
keeps it); stderr is kept and every line a child prints on failure starts with ``[process i/N]``.

``--cluster`` runs this process as one task of a job that a scheduler started:
``jax.distributed.initialize()`` finds the coordinator, process count and id itself (SLURM, Open
MPI, ... see JAX's cluster auto-detection), with this module's shorter timeouts.

Failures end every process within seconds: the heartbeat timeout is
:data:`HEARTBEAT_SECONDS` (JAX's default is 100 s), a watchdog thread exits with one line when a
peer stops sending heartbeats, a collective with a dead peer fails at once (gloo), and a failing
process exits without waiting on JAX's shutdown barrier (which waits for every peer, minutes).
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

ENV_ID, ENV_COUNT, ENV_COORDINATOR = "RVSP_JAX_PROCESS_ID", "RVSP_JAX_PROCESS_COUNT", "RVSP_JAX_COORDINATOR"
HEARTBEAT_SECONDS = int(os.environ.get("RVSP_JAX_HEARTBEAT_SECONDS", 10))
"""A process that sends no heartbeat for this long is declared dead (env ``RVSP_JAX_HEARTBEAT_SECONDS``)."""
INIT_SECONDS = int(os.environ.get("RVSP_JAX_INIT_SECONDS", 120))
"""How long a process waits for all others to join (env ``RVSP_JAX_INIT_SECONDS``)."""
SHUTDOWN_SECONDS = 30
KILL_GRACE_SECONDS = 10.0
"""After a forwarded Ctrl-C / SIGTERM, how long children get to write their checkpoint and exit."""
PEER_FAILED = 3
"""Exit status of a process that stops because another one failed (a collective with it failed, or
its heartbeats stopped); the launcher names the other one."""
FAILURE_GRACE_SECONDS = 2.0
"""After a child fails, how long the others get to exit on their own before they are killed."""
_PEER_WORDS = (
    "gloo",
    "connection closed",
    "connection reset",
    "coordination service",
    "heartbeat",
    "barrier",
    "unavailable",
    "deadline exceeded",
    "peer",
)


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- one process of several ------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()


def _initialize() -> tuple[int, int]:
    """``jax.distributed.initialize`` from the launcher's environment, else by auto-detection; the
    host devices (``RVSP_JAX_HOST_DEVICES``, which the local launcher sets to
    ``--devices-per-process``) are set first, before JAX starts."""
    import jax

    from rvsp_jax.training import devices

    devices.setup_host_devices()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeouts = dict(
        initialization_timeout=INIT_SECONDS,
        heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
        shutdown_timeout_seconds=SHUTDOWN_SECONDS,
    )
    if os.environ.get(ENV_COORDINATOR):
        jax.distributed.initialize(
            os.environ[ENV_COORDINATOR], int(os.environ[ENV_COUNT]), int(os.environ[ENV_ID]), **timeouts
        )
    else:
        jax.distributed.initialize(**timeouts)
    return jax.process_index(), jax.process_count()


def _watchdog(me: int, count: int, done: threading.Event) -> None:
    """Exit this process (status 1, one line) when a peer stops sending heartbeats."""
    from jax._src import distributed  # the coordination client: no public API for liveness

    client = distributed.global_state.client
    while not done.wait(0.25):
        try:
            failed = sorted(int(k.rsplit("/", 1)[-1]) for k, _ in client.key_value_dir_get(_FAILED))
            failed = [p for p in failed if p != me]
            if failed and not done.is_set():  # a peer said it fails (see _leave): follow it now
                _say(
                    f"[process {me}/{count}] error: process {', '.join(map(str, failed))} failed "
                    "(its error is above); stopping"
                )
                client.key_value_set(f"{_EXITING}{me}", "1")
                os._exit(PEER_FAILED)
            live = client.get_live_nodes(list(range(count)))
        except Exception as e:  # noqa: BLE001 -- the coordination service itself is gone
            if done.is_set():
                return
            _say(
                f"[process {me}/{count}] error: lost the coordination service (process 0 died?): "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; stopping"
            )
            os._exit(PEER_FAILED)
        missing = sorted(set(range(count)) - set(live))
        if missing and not done.is_set():
            _say(
                f"[process {me}/{count}] error: process {', '.join(map(str, missing))} stopped "
                f"responding (no heartbeat for {HEARTBEAT_SECONDS} s); stopping"
            )
            os._exit(PEER_FAILED)


# coordination-service keys: process i sets <_FAILED>i when it fails, <_EXITING>i on any non-zero exit
_FAILED, _EXITING = "rvsp_jax/failed/", "rvsp_jax/exiting/"


def _peer_text(text: str) -> bool:
    """Whether an error message is JAX's for a collective or coordination call with a lost peer."""
    text = text.lower()
    return any(w in text for w in ("gloo", "coordination service", "heartbeat"))


def _peer_failure(e: BaseException) -> bool:
    """Whether ``e`` is JAX's error for a collective or coordination call whose peer is gone."""
    return type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError") and any(w in str(e).lower() for w in _PEER_WORDS)


def _leave(me: int, count: int, failed: bool, wait: bool, seconds: float = 2.0) -> None:
    """Before a non-zero exit: say so through the coordination service (``failed``: the others'
    watchdogs follow at once, with one line each); process 0, which hosts the service (its exit
    aborts every other process at once, with JAX's long fatal message), first waits up to
    ``seconds`` for the others to exit too."""
    from jax._src import distributed

    client = distributed.global_state.client
    try:
        client.key_value_set(f"{_EXITING}{me}", "1")
        if failed:
            client.key_value_set(f"{_FAILED}{me}", "1")
    except Exception:  # noqa: BLE001 -- the service is gone already
        return
    if me != 0 or not wait:
        return
    others, deadline = set(range(1, count)), time.monotonic() + seconds
    while others and time.monotonic() < deadline:
        for p in list(others):
            try:
                client.key_value_try_get(f"{_EXITING}{p}")
                others.discard(p)
            except Exception:  # noqa: BLE001 -- not exiting (yet)
                pass
        time.sleep(0.05)
    time.sleep(0.2)  # let them finish exiting


def run_worker(module: str, args: list[str]) -> None:
    """Join the processes (``jax.distributed.initialize``), run ``module`` as ``__main__`` with
    ``args``, and exit: on success after JAX's orderly shutdown; on failure at once, with the exit
    status of the failure and a line naming this process (peers are left to their watchdogs)."""
    me, count = _initialize()
    done = threading.Event()
    threading.Thread(target=_watchdog, args=(me, count, done), name="rvsp-watchdog", daemon=True).start()
    tag = f"[process {me}/{count}]"
    code, peer_failed = 0, False
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if isinstance(e.code, str) and _peer_text(e.code):  # a CLI's one line for JAX's error
            peer_failed, code = True, PEER_FAILED
            _say(
                f"{tag} error: another process failed, so a collective with it did "
                f"({e.code.removeprefix('error: ').splitlines()[0]}); stopping (the failed "
                "process's own error is above)"
            )
        elif isinstance(e.code, str):
            _say(f"{tag} {e.code}")
            code = 1
        else:
            code = int(e.code or 0)
    except KeyboardInterrupt:
        _say(f"{tag} interrupted")
        code = 130
    except BaseException as e:  # noqa: BLE001 -- reported in one line (peer) or with its traceback
        if _peer_failure(e):
            peer_failed = True
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            _say(
                f"{tag} error: another process failed, so a collective with it did ({first}); "
                "stopping (the failed process's own error is above)"
            )
            code = PEER_FAILED
        else:
            _say(f"{tag} error: {type(e).__name__}: {e}")
            traceback.print_exc()
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        _leave(me, count, failed=code != 130, wait=not peer_failed)
        os._exit(code)  # not through JAX's shutdown barrier, which would wait for every peer
    done.set()
    import jax

    jax.distributed.shutdown()
    sys.exit(0)


# ---- the local launcher --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In a child: be killed when the launcher dies (Linux), and leave the terminal's Ctrl-C to it."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def launch(
    processes: int,
    module: str,
    args: list[str],
    devices_per_process: int = 1,
    all_output: bool = False,
    python: str | None = None,
) -> int:
    """Start ``processes`` local processes running ``module args`` together; return the exit status
    (0 when all succeed; else the first failure's, 128 + signal for a killed child)."""
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    coordinator = f"127.0.0.1:{free_port()}"
    children: list[subprocess.Popen] = []
    for i in range(processes):
        env = dict(
            os.environ,
            **{
                ENV_ID: str(i),
                ENV_COUNT: str(processes),
                ENV_COORDINATOR: coordinator,
                "RVSP_JAX_HOST_DEVICES": str(devices_per_process),
                "PYTHONUNBUFFERED": "1",
            },
        )
        children.append(
            subprocess.Popen(
                [python or sys.executable, "-m", "rvsp_jax.launch", "--worker", "--", module, *args],
                env=env,
                preexec_fn=_die_with_parent,
                stdout=None if all_output or i == 0 else subprocess.DEVNULL,
            )
        )
    forwarded: list[int] = []

    def forward(signum, frame):
        forwarded.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    status, deadline, why, first_failure = 0, None, "", None
    try:
        while True:
            running = [c for c in children if c.poll() is None]
            failed = [(i, c) for i, c in enumerate(children) if c.returncode not in (None, 0)]
            if failed and first_failure is None:
                first_failure = time.monotonic()
            # name the cause, not a process that stopped because of it (PEER_FAILED): wait a moment
            # for the cause to exit when only those are seen
            causes = [f for f in failed if f[1].returncode != PEER_FAILED]
            if (
                failed
                and not status
                and (causes or not running or time.monotonic() - first_failure > FAILURE_GRACE_SECONDS)
            ):
                i, child = (causes or failed)[0]
                code = child.returncode
                status = 128 - code if code < 0 else code
                if forwarded and code in (130, -signal.SIGINT, -signal.SIGTERM):
                    # stopping as asked: the others write their checkpoint and exit too
                    deadline, why = time.monotonic() + KILL_GRACE_SECONDS, "after the stop request"
                else:
                    _say(
                        f"launch: process {i} of {processes} (pid {child.pid}) failed "
                        f"({_describe(code)}); stopping the other processes"
                    )
                    # a moment to exit on their own (they see the failure at once, and print why)
                    deadline, why = time.monotonic() + FAILURE_GRACE_SECONDS, ""
            if not running:
                break
            if deadline is not None and time.monotonic() > deadline:
                if why:
                    _say(f"launch: processes still running {KILL_GRACE_SECONDS:.0f} s {why}; killing them")
                for other in running:
                    other.kill()
                deadline = None
            time.sleep(0.05)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return status


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        sys.exit(
            "usage: python -m rvsp_jax.launch (--processes N | --cluster) [options] -- MODULE ARGS "
            "(e.g. --processes 2 -- experiments.train --seeds 8); the -- is required"
        )
    cut = argv.index("--")
    own, rest = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m rvsp_jax.launch", description=__doc__.split("\n\n")[0])
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--processes", type=int, help="start this many local processes")
    how.add_argument(
        "--cluster",
        action="store_true",
        help="be one task of a scheduler's job (jax.distributed.initialize() auto-detection)",
    )
    how.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--devices-per-process", type=int, default=1, help="CPU host devices of each local process (default 1)"
    )
    parser.add_argument(
        "--all-output", action="store_true", help="keep every process's stdout (default: process 0's only)"
    )
    opts = parser.parse_args(own)
    if not rest:
        parser.error("name the module to run after --, e.g. -- experiments.train --seeds 8")
    module, args = rest[0], rest[1:]
    if opts.worker or opts.cluster:
        run_worker(module, args)
        return
    if opts.processes < 1 or opts.devices_per_process < 1:
        parser.error("--processes and --devices-per-process must be >= 1")
    sys.exit(launch(opts.processes, module, args, opts.devices_per_process, opts.all_output))


if __name__ == "__main__":
    main()
