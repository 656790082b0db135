"""The GPU check behind scripts/gpu_check.sh: random weights at the real shapes, no downloads, no Ray. Runs in
stages; each finished stage appends one JSON line to $OUT/gpu_check.jsonl at once (flushed and synced), so a
timeout or a crash keeps every stage before it. gpu_check.sh runs each stage in a process of its own under the
stage's time budget (`--list`), so one stage that hangs or takes the CUDA context down costs only itself.

    python scripts/gpu_check.py --list            # the stages and their budgets (s)
    python scripts/gpu_check.py --only decoder    # one stage, on one H100/H200
    python scripts/gpu_check.py --smoke           # every stage at tiny shapes on the CPU (tests/test_gpu_check.py)

Measured, each against a baseline from the same run:
  train_step:  the colocated worker's real phases in one process at X-Omni-7B's widths (scripts/gpu_check_step.py):
               per-phase peak memory next to rl.plan's figure, pinned host bytes next to the plan's, the first
               update's ratio (1 under recompute), host syncs per sampled token.
  sampler:     `sample_image_tokens` eager and compiled (`rollout.compile`) vs transformers' generate() on a
               same-shaped Qwen2 (scripts/bench_sampler.py), batch 16 and 64, 24x24 tokens: image tokens/s and
               the fraction of the HBM roofline (every decode step reads the weights and the KV cache once).
  learner:     one micro-batch forward + backward through `token_logprobs`, full and LoRA (peft): tokens/s and
               peak memory.
  decoder:     a FLUX-12B-shaped transformer with SigLIP injection at 384 px: seconds per image for the
               decoder steps, with true CFG (2 rows per image) and without.
  weight_sync: the learner's bf16 buckets (rl/distributed/weight_sync.py) copied into a second replica on the
               same device: bytes/s.
Never run on a GPU so far (no GPU on the machine it was written on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* scripts beside this one
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, without an install

# HBM bandwidth in bytes/s by device name (the SXM parts' datasheet figures); --hbm-tb-s overrides.
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}


def guarded(results: dict, name: str, fn: Callable[[], dict]) -> None:
    """results[name] = fn(), or its error: one failing measurement never hides the others."""
    began = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # noqa: BLE001 (reported in the JSON, the next measurement still runs)
        results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    results[name]["wall_s"] = round(time.perf_counter() - began, 1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def hbm_bandwidth(override_tb_s: float | None) -> float | None:
    if override_tb_s:
        return override_tb_s * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)


def policy_config(smoke: bool):
    from bench_learner import config_for

    return config_for("tiny" if smoke else "7b", None)


def sampler(args: argparse.Namespace, batch: int) -> dict:
    """scripts/bench_sampler.py's comparison at one batch size, plus the roofline fraction."""
    from bench_sampler import run

    config = policy_config(args.smoke)
    grid = [4, 4] if args.smoke else [24, 24]
    result = run(SimpleNamespace(model_size="tiny" if args.smoke else "7b", device=args.device, dtype=args.dtype,
                                 num_layers=None, batch=batch, grid=grid, compile=args.compile,
                                 repeats=args.repeats))
    bandwidth = hbm_bandwidth(args.hbm_tb_s)
    if bandwidth:
        tokens_per_s = _roofline_tokens_per_s(config, batch, grid[0] * grid[1], bandwidth)
        result["hbm_roofline_image_tokens_per_s"] = round(tokens_per_s, 1)
        result["fraction_of_hbm_roofline"] = {k: round(v / tokens_per_s, 3)
                                              for k, v in result["image_tokens_per_s"].items()}
    return result


def _roofline_tokens_per_s(config, batch: int, tokens: int, bandwidth: float) -> float:
    """Image tokens/s if every decode step only read, once, the bf16 weights one token's forward touches (all
    layers and the image head; not the text embedding/head) and the KV cache at its mean length."""
    width, layers = config.hidden_size, config.num_hidden_layers
    heads_kv, head_dim = config.num_key_value_heads, width // config.num_attention_heads
    per_layer = 2 * width * width + 2 * width * heads_kv * head_dim + 3 * width * config.intermediate_size
    weight_bytes = 2 * (layers * per_layer + width * config.image_vocab_size)
    kv_bytes = 2 * 2 * layers * heads_kv * head_dim * batch * (32 + tokens / 2)  # K and V, bf16, mean length
    return batch * bandwidth / (weight_bytes + kv_bytes)


def learner(args: argparse.Namespace, lora: bool) -> dict:
    """One micro-batch forward + backward through token_logprobs with gradient checkpointing (as the learner
    trains at 7B): image tokens/s and peak memory."""
    from rl.model import lora as lora_lib
    from rl.model.policy import XOmniPolicy
    from rl.timing import median_seconds

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = policy_config(args.smoke)
    policy = XOmniPolicy.from_config(config, seed=0, torch_dtype=dtype, device=device).train()
    policy.model.gradient_checkpointing = True
    if lora:
        policy.requires_grad_(False)
        lora_lib.add_adapters(policy, lora_lib.LoraSettings(r=64, alpha=64.0))  # adapters on the meta device
        for _, layer in lora_lib.lora_layers(policy):
            for adapters in (layer.lora_A, layer.lora_B):
                adapters.to_empty(device=device).to(dtype)
        lora_lib.init_adapters(policy, seed=0)
    batch, tokens = args.micro_batch, (16 if args.smoke else 576)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, config.vocab_size, (batch, 32), generator=generator)
    codes = torch.randint(0, config.image_vocab_size, (batch, tokens), generator=generator)
    input_ids = torch.cat([prompt, codes + config.vocab_size], dim=1).to(device)

    def step():
        policy.zero_grad(set_to_none=True)
        policy.token_logprobs(input_ids, None, tokens).logprobs.mean().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = median_seconds(step, device, args.repeats)
    trained = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"lora": lora, "micro_batch": batch, "image_tokens_per_sequence": tokens, "trained_params": trained,
            "image_tokens_per_s": round(batch * tokens / seconds, 1), "seconds": round(seconds, 4),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def decoder(args: argparse.Namespace) -> dict:
    """Seconds per image for `--decoder-steps` transformer steps at 384 px (24x24 tokens), with true CFG (both
    branches batched, 2 rows per image) and without (1 row per image), on the FLUX-12B shape."""
    from bench_decoder import T5_TOKENS, cfg_step_times

    from rl.decoder import FluxSigLIPTransformer

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shape = dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                 joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6), siglip_channels=8) \
        if args.smoke else dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                                joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56),
                                siglip_channels=1536)
    transformer = FluxSigLIPTransformer(in_channels=64, guidance_embeds=True, **shape).to(device, dtype).eval()
    grid, batch = ((2, 2) if args.smoke else (24, 24)), args.decoder_batch
    step = cfg_step_times(transformer, batch, grid, 8 if args.smoke else T5_TOKENS, device, dtype, args.repeats)
    # Two passes of `batch` rows: each is one step without CFG.
    no_cfg_step = step["two_pass_cfg_s_per_step"] / 2
    return {"resolution_px": 16 * grid[0], "batch": batch, "steps": args.decoder_steps, **step,
            "s_per_image_cfg": round(step["batched_cfg_s_per_step"] * args.decoder_steps / batch, 4),
            "s_per_image_no_cfg": round(no_cfg_step * args.decoder_steps / batch, 4),
            "params": sum(p.numel() for p in transformer.parameters())}


def weight_sync(args: argparse.Namespace) -> dict:
    """The learner's sync path without a process group: trained tensors cast to bf16 bucket by bucket
    (gathered_buckets), each loaded into a replica's parameters on the same device (load_bucket)."""
    from rl.distributed.weight_sync import SyncItem, gathered_buckets, load_bucket, plan_buckets
    from rl.model.policy import XOmniPolicy

    device = torch.device(args.device)
    config = policy_config(args.smoke)
    source = XOmniPolicy.from_config(config, seed=0, torch_dtype=torch.bfloat16, device=device)
    replica = XOmniPolicy.from_config(config, seed=1, torch_dtype=torch.bfloat16, device=device)
    items = [SyncItem(name, p.shape, p.detach) for name, p in source.named_parameters()
             if not name.startswith(("lm_head.", "model.lm_embed_tokens."))]
    buckets, params = plan_buckets(items, torch.bfloat16), replica.state_dict()

    def sync() -> int:
        sent = 0
        for bucket in gathered_buckets(buckets, torch.bfloat16, None):
            load_bucket(params, bucket)
            sent += sum(t.numel() * t.element_size() for _, t in bucket)
        return sent

    sent = sync()  # warm-up, and the byte count
    from rl.timing import median_seconds

    seconds = median_seconds(sync, device, args.repeats)
    return {"bytes": sent, "buckets": len(buckets), "seconds": round(seconds, 4),
            "bytes_per_s": round(sent / seconds), "gb_per_s": round(sent / seconds / 1e9, 2)}


# Stages in the order gpu_check.sh runs them, with their budgets on one H100 in seconds (process start and
# imports included; 295 s in all, so the check fits 5 minutes). The smoke mode's budget is SMOKE_BUDGET_S each.
BUDGET_S = {"train_step": 75, "sampler_b16": 35, "sampler_b64": 45, "learner_full": 35, "learner_lora": 35,
            "decoder": 45, "weight_sync": 25}
SMOKE_BUDGET_S = 240  # a cold CPU start of one stage on the 2-core CI machine, with room to spare


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (the test's mode)")
    parser.add_argument("--list", action="store_true", help="print each stage and its budget in seconds, then exit")
    parser.add_argument("--only", nargs="*", default=None, help=f"stages to run ({' '.join(BUDGET_S)}); default all")
    parser.add_argument("--out", default=None, help="JSONL file to append to (default: $OUT/gpu_check.jsonl, or "
                                                    "./gpu_check.jsonl without OUT)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (median); 3, smoke 1")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled sampler")
    parser.add_argument("--micro-batch", type=int, default=None, help="learner rows per micro-batch; 4, smoke 2")
    parser.add_argument("--decoder-batch", type=int, default=None, help="images per decoder step; 4, smoke 1")
    parser.add_argument("--decoder-steps", type=int, default=28, help="denoising steps per image")
    parser.add_argument("--hbm-tb-s", type=float, default=None, help="HBM bandwidth (default: by device name)")
    args = parser.parse_args(argv)
    args.device, args.dtype = ("cpu", "float32") if args.smoke else ("cuda", "bfloat16")
    args.repeats = args.repeats or (1 if args.smoke else 3)
    args.micro_batch = args.micro_batch or (2 if args.smoke else 4)
    args.decoder_batch = args.decoder_batch or (1 if args.smoke else 4)
    args.out = Path(args.out or Path(os.environ.get("OUT", "."), "gpu_check.jsonl"))
    unknown = sorted(set(args.only or ()) - set(BUDGET_S))
    if unknown:
        parser.error(f"unknown stages {unknown}; the stages are {list(BUDGET_S)}")
    return args


def stages(args: argparse.Namespace) -> dict[str, Callable[[], dict]]:
    from gpu_check_step import run as train_step

    return {"train_step": lambda: train_step(args.smoke),
            "sampler_b16": lambda: sampler(args, 16 if not args.smoke else 2),
            "sampler_b64": lambda: sampler(args, 64 if not args.smoke else 4),
            "learner_full": lambda: learner(args, lora=False), "learner_lora": lambda: learner(args, lora=True),
            "decoder": lambda: decoder(args), "weight_sync": lambda: weight_sync(args)}


def append_line(path: Path, record: dict) -> None:
    """One JSON line, on disk before the next stage starts (a kill or a crash later keeps it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the stages asked for; returns their records (each also appended to `--out` and printed)."""
    args = parse_args(argv)
    if args.list:
        for name, budget in BUDGET_S.items():
            print(name, SMOKE_BUDGET_S if args.smoke else budget)
        return []
    if args.smoke:
        args.compile = False  # compiling takes minutes on a CPU; the CPU tests cover compiled == eager
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke for the CPU check")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"
    records, run = [], stages(args)
    for name in args.only or BUDGET_S:
        results: dict = {}
        guarded(results, name, run[name])
        record = {"stage": name, "device": device, "torch": torch.__version__, "smoke": args.smoke, **results[name]}
        append_line(args.out, record)
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


if __name__ == "__main__":
    main()
