"""GRPO math: group-relative advantages and the clipped policy loss with a k3 KL penalty.

Pure tensor functions (no Ray, no I/O, no model): the learner calls them on log-probs it computed.

    advantages = group_advantages(rewards)                 # rewards [P, G] -> [P, G]
    loss, stats = grpo_loss(logp, old_logp, ref_logp,      # [B, T] per image token
                            advantages.reshape(-1), mask)  # [B] with B = P * G, mask [B, T]

Conventions follow TRL's GRPOTrainer (`scale_rewards`, `loss_type="grpo"` / `"bnpo"`) so results can be
compared with it; tests/test_grpo.py checks the equality numerically.
"""

from __future__ import annotations

from typing import Literal

import torch

Scale = Literal["group", "batch", "none"]
Aggregation = Literal["sequence", "token"]

# Rewards whose std is below this fraction of their magnitude are "all equal up to float rounding": the
# group carries no preference, and dividing rounding noise by its own std would turn it into +-1 advantages.
_ZERO_SPREAD_RTOL = 1e-6


def _row_stats(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, mean and unbiased std of each row of values [R, N] over its `valid` entries, each [R, 1].

    The std uses Bessel's correction (n - 1), like `torch.std` and TRL's `nanstd`, so advantages match the
    reference implementations; with G = 16 the biased estimate would only rescale them by ~3%. Rows with
    fewer than two valid entries get std 0 (their advantages are zeroed by the caller).
    """
    count = valid.sum(dim=1, keepdim=True)                                          # [R, 1]
    mean = torch.where(valid, values, 0).sum(dim=1, keepdim=True) / count.clamp(min=1)  # [R, 1]
    squares = torch.where(valid, values - mean, 0).square()                        # [R, N]
    std = (squares.sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()     # [R, 1]
    return count, mean, std


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: Scale = "group") -> torch.Tensor:
    """Group-relative advantages: (r - mean of its group) / std, ignoring NaN rewards.

    rewards: float [P, G] (P prompts, G samples each; NaN = could not be scored).
    Returns float [P, G], never NaN. A sample gets advantage 0 when its reward is NaN, when its group has
    fewer than two scorable samples, or when all scorable rewards of its group are equal (nothing to prefer).

    scale: "group" divides by the group's std + eps (GRPO, X-Omni); "batch" by the std of every scorable
    reward in the batch + eps (the "batch std" variant, robust when a group's spread is tiny); "none" only
    centres (Dr. GRPO). Stds are unbiased (n - 1), like `torch.std` and TRL.
    """
    if rewards.dim() != 2 or not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float tensor [prompts, G], got {rewards.dtype} "
                         f"{tuple(rewards.shape)}")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    valid = ~torch.isnan(rewards)                                               # [P, G]
    count, mean, group_std = _row_stats(rewards, valid)                         # each [P, 1]
    spread = group_std > _ZERO_SPREAD_RTOL * mean.abs().clamp(min=1.0)          # [P, 1]
    usable = valid & (count >= 2) & spread                                      # [P, G]

    if scale == "group":
        denominator = group_std + eps                                           # [P, 1]
    elif scale == "batch":
        _, _, batch_std = _row_stats(rewards.reshape(1, -1), valid.reshape(1, -1))  # [P, G] -> [1, P*G]
        denominator = batch_std + eps                                           # [1, 1]
    else:
        denominator = torch.ones_like(mean)                                     # [P, 1]
    return torch.where(usable, (rewards - mean) / denominator, 0)               # [P, G]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` [B, T] over the tokens where mask [B, T] is 1 (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    "sequence": mean over each sequence's tokens, then mean over sequences (GRPO, X-Omni; TRL's "grpo"): every
    image weighs the same whatever its token count. "token": sum over all tokens / number of tokens (DAPO;
    TRL's "bnpo"): every token weighs the same, so larger images count more. With fixed-size images (every
    row of the mask equal) the two agree. Over micro-batches, weight each micro-batch's loss by its share of
    the sequences ("sequence") or of the tokens ("token") to recover the full-batch loss.
    """
    if aggregation == "sequence":
        per_sequence = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # [B]
        return per_sequence.mean()
    return _masked_mean(per_token, mask)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    kl_coef: float = 0.01,
    aggregation: Aggregation = "sequence",
    entropy: torch.Tensor | None = None,
    clip_eps_high: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO surrogate plus kl_coef * k3 KL to the reference policy.

    logprobs: [B, T] log pi_theta of the sampled image tokens (carries the gradient).
    old_logprobs: [B, T] log-probs under the sampling policy; ref_logprobs: [B, T] under the frozen reference,
    or None. advantages: [B]. mask: [B, T], 1 on image tokens; masked positions must hold finite values.
    entropy: optional [B, T] per-token entropy, only logged.
    clip_eps_high: upper clip (DAPO's "clip higher"); None uses clip_eps on both sides.
    is_weights: optional [B, T] per-token weights on the policy-gradient term, no gradient: truncated
        importance sampling, min(pi_learner / pi_sampler, cap) when old_logprobs are the learner's own and the
        tokens came from a sampler that differs from it (TRL's and verl's correction for vLLM rollouts).

    Per token, with r = exp(logp - old):  pg = -min(r * A, clip(r, 1 - eps, 1 + eps_high) * A)  and
    k3 = exp(ref - logp) - (ref - logp) - 1, an unbiased, always >= 0 estimator of KL(pi_theta || pi_ref) on
    samples from pi_theta (Schulman's k3). No KL term when ref_logprobs is None or kl_coef is 0.
    Non-finite inputs are not sanitised: the caller detects a non-finite loss and skips the step.

    Returns the scalar loss and detached scalar stats: `loss/policy`, `loss/kl` (the kl_coef-weighted term,
    so loss = policy + kl), `kl/k3_mean` (when ref_logprobs is given), `clip/low_frac`, `clip/high_frac`
    (fraction of tokens whose gradient the clip removes), `ratio/mean|min|max`, `entropy/mean` (when given),
    `tis/weight_mean` (when is_weights is given).
    """
    if aggregation not in ("sequence", "token"):
        raise ValueError(f"aggregation must be 'sequence' or 'token', got {aggregation!r}")
    _check_shapes(logprobs, old_logprobs, ref_logprobs, advantages, mask, entropy, is_weights)
    eps_low, eps_high = clip_eps, clip_eps if clip_eps_high is None else clip_eps_high
    # float32 whatever the model's dtype: in bf16, exp(logp - old) near 1 moves in steps of ~0.008, too
    # coarse for a 0.2 clip and for a KL of ~1e-3. The gradient still flows back to bf16 log-probs.
    logprobs, old_logprobs = logprobs.float(), old_logprobs.float()              # [B, T]
    ref_logprobs = None if ref_logprobs is None else ref_logprobs.float()      # [B, T]
    mask = mask.float()                                                          # [B, T]
    adv = advantages.float().unsqueeze(1)                                        # [B] -> [B, 1]

    ratio = torch.exp(logprobs - old_logprobs)                                   # [B, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)                      # [B, T]
    pg_per_token = -torch.min(ratio * adv, clipped * adv)                        # [B, T]
    if is_weights is not None:
        pg_per_token = pg_per_token * is_weights.detach().float()                # [B, T]
    pg_loss = _aggregate(pg_per_token, mask, aggregation)
    kl_loss = logprobs.new_zeros(())

    stats: dict[str, torch.Tensor] = {}
    if ref_logprobs is not None:
        delta = ref_logprobs - logprobs                                          # [B, T]
        k3 = torch.exp(delta) - delta - 1                                        # [B, T]
        stats["kl/k3_mean"] = _masked_mean(k3, mask).detach()
        if kl_coef != 0:
            kl_loss = kl_coef * _aggregate(k3, mask, aggregation)

    with torch.no_grad():
        on = mask.bool()                                                         # [B, T]
        stats.update({
            "loss/policy": pg_loss.detach(),
            "loss/kl": kl_loss.detach(),
            "clip/low_frac": _masked_mean(((ratio < 1 - eps_low) & (adv < 0)).float(), mask),
            "clip/high_frac": _masked_mean(((ratio > 1 + eps_high) & (adv > 0)).float(), mask),
            "ratio/mean": _masked_mean(ratio, mask),
            "ratio/min": torch.where(on, ratio, torch.inf).min(),
            "ratio/max": torch.where(on, ratio, -torch.inf).max(),
        })
        if entropy is not None:
            stats["entropy/mean"] = _masked_mean(entropy.float(), mask)
        if is_weights is not None:
            stats["tis/weight_mean"] = _masked_mean(is_weights.float(), mask)
    return pg_loss + kl_loss, stats


def _check_shapes(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor | None,
    is_weights: torch.Tensor | None = None,
) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [B, T], got {tuple(logprobs.shape)}")
    named = {"old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs, "mask": mask, "entropy": entropy,
             "is_weights": is_weights}
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} must match logprobs {tuple(logprobs.shape)}, got {tuple(tensor.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logprobs.shape[0]}], got {tuple(advantages.shape)}")
