"""A user's own reward, in their own module next to their YAML, works in `python -m rewards.score` with no
edit of this project: named by import path, its kwargs checked against its signature before it is built."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from rewards.ensemble import validate_reward_sections

ROOT = Path(__file__).resolve().parents[1]

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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "rewards.score", "--images", ".", "--config", "my.yaml", "--out", "out"]
    done = subprocess.run(command, cwd=user_dir, capture_output=True, text=True, env=env, timeout=300)
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
