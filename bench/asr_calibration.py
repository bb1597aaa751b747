"""Is the per-site posterior of the reconstructed ancestors calibrated? (issue 25, item 4)

On synthetic clades (``phenogen simulate``, seeds given), ``phenogen ancestors``' pipeline is run in
process (FastTree tree, midpoint root, TreeTime marginal ML), every identifiable true ancestor is
matched to its reconstructed node (``phylo/truth.py``), and each site's reported posterior (of the
base reconstructed) is set against whether that base is the true one. Reported per method:

* reliability table (posterior bins: mean posterior, accuracy, sites) and the expected calibration
  error ECE = sum_b n_b / N |accuracy_b - posterior_b|;
* IQ-TREE ``-asr`` with GTR+G (gamma rate variation) on the same tree, as the rate-heterogeneity arm;
* an empirical calibration (histogram binning of TreeTime's posterior) fitted on the first half of
  the seeds and scored on the others.

    .venv/bin/python bench/asr_calibration.py --seeds 0 1 2 3 --out bench/results/asr_calibration.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

EDGES = np.array([0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0 + 1e-9])


def simulate(seed: int, root: Path) -> Path:
    out = root / f"sim{seed}"
    if not (out / "dataset.json").is_file():
        from phenogen.cli import main

        argv = [
            "simulate",
            "--out",
            str(out),
            "--seed",
            str(seed),
            "--image-size",
            "16",
            "--quiet",
            "--force",
        ]
        if main(argv) != 0:
            raise SystemExit(f"phenogen simulate --seed {seed} failed")
    return out


def site_records(dataset: Path, *, iqtree: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """method -> (posterior, correct) over every site of every identifiable true ancestor."""
    from phenogen.phylo.asr import reconstruct_iqtree
    from phenogen.phylo.command import dataset_input, reconstruct
    from phenogen.phylo.config import AncestorsConfig
    from phenogen.phylo.truth import match_nodes

    names, seqs, truth = dataset_input(dataset)
    cfg = AncestorsConfig()
    piece = reconstruct(names, seqs, cfg=cfg, source=str(dataset))
    tree, result, aln = piece["tree"], piece["result"], piece["alignment"]
    rows = [r for r in match_nodes(truth["tree"], tree, set(aln.names)) if r["node"] in truth["sequences"]]
    methods = {"treetime": (result.sequences, result.confidence)}
    if iqtree:
        iq = reconstruct_iqtree(tree, aln.as_dict(), model="GTR+G")
        methods["iqtree_gtr_g"] = (iq.sequences, iq.confidence)
    out = {}
    for method, (sequences, confidence) in methods.items():
        post, correct = [], []
        for r in rows:
            seq = sequences.get(r["recon_node"])
            if seq is None:
                continue
            true = np.frombuffer(truth["sequences"][r["node"]].encode(), dtype=np.uint8)
            got = np.frombuffer(seq.encode(), dtype=np.uint8)
            ok = np.isin(true, np.frombuffer(b"ACGT", dtype=np.uint8))
            post.append(np.asarray(confidence[r["recon_node"]], dtype=float)[ok])
            correct.append((got == true)[ok])
        out[method] = (np.concatenate(post), np.concatenate(correct))
    return out


def reliability(post: np.ndarray, correct: np.ndarray) -> dict:
    bins, ece = [], 0.0
    idx = np.clip(np.digitize(post, EDGES) - 1, 0, len(EDGES) - 2)
    for b in range(len(EDGES) - 1):
        sel = idx == b
        if not sel.any():
            continue
        conf, acc = float(post[sel].mean()), float(correct[sel].mean())
        ece += sel.sum() / post.size * abs(acc - conf)
        bins.append({"from": float(EDGES[b]), "to": float(min(EDGES[b + 1], 1.0)), "n": int(sel.sum()),
                     "mean_posterior": round(conf, 5), "accuracy": round(acc, 5)})  # fmt: skip
    return {
        "ece": round(ece, 5),
        "mean_posterior": round(float(post.mean()), 5),
        "accuracy": round(float(correct.mean()), 5),
        "sites": int(post.size),
        "bins": bins,
    }


def fit_binning(post: np.ndarray, correct: np.ndarray) -> list[float]:
    """Per bin of EDGES, the accuracy seen (made non-decreasing): the calibrated posterior of that bin."""
    idx = np.clip(np.digitize(post, EDGES) - 1, 0, len(EDGES) - 2)
    acc = []
    for b in range(len(EDGES) - 1):
        sel = idx == b
        acc.append(float(correct[sel].mean()) if sel.any() else float((EDGES[b] + EDGES[b + 1]) / 2))
    return list(np.maximum.accumulate(acc))


def apply_binning(post: np.ndarray, table: list[float]) -> np.ndarray:
    idx = np.clip(np.digitize(post, EDGES) - 1, 0, len(EDGES) - 2)
    return np.asarray(table)[idx]


def plot(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    ax.plot([0.5, 1], [0.5, 1], color="0.6", lw=0.8, ls="--")
    for name, rel in curves.items():
        xs = [b["mean_posterior"] for b in rel["bins"]]
        ys = [b["accuracy"] for b in rel["bins"]]
        ax.plot(xs, ys, marker="o", ms=3, label=f"{name} (ECE {rel['ece']:.4f})")
    ax.set_xlabel("reported posterior of the reconstructed base")
    ax.set_ylabel("fraction of sites where it is the true base")
    ax.set_title("Ancestral reconstruction: reliability (synthetic clade)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--work", default="/tmp/phenogen-asr-calibration")
    parser.add_argument("--out", default="bench/results/asr_calibration.json")
    parser.add_argument("--no-iqtree", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = {s: site_records(simulate(s, work), iqtree=not args.no_iqtree) for s in args.seeds}
    half = max(1, len(args.seeds) // 2)
    fit_seeds, test_seeds = args.seeds[:half], args.seeds[half:] or args.seeds[:half]

    def pooled(seeds, method):
        return tuple(np.concatenate([per_seed[s][method][i] for s in seeds]) for i in (0, 1))

    methods = list(per_seed[args.seeds[0]])
    result: dict = {
        "seeds": args.seeds,
        "fit_seeds": fit_seeds,
        "test_seeds": test_seeds,
        "bins": EDGES.tolist(),
    }
    result["all_seeds"] = {m: reliability(*pooled(args.seeds, m)) for m in methods}
    result["per_seed_ece"] = {
        m: {s: reliability(*per_seed[s][m])["ece"] for s in args.seeds} for m in methods
    }
    table = fit_binning(*pooled(fit_seeds, "treetime"))
    post, correct = pooled(test_seeds, "treetime")
    result["test_seeds"] = {m: reliability(*pooled(test_seeds, m)) for m in methods}
    result["test_seeds"]["treetime_binned"] = reliability(apply_binning(post, table), correct)
    result["binning_table"] = [round(v, 5) for v in table]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result["test_seeds"], out.with_suffix(".png"))
    for m, rel in result["test_seeds"].items():
        print(
            f"{m:18s} ECE {rel['ece']:.4f}  mean posterior {rel['mean_posterior']:.4f}  accuracy {rel['accuracy']:.4f}"
        )


if __name__ == "__main__":
    main()
