"""Benchmark the image model: training images/s, sampling images/s per scheduler, caching, peak memory.

Per preset (each in its own subprocess, so peak memory is the preset's own):

* **train** — optimizer steps of the real loop (:func:`phenogen.diffusion.train.train_image_model`,
  ``kmer`` encoder) with the latent/feature caches on and off, in the same process one after the
  other, so the **caching ratio** is measured side by side; then the same for the ``gpt2`` encoder
  (a random tiny DNA LM) where caching also saves one LM forward per step;
* **prompt tuning** — where the preset has a shipped captioned prior (``cpu``): the demo's fine-tuning
  (``init = "builtin"``, caption head) with the UNet trained and frozen, side by side;
* **sample** — images/s of :class:`~phenogen.diffusion.pipeline.DNAToImagePipeline` for every
  scheduler at 50 steps with guidance 8 (one batched UNet call on [uncond, cond] per step);
* **peak memory** — the worker's peak RSS (``ru_maxrss``) on CPU; ``torch.cuda.max_memory_allocated``
  on a GPU.

The VAE is not trained here (``vae_steps = 0``): its cost is reported by the training run itself.

    .venv/bin/python bench/bench_diffusion.py                          # tiny + cpu presets, CPU
    .venv/bin/python bench/bench_diffusion.py --presets gpu --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCHEDULERS = ("ddim", "ddpm", "dpm++2m-karras", "euler-a")


def _machine(device: str) -> dict:
    import os

    import torch

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "load_average": os.getloadavg(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _peak_memory_mb(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _train(
    data: Path, out: Path, preset: str, encoder: str, cache: bool, steps: int, lm: str, batch: int, **extra
) -> dict:
    from phenogen.diffusion.config import ImageConfig
    from phenogen.diffusion.train import train_image_model

    cfg = ImageConfig(preset=preset, encoder=encoder, lm_model=lm, cache=cache, max_steps=steps, vae_steps=0,
                      batch_size=batch, lr_warmup_steps=1, sample_steps=1, ema_decay=0.999, **extra)  # fmt: skip
    result = train_image_model(data, out, cfg, progress=False)
    return {"images_per_s": result.images_per_second, "seconds": result.seconds["train"],
            "cache_seconds": result.seconds["cache"]}  # fmt: skip


def _sample(pipeline_dir: Path, n: int, steps: int, device: str) -> dict:
    import torch

    from phenogen.diffusion.pipeline import load_pipeline, make_scheduler

    pipe = load_pipeline(pipeline_dir, device=device)
    seqs = ["ACGT" * 160] * n
    out = {}
    for name in SCHEDULERS:
        pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
        pipe(seqs[:1], num_inference_steps=2, generator=torch.Generator().manual_seed(0))  # warm-up
        t0 = time.perf_counter()
        pipe(seqs, num_inference_steps=steps, guidance_scale=8.0, generator=torch.Generator().manual_seed(0))
        dt = time.perf_counter() - t0
        out[name] = {"images_per_s": n / dt, "seconds": dt}
    return out


def worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, save_lm

    tmp = Path(tempfile.mkdtemp(prefix="bench_diffusion_"))
    lm_dir = save_lm(build_model(KmerTokenizer(k=6), preset="tiny", seed=0), tmp / "lm")
    res: dict = {"preset": args.worker, "train": {}}
    # warm-up, discarded: the first training in a process pays for CUDA/cuDNN initialisation and kernel
    # selection (on a GPU that alone made the first measured setting look 3x slower than the second)
    _train(args.data, tmp / "warmup", args.worker, "kmer", True, 2, str(lm_dir), args.batch)
    for encoder in ("kmer", "gpt2"):
        for cache in (True, False):
            key = f"{encoder}_{'cached' if cache else 'uncached'}"
            res["train"][key] = _train(args.data, tmp / key, args.worker, encoder, cache, args.train_steps,
                                       str(lm_dir), args.batch)  # fmt: skip
        on, off = res["train"][f"{encoder}_cached"], res["train"][f"{encoder}_uncached"]
        res["train"][f"{encoder}_caching_speedup"] = on["images_per_s"] / off["images_per_s"]
    from phenogen.diffusion.prior import builtin_prior_dir

    if (builtin_prior_dir(args.worker) / "caption_encoder").is_dir():  # the demo's fine-tuning, both ways
        for train_unet in (True, False):
            key = f"caption_{'unet_tuned' if train_unet else 'unet_frozen'}"
            res["train"][key] = _train(args.data, tmp / key, args.worker, "kmer", True, args.train_steps, "",
                                       args.batch, init="builtin", cond_head="caption",
                                       train_unet=train_unet)  # fmt: skip
        tuned, frozen = res["train"]["caption_unet_tuned"], res["train"]["caption_unet_frozen"]
        res["train"]["prompt_tuning_speedup"] = frozen["images_per_s"] / tuned["images_per_s"]
    res["peak_memory_train_mb"] = _peak_memory_mb(args.device)
    res["sample"] = _sample(tmp / "kmer_cached" / "pipeline", args.sample_images, args.steps, args.device)
    res["peak_memory_mb"] = _peak_memory_mb(args.device)
    return res


def _markdown(results: list[dict]) -> str:
    lines = [
        "| preset | encoder | train img/s cached | uncached | caching ratio | peak memory MB (RSS; GPU: allocated) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for enc in ("kmer", "gpt2"):
            t = r["train"]
            lines.append(f"| {r['preset']} | {enc} | {t[enc + '_cached']['images_per_s']:.1f} | "
                         f"{t[enc + '_uncached']['images_per_s']:.1f} | {t[enc + '_caching_speedup']:.2f}x | "
                         f"{r['peak_memory_train_mb']:.0f} |")  # fmt: skip
    tuned = [r for r in results if "prompt_tuning_speedup" in r["train"]]
    if tuned:
        lines += ["", "| preset (prior, caption head) | train img/s, UNet fine-tuned | UNet frozen | ratio |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for r in tuned:
            t = r["train"]
            lines.append(f"| {r['preset']} | {t['caption_unet_tuned']['images_per_s']:.1f} | "
                         f"{t['caption_unet_frozen']['images_per_s']:.1f} | {t['prompt_tuning_speedup']:.2f}x |")  # fmt: skip
    lines += ["", "| preset | " + " | ".join(SCHEDULERS) + " |", "| --- |" + " --- |" * len(SCHEDULERS)]
    for r in results:
        lines.append(
            f"| {r['preset']} (img/s, 50 steps, CFG 8) | "
            + " | ".join(f"{r['sample'][s]['images_per_s']:.2f}" for s in SCHEDULERS)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset directory; default: simulate a 12-species clade")
    parser.add_argument("--presets", default="tiny,cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sample-images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results_diffusion_cpu.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.data is None:
        from phenogen.cli import main as cli

        args.data = Path(tempfile.mkdtemp(prefix="bench_clade_")) / "clade"
        if cli(["simulate", "--out", str(args.data), "--set", "sim.n_living=12"]) != 0:
            return 1
    results = []
    for preset in args.presets.split(","):
        cmd = [sys.executable, __file__, "--worker", preset, "--data", str(args.data), "--device", args.device,
               "--train-steps", str(args.train_steps), "--batch", str(args.batch), "--sample-images",
               str(args.sample_images), "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall_seconds"] = time.perf_counter() - t0
        results.append(res)
        print(f"{preset}: done in {res['wall_seconds']:.0f} s", file=sys.stderr)
    payload = {
        "machine": _machine(args.device),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
