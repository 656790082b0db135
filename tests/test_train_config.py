"""The training config's state keys (trainer.lora, learner dtypes, checkpoint.export_final): every problem is
reported with its dotted key before Ray starts or a model loads (no Ray, no models here)."""

import pytest
from train_helpers import tiny_spec

from core.config import ConfigError
from rl.model.lora import LoraSettings


def problems_of(tmp_path, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        tiny_spec(tmp_path, overrides=overrides)
    return error.value.problems


def test_lora_settings_build_and_bad_ones_are_listed(tmp_path):
    spec = tiny_spec(tmp_path, overrides=("trainer.lora.r=4", "trainer.lora.target_modules=[q_proj,down_proj]"))
    assert spec.trainer.lora == LoraSettings(r=4, alpha=32.0, dropout=0.0, target_modules=["q_proj", "down_proj"])
    assert tiny_spec(tmp_path).trainer.lora is None  # full fine-tuning by default
    problems = problems_of(tmp_path, "trainer.lora.r=0", "trainer.lora.alpha=-1", "trainer.lora.dropout=1.0",
                           "trainer.lora.target_modules=[lm_head]", "learner.reference_dtype=fp8",
                           "checkpoint.export_final=true")
    assert [p.split(":")[0] for p in problems] == [
        "trainer.lora.r", "trainer.lora.alpha", "trainer.lora.dropout", "trainer.lora.target_modules[0]",
        "learner.reference_dtype", "checkpoint.export_final"]
    assert "needs model.policy to be rl.model.policy.XOmniPolicy.from_pretrained" in problems[5]
    assert problems_of(tmp_path, "trainer.lora.rank=4")[0].startswith("trainer.lora.rank: unknown key")
    assert problems_of(tmp_path, "learner.grad_sync=never")[0].startswith("learner.grad_sync: must be one of")


@pytest.mark.parametrize(("overrides", "mode"), [
    ((), "sampler"),                                                   # fp32 CPU rollout and learner
    (("rollout.dtype=bfloat16",), "recompute"),                        # the dtypes differ
    (("learner.mixed_precision=true",), "recompute"),                  # the learner computes in bf16
    (("rollout.num_gpus=1", "ray.num_gpus=1"), "recompute"),           # the devices differ
    (("trainer.loss.tis_cap=2.0",), "recompute"),
    (("placement.mode=colocated", "learner.num_gpus=1", "ray.num_gpus=1"), "sampler"),  # replica on the rank's GPU
    (("rollout.dtype=bfloat16", "trainer.loss.old_logprobs=sampler"), "sampler"),
])
def test_old_logprobs_auto_recomputes_when_sampler_and_learner_differ(tmp_path, overrides, mode):
    assert tiny_spec(tmp_path, overrides=overrides).trainer.loss.old_logprobs == mode


def test_tis_cap_problems_are_listed(tmp_path):
    assert problems_of(tmp_path, "trainer.loss.tis_cap=0")[0].startswith("trainer.loss.tis_cap: must be > 0")
    assert problems_of(tmp_path, "trainer.loss.old_logprobs=bogus")[0].startswith(
        "trainer.loss.old_logprobs: must be one of")
    assert problems_of(tmp_path, "trainer.loss.old_logprobs=sampler", "trainer.loss.tis_cap=2")[0].startswith(
        "trainer.loss.tis_cap")
