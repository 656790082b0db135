"""Bounded shapes for functions under torch.compile(dynamic=False), the option `rollout.compile`.

A static-shape graph serves one input shape: every new batch size compiles another graph, and past dynamo's
`recompile_limit` (default 8 per function) dynamo runs the function eagerly from then on, without an error.
So a batch's rows are padded up to one of a few sizes (`row_buckets`), which bounds the graphs a run compiles,
and calls run under `graph_limit`, which lets dynamo compile that many and makes hitting the limit an error.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch._dynamo.config


def row_buckets(max_rows: int) -> tuple[int, ...]:
    """The row counts a batch of 1..max_rows rows is padded to: the powers of two below max_rows, then max_rows
    (64 -> 1, 2, 4, ..., 64: 7 sizes; 48 -> 1, 2, ..., 32, 48). A padded batch has fewer than 2x the rows."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    return tuple(2**k for k in range(max_rows.bit_length()) if 2**k < max_rows) + (max_rows,)


def padded_rows(num_rows: int, max_rows: int) -> int:
    """The smallest of `row_buckets(max_rows)` that holds `num_rows` rows."""
    if not 1 <= num_rows <= max_rows:
        raise ValueError(f"a compiled batch holds 1 to {max_rows} rows, got {num_rows}")
    return next(size for size in row_buckets(max_rows) if size >= num_rows)


def pad_rows(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """[n, ...] -> [num_rows, ...]: the last row repeated. Padding rows are copies of a real one, so they are as
    valid an input as it is (a row of padding alone would attend to nothing and give NaN)."""
    return torch.cat([rows, rows[-1:].expand(num_rows - rows.shape[0], *rows.shape[1:])])


def graph_limit(graphs: int) -> AbstractContextManager:
    """dynamo's settings for calls of a compiled function that may hold `graphs` graphs (use as `with`):
    `recompile_limit` raised to that count (a larger global setting is kept), and hitting it raises
    `FailOnRecompileLimitHit` instead of running the function eagerly from then on."""
    limit = max(graphs, torch._dynamo.config.recompile_limit)
    return torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True)
