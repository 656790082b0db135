"""Prompt gating: which rewards apply to a prompt, with which weights, and which text it asks to render.

X-Omni's rewards are "task adaptive": text-rendering prompts emphasise OCR accuracy, detailed natural
scenes emphasise aesthetics and quality. A `Gater` turns (prompt, metadata) into a `Gate`:

1. targets: `metadata["text"]` when given (even `[]`), else the quoted spans of the prompt that are text to
   draw (`rewards.quotes`: every common quote style; a referenced work or style, a name, scare quotes or
   "no text" in the prompt rule a span out, with the reason in the gate). Quoted text is the primary
   signal: a rule with `requires_text` and no keywords matches every prompt that has targets.
2. task: `metadata["task"]` selects the rule of that name (a task without a rule keeps its name and
   gets the default rewards); otherwise the first rule whose test passes (keywords / patterns outside
   the quotes, prompt length, target text) names the task; no rule -> task "default".
3. weights: the default rewards with their ensemble weights, plus / minus the rule's rewards, times
   its multipliers. Rewards that need target text (`gating.needs_text`, and every reward class with
   `needs_text = True`, such as OCR) are dropped when the prompt has no target with a letter, digit or
   CJK character that LongText-Bench's metric counts, so OCR never scores a prompt without text to
   render, whatever the config says. Targets with nothing to count (only punctuation or emoji, or a
   script the metric drops) are named in the reasons and counted in `gate/text_unscorable/rate`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from annotated_types import Ge

from core.config import to_container
from core.schema import build_section, validate_section
from rewards.combine import weight_problem
from rewards.quotes import drawn_text, quoted_spans, unquoted
from rewards.text_accuracy import has_units

__all__ = ["Gate", "GateRule", "Gater", "GatingConfig", "build_gating", "count_words", "gate_rates",
           "quoted_spans", "validate_gating"]

DEFAULT_TASK = "default"
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


@dataclass
class GateRule:
    """One task of the task-adaptive gating: which prompts it matches and how it changes their rewards."""

    name: str
    """The task name, reported as `task`; `metadata["task"]` selects the rule with this name."""
    keywords: list = field(default_factory=list)
    """Words or phrases matched case-insensitively as whole words (CJK keywords as substrings), outside quoted
    spans (a quoted "Poster" is a target, not a request for a poster)."""
    patterns: list = field(default_factory=list)
    """Python regular expressions (case-insensitive), searched like keywords. The rule's prompt test passes when
    any keyword or pattern matches; a rule with neither passes on length alone."""
    min_words: Annotated[int, Ge(0)] = 0
    """The prompt must have at least this many words (a CJK character counts as one word)."""
    requires_text: bool = False
    """The rule applies only to prompts with targets (quoted spans or `metadata["text"]`); when `metadata["text"]`
    is non-empty, such a rule applies without its keywords or length test."""
    add: list = field(default_factory=list)
    """Rewards the task adds to the default ones."""
    remove: list = field(default_factory=list)
    """Rewards the task removes."""
    scale: dict = field(default_factory=dict)
    """Reward name -> weight multiplier for this task (0 removes the reward), in [0, 1e6], and the reward's weight
    times it must be too."""


@dataclass
class GatingConfig:
    """The `gating:` section: which rewards apply to which prompt (text prompts get the OCR reward, ...)."""

    default: list | None = None
    """Rewards that apply to every prompt (null: every configured reward), each with its weight from
    `ensemble.weights`."""
    needs_text: list = field(default_factory=list)
    """Rewards that score rendered text: applied only to prompts with target strings, whatever the rules say, and
    given those strings as `metadata["text"]`. A reward class with `needs_text = True` (OCR) is treated so whether
    or not it is listed here."""
    rules: list = field(default_factory=list)
    """An ordered list of rules (`gating.rules[i]` below); the first that matches sets the task."""


@dataclass
class Gate:
    """The gating decision for one prompt.

    task: the rule's name, or "default". weights: reward name -> weight, only the rewards that apply.
    text: target strings for text rewards. rule: the matched rule (None when none matched).
    reasons: why, in words, for reports. unscorable: targets with nothing the OCR metric counts.
    """

    task: str
    weights: dict[str, float]
    text: list[str]
    rule: str | None = None
    reasons: list[str] = field(default_factory=list)
    unscorable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rule": self.rule, "weights": dict(self.weights),
                "text": list(self.text), "reasons": list(self.reasons), "unscorable": list(self.unscorable)}


def count_words(text: str) -> int:
    """Words in `text`; each CJK character counts as one word."""
    return len(_WORD.findall(text))


def _keyword_regex(keywords: Sequence[str], patterns: Sequence[str]) -> re.Pattern | None:
    # ASCII word boundaries only: CJK text has no spaces, so a CJK keyword matches as a substring.
    parts = []
    for kw in sorted(keywords, key=len, reverse=True):
        body = r"\s+".join(re.escape(w) for w in kw.split())
        head = r"(?<![A-Za-z0-9])" if kw[:1].isascii() and kw[:1].isalnum() else ""
        tail = r"(?![A-Za-z0-9])" if kw[-1:].isascii() and kw[-1:].isalnum() else ""
        parts.append(head + body + tail)
    parts += [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class Gater:
    """Turns (prompt, metadata) into a Gate. `weights`: the rewards in use and their ensemble weights;
    rewards named in the config but absent from `weights` (e.g. dropped with `--only`) are ignored.
    `needs_text`: rewards that need target text besides `config.needs_text` (those whose class says so)."""

    def __init__(self, config: GatingConfig, weights: Mapping[str, float], needs_text: Iterable[str] = ()):
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        default = self.weights if config.default is None else config.default
        self.default = [name for name in default if name in self.weights]
        self.needs_text = set(config.needs_text) | set(needs_text)
        self.rules = [GateRule(**r) if isinstance(r, Mapping) else r for r in config.rules]
        self._by_name = {rule.name: rule for rule in self.rules}
        self._regex = {rule.name: _keyword_regex(rule.keywords, rule.patterns) for rule in self.rules}

    def __call__(self, prompt: str, metadata: Mapping[str, Any] | None = None) -> Gate:
        metadata = metadata or {}
        text, explicit, reasons = _targets(prompt, metadata)
        rule, why = self._select(prompt, metadata, text, explicit)
        reasons += why
        weights = {name: self.weights[name] for name in self.default}
        if rule is not None:
            weights.update({name: self.weights[name] for name in rule.add if name in self.weights})
            for name in rule.remove:
                weights.pop(name, None)
            for name, factor in rule.scale.items():
                if name in weights:
                    weights[name] *= float(factor)
        unscorable = [t for t in text if not has_units(t)]
        if unscorable:
            reasons.append(f"target text {', '.join(map(repr, unscorable))} has no letter, digit or CJK character "
                           "that the OCR metric counts")
        dropped = sorted(n for n in weights if n in self.needs_text) if len(unscorable) == len(text) else []
        if dropped:
            reasons.append(f"no target text to score: {', '.join(dropped)} not applied")
        weights = {name: w for name, w in weights.items() if w > 0 and name not in dropped}
        task = metadata.get("task") or (rule.name if rule else DEFAULT_TASK)
        return Gate(task=task, weights=weights, text=text, rule=rule.name if rule else None, reasons=reasons,
                    unscorable=unscorable)

    def _select(self, prompt: str, metadata: Mapping[str, Any], text: list[str],
                explicit: bool) -> tuple[GateRule | None, list[str]]:
        task = metadata.get("task")
        if task:
            if task in self._by_name:
                return self._by_name[task], [f"metadata task {task!r}"]
            return None, [f"metadata task {task!r} has no rule: default rewards"]
        outside, words = unquoted(prompt), count_words(prompt)
        for rule in self.rules:
            if rule.requires_text and not text:
                continue
            if rule.requires_text and explicit:
                return rule, [f"rule {rule.name!r}: target text from metadata"]
            regex = self._regex[rule.name]
            hit = regex.search(outside) if regex is not None else None
            if (regex is not None and hit is None) or words < rule.min_words:
                continue
            why = [f"keyword {hit.group(0)!r}"] if hit else []
            why += [f"{words} words"] if rule.min_words else []
            why += [f"{len(text)} quoted span(s) to draw"] if rule.requires_text else []
            return rule, [f"rule {rule.name!r}: {', '.join(why) or 'matches every prompt'}"]
        return None, []


def _targets(prompt: str, metadata: Mapping[str, Any]) -> tuple[list[str], bool, list[str]]:
    """(target strings, whether they came from metadata, reasons for quoted spans that are not targets)."""
    text = metadata.get("text")
    if text is None:
        drawn, reasons = drawn_text(prompt)
        return drawn, False, reasons
    text = [text] if isinstance(text, str) else list(text)
    if not all(isinstance(t, str) for t in text):
        raise TypeError(f"metadata['text'] must be a string or a list of strings, got {text!r}")
    return [t for t in text if t.strip()], True, []


def gate_rates(gates: Sequence[Gate], names: Iterable[str]) -> dict[str, float]:
    """Share of prompts each reward applies to (`gate/<name>/rate`), per task (`gate/task/<task>/rate`), and
    with a target text that the OCR metric cannot count (`gate/text_unscorable/rate`)."""
    n = max(len(gates), 1)
    rates = {f"gate/{name}/rate": sum(name in g.weights for g in gates) / n for name in names}
    rates["gate/text_unscorable/rate"] = sum(bool(g.unscorable) for g in gates) / n
    for task, count in sorted(Counter(g.task for g in gates).items()):
        rates[f"gate/task/{task}/rate"] = count / n
    return rates


def validate_gating(node: Any, names: Iterable[str]) -> list[str]:
    """Problems in a `gating:` section; `names` are every configured reward (cross-references)."""
    problems = validate_section(node, GatingConfig, "gating")
    if problems or node is None:
        return problems
    known = set(names)

    def check_names(values: Any, key: str) -> None:
        for value in to_container(values) or []:
            if value not in known:
                problems.append(f"{key}: {value!r} is not a configured reward (configured: {', '.join(sorted(known))})")

    check_names(node.get("default"), "gating.default")
    check_names(node.get("needs_text"), "gating.needs_text")
    seen: set[str] = set()
    for i, rule in enumerate(node.get("rules") or []):
        key = f"gating.rules.{i}"
        rule_problems = validate_section(rule, GateRule, key)
        problems += rule_problems
        if rule_problems:
            continue
        if rule["name"] in seen or rule["name"] == DEFAULT_TASK:
            problems.append(f"{key}.name: {rule['name']!r} is reserved or used by an earlier rule")
        seen.add(rule["name"])
        for field_name in ("add", "remove"):
            check_names(rule.get(field_name), f"{key}.{field_name}")
        for field_name in ("keywords", "patterns"):
            for j, value in enumerate(to_container(rule.get(field_name)) or []):
                if not isinstance(value, str) or not value.strip():
                    problems.append(f"{key}.{field_name}.{j}: expected a non-empty string, got {value!r}")
        check_names(list(rule.get("scale") or {}), f"{key}.scale")
        for name, factor in (to_container(rule.get("scale")) or {}).items():
            if (problem := weight_problem(factor, f"{key}.scale.{name}")) is not None:
                problems.append(problem)
        for j, pattern in enumerate(rule.get("patterns") or []):
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(f"{key}.patterns.{j}: invalid regular expression: {e}")
    return problems


def build_gating(node: Any) -> GatingConfig:
    """The GatingConfig (rules as GateRule) for a section that `validate_gating` accepted."""
    config = build_section(node, GatingConfig)
    config.rules = [build_section(rule, GateRule) for rule in config.rules]
    return config
