"""The `eval:` and `monitor:` sections: every problem reported with its key before anything starts, and gold
rewards kept out of the training total without needing an ensemble weight."""

import pytest
from train_helpers import tiny_config

from core.config import ConfigError
from rl.train_config import trained_rewards, validate_train_config

GOLD = ("rewards.brightness._component_=tests.fault_rewards.MeanPixel", "monitor.gold=[brightness]")


def problems(tmp_path, overrides=(), alerts=None):
    cfg = tiny_config(tmp_path, overrides=overrides)
    if alerts is not None:
        cfg.monitor.alerts = alerts
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
    return "\n".join(error.value.problems)


def test_a_gold_reward_needs_no_weight_and_never_enters_the_total(tmp_path):
    cfg = tiny_config(tmp_path, overrides=("eval.every=5", *GOLD))
    spec = validate_train_config(cfg)
    assert trained_rewards(cfg) == ["ocr"] and spec.monitor.gold == ["brightness"]
    assert "brightness" not in cfg.ensemble.weights


def test_every_problem_of_the_eval_and_monitor_sections_is_listed(tmp_path):
    found = problems(tmp_path, ("eval.every=-1", "eval.samples_per_prompt=0", "eval.num_prompts=0",
                                f"eval.prompts=[{tmp_path / 'missing.jsonl'}]", "monitor.gold=[nope]"),
                     alerts={"monitor/saturation": 0, "monitor/sharpness": 0.5, "eval/reward/mean": 0.5})
    for expected in ("eval.every: must be >= 0, got -1", "eval.samples_per_prompt: must be >= 1, got 0",
                     "eval.num_prompts: must be >= 1, got 0", "eval.prompts[0]: file or folder not found",
                     "monitor.gold: 'nope' is not a configured reward",
                     "monitor.alerts.monitor/saturation: the threshold must be a number > 0, got 0",
                     "monitor.alerts.monitor/sharpness: not a metric this run logs (accepted: monitor/saturation,",
                     "monitor.alerts.eval/reward/mean: not a metric this run logs"):  # eval is off here
        assert expected in found, expected
    # Unknown keys and wrong types are found first (the validator's structural pass), all of them at once.
    found = problems(tmp_path, ("eval.colour=red", "monitor.stop_on_alert=maybe"))
    assert "eval.colour: unknown key" in found and "monitor.stop_on_alert: expected bool" in found


def test_gold_rewards_need_evaluation_and_leave_a_reward_to_train(tmp_path):
    assert "monitor.gold: gold rewards are scored on the eval prompts; set eval.every > 0" in problems(tmp_path, GOLD)
    assert "monitor.gold: lists every configured reward" in problems(tmp_path, ("eval.every=1", "monitor.gold=[ocr]"))


def test_the_alert_metrics_follow_the_configured_rewards(tmp_path):
    cfg = tiny_config(tmp_path, overrides=("eval.every=5", *GOLD))
    cfg.monitor.alerts = {"eval/reward/brightness/mean": 0.2, "monitor/advantage_corr/ocr": 0.5,
                          "eval/monitor/diversity/images": 0.5, "kl/k3_mean": 3.0}
    assert validate_train_config(cfg).monitor.alerts["kl/k3_mean"] == 3.0
    found = problems(tmp_path, ("eval.every=5", *GOLD), alerts={"monitor/advantage_corr/brightness": 0.5})
    assert "monitor.alerts.monitor/advantage_corr/brightness: not a metric" in found  # gold: not in the advantages
