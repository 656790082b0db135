"""Reading a set of images and their prompts for offline scoring, in one of three layouts.

manifest   `--prompts` is JSONL or CSV with an `image` column, `prompt`, optional `text` (target
           strings: a JSON list, or in CSV a JSON list or a single string) and `task`; any other column
           is carried through as metadata. A relative `image` is looked up under the images folder
           first, then under the manifest's own folder (rl.generate writes `images/00000_0.png`
           relative to its output folder, so --images OUT and --images OUT/images both work). A relative
           `image` whose `..` leads out of the folder it is looked up in is a row error unless
           allow_outside (an absolute path, or a symlink inside the folder, is taken as it is).
longtext   LongText-Bench: `--prompts` is its prompts JSONL (`prompt_id`, `prompt`, `text`, `category`,
           no `image`) and the folder holds `{prompt_id}_{k}.png` or `{prompt_id}.png`.
sidecar    no `--prompts`: each image in the folder (recursively) has its prompt in `<name>.txt` beside it.

A row that cannot be scored (bad JSON, missing prompt, duplicate image, a file named against the
layout) is still returned, with `error` set, so the scorer reports it and goes on. Problems with the
manifest as a whole (missing file, unknown format, no usable columns) raise ManifestError.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
_LONGTEXT_NAME = re.compile(r"^(?P<id>[^_/]+?)(?:_(?P<k>\d+))?\.(?:png|jpe?g|webp)$", re.IGNORECASE)


class ManifestError(ValueError):
    """The image set cannot be read at all (reported before any model loads)."""


@dataclass
class Row:
    """One image to score.

    key: the image as the manifest names it, else its path relative to the images folder (results are
    keyed by it, also for resume); for a manifest line with no usable image, `<manifest name>:<line>`.
    path: the file (None when unknown).
    prompt: None when missing. metadata: `text` (list of str), `task` and the other columns.
    error: why the row cannot be scored, or None.
    """

    key: str
    path: Path | None
    prompt: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def read_rows(images_dir: str | Path, prompts: str | Path | None = None,
              allow_outside: bool = False) -> tuple[str, list[Row]]:
    """(layout name, rows) for an images folder and an optional prompts file; see the module docstring."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ManifestError(f"--images: not a folder: {images_dir}")
    if prompts is None:
        return "sidecar", _sidecar_rows(images_dir)
    prompts = Path(prompts)
    if not prompts.is_file():
        raise ManifestError(f"--prompts: file not found: {prompts}")
    records = _read_records(prompts)
    columns = {k for _, r in records if isinstance(r, dict) for k in r}
    if "image" in columns:
        return "manifest", _manifest_rows(images_dir, prompts.parent, prompts.name, records, allow_outside)
    if "prompt_id" in columns:
        return "longtext", _longtext_rows(images_dir, prompts.name, records)
    raise ManifestError(f"--prompts: {prompts} has neither an `image` column (manifest layout) nor a "
                        f"`prompt_id` column (LongText-Bench layout); columns: {sorted(columns)}")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it (PIL's decompression-bomb check applies)."""
    with Image.open(path) as image:
        return image.size


def fit_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`size` scaled down, aspect kept, to at most `max_pixels` pixels; `size` itself when it fits."""
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def load_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """The decoded RGB image, downsized (LANCZOS) to `fit_size` when it has more than `max_pixels` pixels;
    raises (OSError, ValueError, ...) for a missing, truncated or corrupt file."""
    with Image.open(path) as image:
        target = image.size if max_pixels is None else fit_size(image.size, max_pixels)
        if target != image.size:
            image.draft("RGB", target)  # JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers target
            return image.convert("RGB").resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        image.load()
        return image.convert("RGB")


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed record) per data line; a record that does not parse is an error string."""
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            return [(i + 2, _csv_record(r)) for i, r in enumerate(csv.DictReader(f))]
        if suffix not in (".jsonl", ".ndjson"):
            raise ManifestError(f"--prompts: {path.name}: expected a .jsonl or .csv file")
        records = []
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    records.append((number, f"invalid JSON: {e}"))
        return records


def _csv_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
    text = record.get("text")
    if isinstance(text, str):
        try:
            record["text"] = json.loads(text) if text.lstrip().startswith("[") else [text]
        except json.JSONDecodeError:
            record["text"] = [text]
    return record


def _problem(record: Any) -> str | None:
    """Why a parsed record cannot give a prompt and metadata, or None."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
        return "missing prompt"
    text = record.get("text")
    if text is not None and not (isinstance(text, str) or (
            isinstance(text, list) and all(isinstance(t, str) for t in text))):
        return f"`text` must be a string or a list of strings, got {text!r}"
    if record.get("task") is not None and not isinstance(record["task"], str):
        return f"`task` must be a string, got {record['task']!r}"
    return None


def _metadata(record: dict[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    meta = {k: v for k, v in record.items() if k not in drop and v is not None}
    if isinstance(meta.get("text"), str):
        meta["text"] = [meta["text"]]
    return meta


def _manifest_rows(images_dir: Path, manifest_dir: Path, name: str, records: list[tuple[int, Any]],
                   allow_outside: bool) -> list[Row]:
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for number, record in records:
        image = record.get("image") if isinstance(record, dict) else None
        if not isinstance(image, str) or not image.strip():
            why = _problem(record) if not isinstance(record, dict) else "missing image"
            rows.append(Row(f"{name}:{number}", None, None, error=f"line {number}: {why}"))
            continue
        if image in first_line:
            rows.append(Row(f"{name}:{number}", None, None,
                            error=f"line {number}: image {image!r} already listed on line {first_line[image]}"))
            continue
        first_line[image] = number
        path, missing = _find_image(image, images_dir, manifest_dir)
        escapes = not allow_outside and _escapes(image)
        problem = _problem(record) or (f"image {image!r} leads out of the images folder through '..' "
                                       "(--allow-outside allows it)" if escapes else missing)
        prompt = record["prompt"] if problem != "missing prompt" else None
        rows.append(Row(image, path, prompt, _metadata(record, ("image", "prompt")),
                        f"line {number}: {problem}" if problem else None))
    return rows


def _escapes(image: str) -> bool:
    """A relative path whose `..` climb above its folder, read as written (symlinks are not followed: a
    Hugging Face cache is symlinks into its blobs folder)."""
    return not Path(image).is_absolute() and os.path.normpath(image).split(os.sep)[0] == ".."


def _find_image(image: str, images_dir: Path, manifest_dir: Path) -> tuple[Path, str | None]:
    """(path, None) for the first of images_dir/image, manifest_dir/image that exists; else (the first
    candidate, why). An absolute `image` is taken as it is."""
    candidates = list(dict.fromkeys([images_dir / image, manifest_dir / image]))
    found = next((p for p in candidates if p.exists()), None)
    if found is not None:
        return found, None
    if Path(image).is_absolute():
        return candidates[0], f"image not found: {image}"
    if len(candidates) == 1:
        return candidates[0], f"image not found: {image!r} is not under --images ({images_dir})"
    return candidates[0], (f"image not found: {image!r} is neither under --images ({images_dir}) "
                           f"nor beside the manifest ({manifest_dir})")


def _longtext_rows(images_dir: Path, name: str, records: list[tuple[int, Any]]) -> list[Row]:
    by_id: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    for number, record in records:
        problem = _problem(record) or (None if isinstance(record.get("prompt_id"), (int, str))
                                       else "missing prompt_id")
        if problem:
            rows.append(Row(f"{name}:{number}", None, None, error=f"line {number}: {problem}"))
        else:
            by_id[str(record["prompt_id"])] = record
    for path in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        match = _LONGTEXT_NAME.match(path.name)
        record = by_id.get(match["id"]) if match else None
        if record is None:
            why = (f"no prompt with prompt_id {match['id']!r} in {name}" if match
                   else "name does not follow {prompt_id}_{k}.png")
            rows.append(Row(path.name, path, None, error=why))
        else:
            rows.append(Row(path.name, path, record["prompt"], _metadata(record, ("prompt",))))
    return rows


def _sidecar_rows(images_dir: Path) -> list[Row]:
    rows = []
    for path in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        key = path.relative_to(images_dir).as_posix()
        sidecar = path.with_suffix(".txt")
        prompt = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
        # The message names no file: the row's image says which, and alike errors read the same.
        why = f"no prompt: the .txt beside the image is {'empty' if sidecar.is_file() else 'missing'}"
        rows.append(Row(key, path, prompt or None, error=None if prompt else why))
    return rows
