"""Every YAML in configs/ loads and validates (torchtune's "test every recipe config" rule), from a working
directory outside the repository: shipped files (prompt sets) are named relative to the config.

Each config is dispatched on its top-level keys to the check for its kind (`KIND_CHECKS`); a config of
a kind without a check fails, so a new kind of config comes with its check. Required weights paths
(`???`) are filled with empty temporary files: validation checks that paths exist, not their contents.
"""

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from core.config import ConfigError, load_config
from rewards.sections import validate_reward_sections
from rl.train_config import validate_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
REWARD_SECTIONS = {"rewards", "ensemble", "gating"}


def fill_missing(cfg: DictConfig, folder: Path) -> list[str]:
    """Set every `???` value to an empty file in `folder`; return the dotted keys that were missing."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    for i, key in enumerate(missing):
        path = folder / f"missing_{i}.pt"
        path.touch()
        OmegaConf.update(cfg, key, str(path))
    return missing


def check_reward_config(cfg: DictConfig, tmp_path: Path) -> None:
    """A scoring config: only weights paths may be left to the user, and the rewards that need none run
    with `--only` before any path is set."""
    problems = validate_reward_sections(cfg)
    assert all("required value is missing (???)" in p for p in problems), problems
    needs_weights = {key.split(".")[1] for key in OmegaConf.missing_keys(cfg) if key.startswith("rewards.")}
    no_weights = [name for name in cfg.rewards if name not in needs_weights]
    assert no_weights and validate_reward_sections(cfg, only=no_weights) == []
    fill_missing(cfg, tmp_path)
    assert validate_reward_sections(cfg) == []


def check_train_config(cfg: DictConfig, tmp_path: Path) -> None:
    """A training config: validates once its `???` weights paths exist; until then every problem is a
    missing value (named with the key to set), reported all at once."""
    if OmegaConf.missing_keys(cfg):
        with pytest.raises(ConfigError) as error:
            validate_train_config(cfg)
        assert all("required value is missing" in p for p in error.value.problems), error.value.problems
        fill_missing(cfg, tmp_path)
    spec = validate_train_config(cfg)
    assert spec.trainer.steps > 0 and spec.rollout.group_size >= 2


KIND_CHECKS = {
    "rewards": (lambda keys: keys <= REWARD_SECTIONS and "rewards" in keys, check_reward_config),
    "train": (lambda keys: {"run", "model", "trainer"} <= keys, check_train_config),
}


def kind_of(cfg: DictConfig) -> str:
    keys = set(cfg)
    kinds = [kind for kind, (matches, _) in KIND_CHECKS.items() if matches(keys)]
    assert len(kinds) == 1, f"no single config kind has top-level keys {sorted(keys)}; add one to KIND_CHECKS"
    return kinds[0]


def test_configs_exist():
    assert {"rewards.yaml", "tiny.yaml", "xomni.yaml"} <= {path.name for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_and_validates(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    KIND_CHECKS[kind_of(cfg)][1](cfg, tmp_path)


def test_types_ranges_and_components_are_reported_together():
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    cfg = load_config(tiny, ["trainer.optimizer.lr=-1", "trainer.steps=ten", "checkpoint.keep=0",
                             "ray.call_timeout_s=0",
                             "reward_workers.resources={ocr: {num_cpus: -1}}",
                             "model.decoder.patchh=3"])
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
    assert sorted(error.value.problems) == sorted([
        "trainer.optimizer: ValueError: Invalid learning rate: -1", "trainer.steps: expected int, got str 'ten'",
        "checkpoint.keep: must be >= 1, got 0", "ray.call_timeout_s: must be > 0, got 0",
        "reward_workers.resources.ocr.num_cpus: must be a number >= 0, got -1",
        "model.decoder.patchh: unknown argument of rl.decoder.PatchDecoder (accepted: patch, palette_size, seed, "
        "noise, mode, codebook_size)"])
    # with the types right, constraints across fields (and a dataclass's own checks) join the same report
    cfg = load_config(tiny, ["trainer.optimizer.betas=[0.9,1.5]", "trainer.batching.mini_batches=7",
                             "model.decoder.patchh=3"])
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
    assert [p.split(":")[0] for p in error.value.problems] == ["trainer.batching.mini_batches", "trainer.optimizer",
                                                               "model.decoder.patchh"]
    assert "Invalid beta parameter at index 1: 1.5" in error.value.problems[1]
    cfg = load_config(tiny, ["rollout.sampling.top_p=2", "model.decoder.patchh=3"])
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
    assert [p.split(":")[0] for p in error.value.problems] == ["rollout.sampling", "model.decoder.patchh"]
