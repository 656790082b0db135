"""The frozen X-Omni decoder on tiny random parts (rl.decoder.tiny), and the demo PatchDecoder.

Nothing is mocked: faults (NaN, constant images) are injected with forward hooks on the real VAE, and the
CFG branches are observed with a forward pre-hook on the real transformer.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from core.components import validate_component
from rl.decoder import (
    DecodedImages,
    ImageDecoder,
    PatchDecoder,
    XOmniDecoder,
    image_validity,
    to_uint8_images,
)
from rl.decoder.cost import VAE_ACTIVATION_LIMIT, default_vae_batch_size, flux_step_flops, vae_widest_activation
from rl.decoder.patch import FIXED_COLOURS, GLYPHS
from rl.decoder.tiny import save_tiny_folders, tiny_xomni_decoder

GRID = (2, 3)
PROMPTS = ["a red cat", "a blue dog", "a red cat"]
SEEDS = [11, 12, 13]


@pytest.fixture(scope="module")
def decoder():
    return tiny_xomni_decoder(seed=0, cfg_scale=2.0)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 16384, (3, GRID[0] * GRID[1]), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(decoder, tokens):
    return decoder(tokens, GRID, PROMPTS, SEEDS)


@pytest.fixture(scope="module")
def folders(decoder, tmp_path_factory):
    return save_tiny_folders(decoder, tmp_path_factory.mktemp("ckpt"))


def record_transformer_calls(decoder):
    calls = []
    hook = decoder.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append({k: v for k, v in kwargs.items() if v is not None}),
        with_kwargs=True)
    return calls, hook


def test_output_shape_range_and_protocol(decoder, reference):
    assert isinstance(decoder, ImageDecoder) and isinstance(reference, DecodedImages)
    assert reference.images.shape == (3, 3, 16 * GRID[0], 16 * GRID[1])
    assert reference.images.dtype == torch.float32
    assert 0 <= reference.images.min() and reference.images.max() <= 1
    assert reference.valid.tolist() == [True, True, True]


def test_loads_from_xomni_and_flux_folders(decoder, tokens, reference, folders):
    xomni_path, flux_path = folders
    loaded = XOmniDecoder.from_pretrained(xomni_path, flux_path, max_sequence_length=16)
    assert (loaded.num_inference_steps, loaded.cfg_scale) == (decoder.num_inference_steps, decoder.cfg_scale)
    torch.testing.assert_close(loaded(tokens, GRID, PROMPTS, SEEDS).images, reference.images)
    overridden = XOmniDecoder.from_pretrained(xomni_path, flux_path, num_inference_steps=3, vae_batch_size=2)
    assert (overridden.num_inference_steps, overridden.vae_batch_size) == (3, 2)


def test_config_validator_reports_missing_folders(folders, tmp_path):
    xomni_path, _ = folders
    node = {"_component_": "rl.decoder.XOmniDecoder.from_pretrained",
            "xomni_path": xomni_path, "flux_path": str(tmp_path / "nope")}
    problems = validate_component(node, "decoder")
    assert len(problems) == 1 and problems[0].startswith("decoder.flux_path:")
    with pytest.raises(FileNotFoundError, match="text_encoder_2"):
        XOmniDecoder.from_pretrained(xomni_path, str(tmp_path))


def test_upscale_factor_must_match_the_vae(folders, tmp_path):
    xomni_path, flux_path = folders
    copy = shutil.copytree(xomni_path, tmp_path / "xomni")
    config = json.loads((copy / "config.json").read_text())
    config["vision_config"]["decoder"]["upscale_factor"] = 8
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="upscale_factor is 8"):
        XOmniDecoder.from_pretrained(str(copy), flux_path)


def test_sample_depends_only_on_its_own_seed(decoder, tokens, reference):
    alone = decoder(tokens[1:2], GRID, PROMPTS[1:2], SEEDS[1:2])
    torch.testing.assert_close(alone.images[0], reference.images[1], atol=1e-5, rtol=0)
    reordered = decoder(tokens.flip(0), GRID, PROMPTS[::-1], SEEDS[::-1])
    torch.testing.assert_close(reordered.images.flip(0), reference.images, atol=1e-5, rtol=0)
    reseeded = decoder(tokens, GRID, PROMPTS, [s + 100 for s in SEEDS])
    assert (reseeded.images - reference.images).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_chunking_does_not_change_images(tokens, reference):
    chunked = tiny_xomni_decoder(seed=0, cfg_scale=2.0, max_batch_size=2)
    torch.testing.assert_close(chunked(tokens, GRID, PROMPTS, SEEDS).images, reference.images,
                               atol=1e-5, rtol=0)


def test_vae_slices_give_the_unsliced_images(decoder, tokens, reference):
    """The reference decodes its 3 images in one VAE call (the tiny size's default); slices of 1 and of 2 (2 + 1)
    give the same images in the same order. Not bit for bit: the CPU's float32 convolutions pick their kernel by
    batch size, so sums differ in the last bits (1.5e-6 measured); images differ from each other by > 1e-3."""
    height, width = (decoder.pixels_per_token * side for side in GRID)
    assert default_vae_batch_size(decoder.vae.config, height, width) >= len(PROMPTS)
    for size, slices in [(1, [1, 1, 1]), (2, [2, 1])]:
        sliced = tiny_xomni_decoder(seed=0, cfg_scale=2.0, vae_batch_size=size)
        batches = []
        sliced.vae.decoder.register_forward_pre_hook(lambda module, args, seen=batches: seen.append(len(args[0])))
        images = sliced(tokens, GRID, PROMPTS, SEEDS).images
        assert batches == slices
        torch.testing.assert_close(images, reference.images, atol=1e-5, rtol=0)


def test_default_vae_batch_size_keeps_flux_vae_activations_within_the_limit():
    """FLUX.1's VAE: the widest tensor is the [256, H, W] upsample output at full resolution, 2^28 elements per
    1024 px image (the mid block's [L, L] attention scores tie with it), so 4 images per slice, where 8 would
    make the issue's 2^31; at 384 px 2^30 // (256 * 384^2) = 28."""
    flux_vae = {"block_out_channels": [128, 256, 512, 512], "mid_block_add_attention": True}
    assert vae_widest_activation(flux_vae, 1024, 1024) == 256 * 1024 * 1024
    assert default_vae_batch_size(flux_vae, 1024, 1024) == 4
    assert 4 * vae_widest_activation(flux_vae, 1024, 1024) <= VAE_ACTIVATION_LIMIT
    assert default_vae_batch_size(flux_vae, 384, 384) == 28
    assert default_vae_batch_size(flux_vae, 2048, 2048) == 1  # never 0, though one image passes the limit
    assert default_vae_batch_size(flux_vae, 4096, 4096) == 1


def test_bad_vae_batch_size_raises_naming_the_key():
    for bad in (0, -1, 2.0, True, "4"):
        with pytest.raises(ValueError, match="vae_batch_size"):
            tiny_xomni_decoder(vae_batch_size=bad)


def test_codes_and_prompts_condition_the_image(decoder, tokens, reference):
    other_codes = decoder((tokens + 1) % 16384, GRID, PROMPTS, SEEDS)
    assert (other_codes.images - reference.images).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    other_prompt = decoder(tokens, GRID, ["a green bird"] * 3, SEEDS)
    assert (other_prompt.images[1] - reference.images[1]).abs().max() > 1e-4


def test_negative_branch_uses_empty_prompt_and_zero_siglip(decoder, tokens):
    calls, hook = record_transformer_calls(decoder)
    try:
        decoder(tokens, GRID, PROMPTS, SEEDS)
    finally:
        hook.remove()
    assert len(calls) == decoder.num_inference_steps
    states, pooled = decoder.prompt_encoder(PROMPTS)
    empty_states, empty_pooled = decoder.prompt_encoder([""])
    features = decoder.projector.decode(tokens, *GRID).flatten(2).transpose(1, 2)
    for call in calls:  # rows: 3 positive, then 3 negative
        assert call["hidden_states"].shape[0] == 6
        torch.testing.assert_close(call["hidden_states"][:3], call["hidden_states"][3:])
        torch.testing.assert_close(call["siglip_tensor"][:3], features)
        assert torch.count_nonzero(call["siglip_tensor"][3:]) == 0
        torch.testing.assert_close(call["encoder_hidden_states"][:3], states)
        torch.testing.assert_close(call["encoder_hidden_states"][3:], empty_states.expand_as(states))
        torch.testing.assert_close(call["pooled_projections"][3:], empty_pooled.expand_as(pooled))
        assert call["guidance"].tolist() == [1.0] * 6


def test_cfg_scale_one_runs_only_the_positive_branch(tokens, reference):
    single = tiny_xomni_decoder(seed=0, cfg_scale=1.0)
    calls, hook = record_transformer_calls(single)
    try:
        images = single(tokens, GRID, PROMPTS, SEEDS).images
    finally:
        hook.remove()
    assert all(call["hidden_states"].shape[0] == 3 for call in calls)
    # neg + s * (pos - neg) is continuous in s: the batched two-branch path at s -> 1 meets the single one.
    near_one = tiny_xomni_decoder(seed=0, cfg_scale=1.0 + 1e-4)(tokens, GRID, PROMPTS, SEEDS).images
    torch.testing.assert_close(near_one, images, atol=1e-4, rtol=0)
    assert (images - reference.images).abs().max() > 1e-3  # and CFG at 2.0 really differs


def test_invalid_images_are_flagged_before_conversion(decoder, tokens):
    def corrupt(module, args, output):
        output = output.clone()
        output[0, 0, 0, 0] = float("nan")
        output[1] = 0.3  # a flat grey picture
        return output

    hook = decoder.vae.decoder.register_forward_hook(corrupt)
    try:
        decoded = decoder(tokens, GRID, PROMPTS, SEEDS)
    finally:
        hook.remove()
    assert decoded.valid.tolist() == [False, False, True]
    arrays = to_uint8_images(decoded.images)
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == (32, 48, 3) and arrays[0][0, 0, 0] == 0


def test_each_prompt_is_encoded_once_for_its_group_and_the_empty_prompt_once():
    """G rows share a prompt: CLIP and T5 each see it once per decoder call, even when max_batch_size splits
    the group across transformer chunks; the negative branch's empty prompt is encoded once per decoder."""
    decoder = tiny_xomni_decoder(seed=1, cfg_scale=2.0, max_batch_size=2)
    rows = {"clip": [], "t5": []}
    hooks = [decoder.prompt_encoder.text_encoder.register_forward_pre_hook(
                 lambda module, args: rows["clip"].append(args[0].shape[0])),
             decoder.prompt_encoder.text_encoder_2.register_forward_pre_hook(
                 lambda module, args: rows["t5"].append(args[0].shape[0]))]
    prompts = ["b"] * 3 + ["a"] * 3  # two prompts x G = 3
    tokens = torch.randint(0, 16384, (6, 6), generator=torch.Generator().manual_seed(1))
    try:
        first = decoder(tokens, GRID, prompts, list(range(6)))
        decoder(tokens, GRID, prompts, list(range(6)))
    finally:
        for hook in hooks:
            hook.remove()
    # Call 1: the two prompts, then the empty prompt; call 2: the two prompts only.
    assert rows == {"clip": [2, 1, 2], "t5": [2, 1, 2]}
    # Sharing the encoding changes nothing: a row decoded alone gets the same picture.
    alone = decoder(tokens[4:5], GRID, prompts[4:5], [4])
    torch.testing.assert_close(alone.images[0], first.images[4], atol=1e-5, rtol=0)


def test_step_flops_formula_counts_every_matmul_of_the_transformer(decoder, tokens):
    """rl.decoder.cost's estimate equals torch's FlopCounterMode on one CFG step (math attention, so the
    counter sees the attention products as bmm's)."""
    calls, hook = record_transformer_calls(decoder)
    try:
        decoder(tokens, GRID, PROMPTS, SEEDS)
    finally:
        hook.remove()
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        decoder.transformer(**calls[0])
    text_tokens = decoder.prompt_encoder.max_sequence_length
    per_image = flux_step_flops(decoder.transformer.config, GRID, text_tokens, cfg=True)
    assert counter.get_total_flops() == len(PROMPTS) * per_image
    assert flux_step_flops(decoder.transformer.config, GRID, text_tokens, cfg=False) * 2 == per_image


def test_bad_inputs_raise(decoder, tokens):
    with pytest.raises(ValueError, match="one prompt and one seed"):
        decoder(tokens, GRID, PROMPTS[:2], SEEDS)
    with pytest.raises(ValueError, match="tokens must be"):
        decoder(tokens, (3, 3), PROMPTS, SEEDS)
    with pytest.raises(ValueError, match="16384"):
        decoder(tokens + 16384, GRID, PROMPTS, SEEDS)


def test_image_validity_and_uint8_conversion():
    images = torch.rand(4, 3, 8, 8)
    images[1] = torch.tensor([0.2, 0.5, 0.9])[:, None, None]  # flat colour
    images[2] = 3.0  # blown out: constant once clipped
    images[3, 2, 4, 4] = float("inf")
    assert image_validity(images).tolist() == [True, False, False, False]
    arrays = to_uint8_images(torch.tensor([0.0, 0.5, 1.0, float("nan")]).view(1, 1, 1, 4).expand(1, 3, 1, 4))
    assert arrays[0][0, :, 0].tolist() == [0, 128, 255, 0]


def test_patch_decoder_colours():
    decoder = PatchDecoder(patch=4, palette_size=16, seed=3)
    black, white = decoder.codes_for_tile(0), decoder.codes_for_tile(1)
    assert len(black) and len(white) and FIXED_COLOURS[:2] == [(0, 0, 0), (1, 1, 1)]
    tokens = torch.stack([black[0].repeat(6), torch.cat([black[:1].repeat(3), white[:1].repeat(3)])])
    out = decoder(tokens, (2, 3), ["p", "q"], [0, 1])
    assert out.images.shape == (2, 3, 8, 12) and out.valid.tolist() == [False, True]
    assert out.images[1, :, :4].max() == 0 and out.images[1, :, 4:].min() == 1  # raster order: row 0 black
    again = PatchDecoder(patch=4, palette_size=16, seed=3)(tokens, (2, 3), ["p", "q"], [0, 1])
    torch.testing.assert_close(again.images, out.images)


def test_patch_decoder_noise_is_per_sample():
    decoder = PatchDecoder(patch=4, noise=0.1)
    tokens = torch.randint(0, 16384, (3, 4), generator=torch.Generator().manual_seed(0))
    batch = decoder(tokens, (2, 2), ["x"] * 3, [5, 6, 7]).images
    torch.testing.assert_close(decoder(tokens[2:], (2, 2), ["x"], [7]).images[0], batch[2])
    assert not torch.equal(decoder(tokens, (2, 2), ["x"] * 3, [8, 6, 7]).images[0], batch[0])


def test_patch_decoder_glyphs_are_readable():
    rapidocr = pytest.importorskip("rapidocr")
    decoder = PatchDecoder(patch=32, mode="glyph")
    word = "STOP42"
    tokens = torch.stack([decoder.codes_for_tile(GLYPHS.index(c))[0] for c in word])[None]
    image = to_uint8_images(decoder(tokens, (1, len(word)), ["x"], [0]).images)[0]
    canvas = np.full((96, image.shape[1] + 64, 3), 255, np.uint8)
    canvas[32:64, 32:-32] = image
    engine = rapidocr.RapidOCR(params={"Det.limit_type": "max", "Det.limit_side_len": 960,
                                       "Global.use_cls": False})
    assert "".join(engine(canvas).txts).replace(" ", "") == word


def test_patch_decoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="palette_size"):
        PatchDecoder(palette_size=4)
    with pytest.raises(ValueError, match="mode"):
        PatchDecoder(mode="emoji")
    with pytest.raises(ValueError, match="image codes"):
        PatchDecoder()(torch.full((1, 4), -1), (2, 2), ["x"], [0])


# X-Omni-Zh's text-free decoder (modeling_siglip_flux_zh.py): no T5 or CLIP, true CFG = SigLIP vs zeroed SigLIP.

ZH_STEPS, ZH_CFG = 3, 2.5


@pytest.fixture(scope="module")
def zh_decoder():
    return tiny_xomni_decoder(seed=3, num_inference_steps=ZH_STEPS, cfg_scale=ZH_CFG, max_batch_size=2,
                              variant="zh")


@pytest.fixture(scope="module")
def zh_folders(zh_decoder, tmp_path_factory):
    return save_tiny_folders(zh_decoder, tmp_path_factory.mktemp("zh"))


def xomni_zh_pipeline(decoder, tokens, grid, seeds, cfg_scale):
    """X-Omni-Zh's `FluxPipelineWithSigLIP.__call__` (choyakawa/X-Omni, modeling_siglip_flux_zh.py) restated over
    the diffusers FluxPipeline helpers it inherits: one image per call, both branches always run (even at scale
    1), velocity neg + s * (pos - neg), guidance 1.0, timestep t / 1000, latents / scaling + shift into the VAE.
    That file itself, run once in this environment on the same parts, differed from ours by 1.1e-6 (CFG 2.5) and
    8.3e-7 (CFG 1.0)."""
    from diffusers import FluxPipeline
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    pipe = FluxPipeline(scheduler=decoder.scheduler, vae=decoder.vae, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=decoder.transformer)
    height, width = 16 * grid[0], 16 * grid[1]
    features = decoder.projector.decode(tokens, *grid).flatten(2).transpose(1, 2)
    images = []
    for siglip, seed in zip(features.split(1), seeds, strict=True):
        latents, image_ids = pipe.prepare_latents(1, decoder.transformer.config.in_channels // 4, height, width,
                                                  siglip.dtype, "cpu", torch.Generator().manual_seed(seed))
        config = decoder.scheduler.config
        mu = calculate_shift(latents.shape[1], config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        sigmas = np.linspace(1.0, 1 / ZH_STEPS, ZH_STEPS)
        timesteps, _ = retrieve_timesteps(decoder.scheduler, ZH_STEPS, "cpu", sigmas=sigmas, mu=mu)
        guidance = torch.full([1], 1.0, dtype=torch.float32).expand(2)
        for t in timesteps:
            velocity = decoder.transformer(
                hidden_states=torch.cat([latents, latents]), timestep=t.expand(2).to(latents.dtype) / 1000,
                guidance=guidance, img_ids=image_ids, siglip_tensor=torch.cat([siglip, torch.zeros_like(siglip)]))
            positive, negative = velocity.chunk(2)
            latents = decoder.scheduler.step(negative + cfg_scale * (positive - negative), t, latents,
                                             return_dict=False)[0]
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        latents = latents / decoder.vae.config.scaling_factor + decoder.vae.config.shift_factor
        images.append(pipe.image_processor.postprocess(decoder.vae.decode(latents, return_dict=False)[0],
                                                       output_type="pt"))
    return torch.cat(images)


@pytest.mark.parametrize("cfg_scale", [ZH_CFG, 1.0])
def test_zh_decoder_decodes_as_xomni_zh_pipeline(zh_decoder, tokens, cfg_scale):
    """CFG on (one batched pass of SigLIP and zeroed-SigLIP rows) and off (the negative branch skipped, where
    X-Omni's pipeline runs it and adds 1 * (pos - neg)): X-Omni-Zh's images to 1e-5, prompts never read."""
    zh_decoder.cfg_scale = cfg_scale
    try:
        with torch.no_grad():
            expected = xomni_zh_pipeline(zh_decoder, tokens, GRID, SEEDS, cfg_scale)
        ours = zh_decoder(tokens, GRID, PROMPTS, SEEDS).images
        other_prompts = zh_decoder(tokens, GRID, ["一只猫", "", "x"], SEEDS).images
    finally:
        zh_decoder.cfg_scale = ZH_CFG
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert torch.equal(other_prompts, ours)


def test_zh_cfg_contrasts_siglip_with_zeroed_siglip_and_no_text(zh_decoder, tokens):
    calls, hook = record_transformer_calls(zh_decoder)
    try:
        with_cfg = zh_decoder(tokens, GRID, PROMPTS, SEEDS).images
    finally:
        hook.remove()
    features = zh_decoder.projector.decode(tokens, *GRID).flatten(2).transpose(1, 2)
    assert len(calls) == 2 * ZH_STEPS  # 3 images in passes of max_batch_size 2
    for call in calls[:ZH_STEPS]:  # the first pass: images 0 and 1, then their negative rows
        assert set(call) == {"hidden_states", "timestep", "img_ids", "guidance", "siglip_tensor"}
        torch.testing.assert_close(call["siglip_tensor"][:2], features[:2])
        assert torch.count_nonzero(call["siglip_tensor"][2:]) == 0
    zh_decoder.cfg_scale = 1.0
    try:
        without_cfg = zh_decoder(tokens, GRID, PROMPTS, SEEDS).images
    finally:
        zh_decoder.cfg_scale = ZH_CFG
    assert (with_cfg - without_cfg).abs().max() > 1e-2  # CFG really changes the pictures


def test_zh_folder_loads_with_no_text_encoders(zh_decoder, zh_folders, tokens):
    """The FLUX folder written for the Zh decoder has only vae/ and scheduler/: loading from it proves that no
    CLIP or T5 is read."""
    xomni_path, flux_path = zh_folders
    assert sorted(p.name for p in Path(flux_path).iterdir()) == ["scheduler", "vae"]
    loaded = XOmniDecoder.from_pretrained(xomni_path, flux_path, variant="zh", max_batch_size=2)
    assert loaded.variant == "zh" and loaded.prompt_encoder is None
    assert type(loaded.transformer).__name__ == "FluxSigLIPZhTransformer"
    assert (loaded.num_inference_steps, loaded.cfg_scale) == (ZH_STEPS, ZH_CFG)
    torch.testing.assert_close(loaded(tokens, GRID, PROMPTS, SEEDS).images,
                               zh_decoder(tokens, GRID, PROMPTS, SEEDS).images, atol=1e-6, rtol=0)


def test_a_release_given_where_the_other_is_required_fails_loudly(zh_decoder, decoder, zh_folders, folders):
    (zh_xomni, zh_flux), (en_xomni, en_flux) = zh_folders, folders
    with pytest.raises(ValueError, match="variant: .* holds X-Omni-Zh's decoder, not X-Omni-En's"):
        XOmniDecoder.from_pretrained(zh_xomni, zh_flux, variant="en")
    with pytest.raises(ValueError, match="variant: .* holds X-Omni-En's decoder, not X-Omni-Zh's"):
        XOmniDecoder.from_pretrained(en_xomni, en_flux, variant="zh")
    # An En decoder needs the text encoders the Zh FLUX folder lacks, named before anything loads.
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        XOmniDecoder.from_pretrained(en_xomni, zh_flux)
    parts = (zh_decoder.projector, zh_decoder.transformer, zh_decoder.vae, zh_decoder.scheduler)
    with pytest.raises(ValueError, match="X-Omni-Zh's decoder is text-free"):
        XOmniDecoder(*parts, decoder.prompt_encoder, num_inference_steps=1, cfg_scale=1.0, device="cpu")
    with pytest.raises(ValueError, match="X-Omni-En's decoder reads the prompt"):
        XOmniDecoder(decoder.projector, decoder.transformer, decoder.vae, decoder.scheduler, None,
                     num_inference_steps=1, cfg_scale=1.0, device="cpu")
    with pytest.raises(ValueError, match="variant must be one of"):
        tiny_xomni_decoder(variant="fr")
