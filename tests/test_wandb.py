"""W&B through the real `wandb` package in offline mode (WANDB_MODE=offline: nothing leaves the machine): the
config's `logging.wandb` (true, a mapping, or a missing package refused before anything starts), the offline
run's files holding each step's scalars and the sample grids, and a resumed run continuing the same W&B run."""

import sys

import numpy as np
import pytest
from train_helpers import tiny_config
from wandb_files import history

from core.config import ConfigError
from rl.evaluation.metrics import WANDB_ID_FILE, MetricsWriter
from rl.train_config import validate_train_config


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_true_means_wandb_with_the_run_name_as_project(tmp_path):
    spec = validate_train_config(tiny_config(tmp_path, overrides=("logging.wandb=true", "run.name=demo")))
    assert spec.logging.wandb_options(spec.run.name) == {"project": "demo"}
    spec = validate_train_config(tiny_config(tmp_path, overrides=("logging.wandb={entity: me}",)))
    assert spec.logging.wandb_options("tiny") == {"project": "tiny", "entity": "me"}
    assert validate_train_config(tiny_config(tmp_path)).logging.wandb_options("tiny") is None


def test_a_missing_wandb_is_refused_before_anything_starts(tmp_path, monkeypatch):
    """`sys.modules["wandb"] = None` is Python's own way to make `import wandb` fail as if it were not installed
    (it is installed in the test environment)."""
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError) as refused:
        validate_train_config(tiny_config(tmp_path, overrides=("logging.wandb=true",)))
    assert any(p.startswith("logging.wandb: W&B logging was asked for but the wandb package is not installed: "
                            'pip install -e ".[wandb]"') for p in refused.value.problems)


def test_offline_files_hold_the_metrics_and_grids_and_a_resume_continues_the_run(tmp_path):
    grid = np.zeros((32, 48, 3), np.uint8)
    grid[..., 1] = 200
    first = MetricsWriter(tmp_path, total_steps=3, start_step=-1, tensorboard=False, wandb={"project": "t"})
    for step in (1, 2):
        first.log(step, {"reward/mean": 0.25 * step, "loss/kl": float("nan")})
    first.log_image(2, "samples", grid)
    first.close()
    run_id = (tmp_path / WANDB_ID_FILE).read_text()
    ids, rows = history(tmp_path)
    assert ids == {run_id}
    logged = {row["_step"]: row for row in rows}
    assert logged["1"]["reward/mean"] == "0.25" and logged["2"]["reward/mean"] == "0.5"
    assert logged["2"]["samples/_type"] == '"image-file"' and logged["2"]["samples/height"] == "32"
    assert len(list(tmp_path.glob("wandb/offline-run-*/files/media/images/samples_2_*.png"))) == 1

    resumed = MetricsWriter(tmp_path, total_steps=3, start_step=2, tensorboard=False, wandb={"project": "t"})
    resumed.log(3, {"reward/mean": 0.75})
    resumed.close()
    ids, rows = history(tmp_path)
    assert ids == {run_id} and "0.75" in [row.get("reward/mean") for row in rows]

    fresh = MetricsWriter(tmp_path, total_steps=3, start_step=-1, tensorboard=False, wandb={"project": "t"})
    fresh.close()
    assert (tmp_path / WANDB_ID_FILE).read_text() != run_id  # a new run (run.overwrite) is a new W&B run
