"""Typed validation of training options (YAML/TOML files, run config.json, CLI flags) with pydantic v2.

The dataclasses stay the single definition of the fields; pydantic validates a plain dict against their type
hints: numbers written as strings (YAML 1.1 reads ``3e-3`` as a string) become numbers, unknown keys and wrong
types raise :class:`ConfigError` with one line naming the key, e.g. ``training option 'lr': Input should be a
valid number``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError


class ConfigError(ValueError):
    """A training option with an unknown key, a wrong type or a value out of range (one line)."""


@functools.cache
def _adapter(cls) -> TypeAdapter:
    cls.__pydantic_config__ = ConfigDict(extra="forbid")  # stdlib dataclasses read their pydantic config here
    return TypeAdapter(cls)


def _owner(cls, loc: tuple):
    """The dataclass that holds the field at ``loc`` (nested dataclass fields such as ``encoder``)."""
    for part in loc:
        hints = typing.get_type_hints(cls)
        sub = hints.get(str(part))
        if not dataclasses.is_dataclass(sub):
            break
        cls = sub
    return cls


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def validate(cls, data: dict[str, Any], what: str = "training option"):
    """``cls(**data)`` with type coercion and checks; ConfigError (one line) on the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what}s must be a mapping of names to values, not {type(data).__name__}")
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = _where(err["loc"])
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            known = [f.name for f in dataclasses.fields(_owner(cls, err["loc"][:-1]))]
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            msg = f"unknown {what} {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        elif err["type"] == "value_error":  # raised by the dataclass's own __post_init__ checks
            msg = f"{what}s: {str(err.get('ctx', {}).get('error', err['msg']))}"
        else:
            got = err.get("input")
            msg = f"{what} {key!r}: {err['msg']} (got {got!r})" if key else f"{what}s: {err['msg']}"
        more = exc.error_count() - 1
        raise ConfigError(msg.replace("\n", " ") + (f" (and {more} more)" if more > 0 else "")) from None


def read_options(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML or TOML file, or a run's config.json (its ``config`` entry), unvalidated."""
    text = Path(path).read_text()
    try:
        if str(path).endswith(".toml"):
            import tomllib

            data = tomllib.loads(text)
        elif str(path).endswith(".json"):
            data = json.loads(text)
            data = data.get("config", data) if isinstance(data, dict) else data
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001  (yaml, toml and json each have their own error class)
        raise ConfigError(f"{path}: not a valid config file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of training options, got {type(data).__name__}")
    return data
