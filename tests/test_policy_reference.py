"""Compatibility with X-Omni's own model code: the tiny checkpoint and the outputs it computed
(tests/data/xomni_tiny, written with transformers 4.51.3) must be reproduced here."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rl.model.policy import XOmniPolicy

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "xomni_tiny")


@pytest.fixture(scope="module")
def policy():
    return XOmniPolicy.from_pretrained(os.path.join(REFERENCE, "policy"), torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def expected():
    return load_file(os.path.join(REFERENCE, "policy_expected.safetensors"))


def test_image_logprobs_match_xomni(policy, expected):
    with torch.no_grad():
        got = policy.image_logprobs(expected["input_ids"])
    assert got.shape == expected["image_logprobs"].shape == (2, 37, 16384)
    torch.testing.assert_close(got, expected["image_logprobs"], atol=1e-5, rtol=0)


def test_text_logits_match_xomni(policy, expected):
    with torch.no_grad():
        got = policy.text_logits(expected["input_ids"])
    torch.testing.assert_close(got, expected["text_logits"], atol=1e-5, rtol=0)


def test_learner_logprobs_are_the_image_mode_logprobs(policy, expected):
    """token_logprobs on the 24 image tokens (a 4x6 grid) gathers X-Omni's own image-mode log-probs."""
    ids = expected["input_ids"]
    num_image = 24
    assert (ids[:, -num_image:] >= policy.config.vocab_size).all()
    with torch.no_grad():
        got = policy.token_logprobs(ids, torch.ones_like(ids), num_image).logprobs
    codes = ids[:, -num_image:] - policy.config.vocab_size
    want = expected["image_logprobs"][:, -num_image - 1:-1].gather(-1, codes[..., None]).squeeze(-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_saved_folder_has_xomni_key_names_and_config(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    with safe_open(os.path.join(REFERENCE, "policy", "model.safetensors"), "pt") as f:
        reference_keys = set(f.keys())
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert set(f.keys()) == reference_keys
        assert f.metadata() == {"format": "pt"}  # transformers 4.x refuses safetensors without it
    saved = json.loads((tmp_path / "config.json").read_text())
    reference = json.loads(open(os.path.join(REFERENCE, "policy", "config.json")).read())
    for key in ("model_type", "num_mm_adap_layers", "num_mm_head_layers", "mm_vocab_size", "image_vocab_size",
                "mm_special_tokens", "vocab_size", "hidden_size", "num_hidden_layers", "rope_theta"):
        assert saved[key] == reference[key], key
