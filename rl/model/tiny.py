"""Tiny random X-Omni policy and tokenizer, built offline and deterministically.

Used by the tests and, as config components (`_component_: rl.model.tiny.tiny_policy`), by the CPU training
config. The tiny policy keeps X-Omni's real image vocabulary (16384 codes + 64 extra rows): the
softmax is always over all codes, so shapes downstream (decoder, learner) are the real ones.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from core.devices import DtypeName
from rl.model.policy import XOmniConfig, XOmniPolicy
from rl.model.xomni_model import MM_SPECIAL_TOKENS

PAD_TOKEN = "<pad>"
# 256 byte tokens, then <pad>, <SOM>, <EOM>, <IMAGE>.
TINY_VOCAB_SIZE = 256 + 1 + len(MM_SPECIAL_TOKENS)


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """Byte-level tokenizer with no merges: any text (any script) encodes, one token per UTF-8 byte."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD_TOKEN,
                                   additional_special_tokens=list(MM_SPECIAL_TOKENS))


def tiny_policy_config(**overrides) -> XOmniConfig:
    """A 64-wide, 2 + 2 + 2 layer X-Omni config whose text vocabulary matches `tiny_tokenizer()`."""
    values = dict(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                  num_mm_adap_layers=2, num_mm_head_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=8192, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=False)
    values.update(overrides)
    return XOmniConfig(**values)


def tiny_policy(seed: int = 0, torch_dtype: DtypeName = "float32", device: str | None = None,
                **overrides) -> XOmniPolicy:
    """A random tiny policy (64 wide, 2 + 2 + 2 layers) for tests and the CPU demo.

    Args:
        seed: seeds the random weights.
        torch_dtype: dtype of the weights.
        device: where they are allocated (None: the CPU).
        overrides: XOmniConfig keys to change (e.g. image_vocab_size, initializer_range); see
            `tiny_policy_config` for the others.
    """
    return XOmniPolicy.from_config(tiny_policy_config(**overrides), seed=seed, torch_dtype=torch_dtype,
                                   device=device)
