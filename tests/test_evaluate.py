"""`python -m rl.evaluate` end to end on configs/tiny.yaml with the shipped LongText-Bench English prompts (the
first 4, 2 samples each): LongText-Bench's layout, scores.jsonl in the scorer's format, a summary equal to the
official aggregation recomputed from scores.jsonl, resuming, --compare, and the errors reported up front.

The CLI runs in-process (`main(argv)`); the real OCR reward reads every image. The tiny policy's glyph rows
seldom spell a target word, so a second run swaps in a decoder that writes the prompts' quoted words
(tests/eval_components.py) and gives the aggregation real matches to count.
"""

import json
from pathlib import Path

import pytest

from rewards.text_accuracy import text_recall, tokens
from rl.evaluate import main
from rl.evaluation.benchmark import summarize

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
BENCH = [json.loads(line) for line in (ROOT / "prompts/data/longtext_bench_en.jsonl").read_text().splitlines()]
TEXT_DECODER = ("model.decoder._component_=tests.eval_components.QuotedTextDecoder", "rollout.grid=[4,16]")


def evaluate(out, *extra, limit=4):
    return main([TINY, "--prompts", "longtext-en", "--samples-per-prompt", "2", "--out", str(out),
                 "--limit", str(limit), "--device", "cpu", *extra])


def official(rows, key=None):
    """LongText-Bench's aggregation recomputed from scores.jsonl: each image's OCR reading scored against its
    targets in the English (word) mode, matched and target words summed before dividing."""
    groups = {}
    for row in rows:
        found = text_recall(row["meta"]["text"], row["details"]["ocr"]["ocr_text/rapidocr"], "en")
        group = groups.setdefault(row["meta"][key] if key else None, [0, 0])
        group[0], group[1] = group[0] + found[0], group[1] + found[1]
    return {k: m / t for k, (m, t) in groups.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny config as shipped (grown from 3 to 4 prompts by a rerun), and with the text-writing decoder."""
    root = tmp_path_factory.mktemp("evaluate")
    assert evaluate(root / "tiny", limit=3) == 0
    assert evaluate(root / "tiny") == 0
    assert evaluate(root / "text", *TEXT_DECODER) == 0
    return root


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["tiny", "text"])
def test_summary_is_longtext_bench_aggregation_of_scores(runs, name):
    out = runs / name
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == [f"{i}_{k}.png" for i in range(4) for k in range(2)]  # {prompt_id}_{k}.png
    rows = read_jsonl(out / "scores.jsonl")
    assert sorted(r["image"] for r in rows) == images
    for row in rows:  # the scorer's format, its keys kept
        assert {"image", "prompt", "task", "ocr", "total", "gates", "details", "error", "meta"} <= set(row)
        assert row["error"] is None and row["meta"]["text"] == BENCH[row["meta"]["prompt_id"]]["text"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 8 and summary["reader"] == "ocr" and "Qwen2.5-VL-7B" in summary["note"]
    assert summary["overall"] == pytest.approx(official(rows)[None])
    assert summary["by_length"] == pytest.approx(official(rows, "length")) and set(summary["by_length"]) == {"short"}
    assert summary["by_category"] == pytest.approx(official(rows, "category"))
    assert summary["target"] == 2 * sum(len(tokens(" ".join(p["text"]), "en")) for p in BENCH[:4])  # words
    assert summary["rewards"]["ocr"] == pytest.approx(sum(r["ocr"] for r in rows) / 8)
    if name == "text":  # real words on the images: real matches
        assert summary["matched"] >= 8 and summary["overall"] > 0


def test_reruns_draw_and_score_only_what_is_missing(runs, capsys):
    assert evaluate(runs / "tiny") == 0
    out = capsys.readouterr().out
    assert "0 images to draw, 8 already" in out and len(read_jsonl(runs / "tiny" / "scores.jsonl")) == 8
    assert "LongText-Bench aggregation" in out and "length short" in out and "category sign" in out
    # The fixture's first run drew 3 prompts; the rerun with --limit 4 added only the 4th prompt's 2 images.
    assert [r["image"] for r in read_jsonl(runs / "tiny" / "manifest.jsonl")][6:] == ["images/3_0.png",
                                                                                      "images/3_1.png"]
    assert evaluate(runs / "tiny", "--seed", "1") == 2  # other images into the same folder: refused
    assert "other seed" in capsys.readouterr().err


def test_compare_prints_two_summaries_and_their_differences(runs, capsys, tmp_path):
    """--compare prints the benchmark's figures side by side, then is rewards.compare (one implementation of the
    paired comparison) on the two folders' scores.jsonl."""
    assert main(["--compare", str(runs / "tiny"), str(runs / "text"), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    paired = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert paired["matched"] == 8 and "ocr" in paired["rewards"] and "B wins" in out
    a, b = (json.loads((runs / d / "summary.json").read_text()) for d in ("tiny", "text"))
    line = next(line for line in out.splitlines() if line.startswith("text accuracy"))
    assert line.split()[-3:] == [f"{a['overall']:.4f}", f"{b['overall']:.4f}", f"{b['overall'] - a['overall']:+.4f}"]
    assert any(line.split()[:2] == ["images", "8"] for line in out.splitlines())
    assert main(["--compare", str(runs / "tiny"), str(runs / "nowhere")]) == 2
    assert "no summary.json in" in capsys.readouterr().err


def test_command_line_problems_are_listed_before_anything_loads(tmp_path, capsys):
    assert main([TINY, "--samples", "0", "--limit", "0"]) == 2  # --samples: the deprecated spelling
    err = capsys.readouterr().err
    assert "warning: --samples is deprecated; use --samples-per-prompt" in err
    for expected in ("--prompts: required", "--out: required", "--samples-per-prompt: must be >= 1",
                     "--limit: must be >= 1"):
        assert expected in err
    out = tmp_path / "out"
    assert main([TINY, "--prompts", str(tmp_path / "missing.jsonl"), "--samples-per-prompt", "1", "--out", str(out),
                 "--only", "nope", "rollout.sampling.top_p=0"]) == 2
    err = capsys.readouterr().err
    for expected in ("--prompts: paths[0]: file or folder not found", "only: unknown reward(s) ['nope']",
                     "rollout.sampling: top_p must be in (0, 1]"):
        assert expected in err
    assert not out.exists()


def test_summary_sums_before_dividing_and_counts_unread_images():
    """Hand-made rows: 3 of 14 words, not the mean of the per-image accuracies (0.375); the third text image
    was not read (its OCR failed), which is counted, not scored 0."""
    def row(matched, total, length, category, ocr=0.5):
        details = {"ocr": {"matched": matched, "total": total}} if total else {}
        return {"image": "x.png", "ocr": ocr, "total": ocr, "details": details,
                "meta": {"text": ["words"], "length": length, "category": category}}

    rows = [row(0, 10, "long", "sign"), row(3, 4, "long", "menu"), row(0, 0, "short", "sign", ocr=None)]
    summary = summarize(rows, ["ocr"])
    assert summary["overall"] == 3 / 14 and (summary["matched"], summary["target"]) == (3, 14)
    assert summary["by_length"] == {"long": 3 / 14} and summary["by_category"] == {"menu": 0.75, "sign": 0.0}
    assert summary["unread"] == 1 and summary["samples"] == 3 and summary["rewards"] == {"ocr": 0.5, "total": 0.5}
    nothing = summarize([{"image": "y.png", "quality": 0.7, "total": 0.7}], ["quality"])
    assert nothing["overall"] is None and nothing["reader"] is None and nothing["by_length"] == {}
