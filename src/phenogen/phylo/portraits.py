"""Portraits of reconstructed ancestors: paint chosen nodes with the image model, draw them on the tree.

:func:`paint_portraits` paints each chosen node with a saved
:class:`~phenogen.diffusion.pipeline.DNAToImagePipeline` (``train-image``'s ``OUT/pipeline``) and saves
``portraits/NODE_k.png``, one seeded generator for the whole batch. What a node is painted from
(``[ancestors] portrait_condition``):

``sequence``
    Its ungapped reconstructed barcode (tips: their own barcode), read by the model like any barcode.
``tree``
    For a model with the caption head: the caption each *tip's* barcode writes, reconstructed at the
    node under Brownian motion on the tree (:func:`tree_captions`) — ancestral state reconstruction of
    the written phenotype, as comparative biologists reconstruct continuous characters. A deep node
    gets a phylogenetically weighted average of its descendants' descriptions, a shallow one stays near
    its close descendants; it does not depend on how well a k-mer map reads one reconstructed barcode.
    Measured against the truth on the synthetic clade in BENCHMARKS.md ("Ancestor portraits from the tree").
:func:`paint_bootstrap_row` (``--bootstrap N`` with ``--model``, sequence mode): per chosen node, its
distinct reconstructions over the bootstrap trees painted from the same noise, in a row beside the main
tree's portrait — the spread of the ancestor as pictures.
:func:`tree_figure` draws the rooted tree (x = distance from the root) with a portrait beside each
chosen node — the figure the HTML report shows.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.errors import CheckpointError, ConfigError, DataError

__all__ = [
    "paint_portraits",
    "paint_bootstrap_row",
    "place_captions",
    "reconstruct_captions",
    "tree_captions",
    "tree_figure",
    "tree_layout",
    "draw_branches",
]


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


def draw_branches(
    ax, tree, pos: Mapping[str, tuple[float, float]], *, color: str = "0.3", lw: float = 0.8
) -> None:
    """Draw ``tree``'s branches on matplotlib axes ``ax`` as a rectangular tree at :func:`tree_layout` ``pos``."""
    for clade in tree.get_nonterminals():
        x, _ = pos[clade.name]
        ys = [pos[c.name][1] for c in clade.clades]
        ax.plot([x, x], [min(ys), max(ys)], color=color, lw=lw)
        for child in clade.clades:
            cx, cy = pos[child.name]
            ax.plot([x, cx], [cy, cy], color=color, lw=lw)


def tree_figure(
    tree,
    portraits: Mapping[str, str | Path],
    path: str | Path,
    *,
    zoom: float = 0.5,
    labels: Mapping[str, str] | None = None,
    low_support: float = 0.7,
) -> Path:
    """Rectangular tree with ``portraits[node]`` (an image file) drawn at each chosen node.

    Tips are labelled ``labels[tip]`` (their species; default the tip name) up to 300 tips; internal
    nodes with branch support (``clade.support``) show it, in red below ``low_support``, up to 150 tips.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from phenogen.data.dataset import read_image

    pos = tree_layout(tree)
    n_tips = len(tree.get_terminals())
    fig, ax = plt.subplots(figsize=(8, max(3.0, min(0.25 * n_tips, 40.0))), dpi=110)
    draw_branches(ax, tree, pos)
    labels = labels or {}
    if n_tips <= 300:
        size = 7 if n_tips <= 80 else 4
        for tip in tree.get_terminals():
            x, y = pos[tip.name]
            ax.text(x, y, " " + labels.get(tip.name, tip.name), va="center", fontsize=size)
    if n_tips <= 150:
        for clade in tree.get_nonterminals():
            support = getattr(clade, "support", None)
            if support is not None and clade is not tree.root:
                x, y = pos[clade.name]
                color = "tab:red" if support < low_support else "0.35"
                ax.text(x, y, f"{support:.2f} ", ha="right", va="bottom", fontsize=5, color=color)
    for name, image_path in portraits.items():
        x, y = pos[name]
        box = OffsetImage(read_image(image_path, "portrait"), zoom=zoom)
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


def tree_captions(
    tree, tip_captions: Mapping[str, np.ndarray], nodes: Sequence[str], tip_noise: float | None = 0.0
) -> dict[str, np.ndarray]:
    """Captions of ``nodes`` reconstructed from the tips' under Brownian motion on ``tree``.

    The conditional mean ``μ̂ + C_nK C_KK⁻¹ (x_K − μ̂)`` of every caption value
    (:func:`phenogen.evaluate.baselines.bm_conditional_mean`, GLS root state) — for an internal node
    the maximum-likelihood ancestral state given the tips. ``tree`` is a Newick file or a parsed tree;
    a tip among ``nodes`` keeps (up to 1e-6 jitter) its own caption when ``tip_noise`` is 0.

    ``tip_noise`` treats the tips' captions as measurements with independent error of that variance (a
    fraction of the mean root-to-tip variance; :func:`phenogen.evaluate.baselines.bm_conditional_mean`):
    the reconstruction then leans on the consensus of relatives rather than on the closest tip's caption
    alone. ``None`` chooses it by leave-one-out over the tips (:func:`choose_tip_noise`).

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.nwk"
    >>> _ = p.write_text("((a:1,b:1)x:1,c:2)r;")
    >>> caps = {"a": np.array([1.0]), "b": np.array([3.0]), "c": np.array([-4.0])}
    >>> round(float(tree_captions(p, caps, ["x"])["x"][0]), 3)  # between a and b, pulled towards c
    1.143

    Raises
    ------
    DataError
        No tip caption, or a node that is not in the tree.
    """
    from phenogen.evaluate.baselines import bm_conditional_mean, tree_node_names

    if not tip_captions:
        raise DataError("tree captions need the captions of at least one tip")
    present = tree_node_names(tree)
    missing = [n for n in (*tip_captions, *nodes) if n not in present]
    if missing:
        raise DataError(f"node(s) {', '.join(missing[:5])} are not in the tree")
    if tip_noise is None:
        tip_noise = choose_tip_noise(tree, tip_captions)
    return bm_conditional_mean(tree, dict(tip_captions), list(nodes), tip_noise=tip_noise)


def choose_tip_noise(tree, tip_captions: Mapping[str, np.ndarray]) -> float:
    """The tip-noise value of :data:`~phenogen.evaluate.baselines.TIP_NOISE_GRID` whose leave-one-out
    prediction of each tip's caption from the others' is best (0 with fewer than 3 tips): no true trait
    is needed (:func:`phenogen.evaluate.baselines.loo_tip_noise`)."""
    from phenogen.evaluate.baselines import loo_tip_noise

    if len(tip_captions) < 3:
        return 0.0
    return loo_tip_noise(tree, dict(tip_captions))[0]


def reconstruct_captions(
    conditioner,
    tree,
    tip_sequences: Mapping[str, str],
    nodes: Sequence[str],
    tips: Collection[str] | None = None,
    tip_captions: Mapping[str, np.ndarray] | None = None,
    tip_noise: float | None = 0.0,
) -> dict[str, np.ndarray]:
    """The captions the tips of ``tree`` (those in ``tip_sequences``) write with ``conditioner``,
    reconstructed at ``nodes`` by :func:`tree_captions` — what ``portrait_condition = "tree"`` paints.
    ``tips`` restricts the tips whose captions are used (``[ancestors] caption_tips = "train"``: the
    training species, whose captions were fitted to their photos); ``None`` uses every tip.
    ``tip_captions`` replaces the written caption of the tips it names (e.g. the training species'
    captions inverted from their photos, :mod:`phenogen.diffusion.invert`). ``tip_noise`` as
    :func:`tree_captions` (``None``: chosen by leave-one-out over the tips used).

    Raises
    ------
    ConfigError
        ``conditioner`` has no caption head.
    """
    from phenogen.evaluate.baselines import as_tree
    from phenogen.phylo.align import ungap

    if conditioner.config.head != "caption":
        raise ConfigError(
            f"portrait_condition = 'tree' needs a model with the caption head (image.cond_head = 'caption'); "
            f"this one has the '{conditioner.config.head}' head (or paint from 'sequence')"
        )
    tree = as_tree(tree)[0]
    used = [
        c.name for c in tree.get_terminals() if c.name in tip_sequences and (tips is None or c.name in tips)
    ]
    if not used:
        raise DataError("none of the tips chosen for tree captions is a tip of the tree with a sequence")
    given = tip_captions or {}
    written = dict(
        zip(used, conditioner.caption_matrix([ungap(tip_sequences[t]) for t in used]), strict=True)
    )
    caps = {t: np.asarray(given[t], dtype=np.float64) if t in given else written[t] for t in used}
    return tree_captions(tree, caps, list(nodes), tip_noise=tip_noise)


def place_captions(
    conditioner,
    tree,
    tip_sequences: Mapping[str, str],
    reference_tips: Collection[str],
    targets: Sequence[str],
    own_weight: float = 0.0,
    tip_captions: Mapping[str, np.ndarray] | None = None,
    tip_noise: float | None = 0.0,
) -> dict[str, np.ndarray]:
    """Captions of the tips ``targets`` (held-out or extinct barcodes placed on ``tree``) read through their
    relatives: the captions the ``reference_tips`` (training species) write, their Brownian-motion
    conditional mean at each target's tip (:func:`tree_captions` with the target's own caption left out),
    blended with the caption the target's own barcode writes: ``(1 − w)·tree + w·own``.

    This is how phylogenetic comparative methods predict a species' continuous characters from its
    relatives'; the k-mer map alone reads one barcode without its phylogenetic context. ``tip_captions``
    replaces the written captions of the reference tips it names and ``tip_noise`` is as
    :func:`reconstruct_captions`.

    Raises
    ------
    ConfigError
        ``conditioner`` has no caption head.
    DataError
        A target is not a tip of the tree with a sequence, or ``own_weight`` is outside [0, 1].
    """
    from phenogen.phylo.align import ungap

    if not 0.0 <= own_weight <= 1.0:
        raise DataError(f"own_weight must be in [0, 1], got {own_weight}")
    excluded = set(targets)
    refs = [t for t in reference_tips if t not in excluded]
    given = {t: c for t, c in (tip_captions or {}).items() if t not in excluded}
    placed = reconstruct_captions(
        conditioner, tree, tip_sequences, list(targets), tips=refs, tip_captions=given, tip_noise=tip_noise
    )
    missing = [t for t in targets if t not in placed or t not in tip_sequences]
    if missing:
        raise DataError(f"target(s) {', '.join(missing[:5])} are not tips of the tree with a sequence")
    if own_weight == 0.0:
        return placed
    own = conditioner.caption_matrix([ungap(tip_sequences[t]) for t in targets])
    return {t: (1 - own_weight) * placed[t] + own_weight * own[i] for i, t in enumerate(targets)}


def paint_portraits(
    tree,
    result,
    selected: Sequence[str],
    model_dir: str | Path,
    cfg,
    out_dir: str | Path,
    tip_sequences: Mapping[str, str] | None = None,
    caption_tips: Collection[str] | None = None,
    labels: Mapping[str, str] | None = None,
    bootstrap=None,
) -> dict[str, Any]:
    """Paint ``cfg.images_per_node`` portraits per chosen node; draw the tree figure; return a summary.

    ``bootstrap`` (a :class:`~phenogen.phylo.bootstrap.TreeSample`, ``--bootstrap N``) adds, per chosen
    internal node, a row of portraits of its distinct replicate reconstructions (:func:`paint_bootstrap_row`).

    ``labels`` maps tip names to what the figure prints (their species; :func:`tree_figure`).

    ``model_dir`` is a saved :class:`~phenogen.diffusion.pipeline.DNAToImagePipeline` (``train-image``'s
    ``OUT/pipeline``, or ``OUT``). With ``cfg.portrait_condition == "sequence"`` chosen internal nodes
    are painted from their ungapped reconstructed sequence, chosen tips from their own barcode; with
    ``"tree"`` every chosen node from the tips' captions reconstructed on the tree (module doc; only
    the ``caption_tips`` when given).
    Files: ``NODE_k.png`` (k = 0 … images_per_node - 1), ``tree_portraits.png`` (the tree with
    portrait 0 of each chosen node) and ``portraits.json`` (with the captions painted, for ``tree``).

    Raises
    ------
    CheckpointError
        ``model_dir`` is not a saved pipeline, or a chosen node has no sequence.
    ConfigError
        ``portrait_condition = "tree"`` with a model that has no caption head.
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
    condition = cfg.portrait_condition
    captions = None
    if condition == "tree":
        recon = reconstruct_captions(
            pipe.conditioner, tree, seqs, selected, caption_tips, tip_noise=cfg.caption_tip_noise
        )
        captions = np.stack([recon[n] for n in selected])
        painted: dict[str, Any] = {"captions": captions}
    else:
        painted = {"sequences": [ungap(seqs[n]) for n in selected]}
    from phenogen.diffusion.pipeline import make_scheduler

    # the settings the pipeline was tuned with (generation_config.json) for those the config leaves unset
    chosen = pipe.generation_settings.override(cfg.scheduler, cfg.num_inference_steps, cfg.guidance_scale)
    pipe.scheduler = make_scheduler(chosen.scheduler, pipe.scheduler.config)
    generator = torch.Generator().manual_seed(cfg.seed)
    images = pipe(
        **painted,
        num_inference_steps=chosen.steps,
        guidance_scale=chosen.guidance_scale,
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
    figure = tree_figure(
        tree,
        {n: out / fs[0] for n, fs in files.items() if fs},
        out / "tree_portraits.png",
        labels=labels,
    )
    summary = {
        "model": str(model_dir),
        "images": files,
        "figure": figure.name,
        "settings": {
            "images_per_node": k,
            "scheduler": chosen.scheduler,
            "num_inference_steps": chosen.steps,
            "guidance_scale": chosen.guidance_scale,
            "seed": cfg.seed,
            "portrait_condition": condition,
            "caption_tips": None if caption_tips is None else sorted(caption_tips),
        },
    }
    if captions is not None:
        names = pipe.conditioner.caption_names
        summary["captions"] = {
            n: dict(zip(names, (round(float(v), 4) for v in row), strict=True))
            for n, row in zip(selected, captions, strict=True)
        }
    if bootstrap is not None and cfg.bootstrap_portraits:
        if condition == "sequence":
            summary["bootstrap_rows"] = paint_bootstrap_row(
                pipe, bootstrap, selected, result.sequences, chosen, cfg, out
            )
        else:
            import logging

            logging.getLogger(__name__).warning(
                "bootstrap portraits are painted from replicate sequences; portrait_condition = 'tree' "
                "has no replicate row yet"
            )
    (out / "portraits.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def paint_bootstrap_row(
    pipe, sample, selected: Sequence[str], main_sequences: Mapping[str, str], settings, cfg, out: Path
) -> dict[str, Any]:
    """Per chosen internal node, portraits of its distinct bootstrap reconstructions: the spread in images.

    The ``cfg.bootstrap_portraits`` most frequent replicate sequences of the node (over the trees that
    hold its clade; ``sample.variants``) are each painted once from the *same* seeded noise, so what
    differs between them is the sequence alone. Files ``NODE_boot_k.png`` and ``NODE_bootstrap_row.png``
    (the main tree's portrait first, then the variants captioned with their share of trees and their
    identity with the main reconstruction).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from phenogen.phylo.align import ungap

    def paint(seq: str):
        generator = torch.Generator().manual_seed(cfg.seed)
        return pipe(
            sequences=[ungap(seq)],
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            generator=generator,
            num_images_per_sequence=1,
            output_type="pil",
        ).images[0]

    rows: dict[str, Any] = {}
    for name in selected:
        variants = sample.variants.get(name) or []
        if not variants or name not in main_sequences:
            continue
        main_seq = main_sequences[name]
        shown = variants[: cfg.bootstrap_portraits]
        images = [paint(main_seq)] + [paint(seq) for seq, _ in shown]
        files = []
        for k, im in enumerate(images[1:]):
            im.save(out / f"{name}_boot_{k}.png")
            files.append(f"{name}_boot_{k}.png")
        n_with = sum(k for _, k in variants)
        captions = [f"main tree\nclade in {n_with}/{sample.n_trees}"]
        for seq, k in shown:
            same = sum(a == b for a, b in zip(seq, main_seq, strict=True)) / len(seq)
            captions.append(f"{k}/{n_with} trees\n{same:.3f} id. main")
        fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2.0), dpi=110, squeeze=False)
        for ax, im, cap in zip(axes[0], images, captions, strict=True):
            ax.imshow(im)
            ax.set_title(cap, fontsize=6)
            ax.axis("off")
        fig.suptitle(f"{name}: reconstructions over bootstrap trees", fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{name}_bootstrap_row.png")
        plt.close(fig)
        rows[name] = {
            "images": files,
            "figure": f"{name}_bootstrap_row.png",
            "trees_with_clade": n_with,
            "distinct_sequences": len(variants),
            "painted_trees": [k for _, k in shown],
        }
    return rows
