"""The two figures ``phenogen evaluate`` writes beside ``metrics.json``.

``trait_rmse.png``: grouped bars of trait RMSE (z-scored continuous traits) per scored split and
method, the ``random`` bar with its spread over draws. ``probe_r2.png``: the probe's R² per
continuous trait on renders of held-out species (and the other splits), so the yardstick's
reliability is visible.
Both read only the metrics dict, so they can be redrawn from an old ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_trait_rmse", "plot_probe_r2", "METHOD_COLORS"]

METHOD_COLORS = {
    "generated": "#d62728",
    "nearest": "#1f77b4",
    "random": "#7f7f7f",
    "mean": "#bcbd22",
    "oracle": "#2ca02c",
    "truth": "#17becf",
    "mean_render": "#dbdb8d",
    "oracle_render": "#98df8a",
}
_SPLIT_LABELS = {
    "train": "train",
    "heldout": "held-out living",
    "extinct": "extinct",
    "ancestor": "ancestors",
}


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def plot_trait_rmse(metrics: dict[str, Any], path: str | Path) -> Path:
    """Grouped bar chart: x = split, one bar per method; returns ``path``."""
    plt, fig, ax = _figure(7.5, 3.6)
    splits = list(metrics["splits"])
    methods = list(metrics.get("methods", METHOD_COLORS))
    width = 0.8 / max(1, len(methods))
    top = 0.0
    for j, m in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, s in enumerate(splits):
            row = metrics["splits"][s]["methods"].get(m, {})
            if row.get("trait_rmse") is not None:
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(row["trait_rmse"])
                errs.append(row.get("trait_rmse_se") or 0.0)  # ± standard error (redrawn images)
        ax.bar(xs, ys, width, yerr=errs, label=m, color=METHOD_COLORS.get(m), capsize=2)
        top = max([top, *(y + e for y, e in zip(ys, errs, strict=True))])
    ax.set_xticks(range(len(splits)), [_SPLIT_LABELS.get(s, s) for s in splits])
    ax.set_ylabel("trait RMSE (z-scored)")
    ax.set_title("Trait error of generated images vs baselines (lower is better; bars ± s.e.)")
    ax.set_ylim(0, 1.2 * top or 1.0)  # headroom: the legend sits above the tallest bar, never on one
    ax.legend(ncol=min(len(methods), 4), fontsize=8, frameon=False, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_probe_r2(metrics: dict[str, Any], path: str | Path) -> Path:
    """Bars of the probe's R² per continuous trait, one colour per split (held-out first); returns ``path``.

    Plotted is ``r2_clade`` (1 − MSE on z-scored traits: the share of the clade-wide variance
    explained), which stays meaningful on a held-out clade whose own spread is small.
    """
    plt, fig, ax = _figure(9.0, 3.6)
    r2 = metrics["probe"].get("r2_clade") or metrics["probe"]["r2"]
    splits = [s for s in ("heldout", "extinct", "ancestor", "train") if s in r2]
    traits = list(metrics["traits"]["continuous"])
    width = 0.8 / max(1, len(splits))
    colors = {"heldout": "#d62728", "extinct": "#9467bd", "ancestor": "#8c564b", "train": "#c7c7c7"}
    lowest = 0.0
    for j, s in enumerate(splits):
        xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(traits))]
        ys = [r2[s].get(t) if r2[s].get(t) is not None else 0.0 for t in traits]
        lowest = min(lowest, *ys)
        ax.bar(xs, [max(y, -1.0) for y in ys], width, label=_SPLIT_LABELS.get(s, s), color=colors.get(s))
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(traits)), traits, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(-1.0 if lowest < -0.2 else -0.2, 1.0)
    ax.set_ylabel("R² (vs clade-wide variance)")
    ax.set_title(  # two lines: one did not fit the figure's width
        "Trait probe: R² per trait on real renders\n"
        "(no held-out, extinct or ancestral bird in its training; clipped at −1)",
        fontsize=10,
    )
    ax.legend(fontsize=8, frameon=False, ncol=4)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
