"""The trust the project asks for, said where a user looks: `--help` of the commands that run configs and
load checkpoints, and the docs' Security page, which names a test for each promise it lists."""

import re
from pathlib import Path

import rewards.score
import rl.train

ROOT = Path(__file__).resolve().parents[1]


def test_help_says_configs_and_checkpoints_are_code():
    train = " ".join(rl.train.build_parser().format_help().split())
    assert "configs and checkpoints are code" in train and ".metadata" in train and "pickle" in train
    score = " ".join(rewards.score.build_parser().format_help().split())
    assert "a config is code" in score and "_component_" in score and "--allow-outside" in score


def test_the_security_page_names_tests_that_exist():
    page = (ROOT / "docs" / "security.md").read_text()
    named = re.findall(r"`tests/(test_\w+\.py)::(test_\w+)`", page)
    assert len(named) >= 5
    for module, test in named:
        assert f"def {test}(" in (ROOT / "tests" / module).read_text(), (module, test)
