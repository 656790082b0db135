"""configs/xomni_judges.yaml (xomni.yaml with served VLM judges for alignment and quality) and the `_remove_`
key that lets a config drop what its `_base_` configures. Nothing here contacts a judge: building a
VLMJudgeReward sends no request."""

import pytest
from omegaconf import OmegaConf
from train_helpers import REPO

from core.components import instantiate
from core.config import ConfigError, load_config
from rewards.vlm_judge import VLMJudgeReward
from rl.distributed.placement import run_units
from rl.train_config import validate_train_config

JUDGES = REPO / "configs" / "xomni_judges.yaml"
WEIGHTS = ("paths.xomni", "paths.flux", "paths.hpsv2")


def test_remove_drops_keys_of_the_base_before_merging(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "rewards:\n  a: {_component_: x.A, weights: '???'}\n  b: {_component_: x.B, size: 3}\npaths: {w: '???'}\n")
    (tmp_path / "derived.yaml").write_text(
        "_base_: base.yaml\n_remove_: [rewards.a, rewards.b, paths.w]\nrewards:\n  b: {_component_: y.B}\n")
    cfg = load_config(tmp_path / "derived.yaml")
    # `a` and the `???` path are gone; `b` is replaced, not merged (no `size` left over from the base).
    assert OmegaConf.to_container(cfg) == {"rewards": {"b": {"_component_": "y.B"}}, "paths": {}}


@pytest.mark.parametrize("text, message", [
    ("_base_: base.yaml\n_remove_: [rewards.c, nope.x]\n",
     ["_remove_: 'rewards.c' is not a key of", "_remove_: 'nope.x' is not a key of"]),
    ("_base_: base.yaml\n_remove_: rewards.a\n", ["_remove_: expected a list of dotted keys, got 'rewards.a'"]),
    ("_remove_: [rewards.a]\n", ["has no _base_ to remove keys from"]),
])
def test_remove_names_what_it_cannot_remove(tmp_path, text, message):
    (tmp_path / "base.yaml").write_text("rewards:\n  a: {_component_: x.A}\n")
    (tmp_path / "derived.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "derived.yaml")
    assert len(error.value.problems) == len(message)
    assert all(m in p for m, p in zip(message, error.value.problems, strict=True))


def test_the_judges_recipe_requires_its_judge_urls_and_replaces_clip_and_the_weight_free_quality(tmp_path):
    with pytest.raises(ConfigError) as error:
        validate_train_config(load_config(JUDGES, [f"{key}={tmp_path}" for key in WEIGHTS]))
    assert error.value.problems == [
        "paths.alignment_judge: required value is missing (???); interpolated by rewards.alignment.base_url",
        "paths.quality_judge: required value is missing (???); interpolated by rewards.quality.base_url"]

    urls = ["paths.alignment_judge=http://judge-a:8000/v1", "paths.quality_judge=http://judge-q:8001/v1"]
    spec = validate_train_config(load_config(JUDGES, [f"{key}={tmp_path}" for key in WEIGHTS] + urls))
    cfg = spec.cfg
    assert list(cfg.rewards) == ["hpsv2", "ocr", "alignment", "quality"] and "clip" not in cfg.paths
    assert set(cfg.ensemble.weights) == set(cfg.rewards) and list(cfg.gating.default) == ["hpsv2", "alignment",
                                                                                         "quality"]
    judges = {name: instantiate(cfg.rewards[name], f"rewards.{name}") for name in ("alignment", "quality")}
    assert all(isinstance(j, VLMJudgeReward) for j in judges.values())
    assert judges["alignment"].url == "http://judge-a:8000/v1/chat/completions"
    assert judges["alignment"].template.parse == "yes_probability"
    assert (judges["quality"].template.parse, judges["quality"].template.max_score) == ("number", 5.0)
    # The judges are CPU-only actors, two replicas each; the rest is xomni.yaml's.
    units = run_units(spec, list(cfg.rewards))
    needs = {name: (sum(u.cpus for u in units if u.reward == name), sum(u.gpus for u in units if u.reward == name))
             for name in cfg.rewards}
    assert needs["alignment"] == needs["quality"] == (2, 0) and needs["hpsv2"] == (4, 0.05)
    base = load_config(REPO / "configs" / "xomni.yaml")
    assert cfg.trainer == base.trainer and cfg.rollout == base.rollout and cfg.gating.rules == base.gating.rules
