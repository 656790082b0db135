"""Per-step metrics: `metrics.jsonl` in the run directory, TensorBoard (and W&B when enabled), and a
console line with the key numbers and an ETA.

On resume the writer first drops the lines after the resumed step, so `metrics.jsonl` always holds
exactly one line per completed step, whatever crashed in between. A fresh run starts after step -1: it
drops every line, including an earlier run's step-0 evaluation row.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"
# The ETA's per-step time is the median of this many recent steps: the first step carries the actors' start-up and
# compilation, and a step with an evaluation or a checkpoint is longer than the rest, so an average since the start
# would keep overestimating what is left.
RECENT_STEPS = 10
# The policy loss is not shown: on-policy its value is ~0 by construction (ratio 1, centred advantages).
_CONSOLE_KEYS = (("reward/mean", "reward"), ("eval/reward/mean", "eval reward"), ("kl/k3_mean", "kl"),
                 ("entropy/mean", "entropy"), ("actor/grad_norm", "grad"), ("rollout/tokens_per_s", "tok/s"))


class MetricsWriter:
    """Writes scalars for each step; `start_step` is the step the run starts (or resumes) after (-1: a fresh
    run that logs a step-0 row, the evaluation of the initial policy). `clock` gives seconds (a test's fake clock)."""

    def __init__(self, run_dir: str | os.PathLike, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, wandb: Mapping | None = None, config: Mapping | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.start_step = start_step
        self._clock = clock
        self._last_row = clock()
        self._step_times: deque[float] = deque(maxlen=RECENT_STEPS)  # seconds between consecutive step rows
        truncate_metrics(self.path, start_step)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a crashed run wrote after the checkpoint we resume from.
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)
        self._wandb = _init_wandb(wandb, config, Path(run_dir), fresh=start_step < 0) if wandb else None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        now = self._clock()
        if step > 0:  # the step-0 row is an evaluation of the initial policy, not a training step
            self._step_times.append(now - self._last_row)
        self._last_row = now
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(dict(record), step=step)
        print(self.console_line(step, record), flush=True)

    def log_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An RGB uint8 image [H, W, 3] (e.g. a grid of samples with their rewards written under them)."""
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")
            self._tb.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(image)}, step=step)

    def console_line(self, step: int, record: Mapping[str, float]) -> str:
        """`step i/N | reward ... | s/step | ETA`, the time per step being the median of the recent steps' ("ETA -"
        before the first step)."""
        parts = [f"step {step}/{self.total_steps}"]
        parts += [f"{label} {record[key]:.4g}" for key, label in _CONSOLE_KEYS
                  if isinstance(record.get(key), (int, float))]
        per_step = self.seconds_per_step()
        if per_step is None:
            parts.append("ETA -")  # nothing measured yet
        else:
            parts += [f"{per_step:.1f}s/step", f"ETA {_duration(per_step * (self.total_steps - step))}"]
        return " | ".join(parts)

    def seconds_per_step(self) -> float | None:
        """Median seconds between the last `RECENT_STEPS` step rows; None before the first."""
        return statistics.median(self._step_times) if self._step_times else None

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl file (a truncated last line, from a crash, is ignored)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (and drop a torn last line)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null reads as "not available"
    return value


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _init_wandb(options: Mapping, config: Mapping | None, run_dir: Path, fresh: bool) -> object:
    """`wandb.init` with `options`, writing under `run_dir`. The run id is kept in <run_dir>/wandb_run_id: a resumed
    run (`fresh` False) continues that W&B run, so its curves go on from the checkpoint's step; a fresh one starts a
    new W&B run. An `id` in `options` wins."""
    import wandb  # checked by the config (logging.wandb) before the run starts

    id_file = run_dir / WANDB_ID_FILE
    run_id = options.get("id") or (None if fresh or not id_file.exists() else id_file.read_text().strip())
    run = wandb.init(config=dict(config or {}), dir=str(run_dir), resume="allow", **{**dict(options), "id": run_id})
    id_file.write_text(run.id)
    return run
