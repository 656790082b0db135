"""A vision-language model served over an OpenAI-compatible API (vLLM, SGLang, ...) as a reward.

X-Omni scored prompt alignment with a Qwen2.5-VL-32B judge and holistic quality with UnifiedReward. Serve
such a model (`vllm serve Qwen/Qwen2.5-VL-32B-Instruct`) and point `base_url` at it: each image goes as a
base64 data URL in one chat-completions request with the question, and the answer becomes a score in
[0, 1]. The judge runs elsewhere; this class only sends requests (in training it is a CPU-only actor).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx
import torch
from PIL import Image

from rewards.base import ImageLike, RewardOutput, check_batch, to_pil
from rewards.judge_templates import TEMPLATES, JudgeTemplate, Parse

log = logging.getLogger(__name__)

# A number as the judge writes it: "7", "7.5", "-1" (out of range, so refused rather than clipped).
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_MAX_TOKENS = {"number": 64, "yes_probability": 1}
_TOP_LOGPROBS = 20  # the most OpenAI's API and vLLM's default --max-logprobs allow
_BACKOFF_S, _MAX_BACKOFF_S = 0.5, 30.0
_JPEG_QUALITY = 95
# A run of this many characters of the key (or the whole key, if shorter) is masked: short enough to hide a
# key a server shows by its tail ("...3f9c2b7e"), long enough that an answer's own words never match.
_KEY_RUN = 8
_MASK = "***"


class JudgeError(Exception):
    """Why one row has no score: `reason` is a short category counted in the details (e.g. "http_500")."""

    def __init__(self, reason: str, message: str, answer: str | None = None):
        super().__init__(message)
        self.reason, self.answer = reason, answer


class VLMJudgeReward:
    """Asks a served VLM about each image; scores float32 [N] in [0, 1], NaN where no score could be read.

    Args:
        base_url: the server's OpenAI-compatible root, e.g. "http://127.0.0.1:8000/v1".
        model: the model name the server serves (vLLM: the path or `--served-model-name`).
        prompt: a template in which `{prompt}` is replaced by the image's prompt, or the name of a shipped
            template (rewards/judge_templates.py): "alignment_yes_no", "quality_1_10",
            "unifiedreward_pointwise".
        parse: "number": the first number in the answer divided by `max_score` (a number outside
            [0, max_score] is refused); "yes_probability": P("Yes") / (P("Yes") + P("No")) over the first
            answer token, from the server's top-20 logprobs (case and surrounding spaces ignored, so " yes"
            and "YES" count as "Yes"). None: the shipped template's mode (required for your own template).
        max_score: the top of the numeric scale. None: the shipped template's (required for your own
            template with parse "number").
        image_format: "png" (lossless) or "jpeg" (smaller requests).
        max_side: images whose longer side exceeds this are downscaled to it first (None: sent as they are).
        concurrency: requests in flight at once (per reward actor; replicas multiply it).
        timeout_s: seconds one request may take; a request that times out is not retried.
        retries: further attempts, with exponential backoff (or the server's Retry-After), after a
            connection error, a 429 or a 5xx answer.
        api_key_env: name of the environment variable holding the API key, read at every call and sent as
            a Bearer token; None sends no key. The key itself is never stored, logged or written anywhere:
            every text that comes back from the server is masked before it is parsed (see `KeyMask`).

    Answers are greedy (temperature 0). A row whose request fails after its retries, or whose answer
    cannot be read, scores NaN; `details["nan_reason"]` names why (e.g. "http_500", "timeout",
    "unparseable") and `details["answer"]` holds what the judge said. Rows keep their order.
    """

    score_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, base_url: str, model: str, prompt: str,
                 parse: Literal["number", "yes_probability"] | None = None, max_score: float | None = None,
                 image_format: Literal["png", "jpeg"] = "png", max_side: int | None = 1024, concurrency: int = 16,
                 timeout_s: float = 60.0, retries: int = 3, api_key_env: str | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.template = _template(prompt, parse, max_score)
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        for name, value, low in (("concurrency", concurrency, 1), ("retries", retries, 0), ("max_side", max_side, 1)):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.image_format, self.max_side = model, image_format, max_side
        self.concurrency, self.retries, self.api_key_env = concurrency, retries, api_key_env
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s), limits=limits)

    def __repr__(self) -> str:
        return (f"VLMJudgeReward(url={self.url!r}, model={self.model!r}, parse={self.template.parse!r}, "
                f"api_key_env={self.api_key_env!r})")

    def __call__(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> RewardOutput:
        """Scores float32 [N] for `images[i]` judged against `prompts[i]`; `metadata` is not used."""
        check_batch(images, prompts, metadata)
        key = self._key()  # a missing key fails the whole call, before any request
        headers, mask = ({} if key is None else {"Authorization": f"Bearer {key}"}), KeyMask(key)
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(images)))) as pool:
            rows = list(pool.map(lambda pair: self._judge(*pair, headers, mask), zip(images, prompts, strict=True)))
        errors = [error for _, _, error in rows]
        reasons = [None if error is None else error.reason for error in errors]
        counts = Counter(r for r in reasons if r is not None)
        if counts:
            example = {e.reason: e for e in reversed(errors) if e is not None}  # the first of each reason
            log.warning("%s: %d of %d images not scored: %s", self.url, counts.total(), len(images),
                        "; ".join(f"{r} x{n} (e.g. {example[r]})" for r, n in counts.items()))
        return RewardOutput(torch.tensor([score for score, _, _ in rows], dtype=torch.float32),
                            {"answer": [answer for _, answer, _ in rows], "nan_reason": reasons})

    def _key(self) -> str | None:
        """The API key from the environment now (a rotated key is picked up), or None when none is configured."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(f"the environment variable {self.api_key_env!r} named by api_key_env is not set "
                               "in this process (on a cluster: on every node)")
        return key

    def _judge(self, image: ImageLike, prompt: str, headers: Mapping[str, str], mask: KeyMask
               ) -> tuple[float, str | None, JudgeError | None]:
        """(score, answer, None), or (NaN, the answer if any, why) when this row cannot be scored."""
        try:
            body = self._request(self._payload(image, prompt), headers, mask)
            answer, score = _read_answer(body, self.template)
            return score, answer, None
        except JudgeError as e:
            return math.nan, e.answer, e

    def _payload(self, image: ImageLike, prompt: str) -> dict[str, Any]:
        question = self.template.text.replace("{prompt}", prompt)
        content = [{"type": "image_url", "image_url": {"url": self._data_url(image)}},
                   {"type": "text", "text": question}]
        payload = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0.0,
                   "max_tokens": _MAX_TOKENS[self.template.parse]}
        if self.template.parse == "yes_probability":
            payload.update(logprobs=True, top_logprobs=_TOP_LOGPROBS)
        return payload

    def _data_url(self, image: ImageLike) -> str:
        pil = to_pil(image)
        if self.max_side is not None and max(pil.size) > self.max_side:
            scale = self.max_side / max(pil.size)
            pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                             resample=Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        if self.image_format == "jpeg":
            pil.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
        else:
            pil.save(buffer, format="PNG")
        return f"data:image/{self.image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"

    def _request(self, payload: dict[str, Any], headers: Mapping[str, str], mask: KeyMask) -> Any:
        """The decoded JSON body of a 2xx answer, key masked, retrying connection errors, 429 and 5xx; else
        JudgeError. Nothing the server sent is read before `mask` has gone over it."""
        error, retry_after = None, None
        for attempt in range(self.retries + 1):
            if attempt:
                _sleep_before_retry(attempt - 1, retry_after)
            try:
                response = self.client.post(self.url, json=payload, headers=headers)
            except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as e:
                raise JudgeError("timeout", f"no answer within the timeout ({type(e).__name__})") from None
            except httpx.TransportError as e:  # refused, reset, DNS, connect timeout: worth another try
                error, retry_after = JudgeError("connection", f"{type(e).__name__}"), None
                continue
            code = response.status_code
            if code == 429 or code >= 500:
                error, retry_after = JudgeError(f"http_{code}", f"HTTP {code}"), response.headers.get("retry-after")
                continue
            text = mask(response.text)
            if code >= 400:  # the request itself is wrong (unknown model, bad key, ...): no retry
                raise JudgeError(f"http_{code}", f"HTTP {code}: {text[:300]}")
            try:
                # Masked again once decoded: JSON may spell the key with \u escapes the text pass cannot see.
                return mask.strings(json.loads(text))
            except ValueError:
                raise JudgeError("bad_response", f"the body is not JSON: {text[:200]!r}") from None
        raise JudgeError(error.reason, f"{error} after {self.retries + 1} attempts")


def _sleep_before_retry(attempt: int, retry_after: str | None) -> None:
    """Exponential backoff (0.5 s, 1 s, 2 s, ...), or the server's Retry-After seconds, capped at 30 s."""
    delay = _BACKOFF_S * 2 ** attempt
    if retry_after is not None:
        try:
            delay = float(retry_after)
        except ValueError:  # an HTTP date: keep the exponential delay
            pass
    time.sleep(min(max(delay, 0.0), _MAX_BACKOFF_S))


def _template(prompt: str, parse: Parse | None, max_score: float | None) -> JudgeTemplate:
    """The template named by `prompt`, or `prompt` itself, with parse/max_score settled and checked."""
    shipped = TEMPLATES.get(prompt)
    if shipped is None and "{prompt}" not in prompt:
        raise ValueError(f"prompt must contain '{{prompt}}' or name a shipped template ({', '.join(TEMPLATES)}), "
                         f"got {prompt[:80]!r}")
    if shipped is not None:
        for name, value, own in (("parse", parse, shipped.parse), ("max_score", max_score, shipped.max_score)):
            if value is not None and value != own:
                raise ValueError(f"template {prompt!r} is read with {name}={own!r}, not {value!r} "
                                 f"(leave {name} unset, or copy the template's text to change it)")
        return shipped
    if parse not in ("number", "yes_probability"):
        raise ValueError(f"parse must be 'number' or 'yes_probability' for your own template, got {parse!r}")
    if parse == "number" and (max_score is None or not max_score > 0):
        raise ValueError(f"max_score must be > 0 with parse 'number', got {max_score!r}")
    return JudgeTemplate(prompt, parse, max_score)


def _read_answer(body: Any, template: JudgeTemplate) -> tuple[str, float]:
    """(answer text, score in [0, 1]) from a chat-completions body; JudgeError when it holds no score."""
    try:
        choice = body["choices"][0]
        answer = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise JudgeError("bad_response", f"no choices[0].message.content in {str(body)[:200]!r}") from None
    try:
        if template.parse == "number":
            return answer, _number_score(answer, template.max_score)
        return answer, _yes_probability(choice)
    except JudgeError as e:
        e.answer = answer
        raise


def _number_score(answer: str, max_score: float) -> float:
    match = _NUMBER.search(answer)
    if match is None:
        raise JudgeError("unparseable", f"no number in the answer {answer[:200]!r}")
    value = float(match.group())
    if not 0 <= value <= max_score:
        raise JudgeError("out_of_range", f"{value:g} is outside [0, {max_score:g}] in {answer[:200]!r}")
    return value / max_score


def _yes_probability(choice: Mapping[str, Any]) -> float:
    try:
        first = choice["logprobs"]["content"][0]
        candidates = [first, *first.get("top_logprobs", [])]
        tokens = {(c["token"], float(c["logprob"])) for c in candidates}  # the chosen token may be listed twice
    except (KeyError, IndexError, TypeError, ValueError):
        raise JudgeError("no_logprobs", "the answer carries no logprobs for its first token") from None
    mass = {"yes": 0.0, "no": 0.0}
    for token, logprob in tokens:
        word = token.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    if mass["yes"] + mass["no"] <= 0:
        raise JudgeError("unparseable", f"neither Yes nor No among the first token's top {_TOP_LOGPROBS}")
    return mass["yes"] / (mass["yes"] + mass["no"])


class KeyMask:
    """Replaces the API key by "***" in a text, in every form a server or proxy may echo it: literal,
    JSON-escaped (also with `\\/`), URL-encoded (either hex case, `+` or `%20` for spaces), and any run of
    `_KEY_RUN` or more of its characters (a key shown by its tail). A key of None masks nothing."""

    def __init__(self, key: str | None):
        runs = set()
        for form in _key_forms(key) if key else ():
            width = min(_KEY_RUN, len(form))
            runs.update(form[i:i + width] for i in range(len(form) - width + 1))
        # A lookahead finds a run at every position (longest first), so overlapping runs join into one stretch.
        alternatives = "|".join(map(re.escape, sorted(runs, key=len, reverse=True)))
        self.pattern = re.compile(f"(?=({alternatives}))") if runs else None

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        out, end = [], 0  # end: where the text written so far, or the stretch being masked, ends
        for match in self.pattern.finditer(text):
            if match.start() > end or not out:  # a new stretch
                out += [text[end:match.start()], _MASK]
            end = max(end, match.end(1))
        return "".join([*out, text[end:]])

    def strings(self, value: Any) -> Any:
        """`value` (decoded JSON) with every string in it, keys included, masked."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.strings(v) for v in value]
        if isinstance(value, dict):
            return {self(k): self.strings(v) for k, v in value.items()}
        return value


def _key_forms(key: str) -> set[str]:
    escaped = json.dumps(key)[1:-1]
    encoded = {urllib.parse.quote(key, safe=""), urllib.parse.quote_plus(key, safe="")}
    encoded |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), e) for e in encoded}
    return {key, escaped, escaped.replace("/", "\\/"), *encoded}
