"""Ancestral reconstruction over tree uncertainty and the codon-aware alignment (issue 25, items 3 and 5).

Synthetic clade (``phenogen simulate`` seeds; 48 living barcodes with known true tree and ancestors):

* the main pipeline (MAFFT if needed, FastTree, midpoint root, TreeTime) and N bootstrap trees
  (``phylo/bootstrap.py``), for each ``bootstrap_search`` asked;
* clade frequency of the main tree's clades that are true (their tip set is a clade of the true tree,
  restricted to the tips used) against the false ones — beside FastTree's SH-like support;
* identity with the true ancestor (``phylo/truth.py``) of: the single-tree reconstruction; the
  consensus over the trees that hold the main tree's clade; the consensus of the MRCA of the true
  clade's tips over every tree (which exists in all trees).

USNM birds (``data/usnm_birds_coi``, 2,980 COI barcodes): ``phenogen ancestors --bootstrap N`` timed
end to end, with ``--align codon`` (stop codons of the reconstructed ancestors) and, unless
``--no-nucleotide``, the same without bootstrap on MAFFT's nucleotide alignment.

    OMP_NUM_THREADS=1 .venv/bin/python bench/asr_bootstrap.py --seeds 0 1 2 3 --trees 100 \\
        --usnm-trees 100 --out bench/results/asr_bootstrap.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
USNM = ROOT / "data" / "usnm_birds_coi"
sys.path.insert(0, str(Path(__file__).parent))
from asr_calibration import simulate  # noqa: E402  (one synthetic clade per seed, cached)


def _describe(v) -> dict:
    v = np.asarray(v, dtype=float)
    if not v.size:
        return {"n": 0}
    return {"n": int(v.size), "mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "q10": round(float(np.quantile(v, 0.1)), 4), "q90": round(float(np.quantile(v, 0.9)), 4),
            "histogram_0_1_by_0.1": np.histogram(v, bins=10, range=(0, 1))[0].tolist()}  # fmt: skip


def _auc(pos, neg) -> float | None:
    """P(a true clade's frequency > a false one's), ties half: how well the frequency separates them."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not pos.size or not neg.size:
        return None
    greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return round(float(greater), 4)


def synthetic(seed: int, work: Path, trees: int, search: str) -> dict:
    from phenogen.phylo.bootstrap import bootstrap_trees, reconstruct_over_trees
    from phenogen.phylo.command import dataset_input, reconstruct
    from phenogen.phylo.config import AncestorsConfig
    from phenogen.phylo.truth import _tips_below, match_nodes, sequence_identity

    names, seqs, truth = dataset_input(simulate(seed, work))
    cfg = AncestorsConfig()
    t0 = time.perf_counter()
    piece = reconstruct(names, seqs, cfg=cfg, source=f"sim{seed}")
    tree, result, aln = piece["tree"], piece["result"], piece["alignment"]
    used = set(aln.names)
    rows = [r for r in match_nodes(truth["tree"], tree, used) if r["node"] in truth["sequences"]]
    true_below = _tips_below(truth["tree"])
    targets = {r["node"]: tuple(sorted(true_below[r["node"]] & used)) for r in rows}
    t1 = time.perf_counter()
    reps = bootstrap_trees(aln.names, aln.sequences, trees, search=search, seed=cfg.seed)
    sample = reconstruct_over_trees(tree, reps, aln.as_dict(), targets=targets, model=result.model)
    boot_s = time.perf_counter() - t1
    true_sets = {frozenset(v & used) for v in true_below.values() if len(v & used) >= 2}
    freq_true, freq_false, sh_true, sh_false = [], [], [], []
    split_true, split_false = [], []
    for clade in tree.get_nonterminals():
        if clade is tree.root:
            continue
        is_true = frozenset(t.name for t in clade.get_terminals()) in true_sets
        (freq_true if is_true else freq_false).append(sample.clade_frequency[clade.name])
        (split_true if is_true else split_false).append(sample.split_frequency[clade.name])
        support = getattr(clade, "support", None)
        if support is not None:
            (sh_true if is_true else sh_false).append(support)
    ident = {"single_tree": [], "consensus_where_clade": [], "consensus_mrca_all_trees": []}
    ident_by_match = {True: {k: [] for k in ident}, False: {k: [] for k in ident}}
    clade_freq_of_counterpart = []
    for r in rows:
        true_seq = truth["sequences"][r["node"]]
        node = r["recon_node"]
        vals = {"single_tree": sequence_identity(true_seq, result.sequences[node])}
        vals["consensus_where_clade"] = (
            sequence_identity(true_seq, sample.consensus(node)) if sample.spread(node)["boot_trees"] else None
        )
        vals["consensus_mrca_all_trees"] = sequence_identity(true_seq, sample.consensus(f"mrca:{r['node']}"))
        for k, v in vals.items():
            if v is not None:
                ident[k].append(v)
                ident_by_match[r["clade_match"]][k].append(v)
        clade_freq_of_counterpart.append(sample.clade_frequency[node])
    paired = [(a, b) for a, b in zip(ident["single_tree"], ident["consensus_mrca_all_trees"], strict=True)]
    return {
        "seed": seed,
        "tips": len(aln),
        "search": search,
        "trees": trees,
        "main_s": round(t1 - t0, 2),
        "bootstrap_s": round(boot_s, 2),
        "clade_frequency": {"true_clades": _describe(freq_true), "false_clades": _describe(freq_false),
                            "auc_true_over_false": _auc(freq_true, freq_false)},
        "split_frequency": {"true_clades": _describe(split_true), "false_clades": _describe(split_false),
                            "auc_true_over_false": _auc(split_true, split_false)},
        "fasttree_sh_support": {"true_clades": _describe(sh_true), "false_clades": _describe(sh_false),
                                "auc_true_over_false": _auc(sh_true, sh_false)},
        "identity_with_truth": {k: _describe(v) for k, v in ident.items()},
        "identity_by_clade_match": {
            str(m).lower(): {k: round(float(np.mean(v)), 4) if v else None for k, v in d.items()}
            for m, d in ident_by_match.items()
        },
        "nodes_scored": len(rows),
        "clade_match_fraction": round(float(np.mean([r["clade_match"] for r in rows])), 4),
        "mrca_consensus_better_worse_same": [int(sum(b > a for a, b in paired)), int(sum(b < a for a, b in paired)),
                                             int(sum(b == a for a, b in paired))],
        "raw": {"single_tree": ident["single_tree"], "consensus_mrca_all_trees": ident["consensus_mrca_all_trees"]},
    }  # fmt: skip


def stop_analysis(run_dir: Path, table: int = 2) -> dict:
    """Stop codons of a run's reconstructed ancestors: as ``nodes.csv`` counts them (best frame of the
    ungapped sequence), and only over the columns where at least one of the node's own tips has a base
    (elsewhere — leading/trailing overhangs, filled as missing data — the ancestor is extrapolated)."""
    from phenogen.dna.seqio import read_fasta
    from phenogen.phylo.frame import stop_codons
    from phenogen.phylo.tree import read_tree

    tree = read_tree(run_dir / "tree.nwk")
    tips = {
        r.id: r.sequence
        for r in read_fasta(run_dir / "alignment.fasta", allow_gaps=True, policy="mask").records
    }
    anc = {
        r.id: r.sequence
        for r in read_fasta(run_dir / "ancestors.fasta", allow_gaps=True, policy="mask").records
    }
    length = len(next(iter(tips.values())))
    has = {n: np.frombuffer(s.encode(), dtype=np.uint8) != ord("-") for n, s in tips.items()}
    covered: dict[str, np.ndarray] = {}
    whole = in_covered = 0
    for clade in tree.find_clades(order="postorder"):
        if clade.is_terminal():
            covered[clade.name] = has[clade.name]
            continue
        covered[clade.name] = np.logical_or.reduce([covered[c.name] for c in clade.clades])
        seq = anc[clade.name]
        whole += stop_codons(seq, table) > 0
        masked = "".join(ch if ok else "-" for ch, ok in zip(seq, covered[clade.name], strict=True))
        in_covered += stop_codons(masked, table) > 0
    return {"ancestors": len(anc), "alignment_length": length, "with_stops": int(whole),
            "with_stops_in_columns_their_tips_cover": int(in_covered)}  # fmt: skip


def usnm(out_root: Path, trees: int, *, align: str, bootstrap: bool) -> dict:
    """One timed ``phenogen ancestors`` run on the USNM birds (a subprocess: wall time and peak memory)."""
    out = out_root / f"usnm_{align}{'_boot' if bootstrap else ''}"
    argv = [str(Path(sys.executable).parent / "phenogen"), "ancestors", "--fasta", str(USNM / "unaligned_schindel2017.fasta"),
            "--species-table", str(USNM / "schindel2017.tsv"), "--mrca", "Turdus", "--mrca", "Turdus grayi",
            "Turdus fumigatus", "--node", "Xiphorhynchus obsoletus", "--align", align, "--out", str(out),
            "--force"]  # fmt: skip
    if bootstrap:
        argv += ["--bootstrap", str(trees)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"USNM run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    res = {
        "command": "phenogen " + " ".join(argv[1:]),
        "wall_s": round(wall, 1),
        "peak_rss_mb_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "alignment_method": summary["alignment_method"],
        "alignment_length": summary["alignment_length"],
        "internal_nodes": summary["internal_nodes"],
        "ancestors_with_stop_codons": summary["ancestors_with_stop_codons"],
        "stop_codons": stop_analysis(out),
        "timings": summary["timings"],
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    if bootstrap:
        boot = json.loads((out / "bootstrap.json").read_text())
        res["bootstrap"] = {k: boot[k] for k in ("trees", "search", "clade_frequency", "nodes_in_every_tree",
                                                 "nodes_in_no_tree", "pairwise_identity", "timings")}  # fmt: skip
        res["bootstrap"]["chosen"] = {
            n: {k: v for k, v in e.items() if k != "variants"} | {"distinct_sequences": len(e.get("variants", []))}
            for n, e in boot["chosen"].items()
        }  # fmt: skip
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    parser.add_argument("--trees", type=int, default=100, help="bootstrap trees on the synthetic clade")
    parser.add_argument("--searches", nargs="+", default=["ml", "nj"])
    parser.add_argument("--usnm-trees", type=int, default=100, help="bootstrap trees on USNM (0: skip USNM)")
    parser.add_argument("--no-nucleotide", action="store_true", help="skip the USNM nucleotide-alignment run")
    parser.add_argument("--work", default="/tmp/phenogen-asr-calibration")
    parser.add_argument("--out", default="bench/results/asr_bootstrap.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {}
    if args.seeds:
        runs = [synthetic(s, work, args.trees, search) for search in args.searches for s in args.seeds]
        pooled = {}
        for search in args.searches:
            rs = [r for r in runs if r["search"] == search]
            single = np.concatenate([r["raw"]["single_tree"] for r in rs])
            mrca = np.concatenate([r["raw"]["consensus_mrca_all_trees"] for r in rs])
            pooled[search] = {
                "identity_single_tree": round(float(single.mean()), 4),
                "identity_bootstrap_consensus_mrca": round(float(mrca.mean()), 4),
                "identity_bootstrap_consensus_where_clade": round(
                    float(np.mean([r["identity_with_truth"]["consensus_where_clade"]["mean"] for r in rs])), 4
                ),
                "clade_frequency_true_mean": round(
                    float(np.mean([r["clade_frequency"]["true_clades"]["mean"] for r in rs])), 4
                ),
                "clade_frequency_false_mean": round(
                    float(np.mean([r["clade_frequency"]["false_clades"]["mean"] for r in rs])), 4
                ),
                "clade_frequency_auc": round(float(np.mean([r["clade_frequency"]["auc_true_over_false"] for r in rs])), 4),
                "sh_support_auc": round(float(np.mean([r["fasttree_sh_support"]["auc_true_over_false"] for r in rs])), 4),
            }  # fmt: skip
        for r in runs:
            r.pop("raw")
        result["synthetic"] = {"seeds": args.seeds, "trees": args.trees, "pooled": pooled, "runs": runs}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(pooled, indent=1))
    if args.usnm_trees:
        result["usnm"] = {"codon_bootstrap": usnm(work, args.usnm_trees, align="codon", bootstrap=True)}
        out.write_text(json.dumps(result, indent=1) + "\n")
        if not args.no_nucleotide:
            result["usnm"]["nucleotide"] = usnm(work, 0, align="always", bootstrap=False)
        result["usnm"]["machine"] = {"cpus": os.cpu_count(), "note": "2 cores shared with other workers"}
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["usnm"], indent=1))


if __name__ == "__main__":
    main()
