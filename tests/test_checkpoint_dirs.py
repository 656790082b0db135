"""Checkpoint directories are complete or ignored: atomic rename, marker last, pruning after completion."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from rl.state.checkpoint import MARKER, latest_checkpoint, list_checkpoints, save_checkpoint


def write_files(payload: str):
    def write(path):
        (path / "weights.bin").write_text(payload)
    return write


def test_save_marks_complete_and_rotates(tmp_path):
    for step in (10, 20, 30):
        final = save_checkpoint(tmp_path, step, write_files(str(step)), keep=2)
        assert (final / MARKER).is_file() and (final / "weights.bin").read_text() == str(step)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]
    assert latest_checkpoint(tmp_path).name == "step_00000030"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_incomplete_directories_are_skipped(tmp_path, caplog):
    save_checkpoint(tmp_path, 10, write_files("a"), keep=3)
    broken = tmp_path / "checkpoints" / "step_00000020"
    broken.mkdir()
    (broken / "weights.bin").write_text("half")
    assert latest_checkpoint(tmp_path).name == "step_00000010"
    assert "skipping incomplete checkpoint" in caplog.text


def test_a_failed_write_keeps_the_previous_checkpoints(tmp_path):
    save_checkpoint(tmp_path, 10, write_files("a"), keep=1)

    def failing(path):
        (path / "weights.bin").write_text("partial")
        raise RuntimeError("disk full")

    try:
        save_checkpoint(tmp_path, 20, failing, keep=1)
    except RuntimeError:
        pass
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]
    assert (latest_checkpoint(tmp_path) / "weights.bin").read_text() == "a"


def test_sigkill_during_save_leaves_the_last_complete_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 10, write_files("old"), keep=1)
    script = textwrap.dedent(f"""
        import time
        from rl.state.checkpoint import save_checkpoint
        def slow(path):
            (path / "weights.bin").write_text("new")
            open({str(tmp_path / 'started')!r}, "w").close()
            time.sleep(60)
        save_checkpoint({str(tmp_path)!r}, 20, slow, keep=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]
    # The next save cleans the dead writer's temporary directory.
    save_checkpoint(tmp_path, 30, write_files("next"), keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
