"""Configuration sections of the image model: ``[image]`` (model + training) and ``[generate]`` (sampling).

Every field carries its help text; ``__post_init__`` rejects impossible values with one concise line.
Fields left unset (``None``) take the value of the chosen preset (see
:mod:`phenogen.diffusion.components`).

>>> ImageConfig(preset="tiny", encoder="kmer").cond_dropout
0.1
>>> GenerateConfig(scheduler="euler-a").steps is None  # unset: the pipeline's tuned setting
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from phenogen.config import require_finite

__all__ = ["ImageConfig", "GenerateConfig", "PRESETS", "ENCODERS", "SCHEDULERS"]

PRESETS = ("tiny", "cpu", "cpu2x", "gpu")
ENCODERS = ("gpt2", "kmer", "onehot", "relatives")
HEADS = ("tokens", "caption")
SCHEDULERS = ("ddim", "ddpm", "dpm++2m-karras", "unipc", "euler", "euler-a")
LATENT_NORMS = ("global", "channel")


@dataclass
class ImageConfig:
    """Model shape and training hyperparameters of ``phenogen train-image``."""

    preset: Literal["tiny", "cpu", "cpu2x", "gpu"] = field(
        default="cpu",
        metadata={
            "help": "model size: tiny (tests, 16 px), cpu (demo, 64 px, 16x16x4 latents), cpu2x (64 px, 32x32x8), "
            "gpu (128 px+)"
        },
    )
    resolution: int | None = field(
        default=None, metadata={"help": "image side in pixels (multiple of 8); unset = preset (16/64/128)"}
    )
    encoder: Literal["gpt2", "kmer", "onehot", "relatives"] = field(
        default="kmer",
        metadata={
            "help": "DNA condition encoder: gpt2 (frozen hidden states of the DNA LM, the thesis), "
            "kmer (k-mer count profiles of sequence segments), onehot (aligned one-hot windows), "
            "relatives (Mash distances to the training barcodes → a weighted mix of learned tokens)"
        },
    )
    lm_model: str = field(
        default="",
        metadata={"help": "DNA language model directory (train-lm OUT or OUT/model); needed by gpt2"},
    )
    lm_layer: int = field(
        default=-1, metadata={"help": "gpt2: hidden layer used as the condition (-1 = last)"}
    )
    kmer_k: int = field(default=4, metadata={"help": "kmer: word length of the count profiles"})
    kmer_segments: int = field(
        default=4,
        metadata={"help": "kmer: sequence segments, one profile token each (plus one whole-sequence token)"},
    )
    onehot_window: int = field(default=16, metadata={"help": "onehot: bases per token window"})
    relatives_k: int = field(default=8, metadata={"help": "relatives: k-mer length of the Mash distance"})
    relatives_tokens: int = field(default=4, metadata={"help": "relatives: learned tokens per reference"})
    relatives_temperature: float = field(
        default=0.01,
        metadata={"help": "relatives: softmax temperature over distances (0.01 ~ 1 % of sites)"},
    )
    relatives_self_drop: float = field(
        default=0.5,
        metadata={"help": "relatives: probability a training barcode is painted from its relatives alone"},
    )
    cond_depth: int = field(
        default=1, metadata={"help": "transformer layers of the trainable condition head (0 = MLP only)"}
    )
    pooled_condition: bool = field(
        default=False,
        metadata={
            "help": "also add the mean condition token to the UNet's timestep embedding (SDXL's pooled text "
            "embedding); measured no gain on the demo, where the VAE limits colour (BENCHMARKS.md)"
        },
    )
    null_condition: Literal["learned", "empty_sequence"] = field(
        default="learned",
        metadata={
            "help": "unconditional embedding for guidance: a learned null token, or the encoding of an "
            "empty sequence (the thesis)"
        },
    )
    cond_dropout: float = field(
        default=0.1,
        metadata={"help": "probability that a training example's condition is replaced by the null"},
    )
    cond_head: Literal["tokens", "caption"] = field(
        default="tokens",
        metadata={
            "help": "condition head: tokens (projection + transformer, one token per feature token) or caption "
            "(the barcode writes a caption, linearly, for the captioned prior's own caption encoder; needs a "
            "captioned image.init)"
        },
    )
    train_unet: bool = field(
        default=True,
        metadata={
            "help": "fine-tune the UNet with the conditioner; false = the prior's UNet stays frozen and only the "
            "condition is learnt (prompt tuning; needs image.init)"
        },
    )
    train_caption_encoder: bool = field(
        default=True, metadata={"help": "caption head: fine-tune the prior's caption encoder too"}
    )
    decoder_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "caption head with a prior that has a caption decoder: weight of the pixel loss of "
            "decoding each training photo's latents with the caption its barcode writes (the caption must "
            "describe the photo, colour included; the decoder stays frozen). 0 = diffusion loss only"
        },
    )
    decoder_loss_batch: int = field(
        default=8, metadata={"help": "images of each batch that the decoder loss decodes"}
    )
    caption_prior_weight: float = field(
        default=0.0,
        metadata={
            "help": "caption head: weight of a Gaussian prior on the written caption, mean(c^2 / 1.2^2) (the "
            "random birds' trait spread the prior was trained on), so values the photos do not pin down "
            "(traits the renderer draws weakly) stay near the prior's mean instead of drifting. 0 = none"
        },
    )
    caption_scan_at: float = field(
        default=0.0,
        metadata={
            "help": "caption head with a caption decoder: at this fraction of the training steps, search each "
            "training species' written caption along image.caption_scan_traits through the decoder (its loss "
            "on the species' photos over the value's whole range) and pull the captions stuck in a worse "
            "minimum over the barrier (image.caption_anchor_weight). Hues are positions on a colour ramp: "
            "gradient descent can settle a slate-blue species on ochre (BENCHMARKS.md). 0 = no scan"
        },
    )
    caption_scan_traits: str = field(
        default="body_hue,wing_hue,head_hue",
        metadata={"help": "comma-separated caption values the scan searches (names of the prior's traits)"},
    )
    caption_scan_margin: float = field(
        default=0.05,
        metadata={"help": "the scan moves a value only when that lowers the decoder's loss by this fraction"},
    )
    caption_scan_images: int = field(
        default=4, metadata={"help": "photos of each species the scan decodes (spread over its photos)"}
    )
    caption_anchor_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the pull of each moved value towards where the scan found it, "
            "sum((c - anchor)^2 / 1.2^2) per row, fading linearly to 0 at the last step (the decoder loss "
            "then settles it inside its new minimum)"
        },
    )
    decoder_loss_crop: int = field(
        default=32,
        metadata={
            "help": "the decoder loss decodes one random window of this side per batch (0 = whole images)"
        },
    )
    feature_dropout: float = field(
        default=0.0,
        metadata={
            "help": "dropout on the conditioner's input features in training (a ridge penalty: smoother "
            "DNA -> portrait map for barcodes unlike the training ones)"
        },
    )
    prediction_type: Literal["epsilon", "v_prediction"] = field(
        default="epsilon",
        metadata={"help": "what the UNet predicts: noise (epsilon) or velocity (v_prediction)"},
    )
    snr_gamma: float | None = field(
        default=None, metadata={"help": "min-SNR loss weighting gamma (5.0 is usual); unset = plain MSE"}
    )
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = field(
        default="scaled_linear",
        metadata={"help": "DDPM noise schedule (Stable Diffusion uses scaled_linear)"},
    )
    ema_decay: float = field(
        default=0.999, metadata={"help": "EMA decay of the UNet/condition weights; 0 = no EMA"}
    )
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    unet_lr: float | None = field(
        default=None,
        metadata={
            "help": "peak learning rate of the UNet's weights (its LoRA with lora_rank), the conditioner keeping "
            "lr; unset = lr, but with image.base 1e-4 for LoRA and 1e-5 for full fine-tuning (the usual Stable "
            "Diffusion rates: a pretrained UNet needs a gentler rate than a conditioner trained from scratch)"
        },
    )
    lr_warmup_steps: int = field(default=100, metadata={"help": "linear warmup steps, then cosine decay"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=32, metadata={"help": "images per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps to train; 0 = derive from epochs"})
    epochs: int = field(
        default=60, metadata={"help": "passes over the training images (used when max_steps = 0)"}
    )
    max_minutes: float = field(
        default=0.0,
        metadata={
            "help": "safety cap on the wall-clock time of training: the step count stays fixed (a slow machine "
            "is slower, not worse); a run that reaches the cap stops cleanly, warns loudly, checkpoints and "
            "saves (resume to finish). 0 = none"
        },
    )
    sample_every: int = field(
        default=0, metadata={"help": "write a sample grid every N steps (0 = only at the end)"}
    )
    sample_steps: int = field(default=25, metadata={"help": "denoising steps of the sample grids"})
    checkpoint_every: int = field(
        default=0, metadata={"help": "save resumable state every N steps (0 = only at the end)"}
    )
    checkpoints_total_limit: int = field(
        default=2, metadata={"help": "resumable checkpoints kept (oldest deleted)"}
    )
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = field(
        default="auto",
        metadata={"help": "autocast dtype; auto = bf16 on a CUDA GPU that has it, fp16 on others, else no"},
    )
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order, noise and dropout"})
    cache: bool = field(
        default=True,
        metadata={
            "help": "cache VAE latents and condition features once (off = recompute every step; benchmarks)"
        },
    )
    cache_layout: Literal["auto", "memory", "sharded"] = field(
        default="auto",
        metadata={
            "help": "where the cache lives: memory (one tensor; images in memory; N processes train exactly "
            "what one does), sharded (files of cache_shard_size rows on disk, read lazily; each process streams "
            "its own shards, so N processes equal one in distribution, not bit for bit), auto = sharded above "
            "cache_sharded_above training images"
        },
    )
    cache_shard_size: int = field(
        default=1024, metadata={"help": "rows (images, or barcodes) per shard of the sharded cache"}
    )
    cache_sharded_above: int = field(
        default=50_000,
        metadata={"help": "cache_layout = auto: the sharded layout for more training images than this"},
    )
    cache_dir: str = field(
        default="",
        metadata={
            "help": "directory of the sharded cache ('' = OUT/cache); one outside OUT survives --force and is "
            "reused by any run with the same VAE, resolution, hflip and images (a stale one is rebuilt)"
        },
    )
    hflip: bool = field(default=False, metadata={"help": "random horizontal flips (both versions cached)"})
    init: str = field(
        default="",
        metadata={
            "help": "start from a pretrained bird prior (VAE + UNet, `phenogen pretrain-image`): "
            "a directory, or 'builtin' for the one shipped with the package; '' = train from scratch"
        },
    )
    base: str = field(
        default="",
        metadata={
            "help": "a local diffusers-format Stable Diffusion directory (1.x / 2.x: unet/, vae/, scheduler/; "
            "text_encoder/ and tokenizer/ are not read) to fine-tune, the DNA conditioner in CLIP's place; its "
            "resolution, latent space and noise schedule (v-prediction for 2.x) come with it. '' = none. Never "
            "downloaded"
        },
    )
    lora_rank: int = field(
        default=0,
        metadata={
            "help": "LoRA rank on the UNet's attention projections (peft); 0 = fine-tune the whole UNet (the "
            "thesis). Needs image.base or image.init. 32 with lora_alpha 8 is the kohya-style SD recipe"
        },
    )
    lora_alpha: float = field(
        default=8.0, metadata={"help": "LoRA alpha (the update is scaled by alpha / rank)"}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch in training"})
    lora_targets: str = field(
        default="to_q,to_k,to_v,to_out.0",
        metadata={
            "help": "comma-separated UNet module names that get LoRA (diffusers' attention projections)"
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute UNet activations in the backward pass (less memory, ~20-30 % slower)"},
    )
    optimizer: Literal["adamw", "adamw8bit"] = field(
        default="adamw",
        metadata={"help": "adamw (torch; fused on a GPU) or adamw8bit (bitsandbytes, when installed)"},
    )
    vae: str = field(
        default="train",
        metadata={
            "help": "'train' = train a small VAE on the training images; or a local Stable Diffusion VAE dir"
        },
    )
    vae_steps: int | None = field(default=None, metadata={"help": "VAE optimizer steps; unset = preset"})
    vae_lr: float = field(default=2e-3, metadata={"help": "VAE learning rate (AdamW)"})
    vae_batch_size: int | None = field(default=None, metadata={"help": "VAE images per step; unset = preset"})
    vae_colour_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the VAE's latent colour loss (latents must hold each cell's mean colour; "
            "5 with the cpu2x preset keeps plumage colour)"
        },
    )
    vae_crop: int | None = field(
        default=None,
        metadata={"help": "train the VAE on random crops of this side (0 = whole images); unset = preset"},
    )
    vae_kl_weight: float = field(default=1e-6, metadata={"help": "weight of the KL term of the VAE loss"})
    latent_norm: Literal["global", "channel"] = field(
        default="global",
        metadata={
            "help": "latent normalisation of a VAE trained here: global (one shift/scale, SD 1.x) or channel "
            "(mean/std per latent channel); a prior or external VAE brings its own"
        },
    )
    heldout_every: int = field(
        default=0,
        metadata={"help": "evaluate the held-out diffusion loss every N steps (0 = at sample grids)"},
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise ValueError(f"resolution must be a multiple of 8 and >= 8, got {self.resolution}")
        if not 1 <= self.kmer_k <= 6:
            raise ValueError(f"kmer_k must be in 1..6, got {self.kmer_k}")
        if not 3 <= self.relatives_k <= 31 or self.relatives_tokens < 1:
            raise ValueError("relatives_k must be in 3..31 and relatives_tokens >= 1")
        if self.relatives_temperature <= 0 or not 0 <= self.relatives_self_drop < 1:
            raise ValueError("relatives_temperature must be > 0 and relatives_self_drop in [0, 1)")
        for name in ("kmer_segments", "onehot_window", "batch_size", "grad_accum", "epochs", "sample_steps",
                     "checkpoints_total_limit", "cache_shard_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "max_steps",
            "lr_warmup_steps",
            "sample_every",
            "checkpoint_every",
            "heldout_every",
            "cond_depth",
            "cache_sharded_above",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("vae_steps", "vae_crop"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.base and self.init:
            raise ValueError("image.base (a Stable Diffusion directory) and image.init (a phenogen prior) "
                             "both bring a UNet and a VAE: set one of them")  # fmt: skip
        if self.base and self.vae != "train":
            raise ValueError("image.base brings its own VAE; leave image.vae = 'train' when base is set")
        if self.base and self.cond_head == "caption":
            raise ValueError("image.cond_head = 'caption' writes captions for a captioned phenogen prior; with "
                             "image.base use the tokens head")  # fmt: skip
        if self.base and self.pooled_condition:
            raise ValueError("image.pooled_condition changes the UNet's inputs, which a stock Stable Diffusion "
                             "pipeline could then not feed; leave it off with image.base")  # fmt: skip
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.lora_rank and not (self.base or self.init):
            raise ValueError("image.lora_rank adapts a pretrained UNet: set image.base (Stable Diffusion) or "
                             "image.init (a phenogen prior)")  # fmt: skip
        if self.lora_rank and not self.train_unet:
            raise ValueError(
                "image.lora_rank trains LoRA weights of the UNet; it needs image.train_unet = true"
            )
        if self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError("lora_alpha must be > 0 and lora_dropout in [0, 1)")
        targets = [t.strip() for t in self.lora_targets.split(",")]
        if not all(targets) or any(not re.fullmatch(r"[A-Za-z_][\w.]*", t) for t in targets):
            raise ValueError(f"lora_targets must be comma-separated module names, got {self.lora_targets!r}")
        if self.init and self.vae != "train":
            raise ValueError("image.init brings its own VAE; leave image.vae = 'train' when init is set")
        if self.vae_batch_size is not None and self.vae_batch_size < 1:
            raise ValueError(f"vae_batch_size must be >= 1, got {self.vae_batch_size}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.cond_head == "caption" and not self.init:
            raise ValueError(
                "image.cond_head = 'caption' writes captions for a captioned prior: set image.init "
                "(the built-in prior, 'builtin', is captioned)"
            )
        if not self.train_unet and not (self.init or self.base):
            raise ValueError(
                "image.train_unet = false freezes a pretrained UNet: set image.init to a prior or image.base"
            )
        if self.decoder_loss_weight < 0 or self.decoder_loss_batch < 1 or self.decoder_loss_crop < 0:
            raise ValueError(
                "decoder_loss_weight and decoder_loss_crop must be >= 0 and decoder_loss_batch >= 1"
            )
        if not 0.0 <= self.caption_scan_at < 1.0:
            raise ValueError(f"caption_scan_at must be in [0, 1), got {self.caption_scan_at}")
        if self.caption_scan_at > 0 and self.cond_head != "caption":
            raise ValueError("caption_scan_at needs the caption head (image.cond_head = 'caption')")
        if not 0.0 <= self.caption_scan_margin < 1.0:
            raise ValueError(f"caption_scan_margin must be in [0, 1), got {self.caption_scan_margin}")
        if self.caption_scan_images < 1 or self.caption_anchor_weight < 0:
            raise ValueError("caption_scan_images must be >= 1 and caption_anchor_weight >= 0")
        if self.caption_prior_weight < 0:
            raise ValueError(f"caption_prior_weight must be >= 0, got {self.caption_prior_weight}")
        if self.caption_prior_weight > 0 and self.cond_head != "caption":
            raise ValueError("caption_prior_weight needs the caption head (image.cond_head = 'caption')")
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1), got {self.feature_dropout}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be > 0 (or unset), got {self.snr_gamma}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.unet_lr is not None and self.unet_lr <= 0:
            raise ValueError(f"unet_lr must be > 0 (or unset), got {self.unet_lr}")
        if self.lr <= 0 or self.vae_lr <= 0:
            raise ValueError(f"lr and vae_lr must be > 0, got {self.lr}, {self.vae_lr}")
        if min(self.max_minutes, self.weight_decay, self.vae_kl_weight, self.vae_colour_weight) < 0:
            raise ValueError("max_minutes, weight_decay, vae_kl_weight and vae_colour_weight must be >= 0")
        if not self.vae:
            raise ValueError("vae must be 'train' or a local VAE directory")
        if self.cache_layout not in ("auto", "memory", "sharded"):
            raise ValueError(f"cache_layout must be auto, memory or sharded, got {self.cache_layout!r}")
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(
                f"latent_norm must be one of {', '.join(LATENT_NORMS)}, got {self.latent_norm!r}"
            )


@dataclass
class GenerateConfig:
    """How ``phenogen generate`` paints: steps, guidance, scheduler, images per sequence."""

    steps: int | None = field(
        default=None,
        metadata={"help": "denoising steps; unset = the pipeline's tuned setting (generation_config.json)"},
    )
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": "classifier-free guidance scale (1 = conditional only; the thesis used 8); unset = the "
            "pipeline's tuned setting"
        },
    )
    scheduler: Literal["ddim", "ddpm", "dpm++2m-karras", "unipc", "euler", "euler-a"] | None = field(
        default=None,
        metadata={
            "help": "sampler: ddim, ddpm, dpm++2m-karras (DPM-Solver++ 2M), unipc, euler (Karras), euler-a; "
            "unset = the pipeline's tuned setting"
        },
    )
    images_per_sequence: int = field(default=1, metadata={"help": "portraits per sequence"})
    best_of: int | None = field(
        default=None,
        metadata={
            "help": "candidates painted per kept portrait; the one the prior's reader finds closest to its caption "
            "is kept (phenogen.diffusion.reader; 1 = every draw kept); unset = the pipeline's tuned setting"
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "seed; the noise of image k of a record is keyed by (seed, record id, k), so it does not "
            "depend on the record's place in the file or on the other records"
        },
    )
    shared_noise: bool = field(
        default=False,
        metadata={
            "help": "every record gets the same noise (keyed by seed and k only): variants of one barcode, "
            "or different barcodes, compared at equal noise"
        },
    )
    batch_size: int = field(default=16, metadata={"help": "sequences denoised together"})
    lora_scale: float = field(
        default=1.0,
        metadata={"help": "LoRA models (image.lora_rank): weight of the LoRA update; 0 = the base model"},
    )
    policy: Literal["reject", "mask", "drop"] = field(
        default="mask",
        metadata={"help": "FASTA ambiguity-code policy: reject, mask (to N) or drop the record"},
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.best_of is not None and self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.images_per_sequence < 1 or self.batch_size < 1:
            raise ValueError("images_per_sequence and batch_size must be >= 1")
