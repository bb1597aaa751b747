"""LoRA on the UNet's attention projections (``[image] lora_rank``), through peft and diffusers' loaders.

The adapter is diffusers' PEFT integration (``UNet2DConditionModel.add_adapter(LoraConfig)``), the route of
diffusers' own ``train_text_to_image_lora.py``: low-rank ``A``/``B`` matrices beside the frozen
``to_q``/``to_k``/``to_v``/``to_out.0`` projections, ``B`` starting at zero so the adapted UNet equals the
base at step 0, the update scaled by ``alpha / rank``. Saved in diffusers' format
(``pytorch_lora_weights.safetensors``, the LoraConfig in its metadata so that ``alpha`` survives), which a
stock ``StableDiffusionPipeline.load_lora_weights(dir)`` reads; the scale at generation is diffusers'
``cross_attention_kwargs={"scale": s}`` (0 = the base UNet).

Checkpoints of a LoRA run hold the LoRA weights only (``unet_lora.safetensors``), not the frozen base:
accelerate's save/load hooks take the UNet out of its model list (as diffusers' example does), so a
resumed run restores exactly the adapter it saved.

>>> from phenogen.diffusion.components import build_unet
>>> unet = build_unet("tiny", cross_attention_dim=32)
>>> config = add_lora(unet, rank=4, alpha=4.0)
>>> sum(p.numel() for p in unet.parameters() if p.requires_grad) > 0
True
>>> sorted({k.split(".lora")[0].rsplit(".", 1)[1] for k in lora_state_dict(unet)})
['to_k', 'to_out', 'to_q', 'to_v']
"""

from __future__ import annotations

from pathlib import Path

import torch

from phenogen.errors import CheckpointError, ConfigError

__all__ = [
    "LORA_WEIGHTS",
    "add_lora",
    "has_lora",
    "lora_state_dict",
    "save_lora",
    "load_lora",
    "unet_without_lora",
    "register_checkpoint_hooks",
]

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
CHECKPOINT_FILE = "unet_lora.safetensors"


def add_lora(unet, rank: int, alpha: float, dropout: float = 0.0, targets: str = "to_q,to_k,to_v,to_out.0"):
    """Freeze ``unet`` and give it a LoRA adapter (float32 weights); returns the ``LoraConfig``."""
    from peft import LoraConfig

    names = [t.strip() for t in targets.split(",") if t.strip()]
    present = {name for name, _ in unet.named_modules()}
    missing = [t for t in names if not any(n == t or n.endswith("." + t) for n in present)]
    if missing:
        raise ConfigError(f"image.lora_targets: the UNet has no module named {', '.join(missing)} "
                          "(diffusers' attention projections are to_q, to_k, to_v, to_out.0)")  # fmt: skip
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights="gaussian",
                        target_modules=names)  # fmt: skip
    unet.requires_grad_(False)
    unet.add_adapter(config)
    for p in unet.parameters():  # the adapter trains in float32 whatever the base's dtype
        if p.requires_grad:
            p.data = p.data.float()
    return config


def has_lora(unet) -> bool:
    return bool(getattr(unet, "peft_config", None))


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights in diffusers' key format (``...to_q.lora.down.weight``)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def save_lora(directory: str | Path, unet, config) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` (diffusers format, LoraConfig in the metadata)."""
    from diffusers import StableDiffusionPipeline

    state = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(unet).items()}
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=state, safe_serialization=True,
                                              unet_lora_adapter_metadata=config.to_dict())  # fmt: skip
    return Path(directory) / LORA_WEIGHTS


def load_lora(unet, directory: str | Path, adapter_name: str = "default") -> None:
    """Load ``directory/pytorch_lora_weights.safetensors`` into ``unet`` (checked first; local only)."""
    from diffusers import StableDiffusionPipeline

    from phenogen.lm.model import LOAD_ERRORS, check_safetensors

    file = Path(directory) / LORA_WEIGHTS
    check_safetensors(file, "LoRA weights file")
    try:
        state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(
            str(directory), weight_name=LORA_WEIGHTS, local_files_only=True, return_lora_metadata=True
        )
        StableDiffusionPipeline.load_lora_into_unet(
            state, alphas, unet=unet, adapter_name=adapter_name, metadata=metadata
        )
    except (*LOAD_ERRORS, ValueError) as exc:
        raise CheckpointError(
            f"{file}: cannot load the LoRA weights ({' '.join(str(exc).split())[:300]})"
        ) from None


@torch.no_grad()
def unet_without_lora(unet):
    """A float32 copy of a LoRA-adapted UNet without its adapter (the frozen base weights), for saving."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    with torch.device("meta"):
        clean = UNet2DConditionModel.from_config(config)
    state = {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if ".lora_" not in k}
    clean.load_state_dict(state, strict=True, assign=True)
    return clean.float()


def register_checkpoint_hooks(accelerator, unet) -> None:
    """Make accelerate's checkpoints hold ``unet``'s LoRA weights only (not its frozen base).

    accelerate names model files by position (``model.safetensors``, ``model_1.safetensors`` ...): the
    save hook pops the UNet's weights and the load hook pops the UNet from (its copy of) the model list,
    so both see the same remaining positions.
    """
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    raw = accelerator.unwrap_model(unet)

    def position(models) -> int:
        for i, model in enumerate(models):
            if accelerator.unwrap_model(model) is raw:
                return i
        raise CheckpointError("the LoRA UNet is not among the checkpointed models")

    def save_hook(models, weights, output_dir):
        i = position(models)
        if accelerator.is_main_process:
            state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(raw).items()}
            save_file(state, str(Path(output_dir) / CHECKPOINT_FILE))
        if weights:  # (``models`` is the accelerator's own list here: left as it is)
            weights.pop(i)

    def load_hook(models, input_dir):
        i = position(models)
        models.pop(i)
        file = Path(input_dir) / CHECKPOINT_FILE
        if not file.is_file():
            raise CheckpointError(f"{input_dir}: no {CHECKPOINT_FILE}; this checkpoint is not of a LoRA run")
        result = set_peft_model_state_dict(raw, load_file(str(file)))
        unfit = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if unfit:
            raise CheckpointError(f"{file}: LoRA weights {unfit[:3]} do not fit the UNet's adapter")

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
