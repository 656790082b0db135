"""Fingerprints that decide whether a stored reward result is still valid.

A reward's fingerprint covers its resolved config: the `_component_` import path, every kwarg (nested
components included), and the identity of every file or folder named by a kwarg annotated `LocalPath`
(weights, checkpoints; rl/config.py). A file under 1 MiB is identified by its SHA-256, a larger one by
its size and modification time (hashing multi-GB checkpoints on every run would cost minutes); a folder
by the identities of its files. Changing any of these recomputes the reward; a change in the reward's
code is not seen (`--rescore NAME` recomputes it).

An image row's input fingerprint covers what every reward receives for it: the image file's size and
modification time, the prompt, and the metadata (target text included).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The validator's own rule for which kwargs are weights files, so both always agree.
from core.components import COMPONENT_KEY, component_type_hints, mentions_local_path, resolve_component
from core.config import to_container
from core.paths import resolve_local_path

SMALL_FILE = 1 << 20
_MAX_FOLDER_FILES = 10_000


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> str:
    """`sha256:<hex>` for a file under 1 MiB, `size:<bytes>:mtime:<ns>` for a larger one; a folder gives
    the digest of its files' relative paths and identities."""
    path = Path(path)
    if path.is_dir():
        return "dir:" + _digest([(p.relative_to(path).as_posix(), file_identity(p)) for p in _folder_files(path)])
    stat = path.stat()
    if stat.st_size < SMALL_FILE:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return f"size:{stat.st_size}:mtime:{stat.st_mtime_ns}"


def _folder_files(folder: Path) -> list[Path]:
    """The files under `folder`, sorted, at most _MAX_FOLDER_FILES (a model folder has a handful)."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files += [Path(root) / n for n in sorted(names)]
        if len(files) >= _MAX_FOLDER_FILES:
            break
    return files[:_MAX_FOLDER_FILES]


def _files(spec: Mapping[str, Any], found: dict[str, str]) -> None:
    """Identities of the files and folders named by the `LocalPath` kwargs of a component (and of the
    components nested in its kwargs): the same kwargs the config validator checks for existence."""
    hints = component_type_hints(resolve_component(str(spec[COMPONENT_KEY])))
    for name, value in spec.items():
        if isinstance(value, Mapping) and COMPONENT_KEY in value:
            _files(value, found)
        elif mentions_local_path(hints.get(name)):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item not in found:
                    found[item] = file_identity(resolve_local_path(item, name))


def reward_fingerprint(node: Any) -> str:
    """16 hex digits for a reward's config node (`_component_` + kwargs) and the files it names."""
    spec = to_container(node)
    files: dict[str, str] = {}
    _files(spec, files)
    return _digest({"component": spec, "files": files})


def input_fingerprint(image: str | os.PathLike, prompt: str, metadata: Mapping[str, Any],
                      resized: tuple[int, int] | None = None) -> str:
    """16 hex digits for what the rewards see of one row; raises OSError when the image file is missing.
    resized: the size the image is downsized to before scoring, if it is (results at another size are stale);
    left out of the digest otherwise, so rows that fit keep the fingerprints they had."""
    stat = os.stat(image)
    seen = {"image": [stat.st_size, stat.st_mtime_ns], "prompt": prompt, "metadata": metadata}
    return _digest(seen if resized is None else {**seen, "resized": list(resized)})
