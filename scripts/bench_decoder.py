"""Decoder throughput, printed as JSON.

Default: the tiny random X-Omni decoder (rl.decoder.tiny) on this machine: images/s at batch 1 and at
`--batch`; one transformer step with the CFG branches batched vs run as two passes; the whole decode with
the transformer compiled (`rollout.compile`) vs eager; prompt encoding with each prompt shared by its
`--group-size` rows (one CLIP + T5 pass per prompt) vs every row encoded (as many distinct prompts: both
tokenizers pad to a fixed length, so the cost is the same as encoding each row).
--real-shapes: a FLUX.1-dev-shaped transformer with SigLIP injection (19 + 38 blocks, width 3072, random
bf16 weights) and FLUX's VAE shape, at 384 and 1152 px (24x24 and 72x72 tokens) on CUDA: seconds per
denoising step with batched vs two-pass CFG (and batched compiled), VAE decode seconds per image, and the
estimated FLOPs per step (rl/decoder/cost.py). Never run on a GPU so far. Every figure is compared with a
baseline measured in the same run.

    python scripts/bench_decoder.py [--steps 4 --grid 8 8 --batch 8 --group-size 4] [--no-compile]
    python scripts/bench_decoder.py --real-shapes [--batch 4 --device cuda] [--no-compile]
"""

from __future__ import annotations

import argparse
import json

import diffusers
import torch

from rl.decoder import FluxSigLIPTransformer, XOmniDecoder
from rl.decoder.cost import flux_step_flops
from rl.decoder.tiny import tiny_xomni_decoder
from rl.timing import interleaved_median_seconds, median_seconds

T5_TOKENS = 512


def cfg_step_times(transformer: FluxSigLIPTransformer, batch: int, grid: tuple[int, int], text_tokens: int,
                   device: torch.device, dtype: torch.dtype, repeats: int, two_pass: bool = True) -> dict:
    """One transformer step for `batch` images: both CFG branches in one call (2*batch rows) vs two calls
    (`two_pass=False` times the batched call only)."""
    config, (h, w) = transformer.config, grid

    def inputs(rows: int) -> dict:
        def rand(*shape):
            return torch.randn(*shape, device=device, dtype=dtype)

        return dict(hidden_states=rand(rows, h * w, config.in_channels),
                    encoder_hidden_states=rand(rows, text_tokens, config.joint_attention_dim),
                    pooled_projections=rand(rows, config.pooled_projection_dim),
                    timestep=torch.full((rows,), 0.5, device=device, dtype=dtype),
                    img_ids=torch.zeros(h * w, 3, device=device, dtype=dtype),
                    txt_ids=torch.zeros(text_tokens, 3, device=device, dtype=dtype),
                    guidance=torch.ones(rows, device=device, dtype=dtype),
                    siglip_tensor=rand(rows, h * w, config.siglip_channels))

    both, half = inputs(2 * batch), inputs(batch)
    with torch.no_grad():
        batched = median_seconds(lambda: transformer(**both), device, repeats)
        if not two_pass:
            return {"batched_cfg_s_per_step": round(batched, 5)}
        two_passes = median_seconds(lambda: (transformer(**half), transformer(**half)), device, repeats)
    return {"batched_cfg_s_per_step": round(batched, 5), "two_pass_cfg_s_per_step": round(two_passes, 5),
            "speedup_batched_vs_two_pass": round(two_passes / batched, 3)}


def bench_tiny(args: argparse.Namespace) -> dict:
    """Full decode (text encoders, projector, transformer, VAE) of the tiny decoder, batch 1 vs --batch."""
    grid, result, cpu = tuple(args.grid), {}, torch.device("cpu")
    for batch in (1, args.batch):
        decoder = tiny_xomni_decoder(num_inference_steps=args.steps, max_batch_size=batch)
        seconds = median_seconds(decode_call(decoder, batch, grid), cpu, args.repeats)
        result[f"images_per_s_batch{batch}"] = round(batch / seconds, 3)
    result[f"speedup_batch{args.batch}_vs_batch1"] = round(
        result[f"images_per_s_batch{args.batch}"] / result["images_per_s_batch1"], 3)
    cfg = cfg_step_times(decoder.transformer, args.batch, grid, decoder.prompt_encoder.max_sequence_length,
                         cpu, torch.float32, args.repeats)
    return {"decoder": "tiny random", "device": "cpu", "threads": torch.get_num_threads(), "steps": args.steps,
            "cfg_scale": decoder.cfg_scale, "grid": list(grid),
            "resolution": [16 * grid[0], 16 * grid[1]], **result, "transformer_step": cfg,
            "prompt_encoding": prompt_encoding_times(decoder, args.batch, args.group_size, args.repeats),
            **({"compiled": compiled_decode_times(args, grid)} if args.compile else {})}


def decode_call(decoder: XOmniDecoder, batch: int, grid: tuple[int, int]):
    call = (torch.randint(0, 16384, (batch, grid[0] * grid[1]), generator=torch.Generator().manual_seed(0)), grid,
            ["a photo of a cat"] * batch, list(range(batch)))
    return lambda: decoder(*call)


def compiled_decode_times(args: argparse.Namespace, grid: tuple[int, int]) -> dict:
    """Images/s of the whole tiny decode at --batch, transformer compiled vs eager (the baseline), timed in turns."""
    cpu = torch.device("cpu")
    eager, compiled = (tiny_xomni_decoder(num_inference_steps=args.steps, max_batch_size=args.batch) for _ in range(2))
    compiled.compile()
    compile_s = median_seconds(decode_call(compiled, args.batch, grid), cpu, 1, warmup=False)
    seconds = interleaved_median_seconds({"eager": decode_call(eager, args.batch, grid),
                                          "compiled": decode_call(compiled, args.batch, grid)}, cpu, args.repeats)
    return {"compile_s": round(compile_s, 1),
            **{f"{name}_images_per_s": round(args.batch / s, 3) for name, s in seconds.items()},
            "speedup_compiled_vs_eager": round(seconds["eager"] / seconds["compiled"], 3)}


def prompt_encoding_times(decoder: XOmniDecoder, batch: int, group_size: int, repeats: int) -> dict:
    """CLIP + T5 seconds for `batch` rows: each prompt encoded once for its `group_size` rows (ours) vs every
    row encoded (the baseline: `batch` distinct prompts of the same padded length)."""
    if batch % group_size:
        raise SystemExit(f"--batch {batch} must be a multiple of --group-size {group_size}")
    shared = [f"a photo of cat number {i // group_size}" for i in range(batch)]
    every_row = [f"a photo of cat number {i}" for i in range(batch)]
    encoder, cpu = decoder.prompt_encoder, torch.device("cpu")
    seconds = interleaved_median_seconds({"shared": lambda: encoder(shared), "every_row": lambda: encoder(every_row)},
                                         cpu, repeats)
    return {"rows": batch, "group_size": group_size, "shared_s": round(seconds["shared"], 5),
            "every_row_s": round(seconds["every_row"], 5),
            "speedup_shared_vs_every_row": round(seconds["every_row"] / seconds["shared"], 3)}


def bench_real_shapes(args: argparse.Namespace) -> dict:
    """FLUX.1-dev shapes with random bf16 weights: transformer step (CFG batched vs two passes) and VAE."""
    from diffusers import AutoencoderKL  # here, after `rl` has applied its torchvision fix

    device, dtype = torch.device(args.device), torch.bfloat16
    transformer = FluxSigLIPTransformer(
        in_channels=64, num_layers=args.num_layers, num_single_layers=args.num_single_layers,
        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
        guidance_embeds=True, axes_dims_rope=(16, 56, 56), siglip_channels=1536).to(device, dtype).eval()
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
        use_quant_conv=False, use_post_quant_conv=False).to(device, dtype).eval()
    results = {}
    for tokens_per_side in args.tokens_per_side:
        grid = (tokens_per_side, tokens_per_side)
        step = cfg_step_times(transformer, args.batch, grid, T5_TOKENS, device, dtype, args.repeats)
        latents = torch.randn(args.batch, 16, 2 * tokens_per_side, 2 * tokens_per_side, device=device, dtype=dtype)
        with torch.no_grad():
            vae_s = median_seconds(lambda z=latents: vae.decode(z), device, args.repeats)
        results[f"{16 * tokens_per_side}px"] = {
            **step, "vae_decode_s_per_image": round(vae_s / args.batch, 5),
            "estimated_tflop_per_step_per_image": {
                "cfg": round(flux_step_flops(transformer.config, grid, T5_TOKENS, cfg=True) / 1e12, 2),
                "no_cfg": round(flux_step_flops(transformer.config, grid, T5_TOKENS, cfg=False) / 1e12, 2)}}
    if args.compile:  # compiled last: the eager figures above are its baseline
        transformer.compile(dynamic=False)
        for tokens_per_side in args.tokens_per_side:
            compiled = cfg_step_times(transformer, args.batch, (tokens_per_side,) * 2, T5_TOKENS, device, dtype,
                                      args.repeats, two_pass=False)
            entry = results[f"{16 * tokens_per_side}px"]
            entry["compiled_batched_cfg_s_per_step"] = compiled["batched_cfg_s_per_step"]
            entry["speedup_compiled_vs_eager"] = round(
                entry["batched_cfg_s_per_step"] / compiled["batched_cfg_s_per_step"], 3)
    return {"decoder": "FLUX.1-dev-shaped, random bf16", "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "double_blocks": args.num_layers, "single_blocks": args.num_single_layers, "batch": args.batch,
            "t5_tokens": T5_TOKENS, "peak_gib": _peak_gib(device), **results}


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-shapes", action="store_true", help="FLUX.1-dev shapes (needs a GPU)")
    parser.add_argument("--device", default="cuda", help="device for --real-shapes")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (tiny decoder)")
    parser.add_argument("--grid", type=int, nargs=2, default=[8, 8], help="token grid h w (tiny decoder)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--group-size", type=int, default=4, help="rows sharing a prompt (tiny prompt encoding)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled transformer")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--num-layers", type=int, default=19, help="double-stream blocks (--real-shapes)")
    parser.add_argument("--num-single-layers", type=int, default=38, help="single-stream blocks (--real-shapes)")
    parser.add_argument("--tokens-per-side", type=int, nargs="+", default=[24, 72],
                        help="square token grids for --real-shapes (24 = 384 px, 72 = 1152 px)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusers.utils.logging.set_verbosity_error()  # casting random weights to bf16 warns once per model
    result = bench_real_shapes(args) if args.real_shapes else bench_tiny(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
