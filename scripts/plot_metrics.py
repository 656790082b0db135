"""`python scripts/plot_metrics.py METRICS... --out curves.png`: the runs' curves in one PNG; the same command as
`xomni-rl plot` (rl/evaluation/plot.py has it and says what it draws)."""

import sys

from rl.evaluation.plot import main

if __name__ == "__main__":
    sys.exit(main())
