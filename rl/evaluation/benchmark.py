"""LongText-Bench's aggregation over the offline scorer's rows, and the tables `python -m rl.evaluate` prints.

The official scorer (X-Omni's textbench/summary_scores.py) sums the matched target words (characters for
Chinese) over every image and divides by the summed target words, once for the whole set; here the same
sums are also taken per `length` (short / long) and per `category`. The counts are the text reward's
`matched` / `total` details per image (rewards.ocr.OCRReward writes them). The official benchmark reads the
images with Qwen2.5-VL-7B, this one with the configured OCR reward: its figures compare with published
ones only when the same reader is used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

NOTE = ("text accuracy as read by the configured reward {reader!r}; LongText-Bench's official reader is "
        "Qwen2.5-VL-7B, so these figures compare with published ones only when the same reader is used")


def _counts(row: Mapping[str, Any], reader: str | None) -> tuple[int, int] | None:
    """(matched, total) target units of one scored image, or None when the reader did not read it."""
    details = (row.get("details") or {}).get(reader) or {}
    if isinstance(details.get("matched"), int) and isinstance(details.get("total"), int) and details["total"] > 0:
        return details["matched"], details["total"]
    return None


def text_reader(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str | None:
    """The first reward in `names` whose details carry `matched` and `total` (the text-accuracy reader)."""
    return next((name for name in names if any(_counts(row, name) for row in rows)), None)


def _accuracy(counted: Sequence[tuple[Mapping[str, Any], tuple[int, int]]]) -> float | None:
    matched, total = sum(c[0] for _, c in counted), sum(c[1] for _, c in counted)
    return matched / total if total else None


def _by(counted: Sequence[tuple[Mapping[str, Any], tuple[int, int]]], key: str) -> dict[str, float | None]:
    values = sorted({str(row["meta"][key]) for row, _ in counted if (row.get("meta") or {}).get(key) is not None})
    return {value: _accuracy([(row, c) for row, c in counted if str((row.get("meta") or {}).get(key)) == value])
            for value in values}


def summarize(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """`{"overall", "by_length", "by_category", "rewards", "samples", ...}` of scored rows.

    overall / by_length / by_category: LongText-Bench's text accuracy (summed matched / summed target units)
    over the images the text reward read (None when it read none); rewards: each reward's mean and the
    total's over the rows it scored; samples: rows. Also `matched` / `target` (the overall sums), `reader`,
    `unread` (text prompts whose image the reader could not read: errors, not zeros) and `note`.
    """
    reader = text_reader(rows, names)
    counted = [(row, c) for row in rows if (c := _counts(row, reader)) is not None]
    means = {}
    for name in [*names, "total"]:
        values = [row[name] for row in rows if isinstance(row.get(name), (int, float))]
        means[name] = sum(values) / len(values) if values else None
    unread = sum(1 for row in rows if (row.get("meta") or {}).get("text") and _counts(row, reader) is None)
    return {"overall": _accuracy(counted), "by_length": _by(counted, "length"), "by_category": _by(counted, "category"),
            "rewards": means, "samples": len(rows), "matched": sum(c[0] for _, c in counted),
            "target": sum(c[1] for _, c in counted), "reader": reader, "unread": unread,
            "note": NOTE.format(reader=reader) if reader else "no reward reported matched/total: no text accuracy"}


def _lines(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) rows of a summary, in table order."""
    rows: list[tuple[str, Any]] = [("text accuracy", summary.get("overall"))]
    rows += [(f"  length {k}", v) for k, v in (summary.get("by_length") or {}).items()]
    rows += [(f"  category {k}", v) for k, v in (summary.get("by_category") or {}).items()]
    rows += [(f"reward {k} (mean)", v) for k, v in (summary.get("rewards") or {}).items()]
    return rows + [("images", summary.get("samples"))]


def _cell(value: Any, width: int = 10) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}d}" if isinstance(value, int) else f"{value:>{width}.4f}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The printed table: LongText-Bench's aggregation overall, by length and category, then reward means."""
    head = (f"LongText-Bench aggregation: {summary['matched']} of {summary['target']} target units matched "
            f"(read by {summary['reader']!r}; {summary['unread']} text images unread)")
    width = max(len(label) for label, _ in _lines(summary)) + 2
    body = [f"{label:<{width}}{_cell(value)}" for label, value in _lines(summary)]
    return "\n".join([head, *body, f"note: {summary['note']}"])


def format_comparison(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str]) -> str:
    """Two summaries side by side with B - A, row by row (rows only one of them has show '-')."""
    rows_a, rows_b = dict(_lines(a)), dict(_lines(b))
    labels = list(dict.fromkeys([label for label, _ in _lines(a)] + [label for label, _ in _lines(b)]))
    width = max(len(label) for label in labels) + 2
    title = f"{'':<{width}}{'A':>10}{'B':>10}{'B - A':>10}"
    body = []
    for label in labels:
        x, y = rows_a.get(label), rows_b.get(label)
        both = isinstance(x, (int, float)) and isinstance(y, (int, float))
        difference = f"{'-':>10}"
        if both:
            difference = f"{y - x:>+10d}" if isinstance(x, int) and isinstance(y, int) else f"{y - x:>+10.4f}"
        body.append(f"{label:<{width}}{_cell(x)}{_cell(y)}{difference}")
    return "\n".join([f"A: {names[0]}", f"B: {names[1]}", title, *body])
