"""The CPU demo's parts: the glyph decoder can write a word exactly (a blank tile fills the rest of the row), the
real OCR reward reads it back as exact, and scripts/demo_table.py prints the before/after table."""

import json
import sys

import pytest
import torch
from train_helpers import REPO

from core.components import instantiate
from core.config import load_config
from rewards.ocr import OCRReward
from rl.decoder import PatchDecoder, to_uint8_images
from rl.decoder.patch import GLYPHS
from rl.state.checkpoint import save_checkpoint
from rl.state.learner_checkpoint import save_learner

sys.path.insert(0, str(REPO / "scripts"))
import demo_sweep  # noqa: E402
import demo_table  # noqa: E402


def glyph_tokens(decoder, rows):
    """long [len(rows), len(row)]: a code drawing each character of each row (" " is the blank tile)."""
    return torch.stack([torch.stack([decoder.codes_for_tile(GLYPHS.index(c))[0] for c in row]) for row in rows])


def glyph_rows(decoder, rows):
    """The images of rows of characters (" " is the blank tile) drawn by `decoder`."""
    tokens = glyph_tokens(decoder, rows)
    return to_uint8_images(decoder(tokens, (1, len(rows[0])), ["x"] * len(rows), list(range(len(rows)))).images)


def test_glyph_codes_draw_one_character_each_and_blank_paper_otherwise():
    decoder = PatchDecoder(mode="glyph", patch=16, codebook_size=64, seed=0)
    counts = torch.bincount(decoder.code_to_tile, minlength=len(GLYPHS))
    assert counts[:-1].tolist() == [1] * 36 and counts[-1] == 64 - 36  # the last tile is the blank
    with pytest.raises(ValueError, match="codebook_size >= 37"):
        PatchDecoder(mode="glyph", codebook_size=36)


def test_short_words_are_written_exactly_with_blank_tiles():
    decoder = PatchDecoder(mode="glyph", patch=16, codebook_size=len(GLYPHS), seed=0)
    assert decoder.tiles[GLYPHS.index(" ")].min() == 1.0  # blank: all white
    rows = [" CAT  ", "CA T  ", "CATS  ", "  42  ", "ROOM 7"]
    targets = ["CAT", "CAT", "CAT", "42", "ROOM 7"]
    out = OCRReward(metric="edit_distance")(glyph_rows(decoder, rows), ["p"] * 5, [{"text": [t]} for t in targets])
    # a blank inside the word is a space for OCR, which the metric ignores; an extra letter is not exact
    assert out.scores.tolist() == pytest.approx([1.0, 1.0, 0.75, 1.0, 1.0])


def test_demo_table_prints_each_prompt_before_and_after(tmp_path, capsys):
    """A 'trained' checkpoint that holds the initial policy: both columns must then read the same."""
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    policy = instantiate(cfg.model.policy, "model.policy")
    save_checkpoint(tmp_path, 3, lambda path: save_learner(path, policy, torch.optim.AdamW(policy.parameters()),
                                                           {"trained": {"lora": None}}), keep=1)
    assert demo_table.main([str(REPO / "configs" / "tiny.yaml"), str(tmp_path), "--samples", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    words = (REPO / "prompts" / "data" / "glyph_words.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in words]
    assert lines[0] == "| prompt | step 0 writes | step 3 writes | exact, step 0 | exact, step 3 |"
    rows = lines[2:2 + len(prompts)]
    for prompt, row in zip(prompts, rows, strict=True):
        cells = row.split(" | ")
        assert cells[0] == f"| {prompt}" and cells[1] == cells[2] and cells[3] == cells[4].rstrip(" |")
    summary = json.loads(lines[-1])
    assert summary["samples"] == 2 * len(prompts) and summary["final_step"] == 3
    assert summary["exact_step0"] == summary["exact_final"]


def test_demo_script_ends_with_the_table():
    """scripts/demo.sh's last command prints the before/after table of the run it trained."""
    commands = [line for line in (REPO / "scripts" / "demo.sh").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert commands[-1] == '.venv/bin/python scripts/demo_table.py configs/tiny.yaml runs/demo "$@"'
    assert 'rl.train configs/tiny.yaml run.dir=runs/demo' in "\n".join(commands)


def test_demo_sweep_scores_rows_as_the_ocr_metric_and_prints_a_line_per_seed(capsys):
    """The sweep's exact glyph reader gives what OCRReward(metric="edit_distance") gives for the same rows (OCR
    reads these rows exactly); two 2-step runs print one JSON line each, then the summary."""
    decoder = PatchDecoder(mode="glyph", patch=16, codebook_size=40, seed=0)
    rows, words = ["CAT", "CA ", "TAC", "K Y"], ["CAT", "CAT", "CAT", "KEY"]
    scores, exact = demo_sweep.glyph_rewards(decoder.code_to_tile, glyph_tokens(decoder, rows), words)
    ocr = OCRReward(metric="edit_distance")(glyph_rows(decoder, rows), ["p"] * 4, [{"text": [w]} for w in words])
    assert scores.tolist() == pytest.approx(ocr.scores.tolist()) and exact.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert demo_sweep.main(["--seeds", "2", "--samples", "2", "trainer.steps=2", "rollout.group_size=4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seed"] for line in lines[:2]] == [0, 1]
    assert all(0 <= line["exact_final"] <= 1 and 0 <= line["reward_last5"] <= 1 for line in lines[:2])
    assert lines[2] == {"seeds": 2, "mean": pytest.approx((lines[0]["exact_final"] + lines[1]["exact_final"]) / 2,
                                                           abs=1e-4),
                        "min": min(line["exact_final"] for line in lines[:2]),
                        "max": max(line["exact_final"] for line in lines[:2])}

