"""Make the README's offline-scoring figures: scripts/figures/report_top.png and the printed compare table.

    python scripts/make_scoring_docs.py [--work DIR] [--png scripts/figures/report_top.png]

Renders the "before" and "after" sample sets (scripts/make_sample_images.py --stage), scores each with
configs/rewards.yaml's weight-free rewards (`--only quality,ocr`, the real RapidOCR models), runs
`python -m rewards.compare` on them (its table is printed), and screenshots the top of the "before"
report in headless Chromium (scripts/headless_chromium.py) at 1280 x 1100 CSS pixels.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from headless_chromium import chromium, console_errors, missing
from make_sample_images import make_policy_samples

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> None:
    """Run `python -m ...` in `cwd` with this repository importable; stop on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): python -m {' '.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="folder for the samples and scores (default: a temporary folder)")
    parser.add_argument("--png", default=str(ROOT / "scripts" / "figures" / "report_top.png"), help="screenshot path")
    args = parser.parse_args()
    if missing():
        sys.exit(f"no headless Chromium: {missing()}")
    work = Path(args.work or tempfile.mkdtemp(prefix="scoring_docs_"))
    for stage in ("before", "after"):
        manifest = make_policy_samples(work / stage, stage)
        run("rewards.score", "--images", str(manifest.parent), "--prompts", str(manifest), "--config",
            str(ROOT / "configs" / "rewards.yaml"), "--out", str(work / f"scores_{stage}"), "--only", "quality,ocr")
    run("rewards.compare", "scores_before", "scores_after", "--out", "compare", cwd=work)  # short paths in its table
    png = Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with chromium(1280, 1100) as driver:
        driver.get((work / "scores_before" / "report.html").as_uri())
        errors = console_errors(driver)
        if errors:
            sys.exit(f"report.html has script errors: {errors}")
        driver.save_screenshot(str(png))
    print(f"wrote {png}; outputs in {work}")


if __name__ == "__main__":
    main()
