"""Generator families side by side: a run's own model and every ``RUN/families/<name>/`` in one table.

``bash bench/generator_families.sh RUN`` trains each family of ``phenogen train-generator`` on the run's data,
paints the run's targets and scores them into::

    RUN/families/<name>/model/       train-generator --out (train_metrics.json: minutes, diversity)
    RUN/families/<name>/generated/   generate --out (generated.tsv, images/, grid.png, timing.json)
    RUN/families/<name>/eval/        evaluate --out (metrics.json, targets.tsv)

A whole ``phenogen demo --out RUN/families/<name>`` run (the ``thesis`` preset on the same clade, say) is a row
too: its ``image/`` is the model. :func:`collect` reads them, with the run itself (its ``eval/``) first;
:func:`best_by_split` names the lowest trait RMSE per split; :func:`markdown_table` is BENCHMARKS.md's table
and :mod:`phenogen.report.html` shows the same rows in the report, with a contact sheet of held-out portraits.

A row whose targets differ from the run's (another clade, other splits) is kept but marked not comparable
and never named best: the table compares families on the same targets or not at all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES_DIR", "SPLITS", "BASELINES", "FamilyRow", "collect", "best_by_split", "markdown_table"]

FAMILIES_DIR = "families"
SPLITS = ("train", "heldout", "extinct", "ancestor")
BASELINES = ("nearest", "mean", "oracle", "truth")


def _json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None (missing, unreadable, not an object)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class FamilyRow:
    """One generator's scores on the run's targets."""

    name: str  # the row's label: "this run", or the RUN/families/ directory name
    kind: str  # "diffusion", "cvae", "gan", "plugin" …
    root: Path  # the directory holding eval/ (and generated/, model/ or image/)
    eval_dir: Path
    metrics: dict
    generated: Path | None = None  # its generate --out
    train_minutes: float | None = None
    images_per_second: float | None = None  # sampling speed (generated/timing.json)
    diversity: float | None = None  # one barcode's portraits' spread ÷ one species' photos' (~0 = collapse)
    comparable: bool = True
    note: str = ""

    def method(self, split: str, method: str = "generated") -> dict:
        splits = self.metrics.get("splits") if isinstance(self.metrics.get("splits"), dict) else {}
        block = splits.get(split) if isinstance(splits.get(split), dict) else {}
        methods = block.get("methods") if isinstance(block.get("methods"), dict) else {}
        row = methods.get(method)
        return row if isinstance(row, dict) else {}

    def rmse(self, split: str, method: str = "generated") -> tuple[float, float | None] | None:
        """``(trait RMSE, its standard error)`` of ``method`` on ``split``, or None when not scored."""
        row = self.method(split, method)
        value = _num(row.get("trait_rmse"))
        return None if value is None else (value, _num(row.get("trait_rmse_se")))

    def photo(self, split: str = "heldout") -> dict[str, float | None]:
        """Retrieval top-1 / top-5, FID and KID of the generated images on ``split``."""
        row = self.method(split)
        splits = self.metrics.get("splits") if isinstance(self.metrics.get("splits"), dict) else {}
        block = splits.get(split) if isinstance(splits.get(split), dict) else {}
        photo = block.get("photo") if isinstance(block.get("photo"), dict) else {}
        methods = photo.get("methods") if isinstance(photo.get("methods"), dict) else {}
        gen = methods.get("generated") if isinstance(methods.get("generated"), dict) else {}
        return {k: _num(row.get(k)) if _num(row.get(k)) is not None else _num(gen.get(k))
                for k in ("top1", "top5", "fid", "kid_mean")}  # fmt: skip


def _targets(eval_dir: Path) -> frozenset[str] | None:
    """The record ids an evaluation scored (``targets.tsv``), or None when it has none."""
    import csv

    path = eval_dir / "targets.tsv"
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return frozenset(r["record_id"] for r in csv.DictReader(fh, delimiter="\t") if r.get("record_id"))
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return None


def _training_minutes(root: Path) -> float | None:
    """Minutes the row's model trained: train-generator's ``training_minutes``, or a demo run's train-image
    stage (``demo_summary.json``), or train-image's ``losses.json`` seconds."""
    trained = _json(root / "model" / "train_metrics.json")
    if trained is not None:
        return _num(trained.get("training_minutes"))
    stages = (_json(root / "demo_summary.json") or {}).get("stage_seconds")
    if isinstance(stages, dict) and _num(stages.get("train-image")) is not None:
        return stages["train-image"] / 60
    seconds = (_json(root / "image" / "losses.json") or {}).get("seconds")
    if isinstance(seconds, dict):
        values = [_num(v) for v in seconds.values()]
        return sum(v for v in values if v is not None) / 60 if any(v is not None for v in values) else None
    value = _num(seconds)
    return None if value is None else value / 60


def _row(name: str, root: Path, eval_dir: Path, generated: Path) -> FamilyRow | str:
    """The row of one generator, or a note saying why it has none."""
    metrics = _json(eval_dir / "metrics.json")
    if metrics is None:
        return f"{name}: no readable {eval_dir / 'metrics.json'} (not evaluated yet?)"
    trained = _json(root / "model" / "train_metrics.json") or {}
    marker = _json(root / "model" / "generator" / "generator.json") or {}
    kind = str(marker.get("family") or trained.get("family") or "diffusion")[:40]
    diversity = trained.get("diversity")
    timing = _json(generated / "timing.json") or {}
    return FamilyRow(
        name=name,
        kind=kind,
        root=root,
        eval_dir=eval_dir,
        metrics=metrics,
        generated=generated if (generated / "generated.tsv").is_file() else None,
        train_minutes=_training_minutes(root),
        images_per_second=_num(timing.get("images_per_second")),
        diversity=_num(diversity.get("diversity")) if isinstance(diversity, dict) else None,
    )


def collect(
    run: str | Path, eval_dir: Path | None = None, generated: Path | None = None
) -> tuple[list[FamilyRow], list[str]]:
    """The run's own row (``eval_dir``, default ``RUN/eval``) and one per ``RUN/families/<name>/`` with an
    evaluation, sorted by name; and notes on the directories that gave no row. Rows whose targets differ
    from the first row's are marked ``comparable = False``."""
    run = Path(run)
    rows: list[FamilyRow] = []
    notes: list[str] = []
    own = _row("this run", run, eval_dir or run / "eval", generated or run / "generated")
    if isinstance(own, FamilyRow):
        rows.append(own)
    base = run / FAMILIES_DIR
    for d in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        row = _row(d.name, d, d / "eval", d / "generated")
        (rows if isinstance(row, FamilyRow) else notes).append(row)  # type: ignore[arg-type]
    if rows:
        ref = rows[0]
        ref_targets = _targets(ref.eval_dir)
        for row in rows[1:]:
            targets = _targets(row.eval_dir)
            same = (
                targets == ref_targets
                if targets is not None and ref_targets is not None
                else all(row.method(s).get("n_targets") == ref.method(s).get("n_targets") for s in SPLITS)
            )
            if not same:
                row.comparable = False
                row.note = f"other targets than {ref.name} (another clade or splits): not compared"
    return rows, notes


def best_by_split(rows: list[FamilyRow]) -> dict[str, FamilyRow]:
    """Per split, the comparable row with the lowest generated trait RMSE (splits nobody scored are absent)."""
    best: dict[str, FamilyRow] = {}
    for split in SPLITS:
        scored = [(r.rmse(split)[0], i, r) for i, r in enumerate(rows) if r.comparable and r.rmse(split)]
        if scored:
            best[split] = min(scored, key=lambda t: t[:2])[2]
    return best


def verdicts(rows: list[FamilyRow]) -> list[str]:
    """One sentence per split: the best family, and whether it beats ``nearest`` and ``mean``."""
    lines = []
    best = best_by_split(rows)
    ref = rows[0] if rows else None
    for split, row in best.items():
        value, se = row.rmse(split)  # type: ignore[misc]
        others = sorted(
            (r.rmse(split)[0], r.name) for r in rows if r.comparable and r is not row and r.rmse(split)
        )
        runner = f"; next {others[0][1]} {others[0][0]:.3f}" if others else ""
        tie = (
            " (within one standard error: a tie)"
            if others and se is not None and others[0][0] - value <= se
            else ""
        )
        base = []
        for b in ("nearest", "mean"):
            got = ref.rmse(split, b) if ref else None
            if got:
                base.append(f"{'below' if value < got[0] else 'not below'} {b} {got[0]:.3f}")
        se_text = f" ± {se:.3f}" if se is not None else ""
        lines.append(f"{split}: best {row.name} ({row.kind}) {value:.3f}{se_text}{runner}{tie}; "
                     + ", ".join(base))  # fmt: skip
    return lines


def _cell(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown_table(rows: list[FamilyRow]) -> str:
    """BENCHMARKS.md's table: trait RMSE ± SE per split (best in bold), held-out retrieval, FID, KID,
    training minutes, sampling images/s, diversity; then the baselines of the first row."""
    best = best_by_split(rows)
    lines = [
        "| generator | family | " + " | ".join(SPLITS) + " | held-out top-1 / top-5 | held-out FID | KID | "
        "train min | sample img/s | diversity |",
        "| --- | --- |" + " ---: |" * (len(SPLITS) + 6),
    ]
    for row in rows:
        cells = []
        for split in SPLITS:
            got = row.rmse(split)
            text = (
                "—" if got is None else f"{got[0]:.3f}" + (f" ± {got[1]:.3f}" if got[1] is not None else "")
            )
            cells.append(f"**{text}**" if best.get(split) is row else text)
        p = row.photo("heldout")
        top = "—" if p["top1"] is None else f"{p['top1']:.0%} / {_cell(p['top5'], '.0%')}"
        name = row.name + ("" if row.comparable else " (not comparable)")
        lines.append(
            f"| {name} | {row.kind} | " + " | ".join(cells) + f" | {top} | {_cell(p['fid'], '.0f')} | "
            f"{_cell(p['kid_mean'], '.3f')} | {_cell(row.train_minutes, '.1f')} | "
            f"{_cell(row.images_per_second, '.1f')} | {_cell(row.diversity, '.2f')} |"
        )
    if rows:
        for method in BASELINES:
            cells = [_cell((rows[0].rmse(s, method) or (None,))[0], ".3f") for s in SPLITS]
            lines.append(f"| *{method}* | | " + " | ".join(cells) + " | | | | | | |")
    return "\n".join(lines)
