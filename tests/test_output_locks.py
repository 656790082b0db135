"""One process per output folder: a second `rl.train` on a held run.dir, or `rewards.score` on a held --out, exits 2
at once naming the holder (a real second process holding the real lock); the kernel frees the lock when the holder
is SIGKILLed. A full disk while scoring (a real tmpfs) ends in one line and keeps the rows already written."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import ray
from PIL import Image
from train_helpers import REPO, save_config, tiny_config, train

from core.lock import exclusive
from rewards.score import main as score


@pytest.fixture
def holder(tmp_path):
    """Start a process that takes `folder`'s lock through core.lock and sleeps; returns a function doing so."""
    started = []

    def hold(folder):
        script = textwrap.dedent(f"""
            import time
            from core.lock import exclusive
            with exclusive({str(folder)!r}, "test"):
                print("locked", flush=True)
                time.sleep(120)
        """)
        process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline() == "locked\n"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def assert_freed_by_sigkill(process, folder):
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with exclusive(folder, "test"):  # the kernel released it: a resume is never blocked by a killed run
        pass


def test_a_second_run_on_a_held_run_dir_exits_2_naming_the_holder_before_ray_starts(tmp_path, holder):
    run_dir = tmp_path / "run"
    config = save_config(tiny_config(run_dir, overrides=("trainer.steps=1",)), tmp_path / "tiny.yaml")
    process = holder(run_dir)
    refused = train(config)
    assert refused.returncode == 2 and not ray.is_initialized()
    assert refused.stderr.startswith(f"error: run.dir: {run_dir} is in use by process {process.pid} on host ")
    assert len(refused.stderr.splitlines()) == 1 and refused.stdout == ""
    assert_freed_by_sigkill(process, run_dir)


def write_images(folder, count, noisy=False):
    folder.mkdir(exist_ok=True)
    for i in range(count):
        size = (96, 96)
        image = Image.effect_noise(size, 80).convert("RGB") if noisy else Image.new("RGB", size, (i, i, i))
        image.save(folder / f"img{i:03d}.png")
        (folder / f"img{i:03d}.txt").write_text(f"a photo number {i}")


def score_config(tmp_path):
    rewards = {"brightness": {"_component_": "tests.score_rewards.Brightness", "log": str(tmp_path / "log.txt")}}
    path = tmp_path / "rewards.json"
    path.write_text(json.dumps({"rewards": rewards, "ensemble": {"weights": {"brightness": 1.0}},
                                "gating": {"default": ["brightness"]}}))
    return str(path)


def test_a_second_scorer_on_a_held_out_dir_exits_2_naming_the_holder(tmp_path, holder, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    write_images(images, 2)
    process = holder(out)
    args = ["--images", str(images), "--config", score_config(tmp_path), "--out", str(out)]
    assert score(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out: {out} is in use by process {process.pid} on host ") and err.count("\n") == 1
    assert not (out / "scores.jsonl").exists()
    assert_freed_by_sigkill(process, out)
    assert score(args) == 0


def test_a_full_disk_while_scoring_is_one_line_and_keeps_what_was_scored(tmp_path, small_disk, capsys, monkeypatch):
    monkeypatch.delenv("RL_DEBUG", raising=False)
    images, out = tmp_path / "images", small_disk / "out"
    write_images(images, 2)
    args = ["--images", str(images), "--config", score_config(tmp_path), "--out", str(out), "--batch-size", "2"]
    assert score(args) == 0
    before = (out / "scores.jsonl").read_text()
    write_images(images, 40, noisy=True)  # their thumbnails do not fit in what is left of 256 KiB
    capsys.readouterr()
    assert score(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1  # above it, only the progress bar
    assert err.splitlines()[-1].startswith(f"error: {out}") and "No space left on device" in err, err
    text = (out / "scores.jsonl").read_text()
    assert text.startswith(before) and text.endswith("\n")  # whole lines only: a rerun goes on from them
    assert all(json.loads(line) for line in text.splitlines())
