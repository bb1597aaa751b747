"""``phenogen train-lm --data DIR|FASTA --out DIR [--resume]``: train the GPT-2 DNA language model.

Reads the ``[lm]`` section (``--config``, ``--set lm.KEY=VALUE``), trains with
:func:`phenogen.lm.train.train_lm` and prints where the model, checkpoints and loss curves went.

    phenogen train-lm --data runs/usnm --out runs/lm --set lm.epochs=20 --set lm.max_minutes=15
    phenogen train-lm --data runs/usnm --out runs/lm --resume      # continue a stopped or killed run
    phenogen train-lm --data runs/usnm --out runs/lm --force       # replace an earlier phenogen output

Several processes (``lm.batch_size`` stays the micro-batch of all of them together; only the main
process writes and reports)::

    torchrun --nproc_per_node 2 -m phenogen.cli train-lm --data runs/usnm --out runs/lm
    accelerate launch --multi_gpu --num_processes 2 -m phenogen.cli train-lm --data runs/usnm --out runs/lm

(``--multi_gpu`` also on a CPU-only machine, where the processes use gloo: ``accelerate launch --cpu``
starts a single process unless mpirun is set up.)
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR|FASTA", help="dataset directory or FASTA file")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory of the run")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its saved state"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a directory phenogen did not write)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging

    from transformers.utils import logging as hf_logging

    from phenogen.accel import end_distributed, is_main_process
    from phenogen.config import load_sections
    from phenogen.lm.config import LMConfig
    from phenogen.lm.train import train_lm

    hf_logging.disable_progress_bar()
    if not logging.getLogger().handlers:  # per-epoch lines on stderr (quiet when embedded)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("phenogen.lm.train").setLevel(logging.INFO)
    cfg = load_sections({"lm": LMConfig}, args.config, args.set)["lm"]
    try:
        result = train_lm(
            args.data, args.out, cfg, resume=args.resume, force=args.force, progress=not args.no_progress
        )
    except BaseException:
        end_distributed(barrier=False)
        raise
    end_distributed()
    if not is_main_process():  # under torchrun / accelerate launch the main process reports
        return 0
    last = result.history["epochs"][-1] if result.history["epochs"] else None
    status = "finished" if result.finished else f"stopped ({result.stop_reason}); continue with --resume"
    print(f"train-lm: {status} after {result.epochs_done} epoch(s), {result.global_step} steps")
    if not result.finished and result.stop_reason.startswith("max_minutes"):
        print(f"train-lm: WARNING: the safety cap lm.{result.stop_reason} stopped training after "
              f"{result.epochs_done} of {cfg.epochs} epochs; the model is undertrained and its numbers are not "
              "those of a full run (raise lm.max_minutes, or --resume to finish)", file=sys.stderr, flush=True)  # fmt: skip
    if last:
        print(
            f"  held-out: {last['heldout_loss']:.4f} nats/token, {last['heldout_bits_per_base']:.4f} bits/base "
            f"(epoch {last['epoch']})"
        )
    print(f"  model: {result.out_dir / 'model'}   curves: {result.out_dir / 'loss_curve.png'}")
    return 0
