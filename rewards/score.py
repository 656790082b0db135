"""Offline scoring of a folder of images with the reward ensemble that training uses.

    python -m rewards.score CONFIG --images DIR [--prompts MANIFEST] --out OUT_DIR \\
        [--only NAME,NAME] [--rescore NAME,NAME] [--batch-size N] [key=value ...]

(`--config CONFIG` in place of the positional CONFIG is accepted too.)

Results are stored per reward: a rerun into the same OUT_DIR computes, for each image, exactly the
rewards that are missing or stale (the reward's config, weights files, the image file, its prompt or
metadata changed; or the reward failed), then recomputes gates and totals for every image with the
current ensemble and gating config. The storage rules are in rewards/store.py. Exit status: 0 when at
least one image was scored, 1 when none was (the most common error is printed with a hint), 2 for a bad
config or command line, reported before any model loads.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from core.cli import CommandParser, add_overrides, command, prog
from core.components import instantiate
from core.config import ConfigError, load_config
from core.files import naming
from core.lock import exclusive
from rewards import manifest
from rewards.ensemble import Combiner
from rewards.fingerprint import input_fingerprint, reward_fingerprint
from rewards.manifest import ManifestError, Row, fit_size, image_size, load_image, read_rows
from rewards.records import FIXED_KEYS, RowState, compose, error_pattern, same_content
from rewards.report import save_thumbnail, write_html
from rewards.runner import Scored, reward_device, score_rows
from rewards.sections import validate_reward_sections
from rewards.store import (
    CONFIG,
    PROVENANCE,
    SCORES,
    Result,
    ResultCache,
    append_jsonl,
    latest,
    read_jsonl,
    record_run,
    repair,
    write_atomic,
)
from rewards.summary import summarize, write_csv

# 40 MP: any generated image and most photos fit; a batch of 16 such RGB images holds ~2 GB.
MAX_PIXELS = 40_000_000
SECTIONS = ("rewards", "ensemble", "gating", "paths")  # what it reads of a config (a training config works too)

# The layouts are described once, in rewards/manifest.py's docstring (its second paragraph).
_EPILOG = f"""layouts (detected from --prompts):
{manifest.__doc__.split(chr(10) + chr(10))[1]}

outputs in OUT_DIR:
  scores.jsonl  append-only; the LAST line of an image is its record: image, prompt, task, one key per
                reward (null where it does not apply or failed), total, error (null when fine),
                reward_errors, gates (task, weights, target text, reasons), details (what each reward
                read, e.g. OCR text), meta (the manifest's other columns), provenance (run, input and
                reward fingerprints: what a rerun may reuse).
  runs.jsonl    one line per run: config, reward fingerprints, --only, --rescore, images.
  config.yaml   the config of the latest run;  scores.csv  the current records as a table;
  report.html   histograms, per-task means, gate counts, best and worst images, a filterable table.

rerun: computes only the rewards missing or stale for each image (config, weights files, image file,
prompt or metadata changed; failed before); --rescore NAME recomputes NAME for every image; gates and
totals are always recomputed with the current config. Exit status: 0 some image scored, 1 none, 2 usage.

trust: a config is code (each `_component_` names any importable callable, which is called with its
kwargs): score only with configs you trust. See the docs' Security page."""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog("python -m rewards.score"), description="Score images for their prompts with the reward ensemble.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", metavar="CONFIG",
                        help="YAML with rewards, ensemble and gating sections (e.g. configs/rewards.yaml)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    parser.add_argument("--prompts", metavar="MANIFEST",
                        help="JSONL/CSV manifest or LongText-Bench prompts JSONL; "
                             "omitted: a <name>.txt beside each image holds its prompt")
    parser.add_argument("--config", dest="config_option", metavar="CONFIG", help="the same as the positional CONFIG")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created; reused to resume)")
    parser.add_argument("--only", metavar="NAME,NAME",
                        help="comma-separated rewards to run; the others are not validated or loaded")
    parser.add_argument("--rescore", metavar="NAME,NAME", help="recompute these rewards even where stored")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"images with more pixels are downsized on load, aspect kept (default {MAX_PIXELS:_}); "
                             "the row's details.image says from and to what size")
    parser.add_argument("--on-large", choices=("downsize", "error"), default="downsize",
                        help="what becomes of an image over --max-pixels: downsized (default) or a row error")
    parser.add_argument("--allow-outside", action="store_true",
                        help="accept manifest paths whose '..' lead out of the images folder (absolute paths and "
                             "symlinks are always accepted)")
    add_overrides(parser, SECTIONS, "ensemble.nan_policy=renormalize")
    return parser


@dataclass
class Job:
    """A validated command line: the config, the rewards in use and the rows to score."""

    cfg: Any
    only: list[str] | None
    rescore: list[str]
    combiner: Combiner
    fingerprints: dict[str, str]
    devices: dict[str, str]
    layout: str
    rows: list[Row]
    out: Path
    images_dir: Path
    batch_size: int
    max_pixels: int
    on_large: str


def config_and_overrides(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The config path, positional or `--config`, and the overrides. With `--config`, intermixed parsing hands the
    first override to the positional CONFIG: it goes back to the overrides."""
    config, overrides = args.config, list(args.overrides)
    if args.config_option is not None:
        if config is not None and "=" not in config:
            raise ConfigError([f"CONFIG: given twice ({config} and --config {args.config_option}); give one"])
        config, overrides = args.config_option, [config, *overrides] if config is not None else overrides
    if config is None:
        raise ConfigError(["CONFIG: required (the YAML with the rewards, e.g. configs/rewards.yaml)"])
    return config, overrides


def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value is not None else None


def prepare(args: argparse.Namespace) -> Job:
    """Validate everything before any reward is built; ConfigError / ManifestError list the problems."""
    only, rescore = _names(args.only), _names(args.rescore) or []
    problems = [f"--{name}: must be >= 1, got {value}" for name, value in
                (("batch-size", args.batch_size), ("max-pixels", args.max_pixels)) if value < 1]
    config, overrides = config_and_overrides(args)
    cfg = load_config(config, overrides)
    problems += validate_reward_sections(cfg, only)
    selected = [n for n in cfg.get("rewards") or {} if only is None or n in only]
    problems += [f"rewards.{n}: {n!r} is a column of scores.jsonl; rename the reward" for n in selected
                 if n in FIXED_KEYS]
    problems += [f"--rescore: {n!r} is not a reward of this run (rewards: {', '.join(selected)})"
                 for n in rescore if n not in selected]
    if problems:
        raise ConfigError(problems)
    combiner = Combiner.from_config(cfg, only)
    layout, rows = read_rows(args.images, args.prompts, args.allow_outside)
    nodes = {name: cfg.rewards[name] for name in combiner.names}
    return Job(cfg, only, rescore, combiner, {n: reward_fingerprint(v) for n, v in nodes.items()},
               {n: reward_device(v) for n, v in nodes.items()}, layout, rows, Path(args.out), Path(args.images),
               args.batch_size, args.max_pixels, args.on_large)


@command
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        job = prepare(args)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # One scorer per OUT_DIR (two would both score everything); a failed write names OUT_DIR at least.
    with exclusive(job.out, "--out"), naming(job.out):
        return score_job(job, argv)


def score_job(job: Job, argv: Sequence[str] | None) -> int:
    """Score what `job` still needs into its OUT_DIR, write the table and the report; the exit status."""
    repair(job.out / SCORES)
    history = read_jsonl(job.out / SCORES)
    current = latest(history)
    run = record_run(job.out, {"argv": list(argv if argv is not None else sys.argv[1:]), "only": job.only,
                               "rescore": job.rescore, "rewards": job.fingerprints,
                               "config": OmegaConf.to_container(job.cfg, resolve=False),
                               "images": [row.key for row in job.rows]})
    write_atomic(job.out / CONFIG, OmegaConf.to_yaml(job.cfg))
    states = plan(job, ResultCache(history))
    print(describe_plan(job, states, run), flush=True)
    pending = [s for s in states if s.needed]
    if pending:
        needed = {name for s in pending for name in s.needed}
        rewards = {n: instantiate(job.cfg.rewards[n], f"rewards.{n}") for n in job.combiner.names if n in needed}
        score_pending(job, rewards, pending, run, current)
    records = finalize(job, states, run, current)
    names = job.combiner.names
    write_csv(records, names, job.out / "scores.csv")
    write_html(records, names, job.out, {s.row.key: s.row.path for s in states if s.row.path is not None})
    print(summarize(records, names))
    print(f"wrote {job.out / SCORES}, {job.out / 'scores.csv'}, {job.out / 'report.html'}")
    return exit_status(records, job)


def resume(path: Path) -> set[str]:
    """Image keys already in a JSONL file keyed by `image` (rl.generate's manifest); a torn last line is
    removed first."""
    repair(path)
    return {str(r["image"]) for r in read_jsonl(path) if "image" in r}


def plan(job: Job, cache: ResultCache) -> list[RowState]:
    """Each row's gate, input fingerprint, stored results and the rewards it still needs."""
    states = [RowState(row, error=row.error) for row in job.rows]
    ok = [s for s in states if s.error is None]
    gates, reward_meta, _ = job.combiner.gate([s.row.prompt for s in ok], [s.row.metadata for s in ok])
    for state, gate, meta in zip(ok, gates, reward_meta, strict=True):
        try:
            size = image_size(state.row.path)
            target = fit_size(size, job.max_pixels)
            state.input = input_fingerprint(state.row.path, state.row.prompt, meta,
                                            target if target != size else None)
        except Exception as e:  # missing, not an image, or over PIL's decompression-bomb limit: this row only
            state.fail(f"cannot read image: {type(e).__name__}: {e}")
            continue
        if target != size and job.on_large == "error":
            state.fail(f"image too large: {size[0]}x{size[1]} is over --max-pixels {job.max_pixels} "
                       "(--on-large downsize scores it downsized)")
            continue
        if target != size:
            state.resized = {"from": list(size), "to": list(target), "max_pixels": job.max_pixels}
        state.gate, state.reward_meta = gate, meta
        for name in (n for n in job.combiner.names if n in gate.weights):
            found = None if name in job.rescore else cache.get(state.row.key, state.input, name,
                                                                job.fingerprints[name])
            if found is not None:
                state.results[name] = found
            else:
                state.needed.append(name)
    return states


def describe_plan(job: Job, states: Sequence[RowState], run: int) -> str:
    """What this run will do, per reward: rows it applies to, results reused, results to compute."""
    errors = sum(s.error is not None for s in states)
    lines = [f"{job.layout} layout: {len(states)} images ({errors} with errors); run {run} into {job.out}",
             f"{'reward':<14}{'applies':>9}{'stored':>9}{'to score':>10}"]
    for name in job.combiner.names:
        applies = sum(s.gate is not None and name in s.gate.weights for s in states)
        stored = sum(name in s.results for s in states)
        lines.append(f"{name:<14}{applies:>9}{stored:>9}{sum(name in s.needed for s in states):>10}")
    return "\n".join(lines)


def score_pending(job: Job, rewards: dict[str, Any], pending: Sequence[RowState], run: int,
                  current: dict[str, dict[str, Any]]) -> None:
    """Compute what `pending` rows need, batch by batch, appending their records to scores.jsonl."""
    config = job.combiner.config
    with tqdm(total=len(pending), unit="img", desc="scoring", dynamic_ncols=True) as bar:
        for start in range(0, len(pending), job.batch_size):
            batch = pending[start:start + job.batch_size]
            ready, images = [], []
            for state in batch:
                try:
                    image = load_image(state.row.path, job.max_pixels)
                except Exception as e:  # missing, truncated or not an image: this row only
                    state.fail(f"cannot read image: {type(e).__name__}: {e}")
                    continue
                save_thumbnail(image, job.out, state.row.key)
                ready.append(state)
                images.append(image)
            rows = {name: [i for i, s in enumerate(ready) if name in s.needed] for name in rewards}
            scored = score_rows(rewards, job.devices, images, [s.row.prompt for s in ready],
                                [s.reward_meta for s in ready], rows, config.batch_size, config.timeout_s)
            for i, state in enumerate(ready):
                for name in state.needed:
                    _take(state, name, scored[name], i, job.fingerprints[name])
                state.needed = []
            records = compose(batch, job.combiner, run)
            append_jsonl(job.out / SCORES, records)
            current.update((r["image"], r) for r in records)
            bar.update(len(batch))


def _take(state: RowState, name: str, scored: Scored, i: int, fingerprint: str) -> None:
    """Row i's result of one reward call: a result, or a failure to retry on the next run."""
    if scored.failed[i]:
        state.failures[name] = scored.error
        return
    score = scored.scores[i].item()
    details = {k: v[i] for k, v in scored.details.items() if v[i] is not None}
    state.results[name] = Result(score if score == score else None, details, fingerprint)  # NaN -> None


def finalize(job: Job, states: Sequence[RowState], run: int,
             current: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Gates and totals of every row with the current config (over all rows at once, so "batch"
    normalisation sees the whole set); rows whose record changed get a new line. Returns the records."""
    records = compose(states, Combiner.from_config(job.cfg, job.only), run)
    changed = [r for r in records if not same_content(r, current.get(r["image"]))]
    append_jsonl(job.out / SCORES, changed)
    current.update((r["image"], r) for r in changed)
    return [current[r["image"]] for r in records]


def exit_status(records: Sequence[dict[str, Any]], job: Job) -> int:
    """0 when some row was scored; else 1, after printing the most common error and a hint."""
    if any((r.get(PROVENANCE) or {}).get("rewards") for r in records):
        return 0
    errors = Counter(error_pattern(r) for r in records if r.get("error"))
    if not records:
        why = f"no images found in --images {job.images_dir}"
    elif errors:
        error, count = errors.most_common(1)[0]
        why = f"most common error ({count} of {len(records)} images): {error}"
    else:
        why = f"no reward of this run ({', '.join(job.combiner.names)}) applies to any image"
    print(f"error: no image was scored; {why}\nhint: {_hint(why, job)}", file=sys.stderr)
    return 1


def _hint(why: str, job: Job) -> str:
    where = (f"--images {job.images_dir}" + (" and then beside the manifest" if job.layout == "manifest" else ""))
    hints = [("image not found", f"a relative `image` path is looked up under {where}; check --images"),
             ("no prompt:", "without --prompts each image needs its prompt in <name>.txt beside it; "
                            "pass --prompts MANIFEST"),
             ("prompt_id", "LongText-Bench images are named {prompt_id}_{k}.png after the prompts file's ids"),
             ("cannot read image", "the files exist but do not decode as images"),
             ("failed:", f"every reward failed on every image; reward_errors in {job.out / SCORES} say why; "
                         "a rerun retries them"),
             ("no images found", "image files end in " + ", ".join(sorted(manifest.IMAGE_SUFFIXES))),
             ("applies to any image", "gating decides where a reward applies (OCR needs target text); check "
                                      "--only and the gating section")]
    return next((hint for key, hint in hints if key in why), f"see the `error` column of {job.out / SCORES}")


if __name__ == "__main__":
    sys.exit(main())
