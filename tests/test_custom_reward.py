"""A user's own reward, in their own module next to their YAML, works in `python -m rewards.score` and
`python -m rl.train` (Ray actors included) from any working directory, with no edit of this project: named
by import path, its kwargs checked against its signature before it is built, and a module that is not
found is reported with the folders searched."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from rewards.sections import validate_reward_sections
from rl.evaluation.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["logging.tensorboard=false", "logging.images_every=0", "rollout.prompts_per_step=2", "rollout.group_size=2",
         "rollout.batch_size=4", "trainer.batching.micro_batch_size=4", "checkpoint.every=0", "trainer.steps=1"]


def run(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)

MY_REWARDS = '''
import numpy as np
import torch

from rewards.base import RewardOutput


class BrightnessReward:
    """Mean brightness of each image in [0, 1], raised to `gamma`."""

    score_range = (0.0, 1.0)

    def __init__(self, gamma: float = 1.0):
        self.gamma = gamma

    def __call__(self, images, prompts, metadata):
        scores = [(np.asarray(image, dtype=np.float32).mean() / 255) ** self.gamma for image in images]
        return RewardOutput(torch.tensor(scores))
'''

CONFIG = '''
rewards:
  brightness: {_component_: my_rewards.BrightnessReward, gamma: 2.0}
  quality: {_component_: rewards.quality.QualityReward}
ensemble:
  weights: {brightness: 1.0, quality: 0.0}
'''


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "my_rewards.py").write_text(MY_REWARDS)
    (tmp_path / "my.yaml").write_text(CONFIG)
    for name, value in (("dark", 51), ("light", 204)):
        Image.new("RGB", (16, 16), (value,) * 3).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text(f"a {name} square")
    return tmp_path


def test_custom_reward_in_the_scoring_cli(user_dir):
    done = run("rewards.score", "--images", ".", "--config", "my.yaml", "--out", "out", cwd=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {r["image"]: r for r in map(json.loads, (user_dir / "out" / "scores.jsonl").read_text().splitlines())}
    assert records["dark.png"]["brightness"] == pytest.approx(0.2 ** 2, abs=1e-5)  # the YAML's gamma was used
    assert records["light.png"]["total"] == pytest.approx(0.8 ** 2, abs=1e-5)
    # weight 0 switches the project's quality reward off: never called, so its column is empty
    assert records["light.png"]["quality"] is None


def test_custom_reward_kwargs_are_checked_against_its_signature(user_dir, monkeypatch):
    monkeypatch.chdir(user_dir)
    monkeypatch.syspath_prepend(str(user_dir))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    cfg = OmegaConf.create(textwrap.dedent(CONFIG))
    assert validate_reward_sections(cfg) == []
    cfg.rewards.brightness.gama = 3
    cfg.rewards.brightness._component_ = "my_rewards.Brightness"
    assert validate_reward_sections(cfg) == [
        "rewards.brightness._component_: 'my_rewards' has no attribute path 'Brightness'"]
    cfg.rewards.brightness._component_ = "my_rewards.BrightnessReward"
    assert "rewards.brightness.gama: unknown argument" in validate_reward_sections(cfg)[0]


def test_custom_reward_beside_the_yaml_scores_from_another_working_directory(user_dir):
    done = run("rewards.score", "--images", user_dir, "--config", user_dir / "my.yaml", "--out", user_dir / "out",
               cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (user_dir / "out" / "scores.jsonl").read_text().splitlines()]
    assert sorted(r["image"] for r in records) == ["dark.png", "light.png"] and all(r["brightness"] for r in records)


def test_a_missing_module_names_the_folders_searched(user_dir):
    (user_dir / "typo.yaml").write_text(CONFIG.replace("my_rewards.", "my_rewardz."))
    done = run("rewards.score", "--images", user_dir, "--config", user_dir / "typo.yaml", "--out", user_dir / "out",
               cwd=ROOT)
    assert done.returncode == 2
    assert "rewards.brightness._component_: cannot import 'my_rewardz.BrightnessReward'" in done.stderr
    assert f"working directory {ROOT}" in done.stderr and f"config folders ({user_dir})" in done.stderr


def test_custom_reward_beside_the_yaml_trains_in_its_ray_actor(user_dir, tmp_path):
    """`mine.yaml` builds on the shipped tiny config and adds a reward from `my_rewards.py` beside it; the run
    starts in yet another folder, so only the config's folder can provide the module (to the reward actor too)."""
    (user_dir / "mine.yaml").write_text(f"""_base_: {ROOT / "configs" / "tiny.yaml"}
rewards:
  brightness: {{_component_: my_rewards.BrightnessReward, gamma: 2.0}}
ensemble:
  weights: {{ocr: 0.0, brightness: 1.0}}
gating:
  default: [brightness]
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run("rl.train", user_dir / "mine.yaml", f"run.dir={tmp_path / 'run'}", *SMALL, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert 0 < metrics["reward/brightness/mean"] <= 1 and metrics["reward/brightness/count"] == 4
