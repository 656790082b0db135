"""XOmniPolicy on a tiny random model: save/load formats, dtypes, key checks, padding, KV cache,
the image-only layers, learner log-probs and gradients."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.components import validate_component
from rl.model.policy import XOmniConfig, XOmniPolicy, save_policy_state
from rl.model.tiny import tiny_policy, tiny_policy_config
from rl.model.weights import StateDictWeights

VOCAB = tiny_policy_config().vocab_size


def _ids(rows: int, text: int, image: int, seed: int = 0) -> torch.Tensor:
    """[rows, text + image]: random text ids, then random image ids (vocab_size + code)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randint(0, VOCAB - 1, (rows, text), generator=g),
                      VOCAB + torch.randint(0, 16384, (rows, image), generator=g)], dim=1)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(seed=0).eval()


def test_from_config_is_deterministic_per_seed():
    a, b, c = tiny_policy(seed=3), tiny_policy(seed=3), tiny_policy(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.mm_head.weight, c.mm_head.weight)
    assert a.model.mm_embed_tokens.weight[-1].abs().sum() == 0  # X-Omni's padding_idx=-1 row


def test_save_load_round_trip_is_bit_identical(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    loaded = XOmniPolicy.from_pretrained(str(tmp_path)).eval()
    assert loaded.state_dict().keys() == policy.state_dict().keys()
    ids = _ids(2, 9, 12)
    with torch.no_grad():
        assert torch.equal(loaded.image_logprobs(ids), policy.image_logprobs(ids))
        assert torch.equal(loaded.text_logits(ids), policy.text_logits(ids))


def test_sharded_save_and_load(policy, tmp_path):
    policy.save_pretrained(tmp_path, max_shard_size="3MB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0].startswith("model-00001-of-")
    assert set(index["weight_map"]) == set(policy.state_dict())
    loaded = XOmniPolicy.from_pretrained(str(tmp_path))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in policy.state_dict().items())


def test_bfloat16_load(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    bf16 = XOmniPolicy.from_pretrained(str(tmp_path), torch_dtype="bfloat16").eval()
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    exact = policy.model.rotary_emb.inv_freq
    assert torch.equal(bf16.model.rotary_emb.inv_freq, exact)  # RoPE frequencies stay float32, as in X-Omni
    cast = tiny_policy(seed=0).to(torch.bfloat16)  # what rollout/learner workers do
    assert cast.mm_head.weight.dtype == torch.bfloat16 and torch.equal(cast.model.rotary_emb.inv_freq, exact)
    ids = _ids(2, 9, 12)
    with torch.no_grad():
        got, want = bf16.image_logprobs(ids), policy.image_logprobs(ids)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.05, rtol=0)


def test_save_policy_state_writes_a_loadable_folder_in_the_asked_dtype(policy, tmp_path):
    """rl.export writes a folder from a source of weights (here a state dict) without a module."""
    save_policy_state(StateDictWeights(tiny_policy_config(), policy.state_dict()), tmp_path, dtype="bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = XOmniPolicy.from_pretrained(str(tmp_path), torch_dtype=torch.bfloat16)
    assert all(torch.equal(v.bfloat16(), loaded.state_dict()[k]) for k, v in policy.state_dict().items())


def test_saved_files_follow_the_umask(policy, tmp_path):
    """safetensors writes 0600 files; a checkpoint or export must be readable by others under umask 022."""
    old = os.umask(0o022)
    try:
        policy.save_pretrained(tmp_path / "a", max_shard_size="3MB")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "a").iterdir()}
    assert len(modes) > 3 and set(modes.values()) == {0o644}, modes


def test_missing_unexpected_and_ignored_keys(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["image_tokenizer.quantize.embedding.weight"] = torch.zeros(2, 2)  # ignored, as X-Omni does
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    XOmniPolicy.from_pretrained(str(tmp_path))

    weights.pop("model.layers.1.mlp.up_proj.weight")
    weights["model.layers.99.extra.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing 1 \[model.layers.1.mlp.up_proj.weight\].*"
                                         r"unexpected 1 \[model.layers.99.extra.weight\]") as error:
        XOmniPolicy.from_pretrained(str(tmp_path))
    assert f"weights in {tmp_path / 'model.safetensors'} do not match" in str(error.value)  # the file is named


def test_wrong_shapes_folders_and_model_type_are_clear_errors(policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="path: file or folder not found"):
        XOmniPolicy.from_pretrained(str(tmp_path / "nope"))
    problems = validate_component({"_component_": "rl.model.policy.XOmniPolicy.from_pretrained",
                                   "path": str(tmp_path / "nope")}, "policy")
    assert len(problems) == 1 and "policy.path" in problems[0]
    tiny_policy(seed=0, hidden_size=32).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has shape"):
        XOmniPolicy.from_pretrained(str(tmp_path))
    config["model_type"] = "qwen2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type must be 'x-omni'"):
        XOmniPolicy.from_pretrained(str(tmp_path))


def test_config_keeps_extra_keys_and_writes_legacy_rope(tmp_path):
    config = tiny_policy_config(auto_map={"AutoConfig": "configuration_xomni.XOmniConfig"},
                                vision_config={"dtype": "bfloat16", "encoder": {"z_channels": 1536}})
    XOmniPolicy.from_config(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vision_config"]["encoder"] == {"z_channels": 1536}
    assert saved["auto_map"] == {"AutoConfig": "configuration_xomni.XOmniConfig"}
    assert saved["rope_theta"] == 1_000_000.0 and saved["rope_scaling"] is None
    loaded = XOmniPolicy.from_pretrained(str(tmp_path)).config
    assert loaded.vision_config == config.vision_config and loaded.auto_map == config.auto_map
    assert loaded.rope_parameters["rope_theta"] == 1_000_000.0
    with pytest.raises(ValueError, match="exceeds num_hidden_layers"):
        XOmniConfig(num_hidden_layers=4, num_mm_adap_layers=3, num_mm_head_layers=2)


def test_left_padding_gives_the_same_logprobs(policy):
    ids = _ids(2, 9, 12)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids[1:, :-5]], dim=1)
    batch = torch.cat([ids[:1], padded])
    mask = torch.ones_like(batch)
    mask[1, :5] = 0
    with torch.no_grad():
        got = policy.image_logprobs(batch, mask)
        alone = policy.image_logprobs(ids[1:, :-5])
        unpadded = policy.image_logprobs(ids[:1])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[1, 5:], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[0], unpadded[0], atol=1e-5, rtol=0)


def test_kv_cache_decoding_matches_the_full_forward(policy):
    ids = _ids(2, 9, 12)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        full = policy(ids, mask)
        cache = policy.new_cache()
        steps = [policy(ids[:, :10], mask[:, :10], cache)]
        for t in range(10, ids.shape[1]):
            steps.append(policy(ids[:, t:t + 1], mask[:, :t + 1], cache))
    torch.testing.assert_close(torch.cat(steps, 1)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)


def test_image_only_layers_leave_text_positions_alone(policy):
    """Changing an adapter (image-only) layer moves image positions only; a language layer moves all."""
    ids = _ids(1, 9, 6)
    is_image = ids[0] >= VOCAB
    with torch.no_grad():
        base = policy(ids)[0]
        for index, moves_text in ((0, False), (policy.config.num_mm_adap_layers, True)):
            weight = policy.model.layers[index].mlp.down_proj.weight
            weight.add_(1.0)
            changed = (policy(ids)[0] - base).abs().amax(-1) > 1e-4
            weight.sub_(1.0)
            assert changed[is_image].all()
            assert changed[~is_image].any() == moves_text


def test_multimodal_rows_beyond_the_codes_embed_from_mm_table(policy):
    """Special ids past the 16384 codes (X-Omni's 64 extra rows) use mm_embed_tokens and mm_norm."""
    extra = VOCAB + 16384 + 5
    ids = torch.tensor([[1, 2, extra]])
    embedded = policy.model.embed(ids, ids >= VOCAB)
    assert torch.equal(embedded[0, 2], policy.model.mm_embed_tokens.weight[16384 + 5])
    assert torch.equal(embedded[0, 0], policy.model.lm_embed_tokens.weight[1])


def test_token_logprobs_values_entropy_and_errors(policy):
    ids = _ids(2, 9, 12)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = policy.token_logprobs(ids, mask, 12, temperature=0.7, with_entropy=True)
        logits = policy.image_head(policy(ids)[:, -13:-1]) / 0.7
    logp = torch.log_softmax(logits, -1)
    want = logp.gather(-1, (ids[:, -12:] - VOCAB)[..., None]).squeeze(-1)
    torch.testing.assert_close(out.logprobs, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.entropy, -(logp.exp() * logp).sum(-1), atol=1e-4, rtol=0)
    assert policy.token_logprobs(ids, mask, 12).entropy is None
    with pytest.raises(ValueError, match="must be image ids"):
        policy.token_logprobs(ids, mask, 13)
    with pytest.raises(ValueError, match="temperature"):
        policy.token_logprobs(ids, mask, 12, temperature=0)


def test_gradients_flow_and_checkpointing_matches():
    ids = _ids(2, 9, 12)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    grads = []
    for checkpointing in (False, True):
        model = tiny_policy(seed=1).train()
        model.model.gradient_checkpointing = checkpointing
        out = model.token_logprobs(ids, mask, 12, with_entropy=True)
        (out.logprobs.sum() + out.entropy.sum()).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    plain, recomputed = grads
    assert plain["model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0
    assert plain["model.mm_embed_tokens.weight"][-1].abs().sum() == 0  # padding_idx row, as in X-Omni
    assert plain["lm_head.weight"] is None  # text head unused in image mode
    for name, grad in plain.items():
        if grad is not None:
            torch.testing.assert_close(recomputed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
