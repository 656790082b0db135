"""Which checkpoint a run resumes from, and what it refuses (no Ray, no models)."""

import json
from pathlib import Path

import pytest
from train_helpers import tiny_spec

from core.config import ConfigError
from rl.driver.run_state import TRAINER_STATE, find_resume_checkpoint, trained_settings
from rl.state.checkpoint import save_checkpoint


def checkpoint(run_dir: Path, step: int, seed: int = 0, group_size: int = 4) -> Path:
    def write(path):
        (path / TRAINER_STATE).write_text(json.dumps({"step": step, "seed": seed, "group_size": group_size}))
    return save_checkpoint(run_dir, step, write, keep=5)


def test_no_resume_starts_fresh_but_never_over_an_earlier_run(tmp_path):
    assert find_resume_checkpoint(tiny_spec(tmp_path), tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    checkpoint(tmp_path, 1)
    with pytest.raises(ConfigError, match="holds an earlier run; continue it with resume=auto"):
        find_resume_checkpoint(tiny_spec(tmp_path), tmp_path)
    assert find_resume_checkpoint(tiny_spec(tmp_path, overrides=("run.overwrite=true",)), tmp_path) is None
    assert not (tmp_path / "checkpoints").exists()  # overwrite: the old checkpoints are gone


def test_auto_takes_the_newest_complete_checkpoint(tmp_path):
    assert find_resume_checkpoint(tiny_spec(tmp_path, overrides=("resume=auto",)), tmp_path) is None
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 4)
    (tmp_path / "checkpoints" / "step_00000006").mkdir()  # a save that never completed
    found = find_resume_checkpoint(tiny_spec(tmp_path, overrides=("resume=auto",)), tmp_path)
    assert found.name == "step_00000004"


def test_a_given_checkpoint_must_be_complete_and_compatible(tmp_path):
    older = checkpoint(tmp_path, 2)
    spec = tiny_spec(tmp_path, overrides=(f"resume={older}",))
    assert find_resume_checkpoint(spec, tmp_path) == older
    broken = tmp_path / "checkpoints" / "step_00000003"
    broken.mkdir()
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        find_resume_checkpoint(tiny_spec(tmp_path, overrides=(f"resume={broken}",)), tmp_path)
    other = checkpoint(tmp_path, 5, seed=7, group_size=16)
    with pytest.raises(ConfigError) as error:
        find_resume_checkpoint(tiny_spec(tmp_path, overrides=(f"resume={other}",)), tmp_path)
    assert [p.split(":")[0] for p in error.value.problems] == ["run.seed", "rollout.group_size"]


def test_a_checkpoint_that_trained_other_weights_is_refused(tmp_path):
    """A checkpoint holds the trained weights only: resuming LoRA from full fine-tuning (or back) cannot work."""
    full = tiny_spec(tmp_path)
    trained = trained_settings(full)
    assert trained == {"lora": None, "freeze_text_embedding": True}

    def write(path):
        state = {"step": 3, "seed": 0, "group_size": 4, "trained": trained}
        (path / TRAINER_STATE).write_text(json.dumps(state))
    path = save_checkpoint(tmp_path, 3, write, keep=1)
    assert find_resume_checkpoint(tiny_spec(tmp_path, overrides=(f"resume={path}", "learner.world_size=2")),
                                  tmp_path) == path  # another learner world size is fine: the files reshard
    with pytest.raises(ConfigError) as error:
        find_resume_checkpoint(tiny_spec(tmp_path, overrides=(f"resume={path}", "trainer.lora.r=4",
                                                              "trainer.freeze_text_embedding=false")), tmp_path)
    assert [p.split(":")[0] for p in error.value.problems] == ["trainer.lora", "trainer.freeze_text_embedding"]
