"""The OCR reward with the real RapidOCR models shipped in its wheel, on rendered text.

RapidOCR takes ~0.4 s per image here (more on a busy machine), so the rewards are built once per
module and each test reads as few images as it can. PaddleOCR is not installed here: only its
"no model folder" and "not installed" errors are tested.
"""

import importlib.util
import math

import numpy as np
import pytest
from render_text import render_text_image

from core.components import instantiate, validate_component
from core.config import ConfigError
from rewards.ocr import OCRReward, target_texts
from rewards.ocr_backends import PaddleOCRBackend, RapidOCRBackend, build_backend

HELLO = "HELLO WORLD 2026"


class LeftHalfOCR(RapidOCRBackend):
    """A real RapidOCR that reads only the left half of the image (named by import path below)."""

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        return super().read(image[:, : image.shape[1] // 2])


class RightHalfOCR(RapidOCRBackend):
    """A real RapidOCR that reads only the right half of the image."""

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        return super().read(image[:, image.shape[1] // 2 :])


@pytest.fixture(scope="module")
def reward():
    return OCRReward()


@pytest.fixture(scope="module")
def hello():
    return render_text_image(HELLO)


def test_reads_rendered_text_scores_fractions_and_nan(reward, hello):
    blank = render_text_image("")
    images = [hello, np.asarray(hello), blank, hello, hello]
    metadata = [{"text": [HELLO]}, {"text": ["HELLO", "MOON", "2026", "2027"]}, {"text": ["HELLO"]},
                {"text": []}, {"note": "no target"}]
    out = reward(images, ["p"] * 5, metadata)
    assert out.scores[:3].tolist() == [1.0, 0.5, 0.0]
    assert math.isnan(out.scores[3]) and math.isnan(out.scores[4])
    assert out.details["ocr_text/rapidocr"][:3] == [HELLO, HELLO, ""]
    assert out.details["accuracy/rapidocr"][:3] == [1.0, 0.5, 0.0]
    assert out.details["matched"] == [3, 2, 0, 0, 0] and out.details["total"] == [3, 4, 1, 0, 0]
    assert out.details["ocr_text/rapidocr"][3] == ""  # never read: nothing to look for


def counted(reward: OCRReward) -> list[np.ndarray]:
    """The arrays `reward`'s RapidOCR backend reads from now on."""
    backend, arrays = reward.backends["rapidocr"], []
    backend.read = lambda image: arrays.append(image) or RapidOCRBackend.read(backend, image)
    return arrays


def test_identical_images_in_one_call_are_read_once(hello):
    """Same pixels (a PIL image and its array count as one), read once per call; each row still scored on its
    own targets, as score_one scores it alone."""
    reward = OCRReward()
    arrays = counted(reward)
    other = render_text_image("MOON")
    metadata = [{"text": [HELLO]}, {"text": ["HELLO"]}, {"text": ["MOON"]}, {"text": ["HELLO", "MOON"]}]
    out = reward([hello, np.asarray(hello), other, hello], ["p"] * 4, metadata)
    assert len(arrays) == 2
    images = [hello, hello, other, hello]
    alone = [reward.score_one(image, m["text"])["score"] for image, m in zip(images, metadata, strict=True)]
    assert out.scores.tolist() == alone == [1.0, 1.0, 1.0, 0.5]


def test_readings_are_kept_across_calls_up_to_cache_size(hello):
    """A later call reads only images it has not seen among the last `cache_size` distinct ones (the least recently
    used dropped first), and scores them as a first reading did; cache_size 0 keeps nothing past a call."""
    other, third = render_text_image("MOON"), render_text_image("SUN")
    reward = OCRReward(cache_size=2)
    arrays = counted(reward)
    first = reward([hello, other], ["p"] * 2, [{"text": [HELLO]}, {"text": ["MOON"]}])
    again = reward([other, hello], ["p"] * 2, [{"text": ["MOON"]}, {"text": [HELLO]}])
    assert len(arrays) == 2 and again.scores.tolist() == first.scores.tolist()[::-1] == [1.0, 1.0]
    assert again.details["ocr_text/rapidocr"] == ["MOON", HELLO]
    reward([third], ["p"], [{"text": ["SUN"]}])  # three distinct images: the least recently used (other) goes
    reward([hello, other], ["p"] * 2, [{"text": [HELLO]}, {"text": ["MOON"]}])
    assert len(arrays) == 4 and np.array_equal(arrays[-1], np.asarray(other))
    uncached = OCRReward(cache_size=0)
    arrays = counted(uncached)
    for _ in range(2):
        uncached([hello, hello], ["p"] * 2, [{"text": [HELLO]}] * 2)
    assert len(arrays) == 2  # once per call


def test_edit_distance_metric_rewards_the_exact_spelling_in_order():
    """The same readings under both metrics: recall (default, unchanged) forgives order and extra words,
    the order-aware metric is 1 only for the exact text."""
    recall, edit = OCRReward(), OCRReward(metric="edit_distance")
    images = [render_text_image("WORLD HELLO"), render_text_image("HELLO WORLD"), render_text_image("HELLO")]
    metadata = [{"text": ["HELLO WORLD"]}] * 3
    assert recall(images, ["p"] * 3, metadata).scores.tolist() == [1.0, 1.0, 0.5]
    out = edit(images, ["p"] * 3, metadata)
    assert out.scores.tolist() == pytest.approx([0.2, 1.0, 0.5])  # "worldhello" is 8 edits from "helloworld"
    assert out.details["matched"] == [2, 10, 5] and out.details["total"] == [10, 10, 10]


def test_the_class_needs_target_text():
    assert OCRReward.needs_text is True


def test_min_confidence_drops_lines(hello):
    strict = OCRReward(min_confidence=1.0)  # RapidOCR reads HELLO at ~0.999
    out = strict([hello], ["p"], [{"text": HELLO}])
    assert out.scores.tolist() == [0.0] and out.details["ocr_text/rapidocr"] == [""]


@pytest.mark.parametrize("combine, expected", [("max", 0.5), ("union", 1.0)])
def test_two_backends_joined_by_max_or_union(combine, expected):
    halves = [{"name": f"{__name__}.LeftHalfOCR"}, {"name": f"{__name__}.RightHalfOCR", "max_side": 640}]
    reward = OCRReward(backends=halves, combine=combine)
    image = render_text_image("NORTH" + " " * 16 + "SOUTH", font_size=36)
    out = reward([image], ["p"], [{"text": ["NORTH SOUTH"]}])
    assert out.scores.tolist() == [expected]
    left, right = f"{__name__}.LeftHalfOCR", f"{__name__}.RightHalfOCR"
    assert out.details[f"ocr_text/{left}"] == ["NORTH"] and out.details[f"ocr_text/{right}"] == ["SOUTH"]
    assert out.details[f"accuracy/{left}"] == [0.5] and out.details[f"accuracy/{right}"] == [0.5]


def test_repeated_backend_names_get_distinct_labels():
    reward = OCRReward(backends=["rapidocr", {"name": "rapidocr", "params": {"Det.box_thresh": 0.6}}])
    assert list(reward.backends) == ["rapidocr_0", "rapidocr_1"]
    assert reward.backends["rapidocr_1"].engine.cfg.Det.box_thresh == 0.6


def test_paddleocr_needs_local_model_folders_then_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="text_detection_model_dir"):
        PaddleOCRBackend(str(tmp_path / "missing_det"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="text_recognition_model_dir"):
        PaddleOCRBackend(str(tmp_path), str(tmp_path / "missing_rec"))
    if importlib.util.find_spec("paddleocr") is not None:
        pytest.skip("paddleocr is installed: its 'not installed' error cannot happen")
    with pytest.raises(ImportError, match=r"pip install 'xomni-rl\[paddle\]'"):
        PaddleOCRBackend(str(tmp_path), str(tmp_path))


def test_config_errors_name_the_key(tmp_path):
    node = {"_component_": "rewards.ocr.OCRReward",
            "backends": [{"name": "paddleocr", "text_detection_model_dir": str(tmp_path / "det"),
                          "text_recognition_model_dir": str(tmp_path)}]}
    with pytest.raises(ConfigError, match=r"rewards\.ocr: FileNotFoundError: text_detection_model_dir"):
        instantiate(node, "rewards.ocr")
    assert validate_component({"_component_": "rewards.ocr.OCRReward", "backends": ["rapidocr"]}, "r") == []


@pytest.mark.parametrize("kwargs, message", [
    ({"backends": []}, "non-empty"), ({"backends": "rapidocr"}, "non-empty"),
    ({"backends": ["tesseract"]}, "unknown OCR backend"), ({"backends": [{"max_side": 640}]}, "needs a name"),
    ({"combine": "mean"}, "combine"), ({"mode": "fr"}, "mode"), ({"min_confidence": 1.5}, "min_confidence"),
    ({"metric": "cer"}, "metric"), ({"metric": "edit_distance", "combine": "union"}, "needs metric 'recall'"),
    ({"cache_size": -1}, "cache_size"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OCRReward(**kwargs)


def test_target_texts_accepts_lists_tuples_arrays_and_one_string():
    assert target_texts({"text": ["A", "B"]}) == ["A", "B"]
    assert target_texts({"text": ("A",)}) == ["A"] and target_texts({"text": np.array(["A"])}) == ["A"]
    assert target_texts({"text": "A B"}) == ["A B"]
    assert target_texts({}) == [] and target_texts({"text": None}) == []


def test_bad_inputs_raise(reward, hello):
    with pytest.raises(ValueError, match="2 images"):
        reward([hello, hello], ["p"], [{}])
    with pytest.raises(TypeError, match="list of strings"):
        reward([hello], ["p"], [{"text": [42]}])
    with pytest.raises(ValueError, match="uint8 RGB"):
        build_backend("rapidocr").read(np.zeros((8, 8), np.uint8))
    assert OCRReward.score_range == (0.0, 1.0)
