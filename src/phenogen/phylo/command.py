"""``phenogen ancestors``: alignment → tree → ancestral sequences → chosen nodes (→ portraits, → truth).

Input is either ``--fasta FILE`` (any barcodes; aligned with MAFFT as ``--align`` says) or
``--dataset DIR`` (a phenogen dataset: one barcode per living species from the train + heldout
splits, optionally one per extinct species as a fossil with DNA; when the dataset knows its true
tree and ancestors, the reconstruction is scored against them).

Outputs in ``--out DIR``::

    config.json            resolved [ancestors] section + command line
    input.fasta            (dataset mode) the barcodes used, named by species
    alignment.fasta        the alignment reconstructed on (MAFFT's, or the input when aligned)
    tree.nwk               the rooted tree with every node named (tips: FASTA ids)
    tree.annotated.nwk     same for people: tips 'Genus species|id', internal nodes
                           [&posterior=…,support=…,taxon="…"] (support = branch support)
    tree.png               (up to 300 tips) the tree, tips by species, support at nodes
    tips.csv               per tip: id, species, accession, gi number, where the species came from
    ancestors.fasta        reconstructed internal-node sequences (alignment coordinates, may hold -)
    ancestors.state.tsv.gz per node and site: state and posteriors p_A … p_- (like IQ-TREE .state)
    nodes.csv / nodes.json per internal node: parent, tips, species, taxon, depth, support,
                           low_support, posterior summary, stop codons (with --bootstrap:
                           clade_frequency, split_frequency, boot_* spread; phylo/bootstrap.py)
    selected.json          nodes chosen with --node / --mrca / --all-internal
    bootstrap.json         (--bootstrap N) clade frequencies and spread of the reconstructions over
                           N bootstrap trees; per chosen node its distinct replicate sequences
    bootstrap_trees.nwk    (--bootstrap N) the N rooted replicate trees, one per line
    ancestors.bootstrap.fasta (--bootstrap N) per-site majority of each node's replicate reconstructions
    summary.json           counts (masked, dropped, missing branch lengths), model, timings
    metrics.json           (truth mode) {"ancestors": identity vs truth per node, by depth, summary}
    identity_vs_depth.png  (truth mode)
    portraits/             (--model) images of the chosen nodes + tree_portraits.png
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from phenogen.errors import ConfigError, DataError, InputError
from phenogen.fsio import atomic_write_text

__all__ = ["add_arguments", "run", "reconstruct", "dataset_input", "training_species"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--fasta", metavar="FILE", help="barcodes to reconstruct ancestors from (aligned or not)"
    )
    src.add_argument(
        "--dataset", metavar="DIR", help="a phenogen dataset; scored against its true ancestors if known"
    )
    parser.add_argument(
        "--tree", metavar="FILE.nwk", help="use this tree (tip names = FASTA ids) instead of inferring one"
    )
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="the FASTA is aligned: error if lengths differ (= --align never)",
    )
    parser.add_argument(
        "--align",
        choices=("auto", "always", "never", "codon"),
        help="run MAFFT: auto (default: unless equal lengths, open reading frames and no shifted stretch), "
        "always, never, codon (translate with ancestors.genetic_code, align proteins, back-translate)",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="N",
        type=int,
        help="also reconstruct on N bootstrap trees: clade frequency and spread per node (ancestors.bootstrap)",
    )
    parser.add_argument(
        "--species-table",
        metavar="TSV",
        help="species per id/accession (TSV/CSV with an id and a species column, or a dataset manifest)",
    )
    parser.add_argument(
        "--strict-tree",
        action="store_true",
        help="refuse a --tree with negative branch lengths (default: set to 0, counted)",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory")
    parser.add_argument(
        "--tree-method", choices=("fasttree", "iqtree"), help="tree inference (default fasttree)"
    )
    parser.add_argument(
        "--rooting", choices=("midpoint", "outgroup", "none"), help="rooting (default midpoint)"
    )
    parser.add_argument(
        "--outgroup", metavar="TIP", nargs="+", help="outgroup tip(s); implies --rooting outgroup"
    )
    parser.add_argument(
        "--node",
        metavar="NAME",
        action="append",
        default=[],
        help="choose this node: anc001 …, a tip id/accession, a species or genus (repeatable)",
    )
    parser.add_argument(
        "--mrca",
        metavar="TAXON",
        nargs="+",
        action="append",
        default=[],
        help="choose the MRCA of these tips: ids, accessions, gi numbers, species or genera (repeatable)",
    )
    parser.add_argument("--all-internal", action="store_true", help="choose every internal node")
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="saved image pipeline (train-image's OUT/pipeline): paint portraits of the chosen nodes",
    )
    parser.add_argument(
        "--lm-samples",
        metavar="FASTA",
        help="truth mode: also score DNA language-model samples (nearest per ancestor)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(getattr(args, "set", []) or [])
    if args.tree_method:
        out.append(f"ancestors.tree_method={args.tree_method}")
    if args.aligned or args.align:
        out.append(f"ancestors.align={'never' if args.aligned else args.align}")
    if args.strict_tree:
        out.append("ancestors.strict_tree=true")
    if getattr(args, "bootstrap", None) is not None:
        out.append(f"ancestors.bootstrap={args.bootstrap}")
    if args.outgroup:
        out.append("ancestors.outgroup=" + json.dumps(list(args.outgroup)))
        out.append(f"ancestors.rooting={args.rooting or 'outgroup'}")
    elif args.rooting:
        out.append(f"ancestors.rooting={args.rooting}")
    return out


def dataset_input(dataset_dir: str | Path, *, with_extinct: bool = False):
    """One barcode per species (first individual) from a dataset, plus its truth when known.

    Returns ``(names, sequences, truth)``; ``truth`` is ``None`` or ``{"tree": Bio tree,
    "sequences": {internal node: seq}, "extinct": [names]}``.
    """
    from phenogen.data.dataset import load_dataset
    from phenogen.phylo.tree import read_tree

    ds = load_dataset(dataset_dir)
    splits = ("train", "heldout", "extinct") if with_extinct else ("train", "heldout")
    chosen: dict[str, str] = {}
    for rec in ds.records(splits):
        chosen.setdefault(rec.species, rec.sequence)
    if len(chosen) < 3:
        raise DataError(f"{ds.root}: {len(chosen)} species in splits {', '.join(splits)}; need at least 3")
    truth = None
    ancestors = {r.species: r.sequence for r in ds.records("ancestor")}
    if ds.tree_path is not None and ancestors:
        extinct = sorted({r.species for r in ds.records("extinct")})
        truth = {"tree": read_tree(ds.tree_path), "sequences": ancestors, "extinct": extinct}
    return list(chosen), list(chosen.values()), truth


def training_species(dataset_dir: str | Path) -> set[str]:
    """The species of a dataset's ``train`` split (tip names in dataset mode)."""
    from phenogen.data.dataset import load_dataset

    species = set(load_dataset(dataset_dir).species("train"))
    if not species:
        raise DataError(f"{dataset_dir}: no species in split train")
    return species


def reconstruct(
    names,
    sequences,
    *,
    cfg,
    tree_file=None,
    assume_aligned=False,
    source="<input>",
    tip_names=None,
    outgroup=None,
    headers=None,
):
    """The core pipeline on in-memory sequences; returns a dict of the pieces (see :func:`run`).

    ``tip_names`` (a :class:`~phenogen.phylo.names.TipNames`) lets a given tree name its tips by
    accession, gi number or species; ``outgroup`` (tip ids) replaces ``cfg.outgroup`` (which may hold
    species names, resolved by the caller).
    """
    from phenogen.phylo.align import Alignment, align, is_aligned
    from phenogen.phylo.asr import reconstruct_treetime
    from phenogen.phylo.tree import (
        check_names,
        fix_branch_lengths,
        infer_tree,
        name_internal_nodes,
        read_tree,
        root_tree,
    )

    outgroup = tuple(cfg.outgroup if outgroup is None else outgroup)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    seqs = Alignment(list(names), list(sequences), is_aligned(sequences), source, headers=headers or {})
    aln = align(
        seqs,
        assume_aligned=assume_aligned,
        mode=cfg.align,
        genetic_code=cfg.genetic_code,
        threads=cfg.threads,
        mafft_args=cfg.mafft_args,
    )
    timings["align_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if tree_file is not None:
        tree = read_tree(tree_file)
        if tip_names is not None:
            tip_names.match_tree_tips(tree, source=str(tree_file))
        check_names(tree, aln.names, tree_source=str(tree_file), fasta_source=source)
        fixes = fix_branch_lengths(
            tree, missing=cfg.missing_branch_length, source=str(tree_file), strict=cfg.strict_tree
        )
        if cfg.reroot_given_tree:
            root_tree(tree, cfg.rooting, outgroup)
        tree_method = "given"
    else:
        tree = infer_tree(
            aln.names,
            aln.sequences,
            method=cfg.tree_method,
            threads=cfg.threads,
            seed=cfg.seed,
            iqtree_model=cfg.iqtree_model,
            iqtree_support=cfg.iqtree_support,
        )
        check_names(tree, aln.names, tree_source=cfg.tree_method, fasta_source=source)
        fixes = fix_branch_lengths(tree, missing=cfg.missing_branch_length, source=cfg.tree_method)
        root_tree(tree, cfg.rooting, outgroup)
        tree_method = cfg.tree_method
    n_named = name_internal_nodes(tree)
    timings["tree_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = reconstruct_treetime(tree, aln.as_dict(), seed=cfg.seed)
    timings["asr_s"] = time.perf_counter() - t0
    if tree_method == "fasttree":
        support = "FastTree SH-like local support"
    elif tree_method == "iqtree":
        support = {"none": None, "ufboot": "IQ-TREE UFBoot", "sh-alrt": "IQ-TREE SH-aLRT"}.get(
            cfg.iqtree_support, "IQ-TREE UFBoot (SH-aLRT in nodes.csv sh_alrt)"
        )
    else:
        support = (
            "as given" if any(getattr(c, "support", None) is not None for c in tree.find_clades()) else None
        )
    return {
        "alignment": aln,
        "tree": tree,
        "result": result,
        "timings": timings,
        "counts": {
            "sequences": len(aln),
            "alignment_length": aln.length,
            "alignment_method": aln.method,
            "alignment_doubts": len(aln.doubts),
            "tree_method": tree_method,
            "support": support,
            "rooting": cfg.rooting if (tree_file is None or cfg.reroot_given_tree) else "as given",
            "missing_branch_lengths_set": fixes.missing,
            "negative_branch_lengths_set_to_zero": fixes.negative,
            "zero_branch_lengths": fixes.zero,
            "internal_nodes_named": n_named,
            "internal_nodes": len(tree.get_nonterminals()),
        },
    }


def _write_table(rows: list[dict[str, Any]], out: Path, stem: str) -> None:
    atomic_write_text(out / f"{stem}.json", json.dumps(rows, indent=1) + "\n")
    with (out / f"{stem}.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _score_truth(piece, truth, cfg, out: Path, lm_samples: str | None) -> dict[str, Any]:
    from phenogen.dna.seqio import read_fasta
    from phenogen.phylo.asr import reconstruct_iqtree
    from phenogen.phylo.tools import have_tool
    from phenogen.phylo.truth import compare_to_truth, plot_identity_vs_depth

    aln, tree = piece["alignment"], piece["tree"]
    recon = {"treetime": piece["result"].sequences}
    if piece.get("bootstrap_consensus"):  # --bootstrap: the replicate trees' majority at each node
        recon["bootstrap_consensus"] = piece["bootstrap_consensus"]
    t0 = time.perf_counter()
    if cfg.iqtree_peer and have_tool("iqtree"):
        recon["iqtree"] = reconstruct_iqtree(
            tree, aln.as_dict(), model=cfg.iqtree_model, threads=cfg.threads, seed=cfg.seed
        ).sequences
        piece["timings"]["iqtree_asr_s"] = time.perf_counter() - t0
    elif cfg.iqtree_peer:
        log.warning("iqtree2 not installed (Debian package iqtree): IQ-TREE peer skipped")
    extinct = set(truth["extinct"])
    living = [s for n, s in zip(aln.names, aln.sequences, strict=True) if n not in extinct]
    pools = {"closest_living": living}
    if lm_samples:
        pools["lm_samples"] = [r.sequence for r in read_fasta(lm_samples, policy="mask").records]
    result = compare_to_truth(
        truth["tree"], truth["sequences"], tree, recon, tips_used=set(aln.names), pools=pools
    )
    paired = [(r["treetime"], r["iqtree"]) for r in result["nodes"] if r.get("iqtree") is not None]
    if paired:  # on the nodes both methods report (IQ-TREE has no root in an unrooted tree)
        result["treetime_minus_iqtree_pp"] = 100 * sum(a - b for a, b in paired) / len(paired)
    plot_identity_vs_depth(result, out / "identity_vs_depth.png")
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    metrics["ancestors"] = result
    atomic_write_text(metrics_path, json.dumps(metrics, indent=1) + "\n")
    return result


def _bootstrap(piece, rows, selected, choices, cfg, outgroup, out: Path, tip_names):
    """``--bootstrap N``: replicate trees, clade frequencies and replicate reconstructions (phylo/bootstrap.py).

    Adds the columns to ``rows`` and rewrites nodes.csv/json, the annotated tree and the FASTA of
    consensus sequences; writes bootstrap.json and bootstrap_trees.nwk. Returns the :class:`TreeSample`.
    """
    from phenogen.dna.seqio import write_fasta
    from phenogen.phylo.asr import annotate_tree
    from phenogen.phylo.bootstrap import bootstrap_trees, reconstruct_over_trees, search_args
    from phenogen.phylo.tree import to_newick, write_tree

    aln, tree, result = piece["alignment"], piece["tree"], piece["result"]
    t0 = time.perf_counter()
    internal = {c.name for c in tree.get_nonterminals()}
    tips_of = {c.name: [t.name for t in c.get_terminals()] for c in tree.get_nonterminals()}
    chosen = [n for n in selected if n in internal]
    targets = {}
    for choice in choices:  # an --mrca (or species/genus --node) choice: its MRCA in every tree too
        if len(choice.tips) >= 2:
            node = tree.common_ancestor([t for t in tree.get_terminals() if t.name in set(choice.tips)]).name
            targets[node] = tuple(choice.tips)
    kept: list[str] = []

    def keep(trees):
        for t in trees:
            kept.append(to_newick(t))
            yield t

    replicates = bootstrap_trees(
        aln.names,
        aln.sequences,
        cfg.bootstrap,
        method=cfg.bootstrap_method,
        search=cfg.bootstrap_search,
        seed=cfg.seed,
        rooting=cfg.rooting,
        outgroup=outgroup,
        iqtree_model=cfg.iqtree_model,
        threads=cfg.threads,
    )
    sample = reconstruct_over_trees(
        tree,
        keep(replicates),
        aln.as_dict(),
        chosen=chosen,
        targets=targets,
        seed=cfg.seed,
        model=result.model,
        method=cfg.bootstrap_method,
    )
    sample.search = (
        " ".join(search_args(cfg.bootstrap_search, len(aln))) if cfg.bootstrap_method == "fasttree" else None
    )
    (out / "bootstrap_trees.nwk").write_text("".join(kept), encoding="utf-8")
    for row in rows:
        name = row["node"]
        row["clade_frequency"] = round(sample.clade_frequency[name], 4)
        split = sample.split_frequency[name]
        row["split_frequency"] = None if split is None else round(split, 4)
        row |= sample.spread(name, result.sequences.get(name))
    consensus = {r["node"]: sample.consensus(r["node"]) for r in rows if r["boot_trees"]}
    write_fasta(out / "ancestors.bootstrap.fasta", list(consensus.items()))
    piece["bootstrap_consensus"] = consensus
    _write_table(rows, out, "nodes")
    write_tree(annotate_tree(tree, rows, tip_names), out / "tree.annotated.nwk")
    sample.timings["total_s"] = time.perf_counter() - t0
    boot = sample.summary(chosen, result.sequences)
    for name, entry in boot["chosen"].items():
        entry["n_tips"] = len(tips_of.get(name, ()))
    atomic_write_text(out / "bootstrap.json", json.dumps(boot, indent=1) + "\n")
    piece["timings"]["bootstrap_s"] = sample.timings["total_s"]
    log.info(
        "bootstrap: %d trees (%s) in %.1f s; mean clade frequency %.3f, %d of %d nodes in every tree",
        sample.n_trees,
        cfg.bootstrap_method,
        sample.timings["total_s"],
        boot["clade_frequency"]["mean"],
        boot["nodes_in_every_tree"],
        len(rows),
    )
    return sample


def run(args: argparse.Namespace) -> int:
    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, save_resolved
    from phenogen.dna.seqio import read_fasta, write_fasta
    from phenogen.fsio import check_output_dir, prepare_output_dir, read_json, read_text
    from phenogen.phylo.align import read_sequences
    from phenogen.phylo.asr import annotate_tree, node_table, write_state_table
    from phenogen.phylo.config import AncestorsConfig
    from phenogen.phylo.names import TipNames, read_species_table
    from phenogen.phylo.select import resolve_choices, select_nodes
    from phenogen.phylo.tree import write_tree

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_sections({"ancestors": AncestorsConfig}, args.config, _overrides(args))["ancestors"]
    # flags, output and every input first (seconds); alignment, tree and portraits take minutes
    if args.model and not (args.node or args.mrca or args.all_internal):
        raise InputError("--model paints chosen nodes: choose them with --node, --mrca or --all-internal")
    if args.model and cfg.portrait_condition == "tree" and cfg.caption_tips == "train" and not args.dataset:
        raise ConfigError(
            "caption_tips = 'train' takes the training species from --dataset; with --fasta use 'all'"
        )
    out = Path(args.out)
    check_output_dir(out, force=args.force)
    check_inputs_outside(out, args.force, fasta=args.fasta, dataset=args.dataset, tree=args.tree,
                         model=args.model, lm_samples=args.lm_samples,
                         species_table=args.species_table)  # fmt: skip
    truth, masked, dropped, headers = None, {}, {}, {}
    if args.aligned and args.align not in (None, "never"):
        raise InputError(f"--aligned means --align never; it contradicts --align {args.align}")
    if args.dataset:
        if (Path(args.dataset) / "dataset.json").is_file():
            read_json(Path(args.dataset) / "dataset.json", "dataset description", error=DataError)
        names, sequences, truth = dataset_input(args.dataset, with_extinct=cfg.with_extinct)
        tip_names = TipNames.from_ids(names, {n: n.replace("_", " ") for n in names})
    else:
        seqs = read_sequences(args.fasta, policy=cfg.ambiguity_policy)
        names, sequences, masked, dropped = seqs.names, seqs.sequences, seqs.masked, seqs.dropped
        headers = seqs.headers
        tip_names = TipNames.from_headers([headers[n] for n in names])
    if args.species_table:
        n_matched = tip_names.add_table(read_species_table(args.species_table))
        if not n_matched:
            raise InputError(
                f"--species-table {args.species_table}: none of its ids matches a tip "
                f"(tips look like {', '.join(names[:3])})"
            )
        log.info("%s: species for %d of %d tips", args.species_table, n_matched, len(names))
    if cfg.seed < 0:  # numpy and TreeTime take non-negative seeds only
        raise ConfigError(f"ancestors.seed = {cfg.seed}: the seed must be >= 0")
    # every name the user gave is checked here, before any alignment or tree (minutes) is made
    outgroup: list[str] = []
    for word in cfg.outgroup:
        outgroup.extend(t for t in tip_names.resolve(word, flag="--outgroup") if t not in outgroup)
    internal_names: set[str] = set()
    if args.tree:
        from phenogen.phylo.tree import check_names, read_tree

        read_text(args.tree, "tree file (--tree)")
        given = read_tree(args.tree)
        tip_names.match_tree_tips(given, source=str(args.tree))
        check_names(given, names, tree_source=str(args.tree), fasta_source=args.fasta or args.dataset)
        internal_names = {c.name for c in given.get_nonterminals() if c.name}
    choices = resolve_choices(tip_names, nodes=args.node, mrca=args.mrca, internal_names=internal_names)
    if args.lm_samples:
        read_fasta(args.lm_samples, policy="mask")
    caption_tips = None
    if args.model:
        from phenogen.diffusion.pipeline import check_pipeline_dir

        model_dir, _ = check_pipeline_dir(args.model)
        head = read_json(model_dir / "conditioner" / "config.json", "conditioner config").get(
            "head", "tokens"
        )
        if cfg.portrait_condition == "tree" and head != "caption":
            raise ConfigError(
                f"portrait_condition = 'tree' needs a model with the caption head (image.cond_head = 'caption'); "
                f"{args.model} has the '{head}' head (or paint from 'sequence')"
            )
        if cfg.portrait_condition == "tree" and cfg.caption_tips == "train":
            caption_tips = training_species(args.dataset)
    prepare_output_dir(out, "ancestors", force=args.force)
    save_resolved({"ancestors": cfg}, out, command=["phenogen", "ancestors", *sys.argv[2:]])
    _write_table(tip_names.tip_rows(), out, "tips")
    start = time.perf_counter()
    if args.dataset:
        write_fasta(out / "input.fasta", list(zip(names, sequences, strict=True)))
        source = str(out / "input.fasta")
    else:
        source = args.fasta
    piece = reconstruct(
        names,
        sequences,
        cfg=cfg,
        tree_file=args.tree,
        assume_aligned=args.aligned,
        source=source,
        tip_names=tip_names,
        outgroup=outgroup,
        headers=headers,
    )
    aln, tree, result = piece["alignment"], piece["tree"], piece["result"]

    t0 = time.perf_counter()
    write_fasta(out / "alignment.fasta", list(zip(aln.names, aln.sequences, strict=True)))
    write_tree(tree, out / "tree.nwk")
    rows = node_table(
        tree,
        result,
        low_confidence=cfg.low_confidence,
        names=tip_names,
        genetic_code=cfg.genetic_code,
        low_support=cfg.low_support,
        alignment=aln.as_dict(),
    )
    write_tree(annotate_tree(tree, rows, tip_names), out / "tree.annotated.nwk")
    write_fasta(out / "ancestors.fasta", [(r["node"], result.sequences[r["node"]]) for r in rows])
    write_state_table(result, out / "ancestors.state.tsv.gz", [r["node"] for r in rows])
    _write_table(rows, out, "nodes")
    if len(aln) <= 300:
        from phenogen.phylo.portraits import tree_figure

        labels = {t: tip_names.display(t) for t in aln.names}
        tree_figure(tree, {}, out / "tree.png", labels=labels, low_support=cfg.low_support)
    piece["timings"]["write_s"] = time.perf_counter() - t0
    # nodes.csv is on disk: a --node name the tree does not have is reported with it to look at
    selected = select_nodes(tree, choices=choices, all_internal=args.all_internal)
    atomic_write_text(
        out / "selected.json",
        json.dumps(
            {
                "selected": selected,
                "asked": [{"flag": c.flag, "words": list(c.words), "tips": list(c.tips)} for c in choices],
            },
            indent=1,
        )
        + "\n",
    )

    sample = None
    if cfg.bootstrap:
        sample = _bootstrap(piece, rows, selected, choices, cfg, outgroup, out, tip_names)

    supports = [r["support"] for r in rows if r["support"] is not None]
    stops = [r["stop_codons"] for r in rows if r.get("stop_codons")]
    summary: dict[str, Any] = {
        **piece["counts"],
        "masked_records": len(masked),
        "masked_bases": sum(masked.values()),
        "tips_with_species": tip_names.n_with_species(),
        "species": len({s for s in tip_names.species.values() if s}),
        "nodes_with_support": len(supports),
        "nodes_low_support": sum(1 for v in supports if v < cfg.low_support),
        "low_support_below": cfg.low_support,
        "ancestors_with_stop_codons": len(stops),
        "ancestors_with_stop_codons_in_covered_sites": sum(
            1 for r in rows if r.get("stop_codons_in_covered")
        ),
        "genetic_code": cfg.genetic_code,
    }
    if aln.doubts:
        summary["alignment_doubts_by_id"] = dict(list(aln.doubts.items())[:50])
    if stops:
        log.warning(
            "%d of %d reconstructed ancestors hold stop codons (code %d; nodes.csv stop_codons), %d of them "
            "at sites their own tips cover (stop_codons_in_covered; the others only in alignment overhangs, "
            "extrapolated_sites): misaligned input or a non-coding region?",
            len(stops),
            len(rows),
            cfg.genetic_code,
            summary["ancestors_with_stop_codons_in_covered_sites"],
        )
    if sample is not None:
        boot = sample.summary()
        summary["bootstrap"] = {k: boot[k] for k in ("trees", "method", "search", "clade_frequency",
                                                     "nodes_in_every_tree", "pairwise_identity", "timings")}  # fmt: skip
    summary["dropped_records"] = dropped
    summary["model"] = result.model
    summary["log_likelihood"] = result.log_likelihood
    if truth is not None:
        scored = _score_truth(piece, truth, cfg, out, args.lm_samples)
        summary["truth"] = {m: v["mean"] for m, v in scored["summary"].items()}
        summary["truth"]["clade_match_fraction"] = scored["clade_match_fraction"]
        summary["truth"]["n_identifiable"] = scored["n_identifiable"]
    elif args.lm_samples:
        log.warning("--lm-samples is only used when the input has known true ancestors (--dataset)")
    if args.model:
        from phenogen.phylo.portraits import paint_portraits

        t0 = time.perf_counter()
        tips = dict(zip(aln.names, aln.sequences, strict=True))
        labels = {t: tip_names.display(t) for t in aln.names}
        summary["portraits"] = paint_portraits(
            tree, result, selected, args.model, cfg, out / "portraits", tips, caption_tips, labels=labels,
            bootstrap=sample,
        )  # fmt: skip
        piece["timings"]["portraits_s"] = time.perf_counter() - t0
    piece["timings"]["total_s"] = time.perf_counter() - start
    summary["timings"] = {k: round(v, 3) for k, v in piece["timings"].items()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    mean_post = sum(r["mean_posterior"] for r in rows) / len(rows)
    calibrated = [r["mean_calibrated"] for r in rows if r.get("mean_calibrated") is not None]
    print(
        f"ancestors: {len(aln)} sequences × {aln.length} columns ({aln.method}), tree {piece['counts']['tree_method']}, "
        f"{len(rows)} internal nodes ({summary['nodes_low_support']} with support < {cfg.low_support:g}), "
        f"mean posterior {mean_post:.3f}"
        + (f" (calibrated {sum(calibrated) / len(calibrated):.3f})" if calibrated else "")
        + f", {len(selected)} chosen, "
        f"{summary['timings']['total_s']:.1f} s → {out}"
    )
    if "truth" in summary:
        t = summary["truth"]
        print(
            "identity with true ancestors: "
            + ", ".join(f"{k} {v:.4f}" for k, v in t.items() if isinstance(v, float))
        )
    return 0
