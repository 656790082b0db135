"""X-Omni-Zh end to end: `configs/xomni_zh.yaml` plans on one node of 8 x 80 GiB from the shipped shapes (its
text-free decoder: 17.4 GB in bf16, no T5 or CLIP), and `rl.train` trains with a tiny X-Omni-Zh decoder on a real
local Ray (the tiny config's policy, real Ray actors, the real tiny diffusers VAE and Zh transformer)."""

import contextlib
import io
import json

import pytest
from PIL import Image
from train_helpers import REPO, save_config, tiny_config, train

from core.config import ConfigError, load_config
from rl import plan
from rl.decoder.tiny import save_tiny_folders, tiny_xomni_decoder
from rl.distributed.model_sizes import decoder_size
from rl.evaluation.metrics import read_metrics

ZH_DIT_PARAMETERS = 8_677_730_368  # X-Omni-Zh's transformer with FLUX.1-dev's dimensions (configs/shapes/x-omni-zh)


def test_xomni_zh_config_plans_on_one_node_of_eight_80_gib_gpus():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = plan.main([str(REPO / "configs" / "xomni_zh.yaml"), "--nodes", "1", "--gpus-per-node", "8",
                          "--gpu-memory-gib", "80", "--json"])
    result = json.loads(out.getvalue())
    assert code == 0 and result["fits"] is True
    for device in result["devices"]:
        parts = device["parts"]
        assert parts["decoder transformer"] == 2 * ZH_DIT_PARAMETERS  # bf16
        assert abs(parts["decoder transformer"] / 17.4e9 - 1) < 0.01  # "about 17.4 GB" (XOMNI_FACTS.md)
        assert sum(v for k, v in parts.items() if "text encoder" in k) == 0
    shape, source = decoder_size(load_config(REPO / "configs" / "xomni_zh.yaml").model.decoder)
    assert shape.parts["T5 text encoder"] == shape.parts["CLIP text encoder"] == 0 and shape.text_tokens == 0
    assert "configs/shapes/x-omni-zh" in source and "X-Omni-Zh decoder" in source


def test_the_plan_refuses_an_en_folder_where_zh_is_required(tmp_path):
    en_xomni, en_flux = save_tiny_folders(tiny_xomni_decoder(), tmp_path / "en")
    zh_xomni, zh_flux = save_tiny_folders(tiny_xomni_decoder(variant="zh"), tmp_path / "zh")
    node = load_config(REPO / "configs" / "xomni_zh.yaml", [f"paths.xomni={en_xomni}", f"paths.flux={en_flux}"])
    with pytest.raises(ConfigError, match="model.decoder.variant: zh, but .* holds X-Omni-En's decoder"):
        decoder_size(node.model.decoder)
    # The same folder pair of the right release plans, read from its weights: no text encoder either.
    node = load_config(REPO / "configs" / "xomni_zh.yaml", [f"paths.xomni={zh_xomni}", f"paths.flux={zh_flux}"])
    shape, source = decoder_size(node.model.decoder)
    assert shape.parts["T5 text encoder"] == 0 and shape.parts["decoder transformer"] > 0
    assert "X-Omni-Zh decoder" in source


def test_rl_train_runs_with_a_tiny_zh_decoder(tmp_path, local_ray):
    """Two steps of `python -m rl.train` whose rollout decodes with X-Omni-Zh's text-free pipeline (CFG on):
    rewards are scored on its images, the policy updates, and the step-0/1/2 evaluations write image grids."""
    cfg = tiny_config(tmp_path / "run", rewards={"mean_pixel": {"_component_": "tests.fault_rewards.MeanPixel"}},
                      overrides=("trainer.steps=2", "model.policy.image_vocab_size=16384",
                                 "model.policy.mm_vocab_size=16448", "eval.every=1", "eval.num_prompts=2",
                                 "eval.samples_per_prompt=1", "eval.grid_prompts=2"))
    cfg.model.decoder = {"_component_": "rl.decoder.tiny.tiny_xomni_decoder", "variant": "zh",
                         "num_inference_steps": 1, "cfg_scale": 2.0}
    result = train(save_config(cfg, tmp_path / "zh.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("reward/mean_pixel/mean")]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 < row["reward/mean_pixel/mean"] < 1 and row["rollout/invalid_frac"] == 0.0
    grids = sorted((tmp_path / "run" / "eval").glob("step_*.png"))
    assert [g.name for g in grids] == [f"step_{s:08d}.png" for s in (0, 1, 2)]
    with Image.open(grids[-1]) as grid:
        assert grid.size[0] >= 48 and grid.size[1] >= 16  # at least one 16 x 48 decoded image (grid [1, 3])
