"""Shared test set-up: the packages' torchvision fix runs before any test imports open_clip/diffusers."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import rl  # noqa: E402,F401  (applies the torchvision compatibility fix)
