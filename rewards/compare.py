"""Paired comparison of two scoring outputs over the same prompts: is B better than A?

    python -m rewards.compare OUT_A OUT_B [--out DIR] [--match auto|sample|image] [--resamples N] [--seed S]

OUT_A and OUT_B are folders written by `python -m rewards.score` (e.g. samples of the policy before and after
RL), or by `python -m rl.evaluate` (whose --compare runs this). Rows are matched by prompt and sample index (the
manifest's `sample` column, as rl.generate writes it) when every row of both has one, else by image name; rows
without a partner are counted and listed, never dropped silently. For each reward in both outputs and for the
total, over the matched rows where both values are numbers: the means, their difference B - A with a 95%
bootstrap confidence interval that resamples prompts (the samples of one prompt move together), and B's win rate
(the share of pairs where B scores higher, ties counting half).

Prints a table and writes DIR/compare.json:
    {"matched": n, "unmatched_a": [image, ...], "unmatched_b": [...],
     "rewards": {name: {"n": k, "mean_a": x, "mean_b": y, "diff": y - x, "ci95": [lo, hi], "win_rate": w}}}
(null for the numbers of a reward with no pair) and DIR/compare.html with the largest differences side
by side. Exit status: 0 when done, 2 when an output cannot be read or the command line is wrong.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.cli import CommandParser, prog
from rewards.records import reward_names
from rewards.report import page, thumbnail_base64
from rewards.store import SCORES, read_scores, write_atomic
from rewards.summary import fmt

TOP = 8


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog("python -m rewards.compare"), description="Compare two scoring outputs image by image (B - A).",
        epilog=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_a", metavar="OUT_A", help="scoring output folder A (the baseline)")
    parser.add_argument("out_b", metavar="OUT_B", help="scoring output folder B")
    parser.add_argument("--out", default="compare", metavar="DIR", help="where compare.json/.html go (./compare)")
    parser.add_argument("--match", choices=("auto", "sample", "image"), default="auto",
                        help="pair rows by prompt and sample index, by image name, or auto (sample when every "
                             "row has a `sample`)")
    parser.add_argument("--resamples", type=int, default=10_000, metavar="N", help="bootstrap resamples (10000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (0)")
    return parser


@dataclass
class Pairs:
    """Rows of A and B matched by key. pairs: (record A, record B) in A's order; by: how rows were matched."""

    pairs: list[tuple[dict[str, Any], dict[str, Any]]]
    unmatched_a: list[str]
    unmatched_b: list[str]
    by: str


def match(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], how: str = "auto") -> Pairs:
    """Pair the rows of two outputs; a key seen twice on one side is told apart by its occurrence."""
    if how == "auto":
        has_sample = all(r.get("prompt") is not None and "sample" in (r.get("meta") or {}) for r in [*a, *b])
        how = "sample" if has_sample and a and b else "image"

    def keyed(records: Sequence[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
        seen: dict[Any, int] = defaultdict(int)
        out = {}
        for r in records:
            base = (r.get("prompt"), (r.get("meta") or {}).get("sample")) if how == "sample" else r.get("image")
            out[(base, seen[base])] = r
            seen[base] += 1
        return out

    ka, kb = keyed(a), keyed(b)
    return Pairs([(ka[k], kb[k]) for k in ka if k in kb], [str(ka[k]["image"]) for k in ka if k not in kb],
                 [str(kb[k]["image"]) for k in kb if k not in ka], how)


def paired_stats(values_a: np.ndarray, values_b: np.ndarray, clusters: Sequence[Any], resamples: int,
                 seed: int) -> dict[str, Any]:
    """Means, B - A, a percentile bootstrap 95% interval of B - A resampling clusters (prompts) with
    replacement, and B's win rate (ties half). values_*: float [n], finite; clusters: n prompt keys."""
    n = len(values_a)
    if n == 0:
        return {"n": 0, "mean_a": None, "mean_b": None, "diff": None, "ci95": None, "win_rate": None}
    diff = values_b - values_a                                                      # [n]
    ids = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)[1]  # [n] cluster index
    sums, counts = np.bincount(ids, weights=diff), np.bincount(ids).astype(float)  # [P] each
    draw = np.random.default_rng(seed).integers(0, len(sums), (resamples, len(sums)))  # [R, P]
    boot = sums[draw].sum(1) / counts[draw].sum(1)                                   # [R] mean of B - A
    lo, hi = np.percentile(boot, [2.5, 97.5])
    wins = (diff > 0).sum() + 0.5 * (diff == 0).sum()
    return {"n": n, "mean_a": float(values_a.mean()), "mean_b": float(values_b.mean()), "diff": float(diff.mean()),
            "ci95": [float(lo), float(hi)], "win_rate": float(wins / n)}


def compare(pairs: Pairs, names: Sequence[str], resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """compare.json's content (see the module docstring) for rewards `names` (include "total")."""
    rewards = {}
    for name in names:
        both = [(ra, rb) for ra, rb in pairs.pairs if _number(ra.get(name)) and _number(rb.get(name))]
        values_a = np.asarray([ra[name] for ra, _ in both], dtype=np.float64)
        values_b = np.asarray([rb[name] for _, rb in both], dtype=np.float64)
        clusters = [ra.get("prompt") or ra.get("image") for ra, _ in both]
        rewards[name] = paired_stats(values_a, values_b, clusters, resamples, seed)
    return {"matched": len(pairs.pairs), "unmatched_a": pairs.unmatched_a, "unmatched_b": pairs.unmatched_b,
            "rewards": rewards}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def table(result: Mapping[str, Any], prompts: int) -> str:
    """The printed table: one line per reward."""
    lines = [f"{'reward':<14}{'n':>6}{'mean A':>10}{'mean B':>10}{'B - A':>10}   {'95% CI':<21}{'B wins':>8}"]
    for name, s in result["rewards"].items():
        ci = f"[{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}]" if s["ci95"] else "-"
        diff = f"{s['diff']:+.4f}" if s["diff"] is not None else "-"
        wins = f"{100 * s['win_rate']:.1f}%" if s["win_rate"] is not None else "-"
        lines.append(f"{name:<14}{s['n']:>6}{fmt(s['mean_a']):>10}{fmt(s['mean_b']):>10}{diff:>10}   {ci:<21}{wins:>8}")
    lines.append(f"(95% CI: bootstrap over {prompts} prompts; B wins: share of pairs where B scores higher, ties half)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outs = {"OUT_A": Path(args.out_a), "OUT_B": Path(args.out_b)}
    problems = [f"{k}: {p.resolve()} does not exist" if not p.exists() else
                f"{k}: no {SCORES} in {p.resolve()} (expected a folder written by python -m rewards.score)"
                for k, p in outs.items() if not (p / SCORES).is_file()]
    if args.resamples < 1:
        problems.append(f"--resamples: must be >= 1, got {args.resamples}")
    if problems:
        print("error: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    a, b = read_scores(outs["OUT_A"]), read_scores(outs["OUT_B"])
    pairs = match(a, b, args.match)
    in_a, in_b = reward_names(a), reward_names(b)
    names = [n for n in in_a if n in in_b] + ["total"]
    result = compare(pairs, names, args.resamples, args.seed)
    prompts = len({ra.get("prompt") or ra.get("image") for ra, _ in pairs.pairs})
    how = "prompt and sample index" if pairs.by == "sample" else "image name"
    print(f"A: {outs['OUT_A']} ({len(a)} rows)  B: {outs['OUT_B']} ({len(b)} rows)  matched {len(pairs.pairs)} by "
          f"{how}; unmatched: {len(pairs.unmatched_a)} in A, {len(pairs.unmatched_b)} in B")
    summary = table(result, prompts)
    print(summary)
    for side, missing in (("A", pairs.unmatched_a), ("B", pairs.unmatched_b)):
        if missing:
            shown = ", ".join(missing[:20]) + (f", ... ({len(missing) - 20} more)" if len(missing) > 20 else "")
            print(f"unmatched in {side} ({len(missing)}): {shown}")
    only = sorted(set(in_a) ^ set(in_b))
    if only:
        print(f"not compared (in one output only): {', '.join(only)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out / "compare.html", compare_html(result, pairs, outs["OUT_A"], outs["OUT_B"], summary))
    print(f"wrote {out / 'compare.json'}, {out / 'compare.html'}")
    return 0


def compare_html(result: Mapping[str, Any], pairs: Pairs, out_a: Path, out_b: Path, summary: str) -> str:
    """The table, then per reward the TOP pairs with the largest |B - A|, their images side by side."""
    body = [f"<p>A: {html.escape(str(out_a))}<br>B: {html.escape(str(out_b))}<br>{result['matched']} matched rows; "
            f"unmatched: {len(pairs.unmatched_a)} in A, {len(pairs.unmatched_b)} in B</p>",
            f"<pre id='summary'>{html.escape(summary)}</pre>"]
    for side, missing in (("A", pairs.unmatched_a), ("B", pairs.unmatched_b)):
        if missing:
            body.append(f"<p><b>unmatched in {side}:</b> {html.escape(', '.join(missing))}</p>")
    for name in result["rewards"]:
        both = [(ra, rb) for ra, rb in pairs.pairs if _number(ra.get(name)) and _number(rb.get(name))]
        both.sort(key=lambda p: -abs(p[1][name] - p[0][name]))
        rows = "".join(_pair_row(ra, rb, name, out_a, out_b) for ra, rb in both[:TOP])
        body.append(f"<h3>{html.escape(name)}: largest differences</h3><table class='pairs'><thead><tr><th>prompt</th>"
                    f"<th>A</th><th>B</th><th>B - A</th></tr></thead><tbody>{rows}</tbody></table>")
    return page("Paired comparison (B - A)", "".join(body))


def _pair_row(ra: Mapping[str, Any], rb: Mapping[str, Any], name: str, out_a: Path, out_b: Path) -> str:
    diff = rb[name] - ra[name]
    cells = []
    for record, out in ((ra, out_a), (rb, out_b)):
        thumb = thumbnail_base64(out, str(record["image"]), None)
        img = f"<img src='data:image/jpeg;base64,{thumb}'><br>" if thumb else ""
        cells.append(f"<td>{img}<b>{record[name]:.4f}</b><br><small>{html.escape(str(record['image']))}</small></td>")
    return (f"<tr><td class=p>{html.escape(str(ra.get('prompt') or ''))}</td>{''.join(cells)}"
            f"<td class='n {'up' if diff > 0 else 'down'}'>{diff:+.4f}</td></tr>")


if __name__ == "__main__":
    sys.exit(main())
