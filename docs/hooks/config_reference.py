"""The configuration reference page, generated from the code at every docs build (an MkDocs hook).

Plain sections come from their dataclasses (each field's type, default and the string under it); components come
from the signatures of the built-in classes and functions and the `Args:` sections of their docstrings. The page
`docs/reference/config.md` holds a marker that this hook replaces; `tests/test_docs.py` checks that every key has
a doc and that every component a shipped config names is listed here.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from typing import Any

MARKER = "<!-- config-reference -->"

# (dotted key, dataclass import path), in the order a config reads.
SECTIONS = [
    ("run", "rl.schema.run.RunConfig"),
    ("ray", "rl.schema.run.RayConfig"),
    ("placement", "rl.schema.learner.PlacementConfig"),
    ("rollout", "rl.schema.rollout.RolloutConfig"),
    ("rollout.sampling", "rl.model.sampler.SamplingParams"),
    ("reward_workers", "rl.schema.rollout.RewardWorkersConfig"),
    ("ensemble", "rewards.combine.EnsembleConfig"),
    ("gating", "rewards.gating.GatingConfig"),
    ("gating.rules[i]", "rewards.gating.GateRule"),
    ("trainer", "rl.schema.trainer.TrainerConfig"),
    ("trainer.loss", "rl.schema.trainer.LossConfig"),
    ("trainer.batching", "rl.schema.trainer.BatchingConfig"),
    ("trainer.pipeline", "rl.schema.trainer.PipelineConfig"),
    ("trainer.faults", "rl.schema.trainer.FaultsConfig"),
    ("trainer.lora", "rl.model.lora.LoraSettings"),
    ("learner", "rl.schema.learner.LearnerConfig"),
    ("checkpoint", "rl.schema.run.CheckpointConfig"),
    ("logging", "rl.schema.run.LoggingConfig"),
    ("eval", "rl.schema.evaluation.EvalConfig"),
    ("monitor", "rl.schema.evaluation.MonitorConfig"),
]

# Where a component goes -> the built-ins that fit there (import paths as a config names them).
COMPONENTS = {
    "model.policy": ["rl.model.policy.XOmniPolicy.from_pretrained", "rl.model.tiny.tiny_policy"],
    "model.tokenizer": ["rl.model.tokenizer.load_tokenizer", "rl.model.tiny.tiny_tokenizer"],
    "model.decoder": ["rl.decoder.XOmniDecoder.from_pretrained", "rl.decoder.PatchDecoder"],
    "prompts": ["prompts.sources.PromptSource"],
    "rewards.<name>": ["rewards.hpsv2.HPSv2Reward", "rewards.clip_align.CLIPAlignReward",
                       "rewards.quality.QualityReward", "rewards.ocr.OCRReward", "rewards.vlm_judge.VLMJudgeReward"],
    "rewards.<name>.backends[i] (OCRReward)": ["rewards.ocr_backends.RapidOCRBackend",
                                               "rewards.ocr_backends.PaddleOCRBackend",
                                               "rewards.got_ocr2.GotOcr2Backend"],
}
# Components of other libraries that the shipped configs name: documented by their own projects.
EXTERNAL = {"torch.optim.": "https://pytorch.org/docs/stable/optim.html"}
TOP_LEVEL = {
    "resume": "null (start from step 0), \"auto\" (the newest complete checkpoint in run.dir, or start when there "
              "is none) or the path of a checkpoint.",
    "paths": "Free-form: weights locations set once and interpolated by components (`${paths.xomni}`).",
}


def resolve(path: str) -> Any:
    from core.components import resolve_component

    return resolve_component(path)


# -- documentation as the code holds it --------------------------------------------------------------------------

def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass (attribute docstrings), by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def argument_docs(target: Any) -> dict[str, str]:
    """A callable's `Args:` section (Google style), by argument name; names sharing one entry ("a, b: ...")
    each get it. For a class, its docstring; for a function or classmethod, its own."""
    doc = inspect.getdoc(target) or ""
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, re.M)
    if not match:
        return {}
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in textwrap.dedent(match.group(1)).splitlines():
        entry = re.match(r"^(\w+(?:, \w+)*): (.*)$", line)
        if entry:
            names = entry.group(1).split(", ")
            for name in names:
                docs[name] = entry.group(2)
        elif line.startswith((" ", "\t")) and names:
            for name in names:
                docs[name] += " " + line.strip()
        elif line.strip():
            break  # the end of the section
    return docs


def section_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(field, type, default, doc) per field of a plain section."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = _value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            default = "(see below)" if dataclasses.is_dataclass(made) else _value(made)
        else:
            default = "required"
        rows.append((f.name, type_name(hints[f.name]), default, docs.get(f.name, "")))
    return rows


def component_rows(target: Any) -> list[tuple[str, str, str, str]]:
    """(argument, type, default, doc) per argument a config may set (what the caller passes is left out)."""
    docs = argument_docs(target)
    hints = _hints(target)
    rows = []
    for name, p in inspect.signature(target).parameters.items():
        if p.kind is p.VAR_POSITIONAL:
            continue
        shown = f"{name} (any further keys)" if p.kind is p.VAR_KEYWORD else name
        default = "required" if p.default is p.empty else _value(p.default)
        rows.append((shown, type_name(hints.get(name, p.annotation)) if p.kind is not p.VAR_KEYWORD else "",
                     "" if p.kind is p.VAR_KEYWORD else default, docs.get(name, "")))
    return rows


def _hints(target: Any) -> dict[str, Any]:
    from core.components import component_type_hints

    return component_type_hints(target)


def type_name(hint: Any) -> str:
    """A type as a config author reads it: `int (>= 1)`, `"sequence" | "token"`, `float | null`, ..."""
    if hint is inspect.Parameter.empty:
        return ""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        bounds = [_bound(b) for b in args[1:]]
        return f"{type_name(args[0])} ({', '.join(b for b in bounds if b)})"
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple) or (origin is not None and getattr(origin, "__name__", "") == "Sequence"):
        return f"list of {type_name(args[0])}" if args else "list"
    if dataclasses.is_dataclass(hint):
        return "section"
    name = getattr(hint, "__name__", str(hint))
    return {"str": "string", "int": "int", "float": "float", "bool": "bool", "dict": "mapping", "list": "list",
            "NoneType": "null", "LocalPath": "path"}.get(name, name)


def _bound(bound: Any) -> str:
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return ", ".join(f"{sign} {getattr(bound, k)}" for k, sign in signs.items() if getattr(bound, k, None) is not None)


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value).replace("torch.", "")


# -- the page -----------------------------------------------------------------------------------------------------

def undocumented() -> list[str]:
    """Every config key or built-in component argument without a doc (the test wants none)."""
    missing = [f"{key}.{name}" for key, path in SECTIONS for name, _, _, doc in section_rows(resolve(path)) if not doc]
    missing += [f"{path}({name.split()[0]})" for paths in COMPONENTS.values() for path in paths
                for name, _, _, doc in component_rows(resolve(path)) if not doc]
    return missing


def render() -> str:
    """The reference as Markdown."""
    out = ["## Plain sections", "",
           "Checked before anything starts: unknown keys, types, the choices of quoted values and the ranges shown "
           "here; `rl/train_config.py` adds the checks that span several keys.", ""]
    for key, path in SECTIONS:
        cls = resolve(path)
        out += [f"### `{key}`", "", inspect.cleandoc(cls.__doc__ or ""), "", f"Defined in `{path}`.", "",
                _table(("key", "type", "default", "description"), section_rows(cls)), ""]
    out += ["### Top-level keys", "", _table(("key", "type", "default", "description"), [
        ("resume", "string | null", "null", TOP_LEVEL["resume"]), ("paths", "mapping", "{}", TOP_LEVEL["paths"])]),
        "", "## Components", "",
        "A component is `{_component_: import.path.Name, **arguments}`; any class or function of yours fits where "
        "these do (docs: rewards, writing your own). The arguments below are checked against the signature, "
        "`Literal` choices and local files before anything starts.", ""]
    for place, paths in COMPONENTS.items():
        out += [f"### `{place}`", ""]
        for path in paths:
            target = resolve(path)
            summary = (inspect.getdoc(target) or "").split("\n\n")[0].replace("\n", " ")
            out += [f"#### `{path}`", "", summary, "",
                    _table(("argument", "type", "default", "description"), component_rows(target)), ""]
    out += ["### `trainer.optimizer`, `trainer.lr_scheduler`", "",
            "Any `torch.optim` optimizer and `torch.optim.lr_scheduler` schedule (or one of yours with the same "
            "calling convention): the learner passes `params` and `optimizer`. Their arguments are documented by "
            f"[PyTorch]({EXTERNAL['torch.optim.']}).", ""]
    return "\n".join(out)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c, i == 0) for i, c in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str, key: bool) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text.split()[0]}`{text[len(text.split()[0]):]}" if key and text else text


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: fill the marker of the reference page."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
