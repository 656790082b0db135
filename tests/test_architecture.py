"""The structure of the code as rules: the import contracts of `.importlinter` (layers core <- rewards, prompts <-
rl; rewards and prompts independent; no import cycles inside any package), imports that load nothing heavy, and
files short enough to read."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "rewards", "prompts", "rl")
MAX_LINES = 450


def loaded_modules(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--config", str(REPO / ".importlinter")], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("statement", ["import rewards.score", "import rewards.ensemble", "import prompts.synth",
                                       "import prompts.sources"])
def test_the_reward_library_and_the_prompt_tools_load_no_module_of_rl(statement):
    assert not {m for m in loaded_modules(statement) if m == "rl" or m.startswith("rl.")}


def test_importing_a_package_patches_nothing_and_loads_nothing_heavy():
    """The torchvision fix needs torch, so a package that imports no torch patches nothing."""
    modules = loaded_modules("import core, rewards, prompts, rl")
    assert not {m for m in modules if m.split(".")[0] in ("torch", "torchvision", "transformers", "ray")}


def test_no_file_is_longer_than_a_reader_can_hold():
    long = {str(p.relative_to(REPO)): n for package in PACKAGES for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
