"""`python -m rl.evaluate`: a policy on a benchmark's prompts, scored with the config's rewards.

    python -m rl.evaluate CONFIG --prompts FILE|longtext-en|longtext-zh --samples-per-prompt K --out DIR
        [--checkpoint CKPT] [--limit N] [--only NAME,NAME] [--batch-size B] [--seed S] [--device D]
        [key=value ...]
    python -m rl.evaluate --compare DIR_A DIR_B [--out DIR]

1. Draws K images per prompt with rl.generate's code (CONFIG's `model` section, or the policy of --checkpoint)
   into DIR/images/{prompt_id}_{k}.png, LongText-Bench's layout; a prompt file without `prompt_id` numbers
   its prompts from 0. DIR/prompts.jsonl keeps the prompts with their ids.
2. Scores them with the offline scorer (`rewards.score`, run in-process through its command line) and
   CONFIG's rewards (--only: some of them): DIR/scores.jsonl, scores.csv, report.html.
3. Writes DIR/summary.json, `{"overall", "by_length", "by_category", "rewards", "samples", ...}`, and prints
   LongText-Bench's aggregation (rl/evaluation/benchmark.py): summed matched / summed target words
   (characters for Chinese), overall, by length and by category, then each reward's mean.

`longtext-en` / `longtext-zh` name the shipped LongText-Bench prompt files (prompts/data/README.md); with them
every OCR reward (rewards.ocr.OCRReward) scores with the benchmark's metric and mode, word recall for English
and character recall for Chinese, whatever CONFIG says. The official benchmark reads images with Qwen2.5-VL-7B;
the figures here come from the configured OCR reward (summary.json's `note`).
A rerun into DIR draws and scores only what is missing (more prompts with a larger --limit, more samples);
other prompts, seed or sampling settings are refused. Exit status: 0 when done, 2 for a bad config or
command line (every problem listed before any model loads).

--compare DIR_A DIR_B prints the two summaries side by side (LongText-Bench's figures), then runs
`python -m rewards.compare DIR_A DIR_B` on their scores.jsonl (per-image paired differences with bootstrap
intervals; compare.json and compare.html into --out, ./compare by default).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import prompts
from core.cli import CommandParser, add_overrides, command, deprecated_alias, prog
from core.components import resolve_component
from core.config import ConfigError, load_config
from prompts.sources import PromptSource
from rewards import compare as score_compare
from rewards import score
from rewards.ocr import OCRReward
from rewards.sections import selected_rewards, validate_reward_sections
from rewards.store import read_scores
from rl import generate
from rl.evaluation.benchmark import format_comparison, format_summary, summarize

DATA = Path(prompts.__file__).resolve().parent / "data"
BENCHMARKS = {"longtext-en": (DATA / "longtext_bench_en.jsonl", "en"),
              "longtext-zh": (DATA / "longtext_bench_zh.jsonl", "zh")}
PROMPTS, SUMMARY = "prompts.jsonl", "summary.json"
SECTIONS = ("model", "rollout", "rewards", "ensemble", "gating", "paths")  # what it reads of a config
_ID = re.compile(r"^[^_/\\]+$")  # LongText-Bench's file names split the id from k at the first "_"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog("python -m rl.evaluate"), description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="training YAML with `model` and `rewards` (configs/tiny.yaml, ...)")
    parser.add_argument("--prompts", metavar="FILE", help="longtext-en, longtext-zh, or a .txt/.jsonl/.parquet file")
    parser.add_argument("--samples-per-prompt", type=int, metavar="K", help="images per prompt")
    deprecated_alias(parser, "--samples", "--samples-per-prompt", "samples_per_prompt", type=int, metavar="K")
    parser.add_argument("--out", metavar="DIR", help="output folder (created; reused to resume); with --compare: "
                        "where compare.json/.html go (./compare)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="evaluate this policy: a training checkpoint "
                        "directory or an X-Omni policy folder (replaces model.policy)")
    parser.add_argument("--limit", type=int, metavar="N", help="the first N prompts only")
    parser.add_argument("--only", metavar="NAME,NAME", help="score with these rewards only")
    parser.add_argument("--batch-size", type=int, metavar="B", help="sequences per batch (default: rollout.batch_size)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every sample (default 0)")
    parser.add_argument("--device", help="policy device (default: cuda when available)")
    parser.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"),
                        help="print two summaries side by side, then rewards.compare's paired comparison")
    add_overrides(parser, SECTIONS, "rewards.ocr.metric=recall")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.compare:
        print(compare(*map(Path, args.compare)))
        return score_compare.main([*args.compare, *(["--out", args.out] if args.out else [])])
    job, ids, scorer_argv, names = prepare(args)
    code = generate.run(job)
    if code == 0:
        code = score.main(scorer_argv)
    if code != 0:
        return code
    expected = {f"{pid}_{k}.png" for pid in ids for k in range(job.samples_per_prompt)}
    rows = [row for row in read_scores(job.out) if row.get("image") in expected]  # each image's current record
    summary = summarize(rows, names)
    (job.out / SUMMARY).write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print(format_summary(summary))
    print(f"wrote {job.out / SUMMARY}")
    return 0


def prepare(args: argparse.Namespace) -> tuple[generate.GenerationJob, list[str], list[str], list[str]]:
    """The generation job, the prompt ids drawn, the scorer's command line and the reward names; ConfigError
    lists every problem with the command line or the config before anything loads or is written."""
    problems = [f"{flag}: required (or --compare DIR_A DIR_B)" for flag, value in (
        ("CONFIG", args.config), ("--prompts", args.prompts), ("--samples-per-prompt", args.samples_per_prompt),
        ("--out", args.out)) if value is None]
    problems += [f"--{name}: must be >= 1, got {value}" for name, value in (
        ("samples-per-prompt", args.samples_per_prompt), ("limit", args.limit)) if value is not None and value < 1]
    if problems:
        raise ConfigError(problems)
    path, mode = BENCHMARKS.get(args.prompts, (Path(args.prompts), None))
    cfg = load_config(args.config, args.overrides)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only is not None else None
    problems += validate_reward_sections(cfg, only)
    records, ids = [], []
    try:
        source = PromptSource(str(path), shuffle=False)
        records = source.read(np.arange(min(args.limit or len(source), len(source))))
        ids = _prompt_ids(records)
    except (OSError, ValueError) as e:
        problems.append(f"--prompts: {e}")
    overrides = [*args.overrides, *_mode_overrides(cfg, mode)]
    job = None
    try:
        job = generate.prepare(argparse.Namespace(
            config=args.config, prompts=str(path), out=args.out, samples_per_prompt=args.samples_per_prompt, grid=None,
            batch_size=args.batch_size, seed=args.seed, checkpoint=args.checkpoint, device=args.device, dtype=None,
            save_tokens=False, overrides=overrides))
    except ConfigError as e:
        problems += [p for p in e.problems if not p.startswith("--prompts")]  # reported above already
    if problems:
        raise ConfigError(problems)
    job.num_prompts, job.prompt_ids = len(ids), ids
    _write_prompts(job.out / PROMPTS, [{**r.metadata, "prompt": r.prompt, "prompt_id": r.metadata.get("prompt_id", i)}
                                       for i, r in enumerate(records)])
    scorer = [args.config, "--images", str(job.out / generate.IMAGES), "--prompts", str(job.out / PROMPTS),
              "--out", str(job.out), *(["--only", args.only] if args.only else []), *overrides]
    return job, ids, scorer, selected_rewards(cfg, only)


def _prompt_ids(records: Sequence[Any]) -> list[str]:
    """`prompt_id` of each record as a string (its position when absent); ValueError unless usable in names."""
    ids = [str(r.metadata.get("prompt_id", i)) for i, r in enumerate(records)]
    bad = sorted({i for i in ids if not _ID.match(i)})
    if bad:
        raise ValueError(f"prompt_id values must not contain '_', '/' or '\\' (they name the images): {bad[:5]}")
    if len(set(ids)) != len(ids):
        raise ValueError("prompt_id values must be unique")
    return ids


def _mode_overrides(cfg: Any, mode: str | None) -> list[str]:
    """`rewards.<name>.mode=<mode>` and the benchmark's metric (recall) for every OCR reward, when a LongText-Bench
    file sets the mode (a config may train with another metric, e.g. the demo's edit distance)."""
    if mode is None:
        return []
    out = []
    for name, node in (cfg.get("rewards") or {}).items():
        try:
            target = resolve_component(str(node.get("_component_")))
        except ImportError:
            continue  # reported by the config's validation
        if isinstance(target, type) and issubclass(target, OCRReward):
            out += [f"rewards.{name}.mode={mode}", f"rewards.{name}.metric=recall"]
    return out


def _write_prompts(path: Path, records: list[dict[str, Any]]) -> None:
    """DIR/prompts.jsonl, the scorer's prompt file: the prompts of every run into DIR. A run may use more or
    fewer of the same prompts (it grows the file or leaves it); other prompts are refused."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    if path.is_file():
        before = path.read_text(encoding="utf-8").splitlines()
        shared = min(len(before), len(lines))
        if before[:shared] != lines[:shared]:
            raise ConfigError([f"--out: {path.parent} was evaluated on other prompts (see {path}); "
                               f"choose another --out"])
        if len(before) >= len(lines):
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def compare(a: Path, b: Path) -> str:
    """The --compare table of DIR_A/summary.json and DIR_B/summary.json."""
    missing = [f"--compare: no {SUMMARY} in {d}" for d in (a, b) if not (d / SUMMARY).is_file()]
    if missing:
        raise ConfigError(missing)
    summaries = [json.loads((d / SUMMARY).read_text(encoding="utf-8")) for d in (a, b)]
    return format_comparison(*summaries, names=(str(a), str(b)))


if __name__ == "__main__":
    sys.exit(main())
