"""The files of a scoring output folder, and the per-reward results they hold.

OUT/scores.jsonl is append-only: one JSON object per line, one line per image each time something about
that image changes (a reward computed, a total or gate recomputed under another config). The LAST line
of an image is its current record; earlier lines are history and a cache of results. Each line is
written whole, batch by batch, flushed and fsynced, so a crash loses at most the batch in flight; a line
cut short by a crash is removed before the next run appends.

A line's `provenance` says which of its values a later run may reuse: `run` (the line in OUT/runs.jsonl
that wrote it), `input` (a fingerprint of what the rewards saw: image file, prompt, metadata) and
`rewards` (name -> fingerprint of the reward config that computed its value, for the rewards that scored
the image without failing). OUT/runs.jsonl holds one line per run: its config, fingerprints and images.

Every other file (config.yaml, scores.csv, report.html, compare outputs) is a view, rewritten whole via a
temporary file and a rename, so a reader never sees half of one. Files are created with `open`, so
they get the permissions of the user's umask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import naming

SCORES, RUNS, CONFIG = "scores.jsonl", "runs.jsonl", "config.yaml"
PROVENANCE = "provenance"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8): written to a temporary file beside it, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with naming(path), open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a full disk: `path` keeps its earlier content
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def repair(path: Path) -> None:
    """Remove a last line cut short by a crash (anything after the last newline)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a line that does not parse (e.g. cut by a crash) is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def append_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append `records` in one write, fsynced (a crash keeps whole lines or none of the last; a failed write is
    undone)."""
    if not records:
        return
    data = "".join(json.dumps(r, ensure_ascii=False, default=json_default) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:  # a full disk: the lines written before stay whole, and the error names the file
            os.ftruncate(fd, start)
            raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        os.close(fd)


def json_default(value: Any) -> Any:
    """JSON for what `json` cannot write."""
    # Reward details may hold tensors or numpy values; anything else is shown as text.
    return value.tolist() if hasattr(value, "tolist") else str(value)


def latest(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """image -> its last record, in the order images first appear."""
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        if "image" in record:
            last[str(record["image"])] = dict(record)
    return last


def read_scores(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The current record of each image of the last run into `out_dir` (all images when runs.jsonl is
    absent, e.g. an output written before it existed), in the order of that run's images."""
    out = Path(out_dir)
    current = latest(read_jsonl(out / SCORES))
    runs = read_jsonl(out / RUNS)
    if not runs or not isinstance(runs[-1].get("images"), list):
        return list(current.values())
    return [current[key] for key in runs[-1]["images"] if key in current]


@dataclass(frozen=True)
class Result:
    """One reward's result for one image: score (None = NaN, "cannot score"), details, and the reward
    config's fingerprint. A failed call is no result (it is retried), so it never enters the cache."""

    score: float | None
    details: dict[str, Any]
    fingerprint: str


class ResultCache:
    """Every reward result found in scores.jsonl, keyed by (image, input fingerprint, reward, reward
    fingerprint); a later line wins over an earlier one (a --rescore replaces the value)."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()):
        self._results: dict[tuple[str, str, str, str], Result] = {}
        for record in records:
            self.add(record)

    def add(self, record: Mapping[str, Any]) -> None:
        """Take the results a record vouches for (its `provenance.rewards`)."""
        provenance = record.get(PROVENANCE)
        if not isinstance(provenance, dict) or not isinstance(provenance.get("rewards"), dict):
            return
        details = record.get("details") or {}
        for name, fingerprint in provenance["rewards"].items():
            score = record.get(name)
            self._results[(str(record["image"]), str(provenance.get("input")), name, fingerprint)] = Result(
                score if isinstance(score, (int, float)) else None, dict(details.get(name) or {}), fingerprint)

    def get(self, image: str, input_fingerprint: str, name: str, fingerprint: str) -> Result | None:
        return self._results.get((image, input_fingerprint, name, fingerprint))


def record_run(out: Path, entry: Mapping[str, Any]) -> int:
    """Append a run to OUT/runs.jsonl; returns its number (0 for the first run into OUT)."""
    path = out / RUNS
    repair(path)
    number = len(read_jsonl(path))
    append_jsonl(path, [{"run": number, **entry}])
    return number
