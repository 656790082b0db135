"""`python -m rl.generate`: images + manifest from the tiny config, resume, batch-size invariance, the offline
scorer on its output, refusals, and configs/xomni.yaml with the real X-Omni decoder (tiny saved folders) and
--checkpoint.

The CLI runs in a subprocess once (the tiny config as shipped); the other runs call `main(argv)` in-process.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.components import instantiate
from core.config import load_config
from rl.decoder import to_uint8_images
from rl.generate import main
from rl.model.sampler import SamplingParams, sample_image_tokens
from rl.model.tiny import tiny_policy, tiny_tokenizer
from rl.model.tokenizer import PromptFormat
from rl.seeding import sample_seed
from rl.state.checkpoint import save_checkpoint
from rl.state.learner_checkpoint import LEARNER_DIR, save_learner

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PROMPTS = [
    {"prompt": 'A red sign that says "STOP".', "task": "text_rendering", "text": ["STOP"], "category": "sign"},
    {"prompt": 'A neon sign reading "OPEN".', "text": ["OPEN"]},
    {"prompt": "A quiet lake at dawn."},
]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory, prompt_file):
    """3 prompts x 2 samples from configs/tiny.yaml, by the CLI in a subprocess."""
    out = tmp_path_factory.mktemp("gen") / "out"
    command = [sys.executable, "-m", "rl.generate", TINY, "--prompts", str(prompt_file), "--out", str(out),
               "--samples-per-prompt", "2", "--batch-size", "4", "--save-tokens", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "img/s" in done.stderr
    return out


def test_writes_images_and_a_manifest(generated):
    lines = read_jsonl(generated / "manifest.jsonl")
    assert sorted(line["image"] for line in lines) == [f"images/{i:05d}_{k}.png" for i in range(3) for k in range(2)]
    by_image = {line["image"]: line for line in lines}
    stop, plain = by_image["images/00000_1.png"], by_image["images/00002_0.png"]
    assert (stop["prompt"], stop["task"], stop["text"], stop["category"]) == (PROMPTS[0]["prompt"], "text_rendering",
                                                                              ["STOP"], "sign")
    assert (stop["prompt_index"], stop["sample"], stop["seed"]) == (0, 1, 0)
    assert "text" not in plain and "task" not in plain and plain["prompt"] == PROMPTS[2]["prompt"]
    assert all(line["valid"] is True for line in lines)
    # Each PNG is the tiny config's decoder applied to the saved codes, with the documented decoder seed.
    cfg = load_config(TINY)
    decoder, grid = instantiate(cfg.model.decoder, "model.decoder"), tuple(cfg.rollout.grid)
    for line in lines:
        codes = np.load(generated / line["tokens"])
        assert codes.shape == grid and codes.dtype == np.int32
        seed = sample_seed(0, 0, line["prompt_index"], line["sample"], "decoder")
        decoded = decoder(torch.from_numpy(codes).reshape(1, -1).long(), grid, [line["prompt"]], [seed])
        assert np.array_equal(pixels(generated / line["image"]), to_uint8_images(decoded.images)[0])
    assert len({np.load(generated / line["tokens"]).tobytes() for line in lines}) == 6  # every sample differs


def test_rerun_draws_only_what_is_missing(generated, tmp_path, prompt_file, capsys):
    out = tmp_path / "out"
    shutil.copytree(generated, out)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    manifest.write_text("".join(lines[:4]) + lines[4][:20], encoding="utf-8")  # a crash mid-line
    kept = {line["image"]: os.stat(out / line["image"]).st_mtime_ns
            for line in read_jsonl(generated / "manifest.jsonl")[:4]}
    args = [TINY, "--prompts", str(prompt_file), "--out", str(out), "--samples-per-prompt", "2", "--save-tokens"]
    assert main(args) == 0
    assert "2 images to draw, 4 already" in capsys.readouterr().out
    assert read_jsonl(manifest) == read_jsonl(generated / "manifest.jsonl")
    assert all(os.stat(out / image).st_mtime_ns == mtime for image, mtime in kept.items())
    assert main(args) == 0
    assert "0 images to draw, 6 already" in capsys.readouterr().out


def test_same_seed_same_images_at_any_batch_size(generated, tmp_path, prompt_file):
    out = tmp_path / "out"
    assert main([TINY, "--prompts", str(prompt_file), "--out", str(out), "--samples-per-prompt", "2",
                 "--batch-size", "1"]) == 0
    for line in read_jsonl(generated / "manifest.jsonl"):
        assert np.array_equal(pixels(out / line["image"]), pixels(generated / line["image"])), line["image"]
    other = tmp_path / "other_seed"
    assert main([TINY, "--prompts", str(prompt_file), "--out", str(other), "--seed", "1"]) == 0
    assert not np.array_equal(pixels(other / "images/00000_0.png"), pixels(out / "images/00000_0.png"))


def test_rewards_score_reads_the_output(generated, tmp_path):
    out = tmp_path / "scores"
    command = [sys.executable, "-m", "rewards.score", "--images", str(generated), "--prompts",
               str(generated / "manifest.jsonl"), "--config", str(ROOT / "configs" / "rewards.yaml"),
               "--only", "quality,ocr", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert len(records) == 6 and all(r["error"] is None and r["quality"] is not None for r in records.values())
    # The carried `text` column makes the OCR reward apply to the text prompts only.
    assert all((r["ocr"] is not None) == (not k.startswith("images/00002")) for k, r in records.items())


def test_other_settings_into_the_same_folder_are_refused(generated, tmp_path, prompt_file, capsys):
    out = tmp_path / "out"
    shutil.copytree(generated, out)
    assert main([TINY, "--prompts", str(prompt_file), "--out", str(out), "--seed", "3",
                 "rollout.sampling.temperature=0.5"]) == 2
    assert "other sampling, seed" in capsys.readouterr().err
    assert read_jsonl(out / "manifest.jsonl") == read_jsonl(generated / "manifest.jsonl")


def test_every_problem_is_reported_before_anything_loads(tmp_path, capsys):
    out = tmp_path / "out"
    incomplete = tmp_path / "step_00000003"
    (incomplete / LEARNER_DIR).mkdir(parents=True)
    code = main([TINY, "--prompts", str(tmp_path / "missing.jsonl"), "--out", str(out), "--samples-per-prompt", "0",
                 "--grid", "0", "3", "--checkpoint", str(incomplete), "rollout.sampling.top_p=0",
                 "model.decoder.patch_size=3"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    for expected in ("6 problem(s)", "--samples-per-prompt: must be >= 1", "--grid: both sides must be >= 1",
                     "rollout.sampling: top_p must be in (0, 1]", "--prompts: paths[0]: file or folder not found",
                     "model.decoder.patch_size: unknown argument", "incomplete training checkpoint"):
        assert expected in err, expected


def test_a_checkpoint_that_does_not_exist_is_named_with_its_resolved_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([TINY, "--prompts", str(tmp_path / "p.txt"), "--out", "out", "--checkpoint", "runs/nope/step_1"])
    assert code == 2
    assert f"--checkpoint: {tmp_path / 'runs/nope/step_1'} does not exist" in capsys.readouterr().err


def test_a_training_checkpoint_that_does_not_verify_is_refused_naming_the_file(tmp_path, capsys):
    def write(path):
        (path / LEARNER_DIR).mkdir()
        (path / LEARNER_DIR / "__0_0.distcp").write_bytes(b"shard" * 100)

    checkpoint = save_checkpoint(tmp_path / "run", 3, write, keep=1)
    (checkpoint / LEARNER_DIR / "__0_0.distcp").unlink()
    out = tmp_path / "out"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n")
    assert main([TINY, "--prompts", str(prompts), "--out", str(out), "--checkpoint", str(checkpoint)]) == 2
    assert f"--checkpoint: checkpoint file {checkpoint / LEARNER_DIR / '__0_0.distcp'} is missing" in \
        capsys.readouterr().err
    assert not out.exists()


def test_paper_config_with_the_real_decoder_and_a_training_checkpoint(tmp_path):
    """configs/xomni.yaml as shipped, its paths set to a tiny X-Omni folder (policy + tokenizer + the decoder's
    files from save_tiny_folders) and a tiny FLUX folder; the policy comes from a training checkpoint."""
    from rl.decoder.tiny import save_tiny_folders, tiny_xomni_decoder

    xomni, flux = save_tiny_folders(tiny_xomni_decoder(num_inference_steps=2), tmp_path)
    vision = json.loads(Path(xomni, "config.json").read_text())["vision_config"]
    tiny_policy(seed=0).save_pretrained(xomni)
    config = json.loads(Path(xomni, "config.json").read_text())
    Path(xomni, "config.json").write_text(json.dumps({**config, "vision_config": vision}))
    tiny_tokenizer().save_pretrained(xomni)
    trained = tiny_policy(seed=7)
    checkpoint = save_checkpoint(tmp_path / "run", 12, lambda d: save_learner(
        d, trained, torch.optim.AdamW(trained.parameters()), {"trained": {"lora": None}}), keep=1)
    one_prompt = tmp_path / "one.txt"
    one_prompt.write_text(PROMPTS[0]["prompt"] + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main([str(ROOT / "configs" / "xomni.yaml"), "--prompts", str(one_prompt), "--out", str(out),
                 "--samples-per-prompt", "2", "--grid", "2", "2", "--checkpoint", str(checkpoint), "--dtype",
                 "float32", "--save-tokens", f"paths.xomni={xomni}", f"paths.flux={flux}"]) == 0
    lines = read_jsonl(out / "manifest.jsonl")
    assert [line["image"] for line in lines] == ["images/00000_0.png", "images/00000_1.png"]
    assert all(line["valid"] and pixels(out / line["image"]).shape == (32, 32, 3) for line in lines)
    assert not np.array_equal(pixels(out / lines[0]["image"]), pixels(out / lines[1]["image"]))
    # The codes are the checkpoint policy's draws (X-Omni's sampling defaults) with the documented seeds.
    batch = PromptFormat(tiny_tokenizer(), trained.config.vocab_size).encode([PROMPTS[0]["prompt"]] * 2, (2, 2))
    seeds = [sample_seed(0, 0, 0, k, "policy") for k in range(2)]
    expected = sample_image_tokens(trained, batch, SamplingParams(), seeds).tokens
    saved = np.stack([np.load(out / line["tokens"]).reshape(-1) for line in lines])
    assert np.array_equal(saved, expected.numpy())
