"""The rendering ceiling of a captioned image model: paint every target from its *true* traits.

With ``image.cond_head = "caption"`` the DNA conditioner writes a caption (trait-like values) that the
prior's caption encoder and UNet paint. This script replaces what the DNA wrote by the target's true
trait values (synthetic clades know them) and scores the portraits with the run's own probe, next to
the run's baselines. The result bounds what a perfect DNA → caption map could reach with this
prior: whatever error remains is the renderer's (VAE, UNet, sampler) and the probe's.

    .venv/bin/python bench/caption_ceiling.py --run runs/demo --guidance 3 6 --out runs/demo/ceiling

Needs a demo run directory (``data/``, ``targets.fasta``, ``image/pipeline`` with the caption head,
``eval/probe``). Writes ``OUT/g{G}/`` (generated portraits + ``metrics.json``) and ``OUT/ceiling.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from _run_eval import score_with_run_probe


def _tree_truth_captions(
    run: Path, records, truth, names, kind: str, cond=None, tip_noise: float = 0.0
) -> dict:
    """sequence -> caption: the training species' true traits reconstructed at each target under Brownian motion,
    on the run's estimated tree (at the tip / matched node the demo paints) or on the true tree (the oracle)."""
    import numpy as np
    import torch

    from phenogen.data.dataset import load_dataset
    from phenogen.evaluate.baselines import bm_conditional_mean
    from phenogen.phylo.command import training_species

    train = sorted(training_species(run / "data"))
    known = {sp: np.array([float(truth[sp][t]) for t in names]) for sp in train}
    if kind == "tree":  # what the training species' barcodes write, as the demo paints
        from phenogen.dna.seqio import read_fasta
        from phenogen.phylo.align import ungap

        tips = {
            r.id: r.sequence
            for r in read_fasta(run / "ancestors" / "input.fasta", policy="mask", allow_gaps=True).records
        }
        train = [t for t in train if t in tips]
        known = dict(zip(train, cond.caption_matrix([ungap(tips[t]) for t in train]), strict=True))
    ds = load_dataset(run / "data")
    species = {r.record_id: r.species for r in ds.records(("heldout", "extinct", "train"))}
    if kind == "oracle":
        node_of = {
            rid: rid if rid in truth else species.get(rid, rid.rsplit("_i", 1)[0]) for rid, _ in records
        }
        pred = bm_conditional_mean(ds.tree_path, known, sorted(set(node_of.values())))
    else:
        anc = json.loads((run / "ancestors" / "targets.json").read_text(encoding="utf-8"))["targets"]
        recon = {t["record_id"]: t["recon_node"] for t in anc}
        node_of = {rid: recon.get(rid, species.get(rid, rid)) for rid, _ in records}
        tree = run / "ancestors" / "tree.nwk"
        pred = {}
        # leave a target's own tip out (held-out / extinct are not training tips)
        for node in set(node_of.values()):
            tips = {sp: v for sp, v in known.items() if sp != node}
            pred[node] = bm_conditional_mean(tree, tips, [node], tip_noise=tip_noise).get(node)
    out = {}
    for rid, seq in records:
        v = pred.get(node_of[rid])
        if v is None:
            sys.exit(f"{run}: target {rid} (node {node_of[rid]}) is not on the tree")
        out[seq] = torch.tensor(v, dtype=torch.float32)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `phenogen demo` output directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    ap.add_argument(
        "--prior-caption-encoder",
        action="store_true",
        help="use the prior's caption encoder as shipped (default: the fine-tuned one in the pipeline)",
    )
    ap.add_argument(
        "--caption-decoder",
        type=Path,
        help="decode with this caption decoder (a prior's caption_decoder/); 'none' = the VAE's own decoder",
    )
    ap.add_argument(
        "--captions",
        choices=["true", "dna", "tree", "tree-true-tips", "oracle"],
        default="true",
        help="paint the true traits (the ceiling), what the DNA writes (the model as trained), the training species' "
        "written captions reconstructed on the run's estimated tree (what the demo paints; --tip-noise), the Brownian-motion "
        "conditional mean of the training species' true traits on the run's estimated tree (tips' bound) or on the "
        "true tree (the `oracle` baseline's vector, painted)",
    )
    ap.add_argument(
        "--tip-noise", type=float, default=0.0, help="tree captions: tip noise (bm_conditional_mean)"
    )
    ap.add_argument("--splits", nargs="+", help="paint and score only these splits' targets")
    args = ap.parse_args(argv)

    import torch

    from phenogen.diffusion.generate import generate_images
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.diffusion.prior import CaptionEncoder, builtin_prior_dir
    from phenogen.dna.seqio import read_fasta

    pipe = load_pipeline(args.run / "image" / "pipeline")
    cond = pipe.conditioner
    if cond.config.head != "caption":
        sys.exit(f"{args.run}: the image model has no caption head (image.cond_head = 'caption')")
    if args.caption_decoder is not None:
        if str(args.caption_decoder) == "none":
            pipe.caption_decoder = None
        else:
            from phenogen.diffusion.caption_decoder import CaptionDecoder

            pipe.caption_decoder = CaptionDecoder.from_pretrained(
                args.caption_decoder, torch_dtype=torch.float32
            )
    if args.prior_caption_encoder:
        shipped = CaptionEncoder.from_pretrained(builtin_prior_dir("cpu") / "caption_encoder")
        cond.caption.load_state_dict(shipped.state_dict())
    truth_path = args.run / "data" / "truth" / "traits.tsv"
    truth = {r["node"]: r for r in csv.DictReader(open(truth_path, encoding="utf-8"), delimiter="\t")}
    fasta = read_fasta(args.run / "targets.fasta")
    records = [(r.id.split()[0], r.sequence) for r in fasta
               if not args.splits or any(f"split={sp}" in f"{r.id} {r.description}" for sp in args.splits)]  # fmt: skip
    names = list(cond.config.caption_traits)
    by_sequence = {}
    for rid, seq in records:
        node = rid if rid in truth else rid.rsplit("_i", 1)[0]  # an individual → its species
        by_sequence[seq] = torch.tensor([float(truth[node][t]) for t in names])

    def encode(sequences, device=None):  # the true traits as the caption, in place of the DNA's
        with torch.no_grad():
            hidden = cond.caption(torch.stack([by_sequence[s] for s in sequences]))
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool)

    if args.captions in ("tree", "tree-true-tips", "oracle"):
        by_sequence = _tree_truth_captions(
            args.run, records, truth, names, args.captions, cond, args.tip_noise
        )
    if args.captions != "dna":
        cond.encode = encode
        cond.caption_matrix = lambda sequences: (
            torch.stack([by_sequence[s] for s in sequences]).double().numpy()
        )
    gen_cfg = json.loads((args.run / "generated" / "config.json").read_text(encoding="utf-8"))
    eval_cfg = json.loads((args.run / "eval" / "config.json").read_text(encoding="utf-8"))
    splits = args.splits or eval_cfg.get("evaluate", {}).get("splits", ["heldout", "extinct", "ancestor"])
    g = gen_cfg.get("generate", gen_cfg)
    result: dict = {
        "run": str(args.run),
        "caption_encoder": "prior" if args.prior_caption_encoder else "pipeline",
        "caption_decoder": str(args.caption_decoder) if args.caption_decoder else "pipeline",
        "captions": args.captions,
    }
    for guidance in args.guidance:
        out = args.out / f"g{guidance:g}"
        generate_images(pipe, records, out / "generated", images_per_sequence=int(g.get("images_per_sequence", 2)),
                        steps=int(g.get("steps", 25)), guidance_scale=guidance,
                        scheduler=g.get("scheduler", "dpm++2m-karras"), seed=int(g.get("seed", 0)))  # fmt: skip
        metrics = score_with_run_probe(args.run, out / "generated", out / "eval", splits)
        result[f"guidance_{guidance:g}"] = {
            split: {m: v["trait_rmse"] for m, v in body["methods"].items()}
            for split, body in metrics["splits"].items()
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for key, table in result.items():
        if key.startswith("guidance_"):
            for split, row in table.items():
                print(f"{key:14s} {split:9s} {args.captions} captions {row['generated']:.3f}   "
                      f"mean {row['mean']:.3f}  nearest {row['nearest']:.3f}  truth {row['truth']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
