"""Seeding, the X-Omni prompt format and the image-token sampler, on the tiny policy and tokenizer."""

import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from rl.compiled_shapes import graph_limit, padded_rows, row_buckets
from rl.model.sampler import CompiledDecodeStep, SamplingParams, _draw, sample_image_tokens
from rl.model.tiny import tiny_policy, tiny_tokenizer
from rl.model.tokenizer import PromptFormat, image_prefix, load_tokenizer
from rl.seeding import counter_uniforms, sample_seed

GRID = (4, 6)
REFERENCE_POLICY = Path(__file__).parent / "data" / "xomni_tiny" / "policy"
PROMPTS = ["a red cat on a sofa", "hi", "猫と犬", "a lighthouse at dusk, oil painting"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Decoding runs hundreds of tiny ops: a second thread only adds synchronisation (10x slower when
    the 2-core machine is oversubscribed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(seed=0).eval()


@pytest.fixture(scope="module")
def peaked():
    """A policy whose image distributions are far from uniform, so that min-p / top-p / CFG bite."""
    model = tiny_policy(seed=1).eval()
    with torch.no_grad():
        model.mm_head.weight.mul_(40.0)
    return model


@pytest.fixture(scope="module")
def fmt(tokenizer, policy):
    return PromptFormat(tokenizer, policy.config.vocab_size)


def _seeds(n, step=0):
    return [sample_seed(7, step, i, 0, "policy") for i in range(n)]


def _teacher_logits(model, prompts, tokens):
    """Image logits [N, T, K] predicting each sampled token, from a full teacher-forced forward."""
    ids, mask = prompts.with_image_tokens(tokens)
    with torch.no_grad():
        return model.image_head(model(ids, mask)[:, -tokens.shape[1] - 1:-1]).float()


# -- seeding ----------------------------------------------------------------------------------------

def test_sample_seed_is_stable_and_distinct():
    # Pinned: must not change across processes, machines or Python versions.
    assert sample_seed(1, 2, 3, 0, "policy") == 5307008659248668872
    seeds = {sample_seed(1, 2, 3, 0, "policy"), sample_seed(1, 2, 3, 1, "policy"), sample_seed(1, 2, 4, 0, "policy"),
             sample_seed(1, 3, 3, 0, "policy"), sample_seed(2, 2, 3, 0, "policy"), sample_seed(1, 2, 3, 0, "decoder")}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="step"):
        sample_seed(1, -1, 0, 0, "policy")
    with pytest.raises(TypeError, match="seed"):
        sample_seed(1.5, 0, 0, 0, "policy")


def test_counter_uniforms_depend_only_on_seed_and_position():
    seeds = _seeds(4)
    batch = counter_uniforms(seeds, 500)
    assert batch.shape == (4, 500) and batch.dtype == torch.float64
    assert torch.equal(counter_uniforms(seeds[2:3], 500)[0], batch[2])
    assert torch.equal(counter_uniforms(seeds[::-1], 300), batch.flip(0)[:, :300])
    assert 0 < batch.min() and batch.max() <= 1
    assert abs(batch.mean().item() - 0.5) < 0.02
    assert not torch.equal(batch[0], batch[1])


# -- prompt format ----------------------------------------------------------------------------------

def test_prompt_format_left_pads_and_ends_with_the_image_prefix(fmt, tokenizer):
    batch = fmt.encode(PROMPTS, GRID)
    prefix = tokenizer(image_prefix(GRID), add_special_tokens=False).input_ids
    assert image_prefix(GRID) == "<SOM>4 6<IMAGE>"
    assert batch.uncond_ids.tolist() == prefix
    assert (batch.input_ids[:, -len(prefix):] == torch.tensor(prefix)).all()
    lengths = batch.attention_mask.sum(1)
    assert lengths.tolist() == [len(tokenizer(p + image_prefix(GRID)).input_ids) for p in PROMPTS]
    for row, n in zip(batch.attention_mask, lengths, strict=True):  # padding on the left only
        assert row[-n:].all() and not row[:-n].any()
    codes = torch.randint(0, 16384, (4, 24))
    ids, mask = batch.with_image_tokens(codes)
    assert ids.shape == mask.shape == (4, batch.input_ids.shape[1] + 24)
    assert torch.equal(ids[:, -24:], codes + fmt.vocab_size) and mask[:, -24:].all()
    with pytest.raises(ValueError, match="codes must be"):
        batch.with_image_tokens(codes[:, :5])
    with pytest.raises(ValueError, match="grid must be two positive ints"):
        fmt.encode(PROMPTS, (4.0, 6))


def test_load_tokenizer_and_its_checks(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "ok")
    # An X-Omni folder holds the model's config.json too (this one written by X-Omni's code): loading the
    # tokenizer next to it must not warn (transformers would parse it as a generic config and warn twice).
    shutil.copy(REFERENCE_POLICY / "config.json", tmp_path / "ok" / "config.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        loaded = load_tokenizer(str(tmp_path / "ok"))
    assert loaded("a<SOM>1 2<IMAGE>").input_ids == tokenizer("a<SOM>1 2<IMAGE>").input_ids
    plain = tiny_tokenizer()
    plain.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        PromptFormat(plain, 260)
    words = Tokenizer(models.WordLevel({"a": 0, "<pad>": 1, "[UNK]": 2}, unk_token="[UNK]"))
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>").save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="lacks X-Omni's special tokens"):
        load_tokenizer(str(tmp_path / "bare"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(str(tmp_path / "missing"))


# -- sampler ----------------------------------------------------------------------------------------

def test_exact_length_valid_codes_and_reproducible(policy, fmt):
    batch = fmt.encode(PROMPTS, GRID)
    first = sample_image_tokens(policy, batch, SamplingParams(), _seeds(4))
    again = sample_image_tokens(policy, batch, SamplingParams(), _seeds(4))
    other = sample_image_tokens(policy, batch, SamplingParams(), _seeds(4, step=1))
    assert first.tokens.shape == first.logprobs.shape == (4, 24)
    assert first.tokens.dtype == torch.long and first.logprobs.dtype == torch.float32
    assert 0 <= first.tokens.min() and first.tokens.max() < 16384
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.logprobs, again.logprobs)
    assert (first.tokens != other.tokens).float().mean() > 0.9


def test_a_sample_does_not_depend_on_its_batch_or_row(policy, fmt):
    seeds = _seeds(4)
    batch = sample_image_tokens(policy, fmt.encode(PROMPTS, GRID), SamplingParams(), seeds)
    alone = sample_image_tokens(policy, fmt.encode(PROMPTS[2:3], GRID), SamplingParams(), seeds[2:3])
    order = [3, 1, 0, 2]
    shuffled = sample_image_tokens(policy, fmt.encode([PROMPTS[i] for i in order], GRID), SamplingParams(),
                                   [seeds[i] for i in order])
    assert torch.equal(alone.tokens[0], batch.tokens[2])
    assert torch.equal(shuffled.tokens, batch.tokens[order])


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.7, top_k=0, min_p=0.1),
                                    SamplingParams(cfg_scale=3.0, top_p=0.9)])
def test_logprobs_equal_the_learner_recomputation(policy, fmt, params):
    """Untruncated, temperature-scaled, no-CFG log-probs: the learner's first ratio is exactly 1.
    (Truncated ones would be near log(1/50) with the default top_k=50, not near log(1/16384).)"""
    batch = fmt.encode(PROMPTS, GRID)
    samples = sample_image_tokens(policy, batch, params, _seeds(4))
    ids, mask = samples.prompts.with_image_tokens(samples.tokens)
    learner = policy.token_logprobs(ids, mask, 24, temperature=params.temperature)
    torch.testing.assert_close(samples.logprobs, learner.logprobs.detach(), atol=1e-5, rtol=0)
    learner.logprobs.sum().backward()  # the samples feed an autograd graph (no inference tensors)
    assert policy.mm_head.weight.grad is not None
    policy.zero_grad(set_to_none=True)


def test_sampling_calls_transformers_without_deprecated_arguments(policy, fmt):
    """transformers 5.24 renamed the layers' and create_causal_mask's `past_key_values` to `cache` and warns
    (FutureWarning) on every call with the old name; 5.17-5.23 know only `past_key_values`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        sample_image_tokens(policy, fmt.encode(PROMPTS[:2], (1, 3)), SamplingParams(), _seeds(2))


def _decode_steps(model, ids, width, slots, pad, corrupt=None):
    """Last-position hidden states [N, L - width + 1, C] of `XOmniModel.decode`: the prefill of ids[:, :width],
    then one id per step, on a static cache of `slots` slots for rows left-padded by `pad`; `corrupt(cache)`
    runs after the prefill (to show that the comparison below catches a broken cache)."""
    cache = model.model.new_static_cache(pad, slots)
    start = torch.zeros((), dtype=torch.long)
    steps = [model.model.decode(ids[:, :width], start, cache)]
    if corrupt is not None:
        corrupt(cache)
    for t in range(width, ids.shape[1]):
        steps.append(model.model.decode(ids[:, t:t + 1], start + t, cache))
    return torch.stack(steps, 1)


def test_static_cache_decoding_matches_the_full_forward(policy, fmt):
    """The sampler's step on its static cache (longer than the sequence, mask from the left padding alone)
    gives the full forward's hidden states at every real position, through the image-only layers too; a wrong
    mask or a cache not written in place moves them far beyond the bound, so this comparison can fail."""
    batch = fmt.encode(PROMPTS[:2], GRID)
    codes = torch.randint(0, 16384, (2, 24), generator=torch.Generator().manual_seed(0))
    ids, mask = batch.with_image_tokens(codes)
    width, slots = batch.input_ids.shape[1], ids.shape[1] + 7
    pad = width - batch.attention_mask.sum(1)
    assert pad.tolist()[1] > 0  # "hi" is padded: the mask matters
    with torch.no_grad():
        full = policy(ids, mask)[:, width - 1:]
        steps = _decode_steps(policy, ids, width, slots, pad)
        no_padding_mask = _decode_steps(policy, ids, width, slots, torch.zeros_like(pad))
        lost_prompt = _decode_steps(policy, ids, width, slots, pad, lambda cache: cache.keys[:, :, :, :width].zero_())
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)
    assert (no_padding_mask[1] - full[1]).abs().max() > 1e-2 and (lost_prompt - full).abs().max() > 1e-2


def _reference_samples(model, fmt, prompts, params, seeds):
    """The sampler with no cache at all: every token drawn from a full forward over the prompt and the tokens so
    far (the model's normal forward, transformers' masks), with the sampler's own draw and the same uniforms."""
    batch, uncond = fmt.encode(prompts, GRID), fmt.encode([""] * len(prompts), GRID)  # "" + prefix = the prefix
    uniforms = counter_uniforms(seeds, 24)
    tokens = torch.empty(len(prompts), 0, dtype=torch.long)
    logprobs = []
    def logits(prefix, tokens):
        ids = torch.cat([prefix.input_ids, tokens + fmt.vocab_size], 1)
        mask = torch.cat([prefix.attention_mask, torch.ones_like(tokens)], 1)
        return model.image_head(model(ids, mask)[:, -1]).float() / params.temperature

    for t in range(24):
        with torch.no_grad():
            cond, free = logits(batch, tokens), logits(uncond, tokens)
            guided = cond if params.cfg_scale == 1 else free + params.cfg_scale * (cond - free)
        tokens = torch.cat([tokens, _draw(guided, params, uniforms[:, t])[:, None]], 1)
        logprobs.append(cond.log_softmax(-1).gather(-1, tokens[:, -1:])[:, 0])
    return tokens, torch.stack(logprobs, 1)


# One image-only, one language and one image-only layer: both layer kinds, the smallest graph to compile.
SMALL = dict(num_hidden_layers=3, num_mm_adap_layers=1, num_mm_head_layers=1)


@pytest.mark.parametrize("compile_", [False, pytest.param(True, marks=pytest.mark.compile)], ids=["eager", "compiled"])
def test_samples_equal_the_uncached_reference(fmt, compile_):
    """Tokens and log-probs (float32) of the static-cache sampler, eager and compiled (one graph, no graph break),
    equal a loop without any cache, with left-padded prompts of four widths and CFG's unconditional rows."""
    model = tiny_policy(seed=2, **SMALL).eval()
    with torch.no_grad():
        model.mm_head.weight.mul_(10.0)  # peaked distributions: a wrong logit moves draws
    params, seeds = SamplingParams(cfg_scale=2.0, min_p=0.05), _seeds(4)
    compiled = CompiledDecodeStep(model, max_rows=4) if compile_ else None
    samples = sample_image_tokens(model, fmt.encode(PROMPTS, GRID), params, seeds, compiled)
    tokens, logprobs = _reference_samples(model, fmt, PROMPTS, params, seeds)
    assert torch.equal(samples.tokens, tokens)
    torch.testing.assert_close(samples.logprobs, logprobs, atol=1e-5, rtol=0)
    assert len(set(samples.tokens.flatten().tolist())) > 20  # not one code everywhere: the check can fail
    if compile_:
        assert compiled.shapes == {(8, 64)}


def test_the_decode_step_has_no_graph_break(policy):
    """dynamo traces the per-token step as one graph (explain: dynamo alone, no compilation)."""
    step = CompiledDecodeStep(policy, max_rows=2)
    cache = policy.model.new_static_cache(torch.tensor([0, 3]), step.slots(40))
    ids = torch.full((2, 1), policy.config.vocab_size)
    with torch.inference_mode():
        explanation = torch._dynamo.explain(step._logits)(ids, torch.tensor(30), cache)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def test_prompts_must_be_left_padded(policy, fmt):
    batch = fmt.encode(PROMPTS[:2], GRID)
    holes = replace(batch, attention_mask=batch.attention_mask.flip(1))
    with pytest.raises(ValueError, match="pad on the left only"):
        sample_image_tokens(policy, holes, SamplingParams(), _seeds(2))


def test_defaults_are_xomni_generation_settings():
    assert SamplingParams() == SamplingParams(temperature=1.0, top_k=50, top_p=1.0, min_p=0.03, cfg_scale=1.0)


def test_top_k_restricts_the_support_and_1_is_greedy(peaked, fmt):
    batch = fmt.encode(PROMPTS, GRID)
    samples = sample_image_tokens(peaked, batch, SamplingParams(top_k=1, min_p=0.0), _seeds(4))
    assert torch.equal(samples.tokens, _teacher_logits(peaked, batch, samples.tokens).argmax(-1))
    samples = sample_image_tokens(peaked, batch, SamplingParams(top_k=3, min_p=0.0), _seeds(4))
    top3 = _teacher_logits(peaked, batch, samples.tokens).topk(3, dim=-1).indices
    assert (top3 == samples.tokens[..., None]).any(-1).all()
    assert (top3[..., 0] != samples.tokens).any()


@pytest.mark.parametrize("min_p", [0.0, 0.3])
def test_min_p_restricts_the_support(peaked, fmt, min_p):
    batch = fmt.encode(PROMPTS, GRID)
    samples = sample_image_tokens(peaked, batch, SamplingParams(top_k=0, min_p=min_p), _seeds(4))
    probs = _teacher_logits(peaked, batch, samples.tokens).softmax(-1)
    ratio = probs.gather(-1, samples.tokens[..., None]).squeeze(-1) / probs.amax(-1)
    if min_p:
        assert (ratio >= min_p * (1 - 1e-4)).all()
    else:
        assert (ratio < 0.3).any()  # without the filter, unlikely codes are drawn: the check above can fail


def test_top_p_restricts_the_support(peaked, fmt):
    batch = fmt.encode(PROMPTS, GRID)
    samples = sample_image_tokens(peaked, batch, SamplingParams(top_k=0, top_p=0.5, min_p=0.0), _seeds(4))
    probs = _teacher_logits(peaked, batch, samples.tokens).softmax(-1)
    chosen = probs.gather(-1, samples.tokens[..., None])
    mass_above = (probs * (probs > chosen)).sum(-1)  # mass of strictly more likely codes
    assert (mass_above < 0.5 + 1e-4).all()


def test_cfg_scale_one_is_no_cfg_and_cfg_guides_with_the_prefix_alone(peaked, fmt):
    batch = fmt.encode(PROMPTS, GRID)
    plain = sample_image_tokens(peaked, batch, SamplingParams(), _seeds(4))
    # Just above 1 the CFG path runs (batched unconditional rows) but samples the conditional distribution.
    near_one = sample_image_tokens(peaked, batch, SamplingParams(cfg_scale=1.0 + 1e-9), _seeds(4))
    assert torch.equal(near_one.tokens, plain.tokens)
    torch.testing.assert_close(near_one.logprobs, plain.logprobs, atol=1e-5, rtol=0)

    scale = 4.0
    greedy = sample_image_tokens(peaked, batch, SamplingParams(cfg_scale=scale, top_k=1, min_p=0.0), _seeds(4))
    assert 0 <= greedy.tokens.min() and greedy.tokens.max() < 16384
    cond = _teacher_logits(peaked, batch, greedy.tokens)
    uncond_batch = fmt.encode([""] * 4, GRID)  # "" + prefix == the prefix alone
    assert torch.equal(uncond_batch.input_ids[0], batch.uncond_ids)
    uncond = _teacher_logits(peaked, uncond_batch, greedy.tokens)
    assert torch.equal(greedy.tokens, (uncond + scale * (cond - uncond)).argmax(-1))
    assert not torch.equal(greedy.tokens, cond.argmax(-1))


def test_bad_arguments_are_rejected(policy, fmt):
    batch = fmt.encode(PROMPTS, GRID)
    with pytest.raises(ValueError, match="one seed per prompt row"):
        sample_image_tokens(policy, batch, SamplingParams(), _seeds(3))
    with pytest.raises(ValueError, match="vocab_size"):
        sample_image_tokens(policy, PromptFormat(fmt.tokenizer, 300).encode(PROMPTS, GRID), SamplingParams(),
                            _seeds(4))
    for bad in (dict(temperature=0), dict(top_p=0), dict(min_p=1), dict(cfg_scale=0.5), dict(top_k=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


# -- compiled shapes ---------------------------------------------------------------------------------

def test_row_buckets_and_the_shapes_a_run_compiles():
    assert row_buckets(64) == (1, 2, 4, 8, 16, 32, 64) and row_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert row_buckets(1) == (1,) and [padded_rows(n, 5) for n in range(1, 6)] == [1, 2, 4, 4, 5]
    with pytest.raises(ValueError, match="1 to 5 rows"):
        padded_rows(6, 5)
    # Widths 10 and 41 fill 33 and 64 slots (one 64-slot cache), 42 fills 65 (128); CFG doubles the rows.
    shapes = CompiledDecodeStep.shapes_for(5, 24, [10, 41, 42], cfg=True)
    assert shapes == {(rows, slots) for rows in (2, 4, 8, 10) for slots in (64, 128)}
    with pytest.raises(ValueError, match="max_rows"):
        CompiledDecodeStep(tiny_policy(seed=0), max_rows=0)


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(cfg_scale=3.0, top_p=0.9)])
def test_padding_rows_change_no_real_row(policy, fmt, params):
    """The compiled path with its compiled function run eagerly (stance force_eager). 3 prompts padded to 4 rows
    draw bitwise what they draw beside a real 4th prompt: the padding's content reaches no real row. Against
    the 3 unpadded, the tokens are equal and the log-probs differ by the rounding of another batch shape (CPU
    matmuls block 3 and 4 rows differently: 1e-6 measured, the compiled-vs-eager bound 1e-5)."""
    seeds = _seeds(4)
    three, four = fmt.encode(PROMPTS[:3], GRID), fmt.encode(PROMPTS[:3] + ["a dog"], GRID)
    assert four.input_ids.shape == (4, three.input_ids.shape[1])  # the 4th prompt is no wider
    padding, exact = CompiledDecodeStep(policy, max_rows=8), CompiledDecodeStep(policy, max_rows=3)
    with torch.compiler.set_stance("force_eager"):
        padded = sample_image_tokens(policy, three, params, seeds[:3], padding)
        beside = sample_image_tokens(policy, four, params, seeds, padding)
        unpadded = sample_image_tokens(policy, three, params, seeds[:3], exact)
    assert padded.tokens.shape == (3, 24) and padded.prompts.input_ids.shape[0] == 3
    assert torch.equal(padded.tokens, beside.tokens[:3]) and torch.equal(padded.logprobs, beside.logprobs[:3])
    assert torch.equal(padded.tokens, unpadded.tokens)
    torch.testing.assert_close(padded.logprobs, unpadded.logprobs, atol=1e-5, rtol=0)
    assert torch.equal(padded.tokens, sample_image_tokens(policy, three, params, seeds[:3]).tokens)  # eager
    doubled = 2 if params.cfg_scale > 1 else 1
    assert padding.shapes == {(4 * doubled, 64)} and exact.shapes == {(3 * doubled, 64)}


def test_passing_the_graph_limit_is_an_error_not_eager():
    """dynamo runs a function eagerly once it holds recompile_limit graphs; under graph_limit it may hold that
    many (here 9, past the default 8) and one more is an error."""
    def double(x):
        return 2 * x

    compiled = torch.compile(double, dynamic=False, backend="eager")  # dynamo alone: no inductor, fast
    with graph_limit(9):
        for n in range(1, 10):
            compiled(torch.ones(n))
        with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
            compiled(torch.ones(10))
