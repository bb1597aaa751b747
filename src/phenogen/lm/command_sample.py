"""``phenogen sample-dna --model DIR --n N --out FILE.fasta``: sample new barcodes.

Reads the ``[sample]`` section (top-p 0.6 by default, top-k, temperature schedule, seed); ``--n``
and ``--seed`` override it. Writes the FASTA (headers ``sample_00001 len=652 eos=1``) and the
resolved configuration as ``FILE.config.json`` beside it.

    phenogen sample-dna --model runs/lm --n 500 --out samples.fasta --set sample.schedule=rise_fall
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run", "write_samples"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="model directory or train-lm output dir"
    )
    parser.add_argument("--n", type=int, default=None, help="number of sequences (default: [sample] n)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output FASTA file")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: [sample] seed)")


def write_samples(path, result, prefix: str = "sample") -> None:
    """Write a :class:`~phenogen.lm.sample.SampleResult` as FASTA."""
    from phenogen.dna.seqio import FastaRecord, write_fasta

    records = [
        FastaRecord(f"{prefix}_{i:05d}", seq, f"{prefix}_{i:05d} len={len(seq)} eos={int(ended)}")
        for i, (seq, ended) in enumerate(zip(result.sequences, result.ended, strict=True), start=1)
    ]
    write_fasta(path, records)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from transformers.utils import logging as hf_logging

    from phenogen.config import load_sections, save_resolved
    from phenogen.errors import ConfigError
    from phenogen.lm.config import SampleConfig
    from phenogen.lm.model import load_lm, resolve_model_dir
    from phenogen.lm.sample import sample

    hf_logging.disable_progress_bar()
    cfg = load_sections({"sample": SampleConfig}, args.config, args.set)["sample"]
    try:
        if args.n is not None:
            cfg = dataclasses.replace(cfg, n=args.n)
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    lm = load_lm(args.model, device="cuda" if __import__("torch").cuda.is_available() else None)
    result = sample(lm, cfg)
    out = Path(args.out)
    write_samples(out, result)
    save_resolved(
        {"sample": cfg}, out.parent, name=f"{out.stem}.config.json", model=str(resolve_model_dir(args.model))
    )
    print(
        f"sample-dna: wrote {len(result.sequences)} sequences to {out} "
        f"({result.n_truncated} reached max_tokens={result.max_tokens} without <eos>)"
    )
    return 0
