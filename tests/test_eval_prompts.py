"""The shipped held-out eval prompts: no prompt or target text of theirs is in a training file, and every
training config draws from training files only."""

import json
import re
from pathlib import Path

import pytest

from core.config import load_config
from prompts.sources import PromptSource

DATA = Path(__file__).resolve().parents[1] / "prompts" / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAINING = ("text_rendering.jsonl", "natural_scenes.jsonl", "general.jsonl", "tiny.jsonl", "glyph_words.jsonl")
HELD_OUT = ("eval_prompts.jsonl", "glyph_words_eval.jsonl")


def records(name):
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def normal(text):
    return re.sub(r"\s+", " ", text).strip().lower()


@pytest.mark.parametrize("held_out", HELD_OUT)
def test_held_out_prompts_and_targets_are_in_no_training_file(held_out):
    training = [r for name in TRAINING for r in records(name)]
    prompts = {normal(r["prompt"]) for r in training}
    targets = {normal(t) for r in training for t in r.get("text", [])}
    evaluated = records(held_out)
    assert len(PromptSource(str(DATA / held_out), shuffle=False)) == len(evaluated)
    assert not {normal(r["prompt"]) for r in evaluated} & prompts
    assert not {normal(t) for r in evaluated for t in r.get("text", [])} & targets
    assert all(f'"{t}"' in r["prompt"] for r in evaluated for t in r.get("text", []))  # gating finds them too


def test_eval_set_mixes_tasks_and_text_lengths():
    rows = records("eval_prompts.jsonl")
    tasks = [r["task"] for r in rows]
    assert (tasks.count("text_rendering"), tasks.count("natural_scene"), tasks.count("general")) == (16, 8, 8)
    assert {r["length_bucket"] for r in rows if "text" in r} == {"1-3", "4-8", "9-15", "16-30", "31+"}
    glyphs = [t for r in records("glyph_words_eval.jsonl") for t in r["text"]]
    width = load_config(CONFIGS / "tiny.yaml").rollout.grid[1]  # the demo's row: one glyph or blank per token
    assert all(re.fullmatch(r"[A-Z0-9 ]+", t) and len(t) <= width for t in glyphs)


@pytest.mark.parametrize("config", ["tiny.yaml", "xomni.yaml"])
def test_configs_train_on_training_files_and_evaluate_on_held_out_ones(config):
    cfg = load_config(CONFIGS / config)
    assert {Path(p).name for p in cfg.prompts.paths} <= set(TRAINING)
    evaluated = cfg.eval.prompts
    assert evaluated is None or {Path(p).name for p in evaluated} <= set(HELD_OUT)  # null: eval_prompts.jsonl
