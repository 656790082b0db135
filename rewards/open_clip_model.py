"""One frozen open_clip model loaded from a local weights file, encoding and pairing images with texts.

Shared by the rewards that are a cosine similarity in a CLIP embedding space (HPSv2, CLIP alignment).
They differ only in how pixels are prepared, so `score` takes the image transform as an argument
(`preprocess_images` is open_clip's own validation transform for the model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from core.devices import DtypeName, resolve_device, resolve_dtype
from core.paths import resolve_local_path


class OpenClipModel:
    """A built-in open_clip architecture with weights from a local file, frozen, in eval mode.

    Args:
        model: open_clip architecture name (`open_clip.list_models()`, e.g. "ViT-H-14").
        weights: local state-dict file (`{"state_dict": ...}` or a plain state dict; a `module.` prefix
            is stripped) or `hf://org/repo/file` already in the HF cache. Loaded strictly.
        key: the config argument that named `weights`, used in error messages.
        device: "cuda", "cpu", ...; None or "auto" picks CUDA when available.
        dtype: weights and activations dtype ("float32", "bfloat16", "float16"); features are
            normalised and compared in float32.
        batch_size: images (or texts) per forward pass.
    """

    def __init__(self, model: str, weights: str, key: str, device: str | None = None,
                 dtype: DtypeName = "float32", batch_size: int = 16):
        if model not in open_clip.list_models():
            raise ValueError(f"model: {model!r} is not an open_clip architecture (see open_clip.list_models())")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        path = resolve_local_path(str(weights), key)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=path, device=self.device)
        except Exception as e:  # strict load of a wrong architecture, or a file that is no checkpoint
            raise ValueError(f"{key}: cannot load {path} as open_clip {model!r} weights: "
                             f"{type(e).__name__}: {e}") from e
        self.model.to(dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer: Callable[[list[str]], torch.Tensor] = open_clip.get_tokenizer(model)
        self.image_size: int = self.model.visual.image_size[0]  # square in every built-in config

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings, float32 [N, D], from pixels [N, 3, S, S] (N <= batch_size)."""
        return F.normalize(self.model.encode_image(pixels.to(self.device, self.dtype)).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, float32 [N, D]; longer texts are truncated by the tokenizer."""
        tokens = self.tokenizer(list(texts))  # [N, context_length]
        chunks = [self.model.encode_text(batch.to(self.device)) for batch in tokens.split(self.batch_size)]
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    def score(self, images: Sequence[Image.Image], texts: Sequence[str],
              to_pixels: Callable[[Sequence[Image.Image]], torch.Tensor]) -> torch.Tensor:
        """Cosine similarity of image i with text i: float32 [N] on the CPU.

        `to_pixels` maps a list of at most `batch_size` RGB images to [n, 3, S, S], so memory stays
        bounded by the batch size. A GRPO batch repeats each prompt G times: each distinct text is
        encoded once.
        """
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images and {len(texts)} prompts")
        if not texts:
            return torch.empty(0)
        unique = {text: i for i, text in enumerate(dict.fromkeys(texts))}
        text = self.text_features(list(unique))  # [U, D]
        rows = torch.tensor([unique[t] for t in texts], device=self.device)  # [N] index into `text`
        scores = []
        for start in range(0, len(images), self.batch_size):
            pixels = to_pixels(images[start:start + self.batch_size])  # [n, 3, S, S]
            scores.append((self.image_features(pixels) * text[rows[start:start + self.batch_size]]).sum(-1))
        return torch.cat(scores).cpu()

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """open_clip's validation transform for this model, float32 [N, 3, S, S]: a `to_pixels`."""
        return torch.stack([self.preprocess(image) for image in images])
