"""Training state at scale, measured on the CPU against the code before (`--before`, default: the commit this
branch started from, extracted from git into a temporary folder and run from there). Prints JSON.

    python scripts/bench_state.py                          # all three parts, a ~220M-parameter policy
    python scripts/bench_state.py --parts load --no-before --ranks 1 2 --params-m 150

- load: learner processes (1 and/or 2 gloo ranks) set up the policy alone (kl_coef 0, no reference) from an
  fp32 X-Omni folder and read every parameter once (as the first step would: memory-mapped weights are only
  resident once read); per process, peak RSS (VmHWM) less its RSS just before `setup`, summed over the ranks and
  divided by the policy's bytes in the load dtype.
- sync: bytes one weight sync moves: the tensors the learner sends to the rollout actors (before: every
  parameter in the learner's dtype, from `weight_spec`; after: `sync_spec(rollout dtype)`), for this policy and,
  computed from parameter counts on the meta device, for the ~9.6B X-Omni policy.
- save: seconds for a learner of 1 and/or 2 ranks (after one update, so AdamW state exists) to save and load a
  checkpoint of a ~0.5B-parameter policy (`--save-params-m`; the slowest rank), and the checkpoint's size.
Every figure comes from subprocesses running the code under test; ratios compare the same run's measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# -- inside a worker process (imports come from the tree on PYTHONPATH) ---------------------------------------

def rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def make_learner(folder: str, rank: int, world: int):
    from rl.distributed.learner import Learner
    from rl.train_config import LearnerConfig

    try:
        from rl.schema.trainer import BatchingConfig, LossConfig, TrainerConfig

        trainer = TrainerConfig(loss=LossConfig(kl_coef=0.0), batching=BatchingConfig(micro_batch_size=1))
    except ImportError:  # a tree from before the trainer's sections
        from rl.train_config import TrainerConfig

        trainer = TrainerConfig(kl_coef=0.0, micro_batch_size=1)

    model = {"policy": {"_component_": "rl.model.policy.XOmniPolicy.from_pretrained", "path": folder},
             "tokenizer": {"_component_": "rl.model.tiny.tiny_tokenizer"}}
    return Learner(model, trainer, LearnerConfig(world_size=world),
                   (1, 6), 1.0, rank)


def worker_load(folder: str, rank: int, world: int, port: int) -> dict:
    import torch

    learner = make_learner(folder, rank, world)
    baseline = rss_mib("VmRSS")
    learner.setup("127.0.0.1", port)
    with torch.no_grad():
        for param in learner.policy.parameters():
            (param.to_local() if hasattr(param, "to_local") else param).sum()
    return {"baseline_mib": baseline, "peak_mib": rss_mib("VmHWM")}


def worker_sync(folder: str) -> dict:
    learner = make_learner(folder, 0, 1)
    learner.setup()
    if hasattr(learner, "sync_spec"):
        return {"bytes": learner.sync_spec("bfloat16").nbytes}
    import torch

    spec = learner.weight_spec()  # the code before: name -> (shape, dtype) of what a sync sent
    return {"bytes": sum(torch.Size(shape).numel() * torch.empty(0, dtype=getattr(torch, dtype)).element_size()
                         for shape, dtype in spec.values())}


def worker_save(folder: str, rank: int, world: int, port: int, out: str) -> dict:
    import torch

    from rl.distributed.learner import TrainBatch

    learner = make_learner(folder, rank, world)
    learner.setup("127.0.0.1", port)
    rows = 2  # one per rank at most
    learner.update(TrainBatch(["a sign"] * rows, torch.zeros(rows, 6, dtype=torch.long), torch.zeros(rows, 6),
                              torch.ones(rows)))
    Path(out).mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    learner.save(out)
    if torch.distributed.is_initialized():  # the driver waits for every rank's save before any load
        torch.distributed.barrier()
    saved = time.perf_counter()
    learner.load(out)
    loaded = time.perf_counter()
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return {"save_s": round(saved - began, 2), "load_s": round(loaded - saved, 2), "checkpoint_gib": size / 2**30}


# -- the driver ------------------------------------------------------------------------------------------------

def policy_config(params_m: float):
    """A Qwen2-shaped X-Omni config of about `params_m` million parameters (width 1024, text vocab 32000)."""
    from rl.model.xomni_model import XOmniConfig

    fixed = 2 * 32000 * 1024 + 2 * 16448 * 1024  # two text and two image tables/heads
    per_layer = 4 * 1024 * 1024 + 3 * 1024 * 4096
    layers = max(3, round((params_m * 1e6 - fixed) / per_layer))
    return XOmniConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers,
                       num_mm_adap_layers=1, num_mm_head_layers=1, num_attention_heads=16, num_key_value_heads=16,
                       tie_word_embeddings=False)


def write_policy(folder: Path, params_m: float) -> int:
    """Random fp32 weights in X-Omni's format (2 GB shards); returns the parameter count."""
    from rl.model.policy import XOmniPolicy

    policy = XOmniPolicy.from_config(policy_config(params_m), seed=0)
    policy.save_pretrained(folder, max_shard_size="2GB")
    return sum(p.numel() for p in policy.parameters())


def measure_save(tree: Path, folder: Path, ranks: int, out: Path) -> dict:
    results = run_ranks(tree, "save", ranks, str(folder), str(out))
    shutil.rmtree(out, ignore_errors=True)
    if "error" in results[0]:
        return {"ranks": ranks, **results[0]}
    return {"ranks": ranks, "save_s": max(r["save_s"] for r in results), "load_s": max(r["load_s"] for r in results),
            "checkpoint_gib": round(results[0]["checkpoint_gib"], 3)}


def run_worker(tree: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", *args], env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args[:1]} failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_ranks(tree: Path, kind: str, ranks: int, *args: str) -> list[dict]:
    """`ranks` worker processes of `kind` forming one gloo group; their JSON answers by rank."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", kind, args[0], str(rank), str(ranks), str(port),
                               *args[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(ranks)]
    answers = [proc.communicate(timeout=3600) for proc in procs]
    codes = [proc.returncode for proc in procs]
    if any(codes):  # e.g. -9: killed by the kernel when the host ran out of memory
        return [{"error": f"exit codes by rank {codes}", "stderr_tail": [err.strip()[-200:] for _, err in answers]}]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in answers]


def measure_load(tree: Path, folder: Path, ranks: int, policy_bytes: int) -> dict:
    results = run_ranks(tree, "load", ranks, str(folder))
    if "error" in results[0]:
        return {"ranks": ranks, **results[0]}
    added = sum(r["peak_mib"] - r["baseline_mib"] for r in results) * 2**20
    return {"ranks": ranks, "added_rss_mib": round(added / 2**20, 1),
            "ratio_to_policy_bytes": round(added / policy_bytes, 3), "per_rank": results}


def xomni_sync_bytes() -> dict:
    """Bytes per sync for the ~9.6B X-Omni policy from meta-device parameter counts: before, every parameter in
    fp32; after, the trained ones (all but lm_head and the text embedding) in bf16."""
    import torch

    from rl.model.policy import XOmniPolicy
    from rl.model.xomni_model import XOmniConfig

    config = XOmniConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=36,
                         num_mm_adap_layers=4, num_mm_head_layers=4, num_attention_heads=28, num_key_value_heads=4,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        policy = XOmniPolicy(config)
    counts = {n: p.numel() for n, p in policy.named_parameters()}
    trained = sum(v for n, v in counts.items() if not n.startswith(("lm_head.", "model.lm_embed_tokens.")))
    return {"parameters": sum(counts.values()), "before_gb": round(sum(counts.values()) * 4 / 1e9, 2),
            "after_gb": round(trained * 2 / 1e9, 2), "note": "computed from parameter counts, not measured"}


def extract(rev: str, into: Path) -> Path:
    """The repository's packages at `rev`, unpacked from git (the code before this branch)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "rl", "rewards", "prompts"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=["load", "sync", "save"], default=["load", "sync", "save"])
    parser.add_argument("--params-m", type=float, default=220, help="policy size for load and sync (millions)")
    parser.add_argument("--save-params-m", type=float, default=500, help="policy size for save/load (millions)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--before", default=None, help="git revision of the code before (default: merge-base "
                        "of HEAD and main)")
    parser.add_argument("--no-before", action="store_true", help="measure this tree only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_state-"))
    try:
        trees = {"after": REPO}
        if not args.no_before:
            rev = args.before or subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"],
                                                capture_output=True, text=True, check=True).stdout.strip()
            trees["before"] = extract(rev, work / "before")
        result: dict = {"before_revision": None if args.no_before else rev}
        folder = work / "policy"
        if {"load", "sync"} & set(args.parts):
            count = write_policy(folder, args.params_m)
            result["policy"] = {"parameters": count, "bytes_fp32": count * 4}
        if "load" in args.parts:
            result["load"] = {name: [measure_load(tree, folder, n, count * 4) for n in args.ranks]
                              for name, tree in trees.items()}
        if "sync" in args.parts:
            result["sync"] = {name: run_worker(tree, ["sync", str(folder)]) for name, tree in trees.items()}
            result["sync"]["xomni_9.6b"] = xomni_sync_bytes()
        shutil.rmtree(folder, ignore_errors=True)
        if "save" in args.parts:
            count = write_policy(folder, args.save_params_m)
            result["save"] = {"parameters": count, **{
                name: [measure_save(tree, folder, n, work / f"ckpt-{name}-{n}") for n in args.ranks]
                for name, tree in trees.items()}}
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def worker_main(argv: list[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "load":
        out = worker_load(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    elif kind == "sync":
        out = worker_sync(rest[0])
    else:
        out = worker_save(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        main()
