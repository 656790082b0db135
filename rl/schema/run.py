"""Where a run lives and what it keeps: `run`, `ray`, `checkpoint` and `logging`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Gt


@dataclass
class RunConfig:
    """The run: where it writes and the seed all its randomness derives from."""

    dir: str
    """Run directory (metrics.jsonl, tensorboard/, checkpoints/, export/). On a cluster it must be on storage that
    every node sees, at the same path."""
    seed: Annotated[int, Ge(0)] = 0
    """The run seed: all sampling randomness is a function of (seed, step, prompt index, sample index)."""
    name: str = "xomni-rl"
    """A label for the loggers (TensorBoard, W&B)."""
    overwrite: bool = False
    """Start from step 0 in a `dir` that holds an earlier run (its checkpoints and metrics are replaced). Without
    it such a start is refused, so a forgotten `resume=auto` loses nothing."""


@dataclass
class RayConfig:
    """The Ray instance the run uses and how long it waits for it."""

    address: str | None = None
    """null starts a local Ray (the embedded default); "auto" or "ray://host:10001" joins a cluster."""
    num_cpus: Annotated[int, Ge(1)] | None = None
    """CPUs of the local Ray (ignored when joining a cluster); null: the machine's."""
    num_gpus: Annotated[int, Ge(0)] | None = None
    """GPUs of the local Ray (ignored when joining). It declares GPUs even on a machine without them: the actors
    then run on the CPU, which is how the tests exercise GPU placements."""
    namespace: str = "xomni-rl"
    """Ray namespace of the run's actors."""
    call_timeout_s: Annotated[float, Gt(0)] | None = 3600.0
    """The longest a rollout or learner call may take before the run stops as stuck (null: no limit)."""
    placement_timeout_s: Annotated[float, Gt(0)] = 60.0
    """The longest the run waits for a joined cluster to offer the GPUs and CPUs it asks for, and for each
    placement group to be placed, before it stops with the numbers."""
    start_timeout_s: Annotated[float, Gt(0)] = 600.0
    """The longest the rollout and learner actors may take to start (processes up, models loaded) before the run
    stops saying how many started."""


@dataclass
class CheckpointConfig:
    """Checkpoints: complete or ignored (written to a temporary folder, renamed, marker last)."""

    every: Annotated[int, Ge(0)] = 50
    """Save every N steps, and after the last step; 0 saves after the last step only."""
    keep: Annotated[int, Ge(1)] = 2
    """Complete checkpoints kept; older ones are pruned only after a new one is complete."""
    export_final: bool = False
    """After the last step, also write the final policy as a complete X-Omni folder in <run.dir>/export (what
    `python -m rl.export` writes, over model.policy's folder). Needs model.policy to be
    `rl.model.policy.XOmniPolicy.from_pretrained`."""


@dataclass
class LoggingConfig:
    """Where metrics and sample grids go besides <run.dir>/metrics.jsonl."""

    tensorboard: bool = True
    """Write TensorBoard event files to <run.dir>/tensorboard."""
    wandb: bool | dict | None = None
    """Also log to Weights & Biases: true (project = run.name), or keyword arguments for `wandb.init` (project
    defaults to run.name); null or false: off. Needs the `wandb` package (`pip install -e ".[wandb]"`), checked
    before anything starts. A resumed run continues the same W&B run (its id is kept in <run.dir>/wandb_run_id)."""
    images_every: Annotated[int, Ge(0)] = 10
    """Every N steps log a grid of samples per prompt with each image's rewards written under it (0: never)."""
    images_prompts: Annotated[int, Ge(1)] = 4
    """Prompts shown in that grid."""
    curves: bool = True
    """At the end of every run, resumed ones included, draw <run.dir>/curves.png from metrics.jsonl (reward, KL,
    each reward and its evaluation; `scripts/plot_metrics.py` compares runs)."""

    def wandb_options(self, run_name: str) -> dict | None:
        """Keyword arguments for `wandb.init` (None: W&B is off)."""
        if not self.wandb:
            return None
        return {"project": run_name, **(self.wandb if isinstance(self.wandb, dict) else {})}

    def problems(self) -> list[str]:
        """What makes this section unusable although each value has the right type."""
        if self.wandb:
            try:
                import wandb  # noqa: F401
            except ImportError:
                return ['logging.wandb: W&B logging was asked for but the wandb package is not installed: '
                        'pip install -e ".[wandb]" (or set logging.wandb=null)']
        return []
