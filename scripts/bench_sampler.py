"""Image-token sampling throughput, printed as JSON: our sampler vs transformers' generate().

What is compared: image tokens per second (batch rows x h*w tokens, prefill included) for
  - ours: `rl.model.sampler.sample_image_tokens` on an X-Omni policy (KV cache, SDPA, left-padded prompts,
    X-Omni's sampling settings: temperature 1, top_k 50, min_p 0.03; per-sample counter-based seeds,
    log-probs of every token), eager (the baseline) and with `rollout.compile`'s CompiledDecodeStep
    (torch.compile'd decode step on a static KV cache; `compile_s` is its first call, compilation included);
  - generate(): `Qwen2ForCausalLM.generate` on a model of the same shape (same layers, width, heads; its
    vocabulary is the 16384 image codes, so the output head costs the same as X-Omni's image head), on the
    same left-padded prompt ids, sampling with the same settings for exactly h*w new tokens.
Both have random weights. X-Omni's own inference is generate() on its model (plus a full-vocabulary
logits tensor per step), so generate() on the Qwen2 twin is a lower bound on the loop it uses.

    python scripts/bench_sampler.py                         # tiny policy on CPU (float32)
    python scripts/bench_sampler.py --model-size 7b         # Qwen2.5-7B-shaped X-Omni, bf16, CUDA
    python scripts/bench_sampler.py --no-compile            # skip the compiled sampler
"""

from __future__ import annotations

import argparse
import json

import torch

from rl.model.policy import XOmniConfig, XOmniPolicy
from rl.model.sampler import CompiledDecodeStep, SamplingParams, sample_image_tokens
from rl.model.tiny import tiny_policy_config, tiny_tokenizer
from rl.model.tokenizer import PromptFormat
from rl.seeding import sample_seed
from rl.timing import interleaved_median_seconds, median_seconds

PROMPTS = ["a red fox in fresh snow, morning light", "a neon sign that says OPEN", "an astronaut riding a horse",
           "a bowl of ramen, top view, studio photo"]


def xomni_7b_config(num_layers: int) -> XOmniConfig:
    """Qwen2.5-7B's shape with X-Omni's 4 + 4 image-only layers (num_layers counts all of them)."""
    return XOmniConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=num_layers,
                       num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, num_mm_adap_layers=min(4, num_layers // 3),
                       num_mm_head_layers=min(4, num_layers // 3), tie_word_embeddings=False)


def generate_twin(config: XOmniConfig, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A Qwen2ForCausalLM with the policy's shape whose vocabulary is the image codes."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    twin = Qwen2Config(vocab_size=config.image_vocab_size, hidden_size=config.hidden_size,
                       intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                       num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                       max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
                       rope_parameters=dict(config.rope_parameters), tie_word_embeddings=False,
                       attn_implementation="sdpa")
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return Qwen2ForCausalLM(twin).eval()
    finally:
        torch.set_default_dtype(default)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if args.model_size == "7b" else "cpu"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.model_size == "7b" else "float32"))
    config = xomni_7b_config(args.num_layers or 36) if args.model_size == "7b" else tiny_policy_config(
        **({"num_hidden_layers": args.num_layers} if args.num_layers else {}))
    policy = XOmniPolicy.from_config(config, seed=0, torch_dtype=dtype, device=device).eval()
    fmt = PromptFormat(tiny_tokenizer(), config.vocab_size)  # its ids (< 260) are valid text ids of both models
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    params = SamplingParams()  # X-Omni's: temperature 1, top_k 50, min_p 0.03
    seeds = [sample_seed(0, 0, i, 0, "policy") for i in range(args.batch)]

    def ours(grid, compiled=None):
        return lambda: sample_image_tokens(policy, fmt.encode(prompts, grid), params, seeds, compiled)

    grid, variants, compile_s = tuple(args.grid), {"ours": ours(tuple(args.grid))}, None
    if args.compile:
        compiled = CompiledDecodeStep(policy, args.batch)
        # The first call compiles for this batch and cache size; later calls reuse the graph.
        compile_s = median_seconds(ours(grid, compiled), device, 1, warmup=False)
        variants["ours_compiled"] = ours(grid, compiled)
    seconds = interleaved_median_seconds(variants, device, args.repeats)  # eager and compiled in turns
    ours_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    policy = None  # free its memory before the twin is built
    if device.type == "cuda":
        torch.cuda.empty_cache()
    twin = generate_twin(config, dtype, device)

    def generate(grid):
        batch = fmt.encode(prompts, grid).to(device)
        tokens = grid[0] * grid[1]
        return lambda: twin.generate(batch.input_ids, attention_mask=batch.attention_mask, do_sample=True,
                                     temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                                     min_p=params.min_p,
                                     max_new_tokens=tokens, min_new_tokens=tokens, eos_token_id=None,
                                     pad_token_id=batch.pad_id)

    with torch.inference_mode():
        generate((2, 2))()
        seconds["generate"] = median_seconds(generate(grid), device, args.repeats, warmup=False)
    tokens = args.batch * args.grid[0] * args.grid[1]
    result = {"model_size": args.model_size, "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "dtype": str(dtype).removeprefix("torch."),
              "layers": config.num_hidden_layers, "batch": args.batch, "grid": list(args.grid), "image_tokens": tokens,
              "image_tokens_per_s": {k: round(tokens / v, 1) for k, v in seconds.items()},
              "seconds": {k: round(v, 3) for k, v in seconds.items()},
              "ratio_ours_over_generate": round(seconds["generate"] / seconds["ours"], 3)}
    if args.compile:  # the eager sampler, measured in the same run, is the baseline
        result["speedup_compiled_vs_eager"] = round(seconds["ours"] / seconds["ours_compiled"], 3)
        result["compile_s"] = round(compile_s, 1)
    return {**result, "ours_peak_gpu_gib": None if ours_mem is None else round(ours_mem, 2),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=["tiny", "7b"], default="tiny")
    parser.add_argument("--batch", type=int, default=None, help="rows (prompts x samples); tiny 8, 7b 16")
    parser.add_argument("--grid", type=int, nargs=2, default=None, help="token grid h w; tiny 16 16, 7b 32 32")
    parser.add_argument("--device", default=None, help="default: cpu for tiny, cuda for 7b")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--num-layers", type=int, default=None, help="shrink the model (smoke runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled sampler")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or (16 if args.model_size == "7b" else 8)
    args.grid = args.grid or ([32, 32] if args.model_size == "7b" else [16, 16])
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
