"""GRPO math: hand-computed cases, NaN handling, masking, gradient signs, and equality with TRL 1.16."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import nanstd

from rl.grpo import group_advantages, grpo_loss

NAN = float("nan")
LN = math.log

# ---------------------------------------------------------------------------------------------
# group_advantages

# Group 0: scorable 1, 2, 3 -> mean 2, unbiased std 1 -> -1, 0, +1; the NaN sample gets 0.
# Group 1: all equal -> 0.  Group 2: one scorable sample -> 0.
# Group 3: 0, 0, 1, 1 -> mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.577350 -> +-0.866025.
REWARDS = [[1.0, 2.0, 3.0, NAN], [5.0, 5.0, 5.0, 5.0], [NAN, 4.0, NAN, NAN], [0.0, 0.0, 1.0, 1.0]]


def test_group_scale_hand_computed():
    adv = group_advantages(torch.tensor(REWARDS), eps=0.0)
    h = 0.5 / math.sqrt(1 / 3)
    expected = [[-1.0, 0.0, 1.0, 0.0], [0.0] * 4, [0.0] * 4, [-h, -h, h, h]]
    torch.testing.assert_close(adv, torch.tensor(expected))


def test_eps_is_added_to_the_std():
    adv = group_advantages(torch.tensor(REWARDS), eps=1.0)
    assert adv[0, 2].item() == pytest.approx(1.0 / (1.0 + 1.0))


def test_batch_scale_hand_computed():
    # The 12 scorable rewards 1,2,3, 5,5,5,5, 4, 0,0,1,1: mean 32/12, sum of squared deviations
    # 132 - 12 * (32/12)^2 = 46.6667, unbiased std sqrt(46.6667 / 11) = 2.059715.
    adv = group_advantages(torch.tensor(REWARDS), eps=0.0, scale="batch")
    s = 2.059715
    expected = [[-1 / s, 0.0, 1 / s, 0.0], [0.0] * 4, [0.0] * 4, [-0.5 / s, -0.5 / s, 0.5 / s, 0.5 / s]]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_none_scale_only_centres():
    adv = group_advantages(torch.tensor(REWARDS), scale="none")
    expected = [[-1.0, 0.0, 1.0, 0.0], [0.0] * 4, [0.0] * 4, [-0.5, -0.5, 0.5, 0.5]]
    torch.testing.assert_close(adv, torch.tensor(expected))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_never_nan(scale):
    rewards = torch.rand(6, 5)
    rewards[0] = NAN                       # a group nobody could score
    rewards[1, 1:] = NAN                   # a single scorable sample
    rewards[2, ::2] = NAN                  # partly scorable
    rewards[3] = 0.3                       # equal up to float rounding (one ulp apart): no preference
    rewards[3, 0] = torch.nextafter(torch.tensor(0.3), torch.tensor(1.0))
    adv = group_advantages(rewards, scale=scale)
    assert torch.isfinite(adv).all()
    assert (adv[:2] == 0).all() and (adv[3] == 0).all()
    assert (adv[2, ::2] == 0).all() and (adv[2, 1::2] != 0).all()
    assert torch.isfinite(group_advantages(torch.full((3, 4), NAN), scale=scale)).all()
    assert (group_advantages(torch.rand(4, 1), scale=scale) == 0).all()


def test_each_group_is_centred_on_its_scorable_samples():
    rewards = torch.rand(8, 16)
    rewards[rewards > 0.8] = NAN
    adv = group_advantages(rewards)
    assert adv.sum(dim=1).abs().max() < 1e-5


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="prompts, G"):
        group_advantages(torch.rand(8))
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.rand(2, 4), scale="global")


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(scale):
    # TRL 1.16 grpo_trainer.py, `_generate_and_score_completions`, multi_objective_aggregation
    # "sum_then_normalize" (lines ~2764-2803): nanmean per group, `nanstd` per group or over the batch,
    # (r - mean) / (std + 1e-4) unless scale is "none", then nan_to_num(nan=0). Re-expressed with
    # TRL's own nanstd.
    g = 6
    rewards = torch.rand(5 * g, generator=torch.Generator().manual_seed(0))
    rewards[[1, 7, 8, 20]] = NAN
    rewards[12:17] = NAN                   # a group with one scorable sample
    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g)
    std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g) if scale != "batch" else \
        nanstd(rewards).expand_as(rewards)
    trl = rewards - mean
    if scale != "none":
        trl = trl / (std + 1e-4)
    trl = torch.nan_to_num(trl, nan=0.0)
    ours = group_advantages(rewards.view(-1, g), eps=1e-4, scale=scale).view(-1)
    torch.testing.assert_close(ours, trl)


# ---------------------------------------------------------------------------------------------
# grpo_loss: a hand-computed case
#
# old log-probs 0, so ratio r = exp(logp). Sequence 0 (A = +1): r = 1.5, 0.5, 1.0.
#   clip(r, 0.8, 1.2) = 1.2, 0.8, 1.0;  -min(r A, clip(r) A) = -1.2, -0.5, -1.0;  mean -0.9.
# Sequence 1 (A = -2, last token masked): r = 1.1, 0.7.
#   clip = 1.1, 0.8;  r A = -2.2, -1.4;  clip A = -2.2, -1.6;  -min = 2.2, 1.6;  mean 1.9.
# "sequence": (-0.9 + 1.9) / 2 = 0.5.   "token": (-2.7 + 3.8) / 5 = 0.22.
# KL, delta = ref - logp: sequence 0 (0, ln 2, -ln 2), sequence 1 (ln 2, 0, masked).
#   k3(0) = 0, k3(ln 2) = 2 - ln 2 - 1 = 0.306853, k3(-ln 2) = 0.5 + ln 2 - 1 = 0.193147.
#   Per sequence 0.5 / 3 = 0.166667 and 0.306853 / 2 = 0.153426: "sequence" 0.160047; "token" 0.806853 / 5.
# Clipped-away gradients: low (r < 0.8, A < 0) 1 token of 5; high (r > 1.2, A > 0) 1 token of 5.


def hand_case():
    logp = torch.tensor([[LN(1.5), LN(0.5), 0.0], [LN(1.1), LN(0.7), 0.0]], requires_grad=True)
    old = torch.zeros(2, 3)
    delta = torch.tensor([[0.0, LN(2), -LN(2)], [LN(2), 0.0, 5.0]])
    ref = logp.detach() + delta
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("aggregation, pg, kl", [("sequence", 0.5, 0.160047), ("token", 0.22, 0.806853 / 5)])
def test_loss_hand_computed(aggregation, pg, kl):
    logp, old, ref, adv, mask = hand_case()
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1, aggregation=aggregation)
    assert loss.item() == pytest.approx(pg + 0.1 * kl, abs=1e-6)
    assert stats["loss/policy"].item() == pytest.approx(pg, abs=1e-6)
    assert stats["loss/kl"].item() == pytest.approx(0.1 * kl, abs=1e-6)
    assert stats["kl/k3_mean"].item() == pytest.approx(0.806853 / 5, abs=1e-6)
    assert stats["clip/low_frac"].item() == pytest.approx(0.2)
    assert stats["clip/high_frac"].item() == pytest.approx(0.2)
    assert stats["ratio/mean"].item() == pytest.approx(4.8 / 5)
    assert stats["ratio/min"].item() == pytest.approx(0.5)
    assert stats["ratio/max"].item() == pytest.approx(1.5)


def test_clip_eps_high_widens_only_the_upper_side():
    logp, old, ref, adv, mask = hand_case()
    # With eps_high = 0.6, r = 1.5 is no longer clipped: sequence 0 becomes (-1.5 - 0.5 - 1.0) / 3 = -1.0.
    loss, stats = grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, clip_eps_high=0.6)
    assert loss.item() == pytest.approx((-1.0 + 1.9) / 2, abs=1e-6)
    assert stats["clip/high_frac"].item() == 0.0 and stats["clip/low_frac"].item() == pytest.approx(0.2)


def test_no_kl_term_without_ref_or_coef():
    logp, old, ref, adv, mask = hand_case()
    no_ref, stats = grpo_loss(logp, old, None, adv, mask)
    zero_coef, stats0 = grpo_loss(logp, old, ref, adv, mask, kl_coef=0.0)
    assert no_ref.item() == pytest.approx(0.5, abs=1e-6) and zero_coef.item() == pytest.approx(0.5, abs=1e-6)
    assert stats["loss/kl"].item() == 0.0 and "kl/k3_mean" not in stats
    assert stats0["kl/k3_mean"].item() > 0  # still monitored when the reference is there


def test_entropy_is_logged_as_a_masked_mean():
    logp, old, ref, adv, mask = hand_case()
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    _, stats = grpo_loss(logp, old, ref, adv, mask, entropy=entropy)
    assert stats["entropy/mean"].item() == pytest.approx(15.0 / 5)


def test_masked_tokens_do_not_contribute():
    logp, old, ref, adv, mask = hand_case()
    loss, _ = grpo_loss(logp, old, ref, adv, mask, kl_coef=0.1)
    loss.backward()
    assert logp.grad[1, 2] == 0 and (logp.grad[mask.bool()] != 0).any()

    other = logp.detach().clone()
    other[1, 2] = -7.0
    other.requires_grad_(True)
    old2, ref2 = old.clone(), ref.clone()
    old2[1, 2], ref2[1, 2] = 3.0, -9.0
    loss2, stats2 = grpo_loss(other, old2, ref2, adv, mask, kl_coef=0.1)
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-7)
    assert stats2["ratio/max"].item() == pytest.approx(1.5)


def test_ratio_one_and_zero_advantage_give_zero_loss():
    logp = torch.randn(4, 6, requires_grad=True)
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), torch.zeros(4), torch.ones(4, 6))
    loss.backward()
    assert loss.item() == 0.0 and stats["loss/policy"].item() == 0.0
    assert (logp.grad == 0).all()


def test_gradient_sign_follows_the_advantage():
    # At ratio 1, d loss / d logp = -A / (B * T) per token: raise the log-prob of better-than-average samples.
    logp = torch.randn(2, 4, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0, -1.0]), torch.ones(2, 4))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.125] * 4, [0.125] * 4]))


def test_clipped_tokens_get_no_gradient_and_kl_pulls_towards_ref():
    logp, old, _, adv, mask = hand_case()
    loss, _ = grpo_loss(logp, old, None, adv, mask)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[1, 1] == 0   # r = 1.5 with A > 0, r = 0.7 with A < 0
    assert logp.grad[0, 1] < 0 and logp.grad[1, 0] > 0     # unclipped: follow the advantage

    logp = torch.zeros(1, 2, requires_grad=True)
    ref = torch.tensor([[1.0, -1.0]])
    loss, _ = grpo_loss(logp, logp.detach(), ref, torch.zeros(1), torch.ones(1, 2), kl_coef=1.0)
    loss.backward()
    assert logp.grad[0, 0] < 0 and logp.grad[0, 1] > 0    # gradient descent moves logp towards ref


def test_bf16_inputs_are_computed_in_float32():
    logp, old, ref, adv, mask = hand_case()
    logp16, old16 = logp.detach().bfloat16(), old.bfloat16()
    loss, _ = grpo_loss(logp16, old16, None, adv, mask)
    assert loss.dtype == torch.float32
    assert loss.item() == grpo_loss(logp16.float(), old16.float(), None, adv, mask)[0].item()


def test_bad_shapes_raise():
    logp, old, ref, adv, mask = hand_case()
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, old, ref, adv.unsqueeze(1), mask)
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(logp, old, ref, adv, mask[:, :2])
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(logp, old, ref, adv, mask, aggregation="dapo")


# ---------------------------------------------------------------------------------------------
# Equality with TRL's `GRPOTrainer._compute_loss`


def trl_compute_loss(logp, old, ref, adv, mask, beta, eps_low, eps_high, loss_type):
    """Run TRL's own `_compute_loss` (trl 1.16) on given log-probs.

    GRPOTrainer needs a text language model, so `self` is a stand-in holding only the attributes the method
    reads, and the model forward is replaced by a function returning our log-probs: the stand-ins are
    for what cannot exist here (a TRL-compatible model); every line of the loss is TRL's.
    """
    single_process = SimpleNamespace(reduce=lambda t, reduction: t, gather=lambda t: t,
                                     gather_for_metrics=lambda t: t, num_processes=1)
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        accelerator=single_process, _metrics={"train": defaultdict(list)},
    )
    b = len(adv)
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1),
              "completion_ids": torch.zeros_like(mask), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref}
    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize("aggregation, loss_type", [("sequence", "grpo"), ("token", "bnpo")])
@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_loss_and_gradient_match_trl(aggregation, loss_type, eps_high):
    gen = torch.Generator().manual_seed(1)
    b, t = 6, 10
    old = -torch.rand(b, t, generator=gen) * 5
    logp_init = old + 0.3 * torch.randn(b, t, generator=gen)     # ratios well outside [0.8, 1.2] too
    ref = old + 0.2 * torch.randn(b, t, generator=gen)
    adv = torch.randn(b, generator=gen)
    mask = (torch.rand(b, t, generator=gen) > 0.2).long()
    mask[:, 0] = 1

    ours_logp = logp_init.clone().requires_grad_(True)
    ours, stats = grpo_loss(ours_logp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.04,
                            aggregation=aggregation, clip_eps_high=eps_high)
    ours.backward()
    trl_logp = logp_init.clone().requires_grad_(True)
    trl, metrics = trl_compute_loss(trl_logp, old, ref, adv, mask, beta=0.04, eps_low=0.2,
                                    eps_high=0.2 if eps_high is None else eps_high, loss_type=loss_type)
    trl.backward()

    torch.testing.assert_close(ours, trl)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad)
    assert stats["kl/k3_mean"].item() == pytest.approx(metrics["kl"][0], rel=1e-5)
    assert stats["clip/low_frac"].item() == pytest.approx(metrics["clip_ratio/low_mean"][0])
    assert stats["clip/high_frac"].item() == pytest.approx(metrics["clip_ratio/high_mean"][0])
    assert metrics["clip_ratio/low_mean"][0] > 0 and metrics["clip_ratio/high_mean"][0] > 0
