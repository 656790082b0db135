"""What every command line of the project shares: a bad config is exit status 2 with every problem listed, an
unusable input (a corrupt checkpoint, an output folder in use) is exit status 2 in one line, and a failed read or
write (a full disk) is exit status 1 in one line naming the path. `RL_DEBUG=1` (or `--debug` anywhere on the
command line) shows the traceback instead."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

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


# The name a command's usage and help show: `python -m <module>`, or `xomni-rl <sub>` when rl/cli.py's dispatcher
# runs it (set for the duration of that one call, so the module's own parser needs no argument for it).
_PROG: ContextVar[str | None] = ContextVar("prog", default=None)
OVERRIDES = "overrides"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def prog(default: str) -> str:
    """The program name for a parser: `default` (e.g. "python -m rl.train"), or the dispatcher's `xomni-rl SUB`."""
    return _PROG.get() or default


@contextlib.contextmanager
def invoked_as(name: str) -> Iterator[None]:
    """Parsers built inside this block call their program `name`."""
    token = _PROG.set(name)
    try:
        yield
    finally:
        _PROG.reset(token)


class CommandParser(argparse.ArgumentParser):
    """The project's argument parser. In a command that takes `key=value` overrides, an override written like a
    flag (`--trainer.lr=1e-6`, `--resume=auto`) is refused as such (exit status 2) instead of argparse's
    "unrecognized arguments", which does not say what to write instead."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        args = list(sys.argv[1:] if args is None else args)
        if any(action.dest == OVERRIDES for action in self._actions):
            dashed = [a for a in args if _dashed_override(a, self._option_string_actions)]
            if dashed:
                key, _, value = dashed[0].lstrip("-").partition("=")
                self.error(f"overrides are key=value, without dashes: write {key}={value or 'VALUE'}, "
                           f"not {dashed[0]}")
        return super().parse_known_args(args, namespace)


def _dashed_override(arg: str, options: Mapping[str, Any]) -> bool:
    """Whether `arg` is a config key behind dashes: not a flag of the parser (nor a prefix argparse would expand)
    and either dotted (`--trainer.lr`) or with a value (`--resume=auto`)."""
    if not arg.startswith("-") or arg == "--":
        return False
    name, eq, _ = arg.partition("=")
    key = name.lstrip("-")
    if not _KEY.match(key) or any(option.startswith(name) for option in options):
        return False
    return bool(eq) or "." in key


def add_overrides(parser: argparse.ArgumentParser, sections: Iterable[str], example: str) -> None:
    """The `key=value ...` positional of a command whose config takes overrides; its help lists the top-level
    config `sections` the command reads."""
    parser.add_argument(OVERRIDES, nargs="*", metavar="key=value",
                        help=f"config overrides, no dashes (OmegaConf dotlist), e.g. {example}; top-level sections: "
                             f"{', '.join(sections)}")


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept flag `old` as `new` (same `dest`), not shown in the help, with a warning on stderr when used."""

    class Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)

    parser.add_argument(old, dest=dest, action=Alias, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)
