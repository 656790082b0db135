"""Checkpoint directories that are complete or ignored.

Layout: `<run.dir>/checkpoints/step_00000050/` holding what the writers put there, and a `COMPLETE`
marker written last. A checkpoint is built in a `.tmp-*` sibling, renamed into place, and only then
marked; older checkpoints are pruned only after the new one is complete, so a crash at any moment
leaves the newest complete checkpoint intact. Directories without the marker are skipped (with a
warning) when looking for one to resume from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | os.PathLike, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Write a checkpoint for `step` atomically, then keep only the newest `keep` complete ones.

    `write(tmp_dir)` fills an empty directory; it may be called with a path on shared storage that
    Ray actors also write into. Returns the final directory.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    write(tmp)
    _fsync_tree(tmp)
    if final.exists():  # a rerun of the same step after a resume: replace the old copy
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_marker(final, step)
    _prune(root, keep)
    return final


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first. Incomplete ones are skipped with a warning."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        match = _NAME.match(path.name)
        if not match:
            continue
        if not (path / MARKER).is_file():
            log.warning("skipping incomplete checkpoint %s (no %s marker)", path, MARKER)
            continue
        found.append((int(match.group(1)), path))
    return found


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


def _write_marker(path: Path, step: int) -> None:
    marker = path / MARKER
    with open(marker, "w") as f:
        json.dump({"step": step, "time": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path)


def _prune(root: Path, keep: int) -> None:
    complete = [p for _, p in list_checkpoints(root.parent)]
    for path in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
    # Leftovers of writers that died mid-save (never the one just renamed).
    for path in root.glob(".tmp-step_*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in root.iterdir():
        if _NAME.match(path.name) and not is_complete(path):
            newest = complete[-1] if complete else None
            if newest is None or path.name < newest.name:
                shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    # Data must be on disk before the rename makes the directory visible as a checkpoint.
    for dirpath, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
