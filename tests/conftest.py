"""Shared test set-up: no Ray authentication or telemetry, no hub access. (The torchvision fix for this machine's
CPU torch is the `.pth` hook that scripts/setup.sh installs into .venv: core/torchvision_compat.py.)"""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The slowest modules first, as `bash scripts/test.sh` measured them (its --durations list): xdist hands modules
# out in this order (--dist loadfile), so the long ones start at once and the short ones fill in around them
# instead of one long module running alone at the end.
SLOW_FIRST = ["test_train_cli.py", "test_train_async.py", "test_eval_train.py", "test_train_actors.py",
              "test_train_placement.py", "test_train_faults.py", "test_custom_reward.py", "test_docs.py",
              "test_bench_step.py", "test_colocated.py", "test_vlm_judge.py", "test_train_pipeline.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's tests stay in order
