"""The reward-curve script and the sample grid logged to TensorBoard."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
from train_helpers import REPO

from rl.evaluation.sample_grid import sample_grid


def write_metrics(path, rewards):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for step, value in enumerate(rewards, 1):
            f.write(json.dumps({"step": step, "reward/mean": value, "kl/k3_mean": 0.01 * step,
                                "reward/ocr/mean": value, "reward/hpsv2/mean": None}) + "\n")


def test_plot_metrics_draws_every_run_into_one_png(tmp_path):
    write_metrics(tmp_path / "a" / "metrics.jsonl", [0.1, 0.2, 0.3])
    write_metrics(tmp_path / "b" / "metrics.jsonl", [0.3, 0.2, 0.1, 0.0])
    out = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, "scripts/plot_metrics.py", str(tmp_path / "a" / "metrics.jsonl"),
                             str(tmp_path / "b" / "metrics.jsonl"), "--out", str(out), "--smooth", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "smoothed: moving average over 2 steps" in result.stdout  # the figure says the same in its title
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[1] > image.shape[0] > 200 and image.std() > 10  # several drawn panels, not a blank
    missing = subprocess.run([sys.executable, "scripts/plot_metrics.py", str(tmp_path / "nope.jsonl")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_sample_grid_puts_each_prompt_on_a_row_with_scores_under_images():
    red, blue = np.zeros((16, 96, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    rows = [("first prompt", [red] * 3, [{"total": 0.5, "ocr": float("nan")}] * 3),
            ("second prompt", [blue] * 2, [{"total": 0.1, "ocr": 0.2}] * 2)]
    grid = sample_grid(rows, cell=96)
    assert grid.dtype == np.uint8 and grid.shape[1] == 3 * (96 + 4) + 4
    top, bottom = grid[: grid.shape[0] // 2], grid[grid.shape[0] // 2:]
    assert (top[..., 0] > 200).sum() > (bottom[..., 0] > 200).sum()  # red images in the first row
    assert ((bottom[..., 2] > 200) & (bottom[..., 0] < 50)).sum() > 1000  # blue ones in the second


def test_a_large_group_wraps_at_eight_columns_into_a_near_square_grid():
    """The tiny config's logged grid (4 prompts x 32 samples of 16 x 48 px): 8 columns and 4 lines a prompt, not one
    line 6,276 px wide; image i of a group sits in line i // 8, column i % 8 of its prompt's band."""
    red, blue = np.zeros((16, 48, 3), np.uint8), np.zeros((16, 48, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    first = [blue if i == 9 else red for i in range(32)]
    rows = [(f"prompt {p}", first if p == 0 else [red] * 32, [{"total": 0.5, "ocr": 0.25}] * 32) for p in range(4)]
    grid = sample_grid(rows)
    height, width = grid.shape[:2]
    assert width == 8 * (192 + 4) + 4 and 0.5 < height / width < 2
    ys, xs = np.nonzero((grid[..., 2] > 200) & (grid[..., 0] < 50))
    assert (xs.mean() - 4) // (192 + 4) == 1  # column 1
    band = height / 4  # four prompts, each 4 lines of images
    assert ys.max() < band and (ys.mean() / band * 4) // 1 == 1  # the first prompt's second line
