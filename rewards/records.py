"""The records of scores.jsonl, built from each row's gate and per-reward results.

A record keeps the columns readers know: image, prompt, task, one key per reward (its raw score; null
where it does not apply, failed or answered NaN), total, error, reward_errors, gates, details, meta; and
`provenance` (rewards/store.py). Totals are always recomputed from the stored results with the current
ensemble and gating config, so rows scored under another config get new gates and totals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rewards.ensemble import Combiner
from rewards.gating import Gate
from rewards.manifest import Row
from rewards.store import PROVENANCE, Result, json_default

FIXED_KEYS = frozenset({"image", "prompt", "task", "total", "error", "reward_errors", "gates", "details", "meta",
                        PROVENANCE})


@dataclass
class RowState:
    """One row through a run. error: why the row cannot be scored (manifest or image), else None.
    gate, reward_meta (the metadata rewards receive), input (fingerprint): set when error is None.
    resized: {"from": [w, h], "to": [w, h], "max_pixels": N} when the image is downsized before scoring
    (kept in the record's details under "image", a name no reward may take).
    results: name -> stored or new result. needed: rewards still to compute. failures: name -> error of
    a call that failed in this run."""

    row: Row
    error: str | None = None
    gate: Gate | None = None
    reward_meta: dict[str, Any] = field(default_factory=dict)
    input: str | None = None
    resized: dict[str, Any] | None = None
    results: dict[str, Result] = field(default_factory=dict)
    needed: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def fail(self, error: str) -> None:
        """The row cannot be scored in this run (e.g. its image does not decode): it keeps no result."""
        self.error, self.gate, self.results, self.needed, self.resized = error, None, {}, [], None


def compose(states: Sequence[RowState], combiner: Combiner, run: int) -> list[dict[str, Any]]:
    """One record per state, in order; totals from `combiner` over the gated rows at once."""
    names = combiner.names
    gated = [s for s in states if s.gate is not None]
    totals: dict[int, float] = {}
    if gated:
        scores = {n: torch.tensor([_nan(s.results.get(n)) for s in gated]) for n in names}
        applies = {n: torch.tensor([n in s.gate.weights for s in gated]) for n in names}
        failed = {n: torch.tensor([n in s.failures for s in gated]) for n in names}
        total, _ = combiner.combine(scores, applies, failed, [s.gate for s in gated])
        totals = {id(s): t for s, t in zip(gated, total.tolist(), strict=True)}
    return [_record(s, names, totals.get(id(s)), run) for s in states]


def _nan(result: Result | None) -> float:
    return math.nan if result is None or result.score is None else result.score


def _record(state: RowState, names: Sequence[str], total: float | None, run: int) -> dict[str, Any]:
    row, gate = state.row, state.gate
    record: dict[str, Any] = {"image": row.key, "prompt": row.prompt, "task": gate.task if gate else None}
    record.update({name: state.results[name].score if name in state.results else None for name in names})
    errors = dict(state.failures)
    error = state.error or ("; ".join(f"{n} failed: {m}" for n, m in errors.items()) or None)
    details = {n: r.details for n, r in state.results.items() if r.details}
    if state.resized is not None:
        details["image"] = state.resized
    record.update(total=_finite(total), error=error, reward_errors=errors, gates=gate.to_dict() if gate else None,
                  details=details, meta=row.metadata)
    record[PROVENANCE] = {"run": run, "input": state.input,
                          "rewards": {n: r.fingerprint for n, r in state.results.items()}}
    return normalized(record)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def normalized(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as it reads back from JSON (tuples as lists, numpy values as numbers)."""
    return json.loads(json.dumps(record, ensure_ascii=False, default=json_default))


def same_content(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """True when `old` (the stored record) says everything `new` says; only the run number may differ."""
    if old is None:
        return False
    strip = [{k: v for k, v in r.items() if k != PROVENANCE} | {"_": {**(r.get(PROVENANCE) or {}), "run": None}}
             for r in (new, old)]
    return strip[0] == strip[1]


def error_pattern(record: Mapping[str, Any]) -> str | None:
    """The record's error with its own image name and manifest line number taken out, so that alike
    errors of different rows read the same (for counting and filtering)."""
    if not record.get("error"):
        return None
    error = str(record["error"]).replace(str(record.get("image")), "<image>")
    return error.split(": ", 1)[1] if error.startswith("line ") and ": " in error else error


def reward_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The reward columns of records, in first-seen order."""
    return list(dict.fromkeys(k for r in records for k in r if k not in FIXED_KEYS))
