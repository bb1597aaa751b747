"""Counterfactual check on a demo run: how far mutated barcodes drift, and what attribution shows.

a. **Drift.** Held-out barcodes with 0, 1, 5, 20 % of their sites mutated (nested sites per seed): the
   RMSE of the written caption against the unmutated one (many seeds; also by codon position at 5 %)
   and against the true traits; then portraits painted at *the same noise* for every level — mean
   absolute pixel difference to the 0 % portrait and the run's trait probe read on them — next to two
   yardsticks at equal noise: another held-out species' portrait, and the same barcode under other noise.
   Saves the grid of one barcode as ``OUT/counterfactual_mutations.png``.
b. **Attribution.** In-silico mutagenesis of held-out barcodes through the caption head, checked
   against the simulator's truth. The simulator evolves traits by Brownian motion on the tree
   independently of the sequence (``sim/clade.py`` draws them from separate random streams), so no site
   causes a trait; what a site can carry is phylogenetic: its base tracks the lineages that carry a
   trait. For each site and trait, the R² of a one-way ANOVA of the trait on the base at that site
   over the training records is that association; reported: Spearman(|attribution|, R²), and how the
   attribution mass splits over codon positions 1/2/3 and over variable / invariant training sites.
   Saves ``OUT/counterfactual_attribution.png``.

    .venv/bin/python bench/counterfactual_check.py --run runs/s0_base --out docs

Prints a markdown table and writes ``OUT/counterfactual_check.json``. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

LEVELS = (0.0, 1.0, 5.0, 20.0)


def _rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).mean(-1))


def _mean_sd(x) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64).ravel()
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0, "n": int(x.size)}


def _pairs(x: np.ndarray, metric) -> list[float]:
    return [float(metric(x[i], x[j])) for i in range(len(x)) for j in range(i + 1, len(x))]


def anova_r2(codes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(T, L) R² of a one-way ANOVA of each trait ``y[:, t]`` on the base ``codes[:, l]`` (0..3; -1 = N, left out
    of that site's groups but kept in its total, a conservative choice); 0 at invariant sites."""
    n, _ = codes.shape
    yc = y - y.mean(0)  # (N, T)
    ss_total = (yc**2).sum(0)  # (T,)
    between = np.zeros((y.shape[1], codes.shape[1]))
    for b in range(4):
        ind = (codes == b).astype(np.float64)  # (N, L)
        count = ind.sum(0)  # (L,)
        sums = ind.T @ yc  # (L, T)
        with np.errstate(invalid="ignore", divide="ignore"):
            between += np.where(count[:, None] > 0, sums**2 / np.maximum(count, 1)[:, None], 0.0).T
    return between / np.where(ss_total > 0, ss_total, 1.0)[:, None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", type=Path, default=Path("runs/s0_base"), help="a `phenogen demo` output directory"
    )
    ap.add_argument("--out", type=Path, default=Path("docs"), help="where the figures and the JSON go")
    ap.add_argument("--record", default=None, help="the held-out barcode of the figures (default: the first)")
    ap.add_argument("--caption-seeds", type=int, default=20, help="mutation seeds for the caption drift")
    ap.add_argument(
        "--image-seeds", type=int, default=3, help="seeds (noise and mutations) for the portraits"
    )
    args = ap.parse_args(argv)
    import torch

    from phenogen import api
    from phenogen import counterfactual as cf
    from phenogen.dna.seqio import read_fasta
    from phenogen.evaluate.probe import load_probe, predict
    from phenogen.sim.traitspec import CONTINUOUS

    t0 = time.time()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    run = api.load_run(args.run)
    model = run.model
    cond = model.pipeline.conditioner
    names = model.caption_names
    cont = [names.index(t) for t in CONTINUOUS if t in names]
    targets = read_fasta(args.run / "targets.fasta", policy="mask").records
    heldout = [(r.id, r.sequence) for r in targets if "split=heldout" in r.description]
    with open(args.run / "data" / "manifest.tsv", newline="", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh, delimiter="\t"))
    truth = {r["record_id"]: np.array([float(r[f"trait:{t}"]) for t in names]) for r in manifest}
    train = [r for r in manifest if r["split"] == "train"]
    record = args.record or heldout[0][0]
    seq0 = dict(heldout)[record]
    ids = [rid for rid, _ in heldout]
    seqs = [s for _, s in heldout]
    length = len(seq0)
    results: dict = {
        "run": str(args.run),
        "record": record,
        "length": length,
        "heldout": ids,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device": str(model.pipeline.device),
        },  # fmt: skip
        "settings": {
            "scheduler": model.settings.scheduler,
            "steps": model.settings.steps,
            "guidance_scale": model.settings.guidance_scale,
        },  # fmt: skip
    }

    # ---- a. caption drift: many seeds, cheap (the caption head only)
    written0 = cond.caption_matrix(seqs)  # (B, T)
    drift = {}
    for p in LEVELS:
        muts = [cf.mutate(s, p / 100, seed=k) for s in seqs for k in range(args.caption_seeds)]
        caps = cond.caption_matrix(muts).reshape(len(seqs), args.caption_seeds, -1)
        true = np.stack([truth[i] for i in ids])[:, None, cont]
        drift[f"{p:g}"] = {
            "sites": int(round(p / 100 * length)),
            "caption_rmse_vs_unmutated": _mean_sd(_rmse(caps, written0[:, None])),
            "caption_rms": _mean_sd(np.sqrt((caps**2).mean(-1))),
            "caption_rmse_vs_truth_continuous": _mean_sd(_rmse(caps[..., cont], true)),
        }
    by_position = {}
    for where in ("random", "codon1", "codon2", "codon3"):
        n = int(round(0.05 * length))  # the same number of sites wherever they go
        muts = [cf.mutate(s, n=n, where=where, seed=k) for s in seqs for k in range(args.caption_seeds)]
        caps = cond.caption_matrix(muts).reshape(len(seqs), args.caption_seeds, -1)
        by_position[where] = _mean_sd(_rmse(caps, written0[:, None]))
    results["caption_drift"] = drift
    results["caption_drift_5pct_sites_by_codon_position"] = by_position
    results["caption_yardsticks"] = {
        "between_heldout_species": _mean_sd(_pairs(written0, _rmse)),
        "written_vs_truth_continuous": _mean_sd(
            _rmse(written0[:, cont], np.stack([truth[i][cont] for i in ids]))
        ),
    }

    # ---- a. portraits at equal noise (the mutation seed is the noise seed)
    probe = load_probe(args.run / "eval" / "probe")
    n_probe = len(probe.spec.continuous)
    pix = {f"{p:g}": [] for p in LEVELS}
    read = {f"{p:g}": [] for p in LEVELS}
    zero_images, zero_reads = [], []
    t_paint = time.time()
    for k in range(args.image_seeds):
        records = {f"{rid}|{p:g}": cf.mutate(s, p / 100, seed=k) for rid, s in heldout for p in LEVELS}
        portraits = model.paint(records, images=1, seed=k, shared_noise=True)
        arrays = {key: np.asarray(portraits.images[key][0], dtype=np.float64) / 255 for key in records}
        batch = torch.from_numpy(np.stack([np.asarray(portraits.images[key][0]) for key in records]))
        reads = dict(
            zip(records, predict(probe, batch.permute(0, 3, 1, 2).contiguous())[:, :n_probe], strict=True)
        )
        for rid, _ in heldout:
            for p in LEVELS:
                key, base = f"{rid}|{p:g}", f"{rid}|0"
                pix[f"{p:g}"].append(np.abs(arrays[key] - arrays[base]).mean())
                read[f"{p:g}"].append(_rmse(reads[key], reads[base]))
        zero_images.append(np.stack([arrays[f"{rid}|0"] for rid in ids]))
        zero_reads.append(np.stack([reads[f"{rid}|0"] for rid in ids]))
    t_paint = time.time() - t_paint
    mad = lambda a, b: np.abs(a - b).mean()  # noqa: E731
    results["portrait_drift"] = {
        p: {"pixel_mad_vs_unmutated": _mean_sd(pix[p]), "probe_rmse_vs_unmutated": _mean_sd(read[p])}
        for p in pix
    }
    results["portrait_yardsticks"] = {
        "other_heldout_species_same_noise": {
            "pixel_mad": _mean_sd([v for z in zero_images for v in _pairs(z, mad)]),
            "probe_rmse": _mean_sd([v for z in zero_reads for v in _pairs(z, _rmse)]),
        },
        "same_barcode_other_noise": {
            "pixel_mad": _mean_sd([v for i in range(len(ids)) for v in _pairs(np.stack([z[i] for z in zero_images]), mad)]),
            "probe_rmse": _mean_sd([v for i in range(len(ids)) for v in _pairs(np.stack([z[i] for z in zero_reads]), _rmse)]),
        },
    }  # fmt: skip
    sheet, _ = cf.counterfactual_grid(
        model, seq0, [("0% mutated" if p == 0 else f"{p:g}% mutated ({round(p / 100 * length)} sites)",
                       cf.mutate(seq0, p / 100, seed=0)) for p in LEVELS],
        images=4, seed=0, scale=2,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out / "counterfactual_mutations.png")

    # ---- b. attribution vs the phylogenetic association of each site with each trait
    t_attr = time.time()
    attrs = np.stack([cf.attribution(model, s) for s in seqs])  # (B, T, L)
    t_attr = (time.time() - t_attr) / len(seqs)
    a_rec = attrs[ids.index(record)]
    from scipy.stats import spearmanr

    from phenogen.diffusion.conditioning import _base_codes

    train_seqs = [r["sequence"] for r in train]
    if {len(s) for s in train_seqs} != {length}:
        raise SystemExit(
            "the training barcodes differ in length from the held-out ones; this check needs one length"
        )
    codes = np.stack([_base_codes(s) for s in train_seqs])  # (N, L)
    y = np.stack([[float(r[f"trait:{t}"]) for t in names] for r in train])  # (N, T)
    r2 = anova_r2(codes, y)  # (T, L)
    variable = np.array([len(set(codes[:, i][codes[:, i] >= 0])) > 1 for i in range(length)])
    position = np.arange(length) % 3
    cf.attribution_figure(
        a_rec, names, args.out / "counterfactual_attribution.png", record_id=record, barcode=seq0,
        marks=list(np.nonzero(variable)[0] + 1), marks_label=f"variable among the {len(train)} training barcodes",
    )  # fmt: skip

    def association(a: np.ndarray) -> dict:
        rho_all = [spearmanr(a[t], r2[t]).statistic for t in range(len(names))]
        rho_var = [spearmanr(a[t, variable], r2[t, variable]).statistic for t in range(len(names))]
        site = a.sum(0)
        mass = site / site.sum()
        return {
            "spearman_abs_attr_vs_r2_all_sites": {"mean_over_traits": float(np.nanmean(rho_all)),
                                                  "per_trait": dict(zip(names, map(float, rho_all), strict=True))},
            "spearman_abs_attr_vs_r2_variable_sites": {"mean_over_traits": float(np.nanmean(rho_var)),
                                                       "per_trait": dict(zip(names, map(float, rho_var), strict=True))},
            "spearman_site_total_vs_mean_r2_all_sites": float(spearmanr(site, r2.mean(0)).statistic),
            "spearman_site_total_vs_mean_r2_variable_sites": float(spearmanr(site[variable], r2.mean(0)[variable]).statistic),
            "mass_by_codon_position": [float(mass[position == k].sum()) for k in range(3)],
            "mass_on_variable_sites": float(mass[variable].sum()),
            "mass_per_site_ratio_variable_vs_invariant": float(mass[variable].mean() / mass[~variable].mean()),
        }  # fmt: skip

    def null_rho(a: np.ndarray, draws: int = 20) -> dict:
        """The same Spearman at variable sites with the traits permuted across training records: what the
        site patterns alone give (balanced sites have larger R² by chance) — the baseline of the rho above."""
        rng = np.random.default_rng(0)
        rhos = []
        for _ in range(draws):
            r2p = anova_r2(codes, y[rng.permutation(len(y))])
            rhos.append(
                np.nanmean([spearmanr(a[t, variable], r2p[t, variable]).statistic for t in range(len(names))])
            )
        return _mean_sd(rhos)

    results["attribution"] = {
        "method": "in-silico mutagenesis through conditioner.caption_matrix: mean |Δ written caption| over the 3 "
        "substitutions of each site",
        "seconds_per_barcode": t_attr,
        "training_records": len(train),
        "variable_sites": int(variable.sum()),
        "variable_sites_by_codon_position": [int(variable[position == k].sum()) for k in range(3)],
        "mean_r2_variable_sites": float(r2[:, variable].mean()),
        "record": association(a_rec),
        "mean_over_heldout": association(attrs.mean(0)),
        "null_spearman_variable_sites_traits_permuted": {
            "record": null_rho(a_rec), "mean_over_heldout": null_rho(attrs.mean(0))},
    }  # fmt: skip
    results["seconds"] = {"total": time.time() - t0, "painting": t_paint}
    from phenogen.fsio import atomic_write_json

    atomic_write_json(args.out / "counterfactual_check.json", results)
    print(_table(results))
    return 0


def _table(r: dict) -> str:
    f = lambda d: f"{d['mean']:.3f} ± {d['sd']:.3f}"  # noqa: E731
    lines = [
        f"Counterfactual check — {r['run']}, {len(r['heldout'])} held-out barcodes ({r['machine']['device']}, "
        f"{r['machine']['cpus']} CPUs)",
        "",
        "| mutated | sites | caption RMSE vs 0 % | caption RMS | caption RMSE vs truth (cont.) | pixel MAD vs 0 % | probe RMSE vs 0 % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p, d in r["caption_drift"].items():
        q = r["portrait_drift"][p]
        lines.append(f"| {p} % | {d['sites']} | {f(d['caption_rmse_vs_unmutated'])} | {f(d['caption_rms'])} | "
                     f"{f(d['caption_rmse_vs_truth_continuous'])} | {f(q['pixel_mad_vs_unmutated'])} | "
                     f"{f(q['probe_rmse_vs_unmutated'])} |")  # fmt: skip
    y, py = r["caption_yardsticks"], r["portrait_yardsticks"]
    lines += [
        f"| another held-out species | | {f(y['between_heldout_species'])} | | | "
        f"{f(py['other_heldout_species_same_noise']['pixel_mad'])} | {f(py['other_heldout_species_same_noise']['probe_rmse'])} |",
        f"| same barcode, other noise | | | | | {f(py['same_barcode_other_noise']['pixel_mad'])} | "
        f"{f(py['same_barcode_other_noise']['probe_rmse'])} |",
        "",
        "| 5 % of sites (33) at | caption RMSE vs 0 % |",
        "| --- | --- |",
        *[f"| {w} | {f(d)} |" for w, d in r["caption_drift_5pct_sites_by_codon_position"].items()],
        "",
        "| attribution (ISM) | " + r["record"] + " | mean over held-out |",
        "| --- | --- | --- |",
    ]  # fmt: skip
    a = r["attribution"]
    rows = [
        ("Spearman(|attr|, R²), all sites, mean over traits",
         lambda x: f"{x['spearman_abs_attr_vs_r2_all_sites']['mean_over_traits']:.3f}"),
        ("Spearman(|attr|, R²), variable sites, mean over traits",
         lambda x: f"{x['spearman_abs_attr_vs_r2_variable_sites']['mean_over_traits']:.3f}"),
        ("Spearman(site total, mean R²), variable sites",
         lambda x: f"{x['spearman_site_total_vs_mean_r2_variable_sites']:.3f}"),
        ("mass at codon positions 1 / 2 / 3", lambda x: " / ".join(f"{m:.2f}" for m in x["mass_by_codon_position"])),
        (f"mass on the {a['variable_sites']} variable sites", lambda x: f"{x['mass_on_variable_sites']:.3f}"),
        ("mass per site, variable / invariant", lambda x: f"{x['mass_per_site_ratio_variable_vs_invariant']:.2f}"),
    ]  # fmt: skip
    lines += [f"| {label} | {g(a['record'])} | {g(a['mean_over_heldout'])} |" for label, g in rows]
    nr = a["null_spearman_variable_sites_traits_permuted"]
    lines.insert(len(lines) - len(rows) + 2, "| … the same with the traits permuted across training records (null, 20 draws) | "
                 f"{f(nr['record'])} | {f(nr['mean_over_heldout'])} |")  # fmt: skip
    lines += [
        "",
        f"variable training sites: {a['variable_sites']} of {r['length']} "
        f"(codon positions 1/2/3: {a['variable_sites_by_codon_position']}); mean ANOVA R² there "
        f"{a['mean_r2_variable_sites']:.3f}",
        f"run time: {r['seconds']['total']:.0f} s (painting {r['seconds']['painting']:.0f} s, "
        f"attribution {a['seconds_per_barcode']:.2f} s per barcode)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
