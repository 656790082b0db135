"""Reward-hacking monitors and drift alerts on inputs whose answers are known by construction."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rl.evaluation.alerts import DriftAlerts, relative_drift
from rl.evaluation.monitors import (
    THUMBNAIL,
    advantage_correlations,
    batch_monitors,
    correlation,
    high_frequency_share,
    image_diversity,
    image_statistics,
    thumbnails,
    token_diversity,
)
from rl.grpo import group_advantages


def flat(rgb, size=(32, 32)):
    return np.broadcast_to(np.array(rgb, np.uint8), (*size, 3)).copy()


def test_saturation_and_brightness_of_flat_colours():
    stats = image_statistics([flat((255, 0, 0)), flat((128, 128, 128)), flat((0, 0, 0)), flat((255, 255, 255)),
                              flat((200, 100, 100))])
    assert stats["saturation"].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.5])
    luma = [0.299, 128 / 255, 0.0, 1.0, (0.299 * 200 + 0.587 * 100 + 0.114 * 100) / 255]
    assert stats["brightness"].tolist() == pytest.approx(luma, abs=1e-6)
    assert all(v.dtype == torch.float32 and v.shape == (5,) for v in stats.values())


def test_high_frequency_share_separates_grids_from_smooth_images():
    y, x = np.mgrid[:32, :32]
    checker = ((x + y) % 2).astype(np.float32)                       # energy only at (0.5, 0.5) cycles/px
    sine = np.sin(2 * np.pi * x / 16).astype(np.float32)              # one frequency, 1/16 cycles/px
    stripes = (x % 8 < 4).astype(np.float32)                          # a square wave of period 8 px
    assert high_frequency_share(checker) == pytest.approx(1.0)
    assert high_frequency_share(sine) == pytest.approx(0.0, abs=1e-9)
    assert high_frequency_share(np.full((32, 32), 0.7, np.float32)) == 0.0
    # The 8-periodic square wave's DFT has power 4 / (2 - 2 cos(2 pi k / 8)) at k = 1, 3, 5, 7 (k / 8 cycles/px):
    # k = 3, 5 (+-3/8) lie above 1/4, so the share is (2 - sqrt 2) / 4.
    share = high_frequency_share(stripes)
    assert share == pytest.approx((2 - math.sqrt(2)) / 4)
    # The same through image_statistics (grey pictures: luma = value).
    pictures = [np.repeat((a * 255).astype(np.uint8)[..., None], 3, axis=2) for a in (checker, stripes)]
    assert image_statistics(pictures)["hf_energy"].tolist() == pytest.approx([1.0, share], rel=1e-5)


def test_jpeg_bits_per_pixel_is_the_encoded_size():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    stats = image_statistics([flat((90, 30, 200), (256, 256)), noise])
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=75)
    assert stats["jpeg_bpp"][1].item() == pytest.approx(8 * len(buffer.getvalue()) / 256 ** 2)
    assert stats["jpeg_bpp"][0] < 0.5 < 4 < stats["jpeg_bpp"][1]  # flat: little beyond the JPEG header


def test_token_diversity_is_the_share_of_differing_positions():
    collapsed = torch.tensor([[5, 6, 7, 8]] * 4)                     # [G=4, T=4]
    half = torch.tensor([[1, 2, 3, 4], [1, 2, 9, 9]])                # one pair differing at 2 of 4 positions
    distinct = torch.arange(12).view(3, 4)                           # every position differs
    assert token_diversity(collapsed[None]).tolist() == [0.0]
    assert token_diversity(half[None]).tolist() == [0.5]
    assert token_diversity(distinct[None]).tolist() == [1.0]
    three = torch.tensor([[[0, 0], [0, 1], [1, 1]]])                 # pairs differ at 1, 2, 1 of 2 positions
    assert token_diversity(three).item() == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_image_diversity_is_the_mean_pairwise_rms_distance():
    black, white, grey = flat((0, 0, 0), (4, 4)), flat((255, 255, 255), (4, 4)), flat((51, 51, 51), (4, 4))
    groups = torch.from_numpy(np.stack([np.stack([black] * 3), np.stack([black, white, grey])]))  # [2, 3, 4, 4, 3]
    diversity = image_diversity(groups)
    assert diversity[0].item() == 0.0                                # a collapsed group
    assert diversity[1].item() == pytest.approx((1.0 + 0.2 + 0.8) / 3)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert image_diversity(groups, valid)[1].item() == pytest.approx(1.0)  # the grey one is left out
    assert math.isnan(image_diversity(groups, torch.tensor([[True, False, False]] * 2))[0].item())


def test_thumbnails_average_areas():
    left_right = np.zeros((32, 64, 3), np.uint8)
    left_right[:, 32:] = 255
    small = thumbnails([left_right, flat((10, 20, 30), (48, 48))])
    assert small.shape == (2, THUMBNAIL, THUMBNAIL, 3) and small.dtype == torch.uint8
    assert small[0, :, : THUMBNAIL // 2].max() == 0 and small[0, :, THUMBNAIL // 2:].min() == 255
    assert (small[1] == torch.tensor([10, 20, 30], dtype=torch.uint8)).all()


def test_batch_monitors_reduce_a_step():
    images = [flat((255, 0, 0), (16, 16))] * 2 + [flat((0, 0, 255), (16, 16)), flat((0, 0, 0), (16, 16))]
    tokens = torch.tensor([[1, 2], [1, 2], [3, 4], [4, 3]])          # group 0 collapsed, group 1 all different
    valid = torch.tensor([True, True, True, False])                  # the black one is invalid
    stats = image_statistics(images)
    metrics = batch_monitors(stats, thumbnails(images), tokens, valid, group_size=2)
    assert metrics["monitor/saturation"] == pytest.approx(1.0)      # the invalid black image is left out
    assert metrics["monitor/brightness"] == pytest.approx((0.299 * 2 + 0.114) / 3, abs=1e-6)
    assert metrics["monitor/diversity/tokens"] == pytest.approx(0.5)  # mean of 0 and 1
    assert metrics["monitor/diversity/images"] == 0.0                # group 1 has one valid image: NaN, skipped
    with pytest.raises(ValueError, match="groups of 3"):
        batch_monitors(stats, thumbnails(images), tokens, valid, group_size=3)


def test_advantage_correlations_tell_which_reward_drives_the_advantages():
    drives = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.2, 0.8, 0.6, 0.7])   # P = 2 groups of G = 4
    constant = torch.full((8,), 0.4)                                  # no preference within any group
    opposite = 1 - drives
    partial = torch.tensor([0.1, 0.9, float("nan"), 0.3, 0.2, 0.8, 0.6, float("nan")])
    advantages = group_advantages(drives.view(2, 4)).view(-1)
    corr = advantage_correlations({"drives": drives, "constant": constant, "opposite": opposite,
                                   "partial": partial}, advantages, group_size=4)
    assert corr["monitor/advantage_corr/drives"] == pytest.approx(1.0)
    assert corr["monitor/advantage_corr/opposite"] == pytest.approx(-1.0)
    assert math.isnan(corr["monitor/advantage_corr/constant"])
    assert 0.5 < corr["monitor/advantage_corr/partial"] <= 1.0       # the rows it scored, normalised per group
    assert math.isnan(correlation(torch.tensor([1.0]), torch.tensor([2.0])))  # one row: no correlation


def test_an_alert_fires_on_drift_past_its_threshold(caplog):
    alerts = DriftAlerts({"monitor/saturation": 0.5, "eval/reward/mean": 0.1}, stop=False)
    assert alerts.check(0, {"eval/reward/mean": 0.2}) == []          # step 0: baselines are taken
    assert alerts.check(1, {"monitor/saturation": 0.4, "eval/reward/mean": None}) == []
    assert alerts.check(2, {"monitor/saturation": 0.55}) == []        # +37.5%: under 50%
    fired = alerts.check(3, {"monitor/saturation": 0.61, "eval/reward/mean": 0.21})
    assert [(a.metric, a.step, a.baseline, a.value) for a in fired] == [("monitor/saturation", 3, 0.4, 0.61)]
    with caplog.at_level("WARNING"):
        assert alerts.report(fired) is None                           # warned, not stopped
    assert "monitor/saturation is 0.61 at step 3, 52.5% away from its step-0 value 0.4" in caplog.text
    assert "monitor.alerts.monitor/saturation: 0.5" in caplog.text
    assert [a.metric for a in alerts.check(4, {"eval/reward/mean": 0.17})] == ["eval/reward/mean"]  # -15%


def test_a_stopping_alert_and_baselines_from_history():
    history = [{"step": 0, "eval/reward/mean": 0.0}, {"step": 1, "monitor/saturation": 0.5},
               {"step": 2, "monitor/saturation": 0.9}]              # a resumed run: the first values count
    alerts = DriftAlerts({"monitor/saturation": 0.5, "eval/reward/mean": 0.05}, stop=True, history=history)
    assert alerts.baselines == {"eval/reward/mean": 0.0, "monitor/saturation": 0.5}
    assert alerts.check(3, {"monitor/saturation": 0.7, "eval/reward/mean": 0.04}) == []
    fired = alerts.check(4, {"monitor/saturation": 0.2, "eval/reward/mean": 0.06})
    assert {a.metric for a in fired} == {"monitor/saturation", "eval/reward/mean"}
    stop = alerts.report(fired)
    assert "monitor/saturation is 0.2 at step 4" in stop and "monitor.stop_on_alert" in stop
    assert relative_drift(0.06, 0.0) == pytest.approx(0.06)           # a zero baseline: absolute drift
