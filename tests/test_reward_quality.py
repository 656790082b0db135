"""The no-reference quality reward ranks clean images above degraded copies: skimage's photos, and signs,
text pages and illustrations drawn offline by scripts/validate_quality.py (its small `--quick` set)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.restoration import estimate_sigma

from core.components import validate_component
from rewards.quality import TERMS, QualityReward, luminance, noise_sigmas

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from validate_quality import DEGRADATIONS, blurred, evaluation_set, jpeg, noisy, photo, sign  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")
# Fractions of the --quick set's photo pairs ranked right by the reward before drawn images were validated
# (`python scripts/validate_quality.py --quick --baseline f0873a8`): grass's blurred copies won then.
PHOTO_BASELINE = {"blur": 0.8, "noise": 1.0}


def low_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    return (image.astype(np.float32) * factor + 127.5 * (1 - factor)).astype(np.uint8)


@pytest.fixture(scope="module")
def reward():
    return QualityReward()


@pytest.fixture(scope="module")
def quick_report():
    """The validation script's JSON on its --quick set (5 photos, 4 signs, 4 text pages, 4 illustrations)."""
    result = subprocess.run([sys.executable, "scripts/validate_quality.py", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_sharp_beats_blurred_and_noisy_on_every_kind(quick_report):
    """>= 90% of (clean, degraded) pairs per kind; the reward before this check ranked 0-63% of the drawn ones."""
    assert set(quick_report["correct"]) == {"photo", "sign", "text", "illustration"}
    for kind, per_degradation in quick_report["correct"].items():
        for how in ("blur", "noise"):
            assert per_degradation[how]["current"] >= 0.9, (kind, how, quick_report["failures"])
    assert quick_report["images"] == {"photo": 5, "sign": 4, "text": 4, "illustration": 4}
    assert quick_report["ms_per_1024px_image"]["current"]["wall"] > 0


def test_photo_ranking_is_kept(quick_report):
    for how, before in PHOTO_BASELINE.items():
        assert quick_report["correct"]["photo"][how]["current"] >= before, quick_report["failures"]


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


@pytest.mark.parametrize("degrade, how", [(blurred, "blur"), (noisy, "noise")])
def test_score_falls_as_degradation_grows_on_every_kind(reward, degrade, how):
    for kind, images in evaluation_set(quick=True).items():
        for name, clean in images[:2]:
            copies = [degrade(clean, strength) for strength in DEGRADATIONS[how]]
            scores = [reward.score_one(image)["total"] for image in [clean, *copies]]
            assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), (kind, name, scores)


def test_noise_does_not_read_as_sharpness(reward):
    clean = photo("coffee")
    acuity = reward.score_one(clean)["edge_acuity"]
    assert reward.score_one(noisy(clean, 20.0))["edge_acuity"] <= acuity * 1.02


def test_rounding_steps_of_a_gradient_are_not_edges(reward):
    """A smooth ramp's 1-level rounding steps gave it the acuity of a 1-px edge, sqrt(2), before."""
    ramp = np.tile(np.linspace(0, 255, 1000), (200, 1)).round().astype(np.uint8)
    assert reward.score_one(ramp)["edge_acuity"] == 0.0


def test_an_edge_on_the_jpeg_grid_is_not_blocking(reward):
    step = np.full((256, 256, 3), 240, np.uint8)
    step[:, 128:] = 20  # between columns 127 and 128, on the 8-px grid: once read as heavy blocking
    assert reward.score_one(step)["block_ratio"] == 1.0
    assert reward.score_one(jpeg(photo("astronaut"), 30))["block_ratio"] > 1.3


def test_noise_barely_widens_the_range(reward):
    board = sign(0)  # two flat colours: noise would move the 1st and 99th percentiles by about 2 sigma
    assert reward.score_one(noisy(board, 20.0))["range_levels"] - reward.score_one(board)["range_levels"] < 15


def test_noise_sigmas_match_skimage_and_recover_added_noise():
    rng = np.random.default_rng(1)
    luma = luminance(photo("chelsea"))
    ramp = np.tile(np.linspace(40, 200, 400, dtype=np.float32), (300, 1))
    for sigma in (2.0, 5.0, 15.0):
        with_noise = luma + rng.normal(0, sigma, luma.shape).astype(np.float32)
        fine, noise = noise_sigmas(with_noise)  # no exact zeros here, so skimage's rule gives the same
        assert fine == pytest.approx(float(estimate_sigma(with_noise)), rel=0.03)
        assert noise == pytest.approx(sigma, rel=0.2)
        on_ramp = noise_sigmas(ramp + rng.normal(0, sigma, ramp.shape).astype(np.float32))
        assert on_ramp == pytest.approx((sigma, sigma), rel=0.05)
    assert noise_sigmas(np.zeros((64, 64), np.float32)) == (0.0, 0.0)


def test_flat_areas_hold_no_noise_and_texture_is_not_noise():
    rng = np.random.default_rng(2)
    board = luminance(sign(0))  # flat board and frame, sharp text: leaving the flat areas out read 4.4
    assert noise_sigmas(board) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert noise_sigmas(board + rng.normal(0, 3, board.shape).astype(np.float32)) == pytest.approx((3, 3), rel=0.1)
    grass = luminance(photo("grass"))  # its texture fills the finest band but grows at the next: not noise
    fine, noise = noise_sigmas(grass)
    assert fine > 8 and noise == 0.0
    assert noise_sigmas(grass + rng.normal(0, 8, grass.shape).astype(np.float32))[1] == pytest.approx(8, rel=0.25)


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
    with pytest.raises(ValueError, match="2 images and 1 prompts"):
        reward([photo("coffee")] * 2, ["a"], [{}, {}])
