"""LongText-Bench's text accuracy (X-Omni's `textbench/summary_scores.py`), as plain functions.

Normalisation keeps letters, digits, the CJK block U+4E00-U+9FA5 and the accented Latin letters
àâäéèêëîïôöùûüç (either case), exactly the official character set, and drops everything else.
- "en" (word) mode: whitespace collapsed, lowercased; accuracy = multiset word recall
  |Counter(target words) & Counter(ocr words)| / |target words|.
- "zh" (character) mode: whitespace dropped too and case kept (as the official scorer does);
  accuracy = multiset character recall.
- "auto": "zh" when the targets contain a CJK character, else "en".
A sample's targets are joined with spaces before normalising, like the official scorer. Over a set of
samples the benchmark divides the summed matches by the summed totals: use `text_recall` for that.

Recall ignores order and extra text ("NPEO OPEN OPEN" has every letter of "OPEN"). `edit_similarity` is
the order-aware alternative: 1 - normalised edit distance, the Levenshtein distance divided by the longer
of target and reading (ICDAR's NED), on the same kept characters with spaces dropped and case folded. It
is 1 only when the reading spells the targets exactly, in order, and nothing else. Flow-GRPO's OCR reward
divides by the target length and clips at 0 instead, which scores every reading 2+ characters longer
than a 2-letter target as 0; dividing by the longer string keeps partial credit for those.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal, get_args

from rapidfuzz.distance import Levenshtein

TextMode = Literal["auto", "en", "zh"]
MODES: tuple[str, ...] = get_args(TextMode)
_KEPT = "\u4e00-\u9fa5a-zA-Z0-9àâäéèêëîïôöùûüçÀÂÄÉÈÊËÎÏÔÖÙÛÜÇ"
_DROPPED_EN = re.compile(rf"[^{_KEPT}\s]")
_KEPT_ZH = re.compile(rf"[{_KEPT}]")
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def resolve_mode(targets: Sequence[str], mode: str = "auto") -> str:
    """"en" or "zh" for these targets; "auto" picks "zh" when any target holds a CJK character."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "zh" if any(_CJK.search(t) for t in targets) else "en"


def normalize_text(s: str, mode: str) -> str:
    """The official normalisation of `s` in mode "en" (lowercased words) or "zh" (kept characters)."""
    if mode == "en":
        return re.sub(r"\s+", " ", _DROPPED_EN.sub("", s)).strip().lower()
    if mode == "zh":
        return "".join(_KEPT_ZH.findall(s))
    raise ValueError(f"normalize_text mode must be 'en' or 'zh', got {mode!r}")


def has_units(s: str) -> bool:
    """Whether `s` holds anything the metric counts (a kept letter, digit or CJK character), in any mode."""
    return _KEPT_ZH.search(s) is not None


def tokens(s: str, mode: str) -> list[str]:
    """Units that are counted: the words ("en") or the characters ("zh") of normalised `s`."""
    normalized = normalize_text(s, mode)
    return normalized.split() if mode == "en" else list(normalized)


def text_recall(targets: Sequence[str], ocr_text: str | Sequence[str], mode: str = "auto") -> tuple[int, int]:
    """(matched, total): target units found in the OCR text, counted with multiplicity.

    `ocr_text` may list several readings of the same image (e.g. one per OCR engine): they are merged
    as a multiset union, so each unit counts as often as the reading that holds it most often.
    """
    if isinstance(targets, str):
        raise TypeError("targets must be a list of strings, got a single string")
    mode = resolve_mode(targets, mode)
    wanted = Counter(tokens(" ".join(targets), mode))
    readings = [ocr_text] if isinstance(ocr_text, str) else list(ocr_text)
    found: Counter[str] = Counter()
    for reading in readings:
        found |= Counter(tokens(reading, mode))
    return sum((wanted & found).values()), sum(wanted.values())


def text_accuracy(targets: Sequence[str], ocr_text: str | Sequence[str], mode: str = "auto") -> float:
    """matched / total of `text_recall`; NaN when the targets hold no word or character to find."""
    matched, total = text_recall(targets, ocr_text, mode)
    return matched / total if total else math.nan


def edit_similarity(targets: Sequence[str], ocr_text: str, mode: str = "auto") -> tuple[int, int]:
    """(matched, total) with total = the longer of the target and the reading (in kept characters) and
    matched = total - Levenshtein distance, so matched / total = 1 - normalised edit distance (ICDAR's NED).
    Spaces are dropped and case folded on both sides; `mode` is accepted for symmetry with `text_recall` and
    does not change the result. Empty targets give (0, 0)."""
    if isinstance(targets, str):
        raise TypeError("targets must be a list of strings, got a single string")
    resolve_mode(targets, mode)
    wanted = normalize_text(" ".join(targets), "zh").lower()
    if not wanted:
        return 0, 0
    read = normalize_text(ocr_text, "zh").lower()
    total = max(len(wanted), len(read))
    return total - Levenshtein.distance(wanted, read), total
