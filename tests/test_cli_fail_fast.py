"""Configs that cannot work fail loudly, through the real CLIs in subprocesses, run from a working directory
outside the repository: out-of-range values, a reward no gate can ever apply, OCR without a gating section,
and training steps where no reward applies to any sample."""

import json
import os
import subprocess
import sys

from omegaconf import OmegaConf
from PIL import Image
from render_text import render_text_image
from train_helpers import REPO, SMALL

TINY = REPO / "configs" / "tiny.yaml"


def run(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_train_rejects_out_of_range_values_and_finds_shipped_files_from_anywhere(tmp_path):
    done = run("rl.train", TINY, f"run.dir={tmp_path}/run", "trainer.optimizer.lr=-1", "rollout.group_size=1",
               "reward_workers.max_failure_frac=2", "ensemble.batch_size=0", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    for problem in ("trainer.optimizer: ValueError: Invalid learning rate: -1",
                    "rollout.group_size: must be >= 2, got 1",
                    "reward_workers.max_failure_frac: must be >= 0 and <= 1, got 2",
                    "ensemble.batch_size: must be >= 1, got 0"):
        assert problem in done.stderr
    assert "4 problem(s)" in done.stderr  # the prompt file (../prompts/data/...) was found from tmp_path


def test_score_rejects_a_reward_that_can_never_apply(tmp_path):
    config = {"rewards": {"quality": {"_component_": "rewards.quality.QualityReward"},
                          "ocr": {"_component_": "rewards.ocr.OCRReward"}},
              "ensemble": {"weights": {"quality": 1.0, "ocr": 1.0}},
              "gating": {"default": ["quality"]}}
    OmegaConf.save(config, tmp_path / "c.yaml")
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a dog")
    done = run("rewards.score", "--images", tmp_path, "--config", tmp_path / "c.yaml", "--out", tmp_path / "out",
               cwd=tmp_path)
    assert done.returncode == 2
    assert "gating: reward 'ocr' can never apply: it is not in gating.default and no rule adds it" in done.stderr


def test_score_without_a_gating_section_applies_ocr_only_to_prompts_with_text(tmp_path):
    """OCR's class needs target text: with no `gating:` section, prompts without text get a total, not NaN."""
    config = {"rewards": {"quality": {"_component_": "rewards.quality.QualityReward"},
                          "ocr": {"_component_": "rewards.ocr.OCRReward"}},
              "ensemble": {"weights": {"quality": 1.0, "ocr": 1.0}}}
    OmegaConf.save(config, tmp_path / "c.yaml")
    images = tmp_path / "images"
    images.mkdir()
    for name, prompt in (("sign", 'A sign that reads "OPEN"'), ("dog", "A dog on a sofa"),
                         ("style", 'A painting in the style of "The Scream"')):
        render_text_image("OPEN", size=(256, 128)).save(images / f"{name}.png")
        (images / f"{name}.txt").write_text(prompt)
    done = run("rewards.score", "--images", images, "--config", tmp_path / "c.yaml", "--out", tmp_path / "out",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["image"]: r for r in map(json.loads, (tmp_path / "out" / "scores.jsonl").read_text().splitlines())}
    assert rows["sign.png"]["ocr"] == 1.0
    for name in ("dog.png", "style.png"):
        assert rows[name]["ocr"] is None and rows[name]["total"] == rows[name]["quality"] is not None


def test_training_warns_about_unscored_steps_and_stops_after_max_unscored_steps(tmp_path):
    prompts = tmp_path / "plain.txt"
    prompts.write_text('A dog on a sofa\nA neon sign that reads "★★★"\n')
    done = run("rl.train", TINY, f"run.dir={tmp_path}/run", *SMALL, f"prompts.paths=[{prompts}]",
               "trainer.steps=5", "trainer.faults.max_unscored_steps=2", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    warning = next(line for line in done.stderr.splitlines() if line.startswith("warning: step 1:"))
    assert "no reward applies to any sample" in warning
    assert "task 'default': no reward in gating.default or its rule (4 of 8 samples)" in warning
    assert "no target text to score: ocr not applied (4 of 8 samples)" in warning
    assert ("run stopped: 2 steps in a row had no reward for any sample (trainer.faults.max_unscored_steps=2)"
            in done.stderr)
    assert "warning: step 2" not in done.stderr  # the second one stops the run instead
