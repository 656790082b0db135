"""What every command line of the project shares: a bad config is exit status 2 with every problem listed, an
unusable input (a corrupt checkpoint, an output folder in use) is exit status 2 in one line, and a failed read or
write (a full disk) is exit status 1 in one line naming the path. `RL_DEBUG=1` (or `--debug` anywhere on the
command line) shows the traceback instead."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

from core.config import ConfigError

Main = Callable[[Sequence[str] | None], int]
DEBUG_FLAG, DEBUG_ENV = "--debug", "RL_DEBUG"


class InputError(Exception):
    """A file or folder the user named cannot be used as it is (a checkpoint that does not verify, a run.dir
    another process holds): said in one line, exit status 2, like a bad config."""


def command(main: Main) -> Main:
    """Wrap a command's `main(argv) -> exit status`: a ConfigError raised anywhere in it prints
    `error: N problem(s) in the config: ...` on stderr and returns 2 (argparse's status for bad usage); an
    InputError prints `error: <message>` and returns 2; an OSError (disk full, permission denied) prints
    `error: <path>: <cause>` and returns 1. Tracebacks help a developer, not a person whose disk is full."""

    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        args = [a for a in args if a != DEBUG_FLAG]
        try:
            return main(args)
        except (ConfigError, InputError) as e:
            if debug:
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            if debug:
                raise
            print(f"error: {describe_os_error(e)}", file=sys.stderr)
            return 1

    return wrapped


def describe_os_error(e: OSError) -> str:
    """`path: cause` (the cause alone when the error names no path), with how to see the traceback."""
    cause = e.strerror or str(e)
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{cause} (set {DEBUG_ENV}=1 for the traceback)"
