"""Benchmark the image model's training step overheads: EMA and optimizer update, before and after.

Side by side in one process, alternating, on the same simulated clade: ``train_image_model`` with

* **before** — diffusers' ``EMAModel`` updating its shadow weights in a Python loop over every
  parameter (``foreach=False``) and ``torch.optim.AdamW`` with its default multi-tensor path;
* **after** — ``EMAModel(foreach=True)`` (one multi-tensor update) and, on a GPU, the fused AdamW
  kernel. phenogen trains like this on a GPU; on the CPU it keeps the EMA loop (foreach measured 0.95×
  there), so both arms set the EMA explicitly and the bench compares the same two things everywhere.

On a GPU the small UNets of the ``cpu``/``gpu`` presets are bound by kernel launches at batch 32, so the
per-parameter work around the step matters. Images/s are the trainer's own (after its caches are built).

    .venv/bin/python bench/bench_train_step.py                      # CPU
    python bench/bench_train_step.py                                 # on a CUDA machine (used automatically)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--cases", default=None,
                        help="preset:batch, comma-separated (default: cpu:32,cpu:128,gpu:32 on a GPU, cpu:32 on the CPU)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import diffusers.training_utils as tu
    import torch

    from phenogen.cli import main as cli
    from phenogen.diffusion.config import ImageConfig
    from phenogen.diffusion.train import train_image_model

    torch.set_num_threads(args.threads)
    data = Path(tempfile.mkdtemp(prefix="bench_clade_")) / "clade"
    if cli(["simulate", "--out", str(data), "--set", "sim.n_living=12"]) != 0:
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_step_"))
    real_ema, real_adamw = tu.EMAModel, torch.optim.AdamW

    class UnfusedAdamW(real_adamw):
        def __init__(self, *a, **k):
            super().__init__(*a, **{**k, "fused": None})

    def arm(ema_foreach: bool, adamw):
        """A context in which ``train_image_model`` builds its EMA with ``foreach=ema_foreach`` and its
        optimizer with ``adamw`` (train.py looks both up when it runs)."""

        class EMA(real_ema):
            def __init__(self, *a, **k):
                super().__init__(*a, **{**k, "foreach": ema_foreach})

        @contextlib.contextmanager
        def ctx():
            tu.EMAModel, torch.optim.AdamW = EMA, adamw
            try:
                yield
            finally:
                tu.EMAModel, torch.optim.AdamW = real_ema, real_adamw

        return ctx

    before, after = arm(False, UnfusedAdamW), arm(True, real_adamw)

    runs: dict[str, list[float]] = {}

    def train(name: str, preset: str, batch: int, steps: int, ctx) -> None:
        cfg = ImageConfig(preset=preset, encoder="kmer", cache=True, max_steps=steps, vae_steps=0,
                          batch_size=batch, lr_warmup_steps=1, sample_steps=1, ema_decay=0.999)  # fmt: skip
        with ctx():
            r = train_image_model(data, tmp / f"{name}-{time.time_ns()}", cfg, progress=False)
        runs.setdefault(name, []).append(r.images_per_second)
        print(f"{name}: {r.images_per_second:.1f} img/s", file=sys.stderr)

    train("warm-up", "cpu", 32, 2, contextlib.nullcontext)  # CUDA/cuDNN initialisation, discarded
    if args.cases is None:
        args.cases = "cpu:32,cpu:128,gpu:32" if torch.cuda.is_available() else "cpu:32"
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    for _ in range(args.reps):
        for preset, batch in cases:
            train(f"{preset}-b{batch}-before", preset, batch, args.steps, before)
            train(f"{preset}-b{batch}-after", preset, batch, args.steps, after)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out = args.out or Path(f"bench/results_train_step_{device}.json")
    mean = {k: sum(v) / len(v) for k, v in runs.items()}
    payload = {
        "machine": {
            "torch": torch.__version__,
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        },  # fmt: skip
        "settings": vars(args) | {"out": str(args.out)},
        "runs_images_per_s": runs,
        "mean_images_per_s": mean,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print("| preset, batch | before img/s | after img/s | ratio |\n| --- | --- | --- | --- |")
    for preset, batch in cases:
        b, a = mean[f"{preset}-b{batch}-before"], mean[f"{preset}-b{batch}-after"]
        print(f"| {preset}, {batch} | {b:.1f} | {a:.1f} | {a / b:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
