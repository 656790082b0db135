"""One config system for every entry point: OmegaConf YAML, `key=value` overrides, components by
import path, and a validator that reports every problem (with its dotted key) before anything loads.

A component is a mapping with `_component_: package.module.Name` plus the keyword arguments of
`Name` (torchtune's convention). `instantiate` builds it; `validate_component` binds the kwargs to the
signature without building it, so a typo, a missing required argument or a missing weights file is
found before any model loads. Parameters annotated `LocalPath` must name an existing local file or
folder, or a file already in the user's Hugging Face cache (`hf://org/repo/path/in/repo`).

Where things are looked up: a `_component_` module, and a relative `LocalPath` (a prompt file, a weights
folder), are searched in the working directory first, then in the folder of the config file given to
`load_config` and the folders of the `_base_` files it builds on (nearest first). So `my_rewards.py`
next to `mine.yaml` imports from any working directory, and a shipped config names shipped files
relative to itself. Config folders come after the installed packages on `sys.path`, so a user's module
never hides one of this project's. Ray actors started by `rl.distributed.actors.init_ray` search the
same folders (`XOMNI_RL_CONFIG_DIRS`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NewType

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

COMPONENT_KEY = "_component_"
BASE_KEY = "_base_"
REMOVE_KEY = "_remove_"
HF_PREFIX = "hf://"
CONFIG_DIRS_ENV = "XOMNI_RL_CONFIG_DIRS"
"""Environment variable (folders joined by os.pathsep) that hands the config folders to Ray actors."""

# The folders of the config `load_config` read last (and of its bases), nearest first; a Ray actor
# inherits its driver's through the environment.
_config_dirs: list[str] = [d for d in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if d]

LocalPath = NewType("LocalPath", str)
"""A string naming a local file or folder, or `hf://org/repo/file` already in the HF cache."""


class ConfigError(ValueError):
    """Every problem found in a config, one `dotted.key: message` per line.

    Keys that interpolate the same unset value (`${paths.xomni}` with `paths.xomni: ???`) make one line
    for that value, naming them all."""

    def __init__(self, problems: Iterable[str]):
        self.problems = _merge_unset(list(problems))
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the config:\n{lines}")


class UnsetSource(str):
    """A problem line for `key`, which interpolates `source`, a value that is `???`."""

    key: str
    source: str

    def __new__(cls, key: str, source: str) -> UnsetSource:
        line = super().__new__(cls, f"{source}: required value is missing (???); interpolated by {key}")
        line.key, line.source = key, source
        return line


def _merge_unset(problems: list[str]) -> list[str]:
    """One line per unset source, in place of its first mention, listing every key that interpolates it."""
    keys: dict[str, list[str]] = {}
    for p in problems:
        if isinstance(p, UnsetSource):
            keys.setdefault(p.source, []).append(p.key)
    merged, seen = [], set()
    for p in problems:
        if not isinstance(p, UnsetSource):
            merged.append(p)
        elif p.source not in seen:
            seen.add(p.source)
            merged.append(f"{p.source}: required value is missing (???); interpolated by "
                          f"{', '.join(dict.fromkeys(keys[p.source]))}")
    return merged


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> DictConfig:
    """Load a YAML file and apply `key=value` overrides (OmegaConf dotlist syntax).

    A file may build on another: `_base_: xomni.yaml` (a path relative to the file) loads that file first
    and merges this one over it (mappings merge key by key; lists and scalars replace), so a variant
    config states only what it changes. Bases may have bases of their own. Merging cannot drop a key, so
    `_remove_: [rewards.clip_align, ...]` (dotted keys of the base) deletes those from the base first; a
    mapping removed and then given anew replaces the base's instead of merging with it.

    The folders of the file and of its bases become `config_dirs()`, where modules and relative paths are
    looked up after the working directory (module docstring).
    """
    files: list[str] = []
    cfg = _load_yaml(os.path.abspath(path), chain=(), files=files)
    overrides = list(overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError([f"<override>: expected key=value, got {o!r}" for o in bad])
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    _config_dirs[:] = dict.fromkeys(os.path.dirname(f) for f in files)
    return cfg


def config_dirs() -> list[str]:
    """The folders of the config file `load_config` read last and of its `_base_` files, nearest first."""
    return list(_config_dirs)


def _searched(value: str) -> str:
    """Where a relative path or a module `value` was looked for, in words (for error messages)."""
    folders = ", ".join(_config_dirs) or "none: no config file loaded"
    return f"looked for {value} in the working directory {os.getcwd()} and the config folders ({folders})"


def _load_yaml(path: str, chain: tuple[str, ...], files: list[str]) -> DictConfig:
    """One YAML file merged over its `_base_` chain; `chain` holds the files that led here (for cycles);
    `files` collects every file read, this one first."""
    if not os.path.isfile(path):
        where = f" (the {BASE_KEY} of {chain[-1]})" if chain else ""
        raise ConfigError([f"<config>: file not found: {path}{where}"])
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors carry the line and column
        raise ConfigError([f"<config>: cannot parse {path}: {e}"]) from e
    if not isinstance(cfg, DictConfig):
        raise ConfigError([f"<config>: {path} must hold a mapping at the top level"])
    files.append(path)
    base, remove = cfg.pop(BASE_KEY, None), cfg.pop(REMOVE_KEY, None)
    if base is None:
        if remove is not None:
            raise ConfigError([f"{REMOVE_KEY}: {path} has no {BASE_KEY} to remove keys from"])
        return cfg
    if not isinstance(base, str):
        raise ConfigError([f"{BASE_KEY}: expected the path of a YAML file in {path}, got {base!r}"])
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
    if base_path in chain or base_path == path:
        raise ConfigError([f"{BASE_KEY}: {path} builds on {base_path}, which builds on it again"])
    base_cfg = _load_yaml(base_path, (*chain, path), files)
    _remove_keys(base_cfg, remove, base_path)
    return OmegaConf.merge(base_cfg, cfg)


def _remove_keys(cfg: DictConfig, keys: Any, base_path: str) -> None:
    """Delete the dotted `keys` (a `_remove_` list, or None) from `cfg`, the loaded base at `base_path`."""
    if keys is None:
        return
    if not isinstance(keys, ListConfig) or not all(isinstance(k, str) for k in keys):
        raise ConfigError([f"{REMOVE_KEY}: expected a list of dotted keys, got {to_container(keys)!r}"])
    problems = []
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node.keys():  # `in node` is False for a `???` value
            del node[leaf]
        else:
            problems.append(f"{REMOVE_KEY}: {key!r} is not a key of {base_path}")
    if problems:
        raise ConfigError(problems)


def to_container(node: Any) -> Any:
    """Plain Python (dicts, lists, scalars) from an OmegaConf node; interpolations resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def is_missing(node: DictConfig | Mapping, key: str) -> bool:
    """True when `key` holds OmegaConf's required marker `???`."""
    return isinstance(node, DictConfig) and OmegaConf.is_missing(node, key)


def missing_reason(node: DictConfig | Mapping, key: str) -> str | None:
    """Why `key` has no value: "???", or the key X when it interpolates `${X}` and X is `???`; else None."""
    if not isinstance(node, DictConfig) or key not in node.keys():
        return None
    if OmegaConf.is_missing(node, key):
        return "???"
    raw = OmegaConf.to_container(node, resolve=False)[key]
    if isinstance(raw, str) and OmegaConf.is_interpolation(node, key):
        try:
            node[key]
        except (MissingMandatoryValue, InterpolationToMissingValueError):
            return raw.strip("${}")
    return None


# ---------------------------------------------------------------------------------------------
# Components


def resolve_component(name: str) -> Any:
    """Import `package.module.Name` (or `package.module.Class.method`).

    Modules are found in the working directory, on the Python path, then in `config_dirs()`, so a user's
    own module next to their YAML resolves from any working directory.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.path.extend(folder for folder in _config_dirs if folder not in sys.path)
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
    raise ImportError(f"cannot import {name!r}: no module {parts[0]!r} ({_searched(parts[0] + '.py')}, "
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


def validate_component(node: Any, key: str, provided: Iterable[str] = ()) -> list[str]:
    """Problems with a component node, without building it.

    Checks that `_component_` imports, that the kwargs bind to its signature (unknown names, required
    arguments left out or set to `???`), that `LocalPath` parameters exist, and recurses into nested
    components. `provided` names arguments the caller passes at build time.
    """
    if not is_component(node):
        return [f"{key}: expected a mapping with {COMPONENT_KEY!r}, got {_kind(node)}"]
    try:
        target = resolve_component(str(node[COMPONENT_KEY]))
    except ImportError as e:
        return [f"{key}.{COMPONENT_KEY}: {e}"]
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []  # builtins without a signature: nothing to check
    hints = component_type_hints(target)
    params = signature.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    problems: list[str] = []
    present = [k for k in node if k != COMPONENT_KEY]
    for name in present:
        if name not in params and not takes_kwargs:
            problems.append(f"{key}.{name}: unknown argument of {node[COMPONENT_KEY]} "
                            f"(accepted: {', '.join(_named(params)) or 'none'})")
    for name, p in params.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in provided:
            continue
        missing = missing_reason(node, name)
        if missing:
            problems.append(f"{key}.{name}: required value is missing (???)" if missing == "???"
                            else UnsetSource(f"{key}.{name}", missing))
            continue
        if name not in node:
            if p.default is p.empty:
                problems.append(f"{key}.{name}: required argument of {node[COMPONENT_KEY]} is not set")
            continue
        value = node[name]
        if is_component(value):
            problems += validate_component(value, f"{key}.{name}")
        elif mentions_local_path(hints.get(name)):
            problems += _missing_paths(to_container(value), f"{key}.{name}")
    return problems


def mentions_local_path(hint: Any) -> bool:
    """True for LocalPath, LocalPath | None, list[LocalPath], str | list[LocalPath], ..."""
    return hint is LocalPath or any(mentions_local_path(arg) for arg in typing.get_args(hint))


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
        return typing.get_type_hints(fn, localns={"LocalPath": LocalPath})
    except Exception:  # unresolvable forward references in a user's module: skip path checks
        return {}


def _kind(node: Any) -> str:
    return type(to_container(node)).__name__


# ---------------------------------------------------------------------------------------------
# Local files


def resolve_local_path(value: str, key: str) -> str:
    """A local path for `value`, or FileNotFoundError naming `key` (and, for a relative path, the folders
    searched: the working directory, then `config_dirs()`). Never downloads.

    `hf://org/repo/path/in/repo` is looked up in the user's Hugging Face cache only.
    """
    if value.startswith(HF_PREFIX):
        parts = value[len(HF_PREFIX):].split("/", 2)
        if len(parts) == 3:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(repo_id=f"{parts[0]}/{parts[1]}", filename=parts[2])
            if isinstance(cached, str) and os.path.exists(cached):
                return cached
        raise FileNotFoundError(
            f"{key}: {value} is not in the local Hugging Face cache (nothing is downloaded at run time; "
            f"fetch it with `huggingface-cli download` or set a local path)")
    path = os.path.expanduser(value)
    if os.path.exists(path):
        return path
    if os.path.isabs(path):
        raise FileNotFoundError(f"{key}: file or folder not found: {value}")
    for folder in _config_dirs:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    raise FileNotFoundError(f"{key}: file or folder not found: {value} ({_searched(value)})")


# ---------------------------------------------------------------------------------------------
# Plain sections described by dataclasses


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
        return [f"{key}: expected a mapping, got {_kind(node)}"]
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema, include_extras=True)
    problems = [f"{key}.{k}: unknown key (accepted: {', '.join(fields)})" for k in node if k not in fields]
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if name not in node or is_missing(node, name):
            if required or is_missing(node, name):
                problems.append(f"{key}.{name}: required value is missing")
            continue
        problems += _check_type(node[name], hints[name], f"{key}.{name}")
    return problems


def build_section(node: Any, schema: type) -> Any:
    """The dataclass instance for a section that `validate_section` accepted."""
    values = to_container(node) or {}
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for f in dataclasses.fields(schema):
        if f.name in values:
            hint = hints[f.name]
            kwargs[f.name] = (build_section(values[f.name], hint)
                              if dataclasses.is_dataclass(hint) else values[f.name])
    return schema(**kwargs)


def _check_type(value: Any, hint: Any, key: str) -> list[str]:
    if dataclasses.is_dataclass(hint):
        return validate_section(value, hint, key)
    if hint is Any:
        return []
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *bounds = typing.get_args(hint)
        return _check_type(value, base, key) or _check_bounds(to_container(value), bounds, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return []
        attempts = [_check_type(value, o, key) for o in options if o is not type(None)]
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
    if expected in (list, tuple) and isinstance(plain, list):
        return []
    if expected is dict and isinstance(plain, dict):
        return []
    if isinstance(expected, type) and isinstance(plain, expected) and not (
            expected is int and isinstance(plain, bool)):
        return []
    return [f"{key}: expected {getattr(expected, '__name__', expected)}, got {type(plain).__name__} {plain!r}"]


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
