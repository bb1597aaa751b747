"""Score a DNA language model honestly: held-out bits per base against Markov chains, sample statistics.

:func:`evaluate_lm` writes to ``OUT``::

    metrics.json            everything below, plus the resolved configuration
    bits_per_base.png       held-out bits/base: the LM next to Markov chains of several orders
    sample_report.png       nearest identity / length / GC of LM samples, Markov samples, held-out species
    samples.fasta           the LM samples scored (unless --samples gave them)
    selection.json, identity_by_epoch.png   with --select-checkpoints (see phenogen.lm.select)

Held-out bits per base use the same sequences for every model (those without ambiguous bases),
the Markov chains are fitted on the same training split, and the comparison is reported for the
default order (5) and for every order in ``markov_orders`` — including the best one — so the
baseline is not a strawman. Sample statistics come from :func:`phenogen.dna.metrics.summarize`;
Markov-chain samples of the same number are scored alongside as a floor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.config import to_jsonable
from phenogen.dna import metrics as M
from phenogen.dna.markov import MarkovChain
from phenogen.dna.tokenizer import check_sequence
from phenogen.lm.config import DnaEvalConfig, SampleConfig
from phenogen.lm.data import load_sequences, tokenize_sequences
from phenogen.lm.likelihood import heldout_likelihood
from phenogen.lm.model import load_lm, resolve_model_dir
from phenogen.lm.select import select_checkpoint

__all__ = ["evaluate_lm"]

log = logging.getLogger(__name__)


def _plot_bits(path: Path, lm_bpb: float, markov: dict[int, float], order: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orders = sorted(markov)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    colors = ["C1" if o == order else "0.7" for o in orders]
    ax.bar([f"MC{o}" for o in orders], [markov[o] for o in orders], color=colors)
    ax.axhline(lm_bpb, color="C0", lw=2, label=f"language model {lm_bpb:.3f}")
    ax.set(ylabel="held-out bits / base", title="held-out bits per base (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_lm(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    sample_cfg: SampleConfig | None = None,
    eval_cfg: DnaEvalConfig | None = None,
    samples_fasta: str | Path | None = None,
    select_checkpoints: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a model (or a ``train-lm`` run) on the train/held-out split of ``data``; returns metrics.json."""
    from phenogen.lm.command_sample import write_samples
    from phenogen.lm.sample import sample

    sample_cfg = sample_cfg or SampleConfig()
    eval_cfg = eval_cfg or DnaEvalConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(model)
    model_dir = resolve_model_dir(model)

    # 1. data: the split the model was trained on
    meta = load_lm(model_dir).meta
    split = meta.get("split", {})
    splits = load_sequences(data, split.get("heldout_fraction", 0.1), split.get("seed", 0))
    train = [check_sequence(s, rid) for rid, s in splits.train]
    held = [check_sequence(s, rid) for rid, s in splits.heldout]
    species = [splits.species.get(rid, rid) for rid, _ in splits.train] if splits.species else None
    report: dict[str, Any] = {"data": splits.summary(), "model": str(model_dir)}

    # 2. checkpoint selection
    if select_checkpoints:
        selection = select_checkpoint(model, train, species, sample_cfg, eval_cfg, out, device, progress)
        model_dir = Path(selection["selected_checkpoint"])
        report["selection"] = {
            k: selection[k] for k in ("selected_epoch", "selected_checkpoint", "met_criteria")
        }
        report["model"] = str(model_dir)
    lm = load_lm(model_dir, device=device)

    # 3. held-out bits per base: LM vs Markov chains on the same sequences
    held_pairs = list(zip([rid for rid, _ in splits.heldout], held, strict=True))
    held_ids = tokenize_sequences(lm.tokenizer, held_pairs, lm.n_positions, source="heldout split")
    lm_held = heldout_likelihood(lm.model, held_ids, held, lm.tokenizer.pad_token_id)
    rng = np.random.default_rng(eval_cfg.seed)
    sub = sorted(rng.choice(len(train), size=min(500, len(train)), replace=False).tolist())
    train_pairs = [(splits.train[i][0], train[i]) for i in sub]
    train_ids = tokenize_sequences(lm.tokenizer, train_pairs, lm.n_positions, source="train split")
    lm_train = heldout_likelihood(lm.model, train_ids, [s for _, s in train_pairs], lm.tokenizer.pad_token_id)
    clean_held = [s for s in held if "N" not in s]
    orders = sorted(set(eval_cfg.markov_orders) | {eval_cfg.markov_order})
    chains = {o: MarkovChain(o, eval_cfg.markov_alpha).fit(train) for o in orders}
    markov_bpb = {o: chains[o].bits_per_base(clean_held) for o in orders}
    best_order = min(markov_bpb, key=markov_bpb.get) if markov_bpb else None
    report["likelihood"] = {
        "lm_heldout": lm_held.to_dict(),
        "lm_train_subset": lm_train.to_dict(),
        "markov_order": eval_cfg.markov_order,
        "markov_alpha": eval_cfg.markov_alpha,
        "markov_heldout_bits_per_base": {str(o): v for o, v in markov_bpb.items()},
        "markov_best_order": best_order,
        "lm_beats_markov": bool(lm_held.bits_per_base < markov_bpb[eval_cfg.markov_order]),
        "lm_beats_best_markov": bool(
            best_order is not None and lm_held.bits_per_base < markov_bpb[best_order]
        ),
    }
    if held:
        _plot_bits(out / "bits_per_base.png", lm_held.bits_per_base, markov_bpb, eval_cfg.markov_order)

    # 4. samples: LM (given or drawn) and Markov-chain samples of the same size
    if samples_fasta is not None:
        from phenogen.dna.seqio import read_fasta

        samples = [r.sequence for r in read_fasta(samples_fasta, policy="mask").records]
        report["samples_source"] = str(samples_fasta)
    else:
        cfg = dataclasses.replace(sample_cfg, n=eval_cfg.n_samples)
        drawn = sample(lm, cfg)
        samples = drawn.sequences
        write_samples(out / "samples.fasta", drawn)
        report["samples_source"] = "drawn"
        report["samples_truncated"] = drawn.n_truncated
        report["sample_config"] = to_jsonable(cfg)
    summary, arrays = M.summarize(
        samples,
        train,
        species,
        held,
        eval_cfg.candidates,
        eval_cfg.natural_max,
        eval_cfg.range_quantiles,
        eval_cfg.seed,
    )
    report["samples"] = summary
    mc_samples = chains[eval_cfg.markov_order].sample(len(samples), seed=eval_cfg.seed)
    mc_near = M.nearest_identity(mc_samples, train, eval_cfg.candidates).identity
    report["markov_samples"] = {
        "order": eval_cfg.markov_order,
        "novelty": M.novelty(mc_samples, train),
        "stop_free_share": M.stop_free_share(mc_samples, summary["frame"]),
        "nearest_identity_median": float(np.median(mc_near)),
    }
    report["criteria"] = {
        "lm_beats_markov": report["likelihood"]["lm_beats_markov"],
        "stop_free_share>=0.95": summary["stop_free_share"] >= 0.95,
        "novelty>=0.99": summary["novelty"] >= 0.99,
        "median_identity_in_natural_range": summary["median_in_natural_range"],
    }
    from phenogen.lm.plots import plot_sample_report

    identity = {"LM samples": arrays["sample_identity"], f"Markov-{eval_cfg.markov_order} samples": mc_near}
    identity["natural (inter-species)"] = arrays["natural_identity"]
    if "heldout_identity" in arrays:
        identity["held-out species"] = arrays["heldout_identity"]
    plot_sample_report(
        out / "sample_report.png",
        identity,
        {"LM samples": arrays["sample_length"], "train": arrays["train_length"]},
        {"LM samples": arrays["sample_gc"], "train": arrays["train_gc"]},
        tuple(summary["natural_range"]),
    )
    report["config"] = {"sample": to_jsonable(sample_cfg), "dna_eval": to_jsonable(eval_cfg)}
    (out / "metrics.json").write_text(json.dumps(to_jsonable(report), indent=2) + "\n", encoding="utf-8")
    return report
