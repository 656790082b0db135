"""Prompt gating: which rewards apply to a prompt, with which weights, and which text it asks to render.

X-Omni's rewards are "task adaptive": text-rendering prompts emphasise OCR accuracy, detailed natural
scenes emphasise aesthetics and quality. A `Gater` turns (prompt, metadata) into a `Gate`:

1. targets: `metadata["text"]` when given (even `[]`), else the quoted spans of the prompt
   ("..." “...” 「...」 『...』 ‘...’ '...'; an apostrophe inside a word never opens or closes a quote).
2. task: `metadata["task"]` selects the rule of that name (a task without a rule keeps its name and
   gets the default rewards); otherwise the first rule whose test passes (keywords / patterns outside
   the quotes, prompt length, target text) names the task; no rule -> task "default".
3. weights: the default rewards with their ensemble weights, plus / minus the rule's rewards, times
   its multipliers. Rewards listed in `needs_text` are dropped when the prompt has no targets, so
   OCR never scores a prompt without text to render, whatever the rules say.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rl.config import build_section, to_container, validate_section

DEFAULT_TASK = "default"
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
# One pass, left to right: the earliest opening quote wins, so quotes nested inside another are part of
# its span. ASCII single quotes open only after a non-word character and close only before one, so
# "Joe's" or "don't" never delimit a span.
_QUOTE = re.compile(
    r'"([^"]+)"'
    r"|“([^”]+)”"
    r"|「([^」]+)」"
    r"|『([^』]+)』"
    r"|‘([^\n]+?)’(?!\w)"
    r"|(?<![\w'])'(\S[^\n]*?)(?<=\S)'(?!\w)"
)


@dataclass
class GateRule:
    """One task of the task-adaptive gating.

    name: the task name, reported as `task`; `metadata["task"]` selects the rule with this name.
    keywords: words or phrases matched case-insensitively as whole words (CJK keywords as substrings),
        outside quoted spans (a quoted "Poster" is a target, not a request for a poster).
    patterns: Python regular expressions (case-insensitive), searched like keywords. The rule's prompt
        test passes when any keyword or pattern matches; a rule with neither passes on length alone.
    min_words: the prompt must have at least this many words (a CJK character counts as one word).
    requires_text: the rule applies only to prompts with targets (quoted spans or `metadata["text"]`);
        when `metadata["text"]` is non-empty, such a rule applies without its keywords or length test.
    add: rewards the task adds to the default ones. remove: rewards the task removes.
    scale: reward name -> weight multiplier for this task (0 removes the reward).
    """

    name: str
    keywords: list = field(default_factory=list)
    patterns: list = field(default_factory=list)
    min_words: int = 0
    requires_text: bool = False
    add: list = field(default_factory=list)
    remove: list = field(default_factory=list)
    scale: dict = field(default_factory=dict)


@dataclass
class GatingConfig:
    """The `gating:` section.

    default: rewards that apply to every prompt (null: every configured reward), each with its weight
        from `ensemble.weights`.
    needs_text: rewards that score rendered text (OCR): applied only to prompts with target strings,
        whatever the rules say, and given those strings as `metadata["text"]`.
    rules: an ordered list of GateRule mappings; the first that matches sets the task.
    """

    default: list | None = None
    needs_text: list = field(default_factory=list)
    rules: list = field(default_factory=list)


@dataclass
class Gate:
    """The gating decision for one prompt.

    task: the rule's name, or "default". weights: reward name -> weight, only the rewards that apply.
    text: target strings for text rewards. rule: the matched rule (None when none matched).
    reasons: why, in words, for reports.
    """

    task: str
    weights: dict[str, float]
    text: list[str]
    rule: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rule": self.rule, "weights": dict(self.weights),
                "text": list(self.text), "reasons": list(self.reasons)}


def quoted_spans(prompt: str) -> list[str]:
    """The quoted spans of `prompt`, in order, stripped; empty spans are dropped."""
    spans = (next(g for g in m.groups() if g is not None).strip() for m in _QUOTE.finditer(prompt))
    return [s for s in spans if s]


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
    rewards named in the config but absent from `weights` (e.g. dropped with `--only`) are ignored."""

    def __init__(self, config: GatingConfig, weights: Mapping[str, float]):
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        default = self.weights if config.default is None else config.default
        self.default = [name for name in default if name in self.weights]
        self.needs_text = set(config.needs_text)
        self.rules = [GateRule(**r) if isinstance(r, Mapping) else r for r in config.rules]
        self._by_name = {rule.name: rule for rule in self.rules}
        self._regex = {rule.name: _keyword_regex(rule.keywords, rule.patterns) for rule in self.rules}

    def __call__(self, prompt: str, metadata: Mapping[str, Any] | None = None) -> Gate:
        metadata = metadata or {}
        text, explicit = _targets(prompt, metadata)
        rule, reasons = self._select(prompt, metadata, text, explicit)
        weights = {name: self.weights[name] for name in self.default}
        if rule is not None:
            weights.update({name: self.weights[name] for name in rule.add if name in self.weights})
            for name in rule.remove:
                weights.pop(name, None)
            for name, factor in rule.scale.items():
                if name in weights:
                    weights[name] *= float(factor)
        dropped = sorted(n for n in weights if n in self.needs_text) if not text else []
        if dropped:
            reasons.append(f"no target text: {', '.join(dropped)} not applied")
        weights = {name: w for name, w in weights.items() if w > 0 and name not in dropped}
        task = metadata.get("task") or (rule.name if rule else DEFAULT_TASK)
        return Gate(task=task, weights=weights, text=text, rule=rule.name if rule else None, reasons=reasons)

    def _select(self, prompt: str, metadata: Mapping[str, Any], text: list[str],
                explicit: bool) -> tuple[GateRule | None, list[str]]:
        task = metadata.get("task")
        if task:
            if task in self._by_name:
                return self._by_name[task], [f"metadata task {task!r}"]
            return None, [f"metadata task {task!r} has no rule: default rewards"]
        unquoted, words = _QUOTE.sub(" ", prompt), count_words(prompt)
        for rule in self.rules:
            if rule.requires_text and not text:
                continue
            if rule.requires_text and explicit:
                return rule, [f"rule {rule.name!r}: target text from metadata"]
            regex = self._regex[rule.name]
            hit = regex.search(unquoted) if regex is not None else None
            if (regex is not None and hit is None) or words < rule.min_words:
                continue
            why = [f"keyword {hit.group(0)!r}"] if hit else []
            why += [f"{words} words"] if rule.min_words else []
            why += [f"{len(text)} quoted span(s)"] if rule.requires_text else []
            return rule, [f"rule {rule.name!r}: {', '.join(why) or 'matches every prompt'}"]
        return None, []


def _targets(prompt: str, metadata: Mapping[str, Any]) -> tuple[list[str], bool]:
    """(target strings, whether they came from metadata)."""
    text = metadata.get("text")
    if text is None:
        return quoted_spans(prompt), False
    text = [text] if isinstance(text, str) else list(text)
    if not all(isinstance(t, str) for t in text):
        raise TypeError(f"metadata['text'] must be a string or a list of strings, got {text!r}")
    return [t for t in text if t.strip()], True


def gate_rates(gates: Sequence[Gate], names: Iterable[str]) -> dict[str, float]:
    """Share of prompts each reward applies to (`gate/<name>/rate`) and per task (`gate/task/<task>/rate`)."""
    n = max(len(gates), 1)
    rates = {f"gate/{name}/rate": sum(name in g.weights for g in gates) / n for name in names}
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
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                    or factor < 0:
                problems.append(f"{key}.scale.{name}: must be a finite number >= 0, got {factor!r}")
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
