"""metrics.jsonl holds one line per completed step; a resume drops what a crashed run wrote later."""

import json

import numpy as np

from rl.evaluation.metrics import MetricsWriter, read_metrics


def test_lines_console_and_resume_truncation(tmp_path, capsys):
    writer = MetricsWriter(tmp_path, total_steps=4, tensorboard=True)
    for step in (1, 2, 3):
        writer.log(step, {"reward/mean": 0.1 * step, "loss/kl": float("nan"), "time/step_s": 1.0})
    writer.log_image(3, "samples", np.zeros((8, 8, 3), np.uint8))
    writer.close()
    out = capsys.readouterr().out
    assert "step 3/4" in out and "reward 0.3" in out and "ETA" in out
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and records[0]["loss/kl"] is None
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))

    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "reward/me')  # a torn line from a crash
    resumed = MetricsWriter(tmp_path, total_steps=4, start_step=2, tensorboard=False)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    resumed.log(3, {"reward/mean": 0.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {"step": 3, "reward/mean": 0.5}
