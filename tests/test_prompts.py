"""Prompt sources: formats, per-epoch shuffling, exact resume, clear errors, and the shipped prompt sets."""

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prompts.sources import PromptRecord, PromptSource

DATA = Path(__file__).resolve().parents[1] / "prompts" / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    """A .txt (5 prompts + blank lines), a .jsonl (4) and a Parquet file in 3 row groups (7): 16 prompts."""
    txt = tmp_path / "a.txt"
    txt.write_text("a red apple\n\n  a blue car  \nt2\nt3\n\nt4\n", encoding="utf-8")
    jsonl = write_jsonl(tmp_path / "b.jsonl", [
        {"prompt": "a sign that says \"HI\"", "text": ["HI"], "task": "text_rendering", "category": "sign"},
        {"prompt": "j1", "text": "ONE STRING"},
        {"prompt": "j2", "score": 0.5},
        {"prompt": "j3"},
    ])
    parquet = tmp_path / "c.parquet"
    table = pa.table({"prompt": [f"p{i}" for i in range(7)],
                      "text": [["A", "B"], None, None, ["C"], None, None, None],
                      "category": ["poster"] + [None] * 6})
    pq.write_table(table, parquet, row_group_size=3)
    return [str(txt), str(jsonl), str(parquet)]


def all_prompts(source: PromptSource) -> list[str]:
    return [r.prompt for r in source.read(source.order(0))]


def test_formats_and_metadata(files):
    source = PromptSource(files, shuffle=False)
    assert len(source) == 16
    records = source.next_batch(16)
    assert [r.prompt for r in records[:5]] == ["a red apple", "a blue car", "t2", "t3", "t4"]
    assert records[0].metadata == {}
    assert records[5] == PromptRecord('a sign that says "HI"',
                                      {"text": ["HI"], "task": "text_rendering", "category": "sign"})
    assert records[6].metadata == {"text": ["ONE STRING"]}
    assert records[7].metadata == {"score": 0.5}
    assert records[9] == PromptRecord("p0", {"text": ["A", "B"], "category": "poster"})
    assert records[10] == PromptRecord("p1", {})  # nulls dropped
    assert records[12].metadata == {"text": ["C"]}
    assert [r.prompt for r in records[9:]] == [f"p{i}" for i in range(7)]


def test_every_epoch_is_a_permutation_that_depends_on_seed_and_epoch(files):
    source = PromptSource(files, seed=3)
    epochs = [[r.prompt for r in source.next_batch(16)] for _ in range(3)]
    file_order = all_prompts(PromptSource(files, shuffle=False))
    for epoch in epochs:
        assert sorted(epoch) == sorted(file_order)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != file_order
    assert [r.prompt for r in PromptSource(files, seed=3).next_batch(16)] == epochs[0]
    assert [r.prompt for r in PromptSource(files, seed=4).next_batch(16)] != epochs[0]
    assert source.state_dict()["epoch"] == 3 and source.state_dict()["cursor"] == 0


def test_batches_cross_epoch_boundaries(files):
    source = PromptSource(files, seed=0)
    first = [r.prompt for r in source.next_batch(10)]
    second = [r.prompt for r in source.next_batch(10)]  # 6 from epoch 0, 4 from epoch 1
    order0 = [r.prompt for r in source.read(source.order(0))]
    order1 = [r.prompt for r in source.read(source.order(1))]
    assert first + second[:6] == order0 and second[6:] == order1[:4]
    assert source.state_dict() == {"epoch": 1, "cursor": 4, "seed": 0, "num_prompts": 16}
    assert len(source.next_batch(40)) == 40


def test_resume_yields_exactly_the_same_prompts(files):
    straight = PromptSource(files, seed=7)
    expected = [[r.prompt for r in straight.next_batch(5)] for _ in range(8)]

    first = PromptSource(files, seed=7)
    got = [[r.prompt for r in first.next_batch(5)] for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))  # as stored in a checkpoint
    resumed = PromptSource(files, seed=7)
    resumed.load_state_dict(state)
    got += [[r.prompt for r in resumed.next_batch(5)] for _ in range(5)]
    assert got == expected


def test_state_from_another_seed_or_prompt_set_is_refused(files):
    state = PromptSource(files, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed 1 and 16 prompts"):
        PromptSource(files, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="16 prompts"):
        PromptSource(files[:2], seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="cursor=16"):
        PromptSource(files, seed=1).load_state_dict({**state, "cursor": 16})


def test_pickles_for_ray_actors(files):
    source = PromptSource(files, seed=5)
    source.next_batch(3)
    clone = pickle.loads(pickle.dumps(source))
    assert clone.next_batch(7) == source.next_batch(7)


def test_large_files_are_indexed_not_loaded(tmp_path):
    # 20,000 prompts of ~300 characters: a 6 MB file; the source keeps 16 bytes of index per prompt.
    rows = [{"prompt": f"prompt number {i} " + "x" * 280, "category": "bulk"} for i in range(20_000)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    source = PromptSource(str(path), seed=0)
    assert len(source) == 20_000
    assert len(pickle.dumps(source)) < 0.1 * path.stat().st_size
    batch = source.next_batch(4)
    assert [r.prompt for r in batch] == [rows[i]["prompt"] for i in source.order(0)[:4]]


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "ok"', "invalid JSON"),
    ('{"text": ["A"]}', "'prompt' must be a non-empty string"),
    ('{"prompt": "  "}', "'prompt' must be a non-empty string"),
    ('{"prompt": "p", "text": [1, 2]}', "'text' must be a list of strings"),
    ('["prompt"]', "expected a JSON object"),
])
def test_malformed_jsonl_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: {message}"):
        PromptSource(str(path))


def test_bad_files_give_clear_errors(tmp_path, files):
    with pytest.raises(FileNotFoundError, match=r"paths\[1\]: file or folder not found"):
        PromptSource([files[0], str(tmp_path / "missing.jsonl")])
    (tmp_path / "p.csv").write_text("prompt\nx\n")
    with pytest.raises(ValueError, match="unknown prompt file type '.csv'"):
        PromptSource(str(tmp_path / "p.csv"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        PromptSource(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt:2: not valid UTF-8"):
        PromptSource(str(tmp_path / "latin1.txt"))
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "nop.parquet")
    with pytest.raises(ValueError, match="no 'prompt' column"):
        PromptSource(str(tmp_path / "nop.parquet"))
    pq.write_table(pa.table({"prompt": ["x", None]}), tmp_path / "null.parquet")
    with pytest.raises(ValueError, match=r"null\.parquet:row 1: 'prompt' must be"):
        PromptSource(str(tmp_path / "null.parquet"), shuffle=False).next_batch(2)
    with pytest.raises(ValueError, match="batch size"):
        PromptSource(files).next_batch(0)


# ---------------------------------------------------------------------------------------------
# Shipped prompt sets


@pytest.mark.parametrize("name, task, low, high", [
    ("text_rendering.jsonl", "text_rendering", 60, 100),
    ("natural_scenes.jsonl", "natural_scene", 45, 60),
    ("general.jsonl", "general", 45, 60),
    ("tiny.jsonl", None, 16, 32),
])
def test_shipped_sets_load_with_their_metadata(name, task, low, high):
    source = PromptSource(str(DATA / name), shuffle=False)
    records = source.next_batch(len(source))
    assert low <= len(records) <= high
    assert len({r.prompt for r in records}) == len(records)
    for record in records:
        assert record.metadata["task"] == task or task is None
        assert record.metadata["category"]
        for target in record.metadata.get("text", []):
            assert f'"{target}"' in record.prompt


def test_shipped_text_prompts_cover_every_length_bucket():
    from prompts.synth import BUCKETS, word_count

    records = PromptSource(str(DATA / "text_rendering.jsonl"), shuffle=False).next_batch(76)
    counts = {b.name: 0 for b in BUCKETS}
    for record in records:
        n = word_count(record.metadata["text"])
        bucket = next(b for b in BUCKETS if b.min_words <= n and (n <= b.max_words or b is BUCKETS[-1]))
        assert record.metadata["length_bucket"] == bucket.name and record.metadata["text_length"] == n
        counts[bucket.name] += 1
    assert min(counts.values()) >= 12, counts


def test_tiny_set_is_short_and_mixes_tasks():
    records = PromptSource(str(DATA / "tiny.jsonl"), shuffle=False).next_batch(24)
    assert max(len(r.prompt.split()) for r in records) <= 10
    assert {r.metadata["task"] for r in records} == {"text_rendering", "natural_scene", "general"}
