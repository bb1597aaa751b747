"""A tiny Stable Diffusion directory built from diffusers and transformers classes, the way diffusers' own
pipeline tests build their dummy components (no hub): UNet2DConditionModel, AutoencoderKL, the SD 1.x
PNDM scheduler (or SD 2.x's v-prediction DDIM), a two-layer CLIP text encoder and a CLIP tokenizer over
a printable-ASCII vocabulary. Saved with ``StableDiffusionPipeline.save_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def tiny_sd(root: Path, *, cross_attention_dim: int = 32, v_prediction: bool = False, seed: int = 0) -> Path:
    """Write a tiny SD 1.x-shaped (or, ``v_prediction``, 2.x-shaped) pipeline directory; 16 px images."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=4, attention_head_dim=2,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4, sample_size=16,
    )  # fmt: skip
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if v_prediction:  # SD 2.x (768 px models): v-prediction, DDIM
        scheduler = DDIMScheduler(**betas, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction",
                                  steps_offset=1)  # fmt: skip
    else:  # SD 1.x
        scheduler = PNDMScheduler(**betas, skip_prk_steps=True, steps_offset=1)
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=cross_attention_dim,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=200,
        )  # fmt: skip
    )
    vocab_dir = root.parent / (root.name + "-vocab")
    vocab_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in map(chr, range(33, 127)):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text, tokenizer=tokenizer,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(root, safe_serialization=True)
    return root


def photo_dataset(root: Path, n_species: int = 4, seed: int = 0):
    """Coloured birds-as-discs, one colour per species, 16 px, 60-bp barcodes — one photo per species
    24 x 16 (not square, centre-cropped by the loader); the last species held out."""
    from test_diffusion import _tiny_dataset

    return _tiny_dataset(root, n_species, seed, length=60, wide=True)
