"""Learner throughput: image tokens/s of a forward + backward through `XOmniPolicy.token_logprobs`, against
the direct way (log-softmax over all 16,384 image codes at every position, then gather) on the same model,
weights and batch, measured in the same run. Prints JSON.

    python scripts/bench_learner.py                      # tiny policy on the CPU
    python scripts/bench_learner.py --model-size 7b      # on a GPU: Qwen2.5-7B-shaped X-Omni, random bf16 weights

`token_logprobs` forms logits only where image tokens are predicted, in chunks recomputed in the backward
pass, so its peak memory does not grow with [B, T, 16384] float32 logits; the price is recomputing the image
head, visible on tiny models (where the head dominates) and small next to the transformer at 7B.
"""

from __future__ import annotations

import argparse
import json
import resource

import torch

from rl.model.policy import XOmniPolicy
from rl.model.tiny import tiny_policy_config
from rl.model.xomni_model import XOmniConfig
from rl.timing import median_seconds

PROMPT_TOKENS = 32


def config_for(size: str, layers: int | None) -> XOmniConfig:
    if size == "tiny":
        return tiny_policy_config()
    # Qwen2.5-7B's shape (X-Omni adds 4 + 4 image-only blocks to its 28 layers).
    return XOmniConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=layers or 36, num_mm_adap_layers=4, num_mm_head_layers=4,
                       num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, rms_norm_eps=1e-6,
                       max_position_embeddings=32768, tie_word_embeddings=False)


def direct_logprobs(policy: XOmniPolicy, input_ids: torch.Tensor, num_image_tokens: int) -> torch.Tensor:
    """The baseline: full image-mode log-softmax [B, L, K] at every position, then the taken tokens."""
    logprobs = policy.image_logprobs(input_ids[:, :-1])[:, -num_image_tokens:]  # [B, T, K] float32
    codes = input_ids[:, -num_image_tokens:] - policy.config.vocab_size
    return logprobs.gather(-1, codes[..., None]).squeeze(-1)


def timed(step, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per call and peak memory in GiB: the GPU's, or on the CPU the process's peak RSS so far
    (monotonic, so `ours` runs first and the direct path's figure shows what it adds)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = median_seconds(step, device, repeats)
    if device.type == "cuda":
        return seconds, torch.cuda.max_memory_allocated() / 2**30
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=["tiny", "7b"], default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="override the layer count (7b only)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--grid", type=int, default=16, help="image tokens per side")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = config_for(args.model_size, args.layers)
    policy = XOmniPolicy.from_config(config, seed=0, torch_dtype=dtype, device=device).train()
    policy.model.gradient_checkpointing = args.model_size == "7b"
    tokens = args.grid * args.grid
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, config.vocab_size, (args.batch, PROMPT_TOKENS), generator=generator)
    codes = torch.randint(0, config.image_vocab_size, (args.batch, tokens), generator=generator)
    input_ids = torch.cat([prompt, codes + config.vocab_size], dim=1).to(device)

    def ours():
        policy.zero_grad(set_to_none=True)
        policy.token_logprobs(input_ids, None, tokens).logprobs.mean().backward()

    def direct():
        policy.zero_grad(set_to_none=True)
        direct_logprobs(policy, input_ids, tokens).mean().backward()

    with torch.no_grad():  # the two compute the same numbers
        gap = (policy.token_logprobs(input_ids, None, tokens).logprobs - direct_logprobs(policy, input_ids, tokens))
    results = {name: timed(fn, args.repeats, device) for name, fn in (("ours", ours), ("direct", direct))}
    count = args.batch * tokens
    print(json.dumps({
        "model_size": args.model_size, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "layers": config.num_hidden_layers, "batch": args.batch, "image_tokens_per_sequence": tokens,
        "max_abs_logprob_gap": gap.abs().max().item(),
        "image_tokens_per_s": {name: round(count / s, 1) for name, (s, _) in results.items()},
        "ratio_ours_over_direct": round(results["direct"][0] / results["ours"][0], 3),
        "peak_memory_gib": {name: round(peak, 3) for name, (_, peak) in results.items()},
        "peak_memory_is": "gpu allocated" if device.type == "cuda" else "process max RSS after each",
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
