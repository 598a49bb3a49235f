"""Train an ensemble and record its trajectories into a run folder.

    python -m experiments.train --seeds 64 --steps 2000 --probes params,updates --probe-index 32
    python -m experiments.train --out results/train/run1 --resume ...   # same options as before

Every training flag of :class:`rvsp_jax.config.TrainConfig`, every recording flag of
:class:`rvsp_jax.io.record.ProbeConfig`, and --out/--resume/--overwrite/--devices. Read the run with
``rvsp_jax.io.store.open_run(path)``.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.io.record import ProbeConfig, run


def main(argv: list[str] | None = None) -> None:
    inv = cli.parse_experiment(
        "train",
        "Train an ensemble and record its trajectories.",
        ProbeConfig,
        argv,
        settings_title="recording",
        allow_sweep=True,
    )
    with cli.exit_on_user_error():
        recorded = run(
            inv.config,
            inv.settings,
            inv.out,
            resume=inv.args.resume,
            overwrite=inv.args.overwrite,
            experiment="train",
            command=inv.command,
        )
    result = recorded.manifest.get("result", {})
    print(
        f"run: {inv.out} ({recorded.manifest['status']}, {recorded.steps_completed} steps, "
        f"S={inv.config.seeds}, arrays: {', '.join(recorded.arrays)})"
    )
    accuracy, at = result.get("test_accuracy", []), result.get("diverged_at", [])
    healthy = [a for a, step in zip(accuracy, at) if step < 0] if at else accuracy
    diverged = len(accuracy) - len(healthy)
    if diverged:
        first = min(step for step in at if step >= 0)
        print(
            f"diverged: {diverged} of {len(accuracy)} members (non-finite loss or parameters; "
            f"the first at step {first}); their values read NaN from that step and they are left "
            "out of every mean (lower --lr to avoid it)"
        )
    if healthy:
        print(
            f"test accuracy: mean {sum(healthy) / len(healthy):.4f} over {len(healthy)} members"
            + (" that did not diverge" if diverged else "")
        )
    if len(recorded.grid) > 1 and accuracy:
        for g, members in recorded.groups.items():
            ok = [accuracy[m] for m in members if not at or at[m] < 0]
            point = ", ".join(f"{k}={v:g}" for k, v in recorded.grid[g].items())
            print(
                f"  grid point {g} ({point}): "
                + (f"mean {sum(ok) / len(ok):.4f} over {len(ok)}" if ok else "every member diverged")
            )
    print(f"read it with: rvsp_jax.io.store.open_run({str(inv.out)!r})")


if __name__ == "__main__":
    main()
