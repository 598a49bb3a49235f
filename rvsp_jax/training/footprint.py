"""Memory a training run will need, estimated from its configuration before anything is allocated.

:class:`~rvsp_jax.training.ensemble.Ensemble` calls :func:`check` first thing, so an ensemble that cannot fit
(``--seeds 1000000000``) is refused in well under a second with the numbers, instead of growing until
the kernel kills it. The estimate is built from shapes only (``jax.eval_shape`` of one member's
initial state and probe output), multiplied by the members and by how many copies of each thing the
trainer and the recorder keep alive at once:

- ensemble state (parameters + optimizer state): :data:`STATE_COPIES` copies (the chunk's input and
  output state on the devices, the pending chunk's state, a host checkpoint copy queued for the
  writer and the one being written);
- minibatch orders: int32 ``[S_pad, 2, N]`` on the host and on the devices;
- per-step metrics: 4 float32 ``[S_pad, chunk]`` per chunk, :data:`CHUNK_COPIES` chunks alive;
- probe buffers: ``[S_pad, chunk / every, ...]`` per chunk, :data:`CHUNK_COPIES` chunks alive (the
  trainer keeps :data:`~rvsp_jax.training.ensemble.SPARE_CHUNKS` handed-out chunks for reuse, plus the one
  being computed and the one being written);
- the data set, once on the host and once per device (host devices share the machine's memory).

On a CPU everything is compared with the memory the kernel reports available (``MemAvailable``);
on an accelerator, the device part with the devices' memory and the host part with the host's.
"""

from __future__ import annotations

import os
from typing import NamedTuple

STATE_COPIES = 5
CHUNK_COPIES = 6  # SPARE_CHUNKS (4) + computing + being written
METRICS = 4


class FootprintError(ValueError):
    """A run would not fit in memory; the message holds the estimate and the remedy."""


class Footprint(NamedTuple):
    """Estimated peak bytes of one run, by part (each already multiplied by its copies)."""

    state: int
    orders: int
    metrics: int
    probes: int
    data: int

    @property
    def total(self) -> int:
        return self.state + self.orders + self.metrics + self.probes + self.data

    def describe(self) -> str:
        from rvsp_jax.io.runfolder import human_bytes

        return ", ".join(f"{name} {human_bytes(v)}" for name, v in self._asdict().items() if v)


def estimate(
    *,
    padded: int,
    state_bytes_per_member: int,
    n_train: int,
    chunk: int,
    probe_bytes_per_step: int,
    probe_every: int,
    data_bytes: int,
    devices: int,
) -> Footprint:
    """The :class:`Footprint` of ``padded`` members (pure arithmetic on sizes in bytes)."""
    rec = chunk // max(probe_every, 1)
    return Footprint(
        state=STATE_COPIES * padded * state_bytes_per_member,
        orders=2 * padded * 2 * n_train * 4,
        metrics=CHUNK_COPIES * METRICS * padded * chunk * 4,
        probes=CHUNK_COPIES * padded * rec * probe_bytes_per_step,
        data=(1 + devices) * data_bytes,
    )


def available_host_bytes() -> int:
    """Memory the kernel can give this process now (``MemAvailable``), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def _device_limit(devices) -> int | None:
    """Total memory of accelerator ``devices`` (None on CPU or when the runtime does not say)."""
    total = 0
    for d in devices:
        if d.platform == "cpu":
            return None
        try:
            stats = d.memory_stats() or {}
        except Exception:  # noqa: BLE001 - some runtimes do not implement it
            return None
        if "bytes_limit" not in stats:
            return None
        total += int(stats["bytes_limit"])
    return total


def check(fp: Footprint, devices, *, members: int) -> None:
    """Refuse (:class:`FootprintError`) when ``fp`` does not fit this machine, naming the numbers."""
    from rvsp_jax.io.runfolder import human_bytes

    device_limit = _device_limit(devices)
    host_need = fp.total if device_limit is None else fp.orders // 2 + fp.probes + fp.metrics + fp.data
    host_free = available_host_bytes()
    problems = []
    if host_need > host_free:
        problems.append(f"about {human_bytes(host_need)} of host memory but {human_bytes(host_free)} is available")
    if device_limit is not None:
        device_need = fp.state + fp.orders // 2 + fp.metrics + fp.probes + fp.data
        if device_need > device_limit:
            problems.append(
                f"about {human_bytes(device_need)} of device memory but the devices have {human_bytes(device_limit)}"
            )
    if problems:
        raise FootprintError(
            f"an ensemble of {members:,} members needs {' and '.join(problems)} ({fp.describe()}); "
            "use fewer --seeds, a smaller --chunk, or record less (--probe-index, --probe-every, "
            "--probes)"
        )
