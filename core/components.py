"""Components: a config mapping `{_component_: package.module.Name, **kwargs}` names what to build and with
which keyword arguments (torchtune's convention). `instantiate` builds one; `validate_component` checks one
without building it, so a typo, a missing required argument, a value outside a `Literal`'s choices or a missing
weights file is found before any model loads.

Parameters annotated `LocalPath` (core.paths) must name an existing local file or folder, or a file already in
the user's Hugging Face cache (`hf://org/repo/path/in/repo`). Parameters annotated with a `Literal` (alone, in
an Optional or in a list) are checked against its choices.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig

from core.config import ConfigError, UnsetSource, missing_reason, to_container
from core.paths import LocalPath, config_dirs, resolve_local_path, searched
from core.schema import check_type

COMPONENT_KEY = "_component_"


def resolve_component(name: str) -> Any:
    """Import `package.module.Name` (or `package.module.Class.method`).

    Modules are found in the working directory, on the Python path, then in `config_dirs()`, so a user's
    own module next to their YAML resolves from any working directory.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.path.extend(folder for folder in config_dirs() if folder not in sys.path)
    parts = name.split(".")
    if len(parts) < 2:
        raise ImportError(f"{name!r} is not a dotted import path (expected package.module.Name)")
    # The longest importable prefix is the module; the rest are attributes (Class.method).
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise ImportError(f"importing {module_name!r} for {name!r} failed: {e}") from e
            continue
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                raise ImportError(f"{'.'.join(parts[:split])!r} has no attribute path {'.'.join(parts[split:])!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {name!r}: no module {parts[0]!r} ({searched(parts[0] + '.py')}, "
                      f"then PYTHONPATH and the installed packages)")


def is_component(node: Any) -> bool:
    return isinstance(node, (Mapping, DictConfig)) and COMPONENT_KEY in node


def instantiate(node: Any, key: str = "<root>", **runtime_kwargs: Any) -> Any:
    """Build the component described by `node`; nested components in its kwargs are built first.

    `runtime_kwargs` are supplied by the caller (e.g. a device) and win over the YAML. Any error
    raised while building is re-raised as a ConfigError naming `key`.
    """
    if not is_component(node):
        raise ConfigError([f"{key}: expected a mapping with {COMPONENT_KEY!r}"])
    spec = dict(to_container(node))
    target_name = spec.pop(COMPONENT_KEY)
    try:
        target = resolve_component(target_name)
    except ImportError as e:
        raise ConfigError([f"{key}.{COMPONENT_KEY}: {e}"]) from e
    kwargs = {k: instantiate(v, f"{key}.{k}") if is_component(v) else v for k, v in spec.items()}
    kwargs.update(runtime_kwargs)
    try:
        return target(**kwargs)
    except ConfigError:
        raise
    except Exception as e:  # a constructor's own error, re-labelled with the config key
        raise ConfigError([f"{key}: {type(e).__name__}: {e}"]) from e


def validate_component(node: Any, key: str, provided: Iterable[str] = (), files: bool = True) -> list[str]:
    """Problems with a component node, without building it.

    Checks that `_component_` imports, that the kwargs bind to its signature (unknown names, required
    arguments left out or set to `???`), that `Literal` parameters hold one of their choices and `Annotated` ones
    their range (`Annotated[float, Ge(0)]`), that `LocalPath`
    parameters exist, and recurses into nested components. `provided` names arguments the caller passes at
    build time. files=False checks neither files nor `???` values (the memory plan, which sizes models from
    shapes before any weights exist).
    """
    if not is_component(node):
        return [f"{key}: expected a mapping with {COMPONENT_KEY!r}, got {_kind(node)}"]
    try:
        target = resolve_component(str(node[COMPONENT_KEY]))
    except ImportError as e:
        return [f"{key}.{COMPONENT_KEY}: {e}"]
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []  # builtins without a signature: nothing to check
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    problems = [f"{key}.{name}: unknown argument of {node[COMPONENT_KEY]} "
                f"(accepted: {', '.join(_named(params)) or 'none'})"
                for name in node if name != COMPONENT_KEY and name not in params and not takes_kwargs]
    hints = component_type_hints(target)
    for name, p in params.items():
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in provided:
            problems += _argument_problems(node, name, p, hints.get(name), f"{key}.{name}", files)
    return problems


def _argument_problems(node: Any, name: str, parameter: inspect.Parameter, hint: Any, key: str,
                       files: bool) -> list[str]:
    """What is wrong with argument `name` of component `node` (hint: its type annotation, or None)."""
    missing = missing_reason(node, name)
    if missing:
        if not files:
            return []
        return [f"{key}: required value is missing (???)" if missing == "???" else UnsetSource(key, missing)]
    if name not in node:
        return [] if parameter.default is not parameter.empty else [
            f"{key}: required argument of {node[COMPONENT_KEY]} is not set"]
    value = node[name]
    if is_component(value):
        return validate_component(value, key, files=files)
    if mentions(hint, _is_literal) or mentions(hint, _is_bounded):
        return check_type(value, hint, key)
    if files and mentions_local_path(hint):
        return _missing_paths(to_container(value), key)
    return []


def mentions(hint: Any, test: Callable[[Any], bool]) -> bool:
    """True when `test` holds for `hint` or any type inside it (LocalPath | None, list[Literal["a", "b"]], ...)."""
    return test(hint) or any(mentions(arg, test) for arg in typing.get_args(hint) if not isinstance(arg, str))


def mentions_local_path(hint: Any) -> bool:
    """True for LocalPath, LocalPath | None, list[LocalPath], str | list[LocalPath], ..."""
    return mentions(hint, lambda h: h is LocalPath)


def _is_literal(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Literal


def _is_bounded(hint: Any) -> bool:
    """`Annotated[float, Ge(0)]` and kin: a range the value must lie in, checked like a schema field's."""
    return typing.get_origin(hint) is typing.Annotated


def _missing_paths(value: Any, key: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    problems = []
    for i, item in enumerate(values):
        if item is None:
            continue
        try:
            resolve_local_path(str(item), f"{key}[{i}]" if isinstance(value, list) else key)
        except FileNotFoundError as e:
            problems.append(str(e))
    return problems


def _named(params: Mapping[str, inspect.Parameter]) -> list[str]:
    return [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def component_type_hints(target: Any) -> dict[str, Any]:
    """The type hints of a component's arguments (a class's __init__ or a function); {} when unresolvable."""
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        # LocalPath resolves even where a module imports it only under TYPE_CHECKING (to stay light).
        return typing.get_type_hints(fn, localns={"LocalPath": LocalPath}, include_extras=True)
    except Exception:  # unresolvable forward references in a user's module: skip path checks
        return {}


def _kind(node: Any) -> str:
    return type(to_container(node)).__name__
