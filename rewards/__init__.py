"""Reward models for image generation, their prompt gating and ensemble, and offline scoring."""
