"""A weight-free, no-reference image quality score in [0, 1].

X-Omni scores "comprehensive quality" with a learned judge (UnifiedReward) that is not available
offline. This reward stands in for it with four classical measures on the luminance, each mapped to
[0, 1] by `saturate`:

- sharpness: edge acuity sqrt(E[Laplacian^2] / E[|gradient|^2]) after removing what white noise
  could add to both energies (all of the finest wavelet band counts as possible noise here). It is
  about the inverse edge width in pixels (a 1-px step gives sqrt(2)), does not change with
  contrast, and noise does not read as sharpness.
- noise: signal-to-noise ratio std(luminance) / sigma, sigma the white noise the two finest wavelet
  scales show (texture that grows at the coarser scale is not noise), plus the 8-bit rounding
  noise, so a flat image has SNR 0 and a faint 1-level pattern no clean signal.
- dynamic_range: the spread between the 1st and 99th luminance percentiles, in 8-bit levels.
- blockiness: per 8-px JPEG grid line, the mean step across it over the mean step inside its
  blocks; the median over lines.

Each term is nearly blind to the other terms' degradation (blur moves acuity, noise the SNR,
contrast the range, compression the grid), so a degraded image loses on its own term without gaining
much elsewhere. The total is their weighted mean. Flat areas count as noise-free and a lone edge on
the JPEG grid as no blocking, so rendered text and graphics score as crisp as they are.

Validated by `scripts/validate_quality.py` (clean image above its degraded copy, fraction of pairs;
blur sigma 0.5-4 px, RGB noise sigma 3-40, JPEG quality 10-70): blur / noise / JPEG pairs ranked
right on 16 skimage photos 0.89 / 1.00 / 0.81 (the previous version: 0.83 / 1.00 / 0.75), on 12
drawn signs 1.00 / 1.00 / 0.58 (0.15 / 0.38 / 0.00), text pages 1.00 / 1.00 / 0.64 (0.19 / 0.21 /
0.00) and illustrations 1.00 / 1.00 / 0.97 (0.50 / 0.58 / 0.50); 12 other drawn images of each kind,
not used to choose the constants, score the same on blur and noise. It does not measure aesthetics,
composition, prompt fidelity, colour or artefacts off the pixel grid (warped shapes, garbled
glyphs). Known limits: a motion-blurred noisy photo (skimage's clock) and a star field rank their
blurred copies higher, JPEG at quality 30-70 of text and signs is often not noticed, and a policy
could learn to please the proxy (crisp flat cartoons score well): give it a modest weight next to
learned rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pywt

from rewards.base import ImageLike, RewardOutput, check_batch, to_uint8

TERMS = ("sharpness", "noise", "dynamic_range", "blockiness")
RAW = ("edge_acuity", "fine_sigma", "noise_sigma", "snr", "range_levels", "block_ratio")

# Half-saturation points: the raw value at which a term scores 0.5. Chosen on skimage's photos:
# clean ones score >= 0.7 on most terms, strongly degraded ones <= 0.5 on their own term.
ACUITY_HALF = 0.8  # clean photos 1.2-1.8, drawn images 1.4-1.8; Gaussian blur sigma 2 gives 0-0.6
# clean photos 10-200 (median 100), drawn images 70-280; RGB noise of sigma 3 gives mostly 7-60, 20 1.4-10.
# 4 (before) left sigma-3 noise on a sign nearly free (SNR 40 scored 0.999 against 1.0).
SNR_HALF = 8.0
RANGE_HALF = 64.0  # clean photos 150-250 levels; contrast x0.4 gives 60-100
BLOCK_EXCESS_HALF = 0.5  # ratio - 1: clean 0-0.1, JPEG quality 30 ~0.5, quality 8 1.4-2.4

MIN_SIDE = 16  # smaller images carry no usable statistics: NaN (cannot score)
JPEG_BLOCK = 8
QUANTIZATION_NOISE = 12**-0.5  # std of 8-bit rounding, in levels: no 8-bit image has less noise
# The noise subtracted from the acuity energies uses 1.25 x sigma: the estimator reads clipped or
# resampled noise low, and over-subtracting can only lower acuity (natural images have acuity below
# white noise's sqrt(5)), so a noisy image never gains sharpness from an underestimate.
NOISE_MARGIN = 1.25
# Detail energy per wavelet coefficient grows ~4x per coarser scale in natural images (a 1/f^2
# spectrum). Assuming 6x counts a little fine detail as noise; chosen with validate_quality.py: with
# 4, sigma-3 noise on two textured photos (coins, page) read as 0; with 7, clean grass read as noisy,
# so blurring it raised its score.
DETAIL_GROWTH = 6.0
MAD_TO_SIGMA = 0.6745  # median |x| of a unit Gaussian
_DB2_HIGHPASS = np.array(pywt.Wavelet("db2").dec_hi, dtype=np.float32)
_DB2_LOWPASS = np.array(pywt.Wavelet("db2").dec_lo, dtype=np.float32)


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


def noise_sigmas(luma: np.ndarray) -> tuple[float, float]:
    """(fine, noise): two estimates of the white-noise std s in luma [H, W], in 8-bit levels.

    fine = m1 = median |HH1| / 0.6745 (Donoho and Johnstone, 1994), HH1 the finest diagonal db2
    band: its typical size, fine texture included, so at least the noise. Flat areas count: a
    graphic's flat background holds no noise, and leaving its zero coefficients out (as this
    reward once did) read a clean sign's text edges as noise of 4.4 levels.

    noise: the part of m1 that detail seen in the next band (m2, from HH2) does not explain. White
    noise has the same std in every band of an orthonormal wavelet, while detail energy grows by
    about K = DETAIL_GROWTH per coarser scale: m1^2 = s^2 + d^2 and m2^2 = s^2 + K d^2 give
    s^2 = (K m1^2 - m2^2) / (K - 1), kept in [0, m1^2].
    """
    def band_sigma(band: np.ndarray) -> float:  # band at full resolution: keep the decimated grid
        return float(np.median(np.abs(band[2:-2:2, 2:-2:2]))) / MAD_TO_SIGMA

    def filtered(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)

    fine = band_sigma(filtered(luma, _DB2_HIGHPASS))
    coarse = np.ascontiguousarray(filtered(luma, _DB2_LOWPASS)[1::2, 1::2])  # LL1 [H/2, W/2]
    next_band = band_sigma(filtered(coarse, _DB2_HIGHPASS))
    white = (DETAIL_GROWTH * fine**2 - next_band**2) / (DETAIL_GROWTH - 1)
    return fine, min(fine, math.sqrt(max(white, 0.0)))


def edge_acuity(luma: np.ndarray, sigma: float) -> float:
    """sqrt((E[Lap^2] - 20 s^2) / (E[|grad|^2] - 4 s^2)) of luma [H, W]; 0 when nothing is left.

    White noise of std s gives the 4-neighbour Laplacian variance 20 s^2 and the forward
    differences (x plus y) 4 s^2; s is sigma (levels) times NOISE_MARGIN.
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
    """Median over the 8-px JPEG grid lines of luma [H, W] of (mean |step| across the line + 1) /
    (mean |step| at the 7 positions inside its block + 1), rows and columns pooled.

    Measured on the original pixel grid, where JPEG's blocks live. JPEG lifts every grid line; a
    graphic's frame or edge that happens to fall on the grid lifts a few, which the median ignores
    (a mean over all lines let one aligned frame read as heavy blocking). The one level added to
    both keeps flat lines at 1 instead of 0/0.
    """
    ratios = []
    for axis in (0, 1):
        profile = np.abs(np.diff(luma, axis=axis)).mean(axis=1 - axis)  # [L - 1]: mean |step| per position
        blocks = profile[: len(profile) // JPEG_BLOCK * JPEG_BLOCK].reshape(-1, JPEG_BLOCK)
        ratios.append((blocks[:, -1] + 1.0) / (blocks[:, :-1].mean(axis=1) + 1.0))
    return float(np.median(np.concatenate(ratios)))


def measure(image: np.ndarray, resolution: int) -> dict[str, float]:
    """The raw measurements `RAW` of a uint8 RGB image [H, W, 3] (see the module docstring)."""
    native = luminance(image)
    luma = fit_long_side(native, resolution)
    fine, sigma = noise_sigmas(luma)
    # Acuity discounts all that could be noise (fine, and 8-bit rounding, which made a heavy blur
    # read sharper than a light one), so noise never reads as detail; the SNR divides by the white
    # part only, so fine texture, which blur removes, never reads as noise.
    return {
        "edge_acuity": edge_acuity(luma, math.hypot(fine, QUANTIZATION_NOISE)),
        "fine_sigma": fine,
        "noise_sigma": sigma,
        "snr": float(luma.std()) / math.hypot(sigma, QUANTIZATION_NOISE),
        # a 3x3 mean first: noise widens the percentiles (a noisy sign gained range) and this cuts it by 3
        "range_levels": range_levels(cv2.blur(luma, (3, 3))),
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
        metadata = check_batch(images, prompts, metadata)
        if self.num_workers > 0 and len(images) > 1:
            with ThreadPoolExecutor(self.num_workers) as pool:
                results = list(pool.map(self.score_one, images))
        else:
            results = [self.score_one(image) for image in images]
        details = {key: [r[key] for r in results] for key in (*TERMS, *RAW)}
        return RewardOutput(np.array([r["total"] for r in results], dtype=np.float32), details)
