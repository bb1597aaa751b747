"""Figures of the DNA language model: loss curves and sampled-versus-natural sequence statistics.

matplotlib is imported inside the functions (Agg backend) so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_losses", "plot_sample_report"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(history: dict[str, Any], path: str | Path) -> Path:
    """Train loss per step (light) and per epoch, held-out loss and bits/base per epoch."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = history.get("steps", [])
    if steps:
        ax.plot(
            [s["epoch"] for s in steps],
            [s["loss"] for s in steps],
            color="0.75",
            lw=0.6,
            label="train (step)",
        )
    epochs = history.get("epochs", [])
    if epochs:
        x = [e["epoch"] for e in epochs]
        ax.plot(x, [e["train_loss"] for e in epochs], "o-", ms=3, label="train (epoch mean)")
        ax.plot(x, [e["heldout_loss"] for e in epochs], "o-", ms=3, label="held-out")
        bx.plot(x, [e["heldout_bits_per_base"] for e in epochs], "o-", ms=3, color="C2", label="LM held-out")
        for ref in history.get("references", []):
            bx.axhline(ref["bits_per_base"], ls="--", color="C3", lw=1, label=ref["label"])
    ax.set(xlabel="epoch", ylabel="nats / token", title="loss")
    bx.set(xlabel="epoch", ylabel="bits / base", title="held-out bits per base")
    ax.legend(fontsize=8)
    if epochs:
        bx.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hist(ax, values: dict[str, list[float]], bins, title: str, xlabel: str) -> None:
    for label, v in values.items():
        if len(v):
            ax.hist(v, bins=bins, alpha=0.5, density=True, label=f"{label} (n={len(v)})")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend(fontsize=7)


def plot_sample_report(
    path: str | Path,
    identity: dict[str, list[float]],
    lengths: dict[str, list[int]],
    gc: dict[str, list[float]],
    natural_range: tuple[float, float] | None = None,
) -> Path:
    """Three panels: nearest identity to training, length and GC content; one histogram per source."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    all_id = [x for v in identity.values() for x in v]
    lo = min(all_id) if all_id else 0.7
    _hist(
        axes[0],
        identity,
        np.linspace(min(lo, 0.99), 1.0, 41),
        "identity to nearest training sequence",
        "identity",
    )
    if natural_range is not None:
        axes[0].axvspan(*natural_range, color="C2", alpha=0.12, lw=0)
    all_len = [x for v in lengths.values() for x in v]
    if all_len:
        _hist(axes[1], lengths, np.linspace(min(all_len), max(all_len) + 1, 41), "length", "bases")
    all_gc = [x for v in gc.values() for x in v]
    if all_gc:
        _hist(axes[2], gc, np.linspace(min(all_gc), max(all_gc) + 1e-3, 41), "GC content", "GC fraction")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
