"""Evaluation and monitors during training, on a real local Ray with the tiny config: eval rows at step 0 and
every `eval.every` steps, a gold reward that never enters the training total, the eval grid, per-step
monitors, an alert that fires, the same rows after a SIGKILL and `resume=auto`, and a stop on an alert.

The uninterrupted run is driven in-process (`Trainer.fit`); the interrupted one runs `python -m rl.train` in
a subprocess (its own local Ray), killed with SIGKILL, then resumed. CPU float32 with the same seeds gives
the same numbers in both.
"""

import numpy as np
import pytest
from PIL import Image
from train_helpers import (
    REPO,
    assert_same_metrics,
    kill_after_checkpoint,
    save_config,
    tiny_config,
    train,
)
from wandb_files import history

from rl.distributed.reward_pool import RunAborted
from rl.driver.trainer import Trainer
from rl.evaluation.alerts import DriftAlerts
from rl.evaluation.metrics import WANDB_ID_FILE, MetricsWriter, read_metrics
from rl.evaluation.monitors import STATISTICS
from rl.train_config import validate_train_config

EVAL = ("trainer.steps=4", "checkpoint.every=1", "checkpoint.keep=2", "eval.every=2", "eval.num_prompts=3",
        "eval.samples_per_prompt=2",
        f"eval.prompts=[{REPO / 'prompts/data/glyph_words_eval.jsonl'}]", "eval.grid_prompts=2",
        "rewards.brightness._component_=tests.fault_rewards.MeanPixel", "gating.default=[brightness]",
        "monitor.gold=[brightness]", "logging.curves=true", "logging.wandb={project: eval-test}")
# W&B offline (nothing leaves the machine), for this process and the killed run's subprocess.
WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}


@pytest.fixture(scope="module")
def wandb_offline():
    with pytest.MonkeyPatch.context() as patch:
        for key, value in WANDB_ENV.items():
            patch.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory, local_ray, wandb_offline):
    """The uninterrupted run: 4 steps, evaluations at steps 0, 2 and 4; an alert on high-frequency energy that fires
    at any change from step 1, and one on the gold reward that cannot fire (a 1000% drift)."""
    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(root / "straight", overrides=EVAL)
    cfg.monitor.alerts = {"monitor/hf_energy": 1e-9, "eval/reward/brightness/mean": 10.0}
    with Trainer(validate_train_config(cfg)) as trainer:
        trainer.fit()
    return root, cfg, read_metrics(root / "straight" / "metrics.jsonl"), trainer


def test_eval_rows_at_step_0_and_every_n_steps_with_a_gold_reward(straight):
    root, _, rows, _ = straight
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    evaluated = [r["step"] for r in rows if "eval/reward/mean" in r]
    assert evaluated == [0, 2, 4]
    step0 = rows[0]
    assert set(step0) == {"step", "time/eval_s", "monitor/alerts"} | {k for k in step0 if k.startswith("eval/")}
    for row in (rows[0], rows[2], rows[4]):
        # 3 held-out words x 2 samples: OCR on each (text prompts), the gold reward on each, gates and tasks.
        assert row["eval/reward/ocr/count"] == 6 and row["eval/reward/brightness/count"] == 6
        assert row["eval/gate/ocr/rate"] == 1.0 and row["eval/gate/brightness/rate"] == 1.0
        assert row["eval/task/text_rendering/reward/ocr/mean"] == pytest.approx(row["eval/reward/ocr/mean"])
        assert row["eval/reward/mean"] == pytest.approx(row["eval/reward/ocr/mean"])  # gold: not in the total
        assert 0 < row["eval/reward/brightness/mean"] < 1 and row["time/eval_s"] > 0
        assert {f"eval/monitor/{s}" for s in STATISTICS} <= set(row)
    for row in rows[1:]:  # training rows: monitors every step; the gold reward is never scored in training
        assert not any(k.startswith(("reward/brightness/", "gate/brightness/")) for k in row)
        assert {f"monitor/{s}" for s in STATISTICS} | {"monitor/diversity/tokens", "monitor/diversity/images",
                                                       "monitor/advantage_corr/ocr"} <= set(row)
        assert 0 < row["monitor/diversity/tokens"] <= 1 and 0 < row["monitor/brightness"] < 1
        # OCR is the only trained reward: it alone orders the samples (null when every group was a tie).
        assert row["monitor/advantage_corr/ocr"] in (None, pytest.approx(1.0))
    assert any(row["monitor/advantage_corr/ocr"] is not None for row in rows[1:])
    grids = sorted((root / "straight" / "eval").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_00000000.png", "step_00000002.png", "step_00000004.png"]
    first, last = (np.asarray(Image.open(g)) for g in (grids[0], grids[-1]))
    assert first.shape == last.shape  # the same 2 prompts x 2 seeds at every evaluation


def test_eval_rows_survive_a_sigkill_and_resume_once_each(straight):
    root, cfg, expected, _ = straight
    broken = root / "broken"
    config = save_config(cfg, root / "eval.yaml")
    killed_at = kill_after_checkpoint(config, broken, 2)
    assert 2 <= killed_at < 4
    assert not (broken / "curves.png").exists()  # drawn when a run ends
    killed_run = (broken / WANDB_ID_FILE).read_text()

    resumed = train(config, f"run.dir={broken}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert Image.open(broken / "curves.png").size == Image.open(root / "straight" / "curves.png").size
    # The resumed run went on with the killed run's W&B run, from the step after its checkpoint (the rows a SIGKILL
    # caught in W&B's buffers are lost to W&B; metrics.jsonl keeps every row).
    ids, rows = history(broken)
    logged = {row["_step"] for row in rows if "reward/mean" in row}
    assert ids == {killed_run} and {str(s) for s in range(killed_at + 1, 5)} <= logged
    got = read_metrics(broken / "metrics.jsonl")
    assert [r["step"] for r in got] == [0, 1, 2, 3, 4]  # each evaluation once: 0 and 2 kept, 4 redone
    assert [r["step"] for r in got if "eval/reward/mean" in r] == [0, 2, 4]
    assert_same_metrics(got, expected)


def test_an_alert_fires_in_a_run(straight):
    rows = straight[2]
    # Baselines: the gold reward's at step 0, hf_energy's at step 1, from which every later step differs.
    assert [r["monitor/alerts"] for r in rows] == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_a_stopping_alert_ends_the_run_after_its_row(straight, tmp_path):
    """The run's own logging step, on the finished run's driver (its actors are gone; logging needs none)."""
    trainer = straight[3]
    trainer.metrics = MetricsWriter(tmp_path, total_steps=4, start_step=-1, tensorboard=False)
    trainer.alerts = DriftAlerts({"monitor/saturation": 0.1}, stop=True, history=[{"monitor/saturation": 0.5}])
    with pytest.raises(RunAborted, match=r"monitor/saturation is 0.9 at step 3, 80.0% away .*stop_on_alert"):
        trainer._log(3, {"monitor/saturation": 0.9})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 3, "monitor/saturation": 0.9, "monitor/alerts": 1.0}]


def test_the_console_line_of_an_evaluation_shows_its_reward(tmp_path):
    line = MetricsWriter(tmp_path, total_steps=4, start_step=-1, tensorboard=False).console_line(
        0, {"eval/reward/mean": 0.25, "time/eval_s": 1.0})
    assert line.startswith("step 0/4 | eval reward 0.25 |")
