"""How well the tree reads held-out, extinct and ancestral captions: caption RMSE against the true traits.

For a `phenogen demo` run with the caption head, the training species' written captions (what their
barcodes write) are reconstructed on the run's estimated tree (``ancestors/tree.nwk``) at every held-out
and extinct tip and at every ancestor target's matched node, under Brownian motion with each tip-noise
value of the grid (``phenogen.evaluate.baselines.bm_conditional_mean``) and with the value chosen by
leave-one-out over the training tips (``loo_tip_noise``, which never sees a true trait). The true
training traits as tips give the bound a perfect DNA → caption map would reach on this tree. Continuous
traits only, on the latent (z) scale, as ``trait_rmse``.

    .venv/bin/python bench/tree_reading.py --run runs/demo [--out runs/demo/tree_reading.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `phenogen demo` output directory")
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    args = ap.parse_args(argv)

    import numpy as np

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.conditioning import DNAConditioner
    from phenogen.dna.seqio import read_fasta
    from phenogen.evaluate.baselines import TIP_NOISE_GRID, bm_conditional_mean, loo_tip_noise
    from phenogen.phylo.align import ungap
    from phenogen.phylo.command import training_species
    from phenogen.sim.traitspec import CONTINUOUS

    run = args.run
    cond = DNAConditioner.from_pretrained(run / "image" / "pipeline" / "conditioner").eval()
    names = list(cond.caption_names)
    cont = [names.index(t) for t in CONTINUOUS if t in names]
    truth = {
        r["node"]: r for r in csv.DictReader(open(run / "data" / "truth" / "traits.tsv"), delimiter="\t")
    }
    tree = run / "ancestors" / "tree.nwk"
    tips = {
        r.id: r.sequence
        for r in read_fasta(run / "ancestors" / "input.fasta", policy="mask", allow_gaps=True).records
    }
    train = sorted(training_species(run / "data") & set(tips))
    written = dict(zip(train, cond.caption_matrix([ungap(tips[t]) for t in train]), strict=True))
    true_tips = {t: np.array([float(truth[t][n]) for n in names]) for t in train}
    ds = load_dataset(run / "data")
    targets: dict[str, list[tuple[str, str]]] = {}  # split -> [(node on the estimated tree, true node)]
    for split in ("heldout", "extinct"):
        for sp in sorted(set(ds.species(split))):
            if sp in tips and sp in truth:
                targets.setdefault(split, []).append((sp, sp))
    anc = json.loads((run / "ancestors" / "targets.json").read_text(encoding="utf-8"))["targets"]
    targets["ancestor"] = [(t["recon_node"], t["record_id"]) for t in anc if t["record_id"] in truth]

    def rmse(split: str, tip_values: dict, noise: float) -> float:
        errs = []
        for node, true_node in targets[split]:
            known = {t: v for t, v in tip_values.items() if t != node}
            pred = bm_conditional_mean(tree, known, [node], tip_noise=noise)[node]
            true = np.array([float(truth[true_node][n]) for n in names])
            errs.append((pred[cont] - true[cont]) ** 2)
        return float(np.sqrt(np.mean(errs)))

    chosen, loo = loo_tip_noise(tree, written)
    chosen_true, _ = loo_tip_noise(tree, true_tips)
    train_err = float(np.sqrt(np.mean([(written[t][cont] - true_tips[t][cont]) ** 2 for t in train])))
    rows = []
    for g in TIP_NOISE_GRID:
        rows.append({"tips": "written", "tip_noise": g, "loo_rmse_written": loo[g],
                     **{s: rmse(s, written, g) for s in targets}})  # fmt: skip
    rows.append(
        {
            "tips": "true (bound)",
            "tip_noise": chosen_true,
            **{s: rmse(s, true_tips, chosen_true) for s in targets},
        }
    )
    result = {"run": str(run), "n_train_tips": len(train), "written_vs_truth_train": train_err,
              "loo_choice": chosen, "loo_choice_true_tips": chosen_true, "rows": rows}  # fmt: skip
    print(
        f"{run}: {len(train)} training tips, written captions vs truth RMSE {train_err:.3f}; "
        f"LOO picks tip noise {chosen:g} (true tips: {chosen_true:g})"
    )
    print(f"{'tips':14s} {'noise':>6s} {'LOO':>6s} " + " ".join(f"{s:>9s}" for s in targets))
    for r in rows:
        loo_txt = f"{r['loo_rmse_written']:.3f}" if "loo_rmse_written" in r else "   -  "
        mark = " <- LOO" if r["tips"] == "written" and r["tip_noise"] == chosen else ""
        print(
            f"{r['tips']:14s} {r['tip_noise']:6g} {loo_txt:>6s} "
            + " ".join(f"{r[s]:9.3f}" for s in targets)
            + mark
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
