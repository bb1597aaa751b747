"""``phenogen evaluate-dna --model DIR --data DIR --out DIR [--samples FILE] [--select-checkpoints]``.

Held-out bits per base of the model next to order-k Markov chains fitted on the same training
split, and the statistics of sampled barcodes (novelty, duplicates, nearest identity against the
natural inter-species range, length, GC, internal stop codons). With ``--select-checkpoints`` and
a ``train-lm`` output directory as ``--model``, every saved epoch is scored and the selected one is
evaluated (see :mod:`phenogen.lm.select`). Sections: ``[sample]`` and ``[dna_eval]``.

    phenogen evaluate-dna --model runs/lm --data runs/usnm --out runs/lm-eval --select-checkpoints
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="model directory or train-lm output dir"
    )
    parser.add_argument(
        "--data", required=True, metavar="DIR|FASTA", help="the dataset the model was trained on"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where metrics.json and plots go")
    parser.add_argument(
        "--samples", default=None, metavar="FILE", help="score these sampled sequences (FASTA)"
    )
    parser.add_argument(
        "--select-checkpoints",
        action="store_true",
        help="pick the best saved epoch first (needs a train-lm dir)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )


def check_inputs(args: argparse.Namespace) -> None:
    """Every input of ``evaluate-dna`` checked in seconds, before any model is loaded or run.

    The model directory (and with ``--select-checkpoints`` every saved epoch) is checked file by file;
    ``--data`` and ``--samples`` are read and each barcode validated, naming file and record.
    """
    from pathlib import Path

    from phenogen.dna.seqio import read_fasta
    from phenogen.dna.tokenizer import check_sequence
    from phenogen.errors import InputError
    from phenogen.fsio import read_json
    from phenogen.lm.data import load_sequences
    from phenogen.lm.model import META_FILE, check_model_dir

    model_dir = check_model_dir(args.model)
    if args.select_checkpoints:
        from phenogen.lm.select import list_checkpoints

        for _, checkpoint in list_checkpoints(args.model):
            check_model_dir(checkpoint)
    meta = read_json(model_dir / META_FILE, "model file") if (model_dir / META_FILE).is_file() else {}
    split = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    data = Path(args.data)
    if data.is_dir() and (data / "dataset.json").is_file():
        read_json(data / "dataset.json", "dataset description")
    splits = load_sequences(data, split.get("heldout_fraction", 0.1), split.get("seed", 0))
    for rid, seq in [*splits.train, *splits.heldout]:
        try:
            check_sequence(seq, rid)
        except InputError as exc:
            raise type(exc)(f"--data {data}: {exc}") from None
    if args.samples is not None:
        read_fasta(args.samples, policy="mask", allow_gaps=True)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, save_resolved
    from phenogen.fsio import check_output_dir, prepare_output_dir
    from phenogen.lm.config import DnaEvalConfig, SampleConfig
    from phenogen.lm.evaluate import evaluate_lm

    hf_logging.disable_progress_bar()
    sections = load_sections({"sample": SampleConfig, "dna_eval": DnaEvalConfig}, args.config, args.set)
    check_output_dir(args.out, force=args.force)
    check_inputs_outside(args.out, args.force, model=args.model, data=args.data, samples=args.samples)
    check_inputs(args)
    prepare_output_dir(args.out, "evaluate-dna", force=args.force)
    save_resolved(sections, args.out, model=args.model, data=args.data, samples=args.samples)
    report = evaluate_lm(
        args.model,
        args.data,
        args.out,
        sections["sample"],
        sections["dna_eval"],
        samples_fasta=args.samples,
        select_checkpoints=args.select_checkpoints,
        progress=not args.no_progress,
    )
    lik, smp = report["likelihood"], report["samples"]
    k = lik["markov_order"]
    print(f"evaluate-dna: model {report['model']}")
    if "selection" in report:
        sel = report["selection"]
        print(f"  selected epoch {sel['selected_epoch']} (criteria met: {sel['met_criteria']})")
    print(
        f"  held-out bits/base: LM {lik['lm_heldout']['bits_per_base']:.4f}, "
        f"Markov-{k} {lik['markov_heldout_bits_per_base'][str(k)]:.4f}, "
        f"best Markov (order {lik['markov_best_order']}) "
        f"{lik['markov_heldout_bits_per_base'][str(lik['markov_best_order'])]:.4f}"
    )
    ni, nr = smp["nearest_identity"], smp["natural_range"]
    print(
        f"  samples: novelty {smp['novelty']:.3f}, duplicates {smp['n_duplicates']}, stop-free "
        f"{smp['stop_free_share']:.3f} (train {smp['train_stop_free_share']:.3f}), nearest identity median "
        f"{ni.get('median', float('nan')):.3f} (natural range {nr[0]:.3f}-{nr[1]:.3f})"
    )
    print(f"  wrote {args.out}/metrics.json")
    return 0
