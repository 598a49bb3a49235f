"""The base of every study's settings class: a frozen dataclass that round-trips through a dict.

``to_dict()`` is :func:`dataclasses.asdict` (what a study folder's manifest and summary record) and
``from_dict(d)`` rebuilds the settings from it (a JSON list becomes a tuple where the field's default
is one), so ``type(s).from_dict(s.to_dict()) == s``; an unknown key is refused.
"""

from __future__ import annotations

import dataclasses


class StudySettings:
    """Mixin of the settings dataclasses of :mod:`rvsp_jax.studies`."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown settings {unknown}; valid: {', '.join(fields)}")
        values = {}
        for k, v in d.items():
            if isinstance(v, list) and isinstance(fields[k].default, tuple):
                v = tuple(v)
            values[k] = v
        return cls(**values)
