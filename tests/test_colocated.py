"""Colocated placement through the real `rl.train` driver (its Trainer), with GPUs declared to one local Ray on
this GPU-less machine: the workers run on the CPU, so "the device" is the CPU and offloading shows as storages
resized to 0 bytes. Learner world size 2 (FSDP2 over gloo), 2 rollout replicas in the same 2 processes, the OCR
reward on a 0.1 GPU share beside them. Checked: what each phase leaves on the device, the in-process weight sync,
and that a colocated run, stopped and resumed, logs the same per-step metrics as an uninterrupted split run."""

import math
import os

import pytest
import ray
import torch
from train_helpers import REPO, tiny_spec

from rl.distributed.colocated import Offload
from rl.distributed.host_staging import MIN_CHUNK_BYTES, packed_host_bytes
from rl.distributed.memory import GIB
from rl.driver.trainer import Trainer
from rl.evaluation.metrics import read_metrics

# One CPU per worker: a thread each for sampling and learning, as in the split run (thread counts change float
# reductions, and so the last bits of log-probs and gradient norms).
COLOCATED = ("placement.mode=colocated", "learner.world_size=2", "learner.num_gpus=0.9", "rollout.num_actors=2",
             "placement.gpu_memory_gib=16", "reward_workers.num_gpus=0.1",
             "placement.offload_decoder=true", "learner.num_cpus=1", "rollout.num_cpus=0")
# Split on the same 2 GPUs: both learner ranks on GPU 0, both rollout replicas on GPU 1, half a GPU each.
# Its stages one after the other, as colocated steps run (tests/test_train_pipeline.py compares streaming).
SPLIT = ("learner.world_size=2", "learner.num_gpus=0.5", "rollout.num_actors=2", "rollout.num_gpus=0.5",
         "placement.gpu_memory_gib=16", "trainer.pipeline.streaming=false")
# Wall-clock figures differ between any two runs; everything else must match.
TIMED = ("time/", "rollout/tokens_per_s", "rollout/images_per_s")
PINNED = "memory/pinned_host_gib"  # colocated runs only


def states(trainer: Trainer) -> list[dict]:
    """What each worker keeps on its device, read inside the workers."""

    def read(worker) -> dict:  # nested: Ray pickles it by value (this test module is not importable there)
        from rl.distributed.colocated import tensors_in

        optimizer = [t.to_local() for s in worker.optimizer.state.values() for t in s.values() if t.dim() > 0]
        replica = worker.replica.policy.state_dict()
        return {"optimizer_bytes": [t.untyped_storage().nbytes() for t in optimizer],
                "optimizer_sizes": [t.numel() * t.element_size() for t in optimizer],
                "optimizer_on_host": worker.optimizer_state.nbytes,
                "grads_freed": all(p.grad is None for _, p in worker.trained),
                "resharded": all(type(p).__name__ == "DTensor" for p in worker.policy.parameters()),
                "synced": [item.name for bucket in worker._sync_buckets for item in bucket],
                "rollout_bytes": {n: t.untyped_storage().nbytes() for n, t in replica.items()},
                "decoder_bytes": [t.untyped_storage().nbytes()
                                  for t in tensors_in(worker.replica.decoder, worker.device)],
                "host_bytes": (worker.optimizer_state.host_bytes, worker.decoder.host_bytes)}

    return ray.get([w.__ray_call__.remote(read) for w in trainer.learner.ranks])


def spied_saves(trainer: Trainer, path: str) -> list[tuple[dict, str]]:
    """Every worker's `save(path)`, noting what its device held when the learner's state was written, and its
    layout after."""
    def save(worker) -> tuple[dict, str]:  # nested: Ray pickles it by value
        from rl.distributed.learner import Learner

        seen, original = {}, Learner.save

        def spy(self, target: str) -> None:
            seen.update(layout=self.layout, optimizer_on_device=not self.optimizer_state.active,
                        rollout_released=self.rollout_weights.active, decoder_offloaded=self.decoder.active)
            original(self, target)

        Learner.save = spy
        try:
            worker.save(path)
        finally:
            Learner.save = original
        return seen, worker.layout

    return ray.get([w.__ray_call__.remote(save) for w in trainer.learner.ranks])


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(TIMED) and k != PINNED} for row in rows]


def one_buffer_each(sizes: list[int]) -> int:
    """Host bytes of one pinned buffer per storage, each rounded up to a power of two by the allocator (before)."""
    return sum(1 << (size - 1).bit_length() for size in sizes)


@pytest.fixture(scope="module")
def two_gpus():
    """One local Ray with 2 declared GPUs for every run here (the Trainer uses a Ray already started)."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=6, num_gpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def train(spec) -> Trainer:
    with Trainer(spec) as trainer:
        trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def split_rows(tmp_path_factory, two_gpus) -> list[dict]:
    """Two steps of the split run with the same seed: learner ranks and rollout replicas on GPUs of their own."""
    run = tmp_path_factory.mktemp("split")
    trainer = train(tiny_spec(run, overrides=(*SPLIT, "trainer.steps=2")))
    assert [(u.kind, trainer.plan.placement.slots[u].gpu) for u in trainer.plan.placement.units[:4]] == \
        [("learner", 0), ("learner", 0), ("rollout", 1), ("rollout", 1)]
    return read_metrics(run / "metrics.jsonl")


def test_offload_moves_storages_and_keeps_the_tensors():
    a, b = torch.arange(6.0), torch.ones(3)
    view = a[2:]  # shares a's storage: moved once
    kept = Offload(keep=True)
    assert kept.offload([a, view, b]) == (6 + 3) * 4 == kept.nbytes
    assert a.untyped_storage().nbytes() == view.untyped_storage().nbytes() == b.untyped_storage().nbytes() == 0
    assert kept.offload([a]) == 0  # already off
    kept.restore()
    assert torch.equal(a, torch.arange(6.0)) and torch.equal(view, torch.arange(2.0, 6.0)) and b.sum() == 3
    dropped = Offload(keep=False)
    dropped.offload([b])
    assert b.untyped_storage().nbytes() == 0 and dropped.active
    dropped.restore()  # room again, contents for the caller to write (the weight sync)
    assert b.untyped_storage().nbytes() == 12 and not dropped.active and dropped.host_bytes == 0


def test_packed_host_bytes_are_within_5_percent_of_the_storages():
    """Sized without allocating: 3,000 storages of 1 KB to 2 GiB, log-uniform (AdamW shards and decoder tensors
    span that range), about 250 GiB in all."""
    generator = torch.Generator().manual_seed(0)
    sizes = (2 ** (10 + 21 * torch.rand(3000, generator=generator, dtype=torch.float64))).long().tolist()
    packed, total = packed_host_bytes(sizes), sum(sizes)
    assert total <= packed < 1.05 * total and packed - total < MIN_CHUNK_BYTES + 512 * len(sizes)
    assert one_buffer_each(sizes) > 1.3 * total  # what pinning one buffer per storage cost
    assert packed_host_bytes([39 * GIB]) == 39 * GIB  # one buffer would round up to 64 GiB
    assert packed_host_bytes([]) == 0 and packed_host_bytes([1]) == MIN_CHUNK_BYTES


def test_offload_packs_storages_into_chunks_it_reuses():
    """Storages of several dtypes and odd sizes (one straddling the boundary of the 2 MiB and the 1 MiB chunk, one
    shared by two tensors) come back bit-exactly, twice, from the same chunks."""
    generator = torch.Generator().manual_seed(0)
    big = torch.randn(3 * MIN_CHUNK_BYTES // 8, generator=generator)  # 1.5 MiB: the next storage straddles 2 MiB
    tensors = [big, torch.randn(MIN_CHUNK_BYTES // 2, generator=generator).bfloat16(),
               torch.randint(-128, 127, (7,), dtype=torch.int8, generator=generator), big[5:], torch.tensor(3.5),
               torch.randn(300, 17, generator=generator).double()]
    sizes = [t.untyped_storage().nbytes() for i, t in enumerate(tensors) if i != 3]  # big[5:] is big's storage
    kept, chunks = Offload(keep=True), []
    for _ in range(2):
        expected = [t.clone() for t in tensors]
        assert kept.offload(tensors) == sum(sizes) and kept.host_bytes == packed_host_bytes(sizes) == 3 << 20
        chunks.append([(chunk.data_ptr(), chunk.numel()) for chunk in kept._staging.chunks])
        kept.restore()
        assert all(torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
                   for a, b in zip(tensors, expected, strict=True))
        assert tensors[3].data_ptr() == big.data_ptr() + 5 * 4  # still a view of `big`
        for t in tensors:
            t.add_(1)  # new contents for the second cycle
    assert chunks[0] == chunks[1] and [n for _, n in chunks[0]] == [2 << 20, 1 << 20]  # allocated once
    kept.restore()  # nothing offloaded: a no-op (to_rollout restores whatever was offloaded, maybe nothing)
    assert torch.equal(tensors[-1], expected[-1] + 1) and kept.host_bytes == 3 << 20


def test_offload_holds_within_5_percent_of_what_it_offloads():
    """60 storages of 1 KB to 4 MB, log-uniform (~30 MB): one host buffer each, rounded to powers of two as the
    pinned allocator does, held far more."""
    generator = torch.Generator().manual_seed(0)
    sizes = (2 ** (10 + 12 * torch.rand(60, generator=generator, dtype=torch.float64))).long().tolist()
    tensors = [torch.empty(n // 4) for n in sizes]
    sizes = [t.untyped_storage().nbytes() for t in tensors]
    staged = Offload(keep=True)
    staged.offload(tensors)
    assert staged.host_bytes == packed_host_bytes(sizes)
    assert sum(sizes) <= staged.host_bytes < 1.05 * sum(sizes) and one_buffer_each(sizes) > 1.3 * sum(sizes)


def test_colocated_phases_resume_and_match_split(tmp_path, capsys, split_rows):
    with Trainer(tiny_spec(tmp_path, overrides=(*COLOCATED, "trainer.steps=1"))) as trainer:
        out = capsys.readouterr().out
        assert "node 0 GPU 0: worker 0 (learner rank 0 + rollout replica 0), reward ocr" in out
        assert "decoder and text encoders offloaded to the host while learning" in out
        trainer.fit()  # one step, then the sync and the checkpoint: the workers are arranged for rolling out
        parked = states(trainer)
        for state in parked:
            assert state["optimizer_bytes"] and not any(state["optimizer_bytes"])  # AdamW state off the device...
            assert state["optimizer_on_host"] == sum(state["optimizer_sizes"])  # ...and whole on the host
            assert state["grads_freed"] and state["resharded"]
            assert all(state["rollout_bytes"].values()) and all(state["decoder_bytes"])

        # Saved in the plan's learning phase (AdamW on the device, the rollout side released), then re-synced.
        for layout, after in spied_saves(trainer, str(tmp_path / "spied")):
            assert layout == {"layout": "learning", "optimizer_on_device": True, "rollout_released": True,
                              "decoder_offloaded": True} and after == "rollout"
        assert states(trainer) == parked  # re-synced in process: the rollout layout as before the save

        ray.get([w.to_learning.remote() for w in trainer.learner.ranks])
        for state in states(trainer):
            assert state["optimizer_bytes"] == state["optimizer_sizes"] and state["optimizer_on_host"] == 0
            released = {n for n, size in state["rollout_bytes"].items() if size == 0}
            assert released == set(state["synced"])  # the frozen text head and embedding stay
            assert "lm_head.weight" not in released and "model.lm_embed_tokens.weight" not in released
            assert state["decoder_bytes"] and not any(state["decoder_bytes"])
        with pytest.raises(ray.exceptions.RayTaskError, match="released for the update and not synced"):
            ray.get(trainer.learner.ranks[0].to_rollout.remote())

        sent = trainer.sync_weights()  # refills the replicas in process, then parks the learner again
        learned = trainer.learner.run("trained_weights")
        replicas = ray.get([w.__ray_call__.remote(lambda self: self.replica.policy.state_dict())
                            for w in trainer.learner.ranks])
        assert sent == sum(learned[n].numel() * 4 for n in learned)  # fp32 rollout in this config
        for replica in replicas:
            assert all(torch.equal(replica[n], learned[n]) for n in learned)
        assert all(not any(s["optimizer_bytes"]) and all(s["decoder_bytes"]) for s in states(trainer))

    resumed = train(tiny_spec(tmp_path, overrides=(*COLOCATED, "resume=auto", "trainer.steps=2")))
    assert resumed.resume_from is not None and "resumed from" in capsys.readouterr().out
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] == [r["step"] for r in split_rows]
    # Step 1's update ran before the AdamW state was first staged (after it), step 2's after: its chunks held since.
    decoder_chunks, all_chunks = (max(s["host_bytes"][1] for s in parked), max(sum(s["host_bytes"]) for s in parked))
    assert 0 < decoder_chunks < all_chunks and PINNED not in split_rows[0]
    assert [round(r[PINNED] * GIB) for r in rows] == [decoder_chunks, all_chunks]
    colocated, split = comparable(rows), comparable(split_rows)
    assert colocated[0].keys() == split[0].keys()
    for ours, theirs in zip(colocated, split, strict=True):
        assert [k for k in ours if not same(ours[k], theirs[k])] == []
