"""``phenogen pretrain-image --out DIR``: pretrain the bird prior that ``train-image`` fine-tunes.

Reads the ``[prior]`` section (``--config`` / ``--set prior.key=value``), writes the resolved settings
to ``OUT/config.json`` and runs :func:`phenogen.diffusion.prior.pretrain_prior`. Use the result with
``phenogen train-image ... --set image.init=OUT``; the package's ``builtin`` prior was made with
``phenogen pretrain-image --out src/phenogen/assets/bird_prior_cpu`` and the settings in its
``prior.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from phenogen.errors import ConfigError, InputError

__all__ = ["add_arguments", "run", "check_prior_fits"]


def check_prior_fits(init: str, preset: str, resolution: int | None, flag: str = "image.init") -> None:
    """Refuse an ``init`` prior whose UNet cannot be loaded by a run of ``preset`` (at ``resolution``; None =
    the preset's) *before* ``--out`` is touched: otherwise ``--force`` clears the earlier output and the
    mismatch surfaces only when the prior's UNet is loaded, after the VAE stage. Reads two JSON files."""
    from phenogen.diffusion.components import get_preset
    from phenogen.diffusion.prior import resolve_init
    from phenogen.errors import CheckpointError
    from phenogen.fsio import read_json

    try:
        prior = resolve_init(init, preset)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("image.init=", f"{flag}=", 1)) from None
    if prior is None:
        return
    unet = read_json(prior / "unet" / "config.json", "prior UNet config", error=CheckpointError)
    vae = read_json(prior / "vae" / "config.json", "prior VAE config", error=CheckpointError)
    p = get_preset(preset)
    want = {"cross_attention_dim": p.cross_attention_dim}
    blocks = vae.get("block_out_channels")
    if isinstance(blocks, list) and blocks:  # the run encodes with the prior's VAE: its factor sets the side
        want["sample_size"] = (resolution or p.resolution) // 2 ** (len(blocks) - 1)
    wrong = {k: (unet.get(k), v) for k, v in want.items() if unet.get(k) != v}
    if wrong:
        shown = ", ".join(f"{k} {got!r} (this run needs {need!r})" for k, (got, need) in wrong.items())
        raise CheckpointError(
            f"{flag}={init!r}: the prior's UNet has {shown}; it was pretrained with another preset or "
            f"resolution than preset {preset!r} — use a prior of the same preset and resolution"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (vae/, unet/, prior.json)")
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier pretrain-image output (phenogen's only)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Check the settings, ``--out`` and ``prior.init`` first; only then prepare ``--out`` and train.

    ``--force`` only ever clears a directory carrying phenogen's marker, and never because of an input
    that turns out to be bad. One process only: the loop is plain PyTorch, so under ``torchrun`` every
    process would train the same prior and race on ``--out``.
    """
    from phenogen.config import load_sections, to_jsonable
    from phenogen.diffusion.components import get_preset
    from phenogen.diffusion.prior import PriorConfig, pretrain_prior
    from phenogen.diffusion.train import check_not_inside
    from phenogen.fsio import atomic_write_json, check_output_dir, prepare_output_dir

    cfg: PriorConfig = load_sections({"prior": PriorConfig}, args.config, args.set)["prior"]
    out: Path = args.out
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("pretrain-image runs in one process; start it without torchrun / accelerate launch")
    check_output_dir(out, force=args.force)
    try:  # the messages of these helpers speak of [image]; this command's section is [prior]
        get_preset(cfg.preset)
    except ConfigError as exc:
        raise ConfigError(f"prior.preset={cfg.preset!r}: {exc}") from None
    if args.force:
        check_not_inside(out, {"prior.init": cfg.init})
    check_prior_fits(cfg.init, cfg.preset, None, flag="prior.init")
    prepare_output_dir(out, "pretrain-image", force=args.force)
    atomic_write_json(out / "config.json", {"prior": to_jsonable(cfg), "command": "pretrain-image"})
    record = pretrain_prior(out, cfg, progress=not args.no_progress)
    s = record["seconds"]
    unet = f"UNet {record['unet_steps']} steps"
    if record["unet_loss_last100"] is not None:
        unet += f" (loss {record['unet_loss_last100']:.4f})"
    cd = record.get("caption_decoder")
    if cd:
        unet += (f", caption decoder {cd['steps']} steps (recon MSE {cd['recon_mse_fresh']:.4f}, the VAE's decoder "
                 f"{cd['recon_mse_fresh_plain_decoder']:.4f})")  # fmt: skip
    print(
        f"prior in {out}: VAE {record['vae_steps']} steps (recon MSE {record['vae_recon_mse_fresh']:.4f}), "
        f"{unet}; {sum(s.values()) / 60:.1f} min; samples: {out / 'samples.png'}",
        file=sys.stderr,
    )
    return 0
