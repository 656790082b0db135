"""`python -m rl.train CONFIG [key=value ...]`: X-Omni's GRPO stage, one Ray driver calling named stages.

    prompts -> gates -> rollout (G samples per prompt) -> rewards -> advantages -> learner update
            -> weight sync -> (evaluation) -> metrics -> checkpoint

The stages are rl/driver/trainer.py's; this module is the command line around them.
`ray.address: null` starts a local Ray (the embedded default); "auto" joins a cluster, e.g. under
`ray job submit --working-dir . -- python -m rl.train configs/xomni.yaml`. The whole config is validated
before Ray starts or any model loads. `resume=auto` continues from the newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import ray

from core.cli import CommandParser, add_overrides, command, prog
from core.config import load_config
from core.files import naming
from core.lock import exclusive
from rl.distributed.reward_pool import RunAborted
from rl.driver.trainer import Trainer
from rl.evaluation.metrics import METRICS_FILE
from rl.job_paths import config_file, make_absolute
from rl.state.checkpoint import latest_checkpoint
from rl.train_config import TOP_LEVEL, TrainSpec, validate_train_config


def where_outputs_are(run_dir: Path, config: str) -> str:
    """Where a run's outputs are, and how to look at them or go on, for the last lines of the console."""
    metrics = run_dir / METRICS_FILE
    lines = [f"outputs in {run_dir}:",
             f"  metrics      {metrics}  (plot: python scripts/plot_metrics.py {metrics} --out curves.png)"]
    if (run_dir / "tensorboard").is_dir():
        lines.append(f"  tensorboard  tensorboard --logdir {run_dir / 'tensorboard'}")
    last = latest_checkpoint(run_dir)
    lines.append(f"  checkpoint   {last}  (go on: python -m rl.train {config} run.dir={run_dir} resume=auto "
                 "trainer.steps=N)" if last else "  checkpoint   none was written")
    if (run_dir / "export").is_dir():
        lines.append(f"  export       {run_dir / 'export'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog("python -m rl.train"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="trust: configs and checkpoints are code. A config's `_component_` names any importable callable,\n"
               "which is called with its kwargs; a checkpoint's .metadata (torch.distributed.checkpoint) is a\n"
               "pickle. Run only configs and resume only checkpoints you trust. See the docs' Security page.")
    parser.add_argument("config", help="training YAML (configs/xomni.yaml, configs/tiny.yaml, ...)")
    add_overrides(parser, sorted(TOP_LEVEL), "trainer.steps=10 resume=auto")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(config_file(args.config), args.overrides)
    for line in make_absolute(cfg):  # under `ray job submit`: relative paths mean the directory it was typed in
        print(line, flush=True)
    spec = validate_train_config(cfg)  # before Ray starts or a model loads
    # One run per run.dir, for its whole life (core/lock.py); a failed write names run.dir at least.
    with exclusive(spec.run.dir, "run.dir"), naming(spec.run.dir):
        return train(spec, args.config)


def train(spec: TrainSpec, config: str) -> int:
    """Run `spec` to its end; the exit status (1: the run stopped, with where its outputs are)."""
    ours = not ray.is_initialized()  # a Ray the caller started (a notebook, a test) is left running
    trainer = None
    try:
        with Trainer(spec) as trainer:
            trainer.fit()
    except RunAborted as e:
        print(f"run stopped: {e}", file=sys.stderr)
        if trainer is not None:
            print(where_outputs_are(trainer.run_dir, config), file=sys.stderr)
        return 1
    finally:
        if ours and ray.is_initialized():
            ray.shutdown()
    print(where_outputs_are(trainer.run_dir, config), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
