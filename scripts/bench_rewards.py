"""Throughput of each reward, batched against one image per call (the baseline, measured in the same run).

    python scripts/bench_rewards.py [--images 16] [--batch-size 16] [--device auto]

Prints one JSON object: images/s per reward batched and one by one, their ratio; OCR on batches whose images
each stand 4 times (read once per call) against distinct ones; RapidOCR with one onnxruntime thread against its
default (one per core), in wall and CPU milliseconds per image, on the signs and on configs/tiny.yaml's glyph rows;
and the whole `RewardEnsemble` (gating, fault handling, combination) against the sum of its rewards' batched times.
Inputs are the project's sample images (scripts/make_sample_images.py): signs with their target text for
OCR, photos for the others. The CLIP-based rewards (HPSv2, CLIP alignment) get random weights: a tiny
open_clip architecture on CPU, the real ViT-H-14 / ViT-L-14 shapes when CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.components import instantiate
from core.config import load_config
from rewards.clip_align import CLIPAlignReward
from rewards.combine import EnsembleConfig
from rewards.ensemble import RewardEnsemble
from rewards.gating import GatingConfig, quoted_spans
from rewards.hpsv2 import HPSv2Reward
from rewards.ocr import OCRReward
from rewards.ocr_backends import RapidOCRBackend
from rewards.quality import QualityReward

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample_images import make_samples  # noqa: E402

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def clip_weights(architecture: str, folder: Path) -> str:
    """A random-weights open_clip checkpoint for `architecture` ("bench-tiny-clip" is registered here)."""
    import open_clip  # after `rewards`, whose import applies the torchvision fix open_clip needs

    if architecture == "bench-tiny-clip" and architecture not in open_clip.list_models():
        config = folder / f"{architecture}.json"
        config.write_text(json.dumps(TINY))
        open_clip.add_model_config(str(config))
    path = folder / f"{architecture}.pt"
    torch.save({"state_dict": open_clip.create_model(architecture).state_dict()}, path)
    return str(path)


def build_rewards(device: str, folder: Path) -> dict[str, object]:
    cuda = torch.device(device).type == "cuda"
    hps_arch, clip_arch = ("ViT-H-14", "ViT-L-14") if cuda else ("bench-tiny-clip", "bench-tiny-clip")
    dtype = "bfloat16" if cuda else "float32"
    return {
        "hpsv2": HPSv2Reward(clip_weights(hps_arch, folder), model=hps_arch, device=device, dtype=dtype),
        "clip_align": CLIPAlignReward(clip_arch, clip_weights(clip_arch, folder), device=device, dtype=dtype),
        "quality": QualityReward(),
        "ocr": OCRReward(backends=["rapidocr"], cache_size=0),  # every chunk read: the warm-up chunk comes again
    }


def load_inputs(folder: Path, n: int) -> dict[str, tuple[list, list[str], list[dict]]]:
    """Per kind ("text", "photo"): n images (the samples over again, each made distinct), prompts and metadata."""
    rows = [json.loads(line) for line in make_samples(folder).read_text().splitlines()]
    inputs = {}
    for kind in ("text", "photo"):
        chosen = [r for r in rows if r["category"] == kind]
        chosen = [chosen[i % len(chosen)] for i in range(n)]
        images = [Image.open(folder / r["image"]).convert("RGB") for r in chosen]
        for i, image in enumerate(images):  # one corner pixel apart: OCR reads identical images once per call
            image.putpixel((0, 0), (i % 256, i // 256 % 256, 0))
        prompts = [r["prompt"] for r in chosen]
        # the sign prompts quote their text: the OCR targets, as the gates pass them
        metadata = [{"text": quoted_spans(p)} for p in prompts]
        inputs[kind] = (images, prompts, metadata)
    return inputs


def images_per_s(call, images, prompts, metadata, batch_size: int) -> float:
    """Throughput of `call` over all images in chunks of `batch_size` (after one warm-up chunk)."""
    call(images[:batch_size], prompts[:batch_size], metadata[:batch_size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        call(images[i:i + batch_size], prompts[i:i + batch_size], metadata[i:i + batch_size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def ocr_ms_per_image(backend, images: list) -> dict[str, float]:
    """Wall and CPU (this process, all threads) milliseconds per image for `backend.read`, after one warm-up read."""
    arrays = [np.asarray(image) for image in images]
    backend.read(arrays[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for array in arrays:
        backend.read(array)
    n = len(arrays)
    return {"wall_ms": round((time.perf_counter() - wall) * 1e3 / n, 1),
            "cpu_ms": round((time.process_time() - cpu) * 1e3 / n, 1)}


def glyph_rows(n: int) -> list:
    """n rows of 3 random glyphs as configs/tiny.yaml's demo decoder draws them (48 x 16 px)."""
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    decoder = instantiate(cfg.model.decoder, "model.decoder")
    tokens = torch.randint(0, 40, (n, 3), generator=torch.Generator().manual_seed(0))
    pixels = decoder(tokens, (1, 3), [""] * n, list(range(n))).images
    return [(image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for image in pixels]


def ocr_threads(signs: list, n: int) -> dict[str, dict]:
    """RapidOCR with 1 onnxruntime thread against its default, on the sample signs and on demo glyph rows."""
    report = {}
    for kind, images in (("signs", signs), ("glyph_rows", glyph_rows(n))):
        default, one = (ocr_ms_per_image(RapidOCRBackend(threads=t), images) for t in (None, 1))
        report[kind] = {"default_threads": default, "one_thread": one,
                        "cpu_ratio": round(one["cpu_ms"] / default["cpu_ms"], 2),
                        "wall_ratio": round(one["wall_ms"] / default["wall_ms"], 2)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help='"auto": CUDA when available')
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = load_inputs(folder / "samples", args.images)
        rewards = build_rewards(device, folder)
        report = {}
        for name, reward in rewards.items():
            batch = inputs["text" if name == "ocr" else "photo"]
            batched = images_per_s(reward, *batch, args.batch_size)
            single = images_per_s(reward, *batch, 1)
            report[name] = {"batched_img_s": round(batched, 2), "one_by_one_img_s": round(single, 2),
                            "speedup": round(batched / single, 2)}
        # OCR on a batch in which each image stands 4 times (a group that wrote the same row) against distinct ones.
        images, prompts, metadata = inputs["text"]
        repeats = [[column[i // 4] for i in range(len(images))] for column in (images, prompts, metadata)]
        distinct, repeated = (images_per_s(rewards["ocr"], *b, args.batch_size) for b in (inputs["text"], repeats))
        report["ocr_4x_repeats"] = {"distinct_img_s": round(distinct, 2), "repeated_img_s": round(repeated, 2),
                                    "speedup": round(repeated / distinct, 2)}
        report["ocr_threads"] = ocr_threads(inputs["text"][0], args.images)
        # The ensemble on text prompts (all four rewards apply): its cost against its rewards' own.
        ensemble = RewardEnsemble(rewards, EnsembleConfig(weights=dict.fromkeys(rewards, 1.0),
                                                          batch_size=args.batch_size),
                                  GatingConfig(needs_text=["ocr"]))
        text = inputs["text"]
        whole = images_per_s(ensemble, text[0], text[1], text[2], args.batch_size)
        parts = 1 / sum(1 / images_per_s(r, *text, args.batch_size) for r in rewards.values())
        report["ensemble"] = {"img_s": round(whole, 2), "sum_of_rewards_img_s": round(parts, 2),
                              "overhead": round(parts / whole - 1, 3)}
    print(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                      "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "images": args.images,
                      "batch_size": args.batch_size, "rewards": report}, indent=2))


if __name__ == "__main__":
    main()
