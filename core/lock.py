"""One process at a time per output folder: `rl.train` holds its run.dir, `rewards.score` its --out.

Two runs in one folder would interleave their rows and overwrite each other's checkpoints, and a run's pruning
deletes any `.tmp-*` checkpoint folder it finds, taking it for a dead writer's leftover: that is only true while
no other process writes there, which this lock guarantees. It is an OS lock (flock) on `<folder>/.lock`: the
kernel releases it when the process ends in any way, SIGKILL included, so a killed run never blocks its resume.
The file keeps the holder's pid, host and start time for the message a second process prints; it is never
deleted (a process that opened a deleted lock file would lock a file nobody else sees). flock works across
the hosts of an NFS mount on Linux (the kernel maps it to an NFS lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.cli import InputError

LOCK_FILE = ".lock"


class FolderInUse(InputError):
    """Another process holds the folder's lock."""


@contextmanager
def exclusive(folder: str | os.PathLike, key: str) -> Iterator[Path]:
    """Hold `folder`'s lock (the folder is created) for the block; FolderInUse, naming the holder and `key`
    (the setting that chose the folder), when another process has it. The descriptor is not inherited by
    programs this process starts (Python's default), so Ray's processes cannot keep it after a crash."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(f"{key}: {path.parent} is in use by {_holder(path)}; wait for it to end or choose "
                              f"another {key} (the lock is {path}, released when that process ends)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    """`process 123 on host h (since 2026-01-01 10:00:00)` from the lock file, or a vaguer phrase when the
    holder has not written it yet."""
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on host {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
