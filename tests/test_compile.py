"""`rollout.compile`: the sampler's decode step (static KV cache) and the FLUX transformer under torch.compile
equal eager, through a real RolloutWorker on tiny random models (inductor on the CPU, C++ built with gcc).

Slow by nature: a cold run compiles two graphs (measured 4 minutes on the shared 2-core machine, 25 s once
inductor's on-disk cache holds them). Deselect with `-m "not compile"`.
"""

import numpy as np
import pytest
import torch
from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

from rl.compiled_shapes import row_buckets
from rl.distributed.rollout import RolloutWorker
from rl.model.sampler import CompiledDecodeStep, SamplingParams, sample_image_tokens
from rl.seeding import sample_seed
from rl.train_config import RolloutConfig

pytestmark = pytest.mark.compile

MODEL = {
    # One image-only, one language and one image-only layer: both layer kinds, the smallest graph.
    "policy": {"_component_": "rl.model.tiny.tiny_policy", "seed": 0, "num_hidden_layers": 3,
               "num_mm_adap_layers": 1, "num_mm_head_layers": 1},
    "tokenizer": {"_component_": "rl.model.tiny.tiny_tokenizer"},
    "decoder": {"_component_": "rl.decoder.tiny.tiny_xomni_decoder", "seed": 0, "num_inference_steps": 2,
                "cfg_scale": 2.0, "max_batch_size": 4},
}
PROMPTS = ["a red cat", "a red cat", "a neon sign that says OPEN", "a neon sign that says OPEN"]
# Float32 compiled kernels reorder reductions (fused norms, softmax, matmul epilogues): ~1e-6 relative per op.
# Through 2 denoising steps and the VAE we measured 1.3e-6 in [0, 1] pixels; the bound, 1e-4, is 1/40 of a
# uint8 level.
PIXEL_ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _worker(compile_: bool) -> RolloutWorker:
    return RolloutWorker(MODEL, RolloutConfig(grid=[2, 3], batch_size=4, compile=compile_,
                                              sampling=SamplingParams(top_k=0, min_p=0.0)))


@pytest.fixture(scope="module")
def workers():
    return _worker(False), _worker(True)


def _seeds(kind: str, step: int = 0) -> list[int]:
    return [sample_seed(3, step, i // 2, i % 2, kind) for i in range(len(PROMPTS))]


def _generate(worker, prompts, step=0):
    rows = len(prompts)
    return worker.generate(prompts, _seeds("policy", step)[:rows], _seeds("decoder", step)[:rows])


def _assert_same(eager, compiled):
    (eager_result, eager_images), (compiled_result, compiled_images) = eager, compiled
    assert torch.equal(compiled_result.tokens, eager_result.tokens)
    torch.testing.assert_close(compiled_result.logprobs, eager_result.logprobs, atol=1e-5, rtol=0)
    assert torch.equal(compiled_result.valid, eager_result.valid)
    difference = np.abs(np.stack(compiled_images).astype(int) - np.stack(eager_images).astype(int))
    assert difference.max() <= 1  # uint8 rounding of float images within PIXEL_ATOL


def test_compiled_rollout_equals_eager(workers):
    eager, compiled = workers
    assert compiled.compiled is not None and eager.compiled is None
    _assert_same(_generate(eager, PROMPTS), _generate(compiled, PROMPTS))
    tokens = _generate(eager, PROMPTS)[0].tokens
    decoded = [w.decoder(tokens, (2, 3), PROMPTS, _seeds("decoder")).images for w in (eager, compiled)]
    torch.testing.assert_close(decoded[1], decoded[0], atol=PIXEL_ATOL, rtol=0)


def test_other_prompt_widths_and_new_weights_reuse_the_graphs(workers):
    """Prompts padding to another width fit the same cache bucket, and weights loaded in place (as weight
    sync does) reach the compiled graphs: neither may recompile."""
    eager, compiled = workers
    _generate(compiled, PROMPTS)  # compiled already, unless this test runs alone
    before = _generate(eager, PROMPTS)[0].tokens
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in eager.policy.state_dict().items()}
    for worker in workers:
        worker.load_weights(list(state.items()))  # one bucket of (name, tensor)
    longer = [p + ", at dusk" for p in PROMPTS]  # wider prompts, still within the 64-slot cache bucket
    with torch._dynamo.config.patch(error_on_recompile=True):
        results = [_generate(w, longer, step=1) for w in workers]
        again = _generate(compiled, PROMPTS)
    _assert_same(*results)
    _assert_same(_generate(eager, PROMPTS), again)
    assert not torch.equal(again[0].tokens, before)  # the new weights were used


def test_rows_pad_to_a_few_shapes_and_the_graphs_are_counted(workers):
    """3 prompts pad to the 4-row graphs (no recompile) and draw what eager draws; 1 prompt compiles the sampler's
    1-row graph, one of the buckets 1, 2, 4 of batch_size 4 (the decoder is left at its one graph: compiling
    costs a minute a graph here). The shapes recorded are the graphs dynamo holds, and RolloutResult's
    compiled_graphs (`rollout/compiled_graphs`) counts them."""
    eager, compiled = workers
    _generate(compiled, PROMPTS)  # compiled already, unless this test runs alone
    with torch._dynamo.config.patch(error_on_recompile=True):
        three = _generate(compiled, PROMPTS[:3])
    _assert_same(_generate(eager, PROMPTS[:3]), three)
    one = compiled.format.encode(PROMPTS[:1], compiled.grid)
    sample_image_tokens(compiled.policy, one, compiled.sampling, _seeds("policy")[:1], compiled.compiled)

    widths = [compiled.format.encode(p, compiled.grid).input_ids.shape[1] for p in (PROMPTS, PROMPTS[:3], [PROMPTS[0]])]
    sampler, decoder = compiled.compiled.shapes, compiled.decoder.compiled_shapes
    assert sampler == {(4, 64), (1, 64)} <= CompiledDecodeStep.shapes_for(4, 6, widths)
    assert {rows for rows, _, _ in decoder} == {8} and len(row_buckets(4)) == 3  # 4 images and their CFG rows
    assert len(_debug_get_cache_entry_list(CompiledDecodeStep._logits.__code__)) == len(sampler)
    assert len(_debug_get_cache_entry_list(type(compiled.decoder.transformer).forward.__code__)) == len(decoder)
    assert three[0].compiled_graphs == 2 and compiled.compiled_graphs() == 3
    assert _generate(eager, PROMPTS[:1])[0].compiled_graphs == 0
