"""The memory formulas (rl/distributed/memory.py) against what the code really allocates on the CPU.

The measured quantity is the peak of bytes held by live tensors, replayed from the allocation and free events
of torch's CPU memory profiler (each free matched to its allocation by address, so tensors left over from an
earlier profiled run cannot inflate it, as the profiler's own running total does within one process). That is
what the plan estimates: tensor bytes, the CPU counterpart of `torch.cuda.max_memory_allocated`. Process RSS
would add the interpreter, the libraries and the allocator's caching, which the plan covers with its margin;
tracemalloc does not see tensor storage at all (torch allocates it outside Python's allocator).
"""

import json
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from train_helpers import tiny_spec

from core.config import to_container
from rl.distributed.learner import Learner, TrainBatch
from rl.distributed.memory import activation_bytes, kv_cache_bytes, learner_phases
from rl.distributed.memory_plan import learner_setup, model_sizes
from rl.model.tiny import tiny_policy

# A small policy whose activations, not its weights, dominate a micro-batch: 128 wide, 6 layers, 2048 codes.
SMALL_POLICY = ("model.policy.hidden_size=128", "model.policy.intermediate_size=352",
                "model.policy.num_attention_heads=4", "model.policy.num_key_value_heads=2",
                "model.policy.image_vocab_size=2048", "model.policy.mm_vocab_size=2112")
PROMPTS = [f"A neon shop sign reading \"OPEN {i}\" over a door" for i in range(8)]
GRID = (8, 16)


def peak_tensor_bytes(run, trace: Path) -> int:
    """The largest number of bytes held by CPU tensors allocated while `run()` executes."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    prof.export_chrome_trace(str(trace))
    with open(trace) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"]
    live, held, peak = {}, 0, 0
    for event in sorted(events, key=lambda e: (e["ts"], e["args"]["Ev Idx"])):
        address, size = event["args"]["Addr"], event["args"]["Bytes"]
        if size > 0:
            live[address] = size
            held += size
        elif address in live:
            held -= live.pop(address)
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("checkpointing", [False, True])
def test_learner_estimate_is_within_25_percent_of_the_measured_peak(tmp_path, checkpointing):
    """A learner rank built and updated twice (the second update holds AdamW state) by the real Learner."""
    # A KL term (so the reference is held and run) and one optimizer step per update, whatever the demo tunes.
    overrides = (*SMALL_POLICY, f"rollout.grid=[{GRID[0]},{GRID[1]}]", "trainer.batching.micro_batch_size=8",
                 f"trainer.gradient_checkpointing={checkpointing}", "trainer.loss.kl_coef=0.01",
                 "trainer.batching.mini_batches=1")
    spec = tiny_spec(tmp_path, overrides=overrides)
    learner = Learner(to_container(spec.cfg.model), spec.trainer, spec.learner, GRID, 1.0)
    tokens = torch.randint(0, 2048, (len(PROMPTS), GRID[0] * GRID[1]), generator=torch.Generator().manual_seed(0))
    batch = TrainBatch(PROMPTS, tokens, torch.full(tokens.shape, -7.6), torch.linspace(-1, 1, len(PROMPTS)))

    def run():
        learner.setup()
        learner.update(batch)
        learner.update(batch)

    measured = peak_tensor_bytes(run, tmp_path / "trace.json")
    prompt_tokens = learner.format.encode(PROMPTS, GRID).input_ids.shape[1]  # with the <SOM>h w<IMAGE> prefix
    spec.placement.prompt_tokens = prompt_tokens
    sizes = model_sizes(spec)
    setup = learner_setup(spec, sizes)
    estimate = max(sum(parts.values()) for parts in learner_phases(sizes.policy.shape, setup).values())
    assert abs(estimate / measured - 1) < 0.25, (estimate, measured)
    # activations are most of the peak, so the comparison really checks the activation formula
    assert activation_bytes(sizes.policy.shape, setup, checkpointing) > 0.4 * measured


def test_kv_cache_formula_equals_the_cache_the_sampler_fills(tmp_path):
    spec = tiny_spec(tmp_path, overrides=SMALL_POLICY)
    shape = model_sizes(spec).policy.shape
    policy = tiny_policy(**{o.split("=")[0].removeprefix("model.policy."): int(o.split("=")[1]) for o in SMALL_POLICY})
    rows, length = 3, 40
    cache = policy.new_cache()
    with torch.no_grad():
        policy(torch.randint(0, 200, (rows, length)), None, cache)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == kv_cache_bytes(shape, rows, length, 4)


@pytest.mark.parametrize("trained", ["full", "full+text embedding", "lora"])
def test_learner_terms_count_what_the_learner_builds(tmp_path, trained):
    """The plan's trained parameters (gradients, AdamW state), reference copy and weight-sync bytes against a real
    Learner: the text head is never trained, the text embedding only when unfrozen; the reference is a copy in
    learner.reference_dtype (none with LoRA: the base is the reference); the sync moves the trained weights (with
    LoRA the adapted layers' merged weights) in the rollout dtype."""
    overrides = {"full": (), "full+text embedding": ("trainer.freeze_text_embedding=false",),
                 "lora": ("trainer.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, down_proj]}",)}
    spec = tiny_spec(tmp_path, overrides=(*overrides[trained], "learner.reference_dtype=bfloat16",
                                          "trainer.loss.kl_coef=0.01"))  # a KL term: the reference is built
    learner = Learner(to_container(spec.cfg.model), spec.trainer, spec.learner, GRID, 1.0)
    learner.setup()
    sizes = model_sizes(spec)
    setup = learner_setup(spec, sizes)
    assert setup.trained == sum(p.numel() for _, p in learner.trained)
    assert setup.sync_bytes == learner.sync_spec(spec.rollout.dtype).nbytes
    if trained == "lora":
        assert learner.reference is None and setup.reference_bytes == 0
        assert setup.param_bytes == 2 and {p.dtype for n, p in learner.policy.named_parameters()
                                           if not p.requires_grad} == {torch.bfloat16}
    else:
        assert {p.dtype for p in learner.reference.parameters()} == {torch.bfloat16} and setup.reference_bytes == 2
        phases = learner_phases(sizes.policy.shape, setup)
        assert phases["forward/backward"]["reference"] == sum(p.numel() * 2 for p in learner.reference.parameters())
        frozen = {n for n, p in learner.policy.named_parameters() if not p.requires_grad}
        assert "lm_head.weight" in frozen and ("model.lm_embed_tokens.weight" in frozen) == (trained == "full")
