"""``phenogen sample-dna --model DIR --n N --out FILE.fasta``: sample new barcodes.

Reads the ``[sample]`` section (top-p 0.6 by default, top-k, temperature schedule, seed); ``--n``
and ``--seed`` override it. Writes the FASTA (headers ``sample_00001 len=652 eos=1``) and the
resolved configuration as ``FILE.config.json`` beside it (both written atomically; ``--out`` is checked
before the model loads).

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
    """Write a :class:`~phenogen.lm.sample.SampleResult` as FASTA (atomically: a kill leaves no half file)."""
    import os
    from pathlib import Path

    from phenogen.dna.seqio import FastaRecord, write_fasta
    from phenogen.fsio import fsync_dir

    path = Path(path)
    records = [
        FastaRecord(f"{prefix}_{i:05d}", seq, f"{prefix}_{i:05d} len={len(seq)} eos={int(ended)}")
        for i, (seq, ended) in enumerate(zip(result.sequences, result.ended, strict=True), start=1)
    ]
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps .gz last: write_fasta compresses by suffix
    try:
        write_fasta(tmp, records)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from phenogen.config import load_sections, to_jsonable
    from phenogen.errors import ConfigError
    from phenogen.fsio import atomic_write_json, check_output_file
    from phenogen.lm.config import SampleConfig

    cfg = load_sections({"sample": SampleConfig}, args.config, args.set)["sample"]
    try:
        if args.n is not None:
            cfg = dataclasses.replace(cfg, n=args.n)
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(f"--n/--seed: {exc}") from None
    # the outputs first: a directory given as --out must not cost a model load and a sampling run
    out = check_output_file(Path(args.out))
    config_path = check_output_file(out.parent / f"{out.stem}.config.json", flag="--out (its settings file)")

    import torch
    from transformers.utils import logging as hf_logging

    from phenogen.lm.model import load_lm, resolve_model_dir
    from phenogen.lm.sample import sample

    hf_logging.disable_progress_bar()
    lm = load_lm(args.model, device="cuda" if torch.cuda.is_available() else None)
    result = sample(lm, cfg)
    write_samples(out, result)
    atomic_write_json(config_path, {"sample": to_jsonable(cfg), "model": str(resolve_model_dir(args.model))})
    print(
        f"sample-dna: wrote {len(result.sequences)} sequences to {out} "
        f"({result.n_truncated} reached max_tokens={result.max_tokens} without <eos>)"
    )
    return 0
