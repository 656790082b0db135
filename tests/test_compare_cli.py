"""`python -m rewards.compare OUT_A OUT_B`: two real scoring outputs with differences known by construction.

Both outputs are written by `python -m rewards.score` (in-process) over uniform grey images, so every
score is known exactly: Brightness = grey level / 255, TextCount = targets / 4 (the same in A and B).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rewards.compare import paired_stats
from rewards.score import main as score

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, SAMPLES = 8, 2


def level(p, k, side):
    """Grey level of prompt p, sample k: B is 26 levels brighter, except on prompts 3 and 7 (13 darker)."""
    a = 20 + 10 * p + 5 * k
    return a if side == "a" else a + (-13 if p % 4 == 3 else 26)


def prompt(p):
    return f'a sign that reads "P{p}"' if p % 2 == 0 else f"a plain grey card number {p}"


def scored_output(tmp_path, side, extra):
    """A manifest in rl.generate's layout (prompt, sample) plus one `extra` row, scored into OUT."""
    folder = tmp_path / side
    (folder / "images").mkdir(parents=True)
    lines = []
    for p, k in [(p, k) for p in range(PROMPTS) for k in range(SAMPLES)] + [extra]:
        name = f"images/{p:05d}_{k}.png"
        Image.new("RGB", (8, 8), (level(p, k, side),) * 3).save(folder / name)
        lines.append({"image": name, "prompt": prompt(p), "prompt_index": p, "sample": k})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = tmp_path / "calls.log"
    rewards = {"brightness": {"_component_": "tests.score_rewards.Brightness", "log": str(log)},
               "textcount": {"_component_": "tests.score_rewards.TextCount", "log": str(log)}}
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"rewards": rewards, "ensemble": {"weights": dict.fromkeys(rewards, 1.0),
                                                                     "normalize": "range"},
                                  "gating": {"default": ["brightness"], "needs_text": ["textcount"],
                                             "rules": [{"name": "text", "requires_text": True,
                                                        "add": ["textcount"]}]}}))
    out = tmp_path / f"out_{side}"
    assert score(["--images", str(folder), "--prompts", str(folder / "manifest.jsonl"), "--config", str(config),
                  "--out", str(out)]) == 0
    return out


def test_compare_two_outputs_with_known_differences(tmp_path):
    out_a = scored_output(tmp_path, "a", (9, 0))
    out_b = scored_output(tmp_path, "b", (0, 5))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "rewards.compare", str(out_a), str(out_b), "--out",
                           str(tmp_path / "cmp")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(result) == {"matched", "unmatched_a", "unmatched_b", "rewards"}
    assert result["matched"] == PROMPTS * SAMPLES
    assert result["unmatched_a"] == ["images/00009_0.png"] and result["unmatched_b"] == ["images/00000_5.png"]
    assert list(result["rewards"]) == ["brightness", "textcount", "total"]

    pairs = [(p, k) for p in range(PROMPTS) for k in range(SAMPLES)]
    a = np.array([level(p, k, "a") / 255 for p, k in pairs])
    b = np.array([level(p, k, "b") / 255 for p, k in pairs])
    bright = result["rewards"]["brightness"]
    assert set(bright) == {"n", "mean_a", "mean_b", "diff", "ci95", "win_rate"} and bright["n"] == 16
    assert bright["mean_a"] == pytest.approx(a.mean()) and bright["mean_b"] == pytest.approx(b.mean())
    assert bright["diff"] == pytest.approx((12 * 26 - 4 * 13) / 16 / 255)
    lo, hi = bright["ci95"]
    # covers the difference, within the per-prompt extremes (scores are float32)
    assert -13 / 255 < lo < bright["diff"] < hi <= 26 / 255 + 1e-6
    assert bright["win_rate"] == 0.75  # B is brighter on 12 of 16 pairs

    text = result["rewards"]["textcount"]  # the same in A and B: every pair a tie
    assert text["n"] == 8 and text["diff"] == 0 and text["ci95"] == [0, 0] and text["win_rate"] == 0.5
    # total = mean of the rewards that apply: brightness alone, or (brightness + 0.25) / 2 on text prompts
    weight = np.array([0.5 if p % 2 == 0 else 1.0 for p, _ in pairs])
    total = result["rewards"]["total"]
    assert total["n"] == 16 and total["diff"] == pytest.approx(((b - a) * weight).mean())
    assert total["ci95"][0] < total["diff"] < total["ci95"][1]

    assert "matched 16 by prompt and sample index; unmatched: 1 in A, 1 in B" in done.stdout
    assert "unmatched in A (1): images/00009_0.png" in done.stdout
    assert "brightness        16    0.2255    0.2892   +0.0637   [+0.0" in done.stdout
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count("<h3>") == 3 and page.count("data:image/jpeg;base64,") == 3 * 8 * 2  # 8 largest, side by side


def test_rows_are_matched_by_image_name_without_a_sample_column(tmp_path, capsys):
    from rewards.compare import main as compare

    outs = []
    for side, value in (("a", 100), ("b", 150)):
        images = tmp_path / side
        images.mkdir()
        for name in ("x", "y", side):
            Image.new("RGB", (8, 8), (value,) * 3).save(images / f"{name}.png")
            (images / f"{name}.txt").write_text(f"prompt {name}")
        config = tmp_path / "c.yaml"
        config.write_text(json.dumps({"rewards": {"brightness": {"_component_": "tests.score_rewards.Brightness",
                                                                 "log": str(tmp_path / "log")}},
                                      "ensemble": {"weights": {"brightness": 1.0}}}))
        outs.append(tmp_path / f"out_{side}")
        assert score(["--images", str(images), "--config", str(config), "--out", str(outs[-1])]) == 0
    assert compare([str(outs[0]), str(outs[1]), "--out", str(tmp_path / "cmp")]) == 0
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["matched"] == 2 and result["unmatched_a"] == ["a.png"] and result["unmatched_b"] == ["b.png"]
    assert result["rewards"]["brightness"]["diff"] == pytest.approx(50 / 255)
    assert "matched 2 by image name" in capsys.readouterr().out
    assert compare([str(outs[0]), str(tmp_path / "nope")]) == 2
    assert f"OUT_B: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert compare([str(outs[0]), str(tmp_path / "cmp")]) == 2  # a folder, but not a scoring output
    assert f"OUT_B: no scores.jsonl in {tmp_path / 'cmp'}" in capsys.readouterr().err


def test_the_bootstrap_resamples_prompts_not_rows():
    """Prompt p0 has 3 samples with B - A = 1, prompt p1 one sample with B - A = 0. Resampling prompts, the
    mean difference is 1 (both draws p0), 0.75 (one each) or 0 (both p1): the interval spans [0, 1]."""
    a = np.zeros(4)
    b = np.array([1.0, 1.0, 1.0, 0.0])
    stats = paired_stats(a, b, ["p0", "p0", "p0", "p1"], resamples=4000, seed=0)
    assert stats["diff"] == 0.75 and stats["ci95"] == [0.0, 1.0] and stats["win_rate"] == 3.5 / 4  # a tie is half
    # resampling rows instead would almost never draw four zeros: its lower bound would be above 0
    assert paired_stats(a, b, ["r0", "r1", "r2", "r3"], resamples=4000, seed=0)["ci95"][0] > 0
