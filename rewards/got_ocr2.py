"""GOT-OCR2.0 (stepfun-ai) as an OCR backend: transformers' `GotOcr2ForConditionalGeneration` and its processor.

X-Omni rewards text rendering with GOT-OCR2.0 and PaddleOCR. GOT reads a whole image (resized to its 1024 px
input) into plain text with a 0.5B Qwen2 decoder, so it has no detector and no per-line scores: a reading's
confidence is the mean, over the tokens it generated (its end token included, the padding after it not), of the
probability the model gave the token it emitted (softmax of the raw logits). Every line of a reading carries
that one confidence. Greedy decoding, so a reading is a function of the pixels.

Weights: the `-hf` conversion (`stepfun-ai/GOT-OCR-2.0-hf`; the original repository's remote code is not this
format), as a local folder or as that repo id already in the Hugging Face cache (looked up offline).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np
import torch

from core.devices import DtypeName, resolve_device, resolve_dtype
from core.paths import HF_PREFIX, LocalPath, resolve_local_path
from rewards.ocr_backends import Line, check_rgb

KEY = "got_ocr2.path"
HF_FOLDER = "stepfun-ai/GOT-OCR-2.0-hf"
END_TOKEN = "<|im_end|>"  # ends the assistant turn of GOT's chat prompt (the -hf model card stops on it)
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_folder(path: str, key: str = KEY) -> str:
    """A local folder for `path`: a folder (relative ones searched as `resolve_local_path` does), or a repo id
    (`org/name` or `hf://org/name`) whose snapshot is in the Hugging Face cache. Never downloads."""
    repo = path.removeprefix(HF_PREFIX)
    if (path.startswith(HF_PREFIX) or not os.path.exists(os.path.expanduser(path))) and REPO_ID.fullmatch(repo):
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(repo, local_files_only=True)
        except Exception as e:  # not cached (LocalEntryNotFoundError), or no cache at all
            if path.startswith(HF_PREFIX):
                raise FileNotFoundError(
                    f"{key}: {repo} is not in the local Hugging Face cache (nothing is downloaded at run time; "
                    f"fetch it with `huggingface-cli download {repo}` or set a local folder)") from e
    return resolve_local_path(path, key)


def check_folder(folder: str, key: str = KEY) -> None:
    """ValueError naming `key` unless `folder` holds a GOT-OCR2 -hf model's config (read before any weights)."""
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        raise ValueError(f"{key}: no config.json in {folder}: not a GOT-OCR2 model folder (want {HF_FOLDER})")
    try:
        with open(config) as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{key}: {config} is not a readable JSON config: {e}") from e
    if model_type != "got_ocr2":
        raise ValueError(f"{key}: {folder} holds a {model_type!r} model, not GOT-OCR2's -hf conversion "
                         f"(model_type 'got_ocr2', e.g. {HF_FOLDER}; the original stepfun-ai/GOT-OCR2_0 remote "
                         "code is another format)")


def image_tokens(vision_config) -> int:
    """Tokens per image: the vision tower's patch grid, halved twice by the projector's stride-2 convolutions."""
    side = vision_config.image_size // vision_config.patch_size
    for _ in range(2):
        side = (side + 1) // 2  # kernel 3, stride 2, padding 1
    return side * side


class GotOcr2Backend:
    """GOT-OCR2.0 plain-text OCR, `batch_size` images per generate call (greedy).

    Args:
        path: the -hf model folder, or its repo id (`stepfun-ai/GOT-OCR-2.0-hf`) in the Hugging Face cache.
        device: "cuda", "cpu", ...; None or "auto" picks CUDA when available (`OCRReward` passes its own).
        dtype: weights and compute dtype: "float32", "bfloat16" (the released weights' own) or "float16".
        batch_size: images per generate call.
        max_new_tokens: the longest reading in tokens; a longer text is cut there.
    """

    torch_model = True  # build_backend hands it the OCR reward's device and dtype

    def __init__(self, path: LocalPath, device: str | None = None, dtype: DtypeName = "float32",
                 batch_size: int = 8, max_new_tokens: int = 512):
        from transformers import AutoProcessor, GotOcr2ForConditionalGeneration, GotOcr2Processor

        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        folder = resolve_folder(str(path))
        check_folder(folder)
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        try:
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            model, info = GotOcr2ForConditionalGeneration.from_pretrained(
                folder, dtype=self.dtype, local_files_only=True, output_loading_info=True)
        except Exception as e:  # a truncated or foreign weights file, a broken tokenizer
            raise ValueError(f"{KEY}: could not load GOT-OCR2 from {folder}: {type(e).__name__}: {e}") from e
        if not isinstance(processor, GotOcr2Processor):
            raise ValueError(f"{KEY}: {folder}'s processor is {type(processor).__name__}, not GotOcr2Processor")
        wrong = {kind: sorted(info[kind]) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                 if info.get(kind)}
        if wrong:  # transformers would fill missing weights at random: an OCR that reads noise
            raise ValueError(f"{KEY}: weights in {folder} do not fit GOT-OCR2: "
                             + "; ".join(f"{kind} {names[:3]} ({len(names)})" for kind, names in wrong.items()))
        self.processor, self.model = processor, model.to(self.device).eval()
        self.tokens_per_image = image_tokens(model.config.vision_config)
        tokenizer = processor.tokenizer
        ends = {tokenizer.convert_tokens_to_ids(END_TOKEN), tokenizer.eos_token_id} - {None, tokenizer.unk_token_id}
        if not ends:
            raise ValueError(f"{KEY}: the tokenizer in {folder} has neither {END_TOKEN} nor an eos token")
        self.end_ids = sorted(ends)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0]
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def read(self, image: np.ndarray) -> list[Line]:
        return self.read_batch([image])[0]

    def read_batch(self, images: Sequence[np.ndarray]) -> list[list[Line]]:
        """Per uint8 RGB image [H, W, 3], its reading's non-empty lines, each with the reading's confidence."""
        for image in images:
            check_rgb(image)
        lines: list[list[Line]] = []
        for start in range(0, len(images), self.batch_size):
            for text, confidence in self._generate(images[start:start + self.batch_size]):
                lines.append([(line.strip(), confidence) for line in text.splitlines() if line.strip()])
        return lines

    @torch.inference_mode()
    def _generate(self, images: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(text, mean token probability) per image. Every prompt has the same length (one fixed-size image and
        the same query), so the batch needs no padding and each row decodes as it would alone."""
        writable = [np.require(image, requirements="W") for image in images]  # torch.from_numpy warns on read-only
        inputs = self.processor(images=writable, return_tensors="pt", num_image_tokens=self.tokens_per_image)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                  eos_token_id=self.end_ids, pad_token_id=self.pad_id,
                                  return_dict_in_generate=True, output_logits=True)
        tokens = out.sequences[:, inputs["input_ids"].shape[1]:]  # [N, T]
        logits = torch.stack(out.logits, dim=1).float()  # [N, T, vocab]
        probs = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).exp()  # [N, T]
        is_end = torch.isin(tokens, torch.tensor(self.end_ids, device=tokens.device))
        # A row's length: up to and including its first end token, or all T when it was cut at max_new_tokens.
        lengths = torch.where(is_end.any(1), is_end.int().argmax(1) + 1, tokens.shape[1]).tolist()
        decode = self.processor.tokenizer.decode
        return [(decode(row[:n], skip_special_tokens=True), float(p[:n].mean()))
                for row, p, n in zip(tokens, probs, lengths, strict=True)]
