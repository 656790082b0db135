"""Text-rendering prompt synthesis: length buckets, quoted targets, determinism, and the CLI's JSONL."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prompts.sources import PromptSource
from prompts.synth import BUCKETS, CARRIERS, LengthBucket, synthesize, word_count

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows():
    return synthesize(per_bucket=150, seed=0)


def test_every_row_falls_in_its_bucket(rows):
    by_name = {b.name: b for b in BUCKETS}
    assert [r["length_bucket"] for r in rows] == [b.name for b in BUCKETS for _ in range(150)]
    for row in rows:
        bucket = by_name[row["length_bucket"]]
        assert bucket.min_words <= word_count(row["text"]) == row["text_length"] <= bucket.max_words
        assert row["task"] == "text_rendering" and row["category"] in {c.category for c in CARRIERS}


def test_lengths_spread_over_each_bucket(rows):
    for bucket in BUCKETS:
        lengths = {r["text_length"] for r in rows if r["length_bucket"] == bucket.name}
        assert len(lengths) >= 0.6 * (bucket.max_words - bucket.min_words + 1), (bucket, sorted(lengths))


def test_targets_are_quoted_verbatim_and_distinct(rows):
    for row in rows:
        assert row["text"] and len(set(row["text"])) == len(row["text"])
        for target in row["text"]:
            assert '"' not in target and f'"{target}"' in row["prompt"]
        assert row["prompt"].count('"') == 2 * len(row["text"])  # nothing else is quoted
    for bucket in BUCKETS:
        prompts = [r["prompt"] for r in rows if r["length_bucket"] == bucket.name]
        assert len(set(prompts)) == len(prompts)


def test_deterministic_by_seed_and_extendable():
    assert synthesize(5, seed=11) == synthesize(5, seed=11)
    assert synthesize(5, seed=11) != synthesize(5, seed=12)
    small, large = synthesize(3, seed=2), synthesize(6, seed=2)
    for bucket in BUCKETS:
        pick = [r for r in large if r["length_bucket"] == bucket.name][:3]
        assert [r for r in small if r["length_bucket"] == bucket.name] == pick


def test_custom_buckets_and_bad_arguments():
    rows = synthesize(4, seed=0, buckets=[LengthBucket("exact-5", 5, 5)])
    assert [r["text_length"] for r in rows] == [5] * 4
    with pytest.raises(ValueError, match="per_bucket"):
        synthesize(0)


def test_cli_writes_jsonl_that_prompt_source_loads(tmp_path):
    out = tmp_path / "synth.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "prompts.synth", "--per-bucket", "4", "--seed", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == synthesize(4, seed=1)
    records = PromptSource(str(out), shuffle=False).next_batch(20)
    assert [r.prompt for r in records] == [r["prompt"] for r in rows]
    assert records[0].metadata["text"] == rows[0]["text"] and records[0].metadata["length_bucket"] == "1-3"
