"""``phenogen train-image --data DIR --out DIR [--resume]``: train the DNA-conditioned diffusion model.

Reads the ``[image]`` section (``--config`` / ``--set image.key=value``), writes the resolved settings
to ``OUT/config.json`` and runs :func:`phenogen.diffusion.train.train_image_model`. The trained
pipeline lands in ``OUT/pipeline`` (load it with ``phenogen generate --model OUT/pipeline``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from phenogen.errors import InputError

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
    parser.add_argument("--force", action="store_true", help="delete an existing run directory first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from phenogen.config import load_sections, save_resolved
    from phenogen.diffusion.config import ImageConfig
    from phenogen.diffusion.train import check_resumable, train_image_model

    cfg: ImageConfig = load_sections({"image": ImageConfig}, args.config, args.set)["image"]
    out: Path = args.out
    if args.resume and args.force:
        raise InputError("--resume and --force contradict each other; pick one")
    if out.exists() and any(out.iterdir()) and not args.resume:
        if not args.force:
            raise InputError(
                f"{out} exists and is not empty; pass --resume to continue it or --force to replace it"
            )
        shutil.rmtree(out)
    if args.resume:
        check_resumable(out, cfg)
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    save_resolved({"image": cfg}, out, command="train-image", data=str(args.data), resume=args.resume)
    result = train_image_model(args.data, out, cfg, resume=args.resume, progress=not args.no_progress)
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
