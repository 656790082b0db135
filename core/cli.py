"""What every command line of the project shares: a bad config is exit status 2 with every problem listed."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

from core.config import ConfigError

Main = Callable[[Sequence[str] | None], int]


def command(main: Main) -> Main:
    """Wrap a command's `main(argv) -> exit status`: a ConfigError raised anywhere in it prints
    `error: N problem(s) in the config: ...` on stderr and returns 2 (argparse's status for bad usage)."""

    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapped
