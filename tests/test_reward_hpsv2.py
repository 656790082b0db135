"""HPSv2Reward against the `hpsv2` package's own scoring path, on a tiny architecture.

The weights are written by hpsv2's vendored open_clip (random, fixed seed) and scored both by our
reward and by the code path of `hpsv2/img_score.py` (`create_model_and_transforms(...,
light_augmentation=True)`, `load_state_dict`, its tokenizer, diag(image @ text.T)), called directly
because `hpsv2.score()` always downloads the LAION and HPS weights. hpsv2x 1.2.0's vendored open_clip
imports no `turtle` (the plain `hpsv2` wheel's does, and lacks the BPE vocabulary), so it imports
offline as is and no stub module is needed.
"""

import hpsv2.src.open_clip as hpsv2_open_clip
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from skimage import data
from tiny_clip import register_tiny_clip, save_tiny_clip_weights

from core.components import validate_component
from rewards.hpsv2 import HPSv2Reward

LONG_PROMPT = " ".join(["a very detailed photograph of a red bicycle leaning on a stone wall"] * 12)


def rendered_sign() -> Image.Image:
    image = Image.new("RGB", (320, 192), (240, 230, 200))
    ImageDraw.Draw(image).text((40, 80), "OPEN CAFE 24/7", fill=(20, 20, 120))
    return image


# Square, tall, wide, grey array, rendered text, upscaled small, exactly 224 px: every resize branch.
IMAGES = [
    Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(data.chelsea()),
    data.camera(), rendered_sign(), Image.fromarray(data.rocket()).resize((150, 100)),
    Image.fromarray(data.coffee()).resize((224, 224)),
]
PROMPTS = ["an astronaut", "a cup of coffee", "a cat", "a man with a camera", "a cafe sign saying OPEN CAFE",
           LONG_PROMPT, "a cup of coffee"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("hps") / "HPS_tiny_compressed.pt"
    register_tiny_clip()  # our open_clip reads the same architecture name
    return save_tiny_clip_weights(path, seed=0, module=hpsv2_open_clip)


@pytest.fixture(scope="module")
def reward(checkpoint):
    return HPSv2Reward(checkpoint, model="tiny-clip-test", device="cpu", batch_size=3)


def hpsv2_reference_scores(checkpoint, images, prompts) -> torch.Tensor:
    """Scores computed the way hpsv2/img_score.py computes them, one image per call, float32."""
    model, _, preprocess_val = hpsv2_open_clip.create_model_and_transforms(
        "tiny-clip-test", None, precision="fp32", device="cpu", light_augmentation=True, output_dict=True)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu")["state_dict"])
    model.eval()
    tokenizer = hpsv2_open_clip.get_tokenizer("tiny-clip-test")
    scores = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts, strict=True):
            image = image if isinstance(image, Image.Image) else Image.fromarray(image).convert("RGB")
            outputs = model(preprocess_val(image).unsqueeze(0), tokenizer([prompt]))
            scores.append(torch.diagonal(outputs["image_features"] @ outputs["text_features"].T)[0])
    return torch.stack(scores)


def test_matches_hpsv2_package(reward, checkpoint):
    expected = hpsv2_reference_scores(checkpoint, IMAGES, PROMPTS)
    scores = reward(IMAGES, PROMPTS, [{}] * len(IMAGES)).scores
    assert expected.std() > 1e-2  # the tiny random model does tell these images apart
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    # open_clip's own transform (resize the PIL image, crop) misses hpsv2 even on a square photo:
    # the tolerance above is tight enough to see the transform order.
    open_clip_order = reward.clip.score(IMAGES[:1], PROMPTS[:1], reward.clip.preprocess_images)
    assert (open_clip_order - expected[:1]).abs().max() > 1e-4


def test_batch_equals_one_by_one(reward):
    batch = reward(IMAGES, PROMPTS, [{}] * len(IMAGES)).scores
    single = torch.cat([reward([image], [prompt], [{}]).scores for image, prompt in zip(IMAGES, PROMPTS, strict=True)])
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=0)


def test_output_shape_dtype_and_finite(reward):
    # uint8 arrays, a non-square image whose long side is already 224 (hpsv2 itself fails there), 1 px.
    images = [np.full((100, 224, 3), 200, np.uint8), np.zeros((1, 1, 3), np.uint8), IMAGES[0]]
    scores = reward(images, ["a grey band", "black", "an astronaut"], [{}] * 3).scores
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all() and scores.abs().max() <= 1.0
    assert reward([], [], []).scores.shape == (0,)
    with pytest.raises(ValueError, match="2 images and 1 prompts"):
        reward(images[:2], ["one prompt"], [{}, {}])


def test_missing_or_wrong_checkpoint_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint: file or folder not found"):
        HPSv2Reward(missing, model="tiny-clip-test")
    node = {"_component_": "rewards.hpsv2.HPSv2Reward", "checkpoint": missing}
    assert validate_component(node, "rewards.hps") == [f"rewards.hps.checkpoint: file or folder not found: {missing}"]
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"visual.proj": torch.zeros(2, 2)}}, wrong)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    for path in (wrong, tmp_path / "notes.pt"):
        with pytest.raises(ValueError, match="checkpoint: cannot load .* as open_clip 'tiny-clip-test' weights"):
            HPSv2Reward(str(path), model="tiny-clip-test")
