"""The offline scorer `python -m rewards.score`: layouts, per-row errors, outputs, resume, exit codes.

Most tests call `main(argv)` in-process with small reward classes defined here (they count their calls,
so a test can tell which rows were scored); the last runs the real CLI in a subprocess with the shipped
config and the real no-weights rewards (quality, OCR) on the sample images the project renders itself.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.paths import LocalPath
from rewards.base import RewardOutput
from rewards.score import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_sample_images import make_samples  # noqa: E402


class MeanReward:
    """Mean pixel value / 255; counts the images it scored."""

    scored: list[str] = []
    score_range = (0.0, 1.0)

    def __call__(self, images, prompts, metadata):
        MeanReward.scored += list(prompts)
        return RewardOutput(torch.tensor([float(np.asarray(im).mean()) / 255 for im in images]))


class TargetsReward:
    """Number of target strings, with the targets echoed in `details` (as an OCR reward reports its read)."""

    score_range = (0.0, 4.0)

    def __call__(self, images, prompts, metadata):
        texts = [m["text"] for m in metadata]
        return RewardOutput(torch.tensor([float(len(t)) for t in texts]), {"read": [" | ".join(t) for t in texts]})


class SizeReward:
    """Mean pixel value / 255; records the (width, height) of every image it is given."""

    sizes: list[tuple[int, int]] = []
    score_range = (0.0, 1.0)

    def __call__(self, images, prompts, metadata):
        SizeReward.sizes += [image.size for image in images]
        return RewardOutput(torch.tensor([float(np.asarray(im).mean()) / 255 for im in images]))


class BrokenReward:
    def __call__(self, images, prompts, metadata):
        raise RuntimeError("CUDA out of memory")


class WeightsReward:
    """Needs a weights file (a LocalPath argument, checked before anything is built)."""

    def __init__(self, checkpoint: LocalPath):
        self.checkpoint = checkpoint

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.zeros(len(images)))


class MarkerReward:
    """Writes a file when built, so a test can prove no reward was built."""

    def __init__(self, marker: str):
        Path(marker).write_text("built")

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.zeros(len(images)))


def write_config(path, rewards=None, **extra):
    rewards = rewards or {"mean": {"_component_": f"{__name__}.MeanReward"},
                          "ocr": {"_component_": f"{__name__}.TargetsReward"}}
    cfg = {"rewards": rewards,
           "ensemble": {"weights": {name: 1.0 for name in rewards}, "normalize": "range"},
           "gating": {"default": ["mean"], "needs_text": ["ocr"],
                      "rules": [{"name": "text", "keywords": ["sign"], "requires_text": True, "add": ["ocr"]}]},
           **extra}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return str(path)


def save_image(path, value, size=(32, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def report_data(path):
    """The records report.html embeds (its <script id=data> JSON)."""
    text = Path(path).read_text()
    start = text.index("id='data'>") + len("id='data'>")
    return json.loads(text[start:text.index("</script>", start)])


def test_manifest_rows_with_problems_get_errors_and_the_run_goes_on(tmp_path, capsys):
    images = tmp_path / "images"
    save_image(images / "grey.png", 51)
    save_image(images / "sub" / "white.png", 255)
    (images / "corrupt.png").write_bytes(b"this is not an image")
    png = (images / "grey.png").read_bytes()
    (images / "truncated.png").write_bytes(png[: len(png) // 2])
    lines = [json.dumps({"image": "grey.png", "prompt": 'A sign that reads "OPEN" and "24/7"', "seed": 3}),
             json.dumps({"image": "sub/white.png", "prompt": "a white wall", "task": "plain"}),
             json.dumps({"image": "corrupt.png", "prompt": "x"}),
             json.dumps({"image": "truncated.png", "prompt": "x"}),
             json.dumps({"image": "missing.png", "prompt": "x"}),
             json.dumps({"image": "sub/white.png", "prompt": "listed twice"}),
             json.dumps({"image": "grey.png"}).replace("grey", "nope"),
             "{not json", "", json.dumps({"prompt": "no image"})]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = main(["--images", str(images), "--prompts", str(manifest), "--config", write_config(tmp_path / "c.yaml"),
               "--out", str(out), "--batch-size", "3"])
    assert rc == 0
    records = {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert len(records) == 9
    grey = records["grey.png"]
    assert grey["mean"] == pytest.approx(51 / 255, abs=1e-6) and grey["ocr"] == 2
    assert grey["total"] == pytest.approx((51 / 255 + 2 / 4) / 2, abs=1e-6)
    assert grey["task"] == "text" and grey["gates"]["text"] == ["OPEN", "24/7"] and grey["error"] is None
    assert grey["details"] == {"ocr": {"read": "OPEN | 24/7"}} and grey["meta"] == {"seed": 3}
    white = records["sub/white.png"]
    assert white["ocr"] is None and white["task"] == "plain" and white["total"] == pytest.approx(1.0)
    assert "cannot read image" in records["corrupt.png"]["error"]
    assert "cannot read image" in records["truncated.png"]["error"]
    assert "image not found: 'missing.png' is neither under --images" in records["missing.png"]["error"]
    assert records["missing.png"]["mean"] is None
    assert "already listed on line 2" in records["m.jsonl:6"]["error"]
    assert "missing prompt" in records["nope.png"]["error"]
    assert "invalid JSON" in records["m.jsonl:8"]["error"] and "missing image" in records["m.jsonl:10"]["error"]
    table = list(csv.DictReader(open(out / "scores.csv")))
    assert len(table) == 9 and {"image", "prompt", "task", "mean", "ocr", "total", "error", "text", "seed"} <= set(
        table[0])
    report = report_data(out / "report.html")
    assert sum(r["thumb"] is not None for r in report["rows"]) == 2 and "OPEN | 24/7" in json.dumps(report)
    summary = capsys.readouterr().out
    assert "9 images, 7 with errors" in summary and "mean per task" in summary


def test_rerun_skips_scored_rows_and_recovers_from_a_cut_line(tmp_path):
    images = tmp_path / "images"
    for i in range(5):
        save_image(images / f"{i}.png", 10 * i)
        (images / f"{i}.txt").write_text(f"prompt {i}")
    args = ["--images", str(images), "--config", write_config(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"),
            "--batch-size", "2"]
    MeanReward.scored = []
    assert main(args) == 0 and len(MeanReward.scored) == 5
    jsonl = tmp_path / "out" / "scores.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(lines[:3]) + lines[3][:20])  # a crash mid-write: line 4 cut, line 5 lost
    MeanReward.scored = []
    assert main(args) == 0
    assert sorted(MeanReward.scored) == ["prompt 3", "prompt 4"]
    records = read_jsonl(jsonl)
    assert sorted(r["image"] for r in records) == [f"{i}.png" for i in range(5)]
    MeanReward.scored = []
    assert main(args) == 0 and MeanReward.scored == []


def test_csv_manifest_with_text_column(tmp_path):
    save_image(tmp_path / "a.png", 0)
    save_image(tmp_path / "b.png", 0)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "prompt", "text", "category"])
        writer.writerow(["a.png", "a plain board", '["HELLO", "WORLD"]', "sign"])
        writer.writerow(["b.png", 'a sign that reads "IGNORED"', "JUST THIS", "sign"])
    out = tmp_path / "out"
    rewards = {"mean": {"_component_": f"{__name__}.MeanReward"}, "ocr": {"_component_": f"{__name__}.TargetsReward"},
               "broken": {"_component_": f"{__name__}.BrokenReward"}}
    config = write_config(tmp_path / "c.yaml", rewards, gating={"default": ["mean", "broken"], "needs_text": ["ocr"],
                                                                "rules": [{"name": "text", "add": ["ocr"]}]})
    assert main(["--images", str(tmp_path), "--prompts", str(manifest), "--config", config, "--out", str(out),
                 "ensemble.normalize=none", "ensemble.nan_policy=renormalize"]) == 0
    records = {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert records["a.png"]["gates"]["text"] == ["HELLO", "WORLD"] and records["a.png"]["ocr"] == 2
    assert records["b.png"]["gates"]["text"] == ["JUST THIS"] and records["b.png"]["meta"]["category"] == "sign"
    # a failing reward: its column is empty, the row says why, the other rewards still score
    assert records["a.png"]["broken"] is None and records["a.png"]["total"] == pytest.approx(1.0)
    assert "CUDA out of memory" in records["a.png"]["reward_errors"]["broken"]
    assert records["b.png"]["error"].startswith("broken failed: BrokenReward: RuntimeError: CUDA out of memory")


def test_longtext_bench_layout(tmp_path, capsys):
    prompts = tmp_path / "text_prompts.jsonl"
    rows = [{"prompt_id": 0, "prompt": 'A sign reads "FRESH BREWS"', "text": ["FRESH BREWS"], "category": "sign"},
            {"prompt_id": 1, "prompt": 'A poster titled "SALE"', "text": ["SALE"], "category": "poster"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    images = tmp_path / "samples"
    for name in ("0_0.png", "0_1.png", "1.png", "7_0.png", "cover.png"):
        save_image(images / name, 100)
    out = tmp_path / "out"
    assert main(["--images", str(images), "--prompts", str(prompts), "--config", write_config(tmp_path / "c.yaml"),
                 "--out", str(out)]) == 0
    records = {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert [records[k]["ocr"] for k in ("0_0.png", "0_1.png", "1.png")] == [1, 1, 1]
    assert records["1.png"]["meta"] == {"prompt_id": 1, "text": ["SALE"], "category": "poster"}
    assert "no prompt with prompt_id '7'" in records["7_0.png"]["error"]
    assert "no prompt with prompt_id 'cover'" in records["cover.png"]["error"]
    summary = capsys.readouterr().out
    assert "longtext layout" in summary and "mean per category" in summary and "poster" in summary


def test_usage_and_config_errors_exit_2_before_any_reward_is_built(tmp_path, capsys):
    marker = tmp_path / "built"
    save_image(tmp_path / "a.png", 0)
    (tmp_path / "a.txt").write_text("a prompt")
    rewards = {"marker": {"_component_": f"{__name__}.MarkerReward", "marker": str(marker)},
               "heavy": {"_component_": f"{__name__}.WeightsReward", "checkpoint": "/nope.pt"}}
    bad = write_config(tmp_path / "bad.yaml", rewards, ensemble={"weights": {"marker": 1, "ghost": 1}})
    base = ["--images", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*base, "--config", bad]) == 2
    err = capsys.readouterr().err
    for expected in ["rewards.heavy.checkpoint: file or folder not found", "ensemble.weights.ghost",
                     "ensemble.weights: no weight for reward 'heavy'", "gating.default: 'mean'"]:
        assert expected in err, expected
    good = write_config(tmp_path / "good.yaml", {"marker": rewards["marker"]}, gating={"default": ["marker"]},
                        ensemble={"weights": {"marker": 1}})
    assert main([*base, "--config", good, "--only", "marker,ocr"]) == 2
    assert "only: unknown reward(s) ['ocr']" in capsys.readouterr().err
    assert main([*base, "--config", good, "ensemble.nan_policy=maybe"]) == 2
    assert main([*base, "--config", good, "ensemble.normalize=range"]) == 2  # MarkerReward has no score_range
    assert "needs a class attribute score_range" in capsys.readouterr().err
    assert main([*base, "--config", good, "--prompts", str(tmp_path / "a.txt")]) == 2
    assert main(["--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--config", good]) == 2
    assert "--images: not a folder" in capsys.readouterr().err
    assert not marker.exists()
    assert main([*base, "--config", good]) == 0 and marker.exists()


def test_config_is_positional_and_the_older_config_flag_still_works(tmp_path, capsys):
    """CONFIG as the other commands take it; `--config` with overrides after it (intermixed parsing hands the first
    override to the positional) means the same."""
    save_image(tmp_path / "images" / "a.png", 10)
    (tmp_path / "images" / "a.txt").write_text("a prompt")
    config = write_config(tmp_path / "c.yaml", {"mean": {"_component_": f"{__name__}.MeanReward"}},
                          gating={"default": ["mean"]})
    images = ["--images", str(tmp_path / "images")]
    assert main([config, *images, "--out", str(tmp_path / "positional")]) == 0
    assert main([*images, "--config", config, "--out", str(tmp_path / "flag"), "ensemble.nan_policy=renormalize"]) == 0
    assert [r["mean"] for r in read_jsonl(tmp_path / "positional" / "scores.jsonl")] == \
        [r["mean"] for r in read_jsonl(tmp_path / "flag" / "scores.jsonl")]
    capsys.readouterr()
    assert main([*images, "--config", config, "--out", str(tmp_path / "o"), "ensemble.nan_policy=maybe"]) == 2
    assert "ensemble.nan_policy" in capsys.readouterr().err  # the override reached the config
    assert main([config, *images, "--config", config, "--out", str(tmp_path / "o")]) == 2
    assert "CONFIG: given twice" in capsys.readouterr().err
    assert main([*images, "--out", str(tmp_path / "o")]) == 2
    assert "CONFIG: required" in capsys.readouterr().err


def test_help_documents_the_layouts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for expected in ("manifest", "longtext", "sidecar", "{prompt_id}_{k}.png", "scores.jsonl", "key=value"):
        assert expected in text, expected


def test_shipped_config_scores_the_sample_images_without_weights(tmp_path):
    """The README's main job: the real quality and OCR rewards in a subprocess (the resume is tested above)."""
    manifest = make_samples(tmp_path / "sample")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rewards.score", "--images", str(manifest.parent), "--prompts", str(manifest),
               "--config", str(ROOT / "configs" / "rewards.yaml"), "--out", str(out), "--only", "quality,ocr",
               "--batch-size", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "img/s" in done.stderr
    records = {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert len(records) == 9 and all(r["error"] is None for r in records.values())
    assert records["sign_stop_42.png"]["ocr"] == pytest.approx(1.0)
    assert records["sign_stop_42_misspelled.png"]["ocr"] < 0.5
    assert all(r["ocr"] is None for k, r in records.items() if not k.startswith(("sign", "poster")))
    assert records["astronaut.png"]["quality"] > records["astronaut_blurred.png"]["quality"]
    assert records["coffee.png"]["quality"] > records["coffee_noisy.png"]["quality"]
    assert "mean per category" in done.stdout and "photo_noise" in done.stdout
    assert all(r["thumb"] for r in report_data(out / "report.html")["rows"])


def test_exit_1_when_no_image_was_scored_with_the_most_common_error_and_a_hint(tmp_path, capsys):
    images = tmp_path / "images"
    for i in range(3):
        save_image(images / f"{i}.png", 10)
    manifest = tmp_path / "elsewhere" / "m.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("".join(json.dumps({"image": f"{i}.png", "prompt": "p"}) + "\n" for i in range(3)))
    config = write_config(tmp_path / "c.yaml")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    assert main(["--images", str(wrong), "--prompts", str(manifest), "--config", config,
                 "--out", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert "no image was scored; most common error (3 of 3 images): image not found: '<image>' is neither" in err
    assert "hint: a relative `image` path is looked up under --images" in err
    # no --prompts and no sidecar .txt files
    assert main(["--images", str(images), "--config", config, "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "(3 of 3 images): no prompt: the .txt beside the image is missing" in err
    assert "hint: without --prompts each image needs its prompt in <name>.txt" in err
    assert main(["--images", str(wrong), "--config", config, "--out", str(tmp_path / "o3")]) == 1
    assert "no images found in --images" in capsys.readouterr().err
    # a reward that fails on every image: nothing scored either
    broken = write_config(tmp_path / "b.yaml", {"broken": {"_component_": f"{__name__}.BrokenReward"}},
                          gating={"default": ["broken"]}, ensemble={"weights": {"broken": 1.0}})
    assert main(["--images", str(images), "--prompts", str(manifest), "--config", broken,
                 "--out", str(tmp_path / "o4")]) == 1
    assert "hint: every reward failed on every image" in capsys.readouterr().err
    # one image scored is success
    (images / "0.txt").write_text("a prompt")
    assert main(["--images", str(images), "--config", config, "--out", str(tmp_path / "o2")]) == 0


def test_a_relative_image_path_is_looked_up_under_images_then_beside_the_manifest(tmp_path):
    """rl.generate's layout: OUT/manifest.jsonl names images/00000_0.png, relative to OUT."""
    generated = tmp_path / "generated"
    save_image(generated / "images" / "00000_0.png", 100)
    save_image(generated / "images" / "00001_0.png", 200)
    manifest = generated / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"images/0000{i}_0.png", "prompt": f"p{i}", "sample": 0}) + "\n"
                                for i in range(2)))
    config = write_config(tmp_path / "c.yaml")
    for n, images in enumerate([generated / "images", generated]):
        out = tmp_path / f"out{n}"
        assert main(["--images", str(images), "--prompts", str(manifest), "--config", config, "--out", str(out)]) == 0
        records = {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}
        assert records["images/00001_0.png"]["mean"] == pytest.approx(200 / 255) and records[
            "images/00000_0.png"]["error"] is None
    # --images wins over the manifest's folder when both hold the file
    save_image(generated / "images" / "images" / "00000_0.png", 0)
    out = tmp_path / "out2"
    assert main(["--images", str(generated / "images"), "--prompts", str(manifest), "--config", config,
                 "--out", str(out)]) == 0
    assert {r["image"]: r for r in read_jsonl(out / "scores.jsonl")}["images/00000_0.png"]["mean"] == 0


def test_rows_that_could_not_be_read_or_scored_are_retried_on_rerun(tmp_path, monkeypatch):
    from tests.score_rewards import FAIL_ON, logged

    images, log = tmp_path / "images", tmp_path / "calls.log"
    for name in ("a", "b", "c"):
        (images / f"{name}.txt").parent.mkdir(parents=True, exist_ok=True)
        (images / f"{name}.txt").write_text(f"prompt {name}")
    save_image(images / "a.png", 50)
    save_image(images / "b.png", 100)
    (images / "c.png").write_bytes(b"not yet an image")
    rewards = {"brightness": {"_component_": "tests.score_rewards.Brightness", "log": str(log)}}
    config = write_config(tmp_path / "c.yaml", rewards, gating={"default": ["brightness"]})
    args = ["--images", str(images), "--config", config, "--out", str(tmp_path / "out"), "--batch-size", "1"]
    monkeypatch.setenv(FAIL_ON, "prompt b")
    assert main(args) == 0
    rows = {r["image"]: r for r in read_jsonl(tmp_path / "out" / "scores.jsonl")}
    assert "injected failure" in rows["b.png"]["error"] and "cannot read image" in rows["c.png"]["error"]
    assert logged(log) == ["prompt a"]
    monkeypatch.delenv(FAIL_ON)
    save_image(images / "c.png", 150)  # the missing image now exists
    assert main(args) == 0
    assert logged(log) == ["prompt a", "prompt b", "prompt c"]  # the failed rows, and only those
    rows = {r["image"]: r for r in read_jsonl(tmp_path / "out" / "scores.jsonl")}  # the last line of each wins
    assert [rows[k]["error"] for k in ("a.png", "b.png", "c.png")] == [None, None, None]
    assert rows["c.png"]["brightness"] == pytest.approx(150 / 255)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the 24 MP PNG, at the lowered limit
def test_images_over_max_pixels_are_downsized_on_load_or_are_row_errors(tmp_path, monkeypatch, capsys):
    """Large images of one colour, small on disk: a 6000 x 4000 PNG and a 9000 x 5000 JPEG (45 MP, over the
    default 40 MP). The size is read from the header; the JPEG decodes at 1/8 scale (draft) before the LANCZOS
    resize to what --max-pixels allows."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (6000, 4000), (200, 200, 200)).save(images / "big.png")
    Image.new("RGB", (9000, 5000), (100, 100, 100)).save(images / "big.jpg", quality=90)
    save_image(images / "small.png", 50)
    for name in ("big.png", "big.jpg", "small.png"):
        (images / name).with_suffix(".txt").write_text(f"prompt {name}")  # big.png and big.jpg share big.txt
    assert (images / "big.png").stat().st_size < 200_000
    config = write_config(tmp_path / "c.yaml", {"size": {"_component_": f"{__name__}.SizeReward"}},
                          gating={"default": ["size"]}, ensemble={"weights": {"size": 1.0}})
    base = ["--images", str(images), "--config", config, "--max-pixels", "100000"]
    SizeReward.sizes = []
    assert main([*base, "--out", str(tmp_path / "out")]) == 0
    assert sorted(SizeReward.sizes) == [(32, 24), (387, 258), (424, 235)]  # <= 100,000 pixels, aspect kept
    records = {r["image"]: r for r in read_jsonl(tmp_path / "out" / "scores.jsonl")}
    assert records["big.png"]["details"]["image"] == {"from": [6000, 4000], "to": [387, 258], "max_pixels": 100000}
    assert records["big.png"]["size"] == pytest.approx(200 / 255, abs=1e-3)
    assert records["big.jpg"]["size"] == pytest.approx(100 / 255, abs=2e-3) and records["big.jpg"]["error"] is None
    assert "image" not in records["small.png"]["details"]
    SizeReward.sizes = []  # a rerun reuses all; another --max-pixels rescores the downsized images only
    assert main([*base, "--out", str(tmp_path / "out")]) == 0 and SizeReward.sizes == []
    assert main([*base[:-1], "200000", "--out", str(tmp_path / "out")]) == 0
    assert sorted(SizeReward.sizes) == [(547, 365), (600, 333)]

    SizeReward.sizes = []
    assert main([*base, "--on-large", "error", "--out", str(tmp_path / "strict")]) == 0
    records = {r["image"]: r for r in read_jsonl(tmp_path / "strict" / "scores.jsonl")}
    assert records["big.jpg"]["error"] == ("image too large: 9000x5000 is over --max-pixels 100000 "
                                           "(--on-large downsize scores it downsized)")
    assert records["big.png"]["size"] is None and "image too large: 6000x4000" in records["big.png"]["error"]
    assert records["small.png"]["error"] is None
    assert SizeReward.sizes == [(32, 24)]
    # Over twice PIL's decompression-bomb limit, opening the file (reading its header) refuses it: a row error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 15_000_000)
    assert main([*base, "--out", str(tmp_path / "bomb")]) == 0
    records = {r["image"]: r for r in read_jsonl(tmp_path / "bomb" / "scores.jsonl")}
    assert "cannot read image: DecompressionBombError" in records["big.jpg"]["error"]
    assert records["big.png"]["error"] is None  # 24 MP: over the limit but not twice it (PIL only warns)
    assert main(["--images", str(images), "--config", config, "--out", str(tmp_path / "o"), "--max-pixels", "0"]) == 2
    assert "--max-pixels: must be >= 1, got 0" in capsys.readouterr().err


def test_manifest_paths_whose_dotdot_leave_the_images_folder_are_row_errors(tmp_path):
    """`..` out of the folder: a row error unless --allow-outside; an absolute path and a symlink that points
    outside (a Hugging Face cache) are taken as they are, and `..` that stays inside is fine."""
    images, outside = tmp_path / "data" / "images", tmp_path / "secret"
    save_image(images / "sub" / "in.png", 100)
    save_image(outside / "out.png", 200)
    (images / "linked.png").symlink_to(outside / "out.png")
    manifest = images / "m.jsonl"  # beside the images: both lookup folders are the same
    names = ["../../secret/out.png", "sub/../sub/in.png", str(outside / "out.png"), "linked.png"]
    manifest.write_text("".join(json.dumps({"image": n, "prompt": f"p{i}"}) + "\n" for i, n in enumerate(names)))
    config = write_config(tmp_path / "c.yaml")
    base = ["--images", str(images), "--prompts", str(manifest), "--config", config]
    assert main([*base, "--out", str(tmp_path / "out")]) == 0
    records = {r["image"]: r for r in read_jsonl(tmp_path / "out" / "scores.jsonl")}
    assert records[names[0]]["error"] == ("line 1: image '../../secret/out.png' leads out of the images folder "
                                          "through '..' (--allow-outside allows it)")
    assert records[names[0]]["mean"] is None
    assert [records[n]["mean"] for n in names[1:]] == pytest.approx([100 / 255, 200 / 255, 200 / 255])
    assert main([*base, "--allow-outside", "--out", str(tmp_path / "allowed")]) == 0
    records = {r["image"]: r for r in read_jsonl(tmp_path / "allowed" / "scores.jsonl")}
    assert records[names[0]]["error"] is None and records[names[0]]["mean"] == pytest.approx(200 / 255)
