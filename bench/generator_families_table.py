"""The generator-family table (BENCHMARKS.md): ``python bench/generator_families_table.py OUT RUN [THESIS_RUN]``.

OUT: ``bench/generator_families.sh``'s output; RUN: the demo run it painted for (its ``eval/metrics.json`` is
the diffusion row and the baselines); THESIS_RUN: a ``phenogen demo --config thesis`` run on the same clade.
Trait RMSE ± SE per split, held-out retrieval top-1 / top-5 and FID, training minutes and the diversity ratio
(one barcode's portraits under different noise against real photos of one species; ~0 = mode collapse).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPLITS = ("train", "heldout", "extinct", "ancestor")
FAMILIES = ("cvae", "gan", "plugin")
BASELINES = ("nearest", "mean", "oracle", "truth")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _method(metrics: dict, split: str, method: str) -> dict | None:
    return metrics["splits"].get(split, {}).get("methods", {}).get(method)


def table(out: Path, run: Path, thesis: Path | None = None) -> str:
    runs = {"diffusion (demo default)": run / "eval" / "metrics.json"}
    if thesis is not None:
        runs["thesis preset"] = thesis / "eval" / "metrics.json"
    runs |= {family: out / f"{family}-eval" / "metrics.json" for family in FAMILIES}
    loaded = {name: _load(path) for name, path in runs.items()}
    base = loaded["diffusion (demo default)"] or loaded.get("thesis preset")
    lines = [
        "| family | "
        + " | ".join(SPLITS)
        + " | held-out top-1 / top-5 | held-out FID | train min | diversity |",
        "| --- |" + " ---: |" * (len(SPLITS) + 4),
    ]
    for name, metrics in loaded.items():
        if metrics is None:
            continue
        cells = []
        for split in SPLITS:
            g = _method(metrics, split, "generated")
            cells.append(f"{g['trait_rmse']:.3f} ± {g['trait_rmse_se']:.3f}" if g else "—")
        h = _method(metrics, "heldout", "generated")
        trained = _load(out / name / "train_metrics.json") if name in FAMILIES else None
        minutes = f"{trained['training_minutes']:.1f}" if trained else "—"
        diversity = f"{trained['diversity']['diversity']:.2f}" if trained else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {h['top1']:.0%} / {h['top5']:.0%} | {h['fid']:.0f} | "
                     f"{minutes} | {diversity} |")  # fmt: skip
    if base is not None:
        for method in BASELINES:
            cells = []
            for split in SPLITS:
                x = _method(base, split, method)
                cells.append(f"{x['trait_rmse']:.3f}" if x and x.get("trait_rmse") is not None else "—")
            lines.append(f"| *{method}* | " + " | ".join(cells) + " | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    print(table(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) == 4 else None))
