"""Does the weight-free quality reward rank a clean image above its degraded copies, per kind of image?

    python scripts/validate_quality.py [--quick] [--baseline REV] [--first-drawn N]

Builds the evaluation set offline, deterministically: photos (`skimage.data`), signs (a board, a frame and
a word, `scripts/make_sample_images.render_sign`), text pages (`tests/render_text.render_text_image`, also
inverted and colourised) and illustrations drawn with PIL (flat shapes, gradients, line art, cartoons; half
antialiased). Each clean image is paired with Gaussian-blurred, noisy and JPEG copies at several strengths;
a pair counts as ranked correctly when the clean image scores strictly higher.

Prints one JSON object: per kind and degradation the fraction of pairs ranked correctly (`by_level` per
strength, `failures` names the pairs the current reward ranks wrongly) and the ms per 1024 px image.
`--baseline REV` scores the same pairs with `rewards/quality.py` as of git revision REV, side by side, in
the same run (e.g. `--baseline f0873a8`, the version before graphics were validated). The reward's
constants were chosen on drawn images 0-11; `--first-drawn 12` draws 12 others that were not looked at.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import textwrap
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]
from make_sample_images import FONT, render_sign  # noqa: E402
from render_text import render_text_image  # noqa: E402

from rewards.quality import QualityReward  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "clock", "brick", "grass",
          "gravel", "moon", "immunohistochemistry", "retina", "hubble_deep_field", "page", "text")
QUICK_PHOTOS = ("astronaut", "coffee", "camera", "coins", "grass")
# Strengths: Gaussian blur sigma (px), Gaussian noise sigma (8-bit levels, per RGB channel), JPEG quality.
DEGRADATIONS = {"blur": (0.5, 1.0, 2.0, 4.0), "noise": (3.0, 8.0, 20.0, 40.0), "jpeg": (10, 30, 70)}
QUICK_DEGRADATIONS = {"blur": (0.5, 2.0), "noise": (3.0, 20.0)}

# (board, ink) colours and words for the signs; sizes (width, height) shared by the drawn kinds.
SIGN_COLOURS = [((120, 80, 40), (250, 240, 220)), ((240, 240, 235), (20, 20, 20)), ((200, 20, 20), (255, 255, 255)),
                ((20, 110, 60), (255, 255, 255)), ((20, 50, 140), (250, 210, 40)), ((250, 205, 30), (10, 10, 10)),
                ((15, 15, 15), (255, 140, 0)), ((255, 255, 255), (0, 0, 0))]
SIGN_WORDS = ["OPEN", "Open Cafe", "STOP 42", "EXIT", "SALE 50%", "Bakery", "No Parking", "HELLO WORLD 2026",
              "Welcome", "Station 7", "Fresh Bread", "MAIN ST"]
SIZES = [(512, 512), (640, 320), (768, 512), (384, 384), (640, 480), (512, 256)]
PROSE = ("A policy that writes image tokens is trained with rewards that judge the decoded pictures. Text must "
         "come out crisp: every letter readable, every stroke sharp, no noise in flat areas and no blur at the "
         "edges. The quick brown fox jumps over the lazy dog 0123456789 times, and signs say OPEN, EXIT or "
         "SALE in bold capitals on plain boards.")
ILLUSTRATION_FONTS = ["DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSans.ttf"]


def photo(name: str) -> np.ndarray:
    """An skimage.data photo as uint8 RGB [H, W, 3]."""
    image = getattr(skimage.data, name)()
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def sign(i: int) -> np.ndarray:
    """The i-th sign: a word on a coloured board with a frame."""
    board, ink = SIGN_COLOURS[i % len(SIGN_COLOURS)]
    width, height = SIZES[i % len(SIZES)]
    return np.asarray(render_sign(SIGN_WORDS[i % len(SIGN_WORDS)], board, ink, (width, min(height, width // 2))))


def text_page(i: int) -> np.ndarray:
    """The i-th page of prose (font 14-40 px); every second one inverted, every third colourised."""
    width, height = SIZES[i % len(SIZES)]
    font_size = (14, 20, 28, 40, 17, 24)[i % 6]
    chars, rows = int(width / (0.7 * font_size)), int(height / (1.3 * font_size))
    prose = " ".join([PROSE[i * 7:], PROSE, PROSE, PROSE[:i * 7]])  # enough to fill the smallest font
    while True:
        try:
            image = np.asarray(render_text_image("\n".join(textwrap.wrap(prose, chars)[:rows]), (width, height),
                                                 font_size))
            break
        except ValueError:  # too wide or too tall: shorter and fewer lines
            chars, rows = chars - 2, rows - 1
    if i % 2:
        image = 255 - image
    if i % 3 == 2:  # luminance t mapped onto a colour ramp between a dark and a light colour
        t = image.mean(axis=-1, keepdims=True) / 255
        image = (np.array([30, 10, 90]) * (1 - t) + np.array([250, 230, 120]) * t).astype(np.uint8)
    return image


def gradient(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A linear gradient between two random colours, at a random angle."""
    width, height = size
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = ((t - t.min()) / (t.max() - t.min()))[..., None]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8))


def colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def box(rng: np.random.Generator, size: tuple[int, int], smallest: float = 0.08) -> list[float]:
    """A random box [x0, y0, x1, y1] inside `size`, at least `smallest` of each side."""
    w, h = size
    x0, y0 = rng.uniform(0, w * (1 - smallest)), rng.uniform(0, h * (1 - smallest))
    return [x0, y0, rng.uniform(x0 + w * smallest, w), rng.uniform(y0 + h * smallest, h)]


def draw_shapes(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator, n: int,
                outline: int) -> None:
    """n rectangles, ellipses and polygons in flat colours, outlined in black `outline` px wide (0: none)."""
    for _ in range(n):
        kind, fill = rng.integers(3), colour(rng)
        line = {"outline": (0, 0, 0), "width": outline} if outline else {}
        if kind == 0:
            draw.rectangle(box(rng, size), fill=fill, **line)
        elif kind == 1:
            draw.ellipse(box(rng, size), fill=fill, **line)
        else:
            points = [tuple(rng.uniform(0, 1, 2) * size) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(points, fill=fill, **line)


def draw_line_art(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator, scale: int) -> None:
    """Black strokes 1-3 px wide on the page: polylines, circles, arcs and a hatched box."""
    ink = (0, 0, 0)
    for _ in range(6):
        width = int(rng.integers(1, 4)) * scale
        points = [tuple(rng.uniform(0, 1, 2) * size) for _ in range(int(rng.integers(2, 6)))]
        draw.line(points, fill=ink, width=width, joint="curve")
        draw.ellipse(box(rng, size), outline=ink, width=width)
        draw.arc(box(rng, size), *sorted(rng.uniform(0, 360, 2)), fill=ink, width=width)
    x0, y0, x1, y1 = box(rng, size, 0.2)
    draw.rectangle([x0, y0, x1, y1], outline=ink, width=2 * scale)
    for x in np.arange(x0, x1, 6 * scale):
        draw.line([(x, y0), (x, y1)], fill=ink, width=scale)


def draw_cartoon(image: Image.Image, rng: np.random.Generator, scale: int) -> None:
    """A sunny scene with black outlines: sky gradient, ground, sun, house, tree, cloud and a caption."""
    w, h = image.size
    image.paste(gradient((w, h * 2 // 3), rng), (0, 0))
    draw, line = ImageDraw.Draw(image), {"outline": (0, 0, 0), "width": 3 * scale}
    draw.rectangle([0, h * 2 // 3, w, h], fill=colour(rng), **line)
    sun = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.3) * h, 0.08 * min(w, h))
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        end = (sun[0] + 2 * sun[2] * np.cos(angle), sun[1] + 2 * sun[2] * np.sin(angle))
        draw.line([sun[:2], end], fill=(250, 200, 0), width=2 * scale)
    draw.ellipse([sun[0] - sun[2], sun[1] - sun[2], sun[0] + sun[2], sun[1] + sun[2]], fill=(255, 220, 0), **line)
    x, y, s = rng.uniform(0.1, 0.5) * w, h * 2 // 3, 0.25 * min(w, h)
    draw.rectangle([x, y - s, x + s, y], fill=colour(rng), **line)
    draw.polygon([(x - s * 0.1, y - s), (x + s / 2, y - 1.6 * s), (x + 1.1 * s, y - s)], fill=colour(rng), **line)
    draw.rectangle([x + 0.4 * s, y - 0.45 * s, x + 0.6 * s, y], fill=colour(rng), **line)
    draw.rectangle([x + 0.1 * s, y - 0.8 * s, x + 0.3 * s, y - 0.6 * s], fill=(180, 220, 255), **line)
    tx = rng.uniform(0.6, 0.85) * w
    draw.rectangle([tx, y - s, tx + 0.15 * s, y + 0.1 * s], fill=(110, 70, 30), **line)
    draw.ellipse([tx - 0.4 * s, y - 1.9 * s, tx + 0.55 * s, y - 0.9 * s], fill=(40, 160, 60), **line)
    draw.ellipse([0.05 * w, 0.05 * h, 0.35 * w, 0.15 * h], fill=(255, 255, 255), **line)
    font = ImageFont.truetype(str(FONT.with_name(ILLUSTRATION_FONTS[int(rng.integers(3))])), int(0.06 * h))
    draw.text((0.05 * w, 0.8 * h), "Home sweet home", fill=(0, 0, 0), font=font)


def illustration(i: int) -> np.ndarray:
    """The i-th illustration: flat shapes, shapes on a gradient, line art or a cartoon (cycling).

    Half of them (alternating, shifted every 4) are drawn at twice the size and area-downscaled, so
    their edges are antialiased as a decoder's would be; the others keep PIL's hard, aliased edges.
    """
    rng = np.random.default_rng(1000 + i)
    scale = 2 if (i + i // 4) % 2 == 0 else 1
    size = (SIZES[i % len(SIZES)][0] * scale, SIZES[i % len(SIZES)][1] * scale)
    style = i % 4
    paper = colour(rng) if style == 0 else (250, 248, 240)
    image = gradient(size, rng) if style == 1 else Image.new("RGB", size, paper)
    if style in (0, 1):
        draw_shapes(ImageDraw.Draw(image), size, rng, int(rng.integers(4, 10)), outline=int(rng.integers(0, 4)) * scale)
    elif style == 2:
        draw_line_art(ImageDraw.Draw(image), size, rng, scale)
    else:
        draw_cartoon(image, rng, scale)
    return np.asarray(image.reduce(scale) if scale > 1 else image)


def blurred(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: float, seed: int = 0) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buffer).convert("RGB"))


DEGRADE: dict[str, Callable[[np.ndarray, float, int], np.ndarray]] = {"blur": blurred, "noise": noisy, "jpeg": jpeg}


def evaluation_set(quick: bool = False, first_drawn: int = 0) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per kind, the clean images as (name, uint8 RGB [H, W, 3]): the photos, and 12 signs, pages and
    illustrations from index `first_drawn` on; `quick` is the tests' small subset (5 photos, 4 of each)."""
    drawn = range(first_drawn, first_drawn + (4 if quick else 12))
    return {
        "photo": [(name, photo(name)) for name in (QUICK_PHOTOS if quick else PHOTOS)],
        "sign": [(f"sign{i}", sign(i)) for i in drawn],
        "text": [(f"text{i}", text_page(i)) for i in drawn],
        "illustration": [(f"illustration{i}", illustration(i)) for i in drawn],
    }


def pairs(images: list[tuple[str, np.ndarray]], degradations: dict[str, tuple]) -> Iterator[tuple]:
    """(name, clean, degradation, strength, degraded copy) for each image and strength; noise seeded per image."""
    for seed, (name, clean) in enumerate(images):
        for how, strengths in degradations.items():
            for strength in strengths:
                yield name, clean, how, strength, DEGRADE[how](clean, strength, seed)


def ranking(rewards: dict[str, QualityReward], kinds: dict[str, list], degradations: dict[str, tuple]) -> dict:
    """Fraction of (clean, degraded) pairs each reward ranks correctly: per kind and degradation
    (`correct`), per strength (`by_level`), and the pairs that `rewards["current"]` ranks wrongly."""
    hits: dict[tuple, list[bool]] = defaultdict(list)
    failures: list[str] = []
    for kind, images in kinds.items():
        clean_scores = {label: {name: r.score_one(im)["total"] for name, im in images} for label, r in rewards.items()}
        for name, _, how, strength, degraded in pairs(images, degradations):
            for label, reward in rewards.items():
                ok = reward.score_one(degraded)["total"] < clean_scores[label][name]
                hits[label, kind, how, strength].append(ok)
                if not ok and label == "current":
                    failures.append(f"{kind}/{name} {how} {strength}")
    report: dict = {"correct": {}, "by_level": {}, "failures": failures}
    for kind in kinds:
        for how, strengths in degradations.items():
            for label in rewards:
                per_level = {s: hits[label, kind, how, s] for s in strengths}
                joined = [ok for oks in per_level.values() for ok in oks]
                report["correct"].setdefault(kind, {}).setdefault(how, {})[label] = round(float(np.mean(joined)), 3)
                levels = report["by_level"].setdefault(kind, {}).setdefault(how, {})
                for s, oks in per_level.items():
                    levels.setdefault(str(s), {})[label] = round(float(np.mean(oks)), 3)
    return report


def ms_per_image(rewards: dict[str, QualityReward], images: list[np.ndarray], rounds: int = 5) -> dict[str, dict]:
    """Per reward, the fastest of `rounds` rounds of the mean ms per `score_one` call on `images`, in
    wall-clock time and in CPU time (all of the process's threads).

    Rounds alternate between the rewards and the fastest is kept, so that other load on the machine
    slows neither more than the other; CPU time moves less than wall time on a busy machine.
    """
    best = {label: {"wall": math.inf, "cpu": math.inf} for label in rewards}
    for _ in range(rounds + 1):  # the first round warms up
        for label, reward in rewards.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for image in images:
                reward.score_one(image)
            spent = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
            for clock, seconds in spent.items():
                best[label][clock] = min(best[label][clock], seconds / len(images) * 1000)
    return {label: {clock: round(ms, 2) for clock, ms in clocks.items()} for label, clocks in best.items()}


def reward_at(revision: str) -> QualityReward:
    """`QualityReward()` from rewards/quality.py as of git `revision` (imported under another name)."""
    shown = subprocess.run(["git", "show", f"{revision}:rewards/quality.py"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"--baseline {revision}: git show failed: {shown.stderr.strip()}")
    module = types.ModuleType(f"quality_at_{revision}")
    exec(compile(shown.stdout, f"{revision}:rewards/quality.py", "exec"), module.__dict__)
    return module.QualityReward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tests' small set (4 per drawn kind, 5 photos)")
    parser.add_argument("--baseline", metavar="REV", help="also score with rewards/quality.py at this git revision")
    parser.add_argument("--first-drawn", type=int, default=0, metavar="N",
                        help="index of the first sign, page and illustration drawn (12: images not tuned on)")
    args = parser.parse_args()
    rewards = {"current": QualityReward()}
    if args.baseline:
        rewards["baseline"] = reward_at(args.baseline)
    kinds = evaluation_set(args.quick, args.first_drawn)
    degradations = QUICK_DEGRADATIONS if args.quick else DEGRADATIONS
    report = ranking(rewards, kinds, degradations)
    # Timing on 1024 px images: photos and signs upscaled (the reward's default measuring size).
    at_1024 = [cv2.resize(im, (1024, 1024), interpolation=cv2.INTER_CUBIC)
               for im in (photo("astronaut"), photo("coffee"), sign(0), illustration(3))]
    timing = ms_per_image(rewards, at_1024)
    print(json.dumps({"images": {k: len(v) for k, v in kinds.items()}, "first_drawn": args.first_drawn,
                      "degradations": degradations, "baseline": args.baseline, **report,
                      "ms_per_1024px_image": timing}, indent=1))


if __name__ == "__main__":
    main()
