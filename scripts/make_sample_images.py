"""Render a small sample image set with a manifest, for trying `python -m rewards.score` without a model.

    python scripts/make_sample_images.py sample/
    python -m rewards.score --images sample --prompts sample/prompts.jsonl \
        --config configs/rewards.yaml --out sample_scores --only quality,ocr

Writes 9 PNGs and `prompts.jsonl` (manifest layout: image, prompt, category). Text signs are drawn with
PIL in matplotlib's DejaVu font, one of them spelling its text wrong (a low OCR score); natural photos
come from `skimage.data`, each also as a blurred or noisy copy (a lower quality score). Deterministic.

    python scripts/make_sample_images.py before/ --stage before
    python scripts/make_sample_images.py after/ --stage after

write two sets over the same prompts, as samples of a policy before and after RL, for trying
`python -m rewards.compare` (scripts/make_scoring_docs.py does it all).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage import data

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"

# (file, text drawn, background, ink, prompt): the prompts quote the text they ask for.
SIGNS = [
    ("sign_open_cafe.png", "Open Cafe", (120, 80, 40), (250, 240, 220),
     'A wooden shop sign above a door that reads "Open Cafe"'),
    ("poster_hello.png", "HELLO WORLD 2026", (240, 240, 235), (20, 20, 20),
     'A minimalist poster with the words "HELLO WORLD 2026" in bold black letters'),
    ("sign_stop_42.png", "STOP 42", (200, 20, 20), (255, 255, 255),
     'A red road sign that says "STOP 42" in white capitals'),
    ("sign_stop_42_misspelled.png", "SPOT 24", (200, 20, 20), (255, 255, 255),
     'A red road sign that says "STOP 42" in white capitals'),
]
# (file, skimage image, degradation, prompt)
PHOTOS = [
    ("astronaut.png", "astronaut", None,
     "A detailed studio portrait photograph of an astronaut in a white spacesuit, smiling, holding a "
     "helmet, with an American flag and a model of the space shuttle behind her, soft even lighting, "
     "sharp focus, natural colours and fine fabric texture"),
    ("astronaut_blurred.png", "astronaut", "blur", None),
    ("coffee.png", "coffee", None, "A cup of black coffee on a saucer with a spoon, seen from above"),
    ("coffee_noisy.png", "coffee", "noise", None),
    ("chelsea.png", "chelsea", None, "A photo of a ginger tabby cat looking to the side"),
]


def render_sign(text: str, background: tuple, ink: tuple, size: tuple[int, int] = (640, 320)) -> Image.Image:
    """`text` centred on a plain board with a border, as large as fits."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    draw.rectangle([8, 8, size[0] - 9, size[1] - 9], outline=ink, width=6)
    font_size = 120
    while True:
        font = ImageFont.truetype(str(FONT), font_size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= size[0] * 0.85 or font_size <= 12:
            break
        font_size -= 4
    position = ((size[0] - (right - left)) / 2 - left, (size[1] - (bottom - top)) / 2 - top)
    draw.text(position, text, fill=ink, font=font)
    return image


def degrade(image: Image.Image, how: str | None, seed: int = 0) -> Image.Image:
    """The image unchanged, Gaussian-blurred (radius 4) or with Gaussian noise (sigma 40)."""
    if how is None:
        return image
    if how == "blur":
        return image.filter(ImageFilter.GaussianBlur(4))
    noise = np.random.default_rng(seed).normal(0, 40, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def make_samples(out_dir: str | Path) -> Path:
    """Write the images and `prompts.jsonl` into `out_dir`; returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, text, background, ink, prompt in SIGNS:
        render_sign(text, background, ink).save(out / name)
        rows.append({"image": name, "prompt": prompt, "category": "text"})
    prompt = None
    for name, source, how, new_prompt in PHOTOS:
        prompt = new_prompt or prompt  # a degraded copy keeps the prompt of the photo before it
        degrade(Image.fromarray(getattr(data, source)()).convert("RGB"), how).save(out / name)
        rows.append({"image": name, "prompt": prompt, "category": "photo" if how is None else f"photo_{how}"})
    manifest = out / "prompts.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def misspell(text: str) -> str:
    """Each word of 3+ letters with its 2nd and 3rd letters swapped ("Open Cafe" -> "Oepn Cfae")."""
    return " ".join(w[0] + w[2] + w[1] + w[3:] if len(w) >= 3 else w for w in text.split(" "))


def make_policy_samples(out_dir: str | Path, stage: str) -> Path:
    """Two samples per prompt (the signs' and photos' prompts above) in rl.generate's layout
    (`images/{prompt:05d}_{k}.png`, manifest.jsonl with prompt_index and sample), standing in for a
    policy "before" RL (signs misspelled or blurred, photos blurred or noisy) or "after" (all clean).
    Returns the manifest path."""
    if stage not in ("before", "after"):
        raise ValueError(f"stage must be 'before' or 'after', got {stage!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    signs = [(text, background, ink, prompt) for name, text, background, ink, prompt in SIGNS
             if "misspelled" not in name]
    photos = [(source, prompt) for _, source, how, prompt in PHOTOS if how is None]
    rows = []
    for i, (text, background, ink, prompt) in enumerate(signs):
        for k in range(2):
            wrong = stage == "before" and k == 0
            image = degrade(render_sign(misspell(text) if wrong else text, background, ink),
                            "blur" if stage == "before" and k == 1 else None)
            rows.append((image, i, k, prompt, "text"))
    for j, (source, prompt) in enumerate(photos, len(signs)):
        for k in range(2):
            how = ("blur", "noise")[k] if stage == "before" else None
            rows.append((degrade(Image.fromarray(getattr(data, source)()).convert("RGB"), how, seed=j), j, k, prompt,
                         "photo"))
    lines = []
    for image, i, k, prompt, category in rows:
        name = f"images/{i:05d}_{k}.png"
        image.save(out / name)
        lines.append({"image": name, "prompt": prompt, "prompt_index": i, "sample": k, "category": category})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder for the images and prompts.jsonl")
    parser.add_argument("--stage", choices=("before", "after"),
                        help="instead: two samples per prompt in rl.generate's layout, as a policy before or "
                             "after RL would draw them (for python -m rewards.compare)")
    args = parser.parse_args()
    manifest = make_policy_samples(args.out_dir, args.stage) if args.stage else make_samples(args.out_dir)
    print(f"wrote {manifest} and its images")


if __name__ == "__main__":
    main()
