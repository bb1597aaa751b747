"""``phenogen train-image --data DIR --out DIR [--resume]``: train the DNA-conditioned diffusion model.

Reads the ``[image]`` section (``--config`` / ``--set image.key=value``), checks the dataset, the
settings and ``--out`` (nothing is written or deleted before they pass), writes the resolved settings
to ``OUT/config.json`` and runs :func:`phenogen.diffusion.train.train_image_model`. The trained
pipeline lands in ``OUT/pipeline`` (load it with ``phenogen generate --model OUT/pipeline``), with the
``[generate]`` settings of the configuration (scheduler, steps, guidance — the ones the model is meant
to be painted with) in ``OUT/pipeline/generation_config.json``.
``--resume`` continues from the newest complete checkpoint; ``--force`` replaces an earlier phenogen
output only. Several processes: ``torchrun --nproc_per_node N -m phenogen.cli train-image ...`` (see
:mod:`phenogen.diffusion.train`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset directory (only its train split is fitted)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="run directory (pipeline/, checkpoints/, samples/ ...)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue exactly from the newest checkpoint in OUT"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier train-image run directory (phenogen's only)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Check every input, then (main process only) prepare ``--out`` and write its settings, then train.

    Order matters: a missing dataset, a bad setting or an unresumable ``--out`` is reported before
    ``--out`` is touched, and ``--force`` only ever clears a directory carrying phenogen's marker —
    after every image of the train and heldout splits decoded (a corrupt PNG must not cost the earlier run).
    Under ``torchrun``/``accelerate launch`` only the main process prepares ``--out``; the others wait
    and raise the same error if it was refused.
    """
    import torch
    from accelerate import PartialState

    from phenogen.accel import GROUP_TIMEOUT_S, end_distributed, on_main, process_kwargs
    from phenogen.config import load_sections, to_jsonable
    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.command_prior import check_prior_fits
    from phenogen.diffusion.config import GenerateConfig, ImageConfig
    from phenogen.diffusion.settings import THESIS
    from phenogen.diffusion.train import (
        check_inputs,
        check_not_inside,
        check_resumable,
        train_image_model,
    )
    from phenogen.errors import ConfigError, PhenogenError
    from phenogen.fsio import MARKER, atomic_write_json, check_output_dir, is_phenogen_dir, prepare_output_dir
    from phenogen.lm.model import check_model_dir

    sections = load_sections({"image": ImageConfig, "generate": GenerateConfig}, args.config, args.set)
    cfg: ImageConfig = sections["image"]
    gen: GenerateConfig = sections["generate"]
    # the [generate] settings of the configuration travel with the pipeline (generation_config.json)
    generation = THESIS.override(gen.scheduler, gen.steps, gen.guidance_scale, gen.best_of)
    given = [k for k in ("scheduler", "steps", "guidance_scale", "best_of") if getattr(gen, k) is not None]
    generation_source = (
        f"[generate] {', '.join(given)} of the train-image configuration; the thesis' value for the rest"
        if given
        else "the thesis' settings (the train-image configuration sets no [generate] values)"
    )
    if args.no_progress:  # also transformers' "Loading weights" bar of a gpt2 encoder's LM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    out: Path = args.out

    def prepare() -> None:
        check_output_dir(out, force=args.force, resume=args.resume)
        check_inputs(args.data, cfg)
        if args.force:
            check_not_inside(out, {"--data": args.data, "image.init": cfg.init, "image.vae": cfg.vae,
                                   "image.base": cfg.base, "image.lm_model": cfg.lm_model})  # fmt: skip
        check_prior_fits(cfg.init, cfg.preset, cfg.resolution)
        if cfg.encoder == "gpt2":  # else a missing or broken LM is found only after the VAE has trained
            if not cfg.lm_model:
                raise ConfigError("image.encoder='gpt2' needs the DNA language model: set image.lm_model to a "
                                  "train-lm output directory")  # fmt: skip
            try:
                check_model_dir(cfg.lm_model)
            except PhenogenError as exc:
                raise type(exc)(f"image.lm_model={cfg.lm_model!r}: {exc}") from None
        if args.force and is_phenogen_dir(out) and any(c.name != MARKER for c in out.iterdir()):
            # --force is about to clear an earlier run: a corrupt image found only while training would
            # cost it for nothing, so every image the run reads is decoded first
            load_dataset(args.data).verify_images(["train", "heldout"])
        if args.resume:
            check_resumable(out, cfg)
        prepare_output_dir(out, "train-image", force=args.force, resume=args.resume)
        settings = {"image": cfg, "command": "train-image", "data": str(args.data), "resume": args.resume}
        atomic_write_json(out / "config.json", {k: to_jsonable(v) for k, v in settings.items()})

    # under torchrun: joins the process group (the timeout: accel.GROUP_TIMEOUT_S)
    state = PartialState(**process_kwargs(), timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    try:
        on_main(state, prepare)
        torch.set_num_threads(min(torch.get_num_threads(), 16))
        result = train_image_model(
            args.data, out, cfg, resume=args.resume, progress=not args.no_progress,
            generation=generation, generation_source=generation_source,
        )  # fmt: skip
    except BaseException:
        end_distributed(barrier=False)
        raise
    end_distributed()
    if not state.is_main_process:  # one summary, from the main process
        return 0
    s = result.seconds
    print(
        f"trained {result.global_step}/{result.total_steps} steps ({result.stopped}) in {s.get('total', 0) / 60:.1f} min "
        f"(vae {s.get('vae', 0):.0f} s, cache {s.get('cache', 0):.0f} s, unet {s.get('train', 0):.0f} s, "
        f"{result.images_per_second:.1f} img/s); final loss {sum(result.losses[-50:]) / max(1, len(result.losses[-50:])):.4f}",
        file=sys.stderr,
    )
    if result.heldout:
        print(
            f"held-out loss {result.heldout[-1]['loss']:.4f} at step {result.heldout[-1]['step']}",
            file=sys.stderr,
        )
    print(f"pipeline: {result.pipeline_dir}", file=sys.stderr)
    return 0
