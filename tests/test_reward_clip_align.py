"""CLIPAlignReward on a tiny open_clip architecture: exact cosine, batch invariance, learned alignment."""

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data
from tiny_clip import register_tiny_clip, save_tiny_clip_weights

from core.components import validate_component
from rewards.clip_align import CLIPAlignReward

IMAGES = [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]
CAPTIONS = ["an astronaut in a white suit", "a cup of coffee on a saucer", "a tabby cat"]
MODEL = register_tiny_clip()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_clip_weights(tmp_path_factory.mktemp("clip") / "tiny_clip.pt", seed=0)


@pytest.fixture(scope="module")
def reward(weights):
    return CLIPAlignReward(MODEL, weights, device="cpu", batch_size=2)


def all_pairs(reward: CLIPAlignReward) -> torch.Tensor:
    """Score matrix [image, caption] [3, 3] from one batch of all 9 pairs."""
    images = [image for image in IMAGES for _ in CAPTIONS]
    return reward(images, CAPTIONS * len(IMAGES), [{}] * len(images)).scores.reshape(len(IMAGES), -1)


def test_equals_cosine_from_open_clip_api(reward, weights):
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=weights)
    model.eval()
    with torch.no_grad():
        image = F.normalize(model.encode_image(torch.stack([preprocess(i) for i in IMAGES])), dim=-1)
        text = F.normalize(model.encode_text(open_clip.get_tokenizer(MODEL)(CAPTIONS)), dim=-1)
    expected = (image * text).sum(-1)
    scores = reward(IMAGES, CAPTIONS, [{}] * 3).scores
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)


def test_batch_equals_one_by_one(reward):
    batch = all_pairs(reward).flatten()
    single = torch.stack([reward([image], [caption], [{}]).scores[0] for image in IMAGES for caption in CAPTIONS])
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=0)


def fit_contrastive(weights: str, path: str, steps: int = 10) -> str:
    """A few CLIP-loss steps on the 3 (image, caption) pairs; saves the fitted weights to `path`."""
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=weights)
    pixels = torch.stack([preprocess(image) for image in IMAGES])  # [3, 3, 224, 224]
    tokens = open_clip.get_tokenizer(MODEL)(CAPTIONS)  # [3, 77]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.arange(len(IMAGES))
    for _ in range(steps):
        image = F.normalize(model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        logits = 10.0 * image @ text.T  # [image, caption]
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_fitted_pairs_score_higher_than_wrong_captions(reward, weights, tmp_path):
    own_caption_wins = lambda scores: bool((scores.argmax(dim=1) == torch.arange(3)).all())  # noqa: E731
    assert not own_caption_wins(all_pairs(reward))  # random weights: no alignment to find
    fitted = CLIPAlignReward(MODEL, fit_contrastive(weights, str(tmp_path / "fitted.pt")), device="cpu")
    scores = all_pairs(fitted)
    assert own_caption_wins(scores) and own_caption_wins(scores.T)
    assert scores.min() >= fitted.score_range[0] and scores.max() <= fitted.score_range[1]


def test_bfloat16_close_to_float32(reward, weights):
    low = CLIPAlignReward(MODEL, weights, device="cpu", dtype="bfloat16")
    scores = low(IMAGES, CAPTIONS, [{}] * 3).scores
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, reward(IMAGES, CAPTIONS, [{}] * 3).scores, atol=3e-2, rtol=0)


def test_bad_arguments_are_clear_errors(tmp_path, weights):
    missing = str(tmp_path / "open_clip_model.safetensors")
    with pytest.raises(FileNotFoundError, match="weights: file or folder not found"):
        CLIPAlignReward(MODEL, missing)
    node = {"_component_": "rewards.clip_align.CLIPAlignReward", "model": MODEL, "weights": missing}
    assert validate_component(node, "clip") == [f"clip.weights: file or folder not found: {missing}"]
    with pytest.raises(ValueError, match="model: 'ViT-Q-99' is not an open_clip architecture"):
        CLIPAlignReward("ViT-Q-99", weights)
