"""`python -m rl.generate`: sample images for a prompt file from a policy + decoder, for `rewards.score`.

    python -m rl.generate CONFIG --prompts FILE --out DIR [--samples-per-prompt K] [--grid H W]
        [--batch-size B] [--seed S] [--checkpoint CKPT] [--device D] [--dtype T] [--save-tokens] [key=value ...]

CONFIG is any training YAML (configs/xomni.yaml, configs/tiny.yaml): its `model` section (policy, tokenizer,
decoder components) is built as the rollout builds it, and `rollout.sampling` / `.grid` / `.dtype` /
`.batch_size` are the defaults of the matching flags. `--checkpoint` samples a trained policy instead of
model.policy: a training checkpoint directory (its trained weights over model.policy, the policy the run
started from, LoRA merged) or any X-Omni policy folder.

Writes DIR/images/{prompt_index:05d}_{k}.png and DIR/manifest.jsonl, one line per image (`image`, `prompt`,
`prompt_index`, `sample`, `seed`, `valid`, the prompt file's metadata such as `text` and `task`, and
`tokens` with --save-tokens: DIR/tokens/{stem}.npy, the int32 [h, w] image codes). A manifest line is
written after its PNG, so a rerun into the same DIR skips the images already listed; DIR/generation.json
records what the images depend on, and a rerun with other settings is refused. Image k of prompt i is drawn
with the seeds `sample_seed(S, 0, i, k, "policy" / "decoder")`: the same on any batch size.
Exit status: 0 when done, 2 for a bad config or command line (every problem listed before a model loads).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from core.cli import CommandParser, add_overrides, command, prog
from core.components import instantiate, resolve_component, validate_component
from core.config import ConfigError, load_config, to_container
from core.devices import resolve_device, resolve_dtype
from core.schema import build_section, validate_section
from prompts.sources import PromptSource
from rewards.score import resume
from rl.decoder import ImageDecoder, to_uint8_images
from rl.model.policy import CONFIG_NAME, XOmniPolicy
from rl.model.sampler import SamplingParams, sample_image_tokens
from rl.model.tokenizer import PromptFormat
from rl.seeding import sample_seed
from rl.state.checkpoint import CorruptCheckpoint, is_complete, verify_checkpoint
from rl.state.learner_checkpoint import LEARNER_DIR
from rl.train_config import MODEL_COMPONENTS, RolloutConfig

MANIFEST, SETTINGS, IMAGES, TOKENS = "manifest.jsonl", "generation.json", "images", "tokens"
DTYPES = ("float32", "bfloat16", "float16")
SECTIONS = ("model", "rollout", "paths")  # what it reads of a config; `paths` for ${paths.x} in model


@dataclass
class GenerationJob:
    """A validated command line. `model` is the plain model section (policy replaced by --checkpoint);
    `settings` is what the images depend on (stored in DIR/generation.json); `decoder_kwargs` carries
    --device to decoders that take a device. For rl.evaluate: `num_prompts` draws only the first N prompts
    of the file (None: all), and `prompt_ids` (one per prompt drawn) names the images `{prompt_id}_{k}.png`,
    LongText-Bench's layout, instead of `{prompt_index:05d}_{k}.png`."""

    model: dict[str, Any]
    source: PromptSource
    out: Path
    samples_per_prompt: int
    grid: tuple[int, int]
    batch_size: int
    seed: int
    sampling: SamplingParams
    dtype: torch.dtype
    device: torch.device
    decoder_kwargs: dict[str, str]
    save_tokens: bool
    settings: dict[str, Any]
    num_prompts: int | None = None
    prompt_ids: list[str] | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog("python -m rl.generate"), description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML with a `model` section (configs/xomni.yaml, configs/tiny.yaml, ...)")
    parser.add_argument("--prompts", required=True, metavar="FILE", help=".txt, .jsonl or .parquet prompt file")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reused to resume)")
    parser.add_argument("--samples-per-prompt", type=int, default=1, metavar="K", help="images per prompt (1)")
    parser.add_argument("--grid", type=int, nargs=2, metavar=("H", "W"),
                        help="image token grid, 16 px per token (default: rollout.grid)")
    parser.add_argument("--batch-size", type=int, metavar="B", help="sequences per batch (default: rollout.batch_size)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every sample (default 0)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="sample this policy: a training checkpoint "
                        "directory or an X-Omni policy folder (replaces model.policy)")
    parser.add_argument("--device", help="policy device, also passed to a decoder that takes one "
                        "(default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, help="policy dtype (default: rollout.dtype); the decoder's "
                        "is its own model.decoder.dtype")
    parser.add_argument("--save-tokens", action="store_true", help="also write DIR/tokens/{stem}.npy")
    add_overrides(parser, SECTIONS, "rollout.sampling.temperature=0.8")
    return parser


def prepare(args: argparse.Namespace) -> GenerationJob:
    """Check the command line and the config without loading a model; ConfigError lists every problem."""
    cfg = load_config(args.config, args.overrides)
    rollout, problems = _read_rollout(cfg)
    problems += _argument_problems(args)
    dtype_name = args.dtype or (rollout.dtype if rollout else "float32")
    model = cfg.get("model") or {}
    if not model:
        problems.append("model: missing section (policy, tokenizer and decoder components)")
    elif args.checkpoint is not None:
        problems += _use_checkpoint(cfg, args.checkpoint, dtype_name)
    for name in MODEL_COMPONENTS:
        problems += validate_component(model.get(name), f"model.{name}")
    try:
        source = PromptSource(args.prompts, shuffle=False)
    except (OSError, ValueError) as e:
        problems.append(f"--prompts: {e}")
    if problems:
        raise ConfigError(problems)
    h, w = args.grid or rollout.grid
    grid = (int(h), int(w))
    settings = {"model": to_container(cfg.model), "sampling": dataclasses.asdict(rollout.sampling),
                "grid": list(grid), "seed": args.seed, "dtype": dtype_name,
                "prompts": os.path.abspath(args.prompts)}
    out = Path(args.out)
    _check_settings(out / SETTINGS, settings)
    takes_device = args.device is not None and _takes_device(settings["model"]["decoder"])
    return GenerationJob(settings["model"], source, out, args.samples_per_prompt, grid,
                         args.batch_size or rollout.batch_size, args.seed, rollout.sampling,
                         resolve_dtype(dtype_name), resolve_device(args.device),
                         {"device": args.device} if takes_device else {}, args.save_tokens, settings)


def _read_rollout(cfg: Any) -> tuple[RolloutConfig | None, list[str]]:
    """The `rollout` section (defaults where absent), or None and its problems."""
    problems = validate_section(cfg.get("rollout"), RolloutConfig, "rollout")
    if problems:
        return None, problems
    try:
        rollout = build_section(cfg.get("rollout"), RolloutConfig)
    except ValueError as e:  # SamplingParams' own range checks
        return None, [f"rollout.sampling: {e}"]
    if rollout.dtype not in DTYPES:
        problems.append(f"rollout.dtype: must be one of {list(DTYPES)}, got {rollout.dtype!r}")
    if len(rollout.grid) != 2 or not all(isinstance(n, int) and n >= 1 for n in rollout.grid):
        problems.append(f"rollout.grid: must be two ints >= 1, got {rollout.grid}")
    return (None if problems else rollout), problems


def _argument_problems(args: argparse.Namespace) -> list[str]:
    problems = [f"--{name}: must be >= {low}, got {value}" for name, value, low in (
        ("samples-per-prompt", args.samples_per_prompt, 1), ("batch-size", args.batch_size, 1),
        ("seed", args.seed, 0)) if value is not None and value < low]
    if args.grid is not None and min(args.grid) < 1:
        problems.append(f"--grid: both sides must be >= 1, got {args.grid}")
    if args.device is not None:
        try:
            if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
                problems.append("--device: CUDA is not available on this machine")
        except RuntimeError as e:
            problems.append(f"--device: {e}")
    return problems


def _use_checkpoint(cfg: Any, checkpoint: str, dtype_name: str) -> list[str]:
    """Point model.policy at `checkpoint` (a training checkpoint over model.policy, or an X-Omni folder);
    problems if it is neither."""
    path = Path(checkpoint)
    if not path.exists():
        return [f"--checkpoint: {path.resolve()} does not exist"]
    if (path / LEARNER_DIR).is_dir():
        if not is_complete(path):
            return [f"--checkpoint: {path} is an incomplete training checkpoint (no COMPLETE marker)"]
        try:
            verify_checkpoint(path)
        except CorruptCheckpoint as e:
            return [f"--checkpoint: {e}"]
        cfg.model.policy = {"_component_": "rl.state.learner_checkpoint.trained_policy", "checkpoint": str(path),
                            "base": cfg.model.policy}
        return []
    if not (path / CONFIG_NAME).is_file():
        return [f"--checkpoint: {path} is neither a training checkpoint (no {LEARNER_DIR}/) nor an X-Omni policy "
                f"folder (no {CONFIG_NAME})"]
    cfg.model.policy = {"_component_": "rl.model.policy.XOmniPolicy.from_pretrained", "path": str(path),
                        "torch_dtype": dtype_name}
    return []


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to add images to a folder generated with other settings (its images would not match)."""
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(k for k in settings.keys() | before.keys() if before.get(k) != settings.get(k))
    if changed:
        raise ConfigError([f"--out: {path.parent} holds images generated with other {', '.join(changed)} "
                           f"(see {path}); choose another --out"])


def _takes_device(node: dict[str, Any]) -> bool:
    """Whether the decoder component has a `device` argument (XOmniDecoder does, PatchDecoder is CPU-only)."""
    return "device" in inspect.signature(resolve_component(node["_component_"])).parameters


def load_models(job: GenerationJob) -> tuple[XOmniPolicy, PromptFormat, ImageDecoder]:
    """The policy (eval, on job.device in job.dtype), the prompt format and the decoder."""
    tokenizer = instantiate(job.model["tokenizer"], "model.tokenizer")
    policy = instantiate(job.model["policy"], "model.policy")
    policy = policy.to(job.device, job.dtype).eval().requires_grad_(False)
    decoder = instantiate(job.model["decoder"], "model.decoder", **job.decoder_kwargs)
    return policy, PromptFormat(tokenizer, policy.config.vocab_size), decoder


def generate(job: GenerationJob, policy: XOmniPolicy, prompt_format: PromptFormat, decoder: ImageDecoder,
             pending: Sequence[tuple[int, int]]) -> int:
    """Draw the (prompt index, sample) pairs in `pending`, appending manifest lines batch by batch.
    Returns how many images were invalid (NaN or constant; `valid: false` in the manifest)."""
    (job.out / IMAGES).mkdir(exist_ok=True)
    if job.save_tokens:
        (job.out / TOKENS).mkdir(exist_ok=True)
    invalid = 0
    with open(job.out / MANIFEST, "a", encoding="utf-8") as f, \
            tqdm(total=len(pending), unit="img", desc="generating", dynamic_ncols=True) as bar:
        for start in range(0, len(pending), job.batch_size):
            lines = _generate_batch(job, policy, prompt_format, decoder, pending[start:start + job.batch_size])
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a line on disk means its PNG is complete
            invalid += sum(not line["valid"] for line in lines)
            bar.update(len(lines))
    return invalid


def _generate_batch(job: GenerationJob, policy: XOmniPolicy, prompt_format: PromptFormat, decoder: ImageDecoder,
                    rows: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Sample, decode and save the images of `rows`; their manifest lines, in order."""
    records = job.source.read(np.asarray([i for i, _ in rows]))
    prompts = [r.prompt for r in records]
    seeds = {stream: [sample_seed(job.seed, 0, i, k, stream) for i, k in rows] for stream in ("policy", "decoder")}
    samples = sample_image_tokens(policy, prompt_format.encode(prompts, job.grid), job.sampling, seeds["policy"])
    tokens = samples.tokens.cpu()  # [n, h*w]
    decoded = decoder(tokens, job.grid, prompts, seeds["decoder"])
    lines = []
    for (i, k), record, image, valid, codes in zip(rows, records, to_uint8_images(decoded.images),
                                                   decoded.valid.tolist(), tokens, strict=True):
        stem = image_stem(job, i, k)
        Image.fromarray(image).save(job.out / IMAGES / f"{stem}.png")
        line = {**record.metadata, "image": f"{IMAGES}/{stem}.png", "prompt": record.prompt, "prompt_index": i,
                "sample": k, "seed": job.seed, "valid": valid}
        if job.save_tokens:
            np.save(job.out / TOKENS / f"{stem}.npy", codes.view(job.grid).numpy().astype(np.int32))
            line["tokens"] = f"{TOKENS}/{stem}.npy"
        lines.append(line)
    return lines


def image_stem(job: GenerationJob, prompt_index: int, sample: int) -> str:
    """The file name (without suffix) of image `sample` of prompt `prompt_index`."""
    if job.prompt_ids is not None:
        return f"{job.prompt_ids[prompt_index]}_{sample}"
    return f"{prompt_index:05d}_{sample}"


@command
def main(argv: Sequence[str] | None = None) -> int:
    return run(prepare(build_parser().parse_intermixed_args(argv)))


def run(job: GenerationJob) -> int:
    """Draw every image of a prepared job that DIR does not hold yet; the exit status (a ConfigError when a model
    cannot be built)."""
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / SETTINGS).write_text(json.dumps(job.settings, indent=1), encoding="utf-8")
    done = resume(job.out / MANIFEST)
    count = len(job.source) if job.num_prompts is None else min(job.num_prompts, len(job.source))
    pending = [(i, k) for i in range(count) for k in range(job.samples_per_prompt)
               if f"{IMAGES}/{image_stem(job, i, k)}.png" not in done]
    print(f"{count} prompts x {job.samples_per_prompt}: {len(pending)} images to draw, "
          f"{len(done)} already in {job.out / MANIFEST}", flush=True)
    if pending:
        invalid = generate(job, *load_models(job), pending)
        print(f"wrote {len(pending)} images ({invalid} invalid) to {job.out / IMAGES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
