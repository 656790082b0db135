"""Checkpoint directories that are complete or ignored.

Layout: `<run.dir>/checkpoints/step_00000050/` holding what the writers put there, and a `COMPLETE`
marker written last. A checkpoint is built in a `.tmp-*` sibling, renamed into place, and only then
marked; older checkpoints are pruned only after the new one is complete, so a crash at any moment
leaves the newest complete checkpoint intact. Directories without the marker are skipped (with a
warning) when looking for one to resume from. Pruning also deletes every `.tmp-*` folder: only leftovers of a
dead writer, since `rl.train` holds run.dir's lock (core/lock.py) and no other process writes there.

The marker records each file's relative path, size and SHA-256, and `verify_checkpoint` checks them before a
checkpoint is loaded, naming the first missing, truncated or altered file. A failed save (a full disk) removes
its temporary folder and raises an OSError naming the checkpoint; the earlier ones are untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.cli import InputError
from core.files import last_line

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
_NAME = re.compile(r"^step_(\d{8})$")
# SHA-256 streams at ~1.4 GB/s a core where CPUs have SHA instructions (x86 since 2017, ARMv8): faster than
# blake2b (~0.5 GB/s) here and about as fast as zlib's crc32, with `sha256sum` to check a file by hand. Files
# are hashed in parallel threads (hashlib releases the GIL), so a checkpoint of 8 learner shards costs a
# fraction of the time its storage takes to read them.
CHECKSUM, _CHUNK, _THREADS = "sha256", 4 << 20, min(8, os.cpu_count() or 1)


class CorruptCheckpoint(InputError):
    """A checkpoint file is missing or differs from what was written (says which, in one line)."""


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
    try:
        write(tmp)
        _fsync_tree(tmp)
        files = _describe_files(tmp)
        if final.exists():  # a rerun of the same step after a resume: replace the old copy
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_marker(final, step, files)
    except OSError as e:  # a full disk: free what this save took, keep the earlier checkpoints
        for folder in (tmp, final):
            if not is_complete(folder):
                shutil.rmtree(folder, ignore_errors=True)
        raise _save_failed(e, final) from e
    _prune(root, keep)
    return final


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check every file the marker lists against its recorded size and checksum; CorruptCheckpoint naming the
    first bad one. A marker written before sizes and checksums were recorded (no `files`): accepted with a
    warning, as nothing can be checked."""
    path = Path(path)
    try:
        files = json.loads((path / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError) as e:
        raise CorruptCheckpoint(f"checkpoint {path}: its {MARKER} marker is missing or unreadable ({e})") from e
    if files is None:
        print(f"warning: checkpoint {path} was written by an earlier version that recorded no sizes or checksums; "
              "it is used unverified", file=sys.stderr, flush=True)
        return
    for name, want in files.items():
        file = path / name
        if not file.is_file():
            raise CorruptCheckpoint(f"checkpoint file {file} is missing")
        if file.stat().st_size != want["size"]:
            raise CorruptCheckpoint(f"checkpoint file {file} is {file.stat().st_size} bytes, {want['size']} when "
                                    "it was written (truncated or replaced)")
    with ThreadPoolExecutor(_THREADS) as pool:
        sums = dict(zip(files, pool.map(_checksum, [path / name for name in files]), strict=True))
    for name, want in files.items():
        if sums[name] != want[CHECKSUM]:
            raise CorruptCheckpoint(f"checkpoint file {path / name} does not match the {CHECKSUM} recorded when it "
                                    "was written (corrupted)")


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


def _describe_files(folder: Path) -> dict[str, dict[str, int | str]]:
    """relative path -> size and checksum of every file under `folder`, for the marker."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    with ThreadPoolExecutor(_THREADS) as pool:
        sums = list(pool.map(_checksum, paths))
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, CHECKSUM: digest}
            for p, digest in zip(paths, sums, strict=True)}


def _checksum(path: Path) -> str:
    digest = hashlib.new(CHECKSUM)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _save_failed(e: OSError, final: Path) -> OSError:
    """The error to raise, naming the checkpoint (its temporary files are gone) and the cause: a learner actor's
    arrives wrapped by Ray, as an OSError whose `cause` is the actor's."""
    cause = getattr(e, "cause", e)
    why = getattr(cause, "strerror", None) or last_line(cause)
    return OSError(getattr(cause, "errno", None), f"{why} (while saving this checkpoint; the earlier ones are kept)",
                   str(final))


def _write_marker(path: Path, step: int, files: dict[str, dict[str, int | str]]) -> None:
    marker = path / MARKER
    with open(marker, "w") as f:
        json.dump({"step": step, "time": time.time(), "files": files}, f)
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
