"""Draw reward, KL, per-reward and evaluation curves from one or several runs' metrics.jsonl into one PNG.

    xomni-rl plot runs/a/metrics.jsonl runs/b/metrics.jsonl --out curves.png [--monitors]
    (= python scripts/plot_metrics.py ... = python -m rl.evaluation.plot ...)

Panels: reward/mean, KL (kl/k3_mean), then one panel per reward found in any of the files (rl/evaluation/curves.py
says what each shows). --monitors adds a panel per reward-hacking monitor (`monitor/...`, with its
`eval/monitor/...` twin). --smooth averages training curves over a window of steps. `rl.train` draws a run's own
<run.dir>/curves.png at its end; this command compares runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import CommandParser, command, prog
from rl.evaluation.curves import plot, smoothing_note


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog("python scripts/plot_metrics.py"), description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl files (one per run)")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="the PNG to write (./curves.png)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window in steps (training curves)")
    parser.add_argument("--monitors", action="store_true", help="also plot the reward-hacking monitors")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.metrics if not p.is_file()]
    if missing:
        parser.error(f"METRICS: not found: {', '.join(str(Path(p).resolve()) for p in missing)}")
    print(f"{plot(args.metrics, args.out, args.smooth, args.monitors)}: {smoothing_note(args.smooth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
