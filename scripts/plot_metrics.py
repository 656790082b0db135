"""Draw reward, KL, per-reward and evaluation curves from one or several runs' metrics.jsonl into one PNG.

    python scripts/plot_metrics.py runs/a/metrics.jsonl runs/b/metrics.jsonl --out curves.png [--monitors]

Panels: reward/mean, KL (kl/k3_mean), then one panel per reward found in any of the files (rl/evaluation/curves.py
says what each shows). --monitors adds a panel per reward-hacking monitor (`monitor/...`, with its
`eval/monitor/...` twin). --smooth averages training curves over a window of steps. `rl.train` draws a run's own
<run.dir>/curves.png at its end; this script compares runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rl.evaluation.curves import plot, smoothing_note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl files (one per run)")
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window in steps (training curves)")
    parser.add_argument("--monitors", action="store_true", help="also plot the reward-hacking monitors")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.metrics if not p.is_file()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    print(f"{plot(args.metrics, args.out, args.smooth, args.monitors)}: {smoothing_note(args.smooth)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
