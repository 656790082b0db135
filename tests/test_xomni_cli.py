"""`xomni-rl`, the console script of pyproject.toml (rl/cli.py): it lists its subcommands, each subcommand is its
module's command line (same help but the program name, same output), and an override written like a flag
(`--trainer.lr=1e-6`) is refused as such in every command that takes overrides.

The script is the real one pip wrote into the environment's bin folder (`pip install -e .`, which
scripts/setup.sh runs); the subprocesses run from a folder outside the repository.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rl.cli import SUBCOMMANDS
from rl.cli import main as xomni_rl
from rl.train_config import TOP_LEVEL

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "xomni-rl"
TINY = str(ROOT / "configs" / "tiny.yaml")
PLAN = [TINY, "--nodes", "1", "--gpus-per-node", "1", "--gpu-memory-gib", "80"]
ENV = {**os.environ, "COLUMNS": "100", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
TAKES_OVERRIDES = ["train", "plan", "generate", "evaluate", "score"]


def run(command, cwd):
    return subprocess.run([str(c) for c in command], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def same_text(a: str, b: str) -> bool:
    """Equal but for line wrapping (argparse wraps the usage to the program name's length)."""
    return a.split() == b.split()


@pytest.fixture(autouse=True)
def columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")


def test_the_console_script_lists_every_subcommand(tmp_path):
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: run `pip install -e .` (scripts/setup.sh does)"
    done = run([SCRIPT, "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    for name, (module, _) in SUBCOMMANDS.items():
        assert f"    {name} " in done.stdout and f"python -m {module}" in done.stdout, name
    assert sorted(SUBCOMMANDS) == sorted(["train", "plan", "generate", "evaluate", "score", "compare", "export",
                                          "plot"])
    unknown = run([SCRIPT, "fit"], tmp_path)
    assert unknown.returncode == 2 and "invalid choice: 'fit'" in unknown.stderr


def test_a_subcommand_is_its_module_help_and_output_included(tmp_path):
    """`xomni-rl plan` and `python -m rl.plan` on configs/tiny.yaml: one plan, printed the same."""
    help_script, help_module = run([SCRIPT, "plan", "--help"], tmp_path), run(
        [sys.executable, "-m", "rl.plan", "--help"], tmp_path)
    assert help_script.returncode == help_module.returncode == 0
    assert help_script.stdout.startswith("usage: xomni-rl plan ")
    assert same_text(help_script.stdout.replace("xomni-rl plan", "python -m rl.plan"), help_module.stdout)
    script, module = run([SCRIPT, "plan", *PLAN], tmp_path), run([sys.executable, "-m", "rl.plan", *PLAN], tmp_path)
    assert script.returncode == module.returncode == 0, script.stderr[-2000:]
    assert "verdict: fits" in script.stdout and script.stdout == module.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_help_equals_its_module_help(name, capsys):
    module = importlib.import_module(SUBCOMMANDS[name][0])
    with pytest.raises(SystemExit) as exit_info:
        xomni_rl([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: xomni-rl {name} ")
    own = module.build_parser()  # built outside the dispatcher: the module's own program name
    assert same_text(text.replace(f"usage: xomni-rl {name}", f"usage: {own.prog}", 1), own.format_help())


def test_a_dashed_override_is_refused_by_the_real_script(tmp_path):
    done = run([SCRIPT, "train", TINY, "--trainer.optimizer.lr=1e-6"], tmp_path)
    assert done.returncode == 2
    assert ("overrides are key=value, without dashes: write trainer.optimizer.lr=1e-6, not "
            "--trainer.optimizer.lr=1e-6") in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything ran


@pytest.mark.parametrize("name", TAKES_OVERRIDES)
@pytest.mark.parametrize("arg", ["--trainer.lr=1e-6", "--resume=auto", "--rollout.grid", "--run.dir=x"])
def test_every_command_with_overrides_refuses_dashed_ones(name, arg, capsys):
    with pytest.raises(SystemExit) as exit_info:
        xomni_rl([name, TINY, arg])
    assert exit_info.value.code == 2
    assert "overrides are key=value, without dashes" in capsys.readouterr().err


def test_flags_and_their_abbreviations_are_not_taken_for_overrides(capsys):
    """`--seed=3` is rl.generate's flag, `--samples-per=2` an abbreviation argparse expands; `--samples` is
    rl.evaluate's deprecated spelling of --samples-per-prompt."""
    from rl.evaluate import build_parser as evaluate_parser
    from rl.generate import build_parser as generate_parser

    argv = [TINY, "--prompts", "p.txt", "--out", "o", "--seed=3", "--samples-per=2", "rollout.grid=[1,3]"]
    args = generate_parser().parse_intermixed_args(argv)
    assert (args.seed, args.samples_per_prompt, args.overrides) == (3, 2, ["rollout.grid=[1,3]"])
    args = evaluate_parser().parse_intermixed_args([TINY, "--samples", "4"])
    assert args.samples_per_prompt == 4
    assert "warning: --samples is deprecated; use --samples-per-prompt" in capsys.readouterr().err


def test_help_lists_the_config_sections_each_command_reads():
    from rewards.score import build_parser as score_parser
    from rl.generate import build_parser as generate_parser
    from rl.train import build_parser as train_parser

    def sections(parser):
        text = " ".join(parser.format_help().split())
        return text.split("top-level sections: ")[1].split(" ")

    assert [s.strip(",") for s in sections(train_parser())][:len(TOP_LEVEL)] == sorted(TOP_LEVEL)
    assert [s.strip(",") for s in sections(generate_parser())][:3] == ["model", "rollout", "paths"]
    assert [s.strip(",") for s in sections(score_parser())][:4] == ["rewards", "ensemble", "gating", "paths"]
