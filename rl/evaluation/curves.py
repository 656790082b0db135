"""Reward, KL, per-reward and evaluation curves of one or several runs' metrics.jsonl, drawn into one PNG.

Panels: reward/mean, KL (kl/k3_mean), then one panel per reward found in any of the runs. A panel shows the
training batch's curve (`reward/<name>/mean`, one line per run, labelled by its directory name) and, where
the run evaluated held-out prompts, the evaluation's (`eval/reward/<name>/mean`, dashed with a marker per
evaluation; gold rewards have only this one); optionally a panel per reward-hacking monitor. `rl.train` draws
<run.dir>/curves.png at the end of every run, resumed ones included (`logging.curves`);
`scripts/plot_metrics.py` draws any set of runs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rl.evaluation.metrics import read_metrics  # noqa: E402

PER_REWARD = re.compile(r"^(?:eval/)?reward/([^/]+)/mean$")
EVAL = "eval/"


def panels(runs: dict[str, list[dict]], monitors: bool = False) -> list[tuple[str, list[str]]]:
    """(title, metric keys) per panel: the total reward, KL, then each reward found in any run, each with its
    evaluation twin; with `monitors`, then each `monitor/...` metric (and its `eval/` twin)."""
    keys = {k for records in runs.values() for r in records for k in r}
    names = sorted({m.group(1) for k in keys if (m := PER_REWARD.match(k))})
    layout = [("reward/mean", ["reward/mean", EVAL + "reward/mean"]), ("KL to the reference", ["kl/k3_mean"])]
    layout += [(f"reward/{n}/mean", [f"reward/{n}/mean", f"{EVAL}reward/{n}/mean"]) for n in names]
    if monitors:
        found = sorted({k.removeprefix(EVAL) for k in keys if k.removeprefix(EVAL).startswith("monitor/")}
                       - {"monitor/alerts"})
        layout += [(k, [k, EVAL + k]) for k in found]
    return layout


def series(records: list[dict], key: str, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` over the rows that hold a value for it. Training curves are smoothed over
    `window` steps; evaluations (sparse rows) are not."""
    steps = np.array([r["step"] for r in records])
    values = np.array([r.get(key) if r.get(key) is not None else np.nan for r in records], float)
    if not key.startswith(EVAL):
        values = smooth(values, window)
    present = np.isfinite(values)
    return steps[present], values[present]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over `window` steps that skips missing (NaN) values."""
    if window <= 1:
        return values
    kernel = np.ones(window)
    finite = np.isfinite(values)
    total = np.convolve(np.where(finite, values, 0), kernel, mode="same")
    count = np.convolve(finite.astype(float), kernel, mode="same")
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def smoothing_note(window: int) -> str:
    """What the curves show, written on the figure and printed, so a smoothed curve is never read as raw."""
    if window <= 1:
        return "raw per-step values"
    return f"training curves smoothed: moving average over {window} steps (evaluation points raw)"


def plot(paths: list[Path], out: Path, window: int = 1, monitors: bool = False) -> Path:
    """The curves of the runs whose metrics.jsonl are `paths` (one line each, labelled by its folder) into `out`;
    `window`: training curves' moving-average window in steps; `monitors`: add the monitors' panels."""
    runs = {f"{p.parent.name or p.stem}": read_metrics(p) for p in paths}
    layout = panels(runs, monitors)
    columns = min(3, len(layout))
    rows = math.ceil(len(layout) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, layout, strict=False):
        for label, records in runs.items():
            for key in keys:
                steps, values = series(records, key, window)
                if len(steps) and key.startswith(EVAL):
                    ax.plot(steps, values, "o--", label=f"{label} (eval)")
                elif len(steps):
                    ax.plot(steps, values, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(layout):]:
        ax.axis("off")
    fig.suptitle(smoothing_note(window), fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
