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


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from phenogen.config import load_sections, save_resolved
    from phenogen.lm.config import DnaEvalConfig, SampleConfig
    from phenogen.lm.evaluate import evaluate_lm

    hf_logging.disable_progress_bar()
    sections = load_sections({"sample": SampleConfig, "dna_eval": DnaEvalConfig}, args.config, args.set)
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
