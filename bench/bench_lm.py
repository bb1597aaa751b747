"""Benchmark the DNA language model: training tokens/s, sampling sequences/s, KV cache vs the thesis' loop.

Everything is measured in one run on one machine, so the ratios are meaningful even when the
absolute numbers are not (a shared CPU makes them pessimistic):

* **train** — optimizer steps of the real loss (:func:`phenogen.lm.likelihood.token_nll`) on
  barcode-length batches (default 652 bp → 113 tokens at k = 6), tokens/s after a warm-up step;
* **sample, KV cache, batched** — :func:`phenogen.lm.sample.sample` as ``sample-dna`` runs it;
* **sample, naive, batch 1** — the thesis' loop: one sequence at a time, the whole sequence
  re-fed to the model at every step (``mode="naive"``, ``batch_size=1``);
* the two mixed cases (KV batch 1, naive batched) split the gain into caching and batching.

Every sampler decodes the same number of tokens per sequence (``--tokens``; ``<eos>`` cannot end a
row early because rows that finish keep being computed in a batch, and batch-1 rows are forced to
the same length by using an untrained model, whose ``<eos>`` probability is ~1/4106 per step —
``tokens_per_seq`` in the output reports what was actually decoded).

    .venv/bin/python bench/bench_lm.py                       # tiny preset, CPU
    .venv/bin/python bench/bench_lm.py --preset small --device cuda --n-kv 256
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path


def _machine(device: str) -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench_train(lm, steps: int, batch: int, bases: int, device: str, precision: str) -> dict:
    import torch

    from phenogen.lm.data import collate
    from phenogen.lm.likelihood import token_nll

    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGT") for _ in range(bases)) for _ in range(batch)]
    ids, mask = collate([lm.tokenizer.encode_dna(s) for s in seqs], lm.tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    model = lm.model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = token_nll(model, ids, mask).sum() / mask[:, 1:].sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    tokens = int(mask.sum()) * steps
    return {"steps": steps, "batch": batch, "tokens_per_step": int(mask.sum()), "seconds": seconds,
            "tokens_per_s": tokens / seconds}  # fmt: skip


def bench_sample(lm, n: int, batch: int, mode: str, tokens: int, device: str) -> dict:
    import torch

    from phenogen.lm.config import SampleConfig
    from phenogen.lm.sample import sample

    cfg = SampleConfig(n=n, batch_size=batch, mode=mode, max_tokens=tokens, seed=0, top_p=0.6)
    lm.model.to(device).eval()
    sample(lm, SampleConfig(n=min(n, batch), batch_size=batch, mode=mode, max_tokens=4, seed=1))  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    res = sample(lm, cfg)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {"mode": mode, "batch": batch, "n": n, "seconds": seconds, "seqs_per_s": n / seconds,
            "tokens_per_seq": sum(res.n_tokens) / n, "sequences": res.sequences}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small"))
    parser.add_argument("--model", default=None, help="benchmark a trained model directory instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"), help="training autocast")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--bases", type=int, default=652, help="barcode length for the training batches")
    parser.add_argument("--tokens", type=int, default=110, help="tokens decoded per sampled sequence")
    parser.add_argument("--n-kv", type=int, default=128, help="sequences for the batched samplers")
    parser.add_argument("--kv-batch", type=int, default=64)
    parser.add_argument("--n-naive", type=int, default=4, help="sequences for the batch-1 samplers")
    parser.add_argument("--out", default="bench/results/bench_lm.json")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, load_lm

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    def fresh():
        if args.model:
            return load_lm(args.model)
        lm = build_model(KmerTokenizer(k=6), args.preset, seed=0)
        lm.meta["max_train_tokens"] = args.tokens
        return lm

    results = {"machine": _machine(args.device), "preset": args.model or args.preset, "args": vars(args)}
    results["train"] = bench_train(
        fresh(), args.train_steps, args.train_batch, args.bases, args.device, args.precision
    )
    lm = fresh()
    runs = [
        ("KV cache, batched", args.n_kv, args.kv_batch, "kv"),
        ("naive, batched", max(args.n_kv // 4, 1), args.kv_batch, "naive"),
        ("KV cache, batch 1", args.n_naive, 1, "kv"),
        ("naive, batch 1 (thesis loop)", args.n_naive, 1, "naive"),
    ]
    results["sample"] = {}
    for name, n, batch, mode in runs:
        results["sample"][name] = bench_sample(lm, n, batch, mode, args.tokens, args.device)
    # identical samples: the first sequences of the KV and naive batch-1 runs share seed and batch size
    same = (
        results["sample"]["KV cache, batch 1"]["sequences"]
        == results["sample"]["naive, batch 1 (thesis loop)"]["sequences"]
    )
    kv, thesis = results["sample"]["KV cache, batched"], results["sample"]["naive, batch 1 (thesis loop)"]
    results["speedup_kv_batched_vs_thesis_loop"] = kv["seqs_per_s"] / thesis["seqs_per_s"]
    results["kv_and_naive_batch1_identical"] = same
    for r in results["sample"].values():
        r.pop("sequences")

    m = results["machine"]
    print(
        f"## DNA language model benchmark ({results['preset']}, {m['device']}, {m['torch_threads']} threads)\n"
    )
    print("| what | setting | throughput |")
    print("| --- | --- | --- |")
    t = results["train"]
    print(f"| training | batch {t['batch']} x {t['tokens_per_step'] // t['batch']} tokens | "
          f"{t['tokens_per_s']:,.0f} tokens/s |")  # fmt: skip
    for name, r in results["sample"].items():
        print(
            f"| sampling: {name} | {r['n']} seqs x {r['tokens_per_seq']:.0f} tokens | {r['seqs_per_s']:.2f} seqs/s |"
        )
    print(f"\nKV-cached batched sampler vs the thesis' loop: **{results['speedup_kv_batched_vs_thesis_loop']:.1f}x** "
          f"(KV and naive batch-1 samples identical: {same})")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
