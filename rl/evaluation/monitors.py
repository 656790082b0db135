"""Reward-hacking monitors: image statistics, within-group diversity and each reward's part in the
advantages, as pure functions on tensors.

Reward hacking shows in the pictures before it shows in the reward curves: saturated colours, blown-out
or dark images, grid artifacts (high-frequency energy), noise or flat pictures (JPEG size), and collapse
(the G samples of a prompt turn into one picture). The rollout actors compute the per-image numbers where
the images are (`image_statistics`, `thumbnails`) and return them with the rollout result; the driver
reduces them per step (`batch_monitors`) and relates each reward to the advantages
(`advantage_correlations`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from rl.grpo import group_advantages

STATISTICS = ("saturation", "brightness", "hf_energy", "jpeg_bpp")
DIVERSITY = ("tokens", "images")
THUMBNAIL = 16
"""Side of the downsampled copies whose distances measure image diversity."""
HF_CUTOFF = 0.25
"""Radial frequency (cycles per pixel) above which energy counts as high-frequency: half the Nyquist limit."""
JPEG_QUALITY = 75
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def image_statistics(images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Per-image statistics of N uint8 images [H, W, 3]; each value is float32 [N].

    saturation: mean HSV saturation (max - min) / max over the pixels (0 on black), in [0, 1].
    brightness: mean luma / 255, in [0, 1].
    hf_energy: the share of the grey image's spectral energy (its mean removed) above HF_CUTOFF cycles
        per pixel, in [0, 1]; 0 for a flat image, 1 for a one-pixel checkerboard.
    jpeg_bpp: bits per pixel of the image saved as a JPEG at quality JPEG_QUALITY; flat pictures compress
        to almost nothing, noise hardly compresses. The JPEG header (some hundred bytes) is included, so
        compare images of one size.
    """
    rows = [_one_image(np.asarray(image, dtype=np.uint8)) for image in images]
    return {name: torch.tensor([row[i] for row in rows], dtype=torch.float32) for i, name in enumerate(STATISTICS)}


def _one_image(image: np.ndarray) -> tuple[float, float, float, float]:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be uint8 [H, W, 3], got shape {image.shape}")
    # Per-channel [H, W] planes: reductions over a trailing axis of 3 are several times slower in numpy.
    r, g, b = (image[..., c].astype(np.float32) / 255.0 for c in range(3))
    high, low = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)   # [H, W]
    saturation = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0).mean()
    luma = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b                               # [H, W]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    bpp = 8.0 * buffer.tell() / (image.shape[0] * image.shape[1])
    return float(saturation), float(luma.mean()), high_frequency_share(luma), bpp


def high_frequency_share(grey: np.ndarray, cutoff: float = HF_CUTOFF) -> float:
    """Share of the energy of grey [H, W] (mean removed) at radial frequencies > `cutoff` cycles/pixel."""
    power = np.abs(np.fft.rfft2(grey - grey.mean())) ** 2      # [H, W // 2 + 1]
    fy = np.fft.fftfreq(grey.shape[0])[:, None]                 # [H, 1]
    fx = np.fft.rfftfreq(grey.shape[1])[None, :]                # [1, W // 2 + 1]
    # rfft2 keeps one of each conjugate pair: columns other than 0 (and Nyquist, for even W) count twice.
    weight = np.full(power.shape[1], 2.0)
    weight[0] = 1.0
    if grey.shape[1] % 2 == 0:
        weight[-1] = 1.0
    energy = power * weight
    total = energy.sum()
    if total <= 1e-12 * grey.size:
        return 0.0
    return float(energy[np.hypot(fy, fx) > cutoff].sum() / total)


def thumbnails(images: Sequence[np.ndarray], size: int = THUMBNAIL) -> torch.Tensor:
    """uint8 [N, size, size, 3]: each image [H, W, 3] area-averaged to size x size (aspect not kept)."""
    small = [np.asarray(Image.fromarray(np.asarray(i, dtype=np.uint8)).resize((size, size), Image.BOX))
             for i in images]
    return torch.from_numpy(np.stack(small)) if small else torch.zeros(0, size, size, 3, dtype=torch.uint8)


def _pair_mean(distances: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i < j of both valid members: distances [P, G, G], members bool [P, G] -> [P]
    (NaN for a group with fewer than two members)."""
    g = distances.shape[1]
    upper = torch.ones(g, g, dtype=torch.bool).triu(1)                              # [G, G]
    pairs = upper & members[:, :, None] & members[:, None, :]                         # [P, G, G]
    count = pairs.sum(dim=(1, 2))                                                     # [P]
    total = torch.where(pairs, distances, 0).sum(dim=(1, 2))                          # [P]
    return torch.where(count > 0, total / count.clamp(min=1), float("nan"))


def token_diversity(tokens: torch.Tensor) -> torch.Tensor:
    """Mean pairwise Hamming distance within each group: tokens long [P, G, T] -> float [P] in [0, 1],
    the share of positions at which two samples of a group differ (0: the group collapsed to one sequence)."""
    equal = (tokens[:, :, None, :] == tokens[:, None, :, :]).float().mean(dim=-1)  # [P, G, G]
    members = torch.ones(tokens.shape[:2], dtype=torch.bool)                         # [P, G]
    return _pair_mean(1.0 - equal, members)


def image_diversity(small: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pairwise RMS pixel distance within each group of thumbnails: small uint8 [P, G, s, s, 3] ->
    float [P] in [0, 1] (0: identical pictures). Invalid images (valid bool [P, G] False) are left out;
    a group with fewer than two valid images gives NaN."""
    flat = small.flatten(2).float() / 255.0                                          # [P, G, D]
    # Exact differences (not the matrix-product shortcut), so a collapsed group measures exactly 0.
    distances = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(flat.shape[-1])
    members = torch.ones(small.shape[:2], dtype=torch.bool) if valid is None else valid
    return _pair_mean(distances, members)


def batch_monitors(stats: Mapping[str, torch.Tensor], small: torch.Tensor, tokens: torch.Tensor,
                   valid: torch.Tensor, group_size: int) -> dict[str, float]:
    """One step's monitors from its N = P * G rows (prompt-major, like the rollout).

    stats: name -> float [N] from `image_statistics`; small: uint8 [N, s, s, 3] thumbnails; tokens: long
    [N, T]; valid: bool [N]. Returns `monitor/<statistic>` (mean over valid images; NaN when none) and
    `monitor/diversity/tokens|images` (mean over groups).
    """
    n = tokens.shape[0]
    if n % group_size:
        raise ValueError(f"{n} rows do not split into groups of {group_size}")
    metrics = {f"monitor/{name}": values[valid].mean().item() if valid.any() else float("nan")
               for name, values in stats.items()}
    p = n // group_size
    by_group = {"tokens": token_diversity(tokens.view(p, group_size, -1)),             # [P]
                "images": image_diversity(small.view(p, group_size, *small.shape[1:]), valid.view(p, group_size))}
    for name, values in by_group.items():
        finite = values[torch.isfinite(values)]
        metrics[f"monitor/diversity/{name}"] = finite.mean().item() if finite.numel() else float("nan")
    return metrics


def correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of x [n] and y [n]; NaN when n < 2 or either has no spread."""
    if x.numel() < 2:
        return float("nan")
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    scale = (x.square().sum() * y.square().sum()).sqrt()
    return (x @ y / scale).item() if scale > 1e-12 else float("nan")


def advantage_correlations(scores: Mapping[str, torch.Tensor], advantages: torch.Tensor,
                           group_size: int) -> dict[str, float]:
    """How much of the advantages each reward explains: `monitor/advantage_corr/<name>`, the correlation
    of the reward's group-normalised column with the total advantage over the rows it scored.

    scores: name -> raw float [N] (NaN where it did not apply or failed); advantages: float [N], the
    group advantages of the combined reward. 1: this reward alone orders the samples of every group;
    about 0: it has no say (it is constant within groups, or outweighed); NaN: it scored too few rows.
    """
    out = {}
    for name, column in scores.items():
        normalised = group_advantages(column.float().view(-1, group_size)).view(-1)  # [P, G] -> [N]; NaN -> 0
        scored = torch.isfinite(column)
        out[f"monitor/advantage_corr/{name}"] = correlation(normalised[scored], advantages[scored])
    return out
