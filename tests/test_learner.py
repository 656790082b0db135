"""The learner in-process (no Ray): GRPO updates on the tiny policy with samples from the real sampler."""

import dataclasses
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_helpers import tiny_spec, trainer_with

from core.components import instantiate
from rl.decoder import to_uint8_images
from rl.distributed.learner import Learner, TrainBatch, mixed_precision
from rl.distributed.weight_sync import load_bucket
from rl.grpo import group_advantages
from rl.model.loading import build_policy
from rl.model.sampler import sample_image_tokens
from rl.model.tiny import tiny_policy
from rl.model.tokenizer import PromptFormat
from rl.seeding import sample_seed
from rl.train_config import LearnerConfig

PROMPTS = ["A neon shop sign reading \"OPEN\".", "A jar labeled \"JAM\"."]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return tiny_spec(tmp_path_factory.mktemp("run"))


def make_learner(spec, learner_cfg: LearnerConfig | None = None, **trainer) -> Learner:
    model = {k: dict(v) for k, v in spec.cfg.model.items()}
    learner = Learner(model, trainer_with(spec.trainer, **trainer), learner_cfg or spec.learner,
                      tuple(spec.rollout.grid), spec.rollout.sampling.temperature)
    learner.setup()
    return learner


def sample(learner: Learner, spec, step: int, group: int = 4) -> TrainBatch:
    prompts = [p for p in PROMPTS for _ in range(group)]
    seeds = [sample_seed(0, step, i, g, "policy") for i in range(len(PROMPTS)) for g in range(group)]
    samples = sample_image_tokens(learner.policy, learner.format.encode(prompts, tuple(spec.rollout.grid)),
                                  spec.rollout.sampling, seeds)
    advantages = torch.linspace(-1.5, 1.5, len(prompts))
    return TrainBatch(prompts, samples.tokens, samples.logprobs, advantages)


def current_logprobs(learner: Learner, batch: TrainBatch) -> torch.Tensor:
    with torch.no_grad():
        sequences = learner._sequences(batch.prompts, batch.tokens, range(len(batch.prompts)))
        return learner._token_logprobs(learner.policy, sequences, False).logprobs


def test_first_ratio_is_one_and_advantages_move_log_probs_their_way(spec):
    learner = make_learner(spec)  # configs/tiny.yaml keeps the reference in float32
    batch = sample(learner, spec, step=1)
    stats = learner.update(batch)
    assert stats["ratio/min"] == pytest.approx(1, abs=1e-5) and stats["ratio/max"] == pytest.approx(1, abs=1e-5)
    assert stats["kl/k3_mean"] == pytest.approx(0, abs=1e-6)  # the policy still equals its reference
    change = (current_logprobs(learner, batch) - batch.old_logprobs).sum(1)  # [N]
    assert change[batch.advantages > 0].mean() > 0 > change[batch.advantages < 0].mean()


def test_micro_batching_does_not_change_the_update(spec):
    whole, pieces = make_learner(spec, micro_batch_size=8), make_learner(spec, micro_batch_size=3)
    batch = sample(whole, spec, step=1)
    a, b = whole.update(batch), pieces.update(batch)
    for key in ("loss/kl", "actor/grad_norm", "entropy/mean"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    # At step 1 the policy is its own reference and each group's advantages sum to zero, so loss/total is a sum of
    # O(1) float32 terms that cancel to ~1e-7: summed in another order it differs by a few ulps of 1.0, not of itself.
    assert b["loss/total"] == pytest.approx(a["loss/total"], abs=8 * torch.finfo(torch.float32).eps)


def test_save_and_load_resume_the_optimizer_exactly(spec, tmp_path):
    original = make_learner(spec)
    original.update(sample(original, spec, step=1))
    original.save(str(tmp_path))
    restored = make_learner(spec)
    restored.load(str(tmp_path))
    batch = sample(original, spec, step=2)
    a, b = original.update(batch), restored.update(batch)
    assert a == b
    after_a, after_b = original.trained_weights(), restored.trained_weights()
    assert all(torch.equal(after_a[k], after_b[k]) for k in after_a)


def test_weight_buckets_copy_into_a_replica_in_process(spec):
    """What a colocated rollout replica does with the sync: the trained weights arrive equal, the frozen text
    head and text embedding are never sent and stay the starting policy's."""
    learner = make_learner(spec, LearnerConfig())
    assert learner.reference.mm_head.weight.dtype == torch.bfloat16  # learner.reference_dtype's default
    replica = build_policy(spec.cfg.model.policy, "model.policy", torch.float32, "cpu")
    initial = {k: v.clone() for k, v in replica.state_dict().items()}
    learner.update(sample(learner, spec, step=1))
    spec_ = learner.sync_spec("float32")
    sent = [name for bucket in spec_.buckets for name, _ in bucket]
    assert "lm_head.weight" not in sent and "model.lm_embed_tokens.weight" not in sent
    params = replica.state_dict()
    for bucket in learner.weight_buckets():
        load_bucket(params, bucket)
    trained = learner.trained_weights()
    assert sorted(trained) == sorted(sent)
    for name, value in replica.state_dict().items():
        assert torch.equal(value, trained[name] if name in trained else initial[name]), name


def test_grpo_teaches_the_tiny_policy_to_write_the_requested_letters(spec):
    """A short version of the CPU demo, in-process: the OCR reward of glyph rows rises."""
    from rewards.ocr import OCRReward

    learner = make_learner(spec)
    decoder, grid = instantiate(spec.cfg.model.decoder, "model.decoder"), tuple(spec.rollout.grid)
    ocr = OCRReward(mode="zh")
    prompts = [f"A sign that says \"{word}\"." for word in ("SEA", "JAM", "DRY", "PUT")]
    group, means = 6, []
    for step in range(1, 15):
        rows = [p for p in prompts for _ in range(group)]
        seeds = [sample_seed(0, step, i, g, "policy") for i in range(len(prompts)) for g in range(group)]
        samples = sample_image_tokens(learner.policy, learner.format.encode(rows, grid), spec.rollout.sampling,
                                      seeds)
        images = to_uint8_images(decoder(samples.tokens, grid, rows, seeds).images)
        targets = [{"text": [p.split('"')[1]]} for p in rows]
        rewards = ocr(images, rows, targets).scores
        learner.update(TrainBatch(rows, samples.tokens, samples.logprobs,
                                  group_advantages(rewards.view(len(prompts), group)).view(-1)))
        means.append(rewards.mean().item())
    first, last = sum(means[:4]) / 4, sum(means[-4:]) / 4
    assert last > first + 0.1, means


def bf16_rollout_batch(spec, step: int = 1) -> TrainBatch:
    """Samples from a bfloat16 replica of the starting policy (KV cache, 8 rows at once): the rollout's dtype."""
    replica = build_policy(spec.cfg.model.policy, "model.policy", torch.bfloat16, "cpu")
    prompts = [p for p in PROMPTS for _ in range(4)]
    seeds = [sample_seed(0, step, i, g, "policy") for i in range(len(PROMPTS)) for g in range(4)]
    encoded = PromptFormat(instantiate(spec.cfg.model.tokenizer, "model.tokenizer"), replica.config.vocab_size).encode(
        prompts, tuple(spec.rollout.grid))
    samples = sample_image_tokens(replica, encoded, spec.rollout.sampling, seeds)
    return TrainBatch(prompts, samples.tokens, samples.logprobs, torch.linspace(-1.5, 1.5, len(prompts)))


def test_sampler_log_probs_from_a_bf16_rollout_show_a_mismatch(spec):
    """old_logprobs=sampler: the ratio divides by the bf16 sampler's log-probs, so the first ratio is not 1 and
    mismatch/kl (k3 between sampler and fp32 learner) is above 0."""
    learner = make_learner(spec, old_logprobs="sampler")
    stats = learner.update(bf16_rollout_batch(spec))
    assert stats["mismatch/kl"] > 0 and stats["mismatch/abs_max"] > 1e-3
    assert stats["ratio/max"] > 1 > stats["ratio/min"]


def test_recomputed_old_log_probs_make_the_first_ratio_exactly_one_in_bf16(spec):
    """old_logprobs=recompute with a bf16 rollout and a bf16 (autocast) learner on other batch shapes (micro-batches
    of 3 rows): the ratio at the first update is exactly 1 on every token, and the mismatch is still measured."""
    learner = make_learner(spec, dataclasses.replace(spec.learner, mixed_precision=True), old_logprobs="recompute",
                           micro_batch_size=3)
    stats = learner.update(bf16_rollout_batch(spec))
    assert stats["ratio/min"] == 1.0 and stats["ratio/max"] == 1.0 and stats["ratio/mean"] == 1.0
    assert stats["mismatch/kl"] > 0
    assert stats["clip/low_frac"] == 0 and stats["clip/high_frac"] == 0


def test_truncated_importance_sampling_weighs_tokens_by_the_capped_ratio(spec):
    """tis_cap: each token's policy-gradient term is weighed by min(learner / sampler, cap); with a cap far
    below the ratios every weight is the cap, so the policy gradient scales by it (no KL term here)."""
    batch = bf16_rollout_batch(spec)
    plain = make_learner(spec, old_logprobs="recompute", kl_coef=0.0).update(batch)
    capped = make_learner(spec, old_logprobs="recompute", kl_coef=0.0, tis_cap=1e-3).update(batch)
    assert capped["tis/weight_mean"] == pytest.approx(1e-3)
    assert capped["actor/grad_norm"] == pytest.approx(plain["actor/grad_norm"] * 1e-3, rel=1e-3)


def test_rows_added_in_chunks_give_the_update_of_the_whole_batch(spec):
    """Streaming: rows handed over in three uneven chunks (the no-grad passes run as micro-batches complete)
    give exactly the update of the batch given at once."""
    batch = sample(make_learner(spec), spec, step=1)
    whole = make_learner(spec, old_logprobs="recompute", micro_batch_size=3)
    chunked = make_learner(spec, old_logprobs="recompute", micro_batch_size=3)
    chunked.begin(batch.prompts)
    for start, stop in ((0, 2), (2, 7), (7, 8)):
        chunked.add_rows(start, batch.tokens[start:stop], batch.old_logprobs[start:stop])
    assert chunked._rows.done == 3  # every micro-batch's no-grad passes ran before train
    assert chunked.train(batch.advantages) == whole.update(batch)


class WeightCasts(TorchDispatchMode):
    """Weak references to every bf16 copy made of `params` (the tensors autocast casts)."""

    def __init__(self, params):
        super().__init__()
        self.params, self.copies = {p.data_ptr() for p in params}, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.params \
                and out.dtype == torch.bfloat16:
            self.copies.append(weakref.ref(out))
        return out

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.copies)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_mixed_precision_holds_one_layers_weight_copies_under_gradient_checkpointing(checkpointing):
    """What rl/distributed/memory.py counts for the learner's autocast at world size 1: under checkpointing no
    earlier layer's bf16 weight copies are alive when the last layer runs (autocast's cache would keep them all);
    without it backward needs them all."""
    policy = tiny_policy(seed=0, num_hidden_layers=4)
    policy.model.gradient_checkpointing = checkpointing
    policy.train()
    vocab, tracked = policy.config.vocab_size, WeightCasts(policy.parameters())
    alive = []
    dict(policy.named_modules())["model.layers.3"].register_forward_hook(lambda *_: alive.append(tracked.alive()))
    ids = torch.cat([torch.randint(0, 100, (2, 9)), vocab + torch.randint(0, 16, (2, 3))], dim=1)
    with tracked, mixed_precision(torch.device("cpu"), enabled=True):
        policy.token_logprobs(ids, torch.ones_like(ids), num_image_tokens=3).logprobs.sum().backward()
    layer = sum(1 for name, _ in policy.named_parameters() if name.startswith("model.layers.0.")
                and name.endswith("weight") and "norm" not in name)
    assert len(tracked.copies) > 3 * layer  # every layer's weights were cast
    assert alive[0] == 0 if checkpointing else alive[0] > 3 * layer
