"""The photo scores of ``phenogen evaluate``: what a real photo (or a generated one) can be scored on
without traits — DNA→image retrieval, barcode similarity, FID/KID and taxonomic agreement.

Every number lives in the feature space of the photo model (:mod:`~phenogen.evaluate.photo`), trained
here on the *training* photos only (species head + one head per taxonomic rank):

1. **Retrieval.** A contrastive DNA–image model (:class:`~phenogen.evaluate.retrieval.RetrievalModel`:
   k-mer profile MLP ↔ MLP on the photo model's frozen features), trained on the training pairs only.
   Each image ranks the candidate species (:meth:`~phenogen.evaluate.steps.Evaluation.candidates`: every
   training species plus every species of the scored splits) by cosine to their DNA embeddings;
   top-1 / top-5 / top-100 success = share of images whose own species ranks there; chance = k / n.
2. **Similarity.** Mean cosine between an image's embedding and the embedding of the barcode it was
   made from (the target's painted barcode) in that model's space.
3. **FID / KID** of each row's images vs all real photos of the split's targets, on photo features.
4. **Taxonomic agreement.** The rank heads' call on each image vs the target's taxon at that rank; a
   target counts at a rank only where its taxon is one of the heads' classes (a held-out species of a
   genus seen in training counts at genus; one of a new genus only at the ranks it shares).

The rows are the image rows of the trait table (:data:`~phenogen.evaluate.steps.IMAGE_METHODS`):
``generated``; ``truth`` (real photos of the target species: the ceiling); ``nearest`` (photos of the
training species with the closest barcode); ``random`` (a random training species); on the synthetic
clade also the rendered ``mean`` / ``oracle`` vectors. Definitions in ``docs/metrics_schema.md``.

Ranks come from the manifest's ``taxonomy`` lineage (root first, ``;``-separated): a trailing entry equal
to the species name is dropped, and ``evaluate.photo_ranks`` names the levels above the species, nearest
first (default genus, family, order, as in an ``order;family;genus`` lineage).

>>> lineage(Record("r", "Aus bus", "r", "train", "living", "ACGT", (), ("Insecta", "Aidae", "Aus", "Aus bus")))
('Insecta', 'Aidae', 'Aus')
>>> rank_classes({"a": ("F", "G1"), "b": ("F", "G2")}, ("genus", "family"))
({'genus': ['G1', 'G2']}, {'family': 'every training species has the same family (F)'})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.data.dataset import Record
from phenogen.evaluate.steps import IMAGE_METHODS
from phenogen.evaluate.targets import ImageBank

__all__ = ["PHOTO_METHODS", "PHOTO_ROW_KEYS", "lineage", "rank_classes", "taxon_of", "score_photos"]

PHOTO_METHODS: tuple[str, ...] = IMAGE_METHODS
#: The keys of every photo row, per split (see docs/metrics_schema.md).
PHOTO_ROW_KEYS: tuple[str, ...] = (
    "n_images",
    "n_targets",
    "top1",
    "top5",
    "top100",
    "mean_rank",
    "chance_top1",
    "chance_top5",
    "chance_top100",
    "similarity",
    "fid",
    "kid_mean",
    "kid_std",
    "taxon_agreement",
    "note",
)


def lineage(record: Record) -> tuple[str, ...]:
    """The record's taxonomy above the species: a trailing species name (``_`` or space) is dropped."""
    names = {record.species, record.species.replace("_", " ")}
    tax = list(record.taxonomy)
    while tax and tax[-1] in names:
        tax.pop()
    return tuple(tax)


def rank_classes(
    lineages: Mapping[str, Sequence[str]], ranks: Sequence[str]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Training species → lineage ⇒ the taxa of each rank (level j above the species = ``lineage[-j]``),
    in first-seen order, and the ranks left out with why (fewer than two taxa among training species)."""
    kept: dict[str, list[str]] = {}
    dropped: dict[str, str] = {}
    for j, rank in enumerate(ranks, start=1):
        taxa = list(dict.fromkeys(lin[-j] for lin in lineages.values() if len(lin) >= j))
        if len(taxa) >= 2:
            kept[rank] = taxa
        elif taxa:
            dropped[rank] = f"every training species has the same {rank} ({taxa[0]})"
        else:
            dropped[rank] = f"no training species' taxonomy reaches the {rank} level"
    return kept, dropped


def taxon_of(lin: Sequence[str], classes: set[str]) -> str | None:
    """The deepest entry of a lineage that is one of a head's classes (``None``: the rank is not shared)."""
    return next((t for t in reversed(lin) if t in classes), None)


def _empty_row(note: str | None = None) -> dict[str, Any]:
    return {**dict.fromkeys(PHOTO_ROW_KEYS), "note": note}


class _Features:
    """Photo model features and head probabilities of image files, each file computed once."""

    def __init__(self, bank: ImageBank) -> None:
        self.bank, self.model = bank, None
        self.mean: np.ndarray | float = 0.0  # of the training photos' features: FID/KID read z-scores
        self.std: np.ndarray | float = 1.0
        self.cache: dict[Path, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def read(self, paths: Sequence[Path]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from phenogen.evaluate.photo import predict_photos

        new = [p for p in dict.fromkeys(paths) if p not in self.cache]
        if new:
            feats, probs = predict_photos(self.model, self.bank.stack(new))
            for i, p in enumerate(new):
                self.cache[p] = (feats[i], {h: v[i] for h, v in probs.items()})
        heads = self.model.spec.heads
        if not paths:
            return np.zeros((0, self.model.spec.features)), {
                h: np.zeros((0, len(c))) for h, c in heads.items()
            }
        return (
            np.stack([self.cache[p][0] for p in paths]),
            {h: np.stack([self.cache[p][1][h] for p in paths]) for h in heads},
        )


def _fit_model(
    run, out: Path | None, feats: _Features
) -> tuple[dict[str, Any], list[Path], dict[str, np.ndarray]]:
    """Train the photo model on the training photos (into ``feats.model``, saved to ``out/photo``).

    Returns the ``photo.model`` block, the training photos and their labels per head (-1 = none)."""
    from phenogen.evaluate.photo import PhotoSpec, save_photo_model, train_photo_model

    cfg = run.cfg
    lineages = {r.species: lineage(r) for r in reversed(run.train)}  # the first record of a species wins
    lineages = {sp: lineages[sp] for sp in run.train_species}
    ranks, dropped = rank_classes(lineages, cfg.photo_ranks)
    heads = {"species": list(run.train_species), **ranks}
    paths = [p for sp in run.train_species for p in run.pool[sp]]
    per_photo = [sp for sp in run.train_species for _ in run.pool[sp]]
    labels = {"species": np.array([run.train_species.index(sp) for sp in per_photo])}
    for rank, taxa in ranks.items():
        j = cfg.photo_ranks.index(rank) + 1  # level above the species
        of = {sp: taxa.index(lin[-j]) if len(lin) >= j else -1 for sp, lin in lineages.items()}
        labels[rank] = np.array([of[sp] for sp in per_photo])
    spec = PhotoSpec(heads, cfg.photo_image_size, cfg.photo_width, cfg.photo_features)
    run.log(
        f"training the photo model on {len(paths)} training photos of {len(heads['species'])} species"
        + (f" (heads: {', '.join(f'{h} {len(c)}' for h, c in ranks.items())})" if ranks else "")
    )
    model, history = train_photo_model(
        feats.bank.stack(paths), labels, spec, epochs=cfg.photo_epochs, batch_size=cfg.photo_batch_size,
        lr=cfg.photo_lr, seed=cfg.seed, device=cfg.device, progress=run.log,
    )  # fmt: skip
    feats.model = model
    if out is not None:
        save_photo_model(model, out / "photo", history)
    block = {
        "train_photos": len(paths),
        "train_species": len(heads["species"]),
        "heads": {h: len(c) for h, c in heads.items()},
        "ranks_dropped": dropped,
        "epochs": cfg.photo_epochs,
        "final_loss": history["loss"][-1],
        "train_accuracy": history["train_accuracy"],
        "image_size": cfg.photo_image_size,
        "features": cfg.photo_features,
        "seconds": history["seconds"],
    }
    return block, paths, labels


def score_photos(run, out: Path | None = None) -> dict[str, Any]:
    """Train the photo and photo retrieval models, fill ``run.results[split]["photo"]``; return ``photo``.

    ``run`` is the :class:`~phenogen.evaluate.steps.Evaluation` after ``build_baselines`` (its image rows
    ``run.sets``); its ``results[split]`` blocks must exist. ``out``: where ``photo/`` is saved.
    """
    from phenogen.evaluate import retrieval

    cfg = run.cfg
    bank = run.bank if run.bank.size == cfg.photo_image_size else ImageBank(cfg.photo_image_size)
    feats = _Features(bank)
    model_block, train_paths, labels = _fit_model(run, out, feats)
    train_features = feats.read(train_paths)[0]  # (N, F)
    feats.mean, feats.std = train_features.mean(0), np.maximum(train_features.std(0), 1e-4)
    heads = feats.model.spec.heads
    # 1. retrieval model on photo features
    retrieval_block, dna, emb, barcode = None, None, {}, {}
    names, profiles = run.candidates()
    index = {sp: i for i, sp in enumerate(names)}
    if cfg.retrieval:
        run.log(f"training the DNA→photo retrieval model on {len(train_paths)} training photos")
        model, history = retrieval.train_retrieval(
            train_features, labels["species"], profiles[[index[sp] for sp in run.train_species]],
            k=cfg.retrieval_k, dim=cfg.retrieval_dim, epochs=cfg.retrieval_epochs, lr=cfg.retrieval_lr,
            weight_decay=cfg.retrieval_weight_decay, dropout=cfg.retrieval_dropout,
            temperature=cfg.retrieval_temperature, seed=cfg.seed, progress=run.log,
        )  # fmt: skip
        dna = retrieval.embed_dna(model, profiles)  # (S, dim)
        unique = list(
            dict.fromkeys(p for sets in run.sets.values() for d in sets.values() for w in d for _, p in w)
        )
        emb = dict(zip(unique, retrieval.embed_images(model, feats.read(unique)[0]), strict=True))
        every = [t for ts in run.targets.values() for t in ts]
        painted = np.stack([retrieval.kmer_profile(t.painted, cfg.retrieval_k) for t in every])
        barcode = dict(
            zip([t.record.record_id for t in every], retrieval.embed_dna(model, painted), strict=True)
        )
        chance = retrieval.success_rates(np.zeros(0), len(names))
        retrieval_block = {
            "n_candidates": len(names),
            "candidates": "every species of split train plus every species of the scored splits",
            **{k: chance[k] for k in ("chance_top1", "chance_top5", "chance_top100")},
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "seconds": history["seconds"],
        }
    # 2. per split: every image row
    classes = {h: set(c) for h, c in heads.items()}
    for split, ts in run.targets.items():
        truth_taxa = []  # per target: {head: class index or None}
        for t in ts:
            lin = (*lineage(t.record), t.record.species)
            truth_taxa.append(
                {
                    h: (heads[h].index(x) if (x := taxon_of(lin, classes[h])) is not None else None)
                    for h in heads
                }
            )
        reference = (
            feats.read([run.ds.root / p for t in ts for p in t.record.images])[0] - feats.mean
        ) / feats.std
        rows: dict[str, Any] = {}
        for m in PHOTO_METHODS:
            draws = [d for d in run.sets[split].get(m, []) if d]
            if not draws:
                rows[m] = _empty_row(
                    (run.render_note or run.oracle_note or "oracle not available")
                    if m in ("mean_render", "oracle_render")
                    else "no images available"
                )
                continue
            scores = [_score_draw(run, draw, ts, feats, dna, index, emb, barcode, truth_taxa, reference)
                      for draw in draws]  # fmt: skip
            row = _empty_row()
            for key in ("top1", "top5", "top100", "mean_rank", "similarity", "fid", "kid_mean", "kid_std"):
                vals = [s[key] for s in scores if s.get(key) is not None]
                row[key] = float(np.mean(vals)) if vals else None
            row["taxon_agreement"] = {
                h: (
                    float(np.mean(v))
                    if (v := [s["taxa"][h] for s in scores if s["taxa"][h] is not None])
                    else None
                )
                for h in heads
            }
            if retrieval_block is not None:
                row.update({k: retrieval_block[k] for k in ("chance_top1", "chance_top5", "chance_top100")})
            row["n_images"] = len(draws[0])
            row["n_targets"] = len({i for i, _ in draws[0]})
            if row["n_targets"] < len(ts):
                row["note"] = f"{len(ts) - row['n_targets']} target(s) have no images for this row"
            if cfg.fid and len(reference) < 2:
                no_fid = "fewer than 2 real photos of the split's targets: no FID/KID"
                row["note"] = f"{row['note']}; {no_fid}" if row["note"] else no_fid
            rows[m] = row
        run.results[split]["photo"] = {
            "n_reference_photos": len(reference),
            "taxon_targets": {h: sum(tt[h] is not None for tt in truth_taxa) for h in heads},
            "methods": rows,
        }
    return {
        "methods": list(PHOTO_METHODS),
        "heads": list(heads),
        "model": model_block,
        "retrieval": retrieval_block,
        "headline": _headline(run.results),
    }


def _score_draw(run, draw, ts, feats, dna, index, emb, barcode, truth_taxa, reference) -> dict[str, Any]:
    """One draw of one row: retrieval, similarity, FID/KID, taxonomic agreement."""
    import torch

    from phenogen.evaluate import retrieval
    from phenogen.evaluate.fid import fid_kid_features

    cfg = run.cfg
    idx = [i for i, _ in draw]
    paths = [p for _, p in draw]
    out: dict[str, Any] = {}
    if dna is not None:
        image_emb = torch.stack([emb[p] for p in paths])  # (N, dim)
        ranks = retrieval.rank_species(image_emb, dna, [index[ts[i].record.species] for i in idx])
        rates = retrieval.success_rates(ranks, len(index))
        out.update({k: rates[k] for k in ("top1", "top5", "top100", "mean_rank")})
        own = torch.stack([barcode[ts[i].record.record_id] for i in idx])  # (N, dim)
        out["similarity"] = float((image_emb * own).sum(1).mean())
    features, probs = feats.read(paths)
    if cfg.fid and len(reference) >= 2:
        fake = (features - feats.mean) / feats.std
        kid = {"kid_subset_size": cfg.kid_subset_size, "kid_subsets": cfg.kid_subsets, "seed": cfg.seed}
        out.update(fid_kid_features(torch.from_numpy(reference), torch.from_numpy(fake), **kid))
    out["taxa"] = {}
    for h, p in probs.items():
        hits = [
            int(p[k].argmax()) == truth_taxa[i][h] for k, i in enumerate(idx) if truth_taxa[i][h] is not None
        ]
        out["taxa"][h] = float(np.mean(hits)) if hits else None
    return out


def _headline(results: dict[str, Any]) -> dict[str, Any] | None:
    """The photo numbers of held-out species (or the first scored split): generated vs the baselines."""
    if not results:
        return None
    split = "heldout" if "heldout" in results else next(iter(results))
    rows = results[split]["photo"]["methods"]
    gen = rows["generated"]
    return {
        "split": split,
        **{k: gen[k] for k in ("top1", "top5", "top100", "chance_top1", "chance_top5", "chance_top100")},
        "top5_by_row": {m: rows[m]["top5"] for m in ("generated", "truth", "nearest", "random")},
        "similarity_by_row": {m: rows[m]["similarity"] for m in ("generated", "truth", "nearest", "random")},
        "kid_mean": gen["kid_mean"],
        "taxon_agreement": gen["taxon_agreement"],
    }
