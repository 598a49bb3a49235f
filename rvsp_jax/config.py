"""Frozen configuration of an ensemble run; validated at construction with messages that list choices.

The command-line flags of every experiment are generated from these dataclasses
(:mod:`rvsp_jax.cli`), so ``--seeds`` means the same thing everywhere. Field metadata holds the flag
name and its help text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field

import jax
import optax

VARY_CHOICES = ("both", "data", "init")
DATASET_CHOICES = ("mnist", "fashion_mnist")
ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jax.numpy.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
    "identity": lambda x: x,
}
INITIALIZERS = {
    "lecun_normal": jax.nn.initializers.lecun_normal,
    "lecun_uniform": jax.nn.initializers.lecun_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "he_normal": jax.nn.initializers.he_normal,
    "he_uniform": jax.nn.initializers.he_uniform,
    "normal": lambda: jax.nn.initializers.normal(stddev=1.0),
}


@functools.lru_cache(maxsize=1)
def optimizer_names() -> tuple[str, ...]:
    """Every optax optimizer constructor that takes a ``learning_rate`` (sgd, adam, adamw, ...)."""
    names = []
    for name in dir(optax):
        obj = getattr(optax, name)
        if name.startswith("_") or not inspect.isfunction(obj):
            continue
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if next(iter(params), None) == "learning_rate":
            names.append(name)
    return tuple(sorted(names))


def _choice(value, choices, what):
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}")


def from_fields(cls, d: dict):
    """``cls(**d)`` for a frozen config dataclass, refusing keys that are not its fields (tuple-typed
    fields are rebuilt from JSON lists)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**d)


def opt(default, flag, help, **extra):
    """A dataclass field carrying its command-line flag and help text."""
    return field(default=default, metadata={"flag": flag, "help": help, **extra})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines an ensemble's training trajectories, bit for bit.

    Example (the defaults: 3Blue1Brown's 784-16-16-10 sigmoid network, plain SGD)::

        python -m experiments.train --seeds 64 --steps 2000 --optimizer adam --lr 1e-3
    """

    seeds: int = opt(8, "--seeds", "ensemble members S")
    base_seed: int = opt(0, "--base-seed", "root PRNG seed; member s uses fold_in(root, s)")
    vary: str = opt("both", "--vary", "what differs across members: both, data (shared init) "
                    "or init (shared minibatch order)", choices=VARY_CHOICES)
    optimizer: str = opt("sgd", "--optimizer", "any optax optimizer constructor taking "
                         "learning_rate (sgd, adam, adamw, rmsprop, ...)")
    lr: float = opt(0.1, "--lr", "learning rate")
    opt_kwargs: str = opt("{}", "--opt-kwargs", 'JSON keyword arguments for the optimizer, '
                          'e.g. \'{"momentum": 0.9}\'')
    activation: str = opt("sigmoid", "--activation", "hidden activation",
                          choices=tuple(ACTIVATIONS))
    widths: tuple[int, ...] = opt((16, 16), "--widths", "hidden layer widths, comma separated")
    init: str = opt("lecun_normal", "--init", "kernel initialiser (biases start at 0)",
                    choices=tuple(INITIALIZERS))
    batch_size: int = opt(32, "--batch-size", "minibatch size")
    steps: int | None = opt(None, "--steps", "optimizer steps (overrides --epochs)")
    epochs: float = opt(1.0, "--epochs", "epochs of the training set, when --steps is not given")
    dataset: str = opt("mnist", "--dataset", "training data", choices=DATASET_CHOICES)
    data_dir: str | None = opt(None, "--data-dir", "folder holding the four IDX files "
                               "(default: env RVSP_JAX_DATA_DIR, the user cache, then the bundled copy)")
    chunk: int = opt(200, "--chunk", "steps per compiled scan chunk (a performance knob; "
                     "trajectories do not depend on it)")
    block: int = opt(8, "--block", "members computed together per device; member trajectories are "
                     "bit-identical for any S with the same block")

    def __post_init__(self):
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ValueError(f"seeds (ensemble members) must be an integer >= 1, got {self.seeds!r}")
        if (not isinstance(self.base_seed, int) or isinstance(self.base_seed, bool)
                or not 0 <= self.base_seed < 2**64):
            raise ValueError(f"base_seed must be an integer from 0 to 2**64 - 1 "
                             f"({2**64 - 1}), got {self.base_seed!r}")
        _choice(self.vary, VARY_CHOICES, "vary")
        _choice(self.optimizer, optimizer_names(), "optimizer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"the learning rate must be a finite number > 0, got {self.lr!r}")
        for key, value in self.optimizer_kwargs().items():  # validates the JSON
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"opt_kwargs {key!r} must be finite, got {value!r}")
        _choice(self.activation, ACTIVATIONS, "activation")
        _choice(self.init, INITIALIZERS, "initializer")
        widths = tuple(int(w) for w in self.widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be one or more positive integers, got {self.widths!r}")
        object.__setattr__(self, "widths", widths)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.steps is None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        _choice(self.dataset, DATASET_CHOICES, "dataset")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")

    def optimizer_kwargs(self) -> dict:
        try:
            kwargs = json.loads(self.opt_kwargs)
        except json.JSONDecodeError as e:
            raise ValueError(f"opt_kwargs must be a JSON object, got {self.opt_kwargs!r}: {e}") from None
        if not isinstance(kwargs, dict):
            raise ValueError(f"opt_kwargs must be a JSON object, got {self.opt_kwargs!r}")
        return kwargs

    def make_optimizer(self, params=None) -> optax.GradientTransformation:
        """The optax transformation ``optax.<optimizer>(learning_rate=lr, **opt_kwargs)``.

        With ``params`` (a pytree of arrays or ``jax.ShapeDtypeStruct``), its ``init`` and ``update``
        are also traced abstractly on them (``jax.eval_shape``, nothing computed), so an option of
        the wrong type (``{"momentum": "x"}``) is refused here, as a ValueError naming it, rather
        than deep inside the compiled training step.
        """
        try:
            tx = getattr(optax, self.optimizer)(learning_rate=self.lr, **self.optimizer_kwargs())
        except (TypeError, ValueError) as e:
            raise ValueError(f"optax.{self.optimizer} rejected opt_kwargs {self.opt_kwargs}: {e}") from None
        if params is not None:
            try:
                state = jax.eval_shape(tx.init, params)
                jax.eval_shape(tx.update, params, state, params)
            except Exception as e:  # noqa: BLE001 - any failure here is a bad option value
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"optax.{self.optimizer} cannot run with opt_kwargs "
                                 f"{self.opt_kwargs}: {first}; check the option values") from None
        return tx

    def steps_per_epoch(self, n_train: int) -> int:
        """Full minibatches per epoch (the last incomplete batch is dropped)."""
        if self.batch_size > n_train:
            raise ValueError(f"batch_size {self.batch_size} is larger than the training set ({n_train})")
        return n_train // self.batch_size

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            self.steps_per_epoch(n_train)
            return self.steps
        return max(1, round(self.epochs * self.steps_per_epoch(n_train)))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return from_fields(cls, d)

    def digest(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of the config, for manifests."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
