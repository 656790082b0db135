"""`python -m rl.plan` on the paper config as shipped (every weights path `???`): the JSON interface, the exit
codes, the advice, split placement across nodes, and LoRA once `trainer.lora` is set."""

import contextlib
import io
import json
import subprocess

from omegaconf import OmegaConf
from train_helpers import REPO

from core.config import load_config
from rl.distributed.host_staging import packed_host_bytes
from rl.distributed.memory import GIB
from rl.distributed.memory_plan import DECODER_PARTS, make_plan, model_sizes, staged_sizes
from rl.distributed.placement import NodeInfo
from rl.plan import main
from rl.train_config import validate_train_config

PAPER = str(REPO / "configs" / "xomni.yaml")
ONE_NODE = ["--nodes", "1", "--gpus-per-node", "8", "--gpu-memory-gib", "80"]


def plan_cli(*args) -> subprocess.CompletedProcess:
    """`python -m rl.plan PAPER args...` as its `main` in this process, stdout and stderr captured (the command in
    a fresh interpreter is run by tests/test_docs.py, from the docs' own example)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([PAPER, *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def plan_json(capsys, *args):
    code = main([PAPER, *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_the_paper_config_fits_one_node_of_eight_80_gib_gpus_colocated():
    result = plan_cli(*ONE_NODE, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert set(plan) == {"fits", "devices", "hosts", "policy_parameters", "problems", "suggestions"}
    assert plan["fits"] is True and plan["problems"] == [] and plan["policy_parameters"] == 9_597_981_696
    assert [(d["node"], d["gpu"]) for d in plan["devices"]] == [(0, g) for g in range(8)]
    for device in plan["devices"]:
        assert device["bytes"] == sum(device["parts"].values()) <= 80 * GIB
        # the peak is the rollout phase: the learner's gradients and AdamW state wait on the host meanwhile
        assert {"policy parameters", "rollout weights", "KV cache", "decoder transformer"} <= set(device["parts"])
        assert "optimizer state" not in device["parts"]
    assert {"reward hpsv2", "reward clip_align"} <= set(plan["devices"][0]["parts"])  # their 0.05 GPU shares
    assert [h["node"] for h in plan["hosts"]] == [0] and plan["hosts"][0]["peak_bytes"] > 0


def test_four_24_gib_gpus_do_not_fit_and_the_plan_says_why():
    result = plan_cli("--nodes", "1", "--gpus-per-node", "4", "--gpu-memory-gib", "24")
    assert result.returncode == 2
    out = result.stdout
    assert "verdict: DOES NOT FIT" in out and "node 0 GPUs 1-3 (each): learner rank + rollout replica" in out
    assert "4 of 12 actors cannot be placed" in out and "24.0 GiB per GPU (largest: decoder transformer" in out
    assert "no change of learner.world_size, rollout.num_actors, placement.mode" in out
    assert "makes it fit: more or larger GPUs are needed" in out


def test_split_placement_puts_rollout_replicas_and_learner_ranks_on_separate_nodes(capsys):
    code, plan = plan_json(capsys, "placement.mode=split", "placement.separate_nodes=true", "--nodes", "2",
                           "--gpus-per-node", "8", "--gpu-memory-gib", "80")
    assert code == 0 and plan["fits"]
    learner = [d for d in plan["devices"] if "optimizer state" in d["parts"]]
    rollout = [d for d in plan["devices"] if "KV cache" in d["parts"]]
    assert {d["node"] for d in learner} == {0} and {d["node"] for d in rollout} == {1}
    assert len(learner) == len(rollout) == 8 and [h["node"] for h in plan["hosts"]] == [0, 1]


def test_advice_names_the_keys_that_make_it_fit(capsys):
    code, plan = plan_json(capsys, *ONE_NODE, "trainer.gradient_checkpointing=false")
    assert code == 2 and not plan["fits"]
    # learner.grad_sync last_micro_batch: 16 micro-batches per rank accumulate an unsharded fp32 gradient copy
    assert "80.0 GiB per GPU (largest: policy gradients 31.7, activations 27.2" in plan["problems"][0]
    assert plan["suggestions"][0]["overrides"] == ["trainer.gradient_checkpointing=true"]
    code, plan = plan_json(capsys, *ONE_NODE, "--host-memory-gib", "256")
    assert code == 2 and any("host:" in p and "256.0 GiB of host memory" in p for p in plan["problems"])
    assert main([PAPER, *ONE_NODE, "placement.mode=sideways"]) == 2
    assert "placement.mode: must be one of ['colocated', 'split']" in capsys.readouterr().err


def test_a_weights_folder_that_is_set_but_empty_is_a_config_error(capsys, tmp_path):
    assert main([PAPER, *ONE_NODE, f"paths.xomni={tmp_path}", f"paths.flux={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"model.policy.path: no config.json in {tmp_path}" in err and "Traceback" not in err
    assert main([PAPER, *ONE_NODE, f"paths.flux={tmp_path}"]) == 2
    assert f"model.decoder.flux_path: no vae/config.json in {tmp_path}" in capsys.readouterr().err


def test_lora_is_planned_when_the_config_sets_it():
    spec = validate_train_config(load_config(PAPER), files=False)
    lora_spec = validate_train_config(load_config(PAPER, ["trainer.lora={r: 16, alpha: 32, dropout: 0.0, "
                                                          "target_modules: [q_proj, v_proj]}"]), files=False)
    nodes = [NodeInfo(0, 8, None, 80 * GIB)]
    full, adapters = make_plan(spec, nodes, model_sizes(spec)), make_plan(lora_spec, nodes, model_sizes(lora_spec))
    learning = {name: adapters.devices[1].phases["forward/backward"].get(name, 0)
                for name in ("policy gradients", "optimizer state", "reference")}
    # q and v adapters of r 16 on 36 layers; the base is the reference; the adapters' gradients accumulate
    # unsharded in fp32 over the 16 micro-batches of a rank (learner.grad_sync: last_micro_batch)
    assert learning == {"policy gradients": 6_488_064 * 4, "optimizer state": 2 * 6_488_064 * 4 // 8,
                        "reference": 0}
    assert adapters.devices[1].bytes < full.devices[1].bytes
    assert OmegaConf.is_missing(spec.cfg.paths, "xomni")  # planned from configs/shapes/, nothing loaded


def test_a_plan_refuses_two_nccl_ranks_on_one_gpu_and_fits_with_whole_gpus(capsys):
    """A plan is for real GPUs, so NCCL: half-GPU learner ranks and rollout replicas (which join the FSDP and the
    weight-sync groups) are refused, naming each key; whole GPUs fit. GPUs declared to Ray on a machine without
    them run gloo (tests/test_train_placement.py) and are not refused."""
    tiny = str(REPO / "configs" / "tiny.yaml")
    split = ["--gpu-memory-gib", "80", "--json", "placement.mode=split", "learner.world_size=2", "rollout.num_actors=2"]
    code = main([tiny, "--nodes", "1", "--gpus-per-node", "2", *split, "learner.num_gpus=0.5", "rollout.num_gpus=0.5"])
    plan = json.loads(capsys.readouterr().out)
    assert code != 0 and plan["fits"] is False
    assert [p.split(":")[0] for p in plan["problems"]] == ["learner.num_gpus", "rollout.num_gpus",
                                                           "learner.num_gpus + rollout.num_gpus"]
    code = main([tiny, "--nodes", "1", "--gpus-per-node", "4", *split, "learner.num_gpus=1", "rollout.num_gpus=1"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["fits"] is True, plan["problems"]


def test_each_colocated_worker_pins_its_offloaded_state_packed_as_offload_packs_it(capsys):
    """The AdamW state and (offloaded while learning) the decoder parts, packed by host_staging's rule: within 0.01%
    of their bytes, where one pinned buffer per part rounded to a power of two would hold 1.4x; the host's peak
    counts the pinned figure."""
    _, plan = plan_json(capsys, *ONE_NODE)
    spec = validate_train_config(load_config(PAPER), files=False)
    sizes = model_sizes(spec)
    planned = make_plan(spec, [NodeInfo(0, 8, None, 80 * GIB)], sizes)
    for device, ours in zip(plan["devices"], planned.devices, strict=True):
        optimizer, decoder = staged_sizes(spec, sizes, ours.offload_decoder)
        assert ours.offload_decoder and optimizer == [ours.phases["optimizer step"]["optimizer state"]]
        assert sorted(decoder) == sorted(ours.phases["rolling out"][k] for k in DECODER_PARTS)
        pinned = device["pinned_host_bytes"]
        assert pinned == packed_host_bytes(optimizer) + packed_host_bytes(decoder) == ours.pinned_host_bytes
        assert sum(optimizer + decoder) <= pinned < 1.0001 * sum(optimizer + decoder)
        assert sum(1 << (n - 1).bit_length() for n in optimizer + decoder) > 1.4 * pinned
    assert planned.hosts[0].parts["worker actors"] == 8 * plan["devices"][0]["pinned_host_bytes"]


def test_lora_on_one_80_gib_gpu_gets_a_suggestion_that_fits_when_applied(capsys):
    """Issue 24: the advice changes the layout too (one rank, one replica) and every suggestion, applied, fits."""
    one_gpu = ("--nodes", "1", "--gpus-per-node", "1", "--gpu-memory-gib", "80")
    code, plan = plan_json(capsys, *one_gpu, "trainer.lora.r=64")
    assert code == 2 and plan["suggestions"], plan["problems"]
    for suggestion in plan["suggestions"]:
        assert set(suggestion) == {"overrides", "fits", "peak_gib"} and suggestion["fits"] is True
        code, applied = plan_json(capsys, "--nodes", "1", "--gpus-per-node", "1", "--gpu-memory-gib", "80",
                                  "trainer.lora.r=64", *suggestion["overrides"])
        assert code == 0 and applied["fits"], (suggestion, applied["problems"])
        assert abs(max(d["bytes"] for d in applied["devices"]) / GIB - suggestion["peak_gib"]) < 0.01


def test_a_host_only_problem_names_host_memory_never_gpus(capsys):
    code, plan = plan_json(capsys, *ONE_NODE, "--host-memory-gib", "16")
    assert code == 2 and not plan["suggestions"]
    assert "more host memory per node" in plan["problems"][-1] and "GPU" not in plan["problems"][-1]


def test_an_absurd_step_is_refused_on_host_memory_naming_the_key(capsys):
    """Issue 25: a step's rows (tokens, images, scores) count against the hosts."""
    code, plan = plan_json(capsys, *ONE_NODE, "--host-memory-gib", "1024", "rollout.prompts_per_step=100000000")
    assert code == 2
    assert any("host" in p and "rollout.prompts_per_step=100000000" in p for p in plan["problems"])


def test_the_header_and_the_table_give_the_same_kv_cache():
    out = plan_cli(*ONE_NODE).stdout
    header = [line for line in out.splitlines() if line.startswith("  KV cache ")][0]
    row = [line for line in out.splitlines() if line.strip().startswith("KV cache") and "sequences" not in line][0]
    assert header.split(": ")[1].split(" GiB")[0] == row.split()[2]
