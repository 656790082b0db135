"""Reward models for image generation, their prompt gating and ensemble, and offline scoring."""

from rl import _torchvision_compat

_torchvision_compat.apply()
