"""The curves (rl/evaluation/curves.py, drawn by scripts/plot_metrics.py and at the end of rl.train): evaluation
curves (sparse rows) beside the training ones, and the monitors."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
from train_helpers import REPO

from rl.evaluation import curves

ROWS = [{"step": 0, "eval/reward/mean": 0.1, "eval/reward/ocr/mean": 0.1, "eval/reward/gold/mean": 0.5,
         "eval/monitor/saturation": 0.3}]
ROWS += [{"step": s, "reward/mean": 0.1 * s, "reward/ocr/mean": 0.1 * s, "kl/k3_mean": 0.01, "monitor/alerts": 0.0,
          "monitor/saturation": 0.3 + 0.1 * s} for s in (1, 2, 3, 4)]
ROWS[2] |= {"eval/reward/mean": 0.2, "eval/reward/ocr/mean": 0.2, "eval/reward/gold/mean": 0.4}
ROWS[4] |= {"eval/reward/mean": 0.3, "eval/reward/ocr/mean": None, "eval/reward/gold/mean": 0.3}


def test_eval_series_are_the_evaluated_steps_beside_the_training_curve():
    layout = dict(curves.panels({"run": ROWS}, monitors=True))
    assert layout["reward/mean"] == ["reward/mean", "eval/reward/mean"]
    assert layout["reward/gold/mean"] == ["reward/gold/mean", "eval/reward/gold/mean"]  # a gold reward: eval only
    assert layout["monitor/saturation"] == ["monitor/saturation", "eval/monitor/saturation"]
    assert "monitor/alerts" not in layout and "monitor/saturation" not in dict(curves.panels({"run": ROWS}))
    steps, values = curves.series(ROWS, "eval/reward/ocr/mean", window=3)
    assert steps.tolist() == [0, 2] and values.tolist() == [0.1, 0.2]  # null at step 4, never smoothed
    steps, values = curves.series(ROWS, "reward/mean", window=1)
    assert steps.tolist() == [1, 2, 3, 4] and np.allclose(values, [0.1, 0.2, 0.3, 0.4])


def test_the_script_writes_a_png_with_eval_and_monitor_panels(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "curves.png"
    done = subprocess.run([sys.executable, "scripts/plot_metrics.py", str(path), "--out", str(out), "--monitors"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[0] > 600 and image.std() > 10  # 2 rows of 3 panels, drawn
