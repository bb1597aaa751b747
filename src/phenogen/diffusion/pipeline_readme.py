"""What ``train-image`` writes beside a saved pipeline so that people and plain diffusers can open it.

``README.md`` says what the directory holds and how to open it (phenogen, plain diffusers, and — for
a Stable Diffusion base — a stock ``StableDiffusionPipeline`` with the LoRA); ``phenogen_pipeline.py`` is
a one-line custom-pipeline file for ``DiffusionPipeline.from_pretrained(dir,
custom_pipeline=dir/phenogen_pipeline.py, trust_remote_code=True)``. ``model_index.json`` keeps naming
``DNAToImagePipeline`` as a plain class name, so phenogen's own loader never runs code from the directory.
"""

from __future__ import annotations

from pathlib import Path

from phenogen.fsio import atomic_write_text

__all__ = ["write_pipeline_readme", "CUSTOM_PIPELINE_FILE"]

CUSTOM_PIPELINE_FILE = "phenogen_pipeline.py"

_SHIM = '''"""diffusers custom-pipeline file of a phenogen DNA-to-image pipeline (needs `pip install phenogen`)."""

from phenogen.diffusion.pipeline import DNAToImagePipeline  # noqa: F401
'''

_COMMON = """# phenogen DNA-to-image pipeline

A latent diffusion model that paints an organism from its DNA barcode, written by `phenogen train-image`.
Folders: `unet/`, `vae/`, `scheduler/` (diffusers components), `conditioner/` (phenogen's DNA
conditioner: barcode -> cross-attention tokens, in the text encoder's place){decoder};
`generation_config.json` holds the sampler, steps, guidance and best-of it was tuned with.{reader}

## Open it

With phenogen (the command line, or Python):

```bash
phenogen generate --model {where} --sequence ACGT... --out portraits
```

```python
from phenogen.diffusion.pipeline import DNAToImagePipeline
pipe = DNAToImagePipeline.from_pretrained("{where}")
images = pipe(["ACGT..."], num_inference_steps=50, guidance_scale=8.0).images
```

With plain diffusers (phenogen installed, for the conditioner's class; this runs
`phenogen_pipeline.py`, one import line):

```python
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{where}", custom_pipeline="{where}/phenogen_pipeline.py",
                                         trust_remote_code=True)
```
"""

_SD = """
## A Stable Diffusion fine-tune{lora_title}

This pipeline was fine-tuned from the Stable Diffusion directory `{base}`; the DNA conditioner replaces
CLIP's text encoding. Its conditions are fixed-length and fully attended (no attention mask), as CLIP's
are, so a stock `StableDiffusionPipeline` paints the same images from `prompt_embeds`:

```python
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from phenogen.api import dna_prompt_embeds
from phenogen.diffusion.generate import image_seed

pipe = StableDiffusionPipeline.from_pretrained("{base}", safety_checker=None)  # your local copy
pipe.scheduler = DDIMScheduler.from_pretrained("{where}", subfolder="scheduler")  # phenogen's DDIM
{lora_load}prompt_embeds, negative_prompt_embeds = dna_prompt_embeds("{where}", ["ACGT..."])
image = pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
             num_inference_steps=50, guidance_scale=8.0,
             generator=torch.Generator().manual_seed(image_seed(0, "my_record", 0))).images[0]
```

`image_seed(seed, record id, k)` is the noise `phenogen generate --seed seed` gives image `k` of that
record; with one record per call (`phenogen generate --batch-size 1`) the pictures are identical pixel for
pixel (batches of other sizes round the floating point differently, up to 1/255).
"""

_LORA_LOAD = """pipe.load_lora_weights("{where}")  # pytorch_lora_weights.safetensors (diffusers format)
"""
_FULL_LOAD = """pipe.unet = UNet2DConditionModel.from_pretrained("{where}", subfolder="unet")  # the fine-tuned UNet
"""


def write_pipeline_readme(directory: str | Path, *, lora: bool = False, base: str = "") -> None:
    """Write ``README.md`` and ``phenogen_pipeline.py`` into a saved pipeline directory."""
    directory = Path(directory)
    where = "OUT/pipeline"
    decoder = ", `caption_decoder/`" if (directory / "caption_decoder").is_dir() else ""
    reader = (
        "\n`reader/` (a trait probe of random renders, safetensors + JSON) reads a portrait back into its caption: "
        "phenogen keeps the best of `best_of` candidates with it (diffusers' `pipe(...)` keeps every draw)."
        if (directory / "reader").is_dir()
        else ""
    )
    text = _COMMON.format(where=where, decoder=decoder, reader=reader)
    if base:
        text += _SD.format(
            base=base,
            where=where,
            lora_title=" with LoRA" if lora else "",
            lora_load=(_LORA_LOAD if lora else _FULL_LOAD).format(where=where),
        )
        if lora:
            text += (
                "\n`pytorch_lora_weights.safetensors` holds the LoRA of the UNet's attention projections (the "
                "LoraConfig, alpha included, in its metadata); `unet/` is the base UNet as it came. "
                "`phenogen generate --lora-scale S` (and `pipe(..., cross_attention_kwargs={'scale': S})` in "
                "diffusers) weighs it: 0 = the base model.\n"
            )
    atomic_write_text(directory / "README.md", text)
    atomic_write_text(directory / CUSTOM_PIPELINE_FILE, _SHIM)
