"""Shared test set-up: no Ray authentication or telemetry, no hub access, one local Ray per pytest process for the
modules that ask for it. (The torchvision fix for this machine's CPU torch is the `.pth` hook that scripts/setup.sh
installs into .venv: core/torchvision_compat.py.)"""

import os
import subprocess
from pathlib import Path

import pytest
import ray

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray starts idle task workers at init; every actor gets a worker process of its own and these tests run few tasks,
# so the idle ones only cost CPU: a local Ray's start and stop measured 10.4 CPU-s with them, 7.8 without.
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
os.environ.setdefault("RAY_enable_worker_prestart", "0")
# test_compile: inductor compiles in this process instead of a pool of workers that each import torch first
# (read at import; cold cache, that module took 77 CPU-s with one thread, 84 with the pool).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

# The slowest modules first, as `bash scripts/test.sh` measured them (its --durations list): xdist hands modules
# out in this order (--dist loadfile), so the long ones start at once and the short ones fill in around them
# instead of one long module running alone at the end. Those that share the local Ray (`local_ray` below) come
# together, so that each worker starts it about once.
SLOW_FIRST = ["test_train_cli.py", "test_train_async.py", "test_train_actors.py", "test_eval_train.py",
              "test_train_pipeline.py", "test_train_faults.py", "test_lora.py", "test_bench_step.py",
              "test_reward_pool.py",
              # a Ray of their own, or none
              "test_train_placement.py", "test_colocated.py", "test_docs.py", "test_custom_reward.py",
              "test_vlm_judge.py", "test_cli_fail_fast.py", "test_load_memory.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's tests stay in order


# --- One local Ray per pytest process (each xdist worker) ---
# Starting a local Ray and stopping it costs ~4.5 CPU-seconds. Modules that use `local_ray` share one: it is started
# by the first such module and kept for the next; a module that does not use it (it may start a Ray of its own,
# declare GPUs or join a Cluster) finds no Ray running.
REPO = Path(__file__).resolve().parents[1]
_shared = {"running": False}


def _stop_shared_ray() -> None:
    if _shared["running"]:
        ray.shutdown()
        _shared["running"] = False


@pytest.fixture(scope="module")
def local_ray():
    """The shared local Ray (8 logical CPUs). Workers import `tests.fault_components` from the repo root."""
    if not _shared["running"]:
        assert not ray.is_initialized(), "a test module left its own Ray running"
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        ray.init(address="local", num_cpus=8, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        _shared["running"] = True
    yield


@pytest.fixture(scope="module", autouse=True)
def _no_shared_ray_where_unused(request):
    """Before a module none of whose tests uses `local_ray`: stop the shared Ray (autouse: set up first)."""
    uses = any("local_ray" in item.fixturenames for item in request.session.items if item.module is request.module)
    if not uses:
        _stop_shared_ray()
    yield


@pytest.fixture(scope="session", autouse=True)
def _shared_ray_stopped_at_the_end():
    yield
    _stop_shared_ray()


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs) for the disk-full tests; skipped where this process may not mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
