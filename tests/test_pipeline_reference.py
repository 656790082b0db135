"""The project's decoder against X-Omni's OWN pipeline (`FluxPipelineWithSigLIP`, En and Zh), end to end.

tests/data/xomni_pipeline/ holds images that X-Omni's pipeline classes produced, run unchanged in a separate
venv with X-Omni's versions (diffusers 0.34.0, transformers 4.51.3; `make_fixture.py` there, see its README),
on tiny random folders stored beside them (VAE, FLUX.1's scheduler config, CLIP + T5 with offline tokenizers)
and the tiny decoders X-Omni's model files wrote (tests/data/xomni_tiny, tests/data/xomni_zh_tiny). One image
per X-Omni call, each from its own seeded generator; the project decodes all of a case's images in one call.
Nothing here imports X-Omni's code.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTokenizer, T5Tokenizer

from rl.decoder.pipeline import XOmniDecoder

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "xomni_pipeline")
FLUX = os.path.join(FIXTURE, "flux")
ATOL = 1e-5  # float32


@pytest.fixture(scope="module")
def meta() -> dict:
    with open(os.path.join(FIXTURE, "meta.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(os.path.join(FIXTURE, "expected.safetensors"))


def xomni_folder(root, meta: dict, variant: str) -> str:
    """An X-Omni model folder (config.json's vision_config, projector, decoder) over the fixture's files."""
    folder = os.path.join(root, f"xomni_{variant}")
    os.makedirs(folder)
    projector = os.path.normpath(os.path.join(FIXTURE, meta["projectors"][variant]))
    decoder = os.path.normpath(os.path.join(FIXTURE, meta["decoders"][variant]))
    os.symlink(projector, os.path.join(folder, "vq_projector.pth"))
    os.symlink(decoder, os.path.join(folder, "diffusers"))
    state = torch.load(projector, map_location="cpu")
    codebook_size, codebook_dim = state["quantize.embedding.weight"].shape
    vision = {"dtype": "float32",
              "encoder": {"projector_path": "vq_projector.pth", "z_channels": state["post_quant_conv.weight"].shape[0],
                          "codebook_size": codebook_size, "codebook_dim": codebook_dim},
              "decoder": {"model_path": "diffusers", "upscale_factor": 16, "num_inference_steps": 4,
                          "cfg_scale": 2.0, "cfg_scale_2": 2.0}}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "x-omni", "vision_config": vision}, f)
    return folder


def decode_case(tmp_path, meta: dict, expected: dict, case: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the project's images, X-Omni's images) for one fixture case, both float32 [N, 3, 16h, 16w]."""
    settings = meta["cases"][case]
    variant = settings["variant"]
    decoder = XOmniDecoder.from_pretrained(
        xomni_folder(tmp_path, meta, variant), FLUX, num_inference_steps=settings["num_inference_steps"],
        cfg_scale=settings["cfg_scale"], dtype="float32", device="cpu",
        max_sequence_length=meta["max_sequence_length"])
    out = decoder(expected[f"{variant}/tokens"], tuple(meta["grids"][variant]), meta["prompts"], meta["seeds"])
    assert out.valid.all()
    return out.images, expected[f"{case}/images"]


def test_fixture_is_small_and_complete(meta, expected):
    """The fixture stays small, holds every case with its inputs, and its cases differ from each other (so a
    comparison can tell CFG on from off and one image from another)."""
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(FIXTURE) for f in files)
    assert size < 2 * 2**20
    assert set(meta["cases"]) == {"en_cfg", "en_nocfg", "zh_cfg", "zh_nocfg",
                                  "teacache_0", "teacache_0.3", "teacache_0.8"}
    assert meta["made_with"]["diffusers"] == "0.34.0" and meta["made_with"]["transformers"] == "4.51.3"
    n = len(meta["seeds"])
    for variant in ("en", "zh"):
        h, w = meta["grids"][variant]
        assert expected[f"{variant}/tokens"].shape == (n, h * w)
        assert expected[f"{variant}/siglip"].shape[:2] == (n, h * w)
    for case, settings in meta["cases"].items():
        h, w = meta["grids"][settings["variant"]]
        images = expected[f"{case}/images"]
        assert images.shape == (n, 3, 16 * h, 16 * w) and images.dtype == torch.float32
        assert 0 <= images.min() and images.max() <= 1
        assert (images[0] - images[1]).abs().max() > 1e-2
    for variant in ("en", "zh"):
        assert (expected[f"{variant}_cfg/images"] - expected[f"{variant}_nocfg/images"]).abs().max() > 1e-3


def test_teacache_fixture_skips_steps(meta, expected):
    """X-Omni's teacache_forward at threshold 0 runs every step; the larger thresholds skip some (never the first
    or the last) and change the image, so a comparison can tell the skipped steps apart."""
    steps = {case: meta["cases"][case]["steps_computed"] for case in ("teacache_0", "teacache_0.3", "teacache_0.8")}
    total = meta["cases"]["teacache_0"]["num_inference_steps"]
    assert all(s == list(range(total)) for s in steps["teacache_0"])
    for case in ("teacache_0.3", "teacache_0.8"):
        for computed in steps[case]:
            assert computed[0] == 0 and computed[-1] == total - 1 and len(computed) < total
        assert (expected[f"{case}/images"] - expected["teacache_0/images"]).abs().max() > 1e-3
    assert len(steps["teacache_0.8"][0]) < len(steps["teacache_0.3"][0])


def test_tokenizers_read_the_fixture_like_xomnis_versions(meta):
    """The stored tokenizers give the ids transformers 4.51 gave (CLIP padded to 77; T5 before padding), so any
    image difference below is not a tokenizer difference."""
    ids = meta["text_ids"]
    clip = CLIPTokenizer.from_pretrained(os.path.join(FLUX, "tokenizer"))
    t5 = T5Tokenizer.from_pretrained(os.path.join(FLUX, "tokenizer_2"))
    assert clip(ids["prompts"], padding="max_length", max_length=77, truncation=True).input_ids == ids["clip"]
    assert [t5(p).input_ids for p in ids["prompts"]] == ids["t5_unpadded"]


@pytest.mark.parametrize("case", ["en_cfg", "en_nocfg"])
def test_en_decoder_equals_xomni_pipeline(tmp_path, meta, expected, case):
    """X-Omni-En: prompt through CLIP + T5, true CFG against the empty prompt with a zeroed SigLIP tensor (scale 2),
    and scale 1 (X-Omni-En's pipeline asserts true CFG, so the fixture ran its code at scale 1:
    neg + 1 * (pos - neg); the project runs the positive branch alone)."""
    ours, theirs = decode_case(tmp_path, meta, expected, case)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["zh_cfg", "zh_nocfg"])
def test_zh_decoder_equals_xomni_pipeline(tmp_path, meta, expected, case):
    """X-Omni-Zh: text-free, true CFG = SigLIP vs a zeroed SigLIP tensor (scale 2), and scale 1 (X-Omni-Zh's
    pipeline runs both branches and computes neg + 1 * (pos - neg); the project runs the positive one alone)."""
    ours, theirs = decode_case(tmp_path, meta, expected, case)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
