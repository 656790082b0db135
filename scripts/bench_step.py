"""The step pipeline's modes side by side: sequential (`trainer.pipeline.streaming=false`), streaming, and one step
off-policy (`trainer.pipeline.async_steps=1`, streaming too), in one run. Prints JSON.

    python scripts/bench_step.py                        # configs/tiny.yaml, 6 steps per mode, for real
    python scripts/bench_step.py --simulate             # the paper recipe's stage costs on 8 GPUs, as sleeps
    python scripts/bench_step.py --simulate costs.json  # your own costs (keys of PAPER_COSTS; missing ones kept)

Real: `rl.driver.trainer.Trainer` runs the config in each mode in one local Ray. `stages_s` are the means of the rows'
`time/<stage>_s`, `step_s` the mean `time/step_s`, `step_ratio` each mode's step_s over the sequential one's, all
over steps 2 .. n-1 (the first step warms up; one step off-policy samples nothing after the last).

Simulated (`--simulate`): the same `Trainer.fit` / `train_step` / `collect` and the same pipeline (RolloutGroup
chunks, `stream_rollout`, the RewardPool's chunked calls over its replicas, UpdateInFlight) drive stand-in Ray
actors that sleep for their stage's cost instead of computing: `SleepRollout` per row sampled and decoded,
`SleepReward` per row scored (a reward component run by the real reward actors), `SleepLearner` per update, and
the driver per weight sync. Costs are scaled by --time-scale and reported back at full scale. Each stand-in
records when it was busy; a resource's busy fraction is its busy seconds over (its units x the wall time of steps
2 .. n-1); `learner_hidden` is the share of the learner's busy seconds during which a rollout or reward actor
was busy too (the overlap one step off-policy buys). Placements: colocated (every GPU holds a rollout replica
and a learner rank, time-shared: the learner's update runs on all of them; one step off-policy is refused there,
as in rl.train) and split (--split-rollout-gpus GPUs sample and decode, the rest learn; each stage's cost scales
with its GPU count).
Not simulated: the driver's own CPU work is real (prompts, gates, ensemble, advantages, monitors on this machine,
reported unscaled as `driver_cpu_s_unscaled`; it counts 1/time-scale times in step_s, so keep it small against the
scaled stages); offloading between the learner and the rollout on colocated GPUs costs nothing here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from core.components import instantiate
from core.config import load_config, to_container
from rewards.base import RewardOutput
from rewards.ensemble import Combiner
from rl.distributed.actors import LearnerGroup, RolloutGroup
from rl.distributed.reward_pool import RewardPool
from rl.distributed.rollout import RolloutResult
from rl.driver.trainer import Trainer
from rl.evaluation.alerts import DriftAlerts
from rl.evaluation.metrics import MetricsWriter, read_metrics
from rl.evaluation.monitors import image_statistics, thumbnails
from rl.train_config import TrainSpec, trained_rewards, validate_train_config

REPO = Path(__file__).resolve().parents[1]

# Issue 13's estimates for the paper recipe (512 samples of 576 tokens per step, 8 H100s; none is a measurement):
#   decoding_s   ~230 s: FLUX-12B with true CFG at an assumed 28 steps, ~1.5 PFLOP per image at 50% MFU
#   sampling_s   ~15 s: the policy sampling 512 x 576 tokens, eager
#   rewards_s    30-100 s of OCR on CPUs: the middle, 65 s, over 4 OCR replicas (issue 13's "e.g. 4 OCR actors")
#   learner_s    ~10 s: the update (reference and training passes) on all 8 GPUs
#   weight_sync_s  not estimated in issue 13: 0 (scripts/gpu_check.sh measures bf16 sync bytes/s on a GPU)
PAPER_COSTS = {"gpus": 8, "samples": 512, "decoding_s": 230.0, "sampling_s": 15.0, "rewards_s": 65.0,
               "reward_replicas": 4, "learner_s": 10.0, "weight_sync_s": 0.0}
MODES = {"sync": ("trainer.pipeline.streaming=false",), "streaming": ("trainer.pipeline.streaming=true",),
         "async": ("trainer.pipeline.streaming=true", "trainer.pipeline.async_steps=1")}
DRIVER_STAGES = ("prompts", "gate", "combine", "advantages", "monitors")  # real CPU work in the driver, never slept
QUIET = ("logging.tensorboard=false", "logging.images_every=0", "eval.every=0", "checkpoint.every=0",
         "checkpoint.export_final=false")


# -- stand-ins that sleep (the simulation) ---------------------------------------------------------------------

def busy(log: str, began: float) -> None:
    """Append one busy interval (wall-clock seconds since the epoch) to `log`."""
    with open(log, "a") as f:
        f.write(f"{began} {time.time()}\n")


def sleep_for(seconds: float, log: str) -> None:
    began = time.time()
    time.sleep(seconds)
    busy(log, began)


@ray.remote
class SleepRollout:
    """A rollout replica on one GPU: sample_s + decode_s seconds per row; random tokens and tiny random images
    drawn from the rows' seeds."""

    def __init__(self, sample_s: float, decode_s: float, grid: Sequence[int], log: str):
        self.sample_s, self.decode_s, self.tokens, self.log = sample_s, decode_s, grid[0] * grid[1], log

    def generate(self, prompts: Sequence[str], policy_seeds: Sequence[int], decoder_seeds: Sequence[int]
                 ) -> tuple[RolloutResult, list[np.ndarray]]:
        n = len(prompts)
        sleep_for(n * (self.sample_s + self.decode_s), self.log)
        images = [np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8) for seed in decoder_seeds]
        tokens = torch.stack([torch.randint(0, 64, (self.tokens,), generator=torch.Generator().manual_seed(s))
                              for s in policy_seeds])
        return RolloutResult(tokens, torch.zeros(n, self.tokens), torch.ones(n, dtype=torch.bool), n * self.sample_s,
                             n * self.decode_s, image_statistics(images), thumbnails(images)), images


@ray.remote
class SleepLearner:
    """The learner (all its GPUs as one actor): `update_s` per update; rows arrive as the real learner's do."""

    def __init__(self, update_s: float, log: str):
        self.update_s, self.log = update_s, log

    def begin(self, prompts: list[str]) -> None:
        """Rows arrive by add_rows; the no-grad passes are part of update_s."""

    def add_rows(self, start: int, tokens: torch.Tensor, logprobs: torch.Tensor) -> None:
        """See begin."""

    def train(self, advantages: torch.Tensor) -> dict[str, float]:
        sleep_for(self.update_s, self.log)
        return {"actor/nonfinite_in_row": 0.0}

    def update(self, batch: Any) -> dict[str, float]:
        return self.train(batch.advantages)


class SleepReward:
    """A reward component: `seconds_per_row` per image scored, the image's mean brightness as its score."""

    def __init__(self, seconds_per_row: float, log_dir: str):
        self.seconds_per_row, self.log = seconds_per_row, str(Path(log_dir) / f"rewards-{os.getpid()}.txt")

    def __call__(self, images: list, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        sleep_for(len(images) * self.seconds_per_row, self.log)
        return RewardOutput(torch.tensor([float(np.asarray(image).mean()) / 255 for image in images]))


class SimulatedTrainer(Trainer):
    """rl.train's Trainer with stand-in rollout, learner and weight sync (the real prompts, gates, reward pool,
    ensemble and driver loop); `began` holds each step's start time."""

    def __init__(self, spec: TrainSpec, costs: Mapping[str, float], gpus: Mapping[str, int], log_dir: Path):
        self.costs, self.gpus, self.log_dir, self.began = costs, gpus, log_dir, []
        super().__init__(spec)

    def _start(self) -> None:
        spec, c, log = self.spec, self.costs, self.log_dir
        per_row = c["gpus"] / c["samples"]  # GPU-seconds of a row's stage cost, measured on c["gpus"] GPUs
        self.prompts = instantiate(spec.cfg.prompts, "prompts")
        self.combiner = Combiner.from_config(spec.cfg, trained_rewards(spec.cfg))
        self.rollout = SleepRolloutGroup([SleepRollout.options(num_cpus=0).remote(
            c["sampling_s"] * per_row, c["decoding_s"] * per_row, spec.rollout.grid, str(log / f"rollout-{i}.txt"))
            for i in range(spec.rollout.num_actors)], spec.rollout.batch_size)
        update_s = c["learner_s"] * c["gpus"] / self.gpus["learner"]
        learner = SleepLearner.options(num_cpus=0).remote(update_s, str(log / "learner-0.txt"))
        self.learner = SleepLearnerGroup([learner])
        self.rewards = RewardPool({n: to_container(spec.cfg.rewards[n]) for n in self.combiner.names},
                                  spec.reward_workers, self.combiner.config.timeout_s, self.combiner.config.batch_size)
        self.rewards.ready()
        self.sync_weights = lambda: sleep_for(c["weight_sync_s"], str(log / "sync-0.txt")) or 0
        self.step, self.evaluator = 0, None
        self.metrics = MetricsWriter(self.run_dir, spec.trainer.steps, -1, tensorboard=False)
        self.alerts = DriftAlerts({}, False, [])

    def train_step(self, step: int) -> dict[str, float]:
        self.began.append(time.time())
        return super().train_step(step)

    def save(self) -> None:
        """The simulation keeps no checkpoint."""


class SleepRolloutGroup(RolloutGroup):
    """RolloutGroup's driver-side methods (chunking, submit, generate) over SleepRollout actors."""

    def __init__(self, actors: list, batch_size: int):
        self.actors, self.batch_size, self.group, self.timeout_s = actors, batch_size, None, None


class SleepLearnerGroup(LearnerGroup):
    """LearnerGroup's driver-side methods (submit, result, begin, add_rows) over one SleepLearner actor."""

    def __init__(self, ranks: list):
        self.ranks, self.group, self.timeout_s = ranks, None, None


def intervals(log_dir: Path, resource: str, window: tuple[float, float]) -> list[tuple[float, float]]:
    """The stand-ins' busy intervals for `resource` (all its actors), clipped to `window`."""
    start, end = window
    out = []
    for path in log_dir.glob(f"{resource}-*.txt"):
        for line in path.read_text().split("\n"):
            if line:
                began, ended = map(float, line.split())
                if min(ended, end) > max(began, start):
                    out.append((max(began, start), min(ended, end)))
    return out


def hidden_fraction(inner: list[tuple[float, float]], outer: list[tuple[float, float]]) -> float:
    """The share of `inner`'s busy seconds during which some `outer` interval was busy too."""
    total = sum(b - a for a, b in inner)
    both = sum(max(0.0, min(b, d) - max(a, c)) for a, b in inner for c, d in _union(outer))
    return both / total if total else 0.0


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def simulate_one(costs: Mapping[str, float], placement: str, mode: str, rollout_gpus: int, steps: int,
                 scale: float, work: Path) -> dict[str, Any]:
    """One placement x mode: full-scale step seconds and each resource's busy fraction over steps 2 .. n-1."""
    total = int(costs["gpus"])
    gpus = {"rollout": total, "learner": total} if placement == "colocated" else \
        {"rollout": rollout_gpus, "learner": total - rollout_gpus}
    scaled = {k: v * scale if k.endswith("_s") else v for k, v in costs.items()}
    log = work / f"{placement}-{mode}"
    log.mkdir(parents=True)
    replicas, samples = int(costs["reward_replicas"]), int(costs["samples"])
    group_size = 16  # X-Omni's G; prompts_per_step makes up `samples`
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"run.dir={log / 'run'}", f"trainer.steps={steps}", "ray.num_cpus=16", f"rollout.num_actors={gpus['rollout']}",
        f"rollout.prompts_per_step={samples // group_size}", f"rollout.group_size={group_size}",
        "rollout.batch_size=16", "ensemble.batch_size=16", f"reward_workers.replicas={replicas}", *QUIET,
        *MODES[mode]])
    cfg.prompts.paths = [str((REPO / "configs" / p).resolve()) for p in cfg.prompts.paths]
    cfg.rewards = {"sleep": {"_component_": "scripts.bench_step.SleepReward", "log_dir": str(log),
                             "seconds_per_row": scaled["rewards_s"] * replicas / samples}}
    cfg.ensemble.weights, cfg.gating = {"sleep": 1.0}, {"default": ["sleep"]}
    with SimulatedTrainer(validate_train_config(cfg), scaled, gpus, log) as trainer:
        trainer.fit()
        window = (trainer.began[1], trainer.began[-1])
    wall = window[1] - window[0]
    spans = {name: intervals(log, name, window) for name in ("rollout", "learner", "rewards", "sync")}
    seconds = {name: sum(b - a for a, b in spans[name]) for name in spans}
    if placement == "colocated":  # the update and the sync hold every GPU
        fractions = {"gpus": (seconds["rollout"] + (seconds["learner"] + seconds["sync"]) * total) / (total * wall)}
    else:
        rollout = seconds["rollout"] + seconds["sync"] * gpus["rollout"]
        fractions = {"rollout_gpus": rollout / (gpus["rollout"] * wall),
                     "learner_gpus": (seconds["learner"] + seconds["sync"]) / wall}
    fractions["reward_cpus"] = seconds["rewards"] / (replicas * wall)
    rows = read_metrics(log / "run" / "metrics.jsonl")[1:-1]
    driver = sum(r.get(f"time/{k}_s", 0.0) for r in rows for k in DRIVER_STAGES) / len(rows)
    return {"step_s": round(wall / (steps - 2) / scale, 1), "busy": {k: round(v, 3) for k, v in fractions.items()},
            "learner_hidden": round(hidden_fraction(spans["learner"], spans["rollout"] + spans["rewards"]), 3),
            "driver_cpu_s_unscaled": round(driver, 3)}


def simulate(costs: Mapping[str, float], rollout_gpus: int, steps: int, scale: float) -> dict[str, Any]:
    runs = {"colocated": ("sync", "streaming"), "split": ("sync", "streaming", "async")}
    out: dict[str, Any] = {"costs": dict(costs), "time_scale": scale, "steps": steps, "placements": {}}
    with tempfile.TemporaryDirectory() as work:
        for placement, modes in runs.items():
            out["placements"][placement] = {
                "gpus": {"rollout and learner (time-shared)": int(costs["gpus"])} if placement == "colocated" else
                {"rollout": rollout_gpus, "learner": int(costs["gpus"]) - rollout_gpus},
                "modes": {mode: simulate_one(costs, placement, mode, rollout_gpus, steps, scale, Path(work))
                          for mode in modes}}
    base = out["placements"]["colocated"]["modes"]["sync"]["step_s"]
    out["step_ratio_vs_colocated_sync"] = {f"{p}/{m}": round(r["step_s"] / base, 3)
                                           for p, v in out["placements"].items() for m, r in v["modes"].items()}
    return out


# -- the real tiny run ----------------------------------------------------------------------------------------

def measure(config: Path, steps: int, overrides: Sequence[str]) -> dict[str, Any]:
    stages: dict[str, dict[str, float]] = {}
    step_s: dict[str, float] = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        for mode, extra in MODES.items():
            cfg = load_config(config, [f"run.dir={work}/{mode}", f"trainer.steps={steps}", *QUIET, *overrides,
                                       *extra])
            with Trainer(validate_train_config(cfg)) as trainer:
                trainer.fit()
            rows = read_metrics(Path(work) / mode / "metrics.jsonl")[1:-1]
            keys = sorted({k for r in rows for k in r if k.startswith("time/") and k != "time/step_s"})
            stages[mode] = {k[5:-2]: round(sum(r.get(k, 0.0) for r in rows) / len(rows), 3) for k in keys}
            step_s[mode] = round(sum(r["time/step_s"] for r in rows) / len(rows), 3)
    return {"machine": {"cpus": os.cpu_count(), "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
                        "gpu": torch.cuda.is_available()},
            "config": str(config), "steps": steps, "over_steps": f"2..{steps - 1}", "stages_s": stages,
            "step_s": step_s, "step_ratio": {m: round(s / step_s["sync"], 3) for m, s in step_s.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    parser.add_argument("--steps", type=int, default=None, help="steps per mode (default: 6 real, 3 simulated)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for the real run, key=value")
    parser.add_argument("--simulate", nargs="?", const="", default=None, metavar="COSTS.json",
                        help="sleep each stage's cost instead (default costs: PAPER_COSTS in this script)")
    parser.add_argument("--split-rollout-gpus", type=int, default=6, help="split placement: GPUs that sample")
    parser.add_argument("--time-scale", type=float, default=0.05, help="simulated seconds per modelled second")
    args = parser.parse_args(argv)
    # The reward actors (and the config check) import SleepReward as scripts.bench_step.
    sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    if args.simulate is None:
        result = measure(args.config, args.steps or 6, args.set)
    else:
        costs = {**PAPER_COSTS, **(json.loads(Path(args.simulate).read_text()) if args.simulate else {})}
        result = simulate(costs, args.split_rollout_gpus, args.steps or 3, args.time_scale)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
