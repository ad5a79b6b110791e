"""Typed YAML: a dataclass tree read from a YAML file (or a nested dict) and `key=value` overrides, every key and
value checked against the dataclasses' annotations.

Nothing here knows a particular config; `auralm.train.config` is the schema that uses it. Mistakes raise
`ConfigError` with one line that names the source and the dotted key, and suggests the closest known key:

    train.yaml: unknown key 'optim.lrr' (did you mean 'optim.lr'?); known keys in optim: [...]
    override 'optim.lr=fast': optim.lr: expected a number, got 'fast' (str)

Supported annotations: int, float, bool, str, Any, Literal[...], `X | None`, list[X], dict[str, X] and nested
dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from auralm.config import ConfigError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # a number as YAML 1.2 reads it (1e-3 too)


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Dataclass `cls` from a YAML file (its defaults when `path` is None) with `key=value` overrides applied.

    Overrides use dotted keys (`optim.lr=3e-4`), list indices (`data.train.0.weight=2`) and YAML values
    (`data.dev=[a.jsonl,b.jsonl]`). Messages name the file, or 'config' when there is none.
    """
    raw = read_yaml(path) if path is not None else {}
    for item in overrides:
        apply_override(cls, raw, item)
    return build(cls, raw, Path(path).name if path is not None else "config")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def apply_override(cls: type, raw: dict[str, Any], item: str) -> None:
    """Set the dotted key of `item` ('key=value') in the nested dict `raw`, creating sections and list rows."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=3e-4")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    # Check the key and the value's type against the dataclass tree first, so the message names the override.
    tp = _check_path(cls, parts, item)
    if tp is not None:
        _coerce(value, tp, ".".join(parts), f"override {item!r}")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        empty: Any = None if last else ([] if parts[i + 1].isdigit() else {})
        if isinstance(node, list):
            idx = int(part)
            while len(node) <= idx:
                node.append({})
            if last:
                node[idx] = value
            elif not isinstance(node[idx], (dict, list)):
                node[idx] = empty
            node = node[idx]
        elif last:
            node[part] = value
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = empty
            node = node[part]


def _check_path(cls: Any, parts: list[str], item: str) -> Any:
    """Walk a dotted key through the dataclass types (list indices step into the element type).

    Returns the annotation of the leaf, or None inside a free-form mapping (e.g. a `dict[str, Any]` field).
    """
    tp: Any = cls
    for i, part in enumerate(parts):
        tp = _strip_optional(tp)
        origin = typing.get_origin(tp)
        if origin is list:
            if not part.isdigit():
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is a list; index it by number")
            tp = typing.get_args(tp)[0]
            continue
        if origin is dict:
            return typing.get_args(tp)[1] if i == len(parts) - 1 else None
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is a value, not a section")
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise ConfigError(_unknown_message(".".join(parts[:i]), part, list(hints), f"override {item!r}"))
        tp = hints[part]
    return tp


# ---- dict -> dataclass with checked types ------------------------------------------------------------------
def build(cls: type[T], d: Any, source: str, key: str = "") -> T:
    """Construct dataclass `cls` from mapping `d` found at dotted `key` of `source` (a file name, for messages)."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: {key or 'top level'}: expected a mapping, got {_show(d)}")
    hints = typing.get_type_hints(cls)
    for name in d:
        if name not in hints:
            raise ConfigError(_unknown_message(key, str(name), list(hints), source))
    return cls(**{name: _coerce(value, hints[name], _join(key, name), source) for name, value in d.items()})


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp` (int, float, bool, str, Literal, Optional, list, dict, dataclass)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: expected {expected}, got {_show(value)}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` unions are supported
        return _coerce(value, inner, key, source)
    if origin is Literal:
        if value not in args:
            raise fail(f"one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        return {str(k): _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads exponent literals without a dot (1e-3) as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise AssertionError(f"unsupported annotation {tp!r} at {key}")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return tp


def _show(value: Any) -> str:
    return f"{value!r:.60} ({type(value).__name__})"


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _unknown_message(key: str, name: str, known: list[str], source: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {_join(key, close[0])!r}?)" if close else ""
    return f"{source}: unknown key {_join(key, name)!r}{hint}; known keys{' in ' + key if key else ''}: {sorted(known)}"
