"""Write the X-Omni pipeline fixture by running X-Omni's OWN pipeline code on tiny random folders.

Run it in the separate reference venv (`make_venv.sh`: diffusers 0.34.0, transformers 4.51.3), never in the
project's .venv, and give it X-Omni's source folder (a clone of github.com/choyakawa/X-Omni, or the remote code
of the X-Omni-En / X-Omni-Zh model folders):

    bash tests/data/xomni_pipeline/make_venv.sh /tmp/xomni_ref_venv
    /tmp/xomni_ref_venv/bin/python tests/data/xomni_pipeline/make_fixture.py --xomni-src /path/to/X-Omni

It imports nothing from the project. What it writes (all under this folder):
- `flux/`: a FLUX.1-dev-shaped pipeline folder (model_index.json, vae, scheduler, CLIP + T5 with tokenizers
  built offline) at toy widths, random weights from fixed seeds;
- `zh_vq_projector.pth`: a tiny SigLIP-VQ projector for the Zh decoder's 32 SigLIP channels (the En decoder
  uses `tests/data/xomni_tiny/vq_projector.pth`);
- `expected.safetensors` + `meta.json`: for every case, the image tokens, the SigLIP tensor X-Omni's
  `detokenize_image` computes from them, the seeds and X-Omni's images (float32, [0, 1]), one pipeline call
  per image; the TeaCache cases also record which steps ran the transformer blocks.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import string
import sys
import types

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(HERE)
EN_DECODER = os.path.join(DATA, "xomni_tiny", "decoder_transformer")
EN_PROJECTOR = os.path.join(DATA, "xomni_tiny", "vq_projector.pth")
ZH_DECODER = os.path.join(DATA, "xomni_zh_tiny", "decoder_transformer")
TEXT_WIDTH = 32  # the tiny En decoder's joint_attention_dim and pooled_projection_dim
CODEBOOK_SIZE = 16384

# FLUX.1-dev's scheduler/scheduler_config.json, verbatim.
FLUX_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                  "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
# FLUX.1-dev's model_index.json component classes.
FLUX_MODEL_INDEX = {
    "_class_name": "FluxPipeline", "_diffusers_version": "0.30.0.dev0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
}

NUM_STEPS = 4
CFG_SCALE = 2.0
TEACACHE_STEPS = 10
EN_GRID = (3, 4)
ZH_GRID = (4, 3)
PROMPTS = ["a red apple on a wooden table", "STOP 42"]
SEEDS = [11, 12]
TOKEN_SEED = {"en": 101, "zh": 202}
TEACACHE_THRESHOLDS = (0.0, 0.3, 0.8)


class _ScaleOne(float):
    """1.0 whose `> 1` test is true.

    X-Omni-En's pipeline asserts `do_true_cfg` (true_cfg_scale > 1): it has no CFG-off mode. Passing this
    value runs its code unchanged at scale 1, i.e. velocity = neg + 1.0 * (pos - neg).
    """

    def __gt__(self, other: object) -> bool:
        return True


def load_module(path: str, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_vq_classes(path: str) -> types.SimpleNamespace:
    """X-Omni's IBQ / ResidualBlock / VQConvProjector, executed from its file unchanged.

    The module itself imports torchvision (image transforms) and timm (the SigLIP ViT), which the decode path
    never uses and which have no build for this torch; only the three class definitions are executed.
    """
    with open(path) as f:
        tree = ast.parse(f.read())
    wanted = {"IBQ", "ResidualBlock", "VQConvProjector"}
    body = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name in wanted]
    from einops import rearrange
    namespace = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "einsum": torch.einsum,
                 "rearrange": rearrange}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)
    return types.SimpleNamespace(**{k: namespace[k] for k in wanted})


def build_flux_folder(root: str) -> None:
    """Tiny VAE, FLUX.1's scheduler config, CLIP + T5 with offline tokenizers, as a diffusers pipeline folder."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump(FLUX_MODEL_INDEX, f, indent=1)
    FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER).save_pretrained(os.path.join(root, "scheduler"))
    torch.manual_seed(0)
    vae = AutoencoderKL(  # FLUX's VAE shape (no quant convs, its scaling/shift) at toy widths
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    vae.save_pretrained(os.path.join(root, "vae"))

    clip_tokenizer = clip_tokenizer_offline(os.path.join(root, "tokenizer"))
    torch.manual_seed(1)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=clip_tokenizer.model_max_length,
        bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id))
    clip.save_pretrained(os.path.join(root, "text_encoder"))

    t5_tokenizer = t5_tokenizer_offline(os.path.join(root, "tokenizer_2"))
    torch.manual_seed(2)
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=TEXT_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id, decoder_start_token_id=t5_tokenizer.pad_token_id))
    t5.save_pretrained(os.path.join(root, "text_encoder_2"))


def clip_tokenizer_offline(folder: str) -> CLIPTokenizer:
    """CLIP's byte-level BPE over single bytes (also in end-of-word form), no merges, 77 positions."""
    os.makedirs(folder, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pieces = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump({p: i for i, p in enumerate(pieces)}, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file, merges_file, model_max_length=77, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def t5_tokenizer_offline(folder: str) -> T5TokenizerFast:
    """A T5-style Unigram over printable characters (with and without the word-start marker) as tokenizer.json."""
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -2.5) for c in chars] + [(c, -3.0) for c in chars]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                extra_ids=0)
    tokenizer.save_pretrained(folder)
    return T5TokenizerFast.from_pretrained(folder)


def build_zh_projector(vq: types.SimpleNamespace, path: str) -> None:
    """X-Omni's VQConvProjector for the tiny Zh decoder's 32 SigLIP channels (codebook 16384 x 4)."""
    torch.manual_seed(3)
    projector = vq.VQConvProjector(z_channels=32, codebook_size=CODEBOOK_SIZE, codebook_dim=4)
    # IBQ's init is l2-normalised rows of ~1/n_e; wider rows make the codes change the picture.
    torch.nn.init.normal_(projector.quantize.embedding.weight)
    torch.save(projector.state_dict(), path)


def siglip_from_tokens(projector: torch.nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """X-Omni's `detokenize_image` up to the pipeline: tokens [h*w] -> SigLIP tensor [1, h*w, z]."""
    h, w = grid
    latents = projector.decode(tokens, (1, h, w, projector.quantize.e_dim))
    return latents.reshape(*latents.shape[:2], -1).transpose(1, 2).contiguous()


def load_projector(vq: types.SimpleNamespace, path: str) -> torch.nn.Module:
    state = torch.load(path, map_location="cpu")
    codebook_size, codebook_dim = state["quantize.embedding.weight"].shape
    projector = vq.VQConvProjector(z_channels=state["post_quant_conv.weight"].shape[0],
                                   codebook_size=codebook_size, codebook_dim=codebook_dim)
    projector.load_state_dict(state, strict=True)  # as SiglipTokenizer does
    return projector.eval()


class StepRecorder:
    """Per transformer call (one denoising step), whether the block stack ran: the steps TeaCache skips never
    reach the first double block."""

    def __init__(self, transformer: torch.nn.Module):
        self.ran: list[bool] = []
        transformer.register_forward_pre_hook(lambda *_: self.ran.append(False))
        transformer.transformer_blocks[0].register_forward_hook(self._mark)

    def _mark(self, *_) -> None:
        self.ran[-1] = True


def enable_teacache(transformer: torch.nn.Module, module: types.ModuleType, threshold: float, steps: int) -> None:
    """X-Omni's `teacache_forward` on this transformer, with the state attributes it reads (TeaCache4FLUX's)."""
    transformer.forward = types.MethodType(module.teacache_forward, transformer)
    transformer.enable_teacache = True
    transformer.cnt = 0
    transformer.num_steps = steps
    transformer.rel_l1_thresh = threshold
    transformer.accumulated_rel_l1_distance = 0
    transformer.previous_modulated_input = None
    transformer.previous_residual = None


def run_case(pipe, siglips: list[torch.Tensor], grid: tuple[int, int], steps: int, scale: float,
             recorder: StepRecorder | None = None) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Each image through X-Omni's pipeline in its own call, called as its `detokenize_image` does (plus a seeded
    generator and float output instead of PIL's uint8): images float32 [3, 16h, 16w] in [0, 1], and per image
    the steps that ran the block stack (when a recorder watches the transformer)."""
    h, w = grid
    images, computed = [], []
    for siglip, prompt, seed in zip(siglips, PROMPTS, SEEDS, strict=True):
        if recorder is not None:
            recorder.ran.clear()
        out = pipe(siglip, [prompt], negative_prompt=[""], height=16 * h, width=16 * w, num_inference_steps=steps,
                   guidance_scale=1.0, true_cfg_scale=scale, true_cfg_scale_2=scale,
                   generator=torch.Generator().manual_seed(seed), output_type="pt")
        images.append(out.images[0].float())
        if recorder is not None:
            assert len(recorder.ran) == steps and pipe.transformer.cnt == 0  # TeaCache's step counter wrapped
            computed.append([i for i, ran in enumerate(recorder.ran) if ran])
    return images, computed


def load_pipeline(module: types.ModuleType, flux: str, transformer: torch.nn.Module):
    """X-Omni's `init_vision`: the pipeline from the FLUX folder with X-Omni's transformer in it."""
    pipe = module.FluxPipelineWithSigLIP.from_pretrained(flux, transformer=transformer, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xomni-src", required=True, help="X-Omni source folder (modeling_siglip_flux*.py)")
    parser.add_argument("--out", default=HERE, help="fixture folder (default: this script's folder)")
    args = parser.parse_args()
    en_file = os.path.join(args.xomni_src, "modeling_siglip_flux.py")
    zh_file = os.path.join(args.xomni_src, "modeling_siglip_flux_zh.py")
    vq_file = os.path.join(args.xomni_src, "modeling_siglip_tokenizer.py")
    for path in (en_file, zh_file, vq_file):
        if not os.path.isfile(path):
            sys.exit(f"--xomni-src: {path} not found (see README.md for where X-Omni's files are)")
    torch.set_grad_enabled(False)
    en, zh, vq = load_module(en_file, "xomni_siglip_flux"), load_module(zh_file, "xomni_siglip_flux_zh"), \
        load_vq_classes(vq_file)

    flux = os.path.join(args.out, "flux")
    build_flux_folder(flux)
    zh_projector_path = os.path.join(args.out, "zh_vq_projector.pth")
    build_zh_projector(vq, zh_projector_path)

    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, dict] = {}

    def inputs(variant: str, projector: torch.nn.Module, grid: tuple[int, int]) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(TOKEN_SEED[variant])
        tokens = torch.randint(0, CODEBOOK_SIZE, (len(SEEDS), grid[0] * grid[1]), generator=gen)
        tensors[f"{variant}/tokens"] = tokens
        siglips = [siglip_from_tokens(projector, t, grid) for t in tokens]
        tensors[f"{variant}/siglip"] = torch.cat(siglips)
        return siglips

    def record(name: str, images: list[torch.Tensor], **settings) -> None:
        tensors[f"{name}/images"] = torch.stack(images)
        cases[name] = settings

    # En. X-Omni-En's init_vision loads the pipeline, then swaps in its transformer: the same as passing it.
    def en_transformer() -> torch.nn.Module:
        return en.FluxTransformer2DModelWithSigLIP.from_pretrained(
            EN_DECODER, siglip_channels=64, torch_dtype=torch.float32)

    en_pipe = load_pipeline(en, flux, en_transformer())
    en_siglip = inputs("en", load_projector(vq, EN_PROJECTOR), EN_GRID)
    for name, scale in (("en_cfg", CFG_SCALE), ("en_nocfg", _ScaleOne(1.0))):
        images, _ = run_case(en_pipe, en_siglip, EN_GRID, NUM_STEPS, scale)
        record(name, images, variant="en", cfg_scale=float(scale), num_inference_steps=NUM_STEPS)

    # Zh: text-free; its pipeline reads the prompt list for the batch size only.
    zh_transformer = zh.FluxTransformer2DModelWithSigLIP.from_pretrained(
        ZH_DECODER, siglip_channels=32, torch_dtype=torch.float32)
    zh_pipe = load_pipeline(zh, flux, zh_transformer)
    zh_siglip = inputs("zh", load_projector(vq, zh_projector_path), ZH_GRID)
    for name, scale in (("zh_cfg", CFG_SCALE), ("zh_nocfg", 1.0)):
        images, _ = run_case(zh_pipe, zh_siglip, ZH_GRID, NUM_STEPS, scale)
        record(name, images, variant="zh", cfg_scale=float(scale), num_inference_steps=NUM_STEPS)

    # TeaCache (only the En file has teacache_forward): a fresh transformer per threshold, CFG on.
    for threshold in TEACACHE_THRESHOLDS:
        transformer = en_transformer()
        enable_teacache(transformer, en, threshold, TEACACHE_STEPS)
        recorder = StepRecorder(transformer)
        images, computed = run_case(load_pipeline(en, flux, transformer), en_siglip, EN_GRID, TEACACHE_STEPS,
                                    CFG_SCALE, recorder)
        record(f"teacache_{threshold:g}", images, variant="en", cfg_scale=CFG_SCALE,
               num_inference_steps=TEACACHE_STEPS, teacache_threshold=threshold, steps_computed=computed)

    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(args.out, "expected.safetensors"))
    meta = {
        "made_with": {
            "xomni_files_sha256": {os.path.basename(p): _sha256(p) for p in (en_file, zh_file, vq_file)},
            "xomni_vq_classes_used": ["IBQ", "ResidualBlock", "VQConvProjector"],
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "device": "cpu", "dtype": "float32",
        },
        "prompts": PROMPTS, "seeds": SEEDS, "max_sequence_length": 512, "guidance_scale": 1.0,
        "grids": {"en": list(EN_GRID), "zh": list(ZH_GRID)},
        "decoders": {"en": "../xomni_tiny/decoder_transformer", "zh": "../xomni_zh_tiny/decoder_transformer"},
        "projectors": {"en": "../xomni_tiny/vq_projector.pth", "zh": "zh_vq_projector.pth"},
        "text_ids": _text_ids(flux),
        "cases": cases,
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps({name: {k: v for k, v in c.items() if k == "steps_computed"} for name, c in cases.items()}))



def _text_ids(flux: str) -> dict:
    """The tokenizers' ids for the prompts and the empty prompt: a check that the project reads them alike."""
    clip = CLIPTokenizer.from_pretrained(os.path.join(flux, "tokenizer"))
    t5 = T5TokenizerFast.from_pretrained(os.path.join(flux, "tokenizer_2"))
    prompts = PROMPTS + [""]
    return {"prompts": prompts,
            "clip": clip(prompts, padding="max_length", max_length=77, truncation=True).input_ids,
            "t5_unpadded": [t5(p).input_ids for p in prompts]}


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


if __name__ == "__main__":
    main()
