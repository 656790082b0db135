"""X-Omni reinforcement learning: policy, decoder, GRPO and the Ray training driver."""
