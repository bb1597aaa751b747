"""Automatic checkpoint selection: the thesis' by-eye choice of epoch, made a rule.

The thesis sampled a few sequences from every tenth epoch, looked at how similar they were to the
training set, and kept the epoch whose samples were new yet as similar as real sequences are to
each other. Here, for each saved epoch (``OUT/checkpoints/epoch-XXX``):

1. sample ``select_n`` sequences with the ``[sample]`` settings;
2. measure novelty, internal-stop-free share and the nearest-identity distribution to training;
3. an epoch is **eligible** when novelty >= ``min_novelty``, stop-free >= ``min_stop_free`` and the
   median nearest identity lies inside the natural range (``range_quantiles`` of the natural
   inter-species identity distribution, :func:`phenogen.dna.metrics.natural_identity`);
4. the pick is the eligible epoch whose identity distribution is closest to the natural one
   (1-D Wasserstein distance). When none is eligible, the epoch meeting most criteria (then the
   closest) is returned with ``met_criteria: false`` — never silently.

The figure shows one box per epoch with the natural range shaded and the pick highlighted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.dna import metrics as M
from phenogen.errors import CheckpointError
from phenogen.lm.config import DnaEvalConfig, SampleConfig

__all__ = ["EpochScore", "list_checkpoints", "select_checkpoint", "plot_identity_by_epoch"]


@dataclass
class EpochScore:
    epoch: int
    path: str
    novelty: float
    n_duplicates: int
    stop_free_share: float
    median_identity: float
    wasserstein: float
    heldout_bits_per_base: float | None
    eligible: bool
    criteria_met: int


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of ``RUN/checkpoints/epoch-XXX`` in epoch order."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        raise CheckpointError(
            f"{run_dir}: no checkpoints/ directory; --select-checkpoints needs a train-lm output dir"
        )
    found = sorted(
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := re.fullmatch(r"epoch-(\d+)", p.name)) and p.is_dir()
    )
    if not found:
        raise CheckpointError(f"{root}: no epoch-XXX checkpoints")
    return found


def select_checkpoint(
    run_dir: str | Path,
    train: list[str],
    train_species: list[str] | None,
    sample_cfg: SampleConfig,
    eval_cfg: DnaEvalConfig,
    out_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every (``select_every``-th) checkpoint of a run and pick one; write JSON + figure to ``out_dir``."""
    from scipy.stats import wasserstein_distance
    from tqdm.auto import tqdm

    from phenogen.lm.model import load_lm
    from phenogen.lm.sample import sample

    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir)
    keep = [
        c for i, c in enumerate(checkpoints) if i % eval_cfg.select_every == 0 or i == len(checkpoints) - 1
    ]
    heldout_by_epoch = {}
    losses = run_dir / "losses.json"
    if losses.is_file():
        for e in json.loads(losses.read_text(encoding="utf-8")).get("epochs", []):
            heldout_by_epoch[e["epoch"]] = e.get("heldout_bits_per_base")
    frame = M.best_frame(train)
    natural = M.natural_identity(
        train, train_species, eval_cfg.natural_max, eval_cfg.candidates, eval_cfg.seed
    )
    lo, hi = (float(np.quantile(natural, q)) for q in eval_cfg.range_quantiles)
    ref_profiles = M.kmer_profiles(train)
    cfg = dataclasses.replace(sample_cfg, n=eval_cfg.select_n)
    scores: list[EpochScore] = []
    identities: dict[int, np.ndarray] = {}
    for epoch, path in tqdm(keep, desc="select", disable=not progress):
        lm = load_lm(path, device=device)
        seqs = sample(lm, cfg).sequences
        near = M.nearest_identity(seqs, train, eval_cfg.candidates, ref_profiles=ref_profiles).identity
        identities[epoch] = near
        nov, stop_free, med = M.novelty(seqs, train), M.stop_free_share(seqs, frame), float(np.median(near))
        checks = [nov >= eval_cfg.min_novelty, stop_free >= eval_cfg.min_stop_free, lo <= med <= hi]
        scores.append(
            EpochScore(
                epoch=epoch,
                path=str(path),
                novelty=nov,
                n_duplicates=M.n_duplicates(seqs),
                stop_free_share=stop_free,
                median_identity=med,
                wasserstein=float(wasserstein_distance(near, natural)),
                heldout_bits_per_base=heldout_by_epoch.get(epoch),
                eligible=all(checks),
                criteria_met=sum(checks),
            )
        )
    eligible = [s for s in scores if s.eligible]
    pool = eligible or [s for s in scores if s.criteria_met == max(x.criteria_met for x in scores)]
    pick = min(pool, key=lambda s: (s.wasserstein, s.epoch))
    result = {
        "selected_epoch": pick.epoch,
        "selected_checkpoint": pick.path,
        "met_criteria": bool(eligible),
        "rule": "eligible = novelty >= min_novelty and stop-free >= min_stop_free and median identity in natural "
        "range; pick = eligible epoch with the smallest Wasserstein distance to the natural identity distribution",
        "natural_range": [lo, hi],
        "natural_median": float(np.median(natural)),
        "frame": frame,
        "config": {"sample": dataclasses.asdict(cfg), "dna_eval": dataclasses.asdict(eval_cfg)},
        "epochs": [dataclasses.asdict(s) for s in scores],
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "selection.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        plot_identity_by_epoch(identities, natural, (lo, hi), pick.epoch, out / "identity_by_epoch.png")
    return result


def plot_identity_by_epoch(
    identities: dict[int, np.ndarray],
    natural: np.ndarray,
    natural_range: tuple[float, float],
    picked: int | None,
    path: str | Path,
) -> Path:
    """Boxplots of nearest identity per epoch next to the natural distribution; the pick in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = sorted(identities)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(epochs) + 2.5), 3.8))
    data = [natural] + [identities[e] for e in epochs]
    labels = ["natural"] + [str(e) for e in epochs]
    box = ax.boxplot(data, tick_labels=labels, patch_artist=True, showfliers=False, widths=0.6)
    for i, patch in enumerate(box["boxes"]):
        patch.set_facecolor(
            "C2" if i == 0 else ("C1" if picked is not None and epochs[i - 1] == picked else "0.85")
        )
    ax.axhspan(*natural_range, color="C2", alpha=0.12, lw=0)
    ax.set(
        xlabel="epoch",
        ylabel="identity to nearest training sequence",
        title="samples by epoch vs natural range",
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
