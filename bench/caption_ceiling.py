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
        choices=["true", "dna"],
        default="true",
        help="paint the true traits (the ceiling) or what the DNA writes (the model as trained)",
    )
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
    records = [(r.id.split()[0], r.sequence) for r in read_fasta(args.run / "targets.fasta")]
    names = list(cond.config.caption_traits)
    by_sequence = {}
    for rid, seq in records:
        node = rid if rid in truth else rid.rsplit("_i", 1)[0]  # an individual → its species
        by_sequence[seq] = torch.tensor([float(truth[node][t]) for t in names])

    def encode(sequences, device=None):  # the true traits as the caption, in place of the DNA's
        with torch.no_grad():
            hidden = cond.caption(torch.stack([by_sequence[s] for s in sequences]))
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool)

    if args.captions == "true":
        cond.encode = encode
        cond.caption_matrix = lambda sequences: (
            torch.stack([by_sequence[s] for s in sequences]).double().numpy()
        )
    gen_cfg = json.loads((args.run / "generated" / "config.json").read_text(encoding="utf-8"))
    eval_cfg = json.loads((args.run / "eval" / "config.json").read_text(encoding="utf-8"))
    splits = eval_cfg.get("evaluate", {}).get("splits", ["heldout", "extinct", "ancestor"])
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
