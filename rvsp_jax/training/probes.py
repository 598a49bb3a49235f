"""What to record during training: probes, their index selections and their readable names.

A probe is a pure function of one member's :class:`~rvsp_jax.training.ensemble.StepContext` (vmapped over
members by the trainer) that returns a dict ``array name -> float32 [P]``: every kind of observable
is packed into one flat vector per step, so XLA emits one output per kind and the store writes one
``[S, T_rec, P]`` array per kind. The arrays and the names of their ``P`` entries:

=====================  ==========================  ==============================================
array                  one entry per ...           name of an entry
=====================  ==========================  ==============================================
``params``             selected parameter          ``Dense_0/kernel[412,3]`` (theta_t, before the
                                                   update of step t)
``updates``            selected parameter          ``Dense_0/kernel[412,3]`` (theta_{t+1} - theta_t)
``grads``              selected parameter          ``Dense_0/kernel[412,3]`` (minibatch gradient)
``weight_norms``       parameter array             ``norm(Dense_0/kernel)`` (L2 / Frobenius norm)
``activations/pre``    probe example x hidden unit ``Dense_0/pre[5,3]`` (example 5, unit 3)
``activations/post``   probe example x hidden unit ``Dense_0/post[5,3]``
``activations/summary`` hidden layer x statistic   ``Dense_0/mean``, ``Dense_0/var``,
                                                   ``Dense_0/saturated`` or ``Dense_0/zero``,
                                                   ``Dense_0/dead``
=====================  ==========================  ==============================================

Updates are computed as ``new_params - params`` in float32 on the selected entries, i.e. exactly the
float32 difference of consecutive recorded parameters (with ``every=1``).

Activation summaries are taken over the B probe examples and the units of a hidden layer, on the
post-activation y: ``mean``, ``var`` (population variance), and

- ``saturated`` (sigmoid, tanh): fraction of (example, unit) pairs where the activation's derivative
  is below 19% of its maximum: sigmoid ``y < 0.05 or y > 0.95``; tanh ``|y| > 0.9`` (the same band,
  since ``tanh(z) = 2 sigmoid(2z) - 1``);
- ``zero`` (relu): fraction of pairs with ``y == 0``; ``dead`` (relu): fraction of units that are 0 on
  every probe example.

Other activations get ``mean`` and ``var`` only.

Index selection (``ProbeConfig.index``) for params/updates/grads: ``all``; an integer ``K``: K entries
of every parameter array (all of it when smaller), drawn without replacement from the root seed;
``total=N``: N entries drawn from all parameters together; or explicit names such as
``"Dense_0/kernel[412,3] Dense_2/bias[7]"``. Entries are ordered by parameter array (flax's sorted
order: ``Dense_0/bias, Dense_0/kernel, Dense_1/bias, ...``), then by flat index. The probe batch is B
test images drawn without replacement from the root seed. Both draws use numpy's ``default_rng``
seeded with ``(stream tag, base_seed)``, so they are the same for every S and every ``vary``; the
chosen indices are stored in the manifest.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from rvsp_jax.config import TrainConfig, from_fields, opt
from rvsp_jax.data import Dataset, to_model_inputs
from rvsp_jax.training.model import MLP, init_params

KINDS = ("params", "updates", "grads", "weight_norms", "activations", "act_summary")
"""Probe kinds accepted by ``ProbeConfig.probes``; ``activations`` records pre- and post-activations."""
PARAMETER_KINDS = ("params", "updates", "grads")
COMPRESSIONS = ("none", "zstd", "blosc")
SATURATION = {"sigmoid": 0.95, "tanh": 0.9}
"""Post-activation thresholds of ``saturated``: sigmoid y < 1-0.95 or y > 0.95; tanh |y| > 0.9."""

_INDEX_STREAM = 0x70617261  # "para": stream tag of the parameter-index draw
_BATCH_STREAM = 0x62617463  # "batc": stream tag of the probe-batch draw
_EXPLICIT = re.compile(r"([A-Za-z_]\w*(?:/\w+)+)\[([^\]]*)\]")


@dataclass(frozen=True)
class ProbeConfig:
    """What to record and how often (the recording half of a run's configuration).

    Example::

        python -m experiments.train --probes params,updates --probe-index 64 --probe-every 2
    """

    probes: tuple[str, ...] = opt(
        ("params", "updates", "weight_norms", "act_summary"),
        "--probes",
        "what to record at probed steps, comma separated: "
        + ", ".join(KINDS)
        + "; or none (per-step loss, accuracy, gradient and update norms are always "
        "recorded)",
    )
    index: str = opt(
        "16",
        "--probe-index",
        "parameters recorded by params/updates/grads: all; K (K per parameter array, "
        "drawn from the root seed); total=N (N over all parameters); or names like "
        "'Dense_0/kernel[412,3] Dense_2/bias[7]'",
    )
    every: int = opt(1, "--probe-every", "record probes at steps 0, n, 2n, ...")
    batch: int = opt(64, "--probe-batch", "test images in the fixed activation probe batch (drawn from the root seed)")
    compress: str = opt(
        "none",
        "--compress",
        "compression of the probe arrays on disk (none is fastest; zstd / blosc trade writer CPU for disk)",
        choices=COMPRESSIONS,
    )

    def __post_init__(self):
        original = given = self.probes
        if isinstance(given, str):  # the comma-separated text of older code and manifests
            given = given.split(",")
        try:
            names = tuple(p.strip() for p in given)
        except (TypeError, AttributeError):
            raise ValueError(f"probes must be a tuple of probe kinds ({', '.join(KINDS)}), got {original!r}") from None
        names = tuple(p for p in names if p)
        object.__setattr__(self, "probes", () if names == ("none",) else names)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(
                f"unknown probe kind(s) {unknown} in probes={original!r}; valid: {', '.join(KINDS)}, or none"
            )
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"probe every must be an integer >= 1, got {self.every!r}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"probe batch must be an integer >= 1, got {self.batch!r}")
        if self.compress not in COMPRESSIONS:
            raise ValueError(f"unknown compression {self.compress!r}; valid: {', '.join(COMPRESSIONS)}")
        if isinstance(self.index, int) and not isinstance(self.index, bool):
            object.__setattr__(self, "index", str(self.index))  # K per parameter array
        if not isinstance(self.index, str):
            raise ValueError(f"probe index must be all, an integer K, total=N or parameter names, got {self.index!r}")
        _parse_index(self.index)  # syntax only; names are checked against the model in make_probe

    @property
    def kinds(self) -> tuple[str, ...]:
        """The probe kinds, as given (``probes``; ``()`` records only the per-step metrics)."""
        return self.probes

    def to_dict(self) -> dict:
        """The fields as manifests store them: ``probes`` as its comma-separated text (``"none"``
        when empty), the form manifests have always had, so a run recorded earlier compares equal on
        ``--resume``; :meth:`from_dict` reads the text or a list back."""
        d = dataclasses.asdict(self)
        d["probes"] = ",".join(self.probes) or "none"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ProbeConfig:
        return from_fields(cls, d)


@dataclass(frozen=True, eq=False)
class ProbeLayout:
    """Where every recorded number comes from.

    arrays: array name -> names of its P entries (see the module docstring), in storage order.
    param_index: parameter array name (``Dense_0/kernel``) -> sorted flat indices int64 ``[k]``
      of the entries that params/updates/grads record (empty for arrays with none selected).
    param_shapes: parameter array name -> shape (one member).
    probe_batch: int64 ``[B]`` indices into the test split of the activation probe batch.
    every: probes are recorded at steps 0, every, 2*every, ...
    """

    arrays: dict
    param_index: dict
    param_shapes: dict
    probe_batch: np.ndarray
    every: int

    def size(self, name: str) -> int:
        return len(self.arrays[name])

    def to_dict(self) -> dict:
        """JSON-ready description for the manifest."""
        return {
            "every": self.every,
            "names": {k: list(v) for k, v in self.arrays.items()},
            "param_index": {k: v.tolist() for k, v in self.param_index.items()},
            "param_shapes": {k: list(v) for k, v in self.param_shapes.items()},
            "probe_batch": self.probe_batch.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ProbeLayout:
        return cls(
            {k: tuple(v) for k, v in d["names"].items()},
            {k: np.asarray(v, np.int64) for k, v in d["param_index"].items()},
            {k: tuple(v) for k, v in d["param_shapes"].items()},
            np.asarray(d["probe_batch"], np.int64),
            int(d["every"]),
        )


def _parse_index(spec: str):
    """``("all",)``, ``("per_array", K)``, ``("total", N)`` or ``("names", [(array, (i, j..)), ...])``."""
    text = spec.strip()
    if text == "all":
        return ("all",)
    if re.fullmatch(r"\d+", text):
        return ("per_array", int(text))
    m = re.fullmatch(r"total\s*=\s*(\d+)", text)
    if m:
        return ("total", int(m.group(1)))
    entries, rest = [], _EXPLICIT.sub(" ", text)
    for m in _EXPLICIT.finditer(text):
        try:
            idx = tuple(int(i) for i in m.group(2).split(","))
        except ValueError:
            raise ValueError(
                f"bad index in probe name {m.group(0)!r}: expected integers like 'Dense_0/kernel[412,3]'"
            ) from None
        entries.append((m.group(1), idx))
    if not entries or rest.strip(" \t\n;,"):
        raise ValueError(
            f"cannot read the probe index {spec!r}: use all, an integer K (per "
            f"parameter array), total=N, or names like 'Dense_0/kernel[412,3] "
            f"Dense_2/bias[7]'"
        )
    return ("names", entries)


def _rng(stream: int, base_seed: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([stream, base_seed % 2**64, *extra])


def param_shapes(model: MLP) -> dict[str, tuple[int, ...]]:
    """Parameter array name (``Dense_0/kernel``) -> shape of one member, in flax's leaf order."""
    shapes = jax.eval_shape(partial(init_params, model), jax.random.PRNGKey(0))
    flat, _ = jax.tree_util.tree_flatten_with_path(shapes)
    return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def select_parameters(spec: str, shapes: dict[str, tuple[int, ...]], base_seed: int) -> dict[str, np.ndarray]:
    """Sorted flat indices (int64) of the entries of every parameter array that ``spec`` selects.

    ``spec`` is ``ProbeConfig.index``; draws use ``default_rng((tag, base_seed, crc32(name)))`` per
    array (``K``) or ``default_rng((tag, base_seed))`` over the concatenation (``total=N``).
    """
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    kind, *arg = _parse_index(spec)
    if kind == "all":
        return {name: np.arange(n, dtype=np.int64) for name, n in sizes.items()}
    if kind == "per_array":
        k = arg[0]
        return {
            name: np.sort(
                _rng(_INDEX_STREAM, base_seed, zlib.crc32(name.encode())).choice(n, min(k, n), replace=False)
            ).astype(np.int64)
            for name, n in sizes.items()
        }
    if kind == "total":
        total = sum(sizes.values())
        if not 1 <= arg[0] <= total:
            raise ValueError(f"total={arg[0]} must be between 1 and the number of parameters ({total})")
        flat = np.sort(_rng(_INDEX_STREAM, base_seed).choice(total, arg[0], replace=False))
        bounds = np.cumsum([0, *sizes.values()])
        return {
            name: (flat[(flat >= lo) & (flat < hi)] - lo).astype(np.int64)
            for name, lo, hi in zip(sizes, bounds[:-1], bounds[1:])
        }
    chosen: dict[str, set] = {name: set() for name in shapes}
    for name, idx in arg[0]:
        if name not in shapes:
            raise ValueError(
                f"no parameter array {name!r}; the model has " + ", ".join(f"{n}{list(s)}" for n, s in shapes.items())
            )
        shape = shapes[name]
        if len(idx) != len(shape) or any(not 0 <= i < d for i, d in zip(idx, shape)):
            raise ValueError(f"index {list(idx)} is out of range for {name} of shape {list(shape)}")
        flat = int(np.ravel_multi_index(idx, shape))
        if flat in chosen[name]:
            raise ValueError(f"{name}{list(idx)} is listed twice in the probe index")
        chosen[name].add(flat)
    return {name: np.array(sorted(c), dtype=np.int64) for name, c in chosen.items()}


def probe_batch(base_seed: int, n_test: int, size: int) -> np.ndarray:
    """Sorted indices int64 ``[size]`` of the activation probe batch in the test split."""
    if size > n_test:
        raise ValueError(f"probe batch {size} is larger than the test split ({n_test} images)")
    return np.sort(_rng(_BATCH_STREAM, base_seed).choice(n_test, size, replace=False)).astype(np.int64)


def _entry_name(array: str, flat: int, shape) -> str:
    return f"{array}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"


def _summary_stats(activation: str) -> tuple[str, ...]:
    if activation in SATURATION:
        return ("mean", "var", "saturated")
    if activation == "relu":
        return ("mean", "var", "zero", "dead")
    return ("mean", "var")


def layer_summary(y: jax.Array, activation: str) -> jax.Array:
    """Summary statistics float32 ``[k]`` of one hidden layer's post-activations ``y: [B, h]``, in
    the order of the module docstring's table (``mean, var`` then ``saturated`` or ``zero, dead``)."""
    mean = jnp.mean(y)
    stats = [mean, jnp.mean(jnp.square(y - mean))]
    if activation in SATURATION:
        t = SATURATION[activation]
        band = (y < 1 - t) | (y > t) if activation == "sigmoid" else jnp.abs(y) > t
        stats.append(jnp.mean(band))
    elif activation == "relu":
        zero = y == 0
        stats += [jnp.mean(zero), jnp.mean(jnp.all(zero, axis=0))]
    return jnp.stack([s.astype(jnp.float32) for s in stats])


def _layout(probes: ProbeConfig, model: MLP, n_test: int, config: TrainConfig) -> ProbeLayout:
    shapes = param_shapes(model)
    index = select_parameters(probes.index, shapes, config.base_seed)
    batch = probe_batch(config.base_seed, n_test, probes.batch)
    hidden = [f"Dense_{l}" for l in range(len(config.widths))]
    arrays = {}
    selected = tuple(_entry_name(name, i, shapes[name]) for name, idx in index.items() for i in idx)
    for kind in PARAMETER_KINDS:
        if kind in probes.kinds:
            if not selected:
                raise ValueError(f"probe {kind!r} records no parameters: index {probes.index!r} selects none")
            arrays[kind] = selected
    if "weight_norms" in probes.kinds:
        arrays["weight_norms"] = tuple(f"norm({name})" for name in shapes)
    if "activations" in probes.kinds:
        for which in ("pre", "post"):
            arrays[f"activations/{which}"] = tuple(
                f"{layer}/{which}[{b},{u}]"
                for layer, width in zip(hidden, config.widths)
                for b in range(len(batch))
                for u in range(width)
            )
    if "act_summary" in probes.kinds:
        arrays["activations/summary"] = tuple(
            f"{layer}/{stat}" for layer in hidden for stat in _summary_stats(config.activation)
        )
    return ProbeLayout(arrays, index, shapes, batch, probes.every)


def make_probe(probes: ProbeConfig, model: MLP, dataset: Dataset, config: TrainConfig):
    """The probe function for :class:`~rvsp_jax.training.ensemble.Ensemble` and its :class:`ProbeLayout`.

    Returns ``(probe, layout)``; ``probe`` is None when nothing but the per-step metrics is recorded.
    ``probe(ctx)`` maps one member's ``StepContext`` to ``{array name: float32 [P]}`` (float32
    throughout; the activation probe batch is a constant of the compiled step).
    """
    layout = _layout(probes, model, int(dataset.test_labels.shape[0]), config)
    if not layout.arrays:
        return None, layout
    kinds = probes.kinds
    gathers = [
        (name, jnp.asarray(idx, jnp.int32), idx.size == int(np.prod(shape)))
        for (name, idx), shape in zip(layout.param_index.items(), layout.param_shapes.values())
        if idx.size
    ]
    x_probe = jnp.asarray(to_model_inputs(dataset.test_images[layout.probe_batch]))
    activation = config.activation

    def gather(tree) -> jax.Array:
        leaves = jax.tree_util.tree_leaves(tree)
        by_name = dict(zip(layout.param_shapes, leaves))
        return jnp.concatenate(
            [by_name[name].reshape(-1) if whole else by_name[name].reshape(-1)[idx] for name, idx, whole in gathers]
        )

    def probe(ctx) -> dict:
        out = {}
        if "params" in kinds or "updates" in kinds:
            before = gather(ctx.params)
            if "params" in kinds:
                out["params"] = before
            if "updates" in kinds:
                out["updates"] = gather(ctx.new_params) - before
        if "grads" in kinds:
            out["grads"] = gather(ctx.grads).astype(jnp.float32)
        if "weight_norms" in kinds:
            out["weight_norms"] = jnp.stack(
                [jnp.sqrt(jnp.sum(jnp.square(leaf))) for leaf in jax.tree_util.tree_leaves(ctx.params)]
            )
        if "activations" in kinds or "act_summary" in kinds:
            fwd = model.apply({"params": ctx.params}, x_probe)
            if "activations" in kinds:
                out["activations/pre"] = jnp.concatenate([z.reshape(-1) for z in fwd.pre])
                out["activations/post"] = jnp.concatenate([y.reshape(-1) for y in fwd.post])
            if "act_summary" in kinds:
                out["activations/summary"] = jnp.concatenate([layer_summary(y, activation) for y in fwd.post])
        return out

    return probe, layout
