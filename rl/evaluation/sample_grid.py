"""A picture of what the policy draws: one labelled band per prompt (its G samples, wrapped at
`max_columns` images a line), each image's rewards under it.

Logged to TensorBoard (and W&B) every `logging.images_every` steps and at every evaluation, so a run can be
judged by eye next to its reward curves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import ray
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK, HEADER_INK = (255, 255, 255), (20, 20, 20), (60, 60, 160)


def sample_grid(rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[Mapping[str, float]]]],
                cell: int = 192, font_size: int = 12, max_columns: int = 8) -> np.ndarray:
    """rows: (prompt, images uint8 [H, W, 3], per-image scores {name: value}) per prompt.

    Returns uint8 [H, W, 3]: each prompt's band starts with its prompt, then its images fitted into `cell` x `cell`
    squares, at most `max_columns` a line (a group of G = 32 makes 4 lines of 8, not one picture 6,000 px wide), each
    with one `name value` line per score under it (NaN shows as "-"). A group that fits takes one line.
    """
    if not rows:
        raise ValueError("sample_grid needs at least one row")
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    font = ImageFont.load_default(size=font_size)
    line = font_size + 3
    thumbs = [[_thumbnail(image, cell) for image in images] for _, images, _ in rows]
    band = max(t.height for row in thumbs for t in row)  # wide images need less than `cell` rows of pixels
    columns = min(max_columns, max(len(row) for row in thumbs))
    lines_per_cell = max((len(s) for _, _, scores in rows for s in scores), default=0)
    image_line = band + line * lines_per_cell + 6  # an image, its scores and a gap
    heights = [line + image_line * max(1, math.ceil(len(row) / columns)) for row in thumbs]
    canvas = Image.new("RGB", (columns * (cell + 4) + 4, sum(heights)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    top = 0
    for (prompt, _, scores), row, height in zip(rows, thumbs, heights, strict=True):
        draw.text((4, top + 1), _fit(prompt, draw, font, canvas.width - 8), fill=HEADER_INK, font=font)
        for i, (picture, values) in enumerate(zip(row, scores, strict=True)):
            left, upper = 4 + (i % columns) * (cell + 4), top + line + (i // columns) * image_line
            canvas.paste(picture, (left + (cell - picture.width) // 2, upper + (band - picture.height) // 2))
            for k, (name, value) in enumerate(values.items()):
                text = f"{name} {value:.3f}" if np.isfinite(value) else f"{name} -"
                draw.text((left, upper + band + 2 + k * line), text, fill=INK, font=font)
        top += height
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
