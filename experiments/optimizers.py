"""SGD vs momentum vs Adam (any optax optimizer): update ACF, PSD and spectral shape side by side, and
an out-of-sample test of the optimizer-filter theory: each update PSD predicted from gradient noise
measured at the frozen final weights, with the error against the metric's floor (section 5).

    python -m experiments.optimizers                              # sgd, momentum, adam (~45 s, 2 cores)
    python -m experiments.optimizers --variants sgd,nesterov,rmsprop:1e-3 --seeds 32
    python -m experiments.optimizers --out results/optimizers/run1 --resume   # reuse finished variants

Every training flag of :class:`rvsp_jax.config.TrainConfig` (shared by all variants; --optimizer is
replaced by --variants), the flags of :class:`rvsp_jax.studies.optimizers.OptimizerSettings`, and
--out/--resume/--overwrite/--devices. Writes runs/<variant>/ (one recorded run each), summary.json,
report.md and figures/; the report states its windows, whether they are stationary, and its rules.
"""

from __future__ import annotations

from rvsp_jax import cli
from rvsp_jax.studies import optimizers


def _validate(config, settings) -> None:
    if config.optimizer != "sgd":
        raise ValueError("--optimizer has no effect here: name the optimizers in --variants")
    for variant in optimizers.parse_variants(settings.variants, config):
        variant.config(config)  # a swept hyperparameter this optimizer lacks is refused here


def main(argv: list[str] | None = None) -> None:
    run = cli.parse_experiment(
        optimizers.EXPERIMENT,
        __doc__.splitlines()[0],
        optimizers.OptimizerSettings,
        argv,
        train_defaults=optimizers.TRAIN_DEFAULTS,
        settings_title="comparison",
        validate=_validate,
    )
    if cli.run_study(optimizers, run) is None:  # a sweep: one line per grid point is printed
        return
    print(f"optimizers: {run.out}\n  report: {run.out / 'report.md'}\n  summary: {run.out / 'summary.json'}")


if __name__ == "__main__":
    main()
