"""Portraits of reconstructed ancestors: paint chosen nodes with the image model, draw them on the tree.

:func:`paint_portraits` feeds each chosen node's ungapped reconstructed barcode (tips: their own
barcode) to a saved :class:`~phenogen.diffusion.pipeline.DNAToImagePipeline` (``train-image``'s
``OUT/pipeline``) and saves ``portraits/NODE_k.png``, one seeded generator for the whole batch.
:func:`tree_figure` draws the rooted tree (x = distance from the root) with a portrait beside each
chosen node — the figure the HTML report shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phenogen.errors import CheckpointError

__all__ = ["paint_portraits", "tree_figure", "tree_layout"]


def tree_layout(tree) -> dict[str, tuple[float, float]]:
    """``name -> (x, y)``: x is the distance from the root, tips at y = 0, 1, 2 … in preorder."""
    from phenogen.phylo.tree import node_depths

    depth = node_depths(tree)
    pos: dict[str, tuple[float, float]] = {}
    for i, tip in enumerate(tree.get_terminals()):
        pos[tip.name] = (depth[id(tip)], float(i))
    for clade in tree.get_nonterminals(order="postorder"):
        ys = [pos[c.name][1] for c in clade.clades]
        pos[clade.name] = (depth[id(clade)], (min(ys) + max(ys)) / 2)
    return pos


def tree_figure(tree, portraits: Mapping[str, str | Path], path: str | Path, *, zoom: float = 0.5) -> Path:
    """Rectangular tree with ``portraits[node]`` (an image file) drawn at each chosen node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from PIL import Image

    pos = tree_layout(tree)
    n_tips = len(tree.get_terminals())
    fig, ax = plt.subplots(figsize=(8, max(3.0, min(0.25 * n_tips, 40.0))), dpi=110)
    for clade in tree.get_nonterminals():
        x, _ = pos[clade.name]
        ys = [pos[c.name][1] for c in clade.clades]
        ax.plot([x, x], [min(ys), max(ys)], color="0.3", lw=0.8)
        for child in clade.clades:
            cx, cy = pos[child.name]
            ax.plot([x, cx], [cy, cy], color="0.3", lw=0.8)
    if n_tips <= 80:
        for tip in tree.get_terminals():
            x, y = pos[tip.name]
            ax.text(x, y, " " + tip.name, va="center", fontsize=7)
    for name, image_path in portraits.items():
        x, y = pos[name]
        with Image.open(image_path) as im:
            box = OffsetImage(im.convert("RGB"), zoom=zoom)
        ax.add_artist(AnnotationBbox(box, (x, y), frameon=True, pad=0.1))
        ax.text(x, y - 0.6, name, ha="center", va="top", fontsize=7, color="tab:red")
    ax.set_xlabel("substitutions per site from the root")
    ax.set_yticks([])
    ax.invert_yaxis()
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def paint_portraits(
    tree,
    result,
    selected: Sequence[str],
    model_dir: str | Path,
    cfg,
    out_dir: str | Path,
    tip_sequences: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Paint ``cfg.images_per_node`` portraits per chosen node; draw the tree figure; return a summary.

    ``model_dir`` is a saved :class:`~phenogen.diffusion.pipeline.DNAToImagePipeline` (``train-image``'s
    ``OUT/pipeline``, or ``OUT``). Chosen internal nodes are painted from their ungapped reconstructed
    sequence, chosen tips from their own barcode. Files: ``NODE_k.png`` (k = 0 … images_per_node - 1),
    ``tree_portraits.png`` (the tree with portrait 0 of each chosen node) and ``portraits.json``.

    Raises
    ------
    CheckpointError
        ``model_dir`` is not a saved pipeline, or a chosen node has no sequence.
    """
    import torch

    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.phylo.align import ungap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(
            f"--model {model_dir} is not a directory (train one with `phenogen train-image`)"
        )
    seqs = {**(tip_sequences or {}), **result.sequences}
    missing = [n for n in selected if n not in seqs]
    if missing:
        raise CheckpointError(f"no sequence for chosen node(s) {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(model_dir)
    generator = torch.Generator().manual_seed(cfg.seed)
    images = pipe(
        [ungap(seqs[n]) for n in selected],
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale,
        generator=generator,
        num_images_per_sequence=cfg.images_per_node,
        output_type="pil",
    ).images  # images of node i are [i * k, (i + 1) * k)
    k = cfg.images_per_node
    files: dict[str, list[str]] = {}
    for i, name in enumerate(selected):
        files[name] = []
        for j, im in enumerate(images[i * k : (i + 1) * k]):
            p = out / f"{name}_{j}.png"
            im.save(p)
            files[name].append(p.name)
    figure = tree_figure(tree, {n: out / fs[0] for n, fs in files.items() if fs}, out / "tree_portraits.png")
    summary = {
        "model": str(model_dir),
        "images": files,
        "figure": figure.name,
        "settings": {
            "images_per_node": k,
            "num_inference_steps": cfg.num_inference_steps,
            "guidance_scale": cfg.guidance_scale,
            "seed": cfg.seed,
        },
    }
    (out / "portraits.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
