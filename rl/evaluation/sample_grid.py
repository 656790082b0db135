"""A picture of what the policy draws: one row per prompt (its G samples), each image's rewards under it.

Logged to TensorBoard (and W&B) every `logging.images_every` steps and at every evaluation, so a run can be
judged by eye next to its reward curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import ray
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK, HEADER_INK = (255, 255, 255), (20, 20, 20), (60, 60, 160)


def sample_grid(rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[Mapping[str, float]]]],
                cell: int = 192, font_size: int = 12) -> np.ndarray:
    """rows: (prompt, images uint8 [H, W, 3], per-image scores {name: value}) per prompt.

    Returns uint8 [H, W, 3]: each row starts with its prompt, then the images fitted into `cell` x `cell`
    squares, each with one `name value` line per score under it (NaN shows as "-").
    """
    if not rows:
        raise ValueError("sample_grid needs at least one row")
    font = ImageFont.load_default(size=font_size)
    line = font_size + 3
    thumbs = [[_thumbnail(image, cell) for image in images] for _, images, _ in rows]
    band = max(t.height for row in thumbs for t in row)  # wide images need less than `cell` rows of pixels
    columns = max(len(row) for row in thumbs)
    lines_per_cell = max((len(s) for _, _, scores in rows for s in scores), default=0)
    row_height = line + band + line * lines_per_cell + 6
    canvas = Image.new("RGB", (columns * (cell + 4) + 4, len(rows) * row_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, ((prompt, _, scores), row) in enumerate(zip(rows, thumbs, strict=True)):
        top = r * row_height
        draw.text((4, top + 1), _fit(prompt, draw, font, canvas.width - 8), fill=HEADER_INK, font=font)
        for c, (picture, values) in enumerate(zip(row, scores, strict=True)):
            left = 4 + c * (cell + 4)
            canvas.paste(picture, (left + (cell - picture.width) // 2, top + line + (band - picture.height) // 2))
            for k, (name, value) in enumerate(values.items()):
                text = f"{name} {value:.3f}" if np.isfinite(value) else f"{name} -"
                draw.text((left, top + line + band + 2 + k * line), text, fill=INK, font=font)
    return np.asarray(canvas)


def rollout_grid(prompts: Sequence[str], image_refs: Sequence[ray.ObjectRef], locations: Sequence[tuple[int, int]],
                 scores: Mapping[str, torch.Tensor], group_size: int, num_prompts: int) -> np.ndarray:
    """`sample_grid` of the first `num_prompts` prompts of a rollout whose N rows are prompt-major, `group_size`
    per prompt. Only the chunks holding those images are fetched from the rollout actors' object refs
    (`locations[i]` = (chunk, index) of row i); scores: name -> float [N], shown under each image."""
    count = min(num_prompts * group_size, len(prompts))
    chunks = {c: ray.get(image_refs[c]) for c in {locations[i][0] for i in range(count)}}
    rows = []
    for start in range(0, count, group_size):
        index = range(start, min(start + group_size, count))
        rows.append((prompts[start], [chunks[locations[i][0]][locations[i][1]] for i in index],
                     [{name: float(values[i]) for name, values in scores.items()} for i in index]))
    return sample_grid(rows)


def _thumbnail(image: np.ndarray, cell: int) -> Image.Image:
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    picture.thumbnail((cell, cell))
    return picture


def _fit(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
