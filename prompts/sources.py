"""Prompt sources: .txt / JSONL / Parquet files, shuffled per epoch, with a resumable position.

    source = PromptSource(["prompts/data/text_rendering.jsonl", "my_prompts.parquet"], seed=0)
    batch = source.next_batch(8)          # list[PromptRecord]
    state = source.state_dict()           # {"epoch", "cursor", ...}: store it in the checkpoint

Files are indexed, not loaded: a text file keeps one byte offset per prompt line, a Parquet file only its
row-group sizes, and rows are read when a batch asks for them. The order of epoch e is a permutation that
is a pure function of (seed, e), so a source rebuilt from its state_dict yields exactly the same prompts.

Formats (by file suffix):
- `.txt`: one prompt per line; blank lines are skipped; metadata is empty.
- `.jsonl`: one JSON object per line with a string `prompt`; every other key goes to metadata as is
  (LongText-Bench rows work: `text` list, `category`, ...). Every line is checked when the file is opened,
  so a malformed row fails before training starts, with its `file:line`.
- `.parquet`: a `prompt` column plus metadata columns; null metadata values are dropped. Rows are read
  one row group at a time (each row group a batch touches is decoded once per batch).
In metadata, `text` (the target strings to render) must be a list of strings; a single string is
accepted as a one-element list.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # a runtime import would load torch (rl's torchvision fix) in the synth CLI
    from core.paths import LocalPath


@dataclass(frozen=True)
class PromptRecord:
    """One prompt and its metadata (`task`, `text` target strings, `category`, ... carried through)."""

    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _record(row: Mapping[str, Any], where: str) -> PromptRecord:
    """A PromptRecord from a JSONL object or Parquet row; `where` ("file:line") prefixes any error."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: 'prompt' must be a non-empty string, got {prompt!r}")
    metadata = {k: v for k, v in row.items() if k != "prompt" and v is not None}
    if "text" in metadata:
        text = metadata["text"]
        text = [text] if isinstance(text, str) else text
        if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
            raise ValueError(f"{where}: 'text' must be a list of strings, got {metadata['text']!r}")
        metadata["text"] = text
    return PromptRecord(prompt.strip(), metadata)


class _LineFile:
    """A .txt or .jsonl file indexed by the byte offset of each non-blank line."""

    def __init__(self, path: str, is_json: bool):
        self.path, self.is_json = path, is_json
        offsets, line_numbers = array("q"), array("q")
        offset = 0
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if raw.strip():
                    self._parse(raw, number)  # fail now, not hours into training
                    offsets.append(offset)
                    line_numbers.append(number)
                offset += len(raw)
        self.offsets, self.line_numbers = np.asarray(offsets), np.asarray(line_numbers)

    def __len__(self) -> int:
        return len(self.offsets)

    def _parse(self, raw: bytes, number: int) -> PromptRecord:
        where = f"{self.path}:{number}"
        try:
            line = raw.decode("utf-8-sig")  # -sig: a byte-order mark on the first line is not an error
            return _record(json.loads(line) if self.is_json else {"prompt": line}, where)
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not valid UTF-8 ({e.reason})") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e

    def read(self, rows: np.ndarray) -> list[PromptRecord]:
        """Records for local row indices `rows` [n], in that order (seeks in file order)."""
        records: dict[int, PromptRecord] = {}
        with open(self.path, "rb") as f:
            for row in sorted(set(rows.tolist())):
                f.seek(self.offsets[row])
                records[row] = self._parse(f.readline(), int(self.line_numbers[row]))
        return [records[row] for row in rows.tolist()]


class _ParquetFile:
    """A Parquet file indexed by its row-group sizes (read from the footer; no data is read to open it)."""

    def __init__(self, path: str):
        self.path = path
        parquet = self._open()
        if "prompt" not in parquet.schema_arrow.names:
            raise ValueError(f"{path}: no 'prompt' column (columns: {', '.join(parquet.schema_arrow.names)})")
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        self.group_starts = np.cumsum([0] + sizes)  # [groups + 1]

    def _open(self):  # reopened per read: a file handle would not pickle into Ray actors
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path)

    def __len__(self) -> int:
        return int(self.group_starts[-1])

    def read(self, rows: np.ndarray) -> list[PromptRecord]:
        """Records for local row indices `rows` [n], in that order; each row group touched is read once."""
        parquet = self._open()
        groups = np.searchsorted(self.group_starts, rows, side="right") - 1  # [n]
        records: dict[int, PromptRecord] = {}
        for group in np.unique(groups).tolist():
            wanted = rows[groups == group]                                   # [k] rows of this group
            table = parquet.read_row_group(group).take(wanted - self.group_starts[group])
            for row, values in zip(wanted.tolist(), table.to_pylist(), strict=True):
                records[row] = _record(values, f"{self.path}:row {row}")
        return [records[row] for row in rows.tolist()]


def _open_file(path: str) -> _LineFile | _ParquetFile:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".txt":
        return _LineFile(path, is_json=False)
    if suffix == ".jsonl":
        return _LineFile(path, is_json=True)
    if suffix == ".parquet":
        return _ParquetFile(path)
    raise ValueError(f"{path}: unknown prompt file type {suffix!r} (use .txt, .jsonl or .parquet)")


class PromptSource:
    """Prompts from one or several files, as one pool, in a reproducible order, resumable.

    Args:
        paths: a file or a list of files (.txt, .jsonl, .parquet; `hf://org/repo/file` from the HF cache).
        seed: the order of epoch e is a permutation drawn from (seed, e); non-negative.
        shuffle: False keeps file order (evaluation).
    """

    def __init__(self, paths: LocalPath | list[LocalPath], seed: int = 0, shuffle: bool = True):
        paths = [paths] if isinstance(paths, str) else list(paths)
        if not paths:
            raise ValueError("paths: give at least one prompt file")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        # Imported here: `rl` loads torch (its torchvision fix), which prompt tools (synth CLI) never need.
        from core.paths import resolve_local_path

        self.files = [_open_file(resolve_local_path(str(p), f"paths[{i}]")) for i, p in enumerate(paths)]
        self.file_starts = np.cumsum([0] + [len(f) for f in self.files])  # [files + 1]
        if len(self) == 0:
            raise ValueError(f"no prompts in {', '.join(map(str, paths))}")
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.cursor = 0, 0
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.file_starts[-1])

    def order(self, epoch: int) -> np.ndarray:
        """Global prompt indices [len(self)] in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return np.arange(len(self))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def next_batch(self, n: int) -> list[PromptRecord]:
        """The next `n` prompts; an epoch boundary inside the batch continues with the next epoch."""
        if n <= 0:
            raise ValueError(f"batch size must be positive, got {n}")
        indices = []
        while n > 0:
            if self._order_epoch != self.epoch:
                self._order_epoch, self._order = self.epoch, self.order(self.epoch)
            take = min(n, len(self) - self.cursor)
            indices.append(self._order[self.cursor:self.cursor + take])
            self.cursor, n = self.cursor + take, n - take
            if self.cursor == len(self):
                self.epoch, self.cursor = self.epoch + 1, 0
        return self.read(np.concatenate(indices))

    def read(self, indices: np.ndarray) -> list[PromptRecord]:
        """Records for global indices [n], in that order."""
        owners = np.searchsorted(self.file_starts, indices, side="right") - 1  # [n] file of each index
        records: list[PromptRecord | None] = [None] * len(indices)
        for owner in np.unique(owners).tolist():
            positions = np.flatnonzero(owners == owner)
            local = indices[positions] - self.file_starts[owner]
            for position, record in zip(positions.tolist(), self.files[owner].read(local), strict=True):
                records[position] = record
        return records  # type: ignore[return-value]

    def state_dict(self) -> dict[str, int]:
        """The position (epoch, cursor) plus what it is only valid for (seed, number of prompts)."""
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "num_prompts": len(self)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a `state_dict()`; refuses a state taken with another seed or prompt set."""
        if state["seed"] != self.seed or state["num_prompts"] != len(self):
            raise ValueError(f"prompt state was saved for seed {state['seed']} and {state['num_prompts']} "
                             f"prompts; this source has seed {self.seed} and {len(self)} prompts")
        if not 0 <= state["cursor"] < len(self) or state["epoch"] < 0:
            raise ValueError(f"invalid prompt position epoch={state['epoch']} cursor={state['cursor']}")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
