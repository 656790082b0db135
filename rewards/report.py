"""What `python -m rewards.score` leaves behind besides scores.jsonl: a CSV table, a printed summary per
reward and per task / category, and a self-contained HTML report.

The report embeds a small JPEG thumbnail per image (base64), cached under OUT_DIR/thumbs while scoring,
so writing it never decodes the full images again. Its table sorts by any column on a click (a few
lines of inline JavaScript; empty cells sort last) and shows prompts, target text and what the rewards
read (their `details`, e.g. the OCR text).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

THUMB_PX = 160
FIXED_COLUMNS = ("image", "prompt", "task")

_SORT_JS = """
function sortBy(th) {
  const body = th.closest('table').tBodies[0], col = th.cellIndex;
  const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  th.dataset.dir = dir;
  const value = r => { const c = r.cells[col];
    return c.dataset.v === undefined ? c.textContent : (c.dataset.v === '' ? null : parseFloat(c.dataset.v)); };
  const rows = [...body.rows].sort((a, b) => { const x = value(a), y = value(b);
    if (x === null || y === null) return (x === null) - (y === null);
    return (x < y ? -1 : x > y ? 1 : 0) * (dir === 'asc' ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}"""
_STYLE = ("body{font:13px sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
          "padding:3px 6px;vertical-align:top}th{cursor:pointer;background:#eee;position:sticky;top:0}"
          "td.p{max-width:28em;white-space:pre-wrap}td.n{text-align:right;font-family:monospace}td.e{color:#b00}small{color:#666}")


def thumbnail_path(out_dir: Path, key: str) -> Path:
    return out_dir / "thumbs" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.jpg"


def save_thumbnail(image: Image.Image, out_dir: Path, key: str) -> None:
    """A JPEG thumbnail (longer side THUMB_PX) of a decoded image, for the report."""
    path = thumbnail_path(out_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    thumb = image.copy()
    thumb.thumbnail((THUMB_PX, THUMB_PX))
    thumb.save(path, "JPEG", quality=75)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a scores.jsonl (a line that does not parse, e.g. cut by a crash, is skipped)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def write_csv(records: Sequence[Mapping[str, Any]], names: Sequence[str], path: Path) -> None:
    """One row per image: image, prompt, task, one column per reward, total, error, target text, and the
    manifest's other columns (lists and mappings as JSON)."""
    extra = list(dict.fromkeys(k for r in records for k in (r.get("meta") or {}) if k != "text"))
    columns = [*FIXED_COLUMNS, *names, "total", "error", "text", *extra]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            row = {k: _cell(v) for k, v in (r.get("meta") or {}).items()}
            row.update({k: r.get(k) for k in (*FIXED_COLUMNS, *names, "total", "error")})
            row["text"] = json.dumps((r.get("gates") or {}).get("text", []), ensure_ascii=False)
            writer.writerow(row)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def summarize(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """A printable summary: per reward (scored / applicable, failures, mean, std), then the mean of each
    reward and the total per task and per `category` (LongText-Bench) when present."""
    lines = [f"{len(records)} images, {sum(r.get('error') is not None for r in records)} with errors",
             f"{'reward':<14}{'scored':>8}{'applies':>9}{'failed':>8}{'mean':>10}{'std':>10}"]
    for name in [*names, "total"]:
        values = _values(records, name)
        gates = [r.get("gates") for r in records if r.get("gates") is not None]  # the rows that were scored
        applies = len(gates) if name == "total" else sum(name in g.get("weights", {}) for g in gates)
        failed = sum(name in (r.get("reward_errors") or {}) for r in records)
        lines.append(f"{name:<14}{len(values):>8}{applies:>9}{failed:>8}{_fmt(_mean(values)):>10}{_fmt(_std(values)):>10}")
    for group in ("task", "category"):
        keyed = [(r.get(group) or (r.get("meta") or {}).get(group), r) for r in records]
        if all(k is None for k, _ in keyed):
            continue
        lines.append(f"\nmean per {group}:")
        lines.append(f"{group:<16}{'n':>6}" + "".join(f"{n[:11]:>12}" for n in [*names, "total"]))
        for value in sorted({str(k) for k, _ in keyed}):
            members = [r for k, r in keyed if str(k) == value]
            means = "".join(f"{_fmt(_mean(_values(members, n))):>12}" for n in [*names, "total"])
            lines.append(f"{value[:15]:<16}{len(members):>6}{means}")
    return "\n".join(lines)


def _values(records: Iterable[Mapping[str, Any]], name: str) -> list[float]:
    return [r[name] for r in records if isinstance(r.get(name), (int, float))]


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def write_html(records: Sequence[Mapping[str, Any]], names: Sequence[str], out_dir: Path,
               images_dir: Path, title: str = "Reward scores") -> Path:
    """OUT_DIR/report.html; thumbnails come from the cache, else from the image file, else none."""
    header = ["#", "image", "prompt / target text", "task", *names, "total", "details", "error"]
    head = "".join(f"<th onclick='sortBy(this)'>{html.escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(records):
        cells = [f"<td class=n data-v='{i}'>{i}</td>", _image_cell(r, out_dir, images_dir), _prompt_cell(r),
                 f"<td>{html.escape(str(r.get('task') or ''))}</td>"]
        for name in [*names, "total"]:
            value = r.get(name)
            number = isinstance(value, (int, float))
            cells.append(f"<td class=n data-v='{value if number else ''}'>{f'{value:.4f}' if number else '–'}</td>")
        cells.append(f"<td class=p>{_details(r.get('details') or {})}</td>")
        cells.append(f"<td class=e>{html.escape(r.get('error') or '')}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SORT_JS}</script></head><body><h2>{html.escape(title)}</h2>"
            f"<p>{len(records)} images. Click a column header to sort.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _image_cell(record: Mapping[str, Any], out_dir: Path, images_dir: Path) -> str:
    key = str(record.get("image", ""))
    thumb = thumbnail_path(out_dir, key)
    if not thumb.is_file() and (images_dir / key).is_file():
        try:
            with Image.open(images_dir / key) as image:
                save_thumbnail(image.convert("RGB"), out_dir, key)
        except Exception:  # an unreadable image already carries its error in the row
            pass
    img = ""
    if thumb.is_file():
        img = f"<img src='data:image/jpeg;base64,{base64.b64encode(thumb.read_bytes()).decode()}'><br>"
    return f"<td>{img}<small>{html.escape(key)}</small></td>"


def _prompt_cell(record: Mapping[str, Any]) -> str:
    text = (record.get("gates") or {}).get("text") or []
    targets = "".join(f"<br><b>text:</b> {html.escape(t)}" for t in text)
    return f"<td class=p>{html.escape(str(record.get('prompt') or ''))}{targets}</td>"


def _details(details: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for name, values in details.items():
        for key, value in values.items():
            if isinstance(value, float):
                shown = f"{value:.4g}"
            else:
                shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            parts.append(f"<b>{html.escape(name)}.{html.escape(key)}:</b> {html.escape(shown)}")
    return "<br>".join(parts)
