"""Prompt gating: quoted text first, the exceptions, every quote style, rates, validation, and the targets
measured on prompt sets: quoted text-rendering prompts (recall >= 95%), natural prompts quoting titles or
names (false positives <= 10%), and LongText-Bench's 320 prompts (all gated as text, targets recovered)."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from core.config import load_config
from rewards.gating import Gater, GatingConfig, build_gating, count_words, gate_rates, quoted_spans, validate_gating
from rewards.text_accuracy import resolve_mode, tokens

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"hpsv2": 1.0, "clip_align": 1.0, "quality": 1.0, "ocr": 1.0}
SHIPPED = ("rewards.yaml", "xomni.yaml", "tiny.yaml")


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


TEXT_PROMPTS = read_jsonl(ROOT / "tests/data/gating/quoted_text_prompts.jsonl")
NATURAL_PROMPTS = read_jsonl(ROOT / "tests/data/gating/natural_quoted_prompts.jsonl")
LONGTEXT = {lang: read_jsonl(ROOT / f"prompts/data/longtext_bench_{lang}.jsonl") for lang in ("en", "zh")}
# Two LongText-Bench (zh) rows whose `text` list leaves out a span that the prompt quotes in ASCII quotes as
# text to show ("显示着醒目的发光文字"发现你无限的潜能"", "播放时间"01:27:32""): the prompt asks for one more.
LABEL_OMITS = {("zh", 9): "发现你无限的潜能", ("zh", 167): "01:27:32"}


def shipped_gater(name):
    cfg = load_config(ROOT / "configs" / name)
    return Gater(build_gating(cfg.gating), {n: 1.0 for n in cfg.rewards})


@pytest.fixture(scope="module")
def gater():
    """The shipped scoring config's gating with the shipped weights."""
    return Gater(build_gating(load_config(ROOT / "configs/rewards.yaml").gating), WEIGHTS)


@pytest.mark.parametrize("prompt, spans", [
    ('A sign that says "OPEN" and “CLOSED”', ["OPEN", "CLOSED"]),
    ("「营业中」 and 『欢迎光临』", ["营业中", "欢迎光临"]),
    ("Joe's diner sign reads 'Don't Stop' tonight", ["Don't Stop"]),
    ("the students' banner reads 'GO TEAM'", ["GO TEAM"]),
    ("a label ‘Don’t Panic’ on the towel", ["Don’t Panic"]),
    ("a chef's hat, it's the cook's day", []),
    ('a sign "Joe\'s \'Best\' Pizza" outside', ["Joe's 'Best' Pizza"]),
    ('an empty label "  " and "A"', ["A"]),
    ("une affiche « Café de Flore » et «Bienvenue»", ["Café de Flore", "Bienvenue"]),
    ("ein Schild „Bitte klingeln“ und ‚Zutritt‘", ["Bitte klingeln", "Zutritt"]),
    ("一本书《三体》和一块牌子＂今日特价＂", ["三体", "今日特价"]),
    ('a 12" vinyl record and a 7" single', []),
    ('a 12" vinyl record sleeve with "MIDNIGHT DRIVE" on it', ["MIDNIGHT DRIVE"]),
    ('a 6\'2" player in a jersey with "HAWKS 23"', ["HAWKS 23"]),
    ('a sign reading "12" in red', ["12"]),
])
def test_quoted_spans(prompt, spans):
    assert quoted_spans(prompt) == spans


def test_count_words_counts_cjk_characters():
    assert count_words("a red sign") == 3
    assert count_words("一块红色的牌子 on a wall") == 10


@pytest.mark.parametrize("prompt, text", [
    ('A ceramic plate printed with "GRANDMA\'S KITCHEN"', ["GRANDMA'S KITCHEN"]),
    ('A cookie with icing that spells "YUM"', ["YUM"]),
    ("一张卡通漫画，小女孩和机器人，对话框里写着：“你看到我的左臂了吗？”", ["你看到我的左臂了吗？"]),
])
def test_quoted_text_alone_makes_a_text_prompt(gater, prompt, text):
    """The issue's prompts that keyword gating missed: a quote is enough, no keyword needed."""
    gate = gater(prompt)
    assert (gate.task, gate.text, gate.weights["ocr"]) == ("text_rendering", text, 2.0)
    assert "quoted span(s) to draw" in gate.reasons[0]


@pytest.mark.parametrize("prompt, why", [
    ('An oil painting in the style of "The Starry Night" over a village', "a work or style is referenced"),
    ('A watercolor inspired by the novel "The Hobbit"', "a work or style is referenced"),
    ('A photo of the band "The Velvet Comets" on stage', "it names something ('band')"),
    ('A golden retriever named "Biscuit" on the beach', "it names something ('named')"),
    ('A very "modern" kitchen with too many gadgets', "scare quotes"),
    ('A "healthy" breakfast of donuts', "scare quotes"),
    ('An empty billboard "SALE" by a highway, no visible text', "asks for 'no visible text'"),
    ('A book cover for "The Quiet Sea", without any text', "asks for 'without any text'"),
    ("一幅《星月夜》风格的油画", "a work or style is referenced"),
])
def test_quotes_that_are_not_text_to_draw(gater, prompt, why):
    gate = gater(prompt)
    assert "ocr" not in gate.weights and gate.text == [] and gate.task != "text_rendering"
    assert any(why in reason for reason in gate.reasons), gate.reasons


@pytest.mark.parametrize("prompt, text", [
    ('An album cover for the band "Neon Tides"', ["Neon Tides"]),            # a carrier: the name is drawn
    ('A storefront named "Moonlight Books" with its name painted above', ["Moonlight Books"]),
    ('A sign with the word "open" on a door', ["open"]),                      # a text cue, not scare quotes
    ('A poster with the title "SALE" and no other text', ["SALE"]),
    ('An oil painting of a harbour, a boat with "SEA BREEZE" on its hull', ["SEA BREEZE"]),
])
def test_exceptions_do_not_hide_text_to_draw(gater, prompt, text):
    assert gater(prompt).text == text and "ocr" in gater(prompt).weights


@pytest.mark.parametrize("prompt", [
    "A poster of a cat on a sofa",                            # keyword, nothing to render
    'A cat named "Poster" sleeping on a sofa',                # a name, keyword only inside it
    "A cozy reading nook with a lamp",                        # keyword, no quote
])
def test_prompt_without_text_to_render_never_gets_ocr(gater, prompt):
    gate = gater(prompt)
    assert "ocr" not in gate.weights
    assert gate.task != "text_rendering"


@pytest.mark.parametrize("config", SHIPPED)
def test_recall_on_quoted_text_rendering_prompts(config):
    """At least 95% of the quoted text-rendering prompts (in the styles of DrawBench, PartiPrompts,
    MARIO-Eval, TextAtlas, CVTG, LeX, OneIG, Chinese sets, French/German/Spanish) get OCR, with their targets."""
    gater = shipped_gater(config)
    gates = [gater(row["prompt"]) for row in TEXT_PROMPTS]
    hits = [gate for gate in gates if "ocr" in gate.weights]
    missed = [r["prompt"] for r, g in zip(TEXT_PROMPTS, gates, strict=True) if g not in hits]
    assert len(hits) / len(gates) >= 0.95, missed
    assert all(g.text == r["text"] for r, g in zip(TEXT_PROMPTS, gates, strict=True) if g in hits)


@pytest.mark.parametrize("config", SHIPPED)
def test_false_positives_on_natural_prompts_quoting_titles_or_names(config):
    """At most 10% of natural prompts quoting works, styles, names, scare quotes or asking for no text."""
    gater = shipped_gater(config)
    wrong = [row["prompt"] for row in NATURAL_PROMPTS if "ocr" in gater(row["prompt"]).weights]
    assert len(wrong) / len(NATURAL_PROMPTS) <= 0.10, wrong


@pytest.mark.parametrize("config", SHIPPED)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_longtext_bench_is_gated_as_text_with_its_targets_from_the_prompt_alone(config, lang):
    gater = shipped_gater(config)
    for row in LONGTEXT[lang]:
        gate = gater(row["prompt"])  # no metadata: the prompt alone
        assert gate.task == "text_rendering" and "ocr" in gate.weights, row["prompt_id"]
        expected = list(row["text"])
        omitted = LABEL_OMITS.get((lang, row["prompt_id"]))
        if omitted is not None:
            assert omitted in gate.text
            gate.text.remove(omitted)
        mode = resolve_mode(expected)  # the metric's units: the same words or characters, in order
        assert [tokens(t, mode) for t in gate.text] == [tokens(t, mode) for t in expected], row["prompt_id"]
    assert len(LONGTEXT[lang]) == 160


def test_every_shipped_config_gates_alike():
    """configs/rewards.yaml, xomni.yaml and tiny.yaml make the same text decisions on every prompt set."""
    gaters = {name: shipped_gater(name) for name in SHIPPED}
    prompts = [r["prompt"] for r in TEXT_PROMPTS + NATURAL_PROMPTS + LONGTEXT["en"] + LONGTEXT["zh"]]
    for prompt in prompts:
        decisions = {(g.task == "text_rendering", tuple(g.text), g.weights.get("ocr"))
                     for g in (gater(prompt) for gater in gaters.values())}
        assert len(decisions) == 1, (prompt, decisions)
    rules = {name: load_config(ROOT / "configs" / name).gating.rules for name in SHIPPED}
    assert rules["rewards.yaml"] == rules["xomni.yaml"]
    assert rules["tiny.yaml"][0] == rules["rewards.yaml"][0]


def test_targets_with_nothing_to_count_are_reported():
    gater = shipped_gater("rewards.yaml")
    gate = gater('A neon sign that reads "★★★"')
    assert gate.task == "text_rendering" and "ocr" not in gate.weights and gate.unscorable == ["★★★"]
    assert any("has no letter, digit or CJK character" in r for r in gate.reasons)
    assert any("no target text to score: ocr not applied" in r for r in gate.reasons)
    russian = gater('A shop sign that reads "ПРИВЕТ"')  # a script LongText-Bench's metric drops
    assert "ocr" not in russian.weights and russian.unscorable == ["ПРИВЕТ"]
    mixed = gater('A sign that reads "OPEN" and "☕"')
    assert mixed.weights["ocr"] == 2.0 and mixed.unscorable == ["☕"]
    rates = gate_rates([gate, russian, mixed, gater("a dog")], WEIGHTS)
    assert rates["gate/text_unscorable/rate"] == 0.75 and rates["gate/ocr/rate"] == 0.25


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


def test_needs_text_from_the_config_or_the_reward_class():
    for gater in (Gater(GatingConfig(default=["quality", "ocr"], needs_text=["ocr"]), WEIGHTS),
                  Gater(GatingConfig(default=["quality", "ocr"]), WEIGHTS, needs_text=["ocr"]),
                  Gater(GatingConfig(), WEIGHTS, needs_text=["ocr"])):  # no gating section at all
        assert "ocr" not in gater("a dog").weights
        assert "ocr" in gater('a dog tag that reads "REX"').weights


def test_detailed_natural_scene_upweights_preference_and_quality(gater):
    long = ("A wide landscape photograph of a quiet mountain valley at sunrise, mist drifting over a river "
            "that winds between pine forests, wildflowers in the foreground, snow on the distant peaks and "
            "soft golden light across the whole scene")
    gate = gater(long)
    assert gate.task == "natural_scene"
    assert gate.weights == {"hpsv2": 1.5, "clip_align": 1.0, "quality": 1.5}
    assert gater("A landscape photograph of a valley").task == "default"  # too short to be "detailed"


def test_rewards_outside_the_weights_are_ignored():
    # as with `--only quality,ocr`: gates naming dropped rewards still work
    only = Gater(build_gating(load_config(ROOT / "configs/rewards.yaml").gating), {"quality": 1.0, "ocr": 1.0})
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
    assert rates["gate/text_unscorable/rate"] == 0.0


def test_validation_reports_every_problem():
    node = OmegaConf.create({
        "default": ["quality", "hsp"],
        "needs_text": ["ocrr"],
        "rules": [{"name": "a", "keywords": ["x", ""], "patterns": ["("], "add": ["nope"],
                   "scale": {"quality": -1, "zzz": 1}},
                  {"name": "a"}, {"name": "default"}, {"keywords": ["y"]}, {"name": "b", "colour": 1},
                  {"name": "c", "min_words": -1}],
    })
    problems = validate_gating(node, WEIGHTS)
    text = "\n".join(problems)
    for expected in ["gating.default: 'hsp'", "gating.needs_text: 'ocrr'", "gating.rules.0.add: 'nope'",
                     "gating.rules.0.scale: 'zzz'", "gating.rules.0.scale.quality: must be",
                     "gating.rules.0.patterns.0: invalid regular expression", "gating.rules.0.keywords.1",
                     "gating.rules.1.name: 'a' is reserved or used", "gating.rules.2.name: 'default'",
                     "gating.rules.3.name: required", "gating.rules.4.colour: unknown key",
                     "gating.rules.5.min_words: must be >= 0, got -1"]:
        assert expected in text, expected
    assert len(problems) == 12
    assert validate_gating(load_config(ROOT / "configs/rewards.yaml").gating, WEIGHTS) == []


def test_scales_are_bounded_finite_numbers():
    """A scale is a weight multiplier: a string, an infinity or an absurd factor is refused with its dotted key."""
    node = OmegaConf.create({"rules": [{"name": "a", "keywords": ["x"],
                                        "scale": {"quality": "inf", "ocr": 1e308, "hpsv2": 2.0}}]})
    assert validate_gating(node, WEIGHTS) == [
        "gating.rules.0.scale.quality: must be a finite number in [0, 1e+06], got 'inf'",
        "gating.rules.0.scale.ocr: must be a finite number in [0, 1e+06], got 1e+308"]
