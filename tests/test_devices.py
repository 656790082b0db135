"""core/devices.py without Ray: an actor's device and the CUDA allocator setting it makes (under Ray, with GPUs
declared to a two-node Cluster: tests/test_train_placement.py)."""

import os

import pytest
import torch

from core.devices import ALLOC_CONF, actor_device, resolve_device, resolve_dtype

KEY, DEFAULT = ALLOC_CONF


def test_an_actor_with_a_gpu_share_gets_expandable_segments_unless_the_user_set_the_allocator(monkeypatch):
    monkeypatch.delenv(KEY, raising=False)
    assert actor_device(0) == torch.device("cpu") and KEY not in os.environ  # a CPU actor leaves it alone
    assert actor_device(0.5) == torch.device("cpu")  # GPUs only declared to Ray: the CPU, as the tests run
    assert os.environ[KEY] == "expandable_segments:True" == DEFAULT
    monkeypatch.setenv(KEY, "max_split_size_mb:512")
    actor_device(1)
    assert os.environ[KEY] == "max_split_size_mb:512"


def test_outside_ray_auto_is_the_accelerator_when_there_is_one():
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    assert resolve_device("auto") == torch.device(accelerator.type if accelerator else "cpu")
    assert resolve_device("cpu") == torch.device("cpu") and resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int8")
