"""The documented cluster launch on the Ray the project pins (2.60), with its token authentication on: `ray
get-auth-token --generate`, `ray start --head`, then `scripts/launch_cluster.sh` (a real `ray job submit`) of a
2-step configs/tiny.yaml run whose run.dir and prompt file are relative to the directory it is submitted from.
Nothing is mocked. And the rules for relative paths under `ray job submit` (rl/job_paths.py, core/paths.py),
checked in this process.

The head is kept apart from every other Ray on the machine: its own ports, its own --temp-dir (where `ray start`
records its address: a plain `ray.init()` elsewhere reads /tmp/ray's and never joins it), and its own HOME (its
token never touches ~/.ray). It is stopped by its processes, never by `ray stop`, which stops every Ray on the
machine: the head's session and every process whose working directory lies in its temp dir (Ray's workers put
themselves in process groups of their own, and the job's driver in a session of its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from train_helpers import SMALL, train

from core.config import ConfigError, load_config
from core.paths import SUBMIT_DIR_ENV, resolve_local_path
from rl.job_paths import JOB_ENV, config_file, make_absolute
from rl.state.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    env: dict[str, str]  # what a user's shell on the head node has: HOME with the token, the venv on PATH
    dashboard: str  # http://127.0.0.1:PORT, what RAY_ADDRESS names for `ray job submit`


def stop(head: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM the head's session and every process working in its temp dir, SIGKILL what is left after 20 s."""
    def ours() -> list[psutil.Process]:
        head.poll()  # reaps the head once it has exited: a zombie would still count as ours
        found = []
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and (
                        os.getpgid(p.pid) == head.pid or p.cwd().startswith(temp_dir)):
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in ours():
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        deadline = time.time() + 20
        while time.time() < deadline and ours():
            time.sleep(0.5)
    head.wait(timeout=10)


@pytest.fixture
def head(tmp_path) -> Iterator[Head]:
    """`ray get-auth-token --generate` then `ray start --head --block` with RAY_AUTH_MODE unset (what the docs
    say to type): Ray 2.60 turns token authentication on because a token exists."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}", RAY_USAGE_STATS_ENABLED="0")
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    assert (tmp_path / "home" / ".ray" / "auth_token").stat().st_size > 0
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    gcs, dashboard, client, agent = (free_port() for _ in range(4))
    log = open(tmp_path / "ray_start.log", "w")
    process = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--temp-dir={temp_dir}", "--num-cpus=4", "--disable-usage-stats"],
        cwd=temp_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            assert process.poll() is None, (tmp_path / "ray_start.log").read_text()[-3000:]
            assert time.time() < deadline, "the dashboard did not answer within 120 s"
            try:
                with urllib.request.urlopen(f"{url}/api/authentication_mode", timeout=5) as r:  # public endpoint
                    assert json.load(r) == {"authentication_mode": "token"}
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        yield Head(env, url)
    finally:
        stop(process, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_documented_launch_submits_with_the_token_and_writes_under_the_submit_directory(head, tmp_path):
    with pytest.raises(urllib.error.HTTPError) as refused:  # authentication is on: no token, no jobs API
        urllib.request.urlopen(f"{head.dashboard}/api/jobs/", timeout=10)
    assert refused.value.code == 401
    submit = tmp_path / "submit"  # not the project: where the user types the command
    submit.mkdir()
    shutil.copy(REPO / "prompts" / "data" / "glyph_words.jsonl", submit / "words.jsonl")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "launch_cluster.sh"), "configs/tiny.yaml", "trainer.steps=2",
         "run.dir=runs/cluster", "prompts.paths=[words.jsonl]", *SMALL],
        cwd=submit, env={**head.env, "RAY_ADDRESS": head.dashboard}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "token authentication: on (token from" in done.stderr
    run_dir = submit / "runs" / "cluster"
    assert f"outputs go to run.dir={run_dir} (run.dir=runs/cluster is relative to the submit directory" in done.stdout
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert latest_checkpoint(run_dir).name == "step_00000002"


@pytest.fixture
def job(monkeypatch, tmp_path) -> Path:
    """This process as the entrypoint of a job submitted with scripts/launch_cluster.sh from `tmp_path/submit`."""
    submit = tmp_path / "submit"
    submit.mkdir()
    monkeypatch.setenv(JOB_ENV, "{}")
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(submit))
    monkeypatch.chdir(REPO)  # a job runs in (Ray's copy of) the project
    return submit


def test_under_a_job_relative_paths_mean_the_submit_directory(job):
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["run.dir=runs/a", "resume=runs/a/checkpoints/step_1"])
    (job / "runs" / "a" / "checkpoints" / "step_1").mkdir(parents=True)
    assert make_absolute(cfg) == [f"outputs go to run.dir={job}/runs/a (run.dir=runs/a is relative to the submit "
                                  f"directory {job})"]
    assert (cfg.run.dir, cfg.resume) == (f"{job}/runs/a", f"{job}/runs/a/checkpoints/step_1")
    # An input found in the submit directory wins over the project's file of the same name; others resolve as
    # outside a job (the working directory, then the config's folder).
    (job / "configs").mkdir()
    shutil.copy(REPO / "configs" / "tiny.yaml", job / "configs" / "tiny.yaml")
    assert config_file("configs/tiny.yaml") == f"{job}/configs/tiny.yaml"
    assert config_file("configs/xomni.yaml") == "configs/xomni.yaml"
    assert resolve_local_path("configs/tiny.yaml", "k") == f"{job}/configs/tiny.yaml"
    assert resolve_local_path("configs/xomni.yaml", "k") == "configs/xomni.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape(f"looked for nothing.txt in the submit directory {job}, ")):
        resolve_local_path("nothing.txt", "k")


def test_under_a_job_an_absolute_run_dir_is_kept_and_outside_one_nothing_changes(job, monkeypatch):
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["run.dir=/shared/runs/a"])
    assert make_absolute(cfg) == ["outputs go to run.dir=/shared/runs/a"] and cfg.run.dir == "/shared/runs/a"
    monkeypatch.delenv(JOB_ENV)
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["run.dir=runs/a"])
    assert make_absolute(cfg) == [] and cfg.run.dir == "runs/a"


def test_a_relative_run_dir_without_a_submit_directory_is_refused_naming_the_key(job, monkeypatch):
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(job / "elsewhere"))  # the submitting laptop's folder: not on this node
    away = re.escape(f"the submit directory {job}/elsewhere does not exist on this node")
    with pytest.raises(ConfigError, match=f"run.dir: runs/a is relative.*{away}"):
        make_absolute(load_config(REPO / "configs" / "tiny.yaml", ["run.dir=runs/a"]))
    # A plain `ray job submit`: said by `python -m rl.train` before anything starts (trainer.steps=0 would be
    # refused too, so the run cannot start here even if the check were missing).
    monkeypatch.delenv(SUBMIT_DIR_ENV)
    done = train(REPO / "configs" / "tiny.yaml", "run.dir=runs/a", "trainer.steps=0")
    assert done.returncode == 2
    assert "run.dir: runs/a is relative, and under `ray job submit` it would be written inside Ray's temporary copy" \
        in done.stderr and "not submitted with scripts/launch_cluster.sh" in done.stderr
