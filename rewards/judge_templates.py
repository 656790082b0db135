"""Question templates for `rewards.vlm_judge.VLMJudgeReward`, named in YAML as `prompt: <name>`.

Each template says how its answer is read (`parse`) and, for numeric answers, the top of its scale
(`max_score`). `{prompt}` is replaced by the image's prompt. The wording is ours; the UnifiedReward
template keeps the structure UnifiedReward's pointwise image-generation scorer was trained on (two
criteria, a 1-5 scale, the answer after "Final Score:", the caption in brackets), as Flow-GRPO and
AR-GRPO query it, so a served UnifiedReward checkpoint answers in the format it learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Parse = Literal["number", "yes_probability"]


@dataclass(frozen=True)
class JudgeTemplate:
    """text: the question, with `{prompt}`; parse: how the answer is read; max_score: the top of a numeric
    scale (None for yes/no questions)."""

    text: str
    parse: Parse
    max_score: float | None = None


ALIGNMENT_YES_NO = JudgeTemplate(
    'An image was generated from this description: "{prompt}"\n'
    "Does the image show everything the description states: the objects, their number, attributes and "
    "positions, and any text it asks to be written? Answer Yes or No.",
    parse="yes_probability")

QUALITY_1_10 = JudgeTemplate(
    'An image was generated from this description: "{prompt}"\n'
    "Rate the visual quality of the image alone, not how well it follows the description: sharpness and "
    "detail, natural anatomy and geometry, no artifacts, blur or distortions, lighting and composition. "
    "Reply with a single integer from 1 (very poor) to 10 (excellent) and nothing else.",
    parse="number", max_score=10.0)

UNIFIEDREWARD_POINTWISE = JudgeTemplate(
    "You are given a text caption and an image generated from that caption. Evaluate the image on two "
    "criteria:\n"
    "1. Alignment with the caption: how faithfully the image shows the objects, their attributes and their "
    "relations as the caption describes them.\n"
    "2. Overall image quality: clarity, preserved detail, colour accuracy and aesthetic appeal.\n"
    "Weighing both criteria, give a score from 1 to 5 after 'Final Score:'.\n"
    "Text Caption: [{prompt}]",
    parse="number", max_score=5.0)

TEMPLATES: dict[str, JudgeTemplate] = {
    "alignment_yes_no": ALIGNMENT_YES_NO,
    "quality_1_10": QUALITY_1_10,
    "unifiedreward_pointwise": UNIFIEDREWARD_POINTWISE,
}
