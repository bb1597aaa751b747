"""Presets that build the diffusers components: ``AutoencoderKL``, ``UNet2DConditionModel``, ``DDPMScheduler``.

=======  ==========  ============  ========================================  ==========================
preset   image side  latents       UNet (channels, cross-attn levels)        use
=======  ==========  ============  ========================================  ==========================
tiny     16 px       8 x 8 x 4     (16, 32), both; D = 32                    tests (seconds)
cpu      64 px       16 x 16 x 4   (32, 64, 128), last two; D = 128          the demo (2 CPU cores)
cpu2x    64 px       32 x 32 x 8   (16, 32, 64, 128), last two; D = 128      colour-keeping VAE (CPU)
gpu      128 px      32 x 32 x 4   (128, 256, 512, 512), last 3; D = 512     a GPU run (128-256 px)
=======  ==========  ============  ========================================  ==========================

The ``cpu`` preset follows Stable Diffusion's shape at demo scale: a 4x VAE (64 px -> 16 x 16 x 4) and a
3-level UNet (16, 8, 4) with cross-attention at the two coarser levels, ~0.6 s per batch of 32 on
2 cores. Trained from scratch in minutes it paints noise textures (measured: BENCHMARKS.md), so the
demo fine-tunes the pretrained bird prior of :mod:`phenogen.diffusion.prior` (``[image] init``).
Its VAE, trained for minutes, keeps the bird's shape but paints every bird in the average brown.
``cpu2x`` is the measured fix for that: a 2x VAE with 8 latent channels, trained with the latent
colour loss (``vae_colour_weight``, :func:`phenogen.diffusion.vae.latent_colour_loss`), keeps each
bird's colours after ~6 minutes (reconstruction MSE ~0.001-0.002 on [-1, 1]); its 32 x 32 latents go to
a 4-level UNet with a narrow first level, ~0.75 s per batch of 32 (1.3x ``cpu``). A ``cpu2x`` prior
trained for 27 minutes on 2 cores still painted speckled birds, so the demo keeps ``cpu``
(BENCHMARKS.md, "The image model at demo scale"). What fixed the colour instead is to *widen* a
trained ``cpu`` prior: :func:`widen_vae` adds latent channels (16 x 16 x 4 → 16 x 16 x 8) that start
as exact no-ops and learn the colour while the old channels are held in place, and :func:`widen_unet`
gives its UNet the matching zero-initialised input and output channels (``prior.vae_widen``).

The VAE is either a small one trained on the dataset's images (:mod:`phenogen.diffusion.vae`) or a
pretrained Stable Diffusion VAE loaded from a local directory (``[image] vae = DIR``; never downloaded).

>>> unet = build_unet("tiny", cross_attention_dim=32)
>>> unet.config.sample_size, unet.config.in_channels
(8, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from phenogen.errors import CheckpointError, ConfigError

__all__ = [
    "Preset",
    "PRESETS",
    "get_preset",
    "build_vae",
    "load_vae",
    "build_unet",
    "add_pooled_condition",
    "pooled_condition",
    "denoise",
    "build_noise_scheduler",
    "widen_vae",
    "widen_unet",
]


@dataclass(frozen=True)
class Preset:
    """Shapes and budgets of one preset (see the module table)."""

    resolution: int
    vae_channels: tuple[int, ...]  # len - 1 = number of 2x downsamplings
    vae_groups: int
    vae_steps: int
    vae_batch: int
    vae_crop: int  # train the (fully convolutional) VAE on random crops of this side; 0 = whole images
    unet_channels: tuple[int, ...]
    unet_attention: tuple[bool, ...]  # cross-attention at each UNet level
    unet_layers: int
    unet_groups: int
    heads: int
    cross_attention_dim: int
    cond_heads: int
    latent_channels: int = 4


PRESETS: dict[str, Preset] = {
    "tiny": Preset(16, (8, 16), 4, 20, 8, 0, (16, 32), (True, True), 1, 8, 2, 32, 2),
    "cpu": Preset(64, (32, 64, 128), 16, 1000, 8, 32, (32, 64, 128), (False, True, True), 1, 32, 4, 128, 4),
    "cpu2x": Preset(
        64, (32, 64), 16, 1000, 8, 32, (16, 32, 64, 128), (False, False, True, True), 1, 8, 4, 128, 4, 8
    ),
    "gpu": Preset(
        128,
        (64, 128, 256),
        32,
        8000,
        16,
        0,
        (128, 256, 512, 512),
        (False, True, True, True),
        2,
        32,
        8,
        512,
        8,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    return PRESETS[name]


def build_vae(
    preset: str, resolution: int | None = None, latent_channels: int | None = None
) -> AutoencoderKL:
    """A small, randomly initialised ``AutoencoderKL`` (to be trained on the dataset's images)."""
    p = get_preset(preset)
    n = len(p.vae_channels)
    res = resolution or p.resolution
    if res % 2 ** (n - 1):
        raise ConfigError(
            f"resolution {res} is not divisible by the VAE's downsampling factor {2 ** (n - 1)}"
        )
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=p.vae_channels,
        layers_per_block=1,
        latent_channels=latent_channels or p.latent_channels,
        norm_num_groups=p.vae_groups,
        mid_block_add_attention=False,  # fully convolutional: trains on crops, cheap on CPU
        sample_size=res,
        scaling_factor=1.0,  # set from data after training (vae.fit_scaling_factor)
    )


def load_vae(path: str | Path) -> AutoencoderKL:
    """A pretrained ``AutoencoderKL`` from a local directory (e.g. Stable Diffusion's ``vae/``)."""
    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a VAE directory (no config.json); give a local AutoencoderKL dir")
    check_component_dir(path)
    from phenogen.lm.model import LOAD_ERRORS

    try:
        return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32)
    except LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{path}: cannot load as AutoencoderKL ({' '.join(str(exc).split())[:300]})"
        ) from None


WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def check_component_dir(path: str | Path, scheduler: bool = False) -> Path:
    """Check one saved diffusers component folder without loading it: its config is a JSON object and
    (models) its safetensors weights are whole. Raises :class:`CheckpointError` naming the file."""
    from phenogen.fsio import read_json
    from phenogen.lm.model import check_safetensors

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: component folder missing; save or copy the whole pipeline directory")
    config = path / ("scheduler_config.json" if scheduler else "config.json")
    if not config.is_file():
        raise CheckpointError(f"{config}: missing; save or copy the whole pipeline directory")
    read_json(config, "component config", expect=dict, error=CheckpointError)
    if scheduler:
        return path
    weights = [path / name for name in WEIGHT_FILES if (path / name).exists()]
    weights += sorted(p for p in path.glob("*.safetensors") if p not in weights)
    if not weights:
        if any(path.glob("*.bin")):
            return path  # a PyTorch pickle (not written by phenogen): left to diffusers
        raise CheckpointError(
            f"{path}: no weights file ({WEIGHT_FILES[0]}); save or copy the whole pipeline directory"
        )
    for file in weights:
        check_safetensors(file, "component weights file")
    return path


def vae_scale(vae: AutoencoderKL) -> int:
    """Pixels per latent cell."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_unet(
    preset: str,
    cross_attention_dim: int | None = None,
    sample_size: int | None = None,
    latent_channels: int = 4,
    pooled: bool = False,
) -> UNet2DConditionModel:
    """A randomly initialised ``UNet2DConditionModel`` with cross-attention on the DNA tokens.

    ``sample_size`` is the latent side (image side / VAE scale); unset = the preset's. ``pooled`` adds
    the pooled-condition pathway of :func:`add_pooled_condition`.
    """
    p = get_preset(preset)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in p.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(p.unet_attention))
    latent = sample_size or p.resolution // 2 ** (len(p.vae_channels) - 1)
    d = cross_attention_dim or p.cross_attention_dim
    pooled_kwargs = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": d}
    unet = UNet2DConditionModel(
        sample_size=latent,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=p.unet_channels,
        layers_per_block=p.unet_layers,
        norm_num_groups=p.unet_groups,
        cross_attention_dim=d,
        attention_head_dim=p.heads,  # diffusers: the number of heads
        **(pooled_kwargs if pooled else {}),
    )
    if pooled:
        _zero_pooled_output(unet)
    return unet


def add_pooled_condition(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """The same UNet with a pooled-condition pathway: the mean DNA token joins the timestep embedding.

    Stable Diffusion XL adds its pooled text embedding to the timestep embedding next to the
    cross-attention on the token sequence; here the masked mean of the condition tokens goes through
    diffusers' ``class_embed_type="projection"`` MLP into every ResNet block's scale/shift. Global
    traits (plumage colour) are learned much faster this way than through cross-attention alone.
    The MLP's output layer starts at zero, so a pretrained UNet's outputs are unchanged at first.
    Existing weights are copied into a new float32 UNet; one that already has the pathway is returned as is.
    """
    if unet.config.class_embed_type == "projection":
        return unet
    if unet.config.class_embed_type is not None:
        raise ConfigError(f"UNet already has class_embed_type={unet.config.class_embed_type!r}")
    # without the bookkeeping keys: ``_use_default_values`` would reset class_embed_type to its default
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config.update(
        class_embed_type="projection", projection_class_embeddings_input_dim=unet.config.cross_attention_dim
    )
    new = UNet2DConditionModel.from_config(config)  # float32, as training wants it
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise CheckpointError(
            f"UNet weights do not fit the pooled-condition UNet (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    _zero_pooled_output(new)
    return new


def _zero_pooled_output(unet: UNet2DConditionModel) -> None:
    torch.nn.init.zeros_(unet.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(unet.class_embedding.linear_2.bias)


def pooled_condition(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked mean of condition tokens: ``hidden (B, T, D)``, ``mask (B, T)`` (None = all) → ``(B, D)``."""
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def denoise(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    t: torch.Tensor,
    hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    cross_attention_kwargs: dict | None = None,
) -> torch.Tensor:
    """The UNet's prediction for ``sample`` at ``t`` given condition tokens (and their pooled mean);
    ``cross_attention_kwargs`` as diffusers' (``{"scale": s}``: the LoRA scale)."""
    extra = {}
    if getattr(unet, "module", unet).config.class_embed_type == "projection":  # DDP wraps the UNet
        extra["class_labels"] = pooled_condition(hidden, mask)
    if cross_attention_kwargs is not None:
        extra["cross_attention_kwargs"] = cross_attention_kwargs
    return unet(sample, t, encoder_hidden_states=hidden, encoder_attention_mask=mask, **extra).sample


def build_noise_scheduler(
    prediction_type: str = "epsilon", beta_schedule: str = "scaled_linear", num_train_timesteps: int = 1000
) -> DDPMScheduler:
    """The training noise schedule (Stable Diffusion's betas by default)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def _copy_into(new: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """``new`` gets every tensor of ``weights`` (a state dict): same shape as is, a smaller one into the
    leading corner of ``new``'s (the rest left as ``new`` holds it). Used to widen latent channels."""
    target = new.state_dict()
    for key, value in weights.items():
        if key not in target:
            raise CheckpointError(f"{what}: weight {key} has no place in the widened model")
        dst = target[key]
        if dst.shape == value.shape:
            dst.copy_(value)
        elif dst.ndim == value.ndim and all(a >= b for a, b in zip(dst.shape, value.shape, strict=True)):
            dst[tuple(slice(0, n) for n in value.shape)].copy_(value)
        else:
            raise CheckpointError(
                f"{what}: weight {key} {tuple(value.shape)} does not fit {tuple(dst.shape)}"
            )
    new.load_state_dict(target)


@torch.no_grad()
def widen_vae(vae: AutoencoderKL, extra: int, logvar: float = -9.0) -> AutoencoderKL:
    """The same VAE with ``extra`` more latent channels, exactly equal to ``vae`` on the old ones.

    The old channels keep their encoder and decoder weights; the new ones start as a small random
    read-out of the encoder's last features (posterior log-variance ``logvar``), pass ``quant_conv`` and
    ``post_quant_conv`` as identities and enter the decoder through zero weights, so at first the widened
    VAE encodes the old channels and decodes images exactly as ``vae`` does. Trained on with an anchor
    on the old channels (:func:`phenogen.diffusion.vae.train_vae`), the new channels can carry what the
    old latent space lost (the plumage colour of the 4x VAE) while a UNet trained on the old space
    stays valid for them (:func:`widen_unet`). Returns a new float32 model.
    """
    if extra < 1:
        raise ConfigError(f"extra latent channels must be >= 1, got {extra}")
    old_c = vae.config.latent_channels
    new_c = old_c + extra
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    config.update(latent_channels=new_c, latents_mean=None, latents_std=None)
    new = AutoencoderKL.from_config(config)
    # (index assignment into the new float32 model casts fp16 weights)
    # the 2C-channel moments (mean, logvar) are laid out [mean_0..C-1, logvar_0..C-1]: move logvar rows
    moment_rows = list(range(old_c)) + [new_c + i for i in range(old_c)]
    enc_w, enc_b = new.encoder.conv_out.weight, new.encoder.conv_out.bias
    torch.nn.init.normal_(enc_w, std=1e-3)
    enc_b.zero_()
    enc_w[moment_rows] = vae.encoder.conv_out.weight
    enc_b[moment_rows] = vae.encoder.conv_out.bias
    enc_w[new_c + old_c :] = 0.0
    enc_b[new_c + old_c :] = logvar
    if new.quant_conv is not None:
        w, b = new.quant_conv.weight, new.quant_conv.bias
        w.zero_()
        b.zero_()
        w[:, :, 0, 0] = torch.eye(2 * new_c)
        ow = vae.quant_conv.weight[:, :, 0, 0]
        w[moment_rows, :, 0, 0] = 0.0
        for i, row in enumerate(moment_rows):
            w[row, moment_rows, 0, 0] = ow[i]
            b[row] = vae.quant_conv.bias[i]
    if new.post_quant_conv is not None:  # identity; the old block goes into its corner below
        new.post_quant_conv.weight.zero_()
        new.post_quant_conv.bias.zero_()
        new.post_quant_conv.weight[:, :, 0, 0] = torch.eye(new_c)
    new.decoder.conv_in.weight.zero_()  # new channels enter the decoder through zeros
    moments = {"encoder.conv_out.weight", "encoder.conv_out.bias", "quant_conv.weight", "quant_conv.bias"}
    rest = {k: v for k, v in vae.state_dict().items() if k not in moments}
    _copy_into(new, rest, "widen_vae")
    return new


@torch.no_grad()
def widen_unet(unet: UNet2DConditionModel, channels: int) -> UNet2DConditionModel:
    """The same UNet for ``channels`` latent channels (at least its own): the new input channels enter
    ``conv_in`` through zero weights and the new output channels of ``conv_out`` start at zero, so
    the widened UNet predicts the old channels exactly as before and 0 for the new ones — the way
    Stable Diffusion's inpainting UNet was widened for its extra input channels. Float32."""
    old_c = unet.config.in_channels
    if channels < old_c or unet.config.out_channels != old_c:
        raise ConfigError(f"cannot widen a UNet of {old_c} latent channels to {channels}")
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config.update(in_channels=channels, out_channels=channels)
    new = UNet2DConditionModel.from_config(config)
    torch.nn.init.zeros_(new.conv_in.weight)
    torch.nn.init.zeros_(new.conv_out.weight)
    torch.nn.init.zeros_(new.conv_out.bias)
    _copy_into(new, unet.state_dict(), "widen_unet")
    return new


# ---------------------------------------------------------------------------------- Stable Diffusion bases
SD_SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")


def check_base_dir(path: str | Path) -> dict:
    """Check a local diffusers-format Stable Diffusion directory without loading a weight (``image.base``).

    Needs ``unet/`` (a ``UNet2DConditionModel`` whose ``cross_attention_dim`` is one width: SD 1.x 768,
    SD 2.x 1024), ``vae/`` (an ``AutoencoderKL`` with as many latent channels as the UNet reads) and
    ``scheduler/`` (its training noise schedule; ``prediction_type`` tells SD 2.x's v-prediction).
    ``text_encoder/`` and ``tokenizer/`` are not read. SDXL (a UNet that also reads pooled text embeddings
    and time ids), inpainting UNets (9 input channels) and others are refused by name. Returns the UNet's
    config. Raises :class:`ConfigError` (not SD-shaped) or :class:`CheckpointError` (damaged files).
    """
    from phenogen.fsio import read_json

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"image.base={str(path)!r}: not a directory; give a local diffusers-format Stable "
                          "Diffusion directory (unet/, vae/, scheduler/); nothing is downloaded")  # fmt: skip
    for part in ("unet", "vae"):
        if not (root / part / "config.json").is_file():
            raise ConfigError(f"image.base={str(path)!r}: no {part}/config.json; a Stable Diffusion directory "
                              "holds unet/, vae/ and scheduler/ (diffusers format: save_pretrained)")  # fmt: skip
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        raise ConfigError(f"image.base={str(path)!r}: no scheduler/scheduler_config.json (the noise schedule "
                          "the UNet was trained with); copy the whole Stable Diffusion directory")  # fmt: skip
    unet = read_json(root / "unet" / "config.json", "UNet config", expect=dict, error=CheckpointError)
    vae = read_json(root / "vae" / "config.json", "VAE config", expect=dict, error=CheckpointError)
    read_json(
        root / "scheduler" / "scheduler_config.json", "scheduler config", expect=dict, error=CheckpointError
    )
    where = root / "unet" / "config.json"
    if unet.get("_class_name") != "UNet2DConditionModel":
        raise ConfigError(f"{where}: a {unet.get('_class_name')!r}, not a UNet2DConditionModel; image.base takes "
                          "Stable Diffusion 1.x / 2.x")  # fmt: skip
    if unet.get("addition_embed_type") == "text_time":
        raise ConfigError(f"{where}: an SDXL UNet (it also reads pooled text embeddings and time ids); phenogen "
                          "fine-tunes Stable Diffusion 1.x / 2.x only")  # fmt: skip
    dim = unet.get("cross_attention_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"{where}: cross_attention_dim = {dim!r}; image.base needs one cross-attention width "
                          "(768 for SD 1.x, 1024 for SD 2.x)")  # fmt: skip
    if unet.get("class_embed_type") is not None or unet.get("addition_embed_type") is not None:
        raise ConfigError(f"{where}: the UNet reads class or added embeddings beside the text; not a plain "
                          "Stable Diffusion UNet")  # fmt: skip
    channels = unet.get("in_channels")
    if channels != unet.get("out_channels") or channels != vae.get("latent_channels"):
        raise ConfigError(f"{where}: the UNet reads {channels} channels and writes {unet.get('out_channels')}, "
                          f"the VAE has {vae.get('latent_channels')} latent channels (an inpainting or "
                          "depth UNet?); image.base needs a text-to-image UNet")  # fmt: skip
    check_component_dir(root / "unet")
    check_component_dir(root / "vae")
    return unet


def load_base(path: str | Path) -> tuple[UNet2DConditionModel, AutoencoderKL, dict]:
    """The UNet (float32), VAE and training noise-schedule config of a Stable Diffusion directory
    (checked first by :func:`check_base_dir`); local files only."""
    from phenogen.fsio import read_json
    from phenogen.lm.model import LOAD_ERRORS

    root = Path(path)
    check_base_dir(root)
    try:
        unet = UNet2DConditionModel.from_pretrained(
            root / "unet", local_files_only=True, torch_dtype=torch.float32
        )
    except LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{root / 'unet'}: cannot load as UNet2DConditionModel ({' '.join(str(exc).split())[:300]})"
        ) from None
    vae = load_vae(root / "vae")
    schedule = read_json(
        root / "scheduler" / "scheduler_config.json", "scheduler config", error=CheckpointError
    )
    return unet, vae, schedule


def base_noise_scheduler(schedule: dict, prediction_type: str | None = None) -> DDPMScheduler:
    """The training noise schedule of a Stable Diffusion base: its betas and prediction type (SD 2.x:
    v_prediction), in a ``DDPMScheduler``; ``prediction_type`` overrides the base's when given."""
    kwargs = {k: schedule[k] for k in SD_SCHEDULER_KEYS if k in schedule}
    if prediction_type is not None:
        kwargs["prediction_type"] = prediction_type
    return DDPMScheduler(clip_sample=False, steps_offset=int(schedule.get("steps_offset", 1)),
                         timestep_spacing=str(schedule.get("timestep_spacing", "leading")), **kwargs)  # fmt: skip


def condition_heads(width: int, preferred: int) -> int:
    """Attention heads of the condition head for a token width: ``preferred`` when it divides it, else the
    largest of 8, 4, 2, 1 that does."""
    return next(h for h in (preferred, 8, 4, 2, 1) if h >= 1 and width % h == 0)
