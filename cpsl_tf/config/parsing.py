"""From JSON values to a :class:`~cpsl_tf.config.schema.Config`: type checking against the dataclass
annotations (every error names the source, the dotted key and what was expected), ``section.key=value``
overrides, and back to a dict."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from cpsl_tf.config.schema import Config, ConfigError
from cpsl_tf.config.validation import validate


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "an object"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints are accepted for floats)."""

    def fail() -> typing.NoReturn:
        raise ConfigError(f"{source}: key '{key}' must be {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _build(tp, value, key, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail()
        return value
    if origin is list:
        if not isinstance(value, list):
            fail()
        (item_type,) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        fail()
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if tp is dict:
        if not isinstance(value, dict):
            fail()
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls: type, values: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(
            f"{source}: unknown key {where}; known keys{' of ' + repr(prefix) if prefix else ''}: "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key, source)
    return cls(**kwargs)


def _parse_override(text: str, source: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"{source}: override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def set_key(raw: dict, path: list[str], value: Any, source: str) -> None:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: '{'.'.join(path)}' does not name a config key")
    node[path[-1]] = value


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``section.key=value`` overrides (values parsed as JSON, else taken as strings)."""
    for text in overrides:
        path, value = _parse_override(text, source)
        set_key(raw, path, value, source)
    return raw


def config_from_dict(raw: dict, source: str = "config", required: tuple[str, ...] = ()) -> Config:
    """Type-check ``raw``, check that it sets the ``required`` dotted keys, and validate it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object, got {type(raw).__name__}")
    cfg = _build(Config, raw, "", source)
    missing = [key for key in required if not _is_set(raw, key)]
    if missing:
        section = missing[0].split(".")[0]
        what = f"no '{section}' section" if section not in raw else f"no key {', '.join(map(repr, missing))}"
        raise ConfigError(f"{source}: {what}; a config file must set {', '.join(required)} (the datasets and "
                          "their sizes); every other key may be left out and takes the paper's setting")
    return validate(cfg, source)


def _is_set(raw: dict, key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
