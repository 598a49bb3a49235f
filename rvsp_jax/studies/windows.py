"""Windows of a recording: the burn-in (one meaning of ``--burn-in`` in every study, a fraction of
the steps in [0, 1)) and the phases (equal consecutive windows).

Every study drops the first ``burn_in_steps(fraction, total)`` steps before its analysis;
``check_burn_in`` is the settings' validation of the flag.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-9
"""Guards the floor against binary rounding (1/3 of 150 steps is 50, not 49)."""


def check_burn_in(fraction, what: str = "burn_in") -> None:
    """Refuse anything but a fraction of the steps in [0, 1)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"{what} is a fraction of the steps in [0, 1), got {fraction!r}")


def burn_in_steps(fraction: float, total: int) -> int:
    """The burn-in in steps: ``floor(fraction * total)`` (a quarter of 3000 steps is 750)."""
    return int(math.floor(fraction * total + _EPS))


def phase_bounds(steps: int, phases: int) -> list[tuple[int, int]]:
    """``phases`` consecutive ``[start, stop)`` ranges splitting ``range(steps)`` as evenly as possible
    (edges ``round(linspace(0, steps, phases + 1))``)."""
    if not 1 <= phases <= steps:
        raise ValueError(f"cannot split {steps} recorded steps into {phases} phases")
    edges = np.linspace(0, steps, phases + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def phase_names(phases: int) -> tuple[str, ...]:
    """``early, middle, late`` for three phases, else ``phase 1 .. phase n``."""
    return ("early", "middle", "late") if phases == 3 else tuple(f"phase {i + 1}" for i in range(phases))
