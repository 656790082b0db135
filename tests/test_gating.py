"""Prompt gating: quoted targets, text vs non-text prompts, metadata overrides, rates and validation."""

import pytest
from omegaconf import OmegaConf

from rewards.gating import Gater, GatingConfig, build_gating, count_words, gate_rates, quoted_spans, validate_gating
from rl.config import load_config

WEIGHTS = {"hpsv2": 1.0, "clip_align": 1.0, "quality": 1.0, "ocr": 1.0}


@pytest.fixture(scope="module")
def gater():
    """The shipped gating rules with the shipped weights."""
    cfg = load_config("configs/rewards.yaml")
    return Gater(build_gating(cfg.gating), WEIGHTS)


@pytest.mark.parametrize("prompt, spans", [
    ('A sign that says "OPEN" and “CLOSED”', ["OPEN", "CLOSED"]),
    ("「营业中」 and 『欢迎光临』", ["营业中", "欢迎光临"]),
    ("Joe's diner sign reads 'Don't Stop' tonight", ["Don't Stop"]),
    ("the students' banner reads 'GO TEAM'", ["GO TEAM"]),
    ("a label ‘Don’t Panic’ on the towel", ["Don’t Panic"]),
    ("a chef's hat, it's the cook's day", []),
    ('a sign "Joe\'s \'Best\' Pizza" outside', ["Joe's 'Best' Pizza"]),
    ('an empty label "  " and "A"', ["A"]),
])
def test_quoted_spans(prompt, spans):
    assert quoted_spans(prompt) == spans


def test_count_words_counts_cjk_characters():
    assert count_words("a red sign") == 3
    assert count_words("一块红色的牌子 on a wall") == 10


def test_text_prompt_gets_ocr_with_its_quoted_targets(gater):
    gate = gater('A storefront poster with the words "Open Cafe" and “Since 1998”')
    assert gate.task == "text_rendering"
    assert gate.text == ["Open Cafe", "Since 1998"]
    assert gate.weights == {"hpsv2": 1.0, "clip_align": 1.0, "quality": 1.0, "ocr": 2.0}
    assert "keyword 'poster'" in gate.reasons[0]


def test_chinese_text_prompt(gater):
    gate = gater("繁忙的街道上，一块广告牌清晰地印着“每日新鲜烘焙”，旁边的招牌写着「中央公园」")
    assert gate.task == "text_rendering"
    assert gate.text == ["每日新鲜烘焙", "中央公园"]
    assert "ocr" in gate.weights


@pytest.mark.parametrize("prompt", [
    "A poster of a cat on a sofa",                            # keyword, nothing to render
    'A cat named "Poster" sleeping on a sofa',                # quote, keyword only inside it
    "A cozy reading nook with a lamp",                        # keyword, no quote
])
def test_prompt_without_text_to_render_never_gets_ocr(gater, prompt):
    gate = gater(prompt)
    assert "ocr" not in gate.weights
    assert gate.task != "text_rendering"


def test_detailed_natural_scene_upweights_preference_and_quality(gater):
    long = ("A wide landscape photograph of a quiet mountain valley at sunrise, mist drifting over a river "
            "that winds between pine forests, wildflowers in the foreground, snow on the distant peaks and "
            "soft golden light across the whole scene")
    gate = gater(long)
    assert gate.task == "natural_scene"
    assert gate.weights == {"hpsv2": 1.5, "clip_align": 1.0, "quality": 1.5}
    assert gater("A landscape photograph of a valley").task == "default"  # too short to be "detailed"


def test_metadata_overrides_keywords(gater):
    # metadata text alone selects the text rule and replaces the quoted spans as targets
    gate = gater('A plain wall with "graffiti"', {"text": ["HELLO"]})
    assert (gate.task, gate.text, gate.weights["ocr"]) == ("text_rendering", ["HELLO"], 2.0)
    assert gater("a wall", {"text": "HI"}).text == ["HI"]
    # an explicitly empty target list: no OCR even with keywords and quotes
    gate = gater('A sign that reads "OPEN"', {"text": []})
    assert "ocr" not in gate.weights and gate.text == []
    # metadata task selects the rule by name, skipping its keyword and length tests
    assert gater("a dog", {"task": "natural_scene"}).weights["hpsv2"] == 1.5
    gate = gater("a dog", {"task": "text_rendering"})
    assert gate.task == "text_rendering" and "ocr" not in gate.weights  # still no target -> no OCR
    gate = gater('A sign that reads "OPEN"', {"task": "user_prompt"})
    assert gate.task == "user_prompt" and gate.rule is None and "ocr" not in gate.weights


def test_needs_text_applies_to_default_rewards_too():
    gater = Gater(GatingConfig(default=["quality", "ocr"], needs_text=["ocr"]), WEIGHTS)
    assert set(gater("a dog").weights) == {"quality"}
    assert set(gater('a dog "REX"').weights) == {"quality", "ocr"}


def test_rewards_outside_the_weights_are_ignored(gater):
    # as with `--only quality,ocr`: gates naming dropped rewards still work
    only = Gater(build_gating(load_config("configs/rewards.yaml").gating), {"quality": 1.0, "ocr": 1.0})
    assert only('A sign that reads "OPEN"').weights == {"quality": 1.0, "ocr": 2.0}
    assert only("a dog").weights == {"quality": 1.0}


def test_zero_weight_or_scale_removes_a_reward():
    config = GatingConfig(rules=[{"name": "t", "keywords": ["dog"], "scale": {"quality": 0}}])
    gater = Gater(config, {"quality": 1.0, "hpsv2": 0.0})
    assert gater("a cat").weights == {"quality": 1.0}  # default null: every reward with a weight > 0
    assert gater("a dog").weights == {}


def test_gate_rates(gater):
    gates = [gater('A sign that reads "OPEN"'), gater("a dog"), gater("a cat"), gater('a poster "X"')]
    rates = gate_rates(gates, WEIGHTS)
    assert rates["gate/ocr/rate"] == 0.5 and rates["gate/quality/rate"] == 1.0
    assert rates["gate/task/text_rendering/rate"] == 0.5 and rates["gate/task/default/rate"] == 0.5


def test_validation_reports_every_problem():
    node = OmegaConf.create({
        "default": ["quality", "hsp"],
        "needs_text": ["ocrr"],
        "rules": [{"name": "a", "keywords": ["x", ""], "patterns": ["("], "add": ["nope"],
                   "scale": {"quality": -1, "zzz": 1}},
                  {"name": "a"}, {"name": "default"}, {"keywords": ["y"]}, {"name": "b", "colour": 1}],
    })
    problems = validate_gating(node, WEIGHTS)
    text = "\n".join(problems)
    for expected in ["gating.default: 'hsp'", "gating.needs_text: 'ocrr'", "gating.rules.0.add: 'nope'",
                     "gating.rules.0.scale: 'zzz'", "gating.rules.0.scale.quality: must be",
                     "gating.rules.0.patterns.0: invalid regular expression", "gating.rules.0.keywords.1",
                     "gating.rules.1.name: 'a' is reserved or used", "gating.rules.2.name: 'default'",
                     "gating.rules.3.name: required", "gating.rules.4.colour: unknown key"]:
        assert expected in text, expected
    assert len(problems) == 11
    assert validate_gating(load_config("configs/rewards.yaml").gating, WEIGHTS) == []
