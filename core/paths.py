"""Local files named in configs: `LocalPath`, the folders a relative path is looked up in, and
`resolve_local_path`, which never downloads.

A relative path (a prompt file, a weights folder) and a `_component_` module are searched in the working
directory first, then in the folder of the config file `core.config.load_config` read last and the folders of
the `_base_` files it builds on (nearest first). Ray actors inherit the driver's folders through the
`XOMNI_RL_CONFIG_DIRS` environment variable.

Under `ray job submit` the working directory is Ray's temporary copy of `--working-dir`, not where the user typed
the command: `scripts/launch_cluster.sh` hands the job that directory as `XOMNI_RL_SUBMIT_DIR`, and a relative
path is looked up there before anywhere else, so it means what it means outside a job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NewType

HF_PREFIX = "hf://"
CONFIG_DIRS_ENV = "XOMNI_RL_CONFIG_DIRS"
"""Environment variable (folders joined by os.pathsep) that hands the config folders to Ray actors."""
SUBMIT_DIR_ENV = "XOMNI_RL_SUBMIT_DIR"
"""Environment variable naming the directory a `ray job submit` was typed in (scripts/launch_cluster.sh sets it in
the job's runtime_env, so the driver and every actor see it)."""

LocalPath = NewType("LocalPath", str)
"""A string naming a local file or folder, or `hf://org/repo/file` already in the HF cache."""

# The folders of the config `load_config` read last (and of its bases), nearest first; a Ray actor
# inherits its driver's through the environment.
_config_dirs: list[str] = [d for d in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if d]


def config_dirs() -> list[str]:
    """The folders of the config file `load_config` read last and of its `_base_` files, nearest first."""
    return list(_config_dirs)


def set_config_dirs(folders: Iterable[str]) -> None:
    """Make `folders` the config folders (what `load_config` does with the files it read)."""
    _config_dirs[:] = dict.fromkeys(folders)


def submit_dir() -> str | None:
    """The directory the running `ray job submit` was typed in (`XOMNI_RL_SUBMIT_DIR`), or None."""
    return os.environ.get(SUBMIT_DIR_ENV) or None


def searched(value: str) -> str:
    """Where a relative path or a module `value` was looked for, in words (for error messages)."""
    folders = ", ".join(_config_dirs) or "none: no config file loaded"
    submitted = f"the submit directory {submit_dir()}, " if submit_dir() else ""
    return f"looked for {value} in {submitted}the working directory {os.getcwd()} and the config folders ({folders})"


def in_submit_dir(path: str) -> str | None:
    """`path` (relative) under the submit directory when it exists there, absolute; else None (and outside a
    job). The job's driver runs on the cluster: a submit directory it does not see (a laptop's) finds nothing."""
    submitted = submit_dir()
    if submitted is None or os.path.isabs(path):
        return None
    candidate = os.path.normpath(os.path.join(submitted, path))
    return candidate if os.path.exists(candidate) else None


def resolve_local_path(value: str, key: str) -> str:
    """A local path for `value`, or FileNotFoundError naming `key` (and, for a relative path, the folders
    searched: the submit directory of a `ray job submit`, the working directory, then `config_dirs()`). Never
    downloads.

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
    submitted = in_submit_dir(path)
    if submitted is not None:
        return submitted
    if os.path.exists(path):
        return path
    if os.path.isabs(path):
        raise FileNotFoundError(f"{key}: file or folder not found: {value}")
    for folder in _config_dirs:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    raise FileNotFoundError(f"{key}: file or folder not found: {value} ({searched(value)})")
