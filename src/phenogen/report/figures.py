"""Figures of the HTML report: loss curves and the species tree with thumbnails at its nodes.

Every function returns PNG bytes (the report embeds them) and uses matplotlib's Agg backend, so
nothing needs a display. Inputs are plain data — parsed JSON, a Newick path, PIL images — so the
figures can be drawn from any run directory, old or partial; non-numeric or non-finite values in a
``losses.json`` are left out of the curves rather than raising.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["loss_curves", "plot_loss_curves", "tree_with_thumbnails", "png_bytes"]

_SPLIT_COLORS = {"train": "#222222", "heldout": "#1f5fbf", "extinct": "#8a5a00", "ancestor": "#555555"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _number(v: Any) -> bool:
    """A finite int or float (not a bool): what a curve may plot."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _series(values: Any) -> list[float] | None:
    if isinstance(values, list) and values and all(_number(v) for v in values):
        return [float(v) for v in values]
    return None


def loss_curves(history: Any) -> dict[str, tuple[list[float], list[float]]]:
    """Pull ``label → (x, y)`` curves out of a ``losses.json`` of any of the shapes phenogen writes.

    Understood: a list of numbers; a list of ``{"loss": …}`` records (x = ``step`` or the index);
    a dict of lists of numbers; a dict with ``"steps"`` (per-step records) and/or ``"epochs"``
    (per-epoch records whose numeric ``*loss*`` fields each become a curve, x = ``epoch``).

    >>> sorted(loss_curves({"steps": [{"step": 1, "loss": 2.0}], "epochs": [{"epoch": 1, "heldout_loss": 1.5}]}))
    ['heldout_loss (per epoch)', 'loss (per step)']
    """
    curves: dict[str, tuple[list[float], list[float]]] = {}

    def records(items: list, suffix: str, xkey: str) -> None:
        keys = sorted({k for r in items if isinstance(r, dict) for k, v in r.items() if _number(v)})
        for key in (k for k in keys if "loss" in k.lower() or k in ("bits_per_base",)):
            pts = [
                (float(r[xkey]) if _number(r.get(xkey)) else float(i), float(r[key]))
                for i, r in enumerate(items, start=1)
                if isinstance(r, dict) and _number(r.get(key))
            ]
            if pts:
                curves[f"{key}{suffix}"] = ([p[0] for p in pts], [p[1] for p in pts])

    if _series(history):
        curves["loss"] = (list(range(1, len(history) + 1)), _series(history))
    elif isinstance(history, list):
        records(history, "", "step")
    elif isinstance(history, dict):
        for name, value in history.items():
            if _series(value):
                curves[name] = (list(range(1, len(value) + 1)), _series(value))
        if isinstance(history.get("steps"), list):
            records(history["steps"], " (per step)", "step")
        if isinstance(history.get("epochs"), list):
            records(history["epochs"], " (per epoch)", "epoch")
    return curves


def plot_loss_curves(curves: Mapping[str, tuple[list[float], list[float]]], title: str) -> bytes:
    """One panel per x-unit (steps / epochs) with every curve; log-scaled y when the range is wide."""
    plt = _plt()
    per_epoch = {k: v for k, v in curves.items() if "epoch" in k}
    per_step = {k: v for k, v in curves.items() if k not in per_epoch}
    panels = [p for p in (per_step, per_epoch) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, (x, y) in panel.items():
            ax.plot(x, y, label=label, lw=1.2, marker="o" if len(x) < 30 else None, ms=3)
        ys = [v for _, y in panel.values() for v in y if v > 0]
        if ys and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("epoch" if panel is per_epoch else "step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def tree_with_thumbnails(
    newick_path: str | Path,
    thumbs: Mapping[str, tuple[Any, Any]],
    splits: Mapping[str, str] | None = None,
    *,
    zoom: float = 0.45,
) -> bytes:
    """The tree drawn left→right (x = time) with ``(truth, generated)`` thumbnails at named nodes.

    ``thumbs`` maps a node name to a pair of PIL images (either may be ``None``); the generated
    one gets a red frame, the true one a grey frame. ``splits`` colours tip labels by split
    (held-out blue, extinct brown with a dagger). Internal nodes get half-size thumbnails.
    """
    import numpy as np
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from phenogen.phylo.tree import read_tree

    plt = _plt()
    splits = splits or {}
    tree = read_tree(newick_path)
    depths = tree.depths()
    tips = tree.get_terminals()
    ypos = {id(t): float(i) for i, t in enumerate(tips)}
    for clade in tree.get_nonterminals(order="postorder"):
        ypos[id(clade)] = float(np.mean([ypos[id(c)] for c in clade.clades]))
    height = max(depths.values()) or 1.0
    fig, ax = plt.subplots(figsize=(13, max(4.0, 0.5 * len(tips) + 1)))
    for clade in tree.find_clades():
        x, y = depths[clade], ypos[id(clade)]
        if clade.clades:
            ys = [ypos[id(c)] for c in clade.clades]
            ax.plot([x, x], [min(ys), max(ys)], color="#888", lw=1)
            for c in clade.clades:
                ax.plot([x, depths[c]], [ypos[id(c)]] * 2, color="#888", lw=1)
    gap = 0.035 * height

    def place(img, x: float, y: float, z: float, color: str) -> None:
        box = AnnotationBbox(
            OffsetImage(np.asarray(img.convert("RGB")), zoom=z),
            (x, y),
            frameon=True,
            pad=0.1,
            bboxprops={"edgecolor": color, "lw": 1.2},
        )
        ax.add_artist(box)

    for clade in tree.find_clades():
        name, x, y = clade.name, depths[clade], ypos[id(clade)]
        pair = thumbs.get(name or "", (None, None))
        tip = not clade.clades
        z = zoom if tip else zoom * 0.5
        step = gap * (2.2 if tip else 1.1)
        for k, (img, color) in enumerate(((pair[0], "#999999"), (pair[1], "#d62728"))):
            if img is not None:
                place(img, x + (0.6 + k) * step + (0.14 * height if tip else 0.0), y, z, color)
        if tip:
            split = splits.get(name or "", "train")
            label = ("† " if split == "extinct" else "") + (name or "")
            ax.text(
                x + 0.01 * height, y, label, va="center", fontsize=8, color=_SPLIT_COLORS.get(split, "#222")
            )
        elif name:
            ax.text(x, y - 0.3, name, fontsize=5, color="#777", ha="right", va="bottom")
    ax.set_xlim(-0.02 * height, height * 1.32)
    ax.set_ylim(len(tips) - 0.4, -0.6)
    ax.set_yticks([])
    ax.set_xlabel("time from the root (tree units)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        "Species tree: true render (grey frame) and generated image (red frame) at each node", fontsize=10
    )
    return png_bytes(fig, dpi=90)
