"""`xomni-rl SUBCOMMAND ...`: every command line of the project under one name (the console script of pyproject.toml,
as `trl` and `tune` are), each subcommand the same code, flags and help as its module's `python -m` form:

    xomni-rl train configs/tiny.yaml trainer.steps=2     =  python -m rl.train configs/tiny.yaml trainer.steps=2
    xomni-rl plan configs/xomni.yaml --nodes 1 ...       =  python -m rl.plan configs/xomni.yaml --nodes 1 ...

A module is imported only when its subcommand runs, so `xomni-rl --help` starts no torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from core.cli import invoked_as

PROG = "xomni-rl"
# subcommand -> (module whose main() it runs, what it does)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rl.train", "GRPO training from a config"),
    "plan": ("rl.plan", "the memory plan: will a run fit these GPUs?"),
    "generate": ("rl.generate", "sample images for a prompt file"),
    "evaluate": ("rl.evaluate", "a policy on a benchmark's prompts, scored"),
    "score": ("rewards.score", "score a folder of images with the reward ensemble"),
    "compare": ("rewards.compare", "is B better than A? two scoring outputs, paired"),
    "export": ("rl.export", "a training checkpoint -> an X-Omni model folder"),
    "plot": ("rl.evaluation.plot", "curves of runs' metrics.jsonl into a PNG"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"`{PROG} SUBCOMMAND --help` shows a subcommand's flags.")
    commands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", title="subcommands")
    for name, (module, about) in SUBCOMMANDS.items():  # add_help=False: the module's own parser reads the rest
        commands.add_parser(name, help=f"{about} (= python -m {module})", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `xomni-rl SUB ARGS...` as the module of SUB would run `ARGS...`; its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        parser = build_parser()
        if not args:
            parser.print_help()
            return 2
        parser.parse_args(args[:1])  # --help prints the list; an unknown subcommand is argparse's error (exit 2)
        return 2
    module, _ = SUBCOMMANDS[args[0]]
    with invoked_as(f"{PROG} {args[0]}"):
        return importlib.import_module(module).main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
