"""The command-line reference page, generated at every docs build (an MkDocs hook): each command's `--help`, from
the same `build_parser()` that the command parses its arguments with, so the page cannot drift from the code."""

from __future__ import annotations

import importlib
import os
from typing import Any

MARKER = "<!-- cli-reference -->"
COMMANDS = ["rl.train", "rl.plan", "rl.generate", "rl.evaluate", "rl.export", "rewards.score", "rewards.compare",
            "prompts.synth"]


def help_text(module: str) -> str:
    """`python -m <module> --help`, without starting a process."""
    return importlib.import_module(module).build_parser().format_help()


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width; the page should not depend on it
    out = []
    for module in COMMANDS:
        out += [f"## `python -m {module}`", "", "```text", help_text(module).rstrip(), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: fill the marker of the reference page."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
