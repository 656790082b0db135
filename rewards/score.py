"""Offline scoring of a folder of images with the reward ensemble that training uses.

    python -m rewards.score --images DIR [--prompts MANIFEST] --config YAML --out OUT_DIR \\
        [--only NAME,NAME] [--batch-size N] [key=value ...]

Writes OUT_DIR/scores.jsonl one batch at a time (appended and flushed), so a crash loses at most the
batch in flight; a rerun with the same OUT_DIR skips the images already there. At the end it rewrites
OUT_DIR/scores.csv and OUT_DIR/report.html and prints a summary. Exit status: 0 when the run completed
(rows that could not be scored carry an `error`), 2 for a bad config or command line, reported before
any model loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from rewards import manifest
from rewards.ensemble import EnsembleResult, RewardEnsemble, selected_rewards, validate_reward_sections
from rewards.manifest import ManifestError, Row, load_image, read_rows
from rewards.report import read_records, save_thumbnail, summarize, write_csv, write_html
from rl.config import ConfigError, load_config

SCORES = "scores.jsonl"
# The layouts are described once, in rewards/manifest.py's docstring (its second paragraph).
_EPILOG = f"""layouts (detected from --prompts):
{manifest.__doc__.split(chr(10) + chr(10))[1]}

outputs in OUT_DIR:
  scores.jsonl  one object per image: image, prompt, task, one key per reward (null where it does not
                apply or failed), total, error (null when fine), reward_errors, gates (the gate decision:
                task, weights, target text, reasons), details (what each reward read, e.g. OCR text),
                meta (the manifest's other columns). Rerunning skips images already in it.
  scores.csv    the same as a table;  report.html  thumbnails and a table sortable by every score.
  config.yaml   the config of the first run into OUT_DIR."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rewards.score", description="Score images for their prompts with the reward ensemble.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    parser.add_argument("--prompts", metavar="MANIFEST",
                        help="JSONL/CSV manifest or LongText-Bench prompts JSONL; "
                             "omitted: a <name>.txt beside each image holds its prompt")
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="YAML with rewards, ensemble and gating sections (e.g. configs/rewards.yaml)")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created; reused to resume)")
    parser.add_argument("--only", metavar="NAME,NAME",
                        help="comma-separated rewards to run; the others are not validated or loaded")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (OmegaConf dotlist)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only is not None else None
    try:
        if args.batch_size < 1:
            raise ConfigError([f"--batch-size: must be >= 1, got {args.batch_size}"])
        cfg = load_config(args.config, args.overrides)
        problems = validate_reward_sections(cfg, only)
        if problems:
            raise ConfigError(problems)
        layout, rows = read_rows(args.images, args.prompts)
    except (ConfigError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out, images_dir = Path(args.out), Path(args.images)
    out.mkdir(parents=True, exist_ok=True)
    _save_config(cfg, out / "config.yaml")
    done = resume(out / SCORES)
    pending = [row for row in rows if row.key not in done]
    print(f"{layout} layout: {len(rows)} images, {len(rows) - len(pending)} already in {out / SCORES}", flush=True)
    if pending:
        try:
            ensemble = RewardEnsemble.from_config(cfg, only)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        score_rows(ensemble, pending, out, args.batch_size)
    names = selected_rewards(cfg, only)
    records = read_records(out / SCORES)
    write_csv(records, names, out / "scores.csv")
    write_html(records, names, out, images_dir)
    print(summarize(records, names))
    print(f"wrote {out / SCORES}, {out / 'scores.csv'}, {out / 'report.html'}")
    return 0


def resume(path: Path) -> set[str]:
    """Image keys already in scores.jsonl; a last line cut short by a crash is removed first."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return {r["image"] for r in read_records(path) if "image" in r}


def score_rows(ensemble: RewardEnsemble, rows: Sequence[Row], out: Path, batch_size: int) -> None:
    """Score `rows` batch by batch, appending one JSON line per row to OUT/scores.jsonl."""
    with open(out / SCORES, "a", encoding="utf-8") as f, \
            tqdm(total=len(rows), unit="img", desc="scoring", dynamic_ncols=True) as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            for record in score_batch(ensemble, batch, out):
                f.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))


def score_batch(ensemble: RewardEnsemble, rows: Sequence[Row], out: Path) -> list[dict[str, Any]]:
    """One record per row; rows with a manifest problem or an unreadable image get only an `error`."""
    errors = {id(row): row.error for row in rows if row.error}
    images, ready = [], []
    for row in rows:
        if id(row) in errors:
            continue
        try:
            image = load_image(row.path)
        except Exception as e:  # missing, truncated or not an image: this row only
            errors[id(row)] = f"cannot read image: {type(e).__name__}: {e}"
            continue
        save_thumbnail(image, out, row.key)
        images.append(image)
        ready.append(row)
    result = ensemble(images, [r.prompt for r in ready], [r.metadata for r in ready]) if ready else None
    position = {id(row): i for i, row in enumerate(ready)}
    names = list(ensemble.rewards)
    return [_record(row, names, result, position.get(id(row)), errors.get(id(row))) for row in rows]


def _record(row: Row, names: list[str], result: EnsembleResult | None, i: int | None,
            error: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"image": row.key, "prompt": row.prompt, "task": None,
                              **dict.fromkeys(names), "total": None, "error": error, "reward_errors": {},
                              "gates": None, "details": {}, "meta": row.metadata}
    if result is None or i is None:
        return record
    gate = result.gates[i]
    record.update(task=gate.task, gates=gate.to_dict(), total=_finite(result.total[i].item()))
    for name in names:
        record[name] = _finite(result.scores[name][i].item())
        if result.failed[name][i]:
            record["reward_errors"][name] = result.errors[name]
        values = {k: v[i] for k, v in result.details[name].items() if v[i] is not None}
        if values:
            record["details"][name] = values
    if record["reward_errors"]:
        record["error"] = "; ".join(f"{n} failed: {m}" for n, m in record["reward_errors"].items())
    return record


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_default(value: Any) -> Any:
    # Reward details may hold tensors or numpy values; anything else is shown as text.
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _save_config(cfg: Any, path: Path) -> None:
    text = OmegaConf.to_yaml(cfg)
    if not path.is_file():
        path.write_text(text, encoding="utf-8")
    elif path.read_text(encoding="utf-8") != text:
        print(f"warning: the config differs from {path}, which scored the earlier rows", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
