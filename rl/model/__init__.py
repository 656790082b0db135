"""The autoregressive policy: X-Omni's model on transformers' Qwen2 blocks, its prompt format, the
image-token sampler, and tiny random components for tests and the CPU demo."""
