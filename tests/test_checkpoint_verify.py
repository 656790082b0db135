"""A checkpoint's marker records each file's size and SHA-256; a truncated, altered or missing file, or a broken
trainer_state.json, is named in one line before anything loads; resume=auto falls back to the newest checkpoint
that verifies. Files are written by the real save functions; the disk-full case on a real, small tmpfs."""

import json
import subprocess

import pytest
from train_helpers import save_config, tiny_config, train

from core.cli import command
from rl.driver.run_state import TRAINER_STATE, newest_that_verifies, read_trainer_state
from rl.state.checkpoint import MARKER, CorruptCheckpoint, list_checkpoints, save_checkpoint, verify_checkpoint

SHARD = "learner/__0_0.distcp"


def write_step(step: int):
    """A writer laying out what a training checkpoint holds: a learner shard and trainer_state.json."""
    def write(path):
        (path / "learner").mkdir()
        (path / SHARD).write_bytes(bytes(range(256)) * 64)
        (path / TRAINER_STATE).write_text(json.dumps({"step": step, "seed": 0, "group_size": 4}))
    return write


def saved(run_dir, steps=(1, 2)):
    return [save_checkpoint(run_dir, step, write_step(step), keep=5) for step in steps]


def truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def garble(file):
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = b"garbage!"  # the same size, other bytes
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "file", "said"), [
    (truncate, SHARD, "is 8192 bytes, 16384 when it was written (truncated or replaced)"),
    (garble, SHARD, "does not match the sha256 recorded when it was written (corrupted)"),
    (lambda f: f.unlink(), SHARD, "is missing"),
    (lambda f: f.write_text('{"step": 2, "se'), TRAINER_STATE, "bytes"),
])
def test_verification_names_the_bad_file(tmp_path, damage, file, said):
    _, newest = saved(tmp_path)
    verify_checkpoint(newest)
    damage(newest / file)
    with pytest.raises(CorruptCheckpoint) as e:
        verify_checkpoint(newest)
    assert str(e.value).startswith(f"checkpoint file {newest / file} ") and said in str(e.value)
    assert "\n" not in str(e.value)


def test_the_marker_records_size_and_sha256_and_sha256sum_agrees(tmp_path):
    newest = saved(tmp_path, (1,))[0]
    files = json.loads((newest / MARKER).read_text())["files"]
    assert sorted(files) == [SHARD, TRAINER_STATE] and files[SHARD]["size"] == 16384
    checked = subprocess.run(["sha256sum", "-c"], cwd=newest, capture_output=True, text=True,
                             input="".join(f"{v['sha256']}  {k}\n" for k, v in files.items()))
    assert checked.returncode == 0, checked.stdout


def test_a_checkpoint_from_before_checksums_is_used_with_a_warning(tmp_path, capsys):
    newest = saved(tmp_path, (1,))[0]
    (newest / MARKER).write_text(json.dumps({"step": 1, "time": 0.0}))  # what earlier versions wrote
    verify_checkpoint(newest)
    assert "recorded no sizes or checksums; it is used unverified" in capsys.readouterr().err
    (newest / TRAINER_STATE).write_text("{")  # nothing to verify it with: reading it names it
    with pytest.raises(CorruptCheckpoint) as e:
        read_trainer_state(newest)
    assert str(e.value).startswith(f"checkpoint file {newest / TRAINER_STATE} is missing or not valid JSON")


def test_resume_auto_takes_the_newest_checkpoint_that_verifies(tmp_path, capsys):
    older, newest = saved(tmp_path)
    truncate(newest / SHARD)
    assert newest_that_verifies(tmp_path) == older
    err = capsys.readouterr().err
    assert f"warning: resume=auto: checkpoint file {newest / SHARD} is 8192 bytes" in err
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]  # nothing is deleted


def test_resume_from_a_corrupt_checkpoint_is_one_line_and_exit_2_before_ray(tmp_path):
    config = save_config(tiny_config(tmp_path, overrides=("trainer.steps=2",)), tmp_path / "tiny.yaml")
    older, newest = saved(tmp_path)
    garble(newest / TRAINER_STATE)
    refused = train(config, f"resume={newest}")
    assert refused.returncode == 2
    assert refused.stderr == (f"error: resume={newest}: checkpoint file {newest / TRAINER_STATE} does not match the "
                              "sha256 recorded when it was written (corrupted)\n")
    truncate(older / SHARD)  # no checkpoint left that verifies: refused, not started over
    refused = train(config, "resume=auto")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith("error: resume=auto: none of the 2 checkpoints in")


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_earlier_checkpoint(small_disk, capsys, monkeypatch):
    monkeypatch.delenv("RL_DEBUG", raising=False)
    first = save_checkpoint(small_disk, 1, write_step(1), keep=2)

    def too_big(path):
        (path / "learner").mkdir()
        (path / SHARD).write_bytes(b"x" * (1 << 20))  # the disk holds 256 KiB

    @command
    def main(argv):
        save_checkpoint(small_disk, 2, too_big, keep=2)
        return 0

    assert main([]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {small_disk / 'checkpoints' / 'step_00000002'}: No space left on device (while saving "
                   "this checkpoint; the earlier ones are kept) (set RL_DEBUG=1 for the traceback)\n")
    assert [p for _, p in list_checkpoints(small_disk)] == [first]
    verify_checkpoint(first)
    assert sorted(p.name for p in (small_disk / "checkpoints").iterdir()) == [first.name]  # its temp folder freed
    monkeypatch.setenv("RL_DEBUG", "1")
    with pytest.raises(OSError, match="No space left on device"):
        main([])
