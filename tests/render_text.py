"""Test images of rendered text: dark text centred on a light background, in a font that ships offline
with matplotlib (DejaVu Sans Bold), so OCR tests need no system fonts."""

from __future__ import annotations

import os

import matplotlib
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf")
BACKGROUND = (245, 243, 236)
INK = (25, 25, 30)


def render_text_image(text: str, size: tuple[int, int] = (512, 256), font_size: int = 40) -> Image.Image:
    """An RGB image of `size` (width, height) with `text` (may hold newlines) centred in it.

    Raises ValueError when the text does not fit, so a test never reads half-drawn words.
    """
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT_PATH, font_size)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, align="center")
    width, height = right - left, bottom - top
    if width > size[0] or height > size[1]:
        raise ValueError(f"{text!r} at {font_size} px needs {width}x{height}, more than the image {size}")
    origin = ((size[0] - width) / 2 - left, (size[1] - height) / 2 - top)
    draw.multiline_text(origin, text, font=font, fill=INK, align="center")
    return image
