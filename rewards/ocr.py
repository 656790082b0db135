"""OCR text-rendering reward: LongText-Bench text accuracy of what OCR engines read in the image.

X-Omni rewards text-rendering prompts with OCR accuracy from GOT-OCR2.0 and PaddleOCR jointly (how the
two are joined is not published). Here any number of backends (`rewards.ocr_backends`) read each image;
lines below `min_confidence` are dropped, the rest are joined and scored against `metadata[i]["text"]`
with LongText-Bench's metric (`metric: recall`, the default: word or character recall, order-free) or
the order-aware `metric: edit_distance` (1 - normalised edit distance, as ICDAR's NED; Flow-GRPO's OCR
reward is of this kind: 1 only for an exact spelling). Several backends are joined per image by
- "max" (default): the best single engine's accuracy. One engine's misreading does not punish a
  correct rendering, and every score is an accuracy some engine actually read.
- "union": each target word counts as found if any engine read it (multiset union of their words);
  never below "max", and kinder to text that each engine reads only in part. Recall only.
An image without target text scores NaN (must not score) and is not read at all; an image with the same pixels as
one read recently (in this call or in one of the last calls: `cache_size` distinct images) is not read again. The
class attribute
`needs_text = True` tells the gating never to apply this reward to a prompt without target text, whatever
the config's `gating.needs_text` says.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

from core.devices import DtypeName
from rewards.base import ImageLike, RewardOutput, check_batch, to_uint8
from rewards.ocr_backends import build_backend, read_batch
from rewards.text_accuracy import MODES, TextMode, edit_similarity, text_recall

Combine = Literal["max", "union"]
Metric = Literal["recall", "edit_distance"]
COMBINES: tuple[str, ...] = get_args(Combine)
METRICS = {"recall": text_recall, "edit_distance": edit_similarity}


def target_texts(metadata: Mapping[str, Any]) -> list[str]:
    """`metadata["text"]` as a list of strings (absent or None: none; one string: one target)."""
    targets = metadata.get("text")
    if targets is None:
        return []
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not all(isinstance(t, str) for t in targets):
        raise TypeError(f'metadata["text"] must be a list of strings, got {targets!r}')
    return targets


def _labels(specs: Sequence[str | Mapping[str, Any]]) -> list[str]:
    """A details key per backend: its name, with its position appended when a name repeats."""
    names = [spec if isinstance(spec, str) else str(spec.get("name")) for spec in specs]
    counts = Counter(names)
    return [f"{name}_{i}" if counts[name] > 1 else name for i, name in enumerate(names)]


class OCRReward:
    """Text accuracy in [0, 1] of the OCR reading against the prompt's target strings.

    Args:
        backends: OCR engines, each a name ("rapidocr", "paddleocr", "got_ocr2", or a class import path) or a
            mapping `{name: ..., **kwargs}` with the backend's options (see `rewards.ocr_backends`).
        combine: "max" or "union", how several backends' readings make one score (module docstring).
        metric: "recall" (LongText-Bench's, exact to the official scorer) or "edit_distance" (1 - normalised
            edit distance of the kept characters, spaces dropped, case folded; order-aware).
        mode: recall's units: "auto" (character recall when the target has CJK characters, else word
            recall), "en" (words) or "zh" (characters), as in LongText-Bench.
        max_side: long-side limit for text detection, given to every backend that does not set its own.
        min_confidence: recognised lines below this confidence are ignored.
        device, dtype: where and in what dtype the backends on a torch model (got_ocr2) run, unless their spec
            sets its own; None or "auto": CUDA when available.
        cache_size: how many distinct images' readings to keep across calls (least recently used dropped; 0: none
            beyond the current call). OCR is a function of the pixels, so a kept reading is exactly what reading
            again would give; an entry holds the kept text only.

    details: `ocr_text/<backend>` (the kept lines, joined by newlines), `accuracy/<backend>`, and the
    combined `matched` / `total` unit counts (LongText-Bench sums these over a set before dividing; for
    edit_distance, total is the longer of target and reading in characters and matched = total - edit
    distance).
    """

    score_range = (0.0, 1.0)
    needs_text = True

    def __init__(
        self,
        backends: Sequence[str | Mapping[str, Any]] = ("rapidocr",),
        combine: Combine = "max",
        metric: Metric = "recall",
        mode: TextMode = "auto",
        max_side: int = 960,
        min_confidence: float = 0.5,
        cache_size: int = 4096,
        device: str | None = None,
        dtype: DtypeName = "float32",
    ):
        if isinstance(backends, (str, Mapping)) or not backends:
            raise ValueError(f"backends must be a non-empty list of names or mappings, got {backends!r}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {tuple(METRICS)}, got {metric!r}")
        if metric != "recall" and combine == "union":
            raise ValueError("combine 'union' merges word counts, so it needs metric 'recall'; use combine 'max'")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        built = [build_backend(spec, max_side, device, dtype) for spec in backends]
        self.backends = dict(zip(_labels(backends), built, strict=True))
        self.combine = combine
        self.metric = METRICS[metric]
        self.mode = mode
        self.min_confidence = min_confidence
        self.cache_size = cache_size
        self._readings: OrderedDict[tuple, dict[str, str]] = OrderedDict()  # (shape, pixel hash) -> read()

    def read(self, image: ImageLike) -> dict[str, str]:
        """Backend label -> the lines it read with enough confidence, joined by newlines."""
        return self.read_many([image])[0]

    def read_many(self, images: Sequence[ImageLike]) -> list[dict[str, str]]:
        """`read` of each image; each backend gets them all at once (`read_batch`: a model batches them)."""
        arrays = [to_uint8(image) for image in images]
        lines = {label: read_batch(backend, arrays) for label, backend in self.backends.items()}
        return [{label: "\n".join(text for text, conf in lines[label][i] if conf >= self.min_confidence)
                 for label in self.backends} for i in range(len(arrays))]

    def _read_once(self, arrays: Sequence[np.ndarray]) -> list[dict[str, str]]:
        """`read_many(arrays)`, reusing the readings of the same pixels kept from this call or a recent one. A
        converged policy draws many identical images per group and again in later steps (the CPU demo's rows late
        in training)."""
        keys = [(a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest()) for a in arrays]
        new = dict(zip(keys, arrays, strict=True))
        for key in [key for key in new if key in self._readings]:
            self._readings.move_to_end(key)
            del new[key]
        self._readings.update(zip(new, self.read_many(list(new.values())), strict=True))
        return [self._readings[key] for key in keys]

    def score_one(self, image: ImageLike, targets: list[str]) -> dict[str, Any]:
        """Score, per-backend texts and accuracies, and the combined (matched, total) of one image.

        The targets must hold at least one word or character to find.
        """
        return self.score_texts(self.read(image), targets)

    def score_texts(self, texts: dict[str, str], targets: list[str]) -> dict[str, Any]:
        """`score_one` from what the backends read (`read`'s result)."""
        recalls = {label: self.metric(targets, text, self.mode) for label, text in texts.items()}
        if self.combine == "union":
            matched, total = text_recall(targets, list(texts.values()), self.mode)
        else:
            matched, total = max(recalls.values(), key=lambda r: r[0])
        result: dict[str, Any] = {"score": matched / total}
        for label, text in texts.items():
            result[f"ocr_text/{label}"] = text
            result[f"accuracy/{label}"] = recalls[label][0] / total
        return {**result, "matched": matched, "total": total}

    def __call__(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
    ) -> RewardOutput:
        """Scores [N] in [0, 1]; NaN where `metadata[i]["text"]` has no target to find."""
        metadata = check_batch(images, prompts, metadata)
        unscored = {"score": math.nan, "matched": 0, "total": 0}
        unscored |= {f"ocr_text/{label}": "" for label in self.backends}
        unscored |= {f"accuracy/{label}": math.nan for label in self.backends}
        targets = [target_texts(meta) for meta in metadata]
        # No target, or only punctuation and spaces: nothing to find, so no OCR run either.
        scored = [i for i, t in enumerate(targets) if text_recall(t, "", self.mode)[1] > 0]
        results = [unscored] * len(images)
        for i, texts in zip(scored, self._read_once([to_uint8(images[i]) for i in scored]), strict=True):
            results[i] = self.score_texts(texts, targets[i])
        while len(self._readings) > self.cache_size:  # the least recently used; within a call every image is kept
            self._readings.popitem(last=False)
        details = {key: [r[key] for r in results] for key in unscored if key != "score"}
        return RewardOutput(np.array([r["score"] for r in results], dtype=np.float32), details)
