"""Config files: OmegaConf YAML with `_base_` inheritance, `_remove_`, `key=value` overrides, and `ConfigError`,
which every entry point turns into exit status 2 with one `dotted.key: message` line per problem.

A component is a mapping with `_component_: package.module.Name` plus the keyword arguments of `Name`
(torchtune's convention; `core.components`); plain sections are checked against dataclasses
(`core.schema`). Relative paths and modules are looked up as `core.paths` describes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from core.paths import set_config_dirs

BASE_KEY = "_base_"
REMOVE_KEY = "_remove_"


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


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> DictConfig:
    """Load a YAML file and apply `key=value` overrides (OmegaConf dotlist syntax).

    A file may build on another: `_base_: xomni.yaml` (a path relative to the file) loads that file first
    and merges this one over it (mappings merge key by key; lists and scalars replace), so a variant
    config states only what it changes. Bases may have bases of their own. Merging cannot drop a key, so
    `_remove_: [rewards.clip_align, ...]` (dotted keys of the base) deletes those from the base first; a
    mapping removed and then given anew replaces the base's instead of merging with it.

    The folders of the file and of its bases become `core.paths.config_dirs()`, where modules and relative
    paths are looked up after the working directory.
    """
    files: list[str] = []
    cfg = _load_yaml(os.path.abspath(path), chain=(), files=files)
    overrides = list(overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError([f"<override>: expected key=value, got {o!r}" for o in bad])
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    set_config_dirs(os.path.dirname(f) for f in files)
    return cfg


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
