"""Everything `python -m rewards.score` and `python -m rewards.compare` write honours the umask: on a shared
cluster other users and other nodes' jobs read the scores and reports."""

import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from rewards.compare import main as compare
from rewards.score import main as score


def modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of every file and folder under root (root included)."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = stat.S_IMODE(path.stat().st_mode)
    return found


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_scores_reports_and_comparisons_honour_the_umask(tmp_path, umask):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i,) * 3).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"prompt {i}")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"rewards": {"brightness": {"_component_": "tests.score_rewards.Brightness",
                                                             "log": str(tmp_path / "log")}},
                                  "ensemble": {"weights": {"brightness": 1.0}}}))
    old = os.umask(umask)
    try:
        for out in ("a", "b"):
            assert score(["--images", str(images), "--config", str(config), "--out", str(tmp_path / out)]) == 0
        assert score(["--images", str(images), "--config", str(config), "--out", str(tmp_path / "a"),
                      "--rescore", "brightness"]) == 0  # files rewritten by a rerun too
        assert compare([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp" / "ab")]) == 0
    finally:
        os.umask(old)
    written = {**{f"a/{k}": v for k, v in modes(tmp_path / "a").items()},
               **{f"cmp/{k}": v for k, v in modes(tmp_path / "cmp").items()}}
    assert {"a/scores.jsonl", "a/runs.jsonl", "a/config.yaml", "a/scores.csv", "a/report.html", "a/thumbs",
            "cmp/ab/compare.json", "cmp/ab/compare.html"} <= set(written)
    assert any(k.startswith("a/thumbs/") for k in written)
    for name, mode in written.items():
        expected = 0o777 & ~umask if (tmp_path / name).is_dir() else 0o666 & ~umask
        assert mode == expected, f"{name}: {oct(mode)} under umask {oct(umask)}, expected {oct(expected)}"
