"""X-Omni's TeaCache: reuse the block stack's last residual on denoising steps where its input barely moved.

X-Omni's `teacache_forward` (in its En decoder file; the Zh file has none) measures, at every denoising step, how
much the first block's modulated image input (`transformer_blocks[0].norm1` at this step's temb) changed since the
previous step: rel = mean|m_t - m_{t-1}| / mean|m_{t-1}|, rescaled by a fixed polynomial fitted for FLUX. The rescaled
values accumulate; while the sum stays under the threshold the step adds the previous residual (block-stack
output minus input) to its input instead of running the blocks, and when it reaches the threshold the blocks
run and the sum restarts at 0. The first and the last step always run.

X-Omni keeps one state for the whole batch (its pipeline decodes one image per call, both CFG branches in one
batch). Here the state is per image, over that image's CFG rows: the same numbers as X-Omni's for one image,
and an image never depends on its batch companions. Only the rows of the images that run go through the
blocks, so the compute saved is real in a mixed batch. A `TeaCache` lives for one decode pass (one chunk of
one call): nothing carries over to the next call, so a resumed run decodes the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

# X-Omni's (TeaCache's) polynomial from the relative L1 change of the modulated input to the output's change.
RESCALE = np.poly1d([4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01])

# Runs the block stack on some rows: (hidden [r, L_img, D] of those rows, their row indices [r], or None for all
# rows) -> [r, L_img, D].
BlockStack = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class TeaCache:
    """The state of one decode pass of `num_images` images over `num_steps` denoising steps.

    Rows are laid out [branch, image] as the pipeline batches them: rows 0..n-1 the positive CFG branch, n..2n-1
    the negative one when CFG runs (a pass may drop the negative rows after some steps: the state keeps the
    positive ones). `threshold` 0 runs every step (the counters still count).

    calls / skipped: rows whose block stack ran / was replaced by the cached residual, summed over the steps (one
    row is one image in one CFG branch at one denoising step: the unit the transformer's cost grows with).
    """

    def __init__(self, threshold: float, num_steps: int, num_images: int):
        if threshold < 0 or num_steps < 1 or num_images < 1:
            raise ValueError(f"TeaCache needs threshold >= 0, num_steps >= 1 and num_images >= 1, got "
                             f"{threshold}, {num_steps}, {num_images}")
        self.threshold, self.num_steps, self.num_images = float(threshold), num_steps, num_images
        self.step = 0
        self.accumulated = [0.0] * num_images
        self.previous_modulated: torch.Tensor | None = None  # [rows, L_img, D]
        self.previous_residual: torch.Tensor | None = None  # [rows, L_img, D]
        self.calls = self.skipped = 0

    def __call__(self, hidden: torch.Tensor, modulated: torch.Tensor, blocks: BlockStack) -> torch.Tensor:
        """One denoising step's block stack: hidden [rows, L_img, D] (the image stream after `x_embedder`) and
        modulated [rows, L_img, D] (the first block's norm1 output) -> the stack's image output [rows, L_img, D],
        computed by `blocks` for the images that run and input + cached residual for the others."""
        if self.step >= self.num_steps:
            raise RuntimeError(f"TeaCache made for {self.num_steps} steps was called a {self.step + 1}th time")
        run = self._images_to_run(modulated)
        self.step += 1
        branches = hidden.shape[0] // self.num_images
        self.calls += branches * sum(run)
        self.skipped += branches * (len(run) - sum(run))
        if all(run):
            output = blocks(hidden, None)
        else:
            rows = torch.tensor([b * self.num_images + i for b in range(branches)
                                 for i in range(self.num_images) if run[i]], device=hidden.device, dtype=torch.long)
            output = hidden + self._rows(self.previous_residual, branches)
            if rows.numel():
                output[rows] = blocks(hidden[rows], rows)
        residual = output - hidden
        if self.previous_residual is None or all(run):
            self.previous_residual = residual
        else:
            self.previous_residual = self._rows(self.previous_residual, branches).clone()
            self.previous_residual[rows] = residual[rows]
        return output

    def _images_to_run(self, modulated: torch.Tensor) -> list[bool]:
        """Which images run their blocks at this step; updates the accumulated distances and keeps `modulated`."""
        n = self.num_images
        previous, self.previous_modulated = self.previous_modulated, modulated
        if self.step in (0, self.num_steps - 1) or previous is None or self.threshold == 0:
            self.accumulated = [0.0] * n
            return [True] * n
        previous = self._rows(previous, modulated.shape[0] // n)
        # [rows, L, D] -> [n, branches * L * D]: X-Omni's means, taken over each image's own rows.
        change = _per_image(modulated - previous, n).abs().mean(-1) / _per_image(previous, n).abs().mean(-1)
        run = []
        for i, rel in enumerate(change.tolist()):  # one host read per step, as X-Omni's `.item()`
            self.accumulated[i] += float(RESCALE(rel))
            run.append(self.accumulated[i] >= self.threshold)
            if run[-1]:
                self.accumulated[i] = 0.0
        return run

    def _rows(self, state: torch.Tensor, branches: int) -> torch.Tensor:
        """A stored [rows', L, D] state restricted to the first `branches` CFG branches."""
        return state[: branches * self.num_images]


def _per_image(rows: torch.Tensor, num_images: int) -> torch.Tensor:
    """[branches * n, L, D] laid out [branch, image] -> [n, branches * L * D]."""
    return rows.reshape(-1, num_images, rows[0].numel()).transpose(0, 1).reshape(num_images, -1)
