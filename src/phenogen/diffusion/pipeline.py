"""``DNAToImagePipeline``: from barcodes to images, as a diffusers ``DiffusionPipeline``.

Components: ``vae`` (AutoencoderKL), ``unet`` (UNet2DConditionModel), ``scheduler`` (any diffusers
scheduler; swap with :func:`make_scheduler`), ``conditioner``
(:class:`~phenogen.diffusion.conditioning.DNAConditioner`, which carries the frozen DNA LM for the
``gpt2`` encoder) and, optionally, ``caption_decoder``
(:class:`~phenogen.diffusion.caption_decoder.CaptionDecoder`): with the ``caption`` head, the latents
are decoded *with the caption the UNet was given* (the colours the 4× latents cannot hold come from it);
without one, or with the ``tokens`` head, the VAE's own decoder is used. ``save_pretrained`` writes ``model_index.json`` plus one folder per component
(safetensors + JSON config); ``from_pretrained`` reads a local directory back.

Sampling follows Stable Diffusion's pipeline: classifier-free guidance is one batched UNet call on
``[unconditional, conditional]`` per step (the conditional half alone when ``guidance_scale == 1``).

>>> # pipe = DNAToImagePipeline.from_pretrained("run/image/pipeline")
>>> # images = pipe(["ACGT..."], num_inference_steps=50, guidance_scale=8.0).images
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    ImagePipelineOutput,
    UniPCMultistepScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from phenogen.diffusion.caption_decoder import CaptionDecoder
from phenogen.diffusion.components import denoise
from phenogen.diffusion.conditioning import DNAConditioner
from phenogen.diffusion.config import SCHEDULERS
from phenogen.diffusion.lora import LORA_WEIGHTS, has_lora, load_lora
from phenogen.diffusion.vae import unscale_latents
from phenogen.dna.seqio import clean_sequence
from phenogen.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "DNAToImagePipeline",
    "make_scheduler",
    "SCHEDULERS",
    "load_pipeline",
    "check_pipeline_dir",
    "resolve_pipeline_dir",
]

# diffusers loads a saved pipeline's components by module name only from modules already imported:
# importing them here makes `from_pretrained` work in a fresh process (tested in one)
_COMPONENT_CLASSES = (DNAConditioner, CaptionDecoder)


def make_scheduler(name: str, config) -> object:
    """A sampling scheduler built from the training scheduler's ``config`` (``from_config``).

    ``ddim`` (deterministic), ``ddpm`` (ancestral, the training chain), ``dpm++2m-karras``
    (DPM-Solver++ 2M with Karras sigmas), ``unipc`` (UniPC, bh2, order 2), ``euler`` (Euler with Karras
    sigmas, deterministic) and ``euler-a`` (Euler ancestral).
    """
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "ddpm":
        return DDPMScheduler.from_config(config)
    if name == "dpm++2m-karras":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        )
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config, solver_order=2, solver_type="bh2")
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True)
    if name == "euler-a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


class DNAToImagePipeline(DiffusionPipeline):
    """Paint images from DNA barcodes with a DNA-conditioned latent diffusion model."""

    model_cpu_offload_seq = "conditioner->unet->vae"
    _optional_components = ["caption_decoder"]

    def __init__(self, vae, unet, scheduler, conditioner: DNAConditioner, caption_decoder=None):
        super().__init__()
        self.register_modules(
            vae=vae, unet=unet, scheduler=scheduler, conditioner=conditioner, caption_decoder=caption_decoder
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        sequences: Sequence[str],
        num_inference_steps: int,
        guidance_scale: float,
        num_images_per_sequence: int,
        generator: torch.Generator | list[torch.Generator] | None,
        check_sequences: bool = True,
    ) -> list[str]:
        """Validate arguments; returns the cleaned sequences (upper case, ambiguity codes as N)."""
        if isinstance(sequences, str):
            raise InputError("sequences must be a list of barcodes, not one string; wrap it: [seq]")
        if len(sequences) == 0:
            raise InputError("no sequences given: pass at least one DNA barcode")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if guidance_scale < 0:
            raise InputError(f"guidance_scale must be >= 0 (1 = conditional only), got {guidance_scale}")
        if num_images_per_sequence < 1:
            raise InputError(f"num_images_per_sequence must be >= 1, got {num_images_per_sequence}")
        n = len(sequences) * num_images_per_sequence
        if isinstance(generator, list) and len(generator) != n:
            raise InputError(
                f"got {len(generator)} generators for {n} images; pass one per image or a single one"
            )
        if not check_sequences:
            return list(sequences)
        cleaned = []
        for i, seq in enumerate(sequences):
            if not isinstance(seq, str):
                raise InputError(f"sequence #{i} is {type(seq).__name__}, not a string")
            out = clean_sequence(
                seq, record_id=f"#{i}", source="pipeline input", policy="mask", allow_gaps=True
            )
            if out is None or not any(c in "ACGT" for c in out):
                raise InputError(f"pipeline input: record '#{i}': sequence holds no A/C/G/T base")
            cleaned.append(out)
        return cleaned

    # ------------------------------------------------------------------ the guided prediction
    def guided_prediction(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor | None,
        uncond: torch.Tensor | None,
        uncond_mask: torch.Tensor | None,
        guidance_scale: float,
        cross_attention_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """The UNet's output with classifier-free guidance: one batched call on ``[uncond, cond]``.

        ``uncond is None`` (or ``guidance_scale == 1``) runs the conditional half only.
        """
        if uncond is None or guidance_scale == 1.0:
            latent_in = self.scheduler.scale_model_input(latents, t)
            return denoise(self.unet, latent_in, t, cond, cond_mask, cross_attention_kwargs)
        latent_in = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
        hidden = torch.cat([uncond, cond])
        mask = None if cond_mask is None else torch.cat([uncond_mask, cond_mask])
        out = denoise(self.unet, latent_in, t, hidden, mask, cross_attention_kwargs)
        out_uncond, out_cond = out.chunk(2)
        return out_uncond + guidance_scale * (out_cond - out_uncond)

    def _step_kwargs(self, generator) -> dict:
        accepts = set(inspect.signature(self.scheduler.step).parameters)
        return {"generator": generator} if "generator" in accepts else {}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        sequences: Sequence[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 8.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_images_per_sequence: int = 1,
        output_type: str = "pil",
        latents: torch.Tensor | None = None,
        return_dict: bool = True,
        progress: bool = False,
        captions: torch.Tensor | np.ndarray | None = None,
        callback_on_step_end=None,
        lora_scale: float = 1.0,
    ):
        """Generate images for barcodes (or, with a caption head, for captions given directly).

        Parameters
        ----------
        sequences : list of str
            DNA barcodes (IUPAC ambiguity codes become N; gaps allowed).
        num_inference_steps : int
            Denoising steps (the thesis used 50).
        guidance_scale : float
            Classifier-free guidance scale; 1 = conditional only, 0 = unconditional.
        generator : torch.Generator or list of them, optional
            One generator, or one per image (then image ``i`` depends on ``generator[i]`` only).
        num_images_per_sequence : int
            Images per barcode; images of sequence ``i`` are ``[i * n, (i + 1) * n)``.
        output_type : {"pil", "np", "pt"}
            PIL images, a ``(N, H, W, 3)`` array in [0, 1], or a ``(N, 3, H, W)`` tensor in [0, 1].
        captions : (B, caption_n) array, optional
            Instead of ``sequences`` (the ``caption`` head only): the captions to paint, e.g. ancestral
            captions reconstructed on a tree (:func:`phenogen.phylo.portraits.tree_captions`); the
            diffusers pipelines' ``prompt_embeds`` counterpart, one step earlier.
        callback_on_step_end : callable, optional
            Called as ``callback_on_step_end(pipe, i, t, {})`` after denoising step ``i`` (diffusers'
            convention; progress bars in notebooks and the app); its return value is ignored.
        lora_scale : float
            A LoRA model (``image.lora_rank``): the weight of the LoRA update (0 = the base UNet, 1 = as
            trained); diffusers' ``cross_attention_kwargs={"scale": lora_scale}``.

        Returns
        -------
        ImagePipelineOutput with ``.images``
        """
        # 1. check inputs
        if (sequences is None) == (captions is None):
            raise InputError("pass either sequences (barcodes) or captions, not both or neither")
        seqs = self.check_inputs(
            sequences if captions is None else [""] * len(captions),
            num_inference_steps, guidance_scale, num_images_per_sequence, generator,
            check_sequences=captions is None,
        )  # fmt: skip
        if output_type not in ("pil", "np", "pt", "latent"):
            raise InputError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        if not (isinstance(lora_scale, int | float) and math.isfinite(lora_scale)):
            raise InputError(f"lora_scale must be a finite number, got {lora_scale!r}")
        attention_kwargs = None
        if has_lora(self.unet):
            attention_kwargs = {"scale": float(lora_scale)}
        elif lora_scale != 1.0:
            raise InputError(
                "lora_scale is for a LoRA model (trained with image.lora_rank); this one has none"
            )
        device = self._execution_device
        dtype = self.unet.dtype
        n = len(seqs) * num_images_per_sequence
        do_cfg = guidance_scale != 1.0

        # 2. encode the barcodes (conditional and null embeddings); eval mode, restored at the end
        parts = (self.vae, self.unet, self.conditioner, self.caption_decoder)
        modes = {m: m.training for m in parts if m is not None}
        for m in modes:
            m.eval()
        caption_values = None  # what the caption decoder paints from (the caption head only)
        use_decoder = self.caption_decoder is not None and self.conditioner.config.head == "caption"
        if captions is None and not use_decoder:
            cond, cond_mask = self.conditioner.encode(seqs, device=device)  # (B, T, D), (B, T)
        elif captions is None:  # the written captions once: encode_captions(caption_matrix(s)) == encode(s)
            written = self.conditioner.caption_matrix(seqs)
            cond, cond_mask = self.conditioner.encode_captions(written, device=device)
            caption_values = torch.as_tensor(written, dtype=torch.float32)
        else:
            try:
                cond, cond_mask = self.conditioner.encode_captions(captions, device=device)
            except (ValueError, ConfigError) as exc:
                raise InputError(f"captions: {exc}") from None
            if use_decoder:
                caption_values = torch.as_tensor(np.asarray(captions, dtype=np.float32))
        cond = cond.repeat_interleave(num_images_per_sequence, dim=0).to(dtype)
        cond_mask = cond_mask.repeat_interleave(num_images_per_sequence, dim=0)
        uncond = uncond_mask = None
        if do_cfg:
            uncond, uncond_mask = self.conditioner.null_condition(n, cond.shape[1], device=device)
            uncond = uncond.to(dtype)
        if bool(cond_mask.all()) and (uncond_mask is None or bool(uncond_mask.all())):
            cond_mask = uncond_mask = None  # all tokens real: skip the attention bias

        # 3. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. initial latents
        side = int(self.unet.config.sample_size)
        shape = (n, int(self.unet.config.in_channels), side, side)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma

        # 5. denoising loop
        step_kwargs = self._step_kwargs(generator)
        for i, t in enumerate(self.progress_bar(timesteps) if progress else timesteps):
            out = self.guided_prediction(
                latents, t, cond, cond_mask, uncond, uncond_mask, guidance_scale, attention_kwargs
            )
            latents = self.scheduler.step(out, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, t, {})

        # 6. decode
        if output_type == "latent":
            images = latents
        else:
            z = unscale_latents(self.vae, latents)
            if caption_values is not None:
                c = caption_values.to(device).repeat_interleave(num_images_per_sequence, dim=0)
                decoded = self.caption_decoder(z, c)
            else:
                decoded = self.vae.decode(z).sample
            images = self.image_processor.postprocess(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        for m, mode in modes.items():
            m.train(mode)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


REQUIRED_COMPONENTS = ("vae", "unet", "scheduler", "conditioner")
_SCHEDULER_CLASSES = ("DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                      "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler")  # fmt: skip
# the [library, class] each component may name in model_index.json (diffusers imports what it is told)
ALLOWED_CLASSES: dict[str, set[tuple[str | None, str | None]]] = {
    "vae": {("diffusers", "AutoencoderKL")},
    "unet": {("diffusers", "UNet2DConditionModel")},
    "scheduler": {("diffusers", name) for name in _SCHEDULER_CLASSES},
    "conditioner": {("phenogen.diffusion.conditioning", "DNAConditioner"), ("conditioning", "DNAConditioner")},
    "caption_decoder": {(None, None), ("phenogen.diffusion.caption_decoder", "CaptionDecoder"),
                        ("caption_decoder", "CaptionDecoder")},
}  # fmt: skip
_OWN_CLASSES = {"DNAConditioner": DNAConditioner, "CaptionDecoder": CaptionDecoder}
_LONG_LISTS = ("trained_betas", "caption_traits")


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a simple ``__init__`` annotation (int, float, str, bool, dict, sequences, unions)."""
    import math
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value) if args else True
    return True


def check_own_component_config(cls, config: dict, file: Path) -> None:
    """Refuse a config field of phenogen's own components whose JSON type does not fit its ``__init__``."""
    import typing

    hints = typing.get_type_hints(cls.__init__)
    for key, value in config.items():
        if key in hints and not str(key).startswith("_") and not _fits(value, hints[key]):
            raise CheckpointError(
                f"{file}: {key} = {value!r:.60} does not fit {cls.__name__} ({hints[key]}); the config is damaged"
            )


def resolve_pipeline_dir(path: str | Path) -> Path:
    """``path`` itself, or its ``pipeline/`` (a ``train-image`` output directory)."""
    path = Path(path)
    if not (path / "model_index.json").is_file() and (path / "pipeline" / "model_index.json").is_file():
        path = path / "pipeline"
    return path


def check_pipeline_dir(path: str | Path) -> tuple[Path, dict]:
    """Check a saved pipeline directory file by file without loading a weight; ``(directory, model_index)``.

    Refused with a :class:`CheckpointError` naming the file: a missing directory, no or a broken
    ``model_index.json`` (not UTF-8, not JSON, not an object), a component listed without its folder,
    a component config that is not a JSON object, and a weights file that is missing, empty or truncated.
    """
    from phenogen.diffusion.components import check_component_dir
    from phenogen.fsio import read_json
    from phenogen.lm.model import check_config_numbers

    given = Path(path)
    if not given.exists():
        raise CheckpointError(
            f"{given}: model directory does not exist; point --model at train-image's OUT/pipeline"
        )
    if not given.is_dir():
        raise CheckpointError(
            f"{given}: is a file, not a model directory; point --model at train-image's OUT/pipeline"
        )
    path = resolve_pipeline_dir(given)
    if not (path / "model_index.json").is_file():
        raise CheckpointError(
            f"{path}: not a saved pipeline (no model_index.json); point --model at train-image's OUT/pipeline"
        )
    index = read_json(path / "model_index.json", "pipeline index", expect=dict, error=CheckpointError)
    missing = [name for name in REQUIRED_COMPONENTS if name not in index]
    if missing:
        raise CheckpointError(f"{path / 'model_index.json'}: lists no {', '.join(missing)} component")
    for name, spec in index.items():
        if name.startswith("_"):
            continue
        if not (
            isinstance(spec, list) and len(spec) == 2 and all(v is None or isinstance(v, str) for v in spec)
        ):
            raise CheckpointError(
                f"{path / 'model_index.json'}: entry {name!r:.60} must be [library, class], got {spec!r:.80}"
            )
        if name not in ALLOWED_CLASSES or tuple(spec) not in ALLOWED_CLASSES[name]:
            raise CheckpointError(
                f"{path / 'model_index.json'}: entry {name!r:.60} names {spec!r:.80}, not a component of a "
                "DNA-to-image pipeline; save or copy the pipeline again"
            )
        if spec[0] is None:
            continue  # an optional component left out (caption_decoder)
        check_component_dir(path / name, scheduler=name == "scheduler")
        config_file = path / name / ("scheduler_config.json" if name == "scheduler" else "config.json")
        config = read_json(config_file, "component config", expect=dict, error=CheckpointError)
        check_config_numbers(config, config_file, long_lists=_LONG_LISTS)
        if spec[1] in _OWN_CLASSES:
            check_own_component_config(_OWN_CLASSES[spec[1]], config, config_file)
    if (path / LORA_WEIGHTS).exists():  # a LoRA run: the adapter beside the base UNet
        from phenogen.lm.model import check_safetensors

        check_safetensors(path / LORA_WEIGHTS, "LoRA weights file")
    from phenogen.diffusion.settings import read_settings

    read_settings(path)  # generation_config.json, when there is one
    return path, index


def load_pipeline(path: str | Path, device: str | torch.device | None = None) -> DNAToImagePipeline:
    """Load a saved pipeline directory (``train-image`` ``OUT/pipeline`` or ``OUT`` itself).

    Every file is checked first (:func:`check_pipeline_dir`); what diffusers still refuses is a
    :class:`CheckpointError` naming the directory.
    """
    from diffusers.utils import logging as diffusers_logging

    from phenogen.lm.model import LOAD_ERRORS

    path, _ = check_pipeline_dir(path)
    diffusers_logging.disable_progress_bar()
    try:
        pipe = DNAToImagePipeline.from_pretrained(path, local_files_only=True)
    except (*LOAD_ERRORS, ConfigError, CheckpointError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{path}: cannot load the pipeline ({detail})") from None
    finally:
        diffusers_logging.enable_progress_bar()
    if (path / LORA_WEIGHTS).is_file():
        load_lora(pipe.unet, path)
    pipe.set_progress_bar_config(disable=True)
    from phenogen.diffusion.settings import read_settings

    # the sampler, steps and guidance it was tuned with (generation_config.json), used when none are given
    pipe.generation_settings, pipe.generation_settings_source = read_settings(path)
    pipe.reader = _load_reader(path, pipe.conditioner)  # the prior's reader (best-of-K sampling), or None
    if device is not None:
        pipe.to(device)
    return pipe


def _load_reader(path: Path, conditioner):
    """``PATH/reader`` (:mod:`phenogen.diffusion.reader`), checked against the captions the pipeline writes."""
    from phenogen.diffusion.reader import READER_DIR, load_reader

    if not (path / READER_DIR / "probe.json").is_file():
        return None
    reader = load_reader(path / READER_DIR)
    names = list(conditioner.caption_names) if conditioner.config.head == "caption" else []
    if reader.spec.trait_names != names:
        raise CheckpointError(
            f"{path / READER_DIR}: the reader reads {', '.join(reader.spec.trait_names)}; the pipeline's "
            f"captions are {', '.join(names) or 'none (not a caption-head model)'}"
        )
    return reader


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` floats in [0, 1] → uint8."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
