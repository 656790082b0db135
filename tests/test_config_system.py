"""The config system: overrides, component building, and a validator that reports every problem by key."""

import dataclasses
import sys
import textwrap
from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Gt, Interval

from core.components import instantiate, validate_component
from core.config import ConfigError, load_config
from core.paths import LocalPath, config_dirs, resolve_local_path
from core.schema import build_section, validate_section


class Scorer:
    """A component with a required weights path, used by the tests below."""

    def __init__(self, weights: LocalPath, scale: float = 1.0, device: str | None = None):
        self.weights, self.scale, self.device = weights, scale, device


@dataclasses.dataclass
class Section:
    """dir: required. steps: an int. mode: a choice. limit: optional float."""

    dir: str
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    limit: float | None = None


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_overrides_merge_and_create_keys(tmp_path):
    path = write(tmp_path, """
        a: {b: 1, c: x}
    """)
    cfg = load_config(path, ["a.b=5", "a.d=[1,2]", "e=null"])
    assert cfg.a.b == 5 and cfg.a.c == "x" and list(cfg.a.d) == [1, 2] and cfg.e is None


def test_bad_override_and_bad_yaml_are_config_errors(tmp_path):
    path = write(tmp_path, "a: 1\n")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["a"])
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(write(tmp_path, "a: [1\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_config_builds_on_its_base(tmp_path):
    """`_base_` is relative to the file; mappings merge, lists and scalars replace, bases chain."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("a: {b: 1, c: [1, 2]}\nd: ${a.b}\nkeep: x\n")
    (tmp_path / "sub" / "mid.yaml").write_text("_base_: ../root.yaml\na: {c: [3]}\n")
    (tmp_path / "sub" / "top.yaml").write_text("_base_: mid.yaml\na: {b: 7}\n")
    cfg = load_config(tmp_path / "sub" / "top.yaml", ["keep=y"])
    assert "_base_" not in cfg
    assert cfg.a.b == 7 and list(cfg.a.c) == [3] and cfg.d == 7 and cfg.keep == "y"


def test_a_missing_or_circular_base_is_a_config_error(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="builds on it again"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope.yaml \(the _base_ of .*c.yaml\)"):
        load_config(tmp_path / "c.yaml")


def test_validator_lists_every_problem_with_its_dotted_key(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    path = write(tmp_path, f"""
        comps:
          missing:
            _component_: test_config_system.Scorer
            weights: ???
          typo: {{_component_: test_config_system.Scorer, weights: {weights}, scael: 2}}
          absent_file: {{_component_: test_config_system.Scorer, weights: {tmp_path}/nope.pt}}
          bad_import: {{_component_: no_such_module.Thing}}
          unset: {{_component_: test_config_system.Scorer}}
          good: {{_component_: test_config_system.Scorer, weights: {weights}}}
    """)
    cfg = load_config(path)
    problems = [p for name in cfg.comps for p in validate_component(cfg.comps[name], f"comps.{name}")]
    assert len(problems) == 5, problems
    assert problems[0].startswith("comps.missing.weights: required value is missing")
    assert problems[1].startswith("comps.typo.scael: unknown argument")
    assert problems[2].startswith("comps.absent_file.weights: file or folder not found")
    assert problems[3].startswith("comps.bad_import._component_:")
    assert problems[4].startswith("comps.unset.weights: required argument")
    message = str(ConfigError(problems))
    assert "5 problem(s)" in message and all(p in message for p in problems)


class Source:
    def __init__(self, paths: LocalPath | list[LocalPath]):
        self.paths = paths


def test_lists_of_paths_are_checked_item_by_item(tmp_path):
    node = {"_component_": "test_config_system.Source", "paths": [str(tmp_path), str(tmp_path / "gone.jsonl")]}
    assert validate_component(node, "prompts") == [f"prompts.paths[1]: file or folder not found: {tmp_path}/gone.jsonl"]
    assert validate_component({**node, "paths": str(tmp_path)}, "prompts") == []


def test_provided_arguments_are_not_required():
    assert validate_component({"_component_": "test_config_system.Scorer"}, "x", provided=["weights"]) == []


def test_instantiate_builds_nested_components_and_labels_errors(tmp_path):
    node = {"_component_": "test_config_system.Scorer", "weights": str(tmp_path),
            "device": {"_component_": "builtins.str", "object": "cpu"}}
    built = instantiate(node, "r", scale=3.0)
    assert built.device == "cpu" and built.scale == 3.0
    with pytest.raises(ConfigError, match=r"r: TypeError"):
        instantiate({"_component_": "test_config_system.Scorer", "nope": 1}, "r")


def test_components_resolve_from_the_working_directory(tmp_path, monkeypatch):
    source = "class Thing:\n    def __init__(self, n: int = 1):\n        self.n = n\n"
    (tmp_path / "user_mod_cfgtest.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    assert instantiate({"_component_": "user_mod_cfgtest.Thing", "n": 4}).n == 4


def test_class_methods_resolve_as_components():
    node = {"_component_": "collections.OrderedDict.fromkeys", "iterable": ["a"]}
    assert list(instantiate(node)) == ["a"]


def test_sections_report_unknown_missing_and_mistyped_keys():
    problems = validate_section({"steps": "ten", "mode": "c", "limit": "x", "extra": 1}, Section, "s")
    assert sorted(problems) == sorted([
        "s.extra: unknown key (accepted: dir, steps, mode, limit)",
        "s.dir: required value is missing",
        "s.steps: expected int, got str 'ten'",
        "s.mode: must be one of ['a', 'b'], got 'c'",
        "s.limit: expected float, got str 'x'",
    ])
    assert validate_section({"dir": "d", "steps": 3, "limit": 2}, Section, "s") == []
    assert build_section({"dir": "d", "limit": 2}, Section) == Section(dir="d", limit=2)


def test_hf_paths_come_only_from_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        resolve_local_path("hf://org/repo/model.pt", "rewards.hpsv2.checkpoint")
    # The cache layout huggingface_hub writes: refs/main names the snapshot holding the file.
    repo = tmp_path / "models--org--repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.pt").write_bytes(b"w")
    assert resolve_local_path("hf://org/repo/model.pt", "k").endswith("snapshots/abc123/model.pt")


# ---------------------------------------------------------------------------------------------
# Where modules and relative paths are looked up; unset sources; value ranges


def test_relative_paths_resolve_from_the_working_directory_then_the_config_folders(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    (tmp_path / "exp").mkdir()
    (tmp_path / "base" / "data.txt").write_text("x")
    (tmp_path / "base" / "base.yaml").write_text("a: 1\n")
    (tmp_path / "exp" / "mine.yaml").write_text("_base_: ../base/base.yaml\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    load_config(tmp_path / "exp" / "mine.yaml")
    assert config_dirs() == [str(tmp_path / "exp"), str(tmp_path / "base")]
    assert resolve_local_path("data.txt", "k") == str(tmp_path / "base" / "data.txt")
    (tmp_path / "elsewhere" / "data.txt").write_text("y")
    assert resolve_local_path("data.txt", "k") == "data.txt"  # the working directory comes first
    with pytest.raises(FileNotFoundError) as error:
        resolve_local_path("gone.txt", "prompts.paths[0]")
    message = str(error.value)
    assert message.startswith("prompts.paths[0]: file or folder not found: gone.txt")
    assert all(str(folder) in message for folder in (tmp_path / "elsewhere", tmp_path / "exp", tmp_path / "base"))


def test_components_resolve_from_the_config_folder_and_name_the_folders_searched(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "user_mod_beside_yaml.py").write_text("class Thing:\n    n = 7\n")
    (tmp_path / "cfg" / "mine.yaml").write_text("thing: {_component_: user_mod_beside_yaml.Thing}\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = load_config(tmp_path / "cfg" / "mine.yaml")
    assert validate_component(cfg.thing, "thing") == [] and instantiate(cfg.thing).n == 7
    problems = validate_component({"_component_": "no_such_user_mod.Thing"}, "rewards.mine")
    assert len(problems) == 1 and problems[0].startswith("rewards.mine._component_: cannot import")
    assert str(tmp_path / "cwd") in problems[0] and str(tmp_path / "cfg") in problems[0]
    assert "PYTHONPATH" in problems[0]


def test_an_unset_value_is_reported_once_naming_the_keys_that_interpolate_it(tmp_path):
    path = write(tmp_path, f"""
        paths:
          weights: ???
          other: ???
        a: {{_component_: test_config_system.Scorer, weights: "${{paths.weights}}"}}
        b: {{_component_: test_config_system.Scorer, weights: "${{paths.weights}}"}}
        c: {{_component_: test_config_system.Scorer, weights: "${{paths.other}}"}}
        d: {{_component_: test_config_system.Scorer, weights: {tmp_path}/nope.pt}}
    """)
    cfg = load_config(path)
    problems = [p for key in "abcd" for p in validate_component(cfg[key], key)]
    error = ConfigError(problems)
    assert error.problems == [
        "paths.weights: required value is missing (???); interpolated by a.weights, b.weights",
        "paths.other: required value is missing (???); interpolated by c.weights",
        f"d.weights: file or folder not found: {tmp_path}/nope.pt"]
    assert "3 problem(s)" in str(error)


@dataclasses.dataclass
class Ranged:
    """count >= 1; rate in (0, 1]; limit > 0 or null."""

    count: Annotated[int, Ge(1)] = 1
    rate: Annotated[float, Interval(gt=0, le=1)] = 0.5
    limit: Annotated[float, Gt(0)] | None = None


def test_ranges_are_checked_with_the_types():
    problems = validate_section({"count": 0, "rate": 1.5, "limit": -2}, Ranged, "r")
    assert problems == ["r.count: must be >= 1, got 0", "r.rate: must be > 0 and <= 1, got 1.5",
                        "r.limit: must be > 0, got -2"]
    assert validate_section({"count": "x", "rate": float("nan"), "limit": None}, Ranged, "r") == [
        "r.count: expected int, got str 'x'", "r.rate: must be a finite number, got nan"]
    assert validate_section({"count": 3, "rate": 1, "limit": 0.1}, Ranged, "r") == []
