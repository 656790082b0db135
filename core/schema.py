"""Plain config sections (`run:`, `trainer:`, `ensemble:`, ...) described by dataclasses.

`validate_section` checks a section against its dataclass: unknown keys, required fields, types (`Literal`
choices, lists of a type, nested dataclasses) and the ranges a field declares with annotated_types
(`Annotated[int, Ge(1)]`). Each field is documented by the string literal under it (an attribute docstring),
which the docs' config reference is generated from.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from omegaconf import DictConfig

from core.config import is_missing, to_container


def validate_section(node: Any, schema: type, key: str) -> list[str]:
    """Problems with a plain (non-component) section against a dataclass `schema`.

    Reports unknown keys, required fields that are absent or `???`, values of the wrong type, and values
    outside the range a field declares with `Annotated[int, Ge(1)]` (annotated_types' Gt, Ge, Lt, Le,
    Interval; a bounded float must also be finite). Nested dataclass fields are checked recursively.
    Field docstrings live on the dataclass.
    """
    if node is None:
        node = {}
    if not isinstance(node, (Mapping, DictConfig)):
        return [f"{key}: expected a mapping, got {type(to_container(node)).__name__}"]
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema, include_extras=True)
    problems = [f"{key}.{k}: unknown key (accepted: {', '.join(fields)})" for k in node if k not in fields]
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if name not in node or is_missing(node, name):
            if required or is_missing(node, name):
                problems.append(f"{key}.{name}: required value is missing")
            continue
        problems += check_type(node[name], hints[name], f"{key}.{name}")
    return problems


def build_section(node: Any, schema: type, key: str = "", skip: Iterable[str] = ()) -> Any:
    """The dataclass instance for a section that `validate_section` accepted (nested sections built too).

    `skip`: dotted keys `validate_section` reported (`key` is this section's); a field that is or holds one of them
    keeps its default, so the checks that span several fields can still run on the rest and report with them."""
    values = to_container(node) or {}
    hints = typing.get_type_hints(schema)
    skip = list(skip)
    kwargs = {}
    for f in dataclasses.fields(schema):
        path = f"{key}.{f.name}" if key else f.name
        if f.name not in values or any(bad == path or bad.startswith((path + ".", path + "[")) for bad in skip):
            continue
        section = _section_type(hints[f.name])
        value = values[f.name]
        kwargs[f.name] = build_section(value, section, path) if section is not None and value is not None else value
    return schema(**kwargs)


def _section_type(hint: Any) -> type | None:
    """The dataclass a field holds: `Section` or `Section | None`; None for any other field."""
    if dataclasses.is_dataclass(hint):
        return hint
    options = [o for o in typing.get_args(hint) if o is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else []
    return options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None


def check_type(value: Any, hint: Any, key: str) -> list[str]:
    """The problems of one config value against its type annotation `hint` (empty when it fits)."""
    if dataclasses.is_dataclass(hint):
        return validate_section(value, hint, key)
    if hint is Any:
        return []
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *bounds = typing.get_args(hint)
        return check_type(value, base, key) or _check_bounds(to_container(value), bounds, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return []
        attempts = [check_type(value, o, key) for o in options if o is not type(None)]
        return [] if any(not a for a in attempts) else attempts[0]
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        return [] if value in choices else [f"{key}: must be one of {list(choices)}, got {value!r}"]
    if value is None:
        return [f"{key}: must not be null"]
    plain = to_container(value)
    expected = origin or hint
    if expected is float and isinstance(plain, int) and not isinstance(plain, bool):
        return []
    if expected in (list, tuple, Sequence) and isinstance(plain, list):
        return _check_items(value, typing.get_args(hint), key)
    if expected is dict and isinstance(plain, dict):
        return []
    if isinstance(expected, type) and isinstance(plain, expected) and not (
            expected is int and isinstance(plain, bool)):
        return []
    return [f"{key}: expected {getattr(expected, '__name__', expected)}, got {type(plain).__name__} {plain!r}"]


def _check_items(value: Any, args: tuple[Any, ...], key: str) -> list[str]:
    """The items of a list against `list[X]` / `Sequence[X]` / `tuple[X, ...]` (bare `list`: not checked)."""
    if len(args) == 2 and args[1] is Ellipsis:
        args = args[:1]
    if len(args) != 1:
        return []
    return [p for i, item in enumerate(value) for p in check_type(item, args[0], f"{key}[{i}]")]


_BOUNDS = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
           ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))


def _check_bounds(value: Any, bounds: list[Any], key: str) -> list[str]:
    """The range problems of a number that has the right type; `bounds` are annotated_types constraints."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{key}: must be a finite number, got {value}"]
    limits = [(sign, test, getattr(bound, name)) for bound in bounds
              for name, sign, test in _BOUNDS if getattr(bound, name, None) is not None]
    if all(test(value, limit) for _, test, limit in limits):
        return []
    return [f"{key}: must be {' and '.join(f'{sign} {limit}' for sign, _, limit in limits)}, got {value}"]
