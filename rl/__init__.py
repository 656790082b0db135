"""X-Omni reinforcement learning: policy, decoder, GRPO and the Ray training driver."""

from rl import _torchvision_compat

_torchvision_compat.apply()
