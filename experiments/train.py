"""Train an ensemble and record its trajectories into a run folder.

    python -m experiments.train --seeds 64 --steps 2000 --probes params,updates --probe-index 32
    python -m experiments.train --out results/train/run1 --resume ...   # same options as before

Every training flag of :class:`rvsp_jax.config.TrainConfig`, every recording flag of
:class:`rvsp_jax.record.ProbeConfig`, and --out/--resume/--overwrite/--devices. Read the run with
``rvsp_jax.store.open_run(path)``.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.record import ProbeConfig, run


def main(argv: list[str] | None = None) -> None:
    inv = cli.parse_experiment("train", "Train an ensemble and record its trajectories.", ProbeConfig, argv,
                               settings_title="recording")
    with cli.exit_on_user_error():
        recorded = run(inv.config, inv.settings, inv.out, resume=inv.args.resume,
                       overwrite=inv.args.overwrite, experiment="train", command=inv.command)
    accuracy = recorded.manifest.get("result", {}).get("test_accuracy", [])
    print(f"run: {inv.out} ({recorded.manifest['status']}, {recorded.steps_completed} steps, "
          f"S={inv.config.seeds}, arrays: {', '.join(recorded.arrays)})")
    if accuracy:
        print(f"test accuracy: mean {sum(accuracy) / len(accuracy):.4f} over {len(accuracy)} members")
    print(f"read it with: rvsp_jax.store.open_run({str(inv.out)!r})")


if __name__ == "__main__":
    main()
