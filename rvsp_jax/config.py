"""Frozen configuration of an ensemble run; validated at construction with messages that list choices.

The command-line flags of every experiment are generated from these dataclasses
(:mod:`rvsp_jax.cli`), so ``--seeds`` means the same thing everywhere. Field metadata holds the flag
name and its help text.

Fields are typed: ``opt_kwargs`` and ``sweep`` are read-only mappings (:class:`JSONObject`),
``widths`` a tuple; the command line's text is parsed in :mod:`rvsp_jax.cli`. The constructors also
read the JSON text these fields used to be (older code, and manifests, which store that text).

The names ``activation``, ``init`` and ``optimizer`` may take are those of the model's tables in
:mod:`rvsp_jax.training.registry` (``ACTIVATIONS``, ``INITIALIZERS``, ``optimizer_names``), which
this module re-exports for older imports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import optax

from rvsp_jax.training.registry import ACTIVATIONS, INITIALIZERS, optimizer_names  # re-exported

VARY_CHOICES = ("both", "data", "init")
DATASET_CHOICES = ("mnist", "fashion_mnist")


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


def _freeze(value):
    """A JSON value with its lists as tuples and its objects as :class:`JSONObject` (read-only)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return JSONObject(value)
    return value


class JSONObject(str):
    """A read-only mapping (``str -> JSON value``) held as its canonical JSON text: the type of the
    config fields that are JSON objects (``TrainConfig.opt_kwargs`` and ``sweep``).

    Built from a mapping or, for code and manifests from when these fields were JSON strings, from
    JSON text; either way the text is ``json.dumps`` of the object, key order kept (a sweep's axis
    order is its grid order).

    Every operation belongs to one of its two sides:

    - The mapping: ``m["momentum"]`` (a ``str`` key; KeyError when absent), ``m.get``, ``m.keys()``,
      ``m.values()``, ``m.items()``, ``key in m``, ``dict(m)`` and ``**m``, with lists as tuples
      and objects as JSONObjects, so nothing can be changed in place; :meth:`to_json` gives a
      mutable copy.
    - The text, a ``str``, so that code written for the string fields keeps working
      (``json.loads(config.opt_kwargs)``, ``config.sweep == "{}"``, formatting, ``str`` methods):
      ``len(m)``, iteration (``for c in m``, ``list(m)``), truthiness and ``m[i]``, ``m[i:j]``
      with an integer index or a slice are the text's. So ``len(JSONObject({"lr": [0.1]}))`` is
      13 (the characters of ``{"lr": [0.1]}``), not 1; ``list(m)`` gives characters, not keys; and
      an empty mapping is truthy (its text is ``{}``). They cannot be the mapping's without
      breaking that code: ``json.loads`` calls ``len`` on the text it parses (a length of 1 makes
      it fail with "Extra data") and ``str`` functions test truthiness (``shlex.quote`` of a falsy
      string is ``''``). For the mapping's size, keys and emptiness write ``len(m.keys())``,
      ``for key in m.keys()`` and ``not m.keys()`` (or ``m == {}``).

    Equality and the hash are those of the text, so configs stay hashable, compare equal however they
    were given (``{"momentum": 0.9}`` or ``'{"momentum": 0.9}'``) and digest as before; it also
    equals a plain mapping with the same JSON.
    """

    def __new__(cls, value: Mapping | str | None = None, must: str = "must be a JSON object"):
        if isinstance(value, JSONObject):
            return value
        if value is None:
            data = {}
        elif isinstance(value, str):
            try:
                data = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"{must}, got {value!r}: {e}") from None
        elif isinstance(value, Mapping):
            data = dict(value)
        else:
            raise ValueError(f"{must}, got {value!r}")
        if not isinstance(data, dict):
            raise ValueError(f"{must}, got {value!r}")
        try:
            text = json.dumps(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{must} of JSON values, got {value!r}: {e}") from None
        self = super().__new__(cls, text)
        self._data = {k: _freeze(v) for k, v in json.loads(text).items()}
        return self

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._data[key]
        return str.__getitem__(self, key)  # an index or slice of the text, as for any str

    def __contains__(self, key):
        return key in self._data

    def keys(self):
        return self._data.keys()

    def values(self):
        return self._data.values()

    def items(self):
        return self._data.items()

    def get(self, key, default=None):
        return self._data.get(key, default)

    def to_json(self) -> dict:
        """A fresh, mutable ``json.loads`` of the text (lists as lists, objects as dicts)."""
        return json.loads(self)

    def __eq__(self, other):
        if isinstance(other, str):
            return str.__eq__(self, other)
        if isinstance(other, Mapping):
            try:
                return str.__eq__(self, json.dumps(dict(other)))
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = str.__hash__

    def __reduce__(self):
        return (type(self), (str(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def with_sweep_flags(values: dict) -> dict:
    """TrainConfig field values as the command line gives them, with every list (``lr`` given as
    ``0.01,0.1``, a list in ``opt_kwargs``) moved into ``sweep``; the plain field keeps the first
    value. Values that are not lists pass through unchanged. ``opt_kwargs`` and ``sweep`` are
    mappings (:func:`rvsp_jax.cli.parse_train_config` parses the flags' JSON; JSON text is still
    accepted) and come back as :class:`JSONObject`."""
    values = dict(values)
    axes = JSONObject(values.get("sweep"), "sweep must be a JSON object of lists").to_json()
    if isinstance(values.get("lr"), (tuple, list)):
        lrs = [float(v) for v in values["lr"]]
        if len(lrs) > 1:
            axes["lr"] = lrs
        values["lr"] = lrs[0]
    if "opt_kwargs" in values:
        kwargs = JSONObject(values["opt_kwargs"], "opt_kwargs must be a JSON object").to_json()
        if any(isinstance(v, list) for v in kwargs.values()):
            axes.update({k: v for k, v in kwargs.items() if isinstance(v, list)})
            kwargs = {k: v for k, v in kwargs.items() if k not in axes}
        values["opt_kwargs"] = JSONObject(kwargs)
    if axes or "sweep" in values:
        values["sweep"] = JSONObject(axes)
    return values


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
    vary: str = opt(
        "both",
        "--vary",
        "what differs across members: both, data (shared init) or init (shared minibatch order)",
        choices=VARY_CHOICES,
    )
    optimizer: str = opt(
        "sgd", "--optimizer", "any optax optimizer constructor taking learning_rate (sgd, adam, adamw, rmsprop, ...)"
    )
    lr: float = opt(0.1, "--lr", "learning rate; a comma-separated list sweeps it (see --sweep)", sweepable=True)
    opt_kwargs: Mapping[str, Any] = opt(
        JSONObject(),
        "--opt-kwargs",
        "keyword arguments for the optimizer, a JSON object on the "
        "command line, e.g. '{\"momentum\": 0.9}'; a list of floats "
        "sweeps that one",
    )
    activation: str = opt("sigmoid", "--activation", "hidden activation", choices=tuple(ACTIVATIONS))
    widths: tuple[int, ...] = opt((16, 16), "--widths", "hidden layer widths, comma separated")
    init: str = opt("lecun_normal", "--init", "kernel initialiser (biases start at 0)", choices=tuple(INITIALIZERS))
    batch_size: int = opt(32, "--batch-size", "minibatch size")
    steps: int | None = opt(None, "--steps", "optimizer steps (overrides --epochs)")
    epochs: float = opt(1.0, "--epochs", "epochs of the training set, when --steps is not given")
    dataset: str = opt("mnist", "--dataset", "training data", choices=DATASET_CHOICES)
    data_dir: str | None = opt(
        None,
        "--data-dir",
        "folder holding the four IDX files (default: env RVSP_JAX_DATA_DIR, the user cache, then the bundled copy)",
    )
    chunk: int = opt(
        200, "--chunk", "steps per compiled scan chunk (a performance knob; trajectories do not depend on it)"
    )
    block: int = opt(
        8,
        "--block",
        "members computed together per device; member trajectories are bit-identical for any S with the same block",
    )
    sweep: Mapping[str, Any] = opt(
        JSONObject(),
        "--sweep",
        'grid of float hyperparameters, e.g. \'{"lr": [0.01, 0.1], '
        '"momentum": [0.5, 0.9]}\' (also made by --lr 0.01,0.1 or lists in --opt-kwargs); '
        "members are ordered grid-major: member g*S+s is grid point g, seed s",
    )

    def __post_init__(self):
        # mappings (JSON text, as older code and manifests give them, is read here too)
        object.__setattr__(self, "opt_kwargs", JSONObject(self.opt_kwargs, "opt_kwargs must be a JSON object"))
        object.__setattr__(self, "sweep", JSONObject(self.sweep, "sweep must be a JSON object of lists"))
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ValueError(f"seeds (ensemble members) must be an integer >= 1, got {self.seeds!r}")
        if not isinstance(self.base_seed, int) or isinstance(self.base_seed, bool) or not 0 <= self.base_seed < 2**64:
            raise ValueError(f"base_seed must be an integer from 0 to 2**64 - 1 ({2**64 - 1}), got {self.base_seed!r}")
        _choice(self.vary, VARY_CHOICES, "vary")
        _choice(self.optimizer, optimizer_names(), "optimizer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"the learning rate must be a finite number > 0, got {self.lr!r}")
        for key, value in self.optimizer_kwargs().items():
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
        axes = self.sweep_axes()
        for key, value in self.optimizer_kwargs().items():
            if isinstance(value, list):
                raise ValueError(
                    f"opt_kwargs {key!r} is a list; a grid of values goes in sweep "
                    f"(the command line moves it there: --opt-kwargs '{{\"{key}\": [...]}}')"
                )
        if "lr" in axes and any(not v > 0 for v in axes["lr"]):
            raise ValueError(f"every swept learning rate must be > 0, got {axes['lr']}")

    def optimizer_kwargs(self) -> dict:
        """``opt_kwargs`` as a fresh, mutable dict (JSON types: lists, not tuples)."""
        return self.opt_kwargs.to_json()

    def sweep_axes(self) -> dict[str, list[float]]:
        """The swept hyperparameters and their values, in the order given (``{}`` without a sweep).

        Keys are ``lr`` or keyword arguments of the optimizer; values are lists of finite floats."""
        axes = self.sweep.to_json()
        for key, values in axes.items():
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            ):
                raise ValueError(f"sweep {key!r} must be a non-empty list of finite numbers, got {values!r}")
            if len(set(values)) != len(values):
                raise ValueError(f"sweep {key!r} repeats a value: {values}")
            if key != "lr" and key not in self._optimizer_parameters():
                raise ValueError(
                    f"sweep {key!r} is not a hyperparameter of optax.{self.optimizer} "
                    f"(it takes {', '.join(self._optimizer_parameters())})"
                )
        return {k: [float(v) for v in values] for k, values in axes.items()}

    def _optimizer_parameters(self) -> tuple[str, ...]:
        return tuple(inspect.signature(getattr(optax, self.optimizer)).parameters)

    def grid(self) -> list[dict[str, float]]:
        """The grid points of the sweep (Cartesian product, first axis slowest); ``[{}]`` without one."""
        axes = self.sweep_axes()
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    @property
    def members(self) -> int:
        """Ensemble members in all: ``seeds`` per grid point times the grid points."""
        return self.seeds * len(self.grid())

    def point(self, g: int) -> TrainConfig:
        """The plain (unswept) configuration of grid point ``g``: its members equal, member for
        member, the members ``g * seeds + s`` of this sweep."""
        values = self.grid()[g]
        kwargs = self.optimizer_kwargs()
        kwargs.update({k: v for k, v in values.items() if k != "lr"})
        return dataclasses.replace(self, lr=values.get("lr", self.lr), opt_kwargs=kwargs, sweep={})

    def injected(self) -> tuple[str, ...]:
        """Hyperparameters held as per-member arrays in the optimizer state
        (``optax.inject_hyperparams``): the learning rate, every float given in ``opt_kwargs`` and
        every swept one; the rest stay constants of the compiled step."""
        floats = [
            k
            for k, v in self.optimizer_kwargs().items()
            if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and k in self.sweep_axes())
        ]
        return tuple(dict.fromkeys(["learning_rate", *floats, *(k for k in self.sweep_axes() if k != "lr")]))

    def grid_hyperparams(self) -> dict[str, list[float]]:
        """Per grid point, the value of every injected hyperparameter (optax names:
        ``learning_rate``, ``momentum``, ...)."""
        kwargs = self.optimizer_kwargs()
        out: dict[str, list[float]] = {}
        for name in self.injected():
            key = "lr" if name == "learning_rate" else name
            base = self.lr if key == "lr" else kwargs.get(key)
            out[name] = [float(point.get(key, base)) for point in self.grid()]
        return out

    def make_optimizer(self, params=None) -> optax.GradientTransformation:
        """The optax transformation ``optax.<optimizer>(learning_rate=lr, **opt_kwargs)``, wrapped in
        ``optax.inject_hyperparams`` so that the hyperparameters of :meth:`injected` live in the
        optimizer state, one value per member (a sweep sets them per grid point; a plain run takes
        the same code path with one value).

        With ``params`` (a pytree of arrays or ``jax.ShapeDtypeStruct``), its ``init`` and ``update``
        are also traced abstractly on them (``jax.eval_shape``, nothing computed), so an option of
        the wrong type (``{"momentum": "x"}``) is refused here, as a ValueError naming it, rather
        than deep inside the compiled training step.
        """
        kwargs = self.optimizer_kwargs()
        for key, values in self.sweep_axes().items():
            if key != "lr":
                kwargs[key] = float(values[0])
        injected = self.injected()
        static = tuple(n for n in self._optimizer_parameters() if n not in injected)
        try:
            tx = optax.inject_hyperparams(getattr(optax, self.optimizer), static_args=static)(
                learning_rate=float(self.lr), **{k: float(v) if k in injected else v for k, v in kwargs.items()}
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"optax.{self.optimizer} rejected opt_kwargs {self.opt_kwargs}: {e}") from None
        if params is not None:
            try:
                state = jax.eval_shape(tx.init, params)
                jax.eval_shape(tx.update, params, state, params)
            except Exception as e:  # noqa: BLE001 - any failure here is a bad option value
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(
                    f"optax.{self.optimizer} cannot run with opt_kwargs "
                    f"{self.opt_kwargs}: {first}; check the option values"
                ) from None
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
        """The fields as JSON values, as manifests store them. ``opt_kwargs`` and ``sweep`` are
        written as their canonical JSON text (``'{"momentum": 0.9}'``), the form manifests have
        always had, so a run recorded earlier compares equal on ``--resume`` and the digest of a
        config is unchanged; :meth:`from_dict` reads the text (or a JSON object) back."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["opt_kwargs"], d["sweep"] = str(self.opt_kwargs), str(self.sweep)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return from_fields(cls, d)

    def digest(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of the config (:meth:`to_dict`), for
        manifests. Unchanged since these fields were strings, except for a config whose
        ``opt_kwargs``/``sweep`` text was not canonical (``'{"momentum":0.9}'``, no space): that
        is now read as the mapping, and digests as ``'{"momentum": 0.9}'``."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
