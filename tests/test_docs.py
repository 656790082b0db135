"""The docs site: it builds with `mkdocs build --strict` (offline: a broken link, anchor or missing page fails), its
config reference documents every key, and the commands it marks `<!-- doc-test -->` run as written.

A marked block is a fenced `bash` block right after the marker; it runs with `bash -euo pipefail` in a scratch
folder that links the checkout's `configs/`, `prompts/` and `scripts/`, with `.venv/bin` first on PATH, after every
`<!-- example: NAME -->` block of the docs is written there as NAME (`/path/to/xomni-rl` in them is the checkout).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rl.evaluation.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "hooks"))
import config_reference  # noqa: E402

FENCE = r"```(?:\w+)?\n(.*?)```"
MARKED = re.compile(r"<!-- doc-test -->\n```bash\n(.*?)```", re.S)
EXAMPLE = re.compile(r"<!-- example: ([\w.]+) -->\n" + FENCE, re.S)
CHECKOUT = "/path/to/xomni-rl"


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def marked_blocks() -> list[tuple[str, str]]:
    """(page:line, the block's commands) for every marked block."""
    blocks = []
    for page in pages():
        text = page.read_text()
        for match in MARKED.finditer(text):
            blocks.append((f"{page.relative_to(DOCS)}:{text[:match.start()].count(chr(10)) + 1}", match.group(1)))
    return blocks


def examples() -> dict[str, str]:
    files = {}
    for page in pages():
        for name, body in EXAMPLE.findall(page.read_text()):
            assert name not in files, f"two examples named {name}"
            files[name] = body.replace(CHECKOUT, str(ROOT))
    return files


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "mkdocs"), "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    config_page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "trainer.loss" in config_page and "rewards.ocr.OCRReward" in config_page  # the hook filled the page
    assert "usage: python -m rl.train" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()


def test_every_config_key_and_component_argument_has_a_doc():
    assert config_reference.undocumented() == []


def test_the_reference_covers_every_section_and_component_the_shipped_configs_use():
    listed = {path for paths in config_reference.COMPONENTS.values() for path in paths}
    sections = {key.split(".")[0] for key, _ in config_reference.SECTIONS}
    components = {"model", "prompts", "rewards"}  # sections made of components, each listed by import path
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = OmegaConf.load(config)
        unknown = set(cfg) - sections - components - set(config_reference.TOP_LEVEL) - {"_base_", "_remove_"}
        assert not unknown, (config.name, unknown)
        for name in _component_names(OmegaConf.to_container(cfg)):
            assert name in listed or name.startswith(tuple(config_reference.EXTERNAL)), (config.name, name)


def _component_names(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["_component_"]] if "_component_" in node else []
        return own + [name for value in node.values() for name in _component_names(value)]
    if isinstance(node, list):
        return [name for value in node for name in _component_names(value)]
    return []


def test_the_marker_finds_the_blocks_the_docs_mean_to_run():
    ids = [where for where, _ in marked_blocks()]
    assert len(ids) >= 6 and {"rewards/custom.md", "getting-started.md"} <= {i.split(":")[0] for i in ids}
    assert {"docs_reward.py", "docs_reward.yaml", "mine.yaml"} <= set(examples())


@pytest.mark.parametrize("where, commands", marked_blocks(), ids=[where for where, _ in marked_blocks()])
def test_a_marked_command_block_runs_as_written(where, commands, tmp_path):
    for name, body in examples().items():
        (tmp_path / name).write_text(body)
    for folder in ("configs", "prompts", "scripts"):  # the shipped configs name ../prompts/data/ from configs/
        (tmp_path / folder).symlink_to(ROOT / folder)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{where}\n{commands}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    if "--out brightness" in commands:  # the worked reward example scored the nine sample images
        records = [json.loads(line) for line in (tmp_path / "brightness" / "scores.jsonl").read_text().splitlines()]
        assert len(records) == 9 and all(0 <= r["brightness"] == r["total"] <= 1 for r in records)
        assert all(r["details"]["brightness"]["mean"] == r["brightness"] for r in records)  # gamma 1
    if "run.dir=runs/brightness" in commands:  # ... and trained in its reward actor
        (metrics,) = read_metrics(tmp_path / "runs" / "brightness" / "metrics.jsonl")
        assert 0 < metrics["reward/brightness/mean"] <= 1 and metrics["reward/brightness/count"] == 4
