"""The no-reference quality reward ranks clean photos above degraded copies, on skimage's photos."""

import io
import math

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from skimage.restoration import estimate_sigma

from rewards.quality import TERMS, QualityReward, luminance, noise_sigma
from rl.config import validate_component

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def low_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    return (image.astype(np.float32) * factor + 127.5 * (1 - factor)).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


@pytest.fixture(scope="module")
def reward():
    return QualityReward()


@pytest.mark.parametrize("name", PHOTOS)
def test_clean_photo_beats_each_degradation_on_its_own_term(reward, name):
    clean = photo(name)
    versions = {
        "sharpness": blurred(clean, 2.0),
        "noise": noisy(clean, 20.0),
        "dynamic_range": low_contrast(clean, 0.4),
        "blockiness": jpeg(clean, 8),
    }
    reference = reward.score_one(clean)
    for term, image in versions.items():
        degraded = reward.score_one(image)
        assert degraded["total"] < reference["total"], (name, term, degraded["total"], reference["total"])
        assert degraded[term] < reference[term] - 0.2, (name, term, degraded[term], reference[term])


@pytest.mark.parametrize("degrade, strengths", [(blurred, (0.7, 1.5, 3.0)), (noisy, (5.0, 15.0, 40.0))])
def test_score_falls_as_degradation_grows(reward, degrade, strengths):
    clean = photo("astronaut")
    scores = [reward.score_one(image)["total"] for image in [clean] + [degrade(clean, s) for s in strengths]]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores


def test_noise_does_not_read_as_sharpness(reward):
    clean = photo("coffee")
    acuity = reward.score_one(clean)["edge_acuity"]
    assert reward.score_one(noisy(clean, 20.0))["edge_acuity"] <= acuity * 1.02


def test_noise_sigma_matches_skimage_and_recovers_added_noise():
    rng = np.random.default_rng(1)
    luma = luminance(photo("chelsea"))
    ramp = np.tile(np.linspace(40, 200, 400, dtype=np.float32), (300, 1))
    for sigma in (2.0, 5.0, 15.0):
        with_noise = luma + rng.normal(0, sigma, luma.shape).astype(np.float32)
        assert noise_sigma(with_noise) == pytest.approx(float(estimate_sigma(with_noise)), rel=0.03)
        with_noise[:, :200] = 0  # exact zeros (a flat, clipped area) are left out, as skimage does
        assert noise_sigma(with_noise) == pytest.approx(float(estimate_sigma(with_noise)), rel=0.03)
        assert noise_sigma(ramp + rng.normal(0, sigma, ramp.shape).astype(np.float32)) == pytest.approx(
            sigma, rel=0.03)
    assert noise_sigma(np.zeros((64, 64), np.float32)) == 0.0


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_images_score_low_and_finite(reward, value):
    out = reward([np.full((64, 96, 3), value, np.uint8)], [""], [{}])
    assert bool(out.scores.isfinite().all()) and out.scores[0] < 0.2
    assert all(math.isfinite(v[0]) for v in out.details.values())


def test_pure_noise_scores_below_every_photo(reward):
    static = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert reward.score_one(static)["total"] < 0.5 < min(reward.score_one(photo(n))["total"] for n in PHOTOS)


def test_faint_pattern_is_no_clean_signal(reward):
    step = np.full((64, 64, 3), 128, np.uint8)
    step[:, 32:] = 129  # a 1-level step: only 8-bit rounding noise stands between it and flat
    assert reward.score_one(step)["noise"] < 0.5


def test_never_nan_for_valid_images_nan_below_16_px(reward):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), photo("rocket")[:17, :300],
              luminance(photo("camera")).astype(np.uint8), Image.fromarray(photo("chelsea")).convert("L")]
    out = reward(images, [""] * 4, [{}] * 4)
    assert bool(out.scores.isfinite().all()) and ((out.scores >= 0) & (out.scores <= 1)).all()
    tiny = reward([np.zeros((8, 300, 3), np.uint8)], [""], [{}])
    assert math.isnan(tiny.scores[0]) and math.isnan(tiny.details["sharpness"][0])


def test_batch_details_threads_and_weights(reward):
    images = [photo("astronaut"), Image.fromarray(photo("coffee")), blurred(photo("rocket"), 2.0)]
    out = reward(images, ["a", "b", "c"], [{}] * 3)
    assert out.scores.shape == (3,) and set(TERMS) <= set(out.details)
    assert all(len(v) == 3 for v in out.details.values())
    threaded = QualityReward(num_workers=2)(images, ["a", "b", "c"], [{}] * 3)
    assert threaded.scores.tolist() == out.scores.tolist()
    sharp_only = QualityReward(noise_weight=0, dynamic_range_weight=0, blockiness_weight=0)
    assert sharp_only.score_one(images[0])["total"] == pytest.approx(out.details["sharpness"][0])
    assert QualityReward.score_range == (0.0, 1.0)


def test_resolution_caps_the_measuring_scale_only_for_larger_images():
    image = photo("astronaut")  # 512 x 512
    at_native = QualityReward(resolution=1024).score_one(image)
    assert QualityReward(resolution=512).score_one(image) == at_native
    halved = QualityReward(resolution=256).score_one(image)
    assert halved["edge_acuity"] != at_native["edge_acuity"]
    assert halved["block_ratio"] == at_native["block_ratio"]  # JPEG's grid is read at native pixels


@pytest.mark.parametrize("kwargs", [{"resolution": 8}, {"num_workers": -1}, {"noise_weight": -1.0},
                                    {"sharpness_weight": 0, "noise_weight": 0, "dynamic_range_weight": 0,
                                     "blockiness_weight": 0}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        QualityReward(**kwargs)


def test_config_validation_checks_the_kwargs():
    node = {"_component_": "rewards.quality.QualityReward", "resolution": 768, "num_workers": 2}
    assert validate_component(node, "rewards.quality") == []
    problems = validate_component({**node, "sharpnes_weight": 2.0}, "rewards.quality")
    assert len(problems) == 1 and problems[0].startswith("rewards.quality.sharpnes_weight: unknown argument")


def test_mismatched_batch_raises(reward):
    with pytest.raises(ValueError, match="2 images, 1 prompts"):
        reward([photo("coffee")] * 2, ["a"], [{}, {}])
