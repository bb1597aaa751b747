"""A tiny synthetic clade with known truth for the evaluation and report tests (no simulator needed).

A random coalescent tree (living tips ``sp_NNN``, extinct tips ``ext_NN``, internal ``nNNN``, root
``n000``), Brownian-motion traits along it (binary traits thresholded from a BM latent), barcodes
mutated along the branches, and 32-pixel "birds" drawn with PIL so that every trait changes the
picture. Also two fake generators: one that returns true renders, one that returns noise.
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from phenogen.data.dataset import Record, write_dataset
from phenogen.sim.traitspec import CONTINUOUS, DISCRETE, TRAIT_NAMES

SIZE = 32


def coalescent_tree(n_tips: int, rng: np.random.Generator) -> tuple[list[int], list[float], int]:
    """Parent index and branch length of every node (tips first, root last)."""
    parent = [-1] * (2 * n_tips - 1)
    height = [0.0] * (2 * n_tips - 1)
    active = list(range(n_tips))
    t, nxt = 0.0, n_tips
    while len(active) > 1:
        k = len(active)
        t += rng.exponential(2.0 / (k * (k - 1)))
        a, b = rng.choice(len(active), 2, replace=False)
        for j in (a, b):
            parent[active[j]] = nxt
        height[nxt] = t
        active = [x for j, x in enumerate(active) if j not in (a, b)] + [nxt]
        nxt += 1
    branch = [height[parent[i]] - height[i] if parent[i] >= 0 else 0.0 for i in range(len(parent))]
    return parent, branch, nxt - 1


def draw_bird(traits: dict[str, float], rng: np.random.Generator | None = None) -> Image.Image:
    """A crude 32-px bird: body, wing, head, beak, tail, legs, crest; binary marks; small jitter."""

    def sig(x: float) -> float:
        return 1.0 / (1.0 + np.exp(-x))

    def colour(hue: float, light: float = 0.0) -> tuple[int, int, int]:
        r, g, b = colorsys.hls_to_rgb(sig(hue), 0.25 + 0.5 * sig(light), 0.75)
        return int(r * 255), int(g * 255), int(b * 255)

    dx, dy = rng.integers(-2, 3, 2) if rng is not None else (0, 0)
    bg = (200, 225, 240) if rng is None else tuple(int(v) for v in rng.integers(190, 240, 3))
    im = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(im)
    cx, cy = 15 + dx, 17 + dy
    s = 5 + 3 * sig(traits["body_size"])
    tail = 3 + 6 * sig(traits["tail_length"])
    d.polygon(
        [(cx - s, cy), (cx - s - tail, cy - 2), (cx - s - tail, cy + 2)], fill=colour(traits["wing_hue"], -1)
    )
    leg = 2 + 5 * sig(traits["leg_length"])
    d.line([(cx - 1, cy + s * 0.6), (cx - 1, cy + s * 0.6 + leg)], fill=(60, 40, 20), width=1)
    d.line([(cx + 2, cy + s * 0.6), (cx + 2, cy + s * 0.6 + leg)], fill=(60, 40, 20), width=1)
    d.ellipse(
        [cx - s, cy - s * 0.7, cx + s, cy + s * 0.7],
        fill=colour(traits["body_hue"], traits["body_lightness"]),
    )
    d.ellipse(
        [cx - s * 0.7, cy - s * 0.4, cx + s * 0.3, cy + s * 0.3],
        fill=colour(traits["wing_hue"], traits["wing_lightness"]),
    )
    if traits["wing_bars"] > 0.5:
        d.line([(cx - s * 0.5, cy - 1), (cx + s * 0.2, cy - 1)], fill=(255, 255, 255))
    if traits["breast_spots"] > 0.5:
        for k in range(3):
            d.point((cx + s * 0.5, cy + k), fill=(20, 20, 20))
    hx, hy, hr = cx + s * 0.9, cy - s * 0.7, 2.5 + 0.5 * sig(traits["body_size"])
    crest = 4 * sig(traits["crest_size"])
    d.polygon(
        [(hx - 1, hy - hr), (hx + 1, hy - hr), (hx - 2, hy - hr - crest)],
        fill=colour(traits["head_hue"], -0.5),
    )
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=colour(traits["head_hue"]))
    beak = 1.5 + 5 * sig(traits["beak_length"])
    depth = 0.5 + 2 * sig(traits["beak_depth"])
    curve = 3 * sig(traits["beak_curvature"]) - 1
    d.polygon(
        [(hx + hr - 1, hy - depth), (hx + hr - 1, hy + depth), (hx + hr + beak, hy + curve)],
        fill=(230, 170, 40),
    )
    if traits["eye_stripe"] > 0.5:
        d.line([(hx - hr, hy), (hx + hr, hy)], fill=(10, 10, 10))
    d.point((hx + 0.5, hy - 0.5), fill=(0, 0, 0))
    return im


def make_clade(root: Path, *, n_tips: int = 22, n_extinct: int = 3, seed: int = 0, seq_len: int = 240):
    """Write a toy dataset to ``root``; returns the loaded :class:`~phenogen.data.dataset.Dataset`."""
    rng = np.random.default_rng(seed)
    parent, branch, root_i = coalescent_tree(n_tips, rng)
    order = sorted(range(len(parent)), key=lambda i: -i)  # root first (parents have larger indices)
    n_cont = len(CONTINUOUS)
    values = np.zeros((len(parent), n_cont + len(DISCRETE)))
    seqs: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(parent)
    seqs[root_i] = rng.integers(0, 4, seq_len)
    for i in order:
        if i == root_i:
            continue
        p = parent[i]
        values[i] = values[p] + rng.normal(0, np.sqrt(branch[i]), values.shape[1])
        s = seqs[p].copy()
        hit = rng.random(seq_len) < 1 - np.exp(-0.35 * branch[i])
        s[hit] = (s[hit] + rng.integers(1, 4, hit.sum())) % 4
        seqs[i] = s
    tips = list(range(n_tips))
    sd = values[tips, :n_cont].std(0)
    values[:, :n_cont] = (values[:, :n_cont] - values[tips, :n_cont].mean(0)) / sd
    values[:, n_cont:] = (values[:, n_cont:] > np.median(values[tips, n_cont:], axis=0)).astype(float)
    # names: living / extinct tips and internal nodes (root n000)
    extinct = set(rng.choice(n_tips, n_extinct, replace=False).tolist())
    names: dict[int, str] = {}
    for k, i in enumerate(i for i in tips if i not in extinct):
        names[i] = f"sp_{k + 1:03d}"
    for k, i in enumerate(sorted(extinct)):
        names[i] = f"ext_{k + 1:02d}"
    for k, i in enumerate(order[: n_tips - 1]):
        names[i] = f"n{k:03d}"
    # held-out: the living tips under the smallest internal node with >= 3 living tips
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parent):
        if p >= 0:
            children.setdefault(p, []).append(i)

    def living_under(i: int) -> list[int]:
        if i < n_tips:
            return [] if i in extinct else [i]
        return [t for c in children[i] for t in living_under(c)]

    clade = min((living_under(i) for i in order if len(living_under(i)) >= 3), key=len)
    heldout = set(clade)

    def newick(i: int) -> str:
        label = f"{names[i]}:{branch[i]:.6f}" if i != root_i else names[i]
        if i < n_tips:
            return label
        return "(" + ",".join(newick(c) for c in children[i]) + ")" + label

    records = []
    for i in range(len(parent)):
        name = names[i]
        kind = "internal" if i >= n_tips else ("extinct" if i in extinct else "living")
        split = {"internal": "ancestor", "extinct": "extinct"}.get(
            kind, "heldout" if i in heldout else "train"
        )
        n_ind = 1 if kind == "internal" else 2
        for j in range(n_ind):
            traits = values[i].copy()
            if kind != "internal":
                traits[:n_cont] += rng.normal(0, 0.1, n_cont)
            seq = seqs[i].copy()
            if kind != "internal":
                pos = rng.integers(0, seq_len, 1)
                seq[pos] = (seq[pos] + 1) % 4
            tdict = dict(zip([*CONTINUOUS, *DISCRETE], traits.tolist(), strict=True))
            rid = f"{name}_{j + 1}"
            rels = []
            for k in range(3):
                rel = f"images/{split}/{rid}_{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                draw_bird(tdict, rng).save(root / rel)
                rels.append(rel)
            records.append(
                Record(
                    rid,
                    name,
                    rid,
                    split,
                    kind,
                    "".join("ACGT"[c] for c in seq),
                    tuple(rels),
                    ("Aves",),
                    tdict,
                )
            )
    info = {"source": "toy", "trait_names": list(TRAIT_NAMES)}
    return write_dataset(root, records, info, tree_newick=newick(root_i) + ";")


def fake_generated(
    ds, out: Path, kind: str, n: int = 2, seed: int = 1, splits=("heldout", "extinct", "ancestor")
) -> Path:
    """A ``generate``-like directory: ``kind="truth"`` draws the targets' own traits, ``"noise"`` noise."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for rec in ds.records(tuple(splits)):
        for k in range(n):
            if kind == "truth":
                im = draw_bird(rec.traits, rng)
            elif kind == "noise":
                im = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
            else:
                raise ValueError(kind)
            rel = f"images/{rec.record_id}_{k}.png"
            im.save(out / rel)
            rows.append((rec.record_id, k, rel))
    with open(out / "generated.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["record_id", "k", "image"])
        w.writerows(rows)
    return out
