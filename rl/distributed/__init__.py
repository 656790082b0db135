"""What runs in Ray actors and how the driver reaches them: rollout replicas, learner ranks, reward
actors, and moving weights from the learner to the rollout.

Device-specific code is kept to a few lines so that the CPU tests run every other branch; each of these runs only
on a GPU, and scripts/gpu_check.sh (its `train_step` stage: the colocated worker's phases) is what covers them:
- core/devices.py `actor_device`: `torch.accelerator.set_device_index` for an actor that holds a GPU;
- collectives.py: the NCCL backend of the default group (`device_id` binding) and of the weight-sync group
  (`ProcessGroupNCCL` with its timeout); the device rule itself is tested on the CPU with a cuda-only gloo group;
- colocated.py: pinned host staging (`pin=True` on CUDA; the same packing runs unpinned on the CPU) and
  `free_cached_memory` between phases;
- rl/timing.py: `torch.cuda.synchronize` around timed calls.
"""
