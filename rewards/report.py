"""report.html of `python -m rewards.score`: one self-contained static page that opens offline.

At the top: a histogram per reward and for the total, the mean of each per task (with row counts), how
many rows each gate sent to each reward and why, and the best and worst images per reward; then a table
of every row sortable by any column. Filters by task and by error apply to all of it. The page is drawn
by a small script (report_assets/report.js, inlined with its stylesheet) from the records embedded as
JSON, with a JPEG thumbnail per image (base64) cached under OUT_DIR/thumbs while scoring, so writing the
report never decodes the full images again.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from rewards.records import error_pattern
from rewards.store import json_default, write_atomic

THUMB_PX = 160
# Inside <script>, "</" ends the element and "<!--<script>" swallows the rest of the page; JSON's \u escapes keep
# every character the HTML parser reacts to out of the embedded data (they occur only inside JSON strings).
_HTML_SAFE_JSON = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
ASSETS = Path(__file__).parent / "report_assets"
# The ids report.js fills in; the browser test checks each one exists and has content.
SECTIONS = (("histograms", "Distribution per reward"), ("task-means", "Mean per task"),
            ("gates", "Gate routing: rows sent to each reward, and why"), ("extremes", "Best and worst images"),
            ("rows", "All rows (click a column header to sort)"))


def thumbnail_path(out_dir: Path, key: str) -> Path:
    return out_dir / "thumbs" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.jpg"


def save_thumbnail(image: Image.Image, out_dir: Path, key: str) -> None:
    """A JPEG thumbnail (longer side THUMB_PX) of a decoded image, for the reports."""
    path = thumbnail_path(out_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    thumb = image.copy()
    thumb.thumbnail((THUMB_PX, THUMB_PX))
    thumb.save(path, "JPEG", quality=75)


def thumbnail_base64(out_dir: Path, key: str, path: Path | None) -> str | None:
    """The cached thumbnail of `key` as base64, made from `path` when not cached; None when neither reads."""
    thumb = thumbnail_path(out_dir, key)
    if not thumb.is_file() and path is not None and path.is_file():
        try:
            with Image.open(path) as image:
                save_thumbnail(image.convert("RGB"), out_dir, key)
        except Exception:  # an unreadable image already carries its error in the row
            pass
    return base64.b64encode(thumb.read_bytes()).decode() if thumb.is_file() else None


def page(title: str, body: str, script: str = "", data: Any = None) -> str:
    """A complete HTML page with the shared stylesheet; `data` is embedded as JSON in <script id=data>."""
    blob = ""
    if data is not None:
        text = json.dumps(data, ensure_ascii=False, default=json_default, allow_nan=False).translate(_HTML_SAFE_JSON)
        blob = f"<script type='application/json' id='data'>{text}</script>"
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    code = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body><h2>{html.escape(title)}</h2>{body}{blob}{code}</body></html>")


def write_html(records: Sequence[Mapping[str, Any]], names: Sequence[str], out_dir: Path,
               paths: Mapping[str, Path], title: str = "Reward scores") -> Path:
    """OUT_DIR/report.html. paths: image key -> file, for thumbnails not cached while scoring."""
    rows = [_row(i, r, names, out_dir, paths.get(str(r.get("image")))) for i, r in enumerate(records)]
    sections = "".join(f"<h3>{html.escape(heading)}</h3><div id='{key}'></div>" for key, heading in SECTIONS)
    body = ("<noscript>This report is drawn by JavaScript; scores.csv holds the same table.</noscript>"
            "<div id='filters'>Task <select id='filter-task'></select> Error <select id='filter-error'></select>"
            f"<span id='counts'></span></div>{sections}")
    data = {"columns": [*names, "total"], "rows": rows}
    path = out_dir / "report.html"
    write_atomic(path, page(title, body, (ASSETS / "report.js").read_text(encoding="utf-8"), data))
    return path


def _row(i: int, record: Mapping[str, Any], names: Sequence[str], out_dir: Path, path: Path | None) -> dict:
    gates = record.get("gates")
    key = str(record.get("image", ""))
    return {"i": i, "image": key, "prompt": record.get("prompt"), "task": record.get("task"),
            "text": (gates or {}).get("text") or [],
            "scores": {n: _number(record.get(n)) for n in [*names, "total"]},
            "error": record.get("error"), "error_kind": error_pattern(record),
            "gate": {"task": gates.get("task"), "weights": gates.get("weights") or {},
                     "reasons": gates.get("reasons") or []} if gates else None,
            "details": record.get("details") or {}, "thumb": thumbnail_base64(out_dir, key, path)}


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None
