"""``evaluate``: score generated images against ground truth (traits, photos), beside baselines.

Inputs: a dataset directory (:mod:`phenogen.data.dataset`: photos of the training species, and where
known true traits and the true tree) and a directory written by ``phenogen generate``
(``generated.tsv``: ``record_id``, ``k``, ``image`` relative to that directory). Output:
``OUT/metrics.json`` (schema in ``docs/metrics_schema.md``, ``schema_version`` :data:`SCHEMA_VERSION`),
``OUT/targets.tsv`` (one row per scored target), ``OUT/probe/`` (the trained trait probe),
``OUT/photo/`` (the photo model), ``OUT/trait_rmse.png`` and ``OUT/probe_r2.png``.

A dataset without traits (real photos) gets the photo scores only: the trait steps 2–5 are skipped,
its trait rows are absent (``methods: {}``) and ``probe`` / ``retrieval`` / ``headline`` are null.

Steps (in :mod:`~phenogen.evaluate.steps`): 1. read and cross-check inputs; 2. train the trait probe on
renders of training species plus renders of prior-drawn random birds
(:mod:`~phenogen.evaluate.probe`) and report its R² per split; 3. per scored split, build every
method's images / trait vectors with the same count per target (:mod:`~phenogen.evaluate.baselines`)
and score trait RMSE on z-scored traits; 4. DNA→image retrieval success
(:mod:`~phenogen.evaluate.retrieval`); 5. FID/KID on probe features (:mod:`~phenogen.evaluate.fid`);
6. the photo scores (:mod:`~phenogen.evaluate.photo_scores`: a photo model trained on training photos,
DNA→photo retrieval top-1/5/100, barcode similarity, FID/KID and taxonomic agreement on its features),
run last so that they change no trait number; 7. write JSON, TSV and plots.

Trait error: for every image, the probe's reading minus the target record's true traits, on the
continuous traits z-scored with the training records' mean and sd; ``trait_rmse`` is the root mean
square over all images and continuous traits of a split. Binary traits are reported apart
(``per_trait_rmse`` as √Brier, and ``discrete_accuracy``).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.config import to_jsonable
from phenogen.data.dataset import load_dataset
from phenogen.errors import InputError
from phenogen.evaluate.config import METHODS, EvaluateConfig
from phenogen.evaluate.steps import ROW_KEYS, Evaluation, score_predictions
from phenogen.evaluate.targets import match_targets, read_generated, read_painted

__all__ = ["SCHEMA_VERSION", "ROW_KEYS", "evaluate", "score_predictions"]

SCHEMA_VERSION = 2  # 2: the photo scores (`photo`, `splits[S].photo`); datasets without traits


def _stderr(msg: str) -> None:
    print(f"[evaluate] {msg}", file=sys.stderr, flush=True)


def _headline(results: dict[str, Any]) -> dict[str, Any] | None:
    """The numbers the demo prints: held-out living species (or the first scored split)."""
    if not results:
        return None
    split = "heldout" if "heldout" in results else next(iter(results))
    methods = results[split]["methods"]
    rmse = {m: methods[m]["trait_rmse"] for m in METHODS}
    gen, mean, rand = rmse["generated"], rmse["mean"], rmse["random"]
    top5, chance5 = methods["generated"]["top5"], methods["generated"]["chance_top5"]
    return {
        "split": split,
        "trait_rmse": rmse,
        "ratio_to_random": gen / rand if gen is not None and rand else None,
        "beats_mean": gen < mean if gen is not None and mean is not None else None,
        "top1": methods["generated"]["top1"],
        "top5": top5,
        "chance_top5": chance5,
        "top5_over_chance": top5 / chance5 if top5 is not None and chance5 else None,
        "top1_traits": {m: methods[m]["top1_traits"] for m in ("generated", "oracle", "truth")},
    }


def _read_sequence(path: str | Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"sequence metrics file {p} does not exist (write it with `phenogen evaluate-dna`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"sequence metrics file {p} is not valid JSON ({exc})") from None
    return {"source": str(p), "metrics": data}


def _finite(obj: Any) -> Any:
    """NaN / inf → None, so metrics.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _write_targets(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per scored target, written atomically (``named_as`` / ``named_own`` empty where the trait
    table could not name the portraits)."""
    from phenogen.fsio import atomic_write_text

    cols = [
        "record_id",
        "species",
        "split",
        "n_images",
        "generated_rmse",
        "nearest_species",
        "nearest_identity",
        "named_as",
        "named_own",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow(
            [
                "" if row.get(c) is None else (f"{row[c]:.4f}" if isinstance(row[c], float) else row[c])
                for c in cols
            ]
        )
    atomic_write_text(path, buf.getvalue())


def caption_readout(
    targets: dict[str, list], generated_dir: str | Path, continuous: list[str]
) -> dict[str, Any] | None:
    """What the DNA wrote, when the generator has the caption head: per split, Pearson r between the
    caption value each target's barcode writes and the target's true trait (continuous traits the
    caption names). Targets painted from a given caption (``generate --captions``: the generated
    directory's ``captions.tsv``, e.g. ancestors reconstructed on the tree) are read with that caption
    (``n_given`` per split). ``None`` for any other generator (or one whose model directory is gone).
    """
    cfg_path = Path(generated_dir) / "config.json"
    if not cfg_path.is_file():
        return None
    model = json.loads(cfg_path.read_text(encoding="utf-8")).get("model")
    cond_dir = Path(model) / "conditioner" if model else None
    if cond_dir is None or not (cond_dir / "config.json").is_file():
        return None
    if json.loads((cond_dir / "config.json").read_text(encoding="utf-8")).get("head") != "caption":
        return None
    from phenogen.diffusion.conditioning import DNAConditioner

    cond = DNAConditioner.from_pretrained(cond_dir).eval()
    names = [n for n in cond.config.caption_traits if n in continuous]
    given: dict[str, list[float]] = {}
    if (Path(generated_dir) / "captions.tsv").is_file():
        from phenogen.diffusion.generate import read_captions

        given = read_captions(Path(generated_dir) / "captions.tsv", cond.caption_names)
    splits: dict[str, Any] = {}
    for split, ts in targets.items():
        if len(ts) < 3 or not names:
            continue
        written = cond.describe([t.painted for t in ts])
        n_given = 0
        for i, t in enumerate(ts):
            if t.record.record_id in given:
                n_given += 1
                for j, name in enumerate(cond.caption_names):
                    written[name][i] = given[t.record.record_id][j]
        per_trait = {}
        for name in names:
            w = written[name].astype(np.float64)
            true = np.array([t.record.traits[name] for t in ts], dtype=np.float64)
            ok = w.std() > 0 and true.std() > 0
            per_trait[name] = float(np.corrcoef(w, true)[0, 1]) if ok else None
        rs = [r for r in per_trait.values() if r is not None]
        splits[split] = {
            "n_targets": len(ts),
            "n_given": n_given,
            "mean_r": float(np.mean(rs)) if rs else None,
            "per_trait_r": per_trait,
        }
    return {"model": str(model), "traits": names, "splits": splits}


def evaluate(
    dataset_dir: str | Path,
    generated_dir: str | Path,
    out_dir: str | Path,
    cfg: EvaluateConfig | None = None,
    *,
    sequence_metrics: str | Path | None = None,
    progress: Callable[[str], None] | None = _stderr,
) -> dict[str, Any]:
    """Score a generated image set against ground truth and baselines; write ``metrics.json``.

    Parameters
    ----------
    dataset_dir : a dataset directory: photos of the training species; true traits for the trait table
        (without them, the photo scores only); the true tree for ``oracle``.
    generated_dir : a ``phenogen generate`` output directory (``generated.tsv`` + images).
    out_dir : where ``metrics.json``, ``targets.tsv``, ``probe/``, ``photo/`` and the plots go.
    cfg : the ``[evaluate]`` section (defaults when ``None``).
    sequence_metrics : optional JSON from ``phenogen evaluate-dna``, folded in as ``"sequence"``.
    progress : called with one line per stage (``None`` = silent).

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Examples
    --------
    >>> m = evaluate("runs/demo/data", "runs/demo/generated", "runs/demo/eval")  # doctest: +SKIP
    >>> m["splits"]["heldout"]["methods"]["generated"]["trait_rmse"]  # doctest: +SKIP
    0.82
    """
    import torch

    cfg = cfg or EvaluateConfig()
    log = progress or (lambda _msg: None)
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    # 1. inputs
    ds = load_dataset(dataset_dir)
    run = Evaluation(
        ds,
        match_targets(ds, read_generated(generated_dir), cfg.splits, read_painted(generated_dir)),
        cfg,
        log,
    )
    if not run.has_traits and not cfg.photo:
        raise InputError(
            f"{ds.root}: the dataset declares no traits and evaluate.photo = false: nothing to score; "
            "drop `--set evaluate.photo=false`"
        )
    probe_block = retrieval_block = identification_block = None
    if run.has_traits:
        # 2. probe
        probe_block = run.fit_probe(out)
        timing["probe"] = time.perf_counter() - t0
        # 3. baselines, trait error
        t = time.perf_counter()
        run.build_baselines(out)
        run.score_traits()
        identification_block = run.score_identification()
        timing["trait_error"] = time.perf_counter() - t
        # 4. retrieval
        if cfg.retrieval:
            t = time.perf_counter()
            retrieval_block = run.score_retrieval()
            timing["retrieval"] = time.perf_counter() - t
        # 5. distribution quality
        if cfg.fid:
            t = time.perf_counter()
            run.score_distribution()
            timing["fid_kid"] = time.perf_counter() - t
    else:
        log(f"{ds.root} declares no traits: photo scores only (no trait probe, no trait rows)")
        run.build_baselines(out)
        for split, ts in run.targets.items():
            n = sum(len(t.generated) for t in ts)
            run.results[split] = {"n_targets": len(ts), "n_images": n, "methods": {}}
    # 6. photo scores, after every trait number (they share no random stream with them)
    photo_block = None
    if cfg.photo:
        from phenogen.evaluate.photo_scores import score_photos

        t = time.perf_counter()
        photo_block = score_photos(run, out)
        timing["photo"] = time.perf_counter() - t
    # 7. write
    spec = run.probe.spec if run.has_traits else None
    continuous = spec.continuous if spec else []
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": str(ds.root),
        "generated": str(Path(generated_dir)),
        "traits": {"continuous": continuous, "discrete": spec.discrete if spec else []},
        "standardization": {
            "mean": dict(zip(continuous, spec.mean, strict=True)) if spec else {},
            "std": dict(zip(continuous, spec.std, strict=True)) if spec else {},
        },
        "methods": list(METHODS) if spec else [],
        "probe": probe_block,
        "retrieval": retrieval_block,
        "identification": identification_block,
        "photo": photo_block,
        "splits": run.results,
        "headline": _headline(run.results) if spec else None,
        "sequence": _read_sequence(sequence_metrics),
        "caption_readout": caption_readout(run.targets, generated_dir, continuous) if spec else None,
        "config": to_jsonable(cfg),
        "timing": {**timing, "total": time.perf_counter() - t0},
    }
    metrics = _finite(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _write_targets(out / "targets.tsv", run.target_rows())
    if cfg.plots and spec:
        from phenogen.evaluate.plots import plot_probe_r2, plot_trait_rmse

        plot_trait_rmse(metrics, out / "trait_rmse.png")
        plot_probe_r2(metrics, out / "probe_r2.png")
    log(f"wrote {out / 'metrics.json'} ({metrics['timing']['total']:.0f} s)")
    return metrics
