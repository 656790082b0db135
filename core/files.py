"""File modes for what the project writes: readable as the user's umask says, whatever the writer chose.

safetensors' `save_file` writes through a temporary file created with mode 0600 and renames it, so without this
a checkpoint or an exported model written under umask 022 could not be read by other users or their jobs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(paths: Iterable[str | os.PathLike]) -> None:
    """chmod each file to 0666 and each folder to 0777, less the umask (what `open` and `mkdir` would give)."""
    mask = umask()
    for path in map(Path, paths):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError raised in the block that names no file gets `path`: a write to an open file that fails (a
    full disk) names nothing, and the one line a command prints for it (core.cli) should say where."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        cause = e.strerror or last_line(e)  # Ray's wrapped errors have only their text
        raise OSError(e.errno, cause, str(path)) from e


def last_line(e: BaseException) -> str:
    """The last line of an error's text (a wrapped remote error's text is its whole traceback)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[-1]
