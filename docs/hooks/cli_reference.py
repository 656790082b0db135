"""The command-line reference page, generated at every docs build (an MkDocs hook): `xomni-rl --help`, then each
command's `--help`, from the same `build_parser()` that the command parses its arguments with, so the page cannot
drift from the code. A subcommand of `xomni-rl` is its module's command line, so each is shown once, under both
names."""

from __future__ import annotations

import importlib
import os
from typing import Any

from rl.cli import SUBCOMMANDS
from rl.cli import build_parser as xomni_rl_parser

MARKER = "<!-- cli-reference -->"
OTHER_COMMANDS = ["prompts.synth"]  # not a subcommand of xomni-rl


def help_text(module: str) -> str:
    """`python -m <module> --help`, without starting a process."""
    return importlib.import_module(module).build_parser().format_help()


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width; the page should not depend on it
    out = ["## `xomni-rl`", "", "```text", xomni_rl_parser().format_help().rstrip(), "```", ""]
    for name, (module, _) in SUBCOMMANDS.items():
        parser = importlib.import_module(module).build_parser()
        out += [f"## `xomni-rl {name}` = `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for module in OTHER_COMMANDS:
        out += [f"## `python -m {module}`", "", "```text", help_text(module).rstrip(), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: fill the marker of the reference page."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
