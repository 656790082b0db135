"""`python -m rl.export`: a training checkpoint + the base X-Omni folder -> a complete X-Omni folder; without --base,
the base named by the run's saved config (a tiny run's component policy built again).

The base is a tiny policy saved in shards (so the LM weights are an index + shards, as X-Omni ships them),
its config.json extended with X-Omni's remote-code and vision keys, a tokenizer, and stand-in vision files
(their content does not matter: they must be copied byte for byte). The checkpoint is written by the learner's
own save (torch.distributed.checkpoint, one process): every weight but the frozen text head, and AdamW state.
(Checkpoints of two learner ranks, and of LoRA, are exported in test_train_actors.py and test_lora.py.)
"""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from core.config import load_config
from rl.export import export, main
from rl.model.policy import XOmniPolicy
from rl.model.tiny import tiny_policy, tiny_tokenizer
from rl.model.tokenizer import load_tokenizer
from rl.state.checkpoint import MARKER, save_checkpoint
from rl.state.learner_checkpoint import LEARNER_DIR, save_learner

ROOT = Path(__file__).resolve().parents[1]
EXTRA_CONFIG = {"auto_map": {"AutoModelForCausalLM": "modeling_xomni.XOmniForCausalLM"},
                "vision_config": {"encoder": {"siglip_path": "vit.safetensors", "projector_path": "vq.pth"},
                                  "decoder": {"model_path": "diffusers"}}}
VISION_FILES = {"modeling_xomni.py": b"# X-Omni's model code\n", "vq.pth": b"projector", "vit.safetensors": b"vit",
                "diffusers/config.json": b"{}", "diffusers/diffusion_pytorch_model.safetensors": b"flux"}


def make_base(folder: Path, dtype: str | None = None) -> Path:
    tiny_policy(seed=0).save_pretrained(folder, max_shard_size="200KB")
    config = json.loads((folder / "config.json").read_text())
    config.update(EXTRA_CONFIG)
    if dtype:
        config["torch_dtype"] = dtype
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tiny_tokenizer().save_pretrained(folder)
    for name, content in VISION_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def make_checkpoint(run_dir: Path, policy: XOmniPolicy, step: int = 40) -> Path:
    policy.lm_head.requires_grad_(False)  # frozen, as in training: not in the checkpoint
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad])
    state = {"trained": {"lora": None, "freeze_text_embedding": False}}
    return save_checkpoint(run_dir, step, lambda d: save_learner(d, policy, optimizer, state), keep=1)


@pytest.fixture(scope="module")
def trained():
    return tiny_policy(seed=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("base") / "X-Omni-SFT")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, trained):
    return make_checkpoint(tmp_path_factory.mktemp("run"), trained)


def test_export_writes_the_trained_weights_into_a_copy_of_the_base(base, checkpoint, trained, tmp_path):
    out = tmp_path / "X-Omni-RL"
    command = [sys.executable, "-m", "rl.export", "--checkpoint", str(checkpoint), "--base", str(base),
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=300, umask=0o022)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(base.glob("model-*.safetensors"))) > 1  # the base really is sharded
    assert not list(out.glob("model-*.safetensors")) and (out / "model.safetensors").is_file()
    # Everything but the LM weights is the base's, byte for byte, config.json included.
    for name in [*VISION_FILES, "config.json", "tokenizer.json", "tokenizer_config.json"]:
        assert filecmp.cmp(base / name, out / name, shallow=False), name
    assert json.loads((out / "export_info.json").read_text())["step"] == 40
    assert sorted(p.name for p in out.parent.iterdir()) == ["X-Omni-RL"]  # no temporary folder left
    assert {p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()} == {0o644}  # the umask, not 0600
    exported = XOmniPolicy.from_pretrained(out)
    assert exported.config.auto_map == EXTRA_CONFIG["auto_map"]
    initial = XOmniPolicy.from_pretrained(base)
    for key, value in trained.state_dict().items():
        expected = initial.lm_head.weight if key == "lm_head.weight" else value
        assert torch.equal(exported.state_dict()[key], expected), key
    assert not torch.equal(exported.mm_head.weight, initial.mm_head.weight)
    assert load_tokenizer(out).get_vocab() == tiny_tokenizer().get_vocab()


def test_weights_take_the_dtype_the_base_declares(tmp_path, checkpoint, trained):
    base = make_base(tmp_path / "base", dtype="bfloat16")
    out = export(checkpoint, base, tmp_path / "out")
    with safe_open(out / "model.safetensors", framework="pt") as f:
        weight = f.get_tensor("mm_head.weight")
    assert weight.dtype == torch.bfloat16 and torch.equal(weight, trained.mm_head.weight.bfloat16())


def test_incomplete_checkpoint_is_refused(base, trained, tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "run", trained)
    (checkpoint / MARKER).unlink()
    assert main(["--checkpoint", str(checkpoint), "--base", str(base), "--out", str(tmp_path / "out")]) == 2
    assert "not a complete training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_a_truncated_shard_is_refused_naming_it(base, trained, tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "run", trained)
    shard = checkpoint / LEARNER_DIR / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    assert main(["--checkpoint", str(checkpoint), "--base", str(base), "--out", str(tmp_path / "out")]) == 2
    assert f"--checkpoint: checkpoint file {shard} is 1000 bytes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_policy_of_another_shape_is_refused(base, tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "run", tiny_policy(seed=1, intermediate_size=96))
    assert main(["--checkpoint", str(checkpoint), "--base", str(base), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "its trained tensors do not fit the base model (18 differ" in err
    assert "model.layers.0.mlp.down_proj.weight: checkpoint [64, 96], base [64, 128]" in err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite_and_must_not_overlap_the_inputs(base, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    args = ["--checkpoint", str(checkpoint), "--base", str(base), "--out", str(out)]
    assert main(args) == 2
    assert "exists and is not empty (pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert main(["--checkpoint", str(checkpoint), "--base", str(base), "--out", str(base / "rl"), "--overwrite"]) == 2
    assert "overlaps --base" in capsys.readouterr().err


TINY_POLICY = {"image_vocab_size": 40, "mm_vocab_size": 128, "initializer_range": 0.1}  # configs/tiny.yaml's


def make_run(run_dir: Path, policy: XOmniPolicy, config: Path) -> Path:
    """A run.dir as rl.train leaves it: checkpoints/step_N with the learner's files and the resolved config."""
    policy.lm_head.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad])
    state = {"trained": {"lora": None, "freeze_text_embedding": False}}

    def write(directory):
        save_learner(directory, policy, optimizer, state)
        OmegaConf.save(load_config(config), directory / "config.yaml", resolve=True)

    save_checkpoint(run_dir, 2, write, keep=1)
    return run_dir


def test_a_tiny_run_exports_without_base_from_its_saved_config(tmp_path, capsys):
    """The demo's case: model.policy is a component (the seeded tiny_policy), no folder to copy; the base is built
    again from the run's saved config, so its frozen weights are the ones the run started from."""
    trained = tiny_policy(seed=1, **TINY_POLICY)
    run = make_run(tmp_path / "demo", trained, ROOT / "configs" / "tiny.yaml")
    out = tmp_path / "demo" / "export"
    assert main(["--checkpoint", str(run), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    exported, start = XOmniPolicy.from_pretrained(out), tiny_policy(seed=0, **TINY_POLICY)
    for key, value in trained.state_dict().items():
        expected = start.lm_head.weight if key == "lm_head.weight" else value
        assert torch.equal(exported.state_dict()[key], expected), key
    assert load_tokenizer(out).get_vocab() == tiny_tokenizer().get_vocab()
    info = json.loads((out / "export_info.json").read_text())
    assert info["step"] == 2 and "rl.model.tiny.tiny_policy" in info["base"]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["checkpoints", "export"]  # no temporary base


def test_missing_paths_are_named_with_their_flag_or_key_and_resolved_path(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--checkpoint", "runs/nope", "--out", "out"]) == 2
    assert f"--checkpoint: {tmp_path / 'runs/nope'} does not exist" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--base", "sft", "--out", "out"]) == 2
    assert f"--base: {tmp_path / 'sft'} does not exist" in capsys.readouterr().err
    pretrained = tmp_path / "pretrained.yaml"  # a run of a policy folder that is gone since
    pretrained.write_text(f"_base_: {ROOT / 'configs' / 'tiny.yaml'}\n_remove_: [model.policy]\nmodel:\n  policy:\n"
                          "    _component_: rl.model.policy.XOmniPolicy.from_pretrained\n    path: ckpt/X-Omni-SFT\n")
    run = make_run(tmp_path / "run", tiny_policy(seed=1), pretrained)
    assert main(["--checkpoint", str(run), "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert f"model.policy.path (in {run / 'checkpoints'}" in err
    assert f"{tmp_path / 'ckpt/X-Omni-SFT'} does not exist" in err
    assert not (tmp_path / "out").exists()
