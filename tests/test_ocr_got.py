"""The GOT-OCR2.0 OCR backend (`rewards.got_ocr2`) on a tiny random GOT-OCR2 built here.

The model is transformers' real `GotOcr2ForConditionalGeneration` at toy widths (a 64 px SAM-style vision tower,
a 2-layer Qwen2 decoder) with a real `GotOcr2Processor`: a byte-level tokenizer with GOT's special tokens,
built offline, and the real image processor. It is saved with `save_pretrained` and loaded as the released
`stepfun-ai/GOT-OCR-2.0-hf` folder would be. Its weights are random (the 560M-parameter model cannot exist
here), so its readings are noise: the tests check batching, confidences, loading, errors and wiring, not OCR
quality.
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
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from core.components import instantiate
from core.config import ConfigError
from rewards.got_ocr2 import GotOcr2Backend
from rewards.ocr import OCRReward
from rewards.ocr_backends import build_backend

ROOT = Path(__file__).resolve().parents[1]
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"]


def save_tiny_got_ocr2(folder: Path, seed: int = 0) -> Path:
    """Write a random GOT-OCR2 -hf folder (config, weights, tokenizer, processor) to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GotOcr2Config, GotOcr2ForConditionalGeneration, GotOcr2Processor, PreTrainedTokenizerFast
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS)
    processor = GotOcr2Processor(GotOcr2ImageProcessorPil(size={"height": 64, "width": 64}), tokenizer)
    # A wide initialisation (0.3, not GOT's 1e-10 for the vision tower) so that different images read differently.
    config = GotOcr2Config(
        vision_config=dict(hidden_size=16, output_channels=8, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=32,
                           initializer_range=0.3),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.3),
        image_token_index=tokenizer.convert_tokens_to_ids("<imgpad>"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GotOcr2ForConditionalGeneration(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def got_folder(tmp_path_factory) -> Path:
    return save_tiny_got_ocr2(tmp_path_factory.mktemp("got") / "GOT-OCR-2.0-hf")


def images(n: int) -> list[np.ndarray]:
    """Random uint8 RGB images of different sizes (the processor resizes them all to the model's input)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 9 * i, 56 - 5 * i, 3), dtype=np.uint8) for i in range(n)]


def test_batched_reads_equal_one_by_one_reads(got_folder):
    backend = GotOcr2Backend(str(got_folder), device="cpu", batch_size=2, max_new_tokens=6)
    assert backend.tokens_per_image == 4  # 64 px / 8 px patches = 8 x 8, halved twice by the projector
    batch = images(3)
    together = backend.read_batch(batch)  # a batch of 2, then one of 1
    alone = [backend.read(image) for image in batch]
    assert [[text for text, _ in lines] for lines in together] == [[text for text, _ in lines] for lines in alone]
    for a, b in zip(together, alone, strict=True):
        assert [c for _, c in a] == pytest.approx([c for _, c in b], abs=1e-5)
    assert len({tuple(lines) for lines in together}) == 3  # the images read differently: the image is seen


def test_confidence_is_the_mean_probability_of_the_generated_tokens(got_folder):
    """Recomputed by one teacher-forced forward pass over prompt + reading, independent of `generate`."""
    backend = GotOcr2Backend(str(got_folder), device="cpu", max_new_tokens=5)
    image = images(1)[0]
    inputs = backend.processor(images=[image], return_tensors="pt", num_image_tokens=backend.tokens_per_image)
    out = backend.model.generate(**inputs, do_sample=False, max_new_tokens=5, eos_token_id=backend.end_ids,
                                 pad_token_id=backend.pad_id)
    prompt = inputs["input_ids"].shape[1]
    reading = out[0, prompt:]
    assert not torch.isin(reading, torch.tensor(backend.end_ids)).any()  # cut at max_new_tokens: all 5 count
    with torch.no_grad():
        logits = backend.model(input_ids=out, attention_mask=torch.ones_like(out),
                               pixel_values=inputs["pixel_values"]).logits[0, prompt - 1:-1]
    expected = logits.softmax(-1).gather(-1, reading[:, None]).mean().item()
    lines = backend.read(image)
    assert lines and all(confidence == pytest.approx(expected, abs=1e-5) for _, confidence in lines)
    text = backend.processor.tokenizer.decode(reading, skip_special_tokens=True)
    assert [t for t, _ in lines] == [line.strip() for line in text.splitlines() if line.strip()]


def test_the_end_token_ends_a_reading_and_counts_in_its_confidence(got_folder, tmp_path):
    """A model whose output head always favours <|im_end|>: the reading is empty (no line), after one token."""
    folder = tmp_path / "ends"
    shutil.copytree(got_folder, folder)
    weights = load_file(folder / "model.safetensors")
    end = GotOcr2Backend(str(folder), device="cpu").end_ids
    name = next(k for k in weights if k.endswith("embed_tokens.weight"))  # tied to the output head
    weights[name][end[0]] = 50 * weights[name].abs().max()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    backend = GotOcr2Backend(str(folder), device="cpu", max_new_tokens=4)
    assert backend.read(images(1)[0]) == []
    assert [t for t, _ in backend._generate(images(1))] == [""]


def write_config(folder: Path, **extra) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **extra}))


@pytest.mark.parametrize("damage", ["missing", "no config", "another model", "corrupt weights", "missing weights"])
def test_a_bad_folder_fails_at_construction_naming_the_key(got_folder, tmp_path, damage):
    folder = tmp_path / "bad"
    shutil.copytree(got_folder, folder)
    weights = folder / "model.safetensors"
    if damage == "missing":
        shutil.rmtree(folder)
    elif damage == "no config":
        (folder / "config.json").unlink()
    elif damage == "another model":
        write_config(folder, model_type="qwen2")
    elif damage == "corrupt weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        state = load_file(weights)
        del state[next(k for k in state if "vision_tower" in k)]
        save_file(state, weights, metadata={"format": "pt"})
    expected = {"missing": "file or folder not found", "no config": "no config.json",
                "another model": "holds a 'qwen2' model", "corrupt weights": "could not load GOT-OCR2",
                "missing weights": "missing_keys"}[damage]
    node = OmegaConf.create({"_component_": "rewards.ocr.OCRReward", "backends": [{"name": "got_ocr2",
                                                                                   "path": str(folder)}]})
    with pytest.raises(ConfigError, match=rf"rewards\.ocr: \w+: got_ocr2\.path: .*{expected}"):
        instantiate(node, "rewards.ocr")


def test_a_repo_id_resolves_in_the_hf_cache_offline_only(got_folder, tmp_path, monkeypatch):
    """Through `huggingface_hub.snapshot_download(local_files_only=True)`; an uncached id names the key."""
    import huggingface_hub

    cache = hf_cache(tmp_path / "hub", got_folder)
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: real(*a, cache_dir=cache, **k))
    backend = GotOcr2Backend("stepfun-ai/GOT-OCR-2.0-hf", device="cpu", max_new_tokens=3)
    assert backend.read_batch(images(2)) == GotOcr2Backend(str(got_folder), max_new_tokens=3).read_batch(images(2))
    with pytest.raises(FileNotFoundError, match=r"got_ocr2\.path: nobody/nothing is not in the local Hugging Face"):
        GotOcr2Backend("hf://nobody/nothing")


def hf_cache(cache: Path, folder: Path) -> Path:
    """A Hugging Face hub cache holding `folder` as stepfun-ai/GOT-OCR-2.0-hf's main snapshot."""
    repo = cache / "models--stepfun-ai--GOT-OCR-2.0-hf"
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_in_the_ocr_reward_with_another_backend(got_folder):
    """got_ocr2 under `combine: union` with RapidOCR, on the reward's device and dtype; the reward hands each
    backend the images it reads in one call, so GOT reads them as one batch."""
    reward = OCRReward(backends=[{"name": "got_ocr2", "path": str(got_folder), "max_new_tokens": 4}, "rapidocr"],
                       combine="union", min_confidence=0.0, device="cpu", dtype="bfloat16")
    got = reward.backends["got_ocr2"]
    assert got.device == torch.device("cpu") and next(got.model.parameters()).dtype == torch.bfloat16
    calls = []
    batched = got.read_batch
    got.read_batch = lambda arrays: calls.append(len(arrays)) or batched(arrays)
    batch = images(3)
    out = reward(batch, ["p"] * 3, [{"text": ["HELLO"]}, {"text": []}, {"text": ["STOP"]}])
    assert calls == [2]  # the image without a target is not read
    readings = batched([batch[0], batch[2]])
    assert out.details["ocr_text/got_ocr2"] == ["\n".join(t for t, _ in readings[0]), "",
                                                "\n".join(t for t, _ in readings[1])]
    assert out.scores[1].isnan() and 0.0 <= out.scores[0] <= 1.0 and 0.0 <= out.scores[2] <= 1.0


def test_build_backend_passes_the_reward_settings_only_where_they_apply(got_folder):
    got = build_backend({"name": "got_ocr2", "path": str(got_folder), "dtype": "float32"}, 960, "cpu", "float16")
    assert next(got.model.parameters()).dtype == torch.float32  # the spec's own dtype wins
    rapid = build_backend("rapidocr", 640, "cuda", "bfloat16")  # no device or dtype for a PP-OCR engine
    assert rapid.engine is not None


def test_rewards_score_runs_got_ocr2_from_the_hf_cache(got_folder, tmp_path):
    """`python -m rewards.score` in a subprocess, its config naming the repo id; HF_HUB_CACHE points at a cache
    holding the tiny folder and HF_HUB_OFFLINE is set, so nothing could be downloaded."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_sample_images import make_samples

    manifest = make_samples(tmp_path / "sample")
    cache = hf_cache(tmp_path / "hub", got_folder)
    config = {"rewards": {"ocr": {"_component_": "rewards.ocr.OCRReward", "min_confidence": 0.0, "device": "cpu",
                                  "backends": [{"name": "got_ocr2", "path": "stepfun-ai/GOT-OCR-2.0-hf",
                                                "max_new_tokens": 4}]}},
              "ensemble": {"weights": {"ocr": 1.0}, "normalize": "range"},
              "gating": {"default": [], "needs_text": ["ocr"],
                         "rules": [{"name": "text", "requires_text": True, "add": ["ocr"]}]}}
    (tmp_path / "got.yaml").write_text(json.dumps(config))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rewards.score", "--images", str(manifest.parent), "--prompts", str(manifest),
               "--config", str(tmp_path / "got.yaml"), "--out", str(out), "--batch-size", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    signs = [r for r in records if r["image"].startswith(("sign", "poster"))]
    assert len(records) == 9 and signs and all(r["error"] is None for r in records)
    assert all(r["ocr"] is not None for r in signs) and all(r["ocr"] is None for r in records if r not in signs)
    backend = GotOcr2Backend(str(got_folder), device="cpu", max_new_tokens=4)
    from PIL import Image

    for record in signs:
        lines = backend.read(np.asarray(Image.open(manifest.parent / record["image"]).convert("RGB")))
        assert record["details"]["ocr"]["ocr_text/got_ocr2"] == "\n".join(t for t, _ in lines)


def test_the_plan_asks_for_got_ocr2s_560m_parameters():
    """`rl.plan` on the paper config with X-Omni's OCR backends and a GPU share for OCR: the reward's memory is
    GOT-OCR2.0's 560.5M bfloat16 parameters plus one batch through its vision tower."""
    import contextlib
    import io

    from rl.distributed.memory import VIT_WIDTHS
    from rl.plan import main

    overrides = ["rewards.ocr.backends=[{name: got_ocr2, dtype: bfloat16}, rapidocr]",
                 "reward_workers.resources.ocr={num_gpus: 0.05}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(ROOT / "configs" / "xomni.yaml"), *overrides, "--nodes", "1", "--gpus-per-node", "8",
                     "--gpu-memory-gib", "80", "--json"])
    assert code == 0
    parts = [d["parts"]["reward ocr"] for d in json.loads(out.getvalue())["devices"] if "reward ocr" in d["parts"]]
    weights = 560_528_640 * 2  # GotOcr2Config's defaults, the released model (about 560M)
    assert parts == [weights + 8 * (1024 // 16) ** 2 * 768 * VIT_WIDTHS * 2]  # batch 8 of 4096 tokens, 768 wide
