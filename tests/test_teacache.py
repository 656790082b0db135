"""X-Omni's TeaCache in both decoder transformers (rl/decoder/teacache.py), on the tiny decoders X-Omni's own code
wrote (tests/data/xomni_tiny, tests/data/xomni_zh_tiny), through a plain Euler flow-matching loop with both CFG
branches batched as the pipeline batches them ([positive images; negative images])."""

import json
import os

import pytest
import torch

from rl.decoder.flux_siglip import FluxSigLIPTransformer
from rl.decoder.pipeline import XOmniDecoder
from rl.decoder.teacache import TeaCache
from rl.decoder.tiny import tiny_xomni_decoder

DATA = os.path.join(os.path.dirname(__file__), "data")
FOLDERS = {"en": os.path.join(DATA, "xomni_tiny", "decoder_transformer"),
           "zh": os.path.join(DATA, "xomni_zh_tiny", "decoder_transformer")}
GRID, STEPS = (4, 6), 8


@pytest.fixture(scope="module", params=["en", "zh"])
def model(request):
    return FluxSigLIPTransformer.from_pretrained(FOLDERS[request.param]).eval()


def inputs(model, seeds: list[int], siglip_scales: list[float] | None = None) -> dict:
    """Per-image noise, SigLIP features (times the image's scale) and (En) text states for len(seeds) images, the
    negative CFG branch's SigLIP zeroed as X-Omni's pipeline does: each image's inputs depend on its own seed."""
    config, (h, w) = model.config, GRID
    per_image = [torch.Generator().manual_seed(s) for s in seeds]
    scales = siglip_scales or [1.0] * len(seeds)
    latents = torch.stack([torch.randn(h * w, config.in_channels, generator=g) for g in per_image])
    siglip = torch.stack([scale * torch.randn(h * w, config.siglip_channels, generator=g)
                          for g, scale in zip(per_image, scales, strict=True)])
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1], img_ids[..., 2] = torch.arange(h)[:, None], torch.arange(w)[None, :]
    batch = {"latents": latents, "siglip": torch.cat([siglip, torch.zeros_like(siglip)]),
             "img_ids": img_ids.reshape(h * w, 3)}
    if model.variant == "en":
        states = torch.stack([torch.randn(5, config.joint_attention_dim, generator=g) for g in per_image])
        pooled = torch.stack([torch.randn(config.pooled_projection_dim, generator=g) for g in per_image])
        batch.update(states=torch.cat([states, torch.zeros_like(states)]),
                     pooled=torch.cat([pooled, torch.zeros_like(pooled)]), txt_ids=torch.zeros(5, 3))
    return batch


@torch.no_grad()
def denoise(model, batch: dict, threshold: float | None, cfg_steps: int = STEPS) -> tuple[torch.Tensor, TeaCache]:
    """Euler steps from sigma 1 to 0 with true CFG (scale 3) for the first `cfg_steps` steps, the positive rows
    alone after; threshold None runs without a cache. Returns the final latents [n, L, C] and the cache."""
    latents = batch["latents"]
    n = latents.shape[0]
    cache = TeaCache(threshold, STEPS, n) if threshold is not None else None
    sigmas = torch.linspace(1.0, 0.0, STEPS + 1)
    for step in range(STEPS):
        rows = 2 * n if step < cfg_steps else n
        kwargs = {"hidden_states": torch.cat([latents, latents])[:rows], "timestep": sigmas[step].expand(rows),
                  "img_ids": batch["img_ids"], "guidance": torch.ones(rows), "siglip_tensor": batch["siglip"][:rows],
                  "teacache": cache}
        if model.variant == "en":
            kwargs.update(encoder_hidden_states=batch["states"][:rows], pooled_projections=batch["pooled"][:rows],
                          txt_ids=batch["txt_ids"])
        velocity = model(**kwargs)
        if rows == 2 * n:
            positive, negative = velocity.chunk(2)
            velocity = negative + 3.0 * (positive - negative)
        latents = latents + (sigmas[step + 1] - sigmas[step]) * velocity
    return latents, cache


def test_threshold_zero_is_exactly_the_uncached_decoder(model):
    batch = inputs(model, [1, 2])
    reference, _ = denoise(model, batch, None)
    cached, cache = denoise(model, batch, 0.0)
    assert (cached - reference).abs().max().item() == 0.0
    assert (cache.calls, cache.skipped) == (4 * STEPS, 0)  # 2 images x 2 CFG rows per step


def test_a_high_threshold_runs_only_the_first_and_last_steps(model):
    batch = inputs(model, [1])
    reference, _ = denoise(model, batch, None)
    cached, cache = denoise(model, batch, 1e9)
    assert (cache.calls, cache.skipped) == (2 * 2, 2 * (STEPS - 2))  # 2 CFG rows per step
    # Skipped steps reuse a residual, so the result moves away from the full decode, but stays finite.
    assert torch.isfinite(cached).all() and (cached - reference).abs().max() > 1e-4


def test_each_image_decides_alone(model):
    """A batch of images equals each image decoded alone (same steps skipped). The images' SigLIP scales make
    them change at different rates, so alone they skip different steps: one state for the batch (X-Omni's) would
    make them agree."""
    threshold, seeds, scales = 0.4, [1, 2, 3], [0.2, 5.0, 1.0]
    together, cache = denoise(model, inputs(model, seeds, scales), threshold)
    alone = [denoise(model, inputs(model, [s], [scale]), threshold) for s, scale in zip(seeds, scales, strict=True)]
    for i, (latents, _) in enumerate(alone):
        torch.testing.assert_close(together[i], latents[0], atol=1e-5, rtol=0)
    assert cache.calls == sum(single.calls for _, single in alone)
    assert len({single.calls for _, single in alone}) > 1 and cache.skipped > 0


def test_a_pass_may_drop_the_negative_branch(model):
    """`decoder.cfg_until` < 1: later steps run the positive rows only; the cache keeps their state."""
    batch = inputs(model, [4, 5])
    for threshold in (0.0, 0.6):
        reference, _ = denoise(model, batch, None, cfg_steps=5) if threshold == 0 else (None, None)
        cached, cache = denoise(model, batch, threshold, cfg_steps=5)
        assert torch.isfinite(cached).all() and cache.calls + cache.skipped == 4 * 5 + 2 * (STEPS - 5)
        if reference is not None:
            assert (cached - reference).abs().max().item() == 0.0


def test_a_cache_serves_one_pass():
    cache = TeaCache(0.1, 1, 1)
    hidden = torch.zeros(2, 3, 4)
    cache(hidden, hidden, lambda h, rows: h + 1)
    with pytest.raises(RuntimeError, match="1 steps"):
        cache(hidden, hidden, lambda h, rows: h + 1)
    with pytest.raises(ValueError, match="threshold >= 0"):
        TeaCache(-1.0, 4, 1)


# --- In the decoder pipeline (`model.decoder.teacache_threshold`, `model.decoder.cfg_until`) ---------------------

def decode(threshold: float = 0.0, cfg_until: float = 1.0, seeds=(0, 1, 2), **kwargs):
    """The tiny En decoder's images for 3 fixed token grids, with its transformer-call counts."""
    decoder = tiny_xomni_decoder(seed=0, num_inference_steps=STEPS, cfg_scale=2.0, teacache_threshold=threshold,
                                 cfg_until=cfg_until, **kwargs)
    tokens = torch.stack([torch.randint(0, 16384, (16,), generator=torch.Generator().manual_seed(s))
                          for s in seeds])
    images = decoder(tokens, (4, 4), [f"prompt {s}" for s in seeds], list(seeds)).images
    return images, decoder.transformer_calls, decoder.transformer_calls_skipped


def test_the_pipeline_counts_rows_and_threshold_zero_changes_nothing():
    default, calls, skipped = decode()
    explicit, *_ = decode(threshold=0.0, cfg_until=1.0)
    assert (explicit - default).abs().max().item() == 0.0
    assert (calls, skipped) == (3 * 2 * STEPS, 0)  # 3 images x 2 CFG rows x 8 steps


def test_the_pipeline_skips_steps_per_image():
    full, *_ = decode()
    cached, calls, skipped = decode(threshold=0.6)
    assert skipped > 0 and calls + skipped == 3 * 2 * STEPS and calls >= 3 * 2 * 2  # first and last steps run
    assert torch.isfinite(cached).all() and 0 < (cached - full).abs().max() < 0.5
    # Each image decodes alone as it does in the batch: the cache's state is per image.
    for i, seed in enumerate((0, 1, 2)):
        alone, *_ = decode(threshold=0.6, seeds=(seed,))
        torch.testing.assert_close(alone[0], cached[i], atol=1e-5, rtol=0)


def test_cfg_until_runs_the_negative_branch_on_the_first_steps_only():
    full, *_ = decode()
    half, calls, _ = decode(cfg_until=0.5)
    assert calls == 3 * (2 * 4 + 4)  # 4 steps with both branches, 4 with the positive one
    assert (half - full).abs().max() > 1e-4
    none, calls, _ = decode(cfg_until=0.0)
    assert calls == 3 * STEPS


def test_teacache_is_refused_where_it_cannot_work():
    from core.components import validate_component

    node = {"_component_": "rl.decoder.tiny.tiny_xomni_decoder", "teacache_threshold": -0.1, "cfg_until": 1.5}
    problems = validate_component(node, "model.decoder")
    assert any("model.decoder.teacache_threshold" in p for p in problems)
    assert any("model.decoder.cfg_until" in p for p in problems)
    with pytest.raises(ValueError, match="rollout.compile"):
        tiny_xomni_decoder(teacache_threshold=0.3).compile()


@pytest.mark.parametrize("case", ["teacache_0.3", "teacache_0.8"])
def test_the_pipeline_equals_xomni_teacache_forward(tmp_path, case):
    """X-Omni's own `teacache_forward` and pipeline (tests/data/xomni_pipeline, made in a separate venv with
    X-Omni's versions): the same images to 1e-5 and the same steps skipped, one image per X-Omni call, all of a
    case's images in one call here."""
    from safetensors.torch import load_file
    from test_pipeline_reference import FIXTURE, FLUX, xomni_folder

    with open(os.path.join(FIXTURE, "meta.json")) as f:
        meta = json.load(f)
    expected = load_file(os.path.join(FIXTURE, "expected.safetensors"))
    settings = meta["cases"][case]
    decoder = XOmniDecoder.from_pretrained(
        xomni_folder(tmp_path, meta, "en"), FLUX, num_inference_steps=settings["num_inference_steps"],
        cfg_scale=settings["cfg_scale"], dtype="float32", device="cpu",
        max_sequence_length=meta["max_sequence_length"], teacache_threshold=settings["teacache_threshold"])
    images = decoder(expected["en/tokens"], tuple(meta["grids"]["en"]), meta["prompts"], meta["seeds"]).images
    torch.testing.assert_close(images, expected[f"{case}/images"], atol=1e-5, rtol=0)
    computed = sum(len(steps) for steps in settings["steps_computed"])
    assert decoder.transformer_calls == 2 * computed  # two CFG rows per computed image-step
    assert decoder.transformer_calls_skipped == 2 * (len(meta["seeds"]) * settings["num_inference_steps"] - computed)


def test_a_rollout_reports_its_decoder_calls():
    """`rollout/decoder_calls` and `rollout/decoder_calls_skipped` come from RolloutResult: one call's rows."""
    from rl.distributed.rollout import RolloutResult, RolloutWorker
    from rl.train_config import RolloutConfig

    model = {"policy": {"_component_": "rl.model.tiny.tiny_policy", "seed": 0},
             "tokenizer": {"_component_": "rl.model.tiny.tiny_tokenizer"},
             "decoder": {"_component_": "rl.decoder.tiny.tiny_xomni_decoder", "num_inference_steps": STEPS,
                         "teacache_threshold": 0.6}}
    worker = RolloutWorker(model, RolloutConfig(grid=[2, 3], batch_size=4))
    prompts = ["a red cat", "a blue dog", "a green tree"]
    first, _ = worker.generate(prompts, [1, 2, 3], [4, 5, 6])
    second, _ = worker.generate(prompts, [1, 2, 3], [4, 5, 6])
    assert first.decoder_calls + first.decoder_calls_skipped == 3 * 2 * STEPS and first.decoder_calls_skipped > 0
    assert (second.decoder_calls, second.decoder_calls_skipped) == (first.decoder_calls, first.decoder_calls_skipped)
    merged = RolloutResult.merge([first, second])
    assert (merged.decoder_calls, merged.decoder_calls_skipped) == (2 * first.decoder_calls,
                                                                    2 * first.decoder_calls_skipped)
