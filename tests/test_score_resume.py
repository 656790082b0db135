"""Resume by reward in `python -m rewards.score`: what a rerun into the same OUT computes, and what it keeps.

The rewards (tests/score_rewards.py) log every image they score, so each test asserts exactly which rows
a run computed. Most runs call `main(argv)` in-process; the crash test kills a real subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from rewards.score import main
from rewards.store import read_scores
from tests.score_rewards import CRASH_AFTER, logged

ROOT = Path(__file__).resolve().parents[1]


def prompt(i):
    """Image i's prompt: the even ones ask for text on a sign (TextCount applies there)."""
    return f'a sign that reads "WORD{i}"' if i % 2 == 0 else f"a grey square number {i}"


PROMPTS = [prompt(i) for i in range(6)]


def write_images(folder, n=6):
    """n images i.png of grey level 40 * i (mod 256), each with its prompt in i.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), ((40 * i) % 256,) * 3).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(prompt(i))
    return folder


def write_config(path, log, weights_file=None, keywords=("sign",)):
    rewards = {"brightness": {"_component_": "tests.score_rewards.Brightness", "log": str(log)},
               "textcount": {"_component_": "tests.score_rewards.TextCount", "log": str(log)}}
    if weights_file is not None:
        rewards["filebyte"] = {"_component_": "tests.score_rewards.FileByte", "log": str(log),
                               "weights": str(weights_file)}
    cfg = {"rewards": rewards, "ensemble": {"weights": dict.fromkeys(rewards, 1.0), "normalize": "range"},
           "gating": {"default": [n for n in rewards if n != "textcount"], "needs_text": ["textcount"],
                      "rules": [{"name": "text", "keywords": list(keywords), "requires_text": True,
                                 "add": ["textcount"]}]}}
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture
def setup(tmp_path):
    log = tmp_path / "calls.log"
    images = write_images(tmp_path / "images")
    config = write_config(tmp_path / "rewards.yaml", log)
    base = ["--images", str(images), "--config", config, "--out", str(tmp_path / "out"), "--batch-size", "4"]
    return base, log, tmp_path / "out"


def lines(out):
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def by_image(out):
    return {r["image"]: r for r in read_scores(out)}


def test_a_reward_added_on_rerun_is_the_only_one_computed(setup, capsys):
    base, log, out = setup
    assert main([*base, "--only", "brightness"]) == 0
    assert len(logged(log, "brightness")) == 6 and logged(log, "textcount") == []
    first = by_image(out)
    assert first["0.png"]["total"] == first["0.png"]["brightness"] == 0.0
    capsys.readouterr()

    log.unlink()
    assert main([*base, "--only", "brightness,textcount"]) == 0
    assert logged(log, "brightness") == []  # stored, not recomputed
    assert logged(log, "textcount") == [PROMPTS[i] for i in (0, 2, 4)]  # every row it applies to
    plan = capsys.readouterr().out
    assert "brightness            6        6         0" in plan and "textcount             3        0         3" in plan
    now = by_image(out)
    for i in range(6):
        row = now[f"{i}.png"]
        assert row["brightness"] == pytest.approx(40 * i / 255)
        if i % 2 == 0:  # the total is now the mean of both rewards
            assert row["textcount"] == 0.25 and row["details"]["textcount"] == {"read": f"WORD{i}"}
            assert row["total"] == pytest.approx((40 * i / 255 + 0.25) / 2)
        else:
            assert row["textcount"] is None and row["total"] == pytest.approx(40 * i / 255)

    count = len(lines(out))
    log.unlink()
    assert main([*base, "--only", "brightness,textcount"]) == 0
    assert not log.exists() and len(lines(out)) == count  # nothing computed, nothing appended
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["only"] for r in runs] == [["brightness"], ["brightness", "textcount"], ["brightness", "textcount"]]
    assert set(runs[1]["rewards"]) == {"brightness", "textcount"} and len(runs[1]["images"]) == 6


def test_changed_kwargs_recompute_that_reward_only(setup):
    base, log, out = setup
    assert main(base) == 0
    log.unlink()
    assert main([*base, "rewards.brightness.scale=0.5"]) == 0
    assert len(logged(log, "brightness")) == 6 and logged(log, "textcount") == []
    rows = by_image(out)
    assert rows["5.png"]["brightness"] == pytest.approx(200 / 255 / 2)
    assert rows["4.png"]["total"] == pytest.approx((160 / 255 / 2 + 0.25) / 2)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[0]["rewards"]["brightness"] != runs[1]["rewards"]["brightness"]
    assert runs[0]["rewards"]["textcount"] == runs[1]["rewards"]["textcount"]
    assert "scale: 0.5" in (out / "config.yaml").read_text()  # the latest run's config


def test_a_changed_weights_file_is_detected_by_content(tmp_path):
    log, weights = tmp_path / "calls.log", tmp_path / "weights.bin"
    weights.write_bytes(bytes([51, 0, 0]))
    base = ["--images", str(write_images(tmp_path / "images", 2)), "--config",
            write_config(tmp_path / "c.yaml", log, weights), "--out", str(tmp_path / "out"), "--only", "filebyte"]
    assert main(base) == 0 and len(logged(log, "filebyte")) == 2
    os.utime(weights, ns=(0, 0))  # same bytes, other mtime: a small file is known by its hash
    assert main(base) == 0 and len(logged(log, "filebyte")) == 2
    weights.write_bytes(bytes([102, 0, 0]))
    assert main(base) == 0 and len(logged(log, "filebyte")) == 4
    assert by_image(tmp_path / "out")["1.png"]["filebyte"] == pytest.approx(0.4)


def test_rescore_recomputes_the_named_reward(setup, capsys):
    base, log, out = setup
    assert main(base) == 0
    log.unlink()
    assert main([*base, "--rescore", "textcount"]) == 0
    assert logged(log, "textcount") == [PROMPTS[i] for i in (0, 2, 4)] and logged(log, "brightness") == []
    assert main([*base, "--rescore", "textcount,nope"]) == 2
    assert "--rescore: 'nope' is not a reward of this run" in capsys.readouterr().err
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["rescore"] for r in runs] == [[], ["textcount"]]


def test_another_ensemble_or_gating_config_gives_new_totals_and_gates(setup):
    base, log, out = setup
    assert main(base) == 0
    count = len(lines(out))
    log.unlink()
    assert main([*base, "ensemble.weights.textcount=3"]) == 0
    assert not log.exists()  # no reward recomputed
    rows = by_image(out)
    assert rows["2.png"]["total"] == pytest.approx((80 / 255 + 3 * 0.25) / 4)
    assert rows["2.png"]["gates"]["weights"] == {"brightness": 1.0, "textcount": 3.0}
    assert rows["1.png"]["total"] == pytest.approx(40 / 255)
    assert len(lines(out)) == count + 3  # only the rows whose total or gate changed got a new line

    other = write_config(out.parent / "other.yaml", log, keywords=["poster"])  # the text rule no longer matches
    assert main([*base[:2], "--config", other, *base[4:]]) == 0
    rows = by_image(out)
    assert rows["2.png"]["task"] == "default" and rows["2.png"]["textcount"] is None
    assert rows["2.png"]["total"] == pytest.approx(80 / 255) and "textcount" not in rows["2.png"]["gates"]["weights"]
    assert main(base) == 0  # back to the first config: the stored results come back, nothing is computed
    assert not log.exists() and by_image(out)["2.png"]["textcount"] == 0.25


def test_a_crash_mid_run_then_a_rerun_loses_nothing_and_duplicates_nothing(setup):
    """Brightness is stored for 10 images; a run adding TextCount (5 text prompts, 2 per batch) is killed
    with SIGKILL in a real subprocess at its third call; the rerun computes what is left, once."""
    _, log, out = setup
    images = write_images(out.parent / "images", 10)
    args = ["--images", str(images), "--config", str(out.parent / "rewards.yaml"), "--out", str(out),
            "--batch-size", "2"]
    assert main([*args, "--only", "brightness"]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), CRASH_AFTER: "14"}  # 10 brightness + 2 batches of 2
    crashed = subprocess.run([sys.executable, "-m", "rewards.score", *args], capture_output=True, text=True,
                             env=env, timeout=300)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert logged(log, "textcount") == [prompt(i) for i in (0, 2, 4, 6)]
    assert sum("textcount" in (r.get("provenance") or {}).get("rewards", {}) for r in lines(out)) == 4

    assert main(args) == 0
    assert sorted(logged(log, "brightness")) == sorted(prompt(i) for i in range(10))  # each once, all runs
    assert logged(log, "textcount") == [prompt(i) for i in (0, 2, 4, 6, 8)]
    rows = read_scores(out)
    assert [r["image"] for r in rows] == [f"{i}.png" for i in range(10)]
    for i, row in enumerate(rows):
        assert row["brightness"] == pytest.approx((40 * i) % 256 / 255) and row["error"] is None
        assert row["textcount"] == (0.25 if i % 2 == 0 else None)
