"""metrics.jsonl holds one line per completed step; a resume drops what a crashed run wrote later."""

import json

import numpy as np
import pytest

from rl.evaluation.metrics import RECENT_STEPS, MetricsWriter, read_metrics


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


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_follows_the_median_recent_step_not_the_first_steps_start_up(tmp_path, capsys):
    """Step times shaped like configs/tiny_lora.yaml's on this machine (first step 5.15 s: OCR and compile warm-up;
    then ~1.06 s, with a longer checkpoint step every 10): after 5 steps the ETA is within 25% of the time really
    left, where the average since the start (the old estimate) is 1.8x too long; when steps get faster (the tiny
    demo's OCR cache, as the policy converges) the ETA follows within RECENT_STEPS steps."""
    clock = FakeClock()
    steps = [5.15] + [1.06 + 0.04 * ((i * 7) % 5 - 2) + (0.8 if i % 10 == 0 else 0.0) for i in range(2, 31)]
    writer = MetricsWriter(tmp_path, total_steps=30, start_step=-1, tensorboard=False, clock=clock)
    writer.log(0, {"eval/reward/mean": 0.1})  # the step-0 evaluation row is not a step
    assert writer.seconds_per_step() is None and "ETA -" in capsys.readouterr().out
    for step, seconds in enumerate(steps[:5], start=1):
        clock.now += seconds
        writer.log(step, {"reward/mean": 0.1})
    left = sum(steps[5:])
    assert abs(writer.seconds_per_step() * 25 - left) <= 0.25 * left
    assert sum(steps[:5]) / 5 * 25 > 1.5 * left  # what averaging since the start would say
    eta = int(writer.seconds_per_step() * 25)
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"s/step | ETA {eta // 60}m{eta % 60:02d}s")

    faster = MetricsWriter(tmp_path / "faster", total_steps=40, tensorboard=False, clock=clock)
    for step in range(1, 41):
        clock.now += 3.0 if step <= 10 else 0.6
        faster.log(step, {})
        if step == 10 + RECENT_STEPS // 2 + 1:
            assert faster.seconds_per_step() == pytest.approx(0.6)
