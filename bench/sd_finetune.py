"""Benchmark fine-tuning a real-size Stable Diffusion 1.5-shaped UNet: phenogen against a plain loop, one run.

A randomly initialised SD-1.5-shaped pipeline directory (UNet2DConditionModel 320/640/1280/1280, 860 M
parameters; the SD AutoencoderKL; SD 1.5's PNDM scheduler; no text encoder: phenogen reads unet/, vae/
and scheduler/ only) and a synthetic photo dataset (coloured shapes, one per species, 650 bp barcodes)
at 512 px. No weights are downloaded: speed and memory do not depend on what the weights are. Routes,
side by side in one process, each for ``--warmup`` steps and then ``--steps`` timed steps:

* **phenogen-lora** — ``train_image_model`` with ``image.base``, LoRA rank 32 / alpha 8 on
  to_q/to_k/to_v/to_out.0 (fp32), the frozen base in bf16, cached VAE latents and condition features,
  fused AdamW on a GPU, bf16 autocast;
* **phenogen-full** — the same, the whole UNet trained (fp32 master weights, bf16 autocast);
* **plain-lora**, **plain-full** — a plain loop written here after the defaults of diffusers'
  ``examples/text_to_image/train_text_to_image_lora.py`` and ``train_text_to_image.py``: the VAE (in
  bf16) encodes every batch (no latent cache), ``torch.optim.AdamW`` as torch makes it (not fused),
  no EMA; LoRA: the UNet cast to bf16, ``unet.add_adapter(LoraConfig(r=32, lora_alpha=8,
  init_lora_weights="gaussian", target_modules=[...]))``, the LoRA weights cast back to fp32
  (``cast_training_params``); full: fp32 weights under bf16 autocast. Its condition is phenogen's own
  conditioner (kmer features of the barcodes recomputed every batch, as the examples run CLIP every
  batch; its trainable head in the optimizer), so both loops train the same model on the same
  5-token condition and differ only in how they run it. (Random 77 x 768 tensors would cost the UNet
  0.6 % more FLOPs per image.) Images are held in memory as one uint8 tensor (the examples decode and
  transform them every batch in the main process), which favours the plain loop, if anything.

Measured per route: images/s over the timed steps (from a global optimizer step hook, CUDA
synchronised), peak GPU memory over the timed steps (``torch.cuda.max_memory_allocated``, reset after
the warm-up; the route's whole peak, setup and caching included, beside it), and model FLOPs
utilisation: the FLOPs of one UNet forward + backward per image, counted by
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (batch 2, divided; the math attention
kernel, so attention counts as its two matrix products and gradient checkpointing's recompute is not
counted), times images/s, over the GPU's dense bf16 peak (``--peak-tflops``; known for H100/H200/A100).
The VAE encode of the plain loop and the conditioner are not counted: MFU is UNet training work.
EMA is off in every route (``--ema-decay``; the examples' default).

    python bench/sd_finetune.py                               # on a CUDA GPU: SD 1.5 shapes, 512 px, bf16
    python bench/sd_finetune.py --gradient-checkpointing --batch-size 16
    .venv/bin/python bench/sd_finetune.py --tiny              # CPU smoke test: tiny shapes, 16 px, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROUTES = ("phenogen-lora", "plain-lora", "phenogen-full", "plain-full")
LORA_RANK, LORA_ALPHA = 32, 8.0
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
LR = 1e-4  # the examples' default; speed does not depend on it
SPECIES = 8
BARCODE_BP = 650

# SD 1.5's unet/config.json, vae/config.json and scheduler/scheduler_config.json (the rest: diffusers defaults)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)  # fmt: skip
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    scaling_factor=0.18215,
)  # fmt: skip
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)  # fmt: skip
# --tiny: the shapes of tests/sd_tiny.py (diffusers' get_dummy_components), 16 px images
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4,
)  # fmt: skip
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
    norm_num_groups=4, scaling_factor=0.18215,
)  # fmt: skip


def default_peak_tflops(name: str) -> float | None:
    """Dense (no sparsity) bf16 tensor-core peak of the GPUs the NVIDIA datasheets give, by device name."""
    n = name.upper()
    if "H200" in n:
        return 989.0
    if "H100" in n and "NVL" not in n:
        return 756.0 if "PCIE" in n else 989.0  # SXM ("NVIDIA H100 80GB HBM3") 989
    if "A100" in n:
        return 312.0
    return None


# ---------------------------------------------------------------------------------- inputs
def build_sd(root: Path, tiny: bool, device, seed: int = 0) -> Path:
    """A randomly initialised SD 1.5-shaped (or tiny) pipeline directory: unet/, vae/, scheduler/, model_index.json."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):  # initialising 860 M parameters on the GPU takes a second, on the CPU many
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
    unet.cpu().save_pretrained(root / "unet")  # float32 safetensors, as SD 1.5 ships
    vae.cpu().save_pretrained(root / "vae")
    PNDMScheduler(**SD15_SCHEDULER).save_pretrained(root / "scheduler")
    # what StableDiffusionPipeline(..., text_encoder=None, tokenizer=None, safety_checker=None).save_pretrained
    # writes, without importing transformers
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    index |= dict.fromkeys(("text_encoder", "tokenizer", "safety_checker", "feature_extractor"), [None, None])
    (root / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return root


def build_dataset(root: Path, n_images: int, resolution: int, seed: int = 0):
    """``n_images`` photos of ``SPECIES`` species (a coloured disc, square or triangle each, jittered), one
    per record, all in the train split; barcodes ~650 bp (species 10 % apart, individuals 0.5 %)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from phenogen.data.dataset import Record, write_dataset

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    base = rng.choice(list("ACGT"), BARCODE_BP)
    species = []
    for s in range(SPECIES):
        seq = base.copy()
        seq[rng.choice(BARCODE_BP, BARCODE_BP // 10, replace=False)] = rng.choice(
            list("ACGT"), BARCODE_BP // 10
        )
        species.append((seq, tuple(int(c) for c in rng.integers(0, 256, 3)), s % 3))
    records = []
    r = resolution
    for i in range(n_images):
        s = i % SPECIES
        seq, colour, shape = species[s]
        seq = seq.copy()
        seq[rng.choice(BARCODE_BP, 3, replace=False)] = rng.choice(list("ACGT"), 3)
        im = Image.new("RGB", (r, r), (200, 220, 240))
        cx, cy = (r / 2 + rng.uniform(-0.1, 0.1) * r for _ in range(2))
        h = r * rng.uniform(0.2, 0.3)
        box = [cx - h, cy - h, cx + h, cy + h]
        draw = ImageDraw.Draw(im)
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=colour)
        rel = f"images/sp{s}_{i}.png"
        im.save(root / rel)
        records.append(
            Record(f"sp{s}_i{i}", f"sp{s}", f"sp{s}_i{i}", "train", "living", "".join(seq), (rel,))
        )
    return write_dataset(root, records, {"source": "bench/sd_finetune.py (synthetic)"})


def image_config(args, sd_dir: Path, lora: bool):
    """The ``[image]`` section of a phenogen route (the plain loop's conditioner is built from it too)."""
    from phenogen.diffusion.config import ImageConfig

    return ImageConfig(base=str(sd_dir), lora_rank=LORA_RANK if lora else 0, lora_alpha=LORA_ALPHA,
                       mixed_precision=args.mixed_precision, batch_size=args.batch_size,
                       max_steps=args.warmup + args.steps, lr=LR, lr_warmup_steps=1, ema_decay=args.ema_decay,
                       cache=True, gradient_checkpointing=args.gradient_checkpointing, sample_steps=1,
                       encoder="kmer")  # fmt: skip


def make_conditioner(cfg, sequences: list[str], width: int):
    """phenogen's conditioner as ``train_image_model`` builds it for ``cfg`` with a Stable Diffusion base."""
    from phenogen.diffusion import components
    from phenogen.diffusion.conditioning import build_conditioner

    return build_conditioner(
        cfg.encoder, width, kmer_k=cfg.kmer_k, kmer_segments=cfg.kmer_segments, onehot_window=cfg.onehot_window,
        max_length=max(len(s) for s in sequences), depth=cfg.cond_depth,
        heads=components.condition_heads(width, components.get_preset(cfg.preset).cond_heads), fixed_length=True,
        null_condition=cfg.null_condition, cond_dropout=cfg.cond_dropout, feature_dropout=cfg.feature_dropout,
        seed=cfg.seed,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- measuring
class StepClock:
    """Times the optimizer steps ``warmup + 1 .. warmup + steps`` of whatever trains inside it (a global
    optimizer step post-hook; CUDA synchronised) and the peak GPU memory over them."""

    def __init__(self, warmup: int, steps: int, cuda: bool):
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.n, self.times, self.peak = 0, [], None

    def _hook(self, optimizer, args, kwargs) -> None:
        import torch

        self.n += 1
        if self.warmup <= self.n <= self.warmup + self.steps:
            if self.cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            if self.cuda and self.n == self.warmup:
                torch.cuda.reset_peak_memory_stats()
            if self.cuda and self.n == self.warmup + self.steps:
                self.peak = torch.cuda.max_memory_allocated()

    def __enter__(self) -> StepClock:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def result(self, batch_size: int) -> dict:
        if self.n != self.warmup + self.steps or len(self.times) != self.steps + 1:
            raise RuntimeError(
                f"the route made {self.n} optimizer steps, {self.warmup + self.steps} expected"
            )
        dt = self.times[-1] - self.times[0]
        steps = [b - a for a, b in zip(self.times[:-1], self.times[1:], strict=True)]
        return {"images_per_s": self.steps * batch_size / dt, "timed_seconds": dt,
                "step_seconds": [round(s, 5) for s in steps],
                "peak_gib": None if self.peak is None else self.peak / 2**30}  # fmt: skip


def unet_flops_per_image(unet_config: dict, lora: bool, tokens: int, batch: int = 2) -> float:
    """FLOPs of one UNet forward + backward per image (counted on the meta device: no memory, no time)."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        if lora:
            unet.requires_grad_(False)
            unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, init_lora_weights="gaussian",
                                        target_modules=LORA_TARGETS))  # fmt: skip
        c, s = unet.config.in_channels, unet.config.sample_size
        x = torch.randn(batch, c, s, s)  # (B, C, h, w)
        t = torch.randint(0, 1000, (batch,))
        hidden = torch.randn(batch, tokens, unet.config.cross_attention_dim)  # (B, T, D)
        with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            unet(x, t, encoder_hidden_states=hidden).sample.float().pow(2).mean().backward()
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------------------------- routes
def run_phenogen(args, sd_dir: Path, data: Path, out: Path, lora: bool, cuda: bool) -> dict:
    from phenogen.diffusion.train import train_image_model

    cfg = image_config(args, sd_dir, lora)
    total = args.warmup + args.steps
    with StepClock(args.warmup, args.steps, cuda) as clock:  # stop_after_steps: no export, no checkpoint
        result = train_image_model(data, out, cfg, progress=False, stop_after_steps=total)
    return clock.result(args.batch_size) | {
        "setup_seconds": {k: round(v, 2) for k, v in result.seconds.items() if k != "train"},
        "last_loss": result.losses[-1],
    }


def run_plain(args, sd_dir: Path, data: Path, lora: bool, cuda: bool) -> dict:
    """The loop of diffusers' text_to_image examples (defaults), phenogen's conditioner in CLIP's place."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.vae import load_images

    t0 = time.perf_counter()
    device = torch.device("cuda" if cuda else "cpu")
    weight_dtype = torch.bfloat16 if args.mixed_precision == "bf16" else torch.float32
    noise_scheduler = DDPMScheduler.from_pretrained(sd_dir, subfolder="scheduler")
    # the examples load in float32 and cast with .to(dtype); loading in the dtype is the same, without
    # diffusers' warning about casting
    vae = AutoencoderKL.from_pretrained(sd_dir, subfolder="vae", torch_dtype=weight_dtype)
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet",
                                                torch_dtype=weight_dtype if lora else torch.float32)  # fmt: skip
    vae.requires_grad_(False).to(device)
    if lora:  # train_text_to_image_lora.py: the frozen UNet in weight_dtype, then the adapter
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.to(device)
        unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))  # fmt: skip
        cast_training_params(unet, dtype=torch.float32)
    else:  # train_text_to_image.py: fp32 weights, autocast
        unet.to(device)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    ds = load_dataset(data)
    records = [r for r in ds.records("train") if r.images]
    sequences = [r.sequence for r in records]
    images = load_images(
        [ds.image_path(r.images[0]) for r in records], vae.config.sample_size
    )  # (N, 3, R, R)
    conditioner = make_conditioner(
        image_config(args, sd_dir, lora), sequences, unet.config.cross_attention_dim
    )
    conditioner.to(device).train()
    params = [p for p in unet.parameters() if p.requires_grad] + conditioner.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    autocast = (
        torch.autocast("cuda", dtype=weight_dtype)
        if weight_dtype != torch.float32
        else contextlib.nullcontext()
    )
    setup = time.perf_counter() - t0
    n, b = len(images), args.batch_size
    loss = None
    with StepClock(args.warmup, args.steps, cuda) as clock:
        for step in range(args.warmup + args.steps):
            epoch, pos = divmod(step, max(1, n // b))
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))[pos * b : (pos + 1) * b]
            pixel_values = images[idx].to(device).to(weight_dtype) / 127.5 - 1.0  # (B, 3, R, R)
            with torch.no_grad():
                latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (len(idx),), device=device
            ).long()
            noisy = noise_scheduler.add_noise(latents, noise, t)
            features, mask = conditioner.featurize([sequences[i] for i in idx.tolist()])
            with autocast:
                hidden, hmask = conditioner(features.to(device), mask.to(device))  # (B, T, D)
                pred = unet(noisy, t, hidden, encoder_attention_mask=None if bool(hmask.all()) else hmask,
                            return_dict=False)[0]  # fmt: skip
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            loss = loss.item()
    return clock.result(b) | {"setup_seconds": {"load": round(setup, 2)}, "last_loss": loss}


# ---------------------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def markdown(routes: dict) -> str:
    lines = [
        "| route | images/s | × plain loop | peak memory GiB | MFU % |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in routes.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | |")
            continue
        lines.append(f"| {name} | {r['images_per_s']:.2f} | {_fmt(r.get('ratio_to_plain'), '.2f')}× | "
                     f"{_fmt(r['peak_gib'], '.1f')} | {_fmt(r.get('mfu_percent'), '.1f')} |")  # fmt: skip
    return "\n".join(lines)


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, 16 px (the CPU smoke test)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default 8; --tiny 4)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per route (>= 1)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per route")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="phenogen's EMA (0 = off, as the plain loop)"
    )
    parser.add_argument(
        "--images", type=int, default=None, help="photos in the dataset (default 64; --tiny 16)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak (default by name: H100/H200 SXM 989, H100 PCIe 756, A100 312)")  # fmt: skip
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated, of " + ", ".join(ROUTES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    parser.add_argument(
        "--work", type=Path, default=None, help="where the model and dataset go (default a temp dir)"
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default $OUT/sd_finetune_DEVICE.json, else bench/results_sd_finetune_DEVICE.json)")  # fmt: skip
    return parser


def bench(args, routes: list[str], cuda: bool, peak: float | None, work: Path) -> dict:
    """Build the model and dataset in ``work``, run ``routes``; the payload's model, settings and routes."""
    import torch
    from diffusers import UNet2DConditionModel

    t0 = time.perf_counter()
    sd_dir = build_sd(work / "sd15", args.tiny, "cuda" if cuda else "cpu")
    build_seconds = time.perf_counter() - t0
    unet_config = dict(UNet2DConditionModel.load_config(sd_dir / "unet"))
    vae_factor = 2 ** (len((TINY_VAE if args.tiny else SD15_VAE)["block_out_channels"]) - 1)
    resolution = unet_config["sample_size"] * vae_factor  # SD 1.5: 64 x 8 = 512 px
    ds = build_dataset(work / "photos", args.images, resolution)
    sequences = [r.sequence for r in ds.records("train")]
    width = unet_config["cross_attention_dim"]
    tokens = make_conditioner(image_config(args, sd_dir, True), sequences, width).max_tokens
    flops = {kind: unet_flops_per_image(unet_config, kind == "lora", tokens) for kind in ("lora", "full")}
    print(f"built in {time.perf_counter() - t0:.0f} s; UNet forward + backward per image: "
          + ", ".join(f"{k} {v / 1e9:.4g} GFLOP" for k, v in flops.items()), file=sys.stderr)  # fmt: skip

    results: dict[str, dict] = {}
    for name in routes:
        kind = name.split("-")[1]
        _free()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            if name.startswith("phenogen"):
                r = run_phenogen(args, sd_dir, ds.root, work / f"run-{name}", kind == "lora", cuda)
            else:
                r = run_plain(args, sd_dir, ds.root, kind == "lora", cuda)
        except Exception as exc:  # an OOM (or anything else) fails this route only
            r = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        r["wall_seconds"] = round(time.perf_counter() - t0, 2)
        if cuda:  # the route's whole peak: loading, latent caching, warm-up and timed steps
            r["peak_route_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if "error" not in r:
            r["flops_per_image"] = flops[kind]
            r["mfu_percent"] = 100 * flops[kind] * r["images_per_s"] / (peak * 1e12) if peak else None
        shutil.rmtree(work / f"run-{name}", ignore_errors=True)
        results[name] = r
        print(f"{name}: " + (r["error"] if "error" in r else f"{r['images_per_s']:.2f} img/s")
              + f" ({r['wall_seconds']:.0f} s)", file=sys.stderr)  # fmt: skip
    _free()
    for name, r in results.items():
        plain = results.get("plain-" + name.split("-")[1], {})
        if "error" not in r and "images_per_s" in plain:
            r["ratio_to_plain"] = r["images_per_s"] / plain["images_per_s"]
    with torch.device("meta"):
        n_params = sum(p.numel() for p in UNet2DConditionModel.from_config(unet_config).parameters())
    return {
        "settings": {
            "tiny": args.tiny, "resolution": resolution, "images": args.images, "batch_size": args.batch_size,
            "warmup_steps": args.warmup, "timed_steps": args.steps, "mixed_precision": args.mixed_precision,
            "gradient_checkpointing": args.gradient_checkpointing, "ema_decay": args.ema_decay,
            "lora_rank": LORA_RANK, "lora_alpha": LORA_ALPHA, "peak_tflops": peak, "condition_tokens": tokens,
            "plain_condition": "phenogen's kmer conditioner, its features recomputed every batch",
        },
        "model": {"unet_parameters": n_params, "flops_per_image": flops, "build_seconds": round(build_seconds, 2)},
        "routes": results,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not routes or set(routes) - set(ROUTES) or args.warmup < 1 or args.steps < 1:
        print(f"sd_finetune: --routes must name some of {', '.join(ROUTES)}, --warmup and --steps be >= 1",
              file=sys.stderr)  # fmt: skip
        return 2

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("sd_finetune: the real-size run (SD 1.5 shapes, 512 px, bf16) needs a CUDA GPU and none was found; "
              "use --tiny for the CPU smoke test", file=sys.stderr)  # fmt: skip
        return 2
    gpu = torch.cuda.get_device_name(0) if cuda else None
    peak = args.peak_tflops or (default_peak_tflops(gpu) if cuda else None)
    if cuda and peak is None:
        print(f"sd_finetune: no known bf16 peak for {gpu!r}; give --peak-tflops (dense, no sparsity)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch_size = args.batch_size or (4 if args.tiny else 8)
    images = args.images or (16 if args.tiny else 64)
    args.images = args.batch_size * max(2, math.ceil(images / args.batch_size))  # whole batches only
    args.mixed_precision = "bf16" if cuda else "no"
    device = "cuda" if cuda else "cpu"
    tag = f"{'tiny_' if args.tiny else ''}{device}"
    if args.out is None:
        env = os.environ.get("OUT")
        args.out = (
            Path(env) / f"sd_finetune_{tag}.json" if env else Path(f"bench/results_sd_finetune_{tag}.json")
        )

    import accelerate
    import diffusers
    import peft

    t0 = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_sd_finetune_"))
    try:
        measured = bench(args, routes, cuda, peak, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    payload = {
        "machine": {
            "python": sys.version.split()[0], "platform": platform.platform(), "device": device, "gpu": gpu,
            "cuda": torch.version.cuda, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        **measured,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    s = payload["settings"]
    print(f"{gpu or 'CPU'}, {s['resolution']} px, batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup}{', gradient checkpointing' if args.gradient_checkpointing else ''} -> {args.out}")  # fmt: skip
    print(markdown(measured["routes"]))
    return 0 if all("error" not in r for r in measured["routes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
