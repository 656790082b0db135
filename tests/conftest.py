"""Shared test set-up: no Ray authentication or telemetry, no hub access. (The torchvision fix for this machine's
CPU torch is the `.pth` hook that scripts/setup.sh installs into .venv: core/torchvision_compat.py.)"""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
