"""The ensemble: NaN semantics of `combine`, normalisers, reward faults and `RewardEnsemble` end to end.

The rewards here are small classes defined in this file (constant, echoing, raising, hanging, malformed
outputs): they stand in for models so each fault can be produced on demand.
"""

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core.config import ConfigError, load_config
from core.paths import LocalPath
from rewards.base import RewardOutput
from rewards.combine import EnsembleConfig, Normalizer, combine
from rewards.ensemble import Combiner, RewardEnsemble
from rewards.faults import score_safely
from rewards.gating import GatingConfig
from rewards.sections import validate_reward_sections

ROOT = Path(__file__).resolve().parents[1]
NAN = float("nan")


class ConstReward:
    score_range = (0.0, 2.0)

    def __init__(self, value: float = 1.0):
        self.value = value

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.full((len(images),), self.value), {"seen": list(prompts)})


class RecordingReward:
    """Scores the number of target strings; remembers every call (prompts and targets)."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, prompts, metadata):
        self.calls.append((list(prompts), [m["text"] for m in metadata]))
        return RewardOutput(torch.tensor([float(len(m["text"])) for m in metadata]))


class RaisingReward:
    def __call__(self, images, prompts, metadata):
        raise RuntimeError("model exploded")


class SleepingReward:
    def __init__(self, seconds: float = 2.0):
        self.seconds, self.started = seconds, threading.Event()

    def __call__(self, images, prompts, metadata):
        self.started.set()
        time.sleep(self.seconds)
        return RewardOutput(torch.zeros(len(images)))


class FixedOutputReward:
    """Returns whatever it was given, whatever the batch."""

    def __init__(self, output):
        self.output = output

    def __call__(self, images, prompts, metadata):
        return self.output


class WeightsReward:
    def __init__(self, checkpoint: LocalPath, value: float = 1.0):
        self.value = value

    def __call__(self, images, prompts, metadata):
        return RewardOutput(torch.full((len(images),), self.value))


def images(n):
    return [np.full((8, 8, 3), i, dtype=np.uint8) for i in range(n)]


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def assert_same(actual, expected):
    torch.testing.assert_close(actual, t(*expected), equal_nan=True)


# ---------------------------------------------------------------------------------------------
# combine


def test_combine_nan_semantics():
    # columns: both score | a failed | b does not apply | nothing applies | a weight 0 but a score | 3:1
    scores = {"a": t(1, NAN, 3, NAN, 100, 1), "b": t(3, 3, NAN, NAN, 5, 5)}
    weights = {"a": t(1, 1, 1, 0, 0, 3), "b": t(1, 1, 0, 0, 1, 1)}
    assert_same(combine(scores, weights, "propagate"), [2, NAN, 3, NAN, 5, 2])
    assert_same(combine(scores, weights, "renormalize"), [2, 3, 3, NAN, 5, 2])
    # every applicable reward failed: NaN under both policies, never an imputed 0
    assert_same(combine({"a": t(NAN)}, {"a": t(1)}, "renormalize"), [NAN])
    assert_same(combine(scores | {"c": t(9, 9, 9, 9, 9, 9)}, weights), [2, NAN, 3, NAN, 5, 2])  # c unweighted


def test_combine_rejects_bad_input():
    with pytest.raises(ValueError, match="finite and >= 0"):
        combine({"a": t(1)}, {"a": t(-1)})
    with pytest.raises(ValueError, match="shape"):
        combine({"a": t(1, 2)}, {"a": t(1)})
    with pytest.raises(ValueError, match="without scores"):
        combine({"a": t(1)}, {"b": t(1)})
    with pytest.raises(ValueError, match="nan_policy"):
        combine({"a": t(1)}, {"a": t(1)}, "ignore")


# ---------------------------------------------------------------------------------------------
# normalisers


def test_range_and_batch_normalisers():
    out = Normalizer("range", {"a": (0.0, 0.4)})({"a": t(0.0, 0.2, NAN, 0.4)})
    assert_same(out["a"], [0, 0.5, NAN, 1])
    out = Normalizer("batch")({"a": t(1, NAN, 3), "b": t(NAN, NAN, NAN), "c": t(7, NAN, NAN)})
    assert_same(out["a"], [-1, NAN, 1])
    assert_same(out["b"], [NAN, NAN, NAN])
    assert_same(out["c"], [0, NAN, NAN])
    with pytest.raises(ValueError, match="score_range"):
        Normalizer("range", {})({"a": t(1)})


def test_running_normaliser_state_round_trip():
    first, second = {"a": t(0, 2, NAN)}, {"a": t(4, 6, NAN)}
    norm = Normalizer("running", momentum=0.5)
    assert_same(norm(first)["a"], [-1, 1, NAN])  # first batch: its own statistics
    state = json.loads(json.dumps(norm.state_dict()))  # plain floats: any checkpoint format holds it
    restored = Normalizer("running", momentum=0.5)
    restored.load_state_dict(state)
    out, out_restored = norm(second)["a"], restored(second)["a"]
    torch.testing.assert_close(out, out_restored, equal_nan=True)
    # the equal-weight mixture of the two batches is exactly the statistics of [0, 2, 4, 6]
    assert norm.stats["a"] == {"mean": 3.0, "var": 5.0, "count": 4}
    assert_same(out, [1 / math.sqrt(5), 3 / math.sqrt(5), NAN])
    with pytest.raises(ValueError, match="mode"):
        Normalizer("batch").load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# score_safely


@pytest.mark.parametrize("reward, message", [
    (RaisingReward(), "RuntimeError: model exploded"),
    (FixedOutputReward(RewardOutput(t(1, 2, 3))), "returned 3 scores for 2 images"),
    (FixedOutputReward(t(1, 2)), "returned Tensor, expected RewardOutput"),
    (FixedOutputReward(RewardOutput(t(1, 2), {"ocr_text": ["a"]})), "details ['ocr_text']"),
])
def test_score_safely_turns_faults_into_nan(reward, message):
    output, error = score_safely(reward, images(2), ["a", "b"], [{}, {}], timeout_s=5)
    assert_same(output.scores, [NAN, NAN])
    assert message in error


def test_score_safely_keeps_scores_nan_and_maps_inf_to_nan():
    reward = FixedOutputReward(RewardOutput(t(0.5, NAN, math.inf), {"k": [1, 2, 3]}))
    output, error = score_safely(reward, images(3), ["a"] * 3, [{}] * 3, timeout_s=None)
    assert error is None and output.details == {"k": [1, 2, 3]}
    assert_same(output.scores, [0.5, NAN, NAN])


def test_score_safely_abandons_a_hung_call():
    reward = SleepingReward(seconds=3.0)
    start = time.monotonic()
    output, error = score_safely(reward, images(2), ["a", "b"], [{}, {}], timeout_s=0.2)
    assert time.monotonic() - start < 1.5 and "timed out after 0.2s" in error
    assert_same(output.scores, [NAN, NAN])
    # the abandoned call still holds the model: the next call fails fast instead of stacking threads
    start = time.monotonic()
    _, error = score_safely(reward, images(1), ["a"], [{}], timeout_s=10)
    assert time.monotonic() - start < 0.5 and "still running" in error


# ---------------------------------------------------------------------------------------------
# RewardEnsemble


TEXT_GATING = GatingConfig(default=["good", "bad"], needs_text=["ocr"],
                           rules=[{"name": "text", "keywords": ["sign"], "requires_text": True,
                                   "add": ["ocr"], "scale": {"ocr": 2.0}}])
PROMPTS = ['a sign that reads "OPEN"', "a dog", 'a sign "A" and "B"', "a cat"]


def test_ensemble_gates_scores_and_counts_faults():
    ocr = RecordingReward()
    rewards = {"good": ConstReward(1.0), "ocr": ocr, "bad": RaisingReward()}
    config = EnsembleConfig(weights={"good": 1.0, "ocr": 1.0, "bad": 1.0}, batch_size=1)
    result = RewardEnsemble(rewards, config, TEXT_GATING)(images(4), PROMPTS)
    # OCR ran only on the text prompts, one image per call, with the quoted spans as targets
    assert ocr.calls == [([PROMPTS[0]], [["OPEN"]]), ([PROMPTS[2]], [["A", "B"]])]
    assert_same(result.scores["ocr"], [1, NAN, 2, NAN])
    assert result.applies["ocr"].tolist() == [True, False, True, False]
    assert_same(result.scores["bad"], [NAN] * 4)
    assert result.failed["bad"].all() and "model exploded" in result.errors["bad"]
    assert result.errors["good"] is None and result.errors["ocr"] is None
    assert_same(result.total, [NAN] * 4)  # propagate: the failing reward applies everywhere
    assert result.stats["reward/bad/failures"] == 4 and result.stats["reward/bad/nan_frac"] == 1
    assert result.stats["reward/ocr/count"] == 2 and result.stats["reward/ocr/mean"] == 1.5
    assert result.stats["reward/nan_frac"] == 1 and result.stats["gate/ocr/rate"] == 0.5
    assert result.details["good"]["seen"] == PROMPTS
    assert [g.task for g in result.gates] == ["text", "default", "text", "default"]


def test_ensemble_renormalize_and_a_hung_reward():
    rewards = {"good": ConstReward(1.0), "ocr": RecordingReward(), "bad": SleepingReward(3.0)}
    config = EnsembleConfig(weights={"good": 1.0, "ocr": 1.0, "bad": 1.0}, nan_policy="renormalize",
                            timeout_s=0.2)
    result = RewardEnsemble(rewards, config, TEXT_GATING)(images(4), PROMPTS, [{}, {}, {}, {"text": ["X"]}])
    assert "timed out" in result.errors["bad"] and result.stats["reward/bad/failures"] == 4
    # weighted mean over the rewards that scored: (1 * 1 + 2 * n_targets) / 3 on text prompts, else 1
    assert_same(result.total, [1.0, 1.0, 5 / 3, 1.0])
    assert result.gates[3].task == "text" and result.gates[3].text == ["X"]  # metadata text selects the rule


def test_ensemble_nan_scores_are_counted_apart_from_faults():
    class NaNReward:
        def __call__(self, images, prompts, metadata):
            return RewardOutput(torch.full((len(images),), NAN))

    short = FixedOutputReward(RewardOutput(t(1, 1, 1)))
    rewards = {"good": ConstReward(0.5), "nan": NaNReward(), "short": short}
    config = EnsembleConfig(weights={"good": 1.0, "nan": 1.0, "short": 1.0}, nan_policy="renormalize")
    result = RewardEnsemble(rewards, config)(images(4), ["p"] * 4)
    assert_same(result.total, [0.5] * 4)
    assert result.stats["reward/nan/nan_frac"] == 1 and result.stats["reward/nan/failures"] == 0
    assert result.errors["nan"] is None
    assert result.stats["reward/short/failures"] == 4 and "returned 3 scores for 4 images" in result.errors["short"]
    assert result.stats["reward/good/mean"] == 0.5 and result.stats["reward/good/nan_frac"] == 0


def test_ensemble_normalises_before_combining_and_saves_state():
    rewards = {"a": ConstReward(2.0), "b": ConstReward(0.0)}
    ranged = RewardEnsemble(rewards, EnsembleConfig(weights={"a": 1, "b": 3}, normalize="range"))
    result = ranged(images(2), ["x", "y"])
    assert_same(result.total, [0.25, 0.25])  # (1 * 1.0 + 3 * 0.0) / 4 after mapping (0, 2) -> (0, 1)
    assert_same(result.scores["a"], [2.0, 2.0])  # scores stay raw
    running = RewardEnsemble(rewards, EnsembleConfig(weights={"a": 1, "b": 1}, normalize="running"))
    running(images(2), ["x", "y"])
    assert running.state_dict()["normalizer"]["stats"]["a"] == {"mean": 2.0, "var": 0.0, "count": 2}
    with pytest.raises(ValueError, match="score_range"):
        RewardEnsemble({"r": RecordingReward()}, EnsembleConfig(weights={"r": 1}, normalize="range"))


def component(cls, **kwargs):
    return {"_component_": f"{__name__}.{cls.__name__}", **kwargs}


def reward_config(**sections):
    base = {
        "rewards": {"const": component(ConstReward, value=0.5), "heavy": component(WeightsReward, checkpoint="???")},
        "ensemble": {"weights": {"const": 1.0, "heavy": 1.0}},
        "gating": {"default": ["const", "heavy"]},
    }
    return OmegaConf.create({**base, **sections})


def test_from_config_with_only_skips_the_other_rewards():
    cfg = reward_config()
    with pytest.raises(ConfigError, match="rewards.heavy.checkpoint: required value is missing"):
        RewardEnsemble.from_config(cfg)
    ensemble = RewardEnsemble.from_config(cfg, only=["const"])
    assert list(ensemble.rewards) == ["const"]
    assert_same(ensemble(images(2), ["a", "b"]).total, [0.5, 0.5])


def test_config_validation_reports_every_problem_at_once():
    cfg = reward_config(
        rewards={"const": component(ConstReward, valeu=1), "total": component(ConstReward),
                 "heavy": component(WeightsReward, checkpoint="/no/such/file.pt")},
        ensemble={"weights": {"const": -1, "ghost": 1}, "normalize": "zscore", "batch_size": 0},
        gating={"default": ["const", "phantom"]},
    )
    problems = validate_reward_sections(cfg, only=["const", "heavy", "missing"])
    text = "\n".join(problems)
    for expected in ["rewards.total: reward names must be", "only: unknown reward(s) ['missing']",
                     "rewards.const.valeu: unknown argument", "rewards.heavy.checkpoint: file or folder not found",
                     "ensemble.normalize: must be one of", "gating.default: 'phantom'"]:
        assert expected in text, expected
    cfg = reward_config(ensemble={"weights": {"const": -1, "ghost": 1}, "batch_size": 0, "timeout_s": 0})
    text = "\n".join(validate_reward_sections(cfg, only=["const"]))
    for expected in ["ensemble.weights.ghost: 'ghost' is not a configured", "ensemble.weights.const: must be",
                     "ensemble.batch_size: must be >= 1", "ensemble.timeout_s: must be > 0"]:
        assert expected in text, expected
    # dropped by `only`: neither its ??? path nor its missing weight is asked for
    assert "rewards.heavy" not in text and "'heavy'" not in text
    assert "rewards: expected a mapping" in validate_reward_sections(OmegaConf.create({"rewards": {}}))[0]


class TextReward(RecordingReward):
    """A reward whose class needs target text, like OCR: no config says so."""

    needs_text = True


def test_a_reward_class_that_needs_text_never_scores_a_prompt_without_targets():
    rewards = {"good": ConstReward(1.0), "text": TextReward()}
    result = RewardEnsemble(rewards, EnsembleConfig(weights={"good": 1.0, "text": 1.0}))(images(4), PROMPTS)
    assert rewards["text"].calls == [([PROMPTS[0], PROMPTS[2]], [["OPEN"], ["A", "B"]])]
    assert result.applies["text"].tolist() == [True, False, True, False]
    assert_same(result.total, [1.0, 1.0, 1.5, 1.0])  # no NaN for the prompts without text
    # the same from a config without a gating section, read off the class before anything is built
    rewards = {"good": component(ConstReward), "ocr": {"_component_": "rewards.ocr.OCRReward"}}
    cfg = OmegaConf.create({"rewards": rewards, "ensemble": {"weights": {"good": 1.0, "ocr": 1.0}}})
    _, _, applies = Combiner.from_config(cfg).gate(PROMPTS, [{}] * 4)
    assert applies["ocr"].tolist() == [True, False, True, False] and applies["good"].all()


def test_a_reward_no_gate_can_apply_is_a_config_error():
    cfg = reward_config(rewards={"const": component(ConstReward), "other": component(ConstReward)},
                        ensemble={"weights": {"const": 1.0, "other": 1.0}},
                        gating={"default": ["const"],
                                "rules": [{"name": "t", "keywords": ["x"], "scale": {"other": 2}}]})
    assert validate_reward_sections(cfg) == [
        "gating: reward 'other' can never apply: it is not in gating.default and no rule adds it "
        "(to switch it off, set ensemble.weights.other: 0)"]
    cfg.gating.rules[0].add = ["other"]
    assert validate_reward_sections(cfg) == []
    cfg.gating.rules[0].scale.other = 0  # added with weight 0: still never applies
    assert "reward 'other' can never apply" in validate_reward_sections(cfg)[0]
    cfg.ensemble.weights.other = 0  # switched off on purpose
    assert validate_reward_sections(cfg) == []
    assert validate_reward_sections(cfg, only=["const"]) == []


def test_unscored_cause_names_why_no_reward_applies():
    combiner = Combiner(["ocr"], EnsembleConfig(weights={"ocr": 1.0}), GatingConfig(default=[], rules=[
        {"name": "text", "requires_text": True, "add": ["ocr"]}]), needs_text=["ocr"])
    gates, _, applies = combiner.gate(["a dog", "a cat"], [{}, {}])
    assert combiner.unscored_cause(gates, applies) == "task 'default': no reward in gating.default or its rule " \
                                                      "(2 of 2 samples)"
    gates, _, applies = combiner.gate(['a sign "★"', "a cat"], [{}, {}])
    assert combiner.unscored_cause(gates, applies) == ("no target text to score: ocr not applied (1 of 2 samples); "
                                                       "task 'default': no reward in gating.default or its rule "
                                                       "(1 of 2 samples)")
    gates, _, applies = combiner.gate(['a sign "OPEN"', "a cat"], [{}, {}])
    assert combiner.unscored_cause(gates, applies) is None
    invalid = {name: mask & torch.tensor([False, False]) for name, mask in applies.items()}
    assert "every one of those 2 images was invalid" in combiner.unscored_cause(gates, invalid)


@pytest.mark.parametrize("override, expected", [
    ("ensemble.weights.ocr=inf", "ensemble.weights.ocr: must be a finite number in [0, 1e+06], got 'inf'"),
    ("ensemble.weights.ocr=1e308", "ensemble.weights.ocr: must be a finite number in [0, 1e+06], got 1e+308"),
    ("ensemble.weights.ocr=nan", "ensemble.weights.ocr: must be a finite number in [0, 1e+06], got 'nan'"),
    # finite on its own, past the bound once the text rule's scale of 2 applies
    ("ensemble.weights.ocr=600000", "gating.rules.0.scale.ocr: ensemble.weights.ocr (600000) x 2 is 1.2e+06, "
                                    "above 1e+06"),
])
def test_weights_are_bounded_finite_numbers_with_the_gate_scales_applied(override, expected):
    """The training config is refused at validation (no model loads) with the dotted key; `inf` used to crash the
    validator itself with a TypeError and 1e308 to pass and become inf in the total once the gate scaled it."""
    from rl.train_config import validate_train_config

    cfg = load_config(ROOT / "configs" / "tiny.yaml", [override])
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
    assert expected in str(error.value)
    assert validate_reward_sections(load_config(ROOT / "configs" / "tiny.yaml", ["ensemble.weights.ocr=500000"])) == []


def test_rewards_score_refuses_an_unbounded_weight_before_loading_a_reward(tmp_path, capsys):
    from rewards.score import main

    code = main(["--images", str(tmp_path), "--config", str(ROOT / "configs" / "rewards.yaml"), "--out",
                 str(tmp_path / "out"), "--only", "quality", "ensemble.weights.quality=inf"])
    assert code == 2
    assert "ensemble.weights.quality: must be a finite number in [0, 1e+06], got 'inf'" in capsys.readouterr().err
