"""A weight-free, no-reference image quality score in [0, 1].

X-Omni scores "comprehensive quality" with a learned judge (UnifiedReward) that is not available
offline. This reward stands in for it with four classical measures on the luminance, each mapped to
[0, 1] by `saturate`:

- sharpness: edge acuity sqrt(E[Laplacian^2] / E[|gradient|^2]) after removing what white noise of
  the estimated sigma adds to both energies. It is about the inverse edge width in pixels (a 1-px
  step gives sqrt(2)), does not change with contrast, and noise does not read as sharpness.
- noise: signal-to-noise ratio std(luminance) / sigma, sigma by Donoho's wavelet rule (plus the
  8-bit rounding noise, so a flat image has SNR 0 and a faint 1-level pattern no clean signal).
- dynamic_range: the spread between the 1st and 99th luminance percentiles, in 8-bit levels.
- blockiness: mean absolute step across the 8x8 JPEG grid over the mean step inside the blocks.

Each term is nearly blind to the other terms' degradation (blur moves acuity, noise the SNR,
contrast the range, compression the grid), so a degraded image loses on its own term without gaining
much elsewhere. The total is their weighted mean. Known limits: blurring an image whose texture the
estimator reads as noise (a star field) also raises its noise term, and a policy could learn to
please the proxy (crisp flat cartoons score well): give it a modest weight next to learned rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pywt

from rewards.base import ImageLike, RewardOutput, to_uint8

TERMS = ("sharpness", "noise", "dynamic_range", "blockiness")
RAW = ("edge_acuity", "noise_sigma", "snr", "range_levels", "block_ratio")

# Half-saturation points: the raw value at which a term scores 0.5. Chosen on skimage's photos:
# clean ones score >= 0.7 on every term, strongly degraded ones <= 0.5 on their own term.
ACUITY_HALF = 0.8  # clean photos 1.2-1.8; Gaussian blur sigma 2 gives 0.4-0.55
SNR_HALF = 4.0  # clean photos 25-75; added RGB noise of sigma 20 gives 2.5-6
RANGE_HALF = 64.0  # clean photos 150-250 levels; contrast x0.4 gives 60-100
BLOCK_EXCESS_HALF = 0.5  # ratio - 1: clean 0-0.1, JPEG quality 30 ~0.5, quality 8 1.4-2.4

MIN_SIDE = 16  # smaller images carry no usable statistics: NaN (cannot score)
JPEG_BLOCK = 8
QUANTIZATION_NOISE = 12**-0.5  # std of 8-bit rounding, in levels: no 8-bit image has less noise
# The noise subtracted from the acuity energies uses 1.25 x sigma: the estimator reads clipped or
# resampled noise low, and over-subtracting can only lower acuity (natural images have acuity below
# white noise's sqrt(5)), so a noisy image never gains sharpness from an underestimate.
NOISE_MARGIN = 1.25
MAD_TO_SIGMA = 0.6745  # median |x| of a unit Gaussian
_DB2_HIGHPASS = np.array(pywt.Wavelet("db2").dec_hi, dtype=np.float32)


def saturate(value: float, half: float) -> float:
    """1 - 2^(-value / half): 0 at 0, 0.5 at `half`, 0.75 at 2*half, -> 1; strictly increasing."""
    return 1.0 - 2.0 ** (-max(value, 0.0) / half)


def luminance(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 RGB image [H, W, 3] -> float32 [H, W] in 8-bit levels."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def fit_long_side(luma: np.ndarray, resolution: int) -> np.ndarray:
    """Area-downscale luma [H, W] so its long side is at most `resolution`; never upscale.

    Interpolating up invents no detail and correlates the noise so the estimator misses it.
    """
    h, w = luma.shape
    scale = resolution / max(h, w)
    if scale >= 1.0:
        return luma
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(luma, size, interpolation=cv2.INTER_AREA)


def noise_sigma(luma: np.ndarray) -> float:
    """Gaussian noise std of luma [H, W]: median |HH| / 0.6745 (Donoho and Johnstone, 1994).

    HH is the finest diagonal db2 wavelet band, computed alone (~5x faster than skimage). As
    in skimage's `estimate_sigma`, exact zeros (flat or clipped areas) are left out; 0 if all are.
    """
    band = cv2.sepFilter2D(luma, cv2.CV_32F, _DB2_HIGHPASS, _DB2_HIGHPASS, borderType=cv2.BORDER_REFLECT)
    band = np.abs(band[2:-2:2, 2:-2:2])
    band = band[band > 1e-4]
    return float(np.median(band)) / MAD_TO_SIGMA if band.size else 0.0


def edge_acuity(luma: np.ndarray, sigma: float) -> float:
    """sqrt((E[Lap^2] - 20 s^2) / (E[|grad|^2] - 4 s^2)) of luma [H, W]; 0 when nothing is left.

    White noise of std s gives the 4-neighbour Laplacian variance 20 s^2 and the forward
    differences (x plus y) 4 s^2; s is sigma times NOISE_MARGIN.
    """
    noise_var = (NOISE_MARGIN * sigma) ** 2
    lap = cv2.Laplacian(luma, cv2.CV_32F, ksize=1)
    lap_energy = float(np.mean(lap * lap)) - 20.0 * noise_var
    grad_energy = float(np.mean(np.diff(luma, axis=1) ** 2) + np.mean(np.diff(luma, axis=0) ** 2))
    grad_energy -= 4.0 * noise_var
    if lap_energy <= 0.0 or grad_energy <= 1e-6:
        return 0.0
    return math.sqrt(lap_energy / grad_energy)


def range_levels(luma: np.ndarray) -> float:
    """99th minus 1st percentile of luma [H, W], in 8-bit levels (from a 256-bin histogram)."""
    counts = np.cumsum(np.bincount(np.clip(luma, 0, 255).astype(np.uint8).ravel(), minlength=256))
    low, high = np.searchsorted(counts, [0.01 * counts[-1], 0.99 * counts[-1]])
    return float(high - low)


def block_ratio(luma: np.ndarray) -> float:
    """Mean |step| across the 8-px JPEG grid / mean |step| inside blocks, for luma [H, W].

    Measured on the original pixel grid, where JPEG's blocks live. One level is added to both
    means so that flat images read 1 (no grid) instead of 0/0.
    """
    across, inside = 0.0, 0.0
    for axis in (0, 1):
        steps = np.abs(np.diff(luma, axis=axis))
        at_grid = np.take(steps, np.arange(JPEG_BLOCK - 1, steps.shape[axis], JPEG_BLOCK), axis=axis)
        across += float(at_grid.mean()) / 2
        inside += float(steps.sum() - at_grid.sum()) / (steps.size - at_grid.size) / 2
    return (across + 1.0) / (inside + 1.0)


def measure(image: np.ndarray, resolution: int) -> dict[str, float]:
    """The raw measurements `RAW` of a uint8 RGB image [H, W, 3] (see the module docstring)."""
    native = luminance(image)
    luma = fit_long_side(native, resolution)
    sigma = noise_sigma(luma)
    return {
        "edge_acuity": edge_acuity(luma, sigma),
        "noise_sigma": sigma,
        "snr": float(luma.std()) / math.hypot(sigma, QUANTIZATION_NOISE),
        "range_levels": range_levels(luma),
        "block_ratio": block_ratio(native),
    }


def term_scores(raw: Mapping[str, float]) -> dict[str, float]:
    """Each term of `TERMS` in [0, 1] from the raw measurements."""
    return {
        "sharpness": saturate(raw["edge_acuity"], ACUITY_HALF),
        "noise": saturate(raw["snr"], SNR_HALF),
        "dynamic_range": saturate(raw["range_levels"], RANGE_HALF),
        "blockiness": 1.0 - saturate(raw["block_ratio"] - 1.0, BLOCK_EXCESS_HALF),
    }


class QualityReward:
    """Weighted mean of the four quality terms; `score_range = (0, 1)`.

    Args:
        resolution: long side (px) that larger images are area-downscaled to before measuring.
            Blur, noise and blocking are pixel-scale defects that a low-resolution view hides (why
            X-Omni judges quality at high resolution); the cap fixes the measuring scale of large
            images and bounds the cost. Smaller images are measured as they are (never upscaled).
        sharpness_weight, noise_weight, dynamic_range_weight, blockiness_weight: term weights
            (>= 0, not all 0). Blockiness weighs less by default: diffusion decoders rarely make
            JPEG grids, and it still ranks compressed images below clean ones.
        num_workers: threads that measure the images of a batch in parallel (OpenCV and NumPy
            release the GIL); 0 measures them in the calling thread.
    """

    score_range = (0.0, 1.0)

    def __init__(
        self,
        resolution: int = 1024,
        sharpness_weight: float = 1.0,
        noise_weight: float = 1.0,
        dynamic_range_weight: float = 1.0,
        blockiness_weight: float = 0.5,
        num_workers: int = 0,
    ):
        if resolution < MIN_SIDE:
            raise ValueError(f"resolution must be >= {MIN_SIDE}, got {resolution}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        values = (sharpness_weight, noise_weight, dynamic_range_weight, blockiness_weight)
        weights = dict(zip(TERMS, values, strict=True))
        total = sum(weights.values())
        if min(weights.values()) < 0 or total <= 0:
            raise ValueError(f"term weights must be >= 0 and not all 0, got {weights}")
        self.resolution = resolution
        self.weights = {name: w / total for name, w in weights.items()}
        self.num_workers = num_workers

    def score_one(self, image: ImageLike) -> dict[str, float]:
        """{"total", *TERMS, *RAW} for one image; all NaN when a side is below 16 px."""
        array = to_uint8(image)
        if min(array.shape[:2]) < MIN_SIDE:
            return dict.fromkeys(("total", *TERMS, *RAW), math.nan)
        raw = measure(array, self.resolution)
        terms = term_scores(raw)
        total = sum(self.weights[name] * terms[name] for name in TERMS)
        return {"total": total, **terms, **raw}

    def __call__(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
    ) -> RewardOutput:
        """Scores [N] in [0, 1]; `details` holds every term score and raw measurement per image."""
        if not len(images) == len(prompts) == len(metadata):
            raise ValueError(f"got {len(images)} images, {len(prompts)} prompts, {len(metadata)} metadata")
        if self.num_workers > 0 and len(images) > 1:
            with ThreadPoolExecutor(self.num_workers) as pool:
                results = list(pool.map(self.score_one, images))
        else:
            results = [self.score_one(image) for image in images]
        details = {key: [r[key] for r in results] for key in (*TERMS, *RAW)}
        return RewardOutput(np.array([r["total"] for r in results], dtype=np.float32), details)
