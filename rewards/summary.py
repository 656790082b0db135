"""Tables of a scoring output: scores.csv and the summary printed at the end of a run."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards.store import write_atomic

FIXED_COLUMNS = ("image", "prompt", "task")


def write_csv(records: Sequence[Mapping[str, Any]], names: Sequence[str], path: Path) -> None:
    """One row per image: image, prompt, task, one column per reward, total, error, target text, and the
    manifest's other columns (lists and mappings as JSON)."""
    extra = list(dict.fromkeys(k for r in records for k in (r.get("meta") or {}) if k != "text"))
    columns = [*FIXED_COLUMNS, *names, "total", "error", "text", *extra]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        row = {k: _cell(v) for k, v in (r.get("meta") or {}).items()}
        row.update({k: r.get(k) for k in (*FIXED_COLUMNS, *names, "total", "error")})
        row["text"] = json.dumps((r.get("gates") or {}).get("text", []), ensure_ascii=False)
        writer.writerow(row)
    write_atomic(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def summarize(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """A printable summary: per reward (scored / applicable, failures, mean, std), then the mean of each
    reward and the total per task and per `category` (LongText-Bench) when present."""
    lines = [f"{len(records)} images, {sum(r.get('error') is not None for r in records)} with errors",
             f"{'reward':<14}{'scored':>8}{'applies':>9}{'failed':>8}{'mean':>10}{'std':>10}"]
    for name in [*names, "total"]:
        values = values_of(records, name)
        gates = [r.get("gates") for r in records if r.get("gates") is not None]  # the rows that were scored
        applies = len(gates) if name == "total" else sum(name in g.get("weights", {}) for g in gates)
        failed = sum(name in (r.get("reward_errors") or {}) for r in records)
        lines.append(f"{name:<14}{len(values):>8}{applies:>9}{failed:>8}{fmt(mean(values)):>10}{fmt(_std(values)):>10}")
    for group in ("task", "category"):
        keyed = [(r.get(group) or (r.get("meta") or {}).get(group), r) for r in records]
        if all(k is None for k, _ in keyed):
            continue
        lines.append(f"\nmean per {group}:")
        lines.append(f"{group:<16}{'n':>6}" + "".join(f"{n[:11]:>12}" for n in [*names, "total"]))
        for value in sorted({str(k) for k, _ in keyed}):
            members = [r for k, r in keyed if str(k) == value]
            means = "".join(f"{fmt(mean(values_of(members, n))):>12}" for n in [*names, "total"])
            lines.append(f"{value[:15]:<16}{len(members):>6}{means}")
    return "\n".join(lines)


def values_of(records: Iterable[Mapping[str, Any]], name: str) -> list[float]:
    """The numeric values of column `name` (null and missing left out)."""
    return [r[name] for r in records if isinstance(r.get(name), (int, float)) and not isinstance(r[name], bool)]


def fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
