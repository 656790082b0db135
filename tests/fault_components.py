"""A decoder and a policy that misbehave on purpose, named by import path (`tests.fault_components.X`) in
the training tests' configs, so faults are injected through the same door users plug their own code in.
(Misbehaving rewards are in tests/fault_rewards.py, which reward actors import without transformers.)

They run inside real Ray actors; nothing here is a mock of the project's code.
"""

from __future__ import annotations

import torch

from rl.decoder import DecodedImages, PatchDecoder
from rl.model.policy import TokenLogprobs, XOmniPolicy
from rl.model.tiny import tiny_policy_config


class NaNImages(PatchDecoder):
    """A PatchDecoder whose images are NaN for every row with an even seed (about half the rows)."""

    def __call__(self, tokens, grid, prompts, seeds) -> DecodedImages:
        out = super().__call__(tokens, grid, prompts, seeds)
        broken = torch.tensor([int(s) % 2 == 0 for s in seeds])
        images = out.images.clone()
        images[broken] = float("nan")
        return DecodedImages(images, out.valid & ~broken)


class NaNLossPolicy(XOmniPolicy):
    """A tiny policy whose learner log-probs (grad-enabled calls) are NaN on the listed call numbers."""

    nan_calls: frozenset[int] = frozenset()
    grad_calls: int = 0

    def token_logprobs(self, *args, **kwargs) -> TokenLogprobs:
        out = super().token_logprobs(*args, **kwargs)
        if not torch.is_grad_enabled():
            return out
        self.grad_calls += 1
        if self.grad_calls in self.nan_calls:
            return TokenLogprobs(out.logprobs * float("nan"), out.entropy)
        return out


def nan_loss_policy(nan_calls: list[int], seed: int = 0, **overrides) -> NaNLossPolicy:
    policy = NaNLossPolicy.from_config(tiny_policy_config(**overrides), seed=seed)
    policy.nan_calls = frozenset(nan_calls)
    return policy
