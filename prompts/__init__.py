"""Prompts for RL: file sources with resumable shuffling, shipped prompt sets, text-rendering synthesis."""

from prompts.sources import PromptRecord, PromptSource

__all__ = ["PromptRecord", "PromptSource"]
