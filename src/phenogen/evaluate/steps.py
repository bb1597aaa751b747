"""The steps of one ``phenogen evaluate`` run, sharing their state in :class:`Evaluation`.

:func:`phenogen.evaluate.metrics.evaluate` calls them in order: :meth:`Evaluation.fit_probe`
(train or load the trait probe, R² per split), :meth:`Evaluation.build_baselines` (every method's
image draws / trait vectors, same count per target), :meth:`Evaluation.score_traits` (trait error),
:meth:`Evaluation.score_identification` (named from the true trait table),
:meth:`Evaluation.score_retrieval` (DNA→image success) and :meth:`Evaluation.score_distribution`
(FID/KID). Each fills ``Evaluation.results[split]["methods"][method]`` rows with the keys
:data:`ROW_KEYS` documented in ``docs/metrics_schema.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.data.dataset import SPLITS, Dataset
from phenogen.errors import DataError
from phenogen.evaluate.config import METHODS, EvaluateConfig
from phenogen.evaluate.targets import ImageBank, Target, trait_matrix
from phenogen.sim.traitspec import DISCRETE, TRAIT_NAMES

__all__ = ["Evaluation", "ROW_KEYS", "IMAGE_METHODS", "redraw_se", "rmse_text", "score_predictions"]

IMAGE_METHODS = ("generated", "nearest", "random", "truth", "mean_render", "oracle_render")
#: image rows drawn by the synthetic clade's renderer from a trait vector (``mean`` / ``oracle``)
RENDER_METHODS = {"mean_render": "mean", "oracle_render": "oracle"}
#: The keys of every method's row, per split (see docs/metrics_schema.md).
ROW_KEYS: tuple[str, ...] = (
    "n_images",
    "n_targets",
    "trait_rmse",
    "trait_rmse_std",
    "trait_rmse_se",
    "per_trait_rmse",
    "discrete_accuracy",
    "top1",
    "top5",
    "mean_rank",
    "chance_top1",
    "chance_top5",
    "top1_traits",
    "top5_traits",
    "fid",
    "kid_mean",
    "kid_std",
    "note",
)


def score_predictions(
    pred: np.ndarray, truth: np.ndarray, n_cont: int, names: Sequence[str]
) -> dict[str, Any]:
    """Trait error of predictions (N, P) against truths (N, P): z-scored continuous, then probabilities.

    ``trait_rmse`` covers the first ``n_cont`` columns; ``per_trait_rmse`` every column (√Brier for
    binary traits); ``discrete_accuracy`` the share of binary calls (p > 0.5) that are right.

    >>> score_predictions(np.array([[1.0, 0.9]]), np.array([[0.0, 1.0]]), 1, ["a", "b"])["trait_rmse"]
    1.0
    """
    err = pred - truth
    per = {n: float(np.sqrt(np.mean(err[:, j] ** 2))) for j, n in enumerate(names)}
    rmse = float(np.sqrt(np.mean(err[:, :n_cont] ** 2))) if n_cont and len(err) else None
    acc = (
        float(np.mean((pred[:, n_cont:] > 0.5) == (truth[:, n_cont:] > 0.5))) if len(names) > n_cont else None
    )
    return {"trait_rmse": rmse, "per_trait_rmse": per, "discrete_accuracy": acc}


def redraw_se(sq: np.ndarray, target: np.ndarray) -> float | None:
    """Standard error of a trait RMSE from redrawing the images of the same targets.

    ``sq`` holds each image's mean squared error over the continuous traits, ``target`` its target.
    The within-target spread of ``sq`` gives the variance of their mean (targets fixed; the delta
    method carries it to the root). ``None`` when some target has fewer than two images or the
    error is zero.

    >>> round(redraw_se(np.array([0.5, 1.5, 1.0, 1.0]), np.array([0, 0, 1, 1])), 4)
    0.125
    """
    sq, target = np.asarray(sq, dtype=np.float64), np.asarray(target)
    n = len(sq)
    groups = [sq[target == t] for t in np.unique(target)]
    if not n or min(len(g) for g in groups) < 2:
        return None
    rmse = float(np.sqrt(sq.mean()))
    if rmse == 0.0:
        return None
    var_mean = sum(len(g) * float(np.var(g, ddof=1)) for g in groups) / n**2
    return float(np.sqrt(var_mean) / (2.0 * rmse))


def rmse_text(row: dict[str, Any], digits: int = 3) -> str:
    """A row's trait RMSE as text, with ``± se`` (:func:`redraw_se`) when known; ``—`` when missing.

    >>> rmse_text({"trait_rmse": 0.6381, "trait_rmse_se": 0.0123}), rmse_text({"trait_rmse": None})
    ('0.638 ± 0.012', '—')
    """
    if row.get("trait_rmse") is None:
        return "—"
    text = f"{row['trait_rmse']:.{digits}f}"
    if row.get("trait_rmse_se") is not None:
        text += f" ± {row['trait_rmse_se']:.{digits}f}"
    return text


def _empty_row(note: str | None = None) -> dict[str, Any]:
    """One method's row with every key of the schema (``None`` = not applicable / not available)."""
    return {**dict.fromkeys(ROW_KEYS), "note": note}


class Evaluation:
    """The state shared by the steps of one :func:`evaluate` call (one method per step)."""

    def __init__(self, ds: Dataset, targets: dict[str, list[Target]], cfg: EvaluateConfig, log) -> None:
        self.ds, self.targets, self.cfg, self.log = ds, targets, cfg, log
        names = ds.trait_names
        self.has_traits = bool(names)  # without traits: the photo scores only (photo_scores.py)
        self.continuous = [n for n in names if n not in DISCRETE]
        self.ordered = [*self.continuous, *(n for n in names if n in DISCRETE)]
        self.n_cont = len(self.continuous)
        self.train = [r for r in ds.records("train") if r.images]
        if len(self.train) < 2:
            raise DataError(
                f"{ds.root}: evaluate needs training records with images (found {len(self.train)}); "
                "give the records of split train their photos"
            )
        if self.has_traits:
            self.train_traits = trait_matrix(self.train, self.ordered, f"{ds.root}/manifest.tsv")  # (N, P)
        self.bank = ImageBank(cfg.probe_image_size)
        self.pool: dict[str, list[Path]] = {}
        for r in self.train:
            self.pool.setdefault(r.species, []).extend(ds.root / p for p in r.images)
        self.train_species = list(self.pool)
        if len(self.train_species) < 2 and (cfg.photo or cfg.retrieval):
            raise DataError(
                f"{ds.root}: evaluate needs photos of at least two training species "
                f"(found {', '.join(self.train_species)}); the retrieval and photo models tell species apart"
            )
        self.rng = np.random.default_rng(cfg.seed)
        # filled by the steps
        self.probe: Any = None
        self.sets: dict[str, dict[str, list[list[tuple[int, Path]]]]] = {}
        self.vectors: dict[str, dict[str, np.ndarray | None]] = {}
        self.nearest_of: dict[str, tuple[str, float]] = {}
        self.oracle_of: dict[str, np.ndarray] = {}
        self.oracle_note: str | None = None
        self.render_note: str | None = None
        self.results: dict[str, Any] = {}
        self.gen_error: dict[str, float] = {}
        #: record id → (the species its portraits are most often named as from the trait table, their count, and
        #: how many were named as its own species); filled by :meth:`score_identification`
        self.named_of: dict[str, tuple[str, int, int]] = {}

    def predict(self, paths: Sequence[Path]) -> np.ndarray:
        """The probe's reading (N, P) of image files (each computed once)."""
        return self.bank.read(self.probe, list(paths))[0]

    # 2. probe
    def _prior_renders(self, spec) -> tuple[Any, np.ndarray] | None:
        """Renders of random birds for the probe, when the dataset is a phenogen synthetic clade."""
        from phenogen.data.dataset import read_image
        from phenogen.evaluate.probe import prior_renders

        n = self.cfg.probe_prior_renders
        self.prior_note = None
        if n == 0:
            return None
        if self.ds.info.get("source") != "synthetic" or not set(self.ordered) <= set(TRAIT_NAMES):
            self.prior_note = "dataset is not a phenogen synthetic clade: probe trained on its renders only"
            return None
        size = read_image(self.ds.root / self.train[0].images[0], "training image").size[0]
        self.log(f"rendering {n} random birds from the trait prior for the probe")
        rng = np.random.default_rng([self.cfg.seed, 1])
        return prior_renders(
            spec.continuous, spec.discrete, n, size, rng, sd=self.cfg.probe_prior_sd, out_size=self.bank.size
        )

    def fit_probe(self, out: Path) -> dict[str, Any]:
        import torch

        from phenogen.evaluate import probe as probe_mod

        cfg = self.cfg
        if cfg.probe_dir:
            self.probe = probe_mod.load_probe(cfg.probe_dir)
            if self.probe.spec.trait_names != self.ordered:
                raise DataError(
                    f"probe {cfg.probe_dir} predicts {self.probe.spec.trait_names}, the dataset has {self.ordered}"
                )
            history: dict = {"loaded_from": str(cfg.probe_dir)}
            self.prior_note = None
        else:
            cont = self.train_traits[:, : self.n_cont]
            std = cont.std(0)
            spec = probe_mod.ProbeSpec(
                continuous=self.continuous,
                discrete=self.ordered[self.n_cont :],
                mean=cont.mean(0).tolist(),
                std=np.where(std > 1e-8, std, 1.0).tolist(),
                image_size=cfg.probe_image_size,
                width=cfg.probe_width,
                features=cfg.probe_features,
            )
            paths = [self.ds.root / p for r in self.train for p in r.images]
            rows = np.repeat(self.train_traits, [len(r.images) for r in self.train], axis=0)
            images = self.bank.stack(paths)
            prior = self._prior_renders(spec)
            msg = f"training the trait probe on {len(paths)} renders of {len(self.train_species)} training species"
            if prior is not None:
                images, rows = torch.cat([images, prior[0]]), np.concatenate([rows, prior[1]])
                msg += f" + {len(prior[1])} renders of random birds from the trait prior"
            self.log(msg)
            self.probe, history = probe_mod.train_probe(
                images,
                rows,
                spec,
                epochs=cfg.probe_epochs,
                batch_size=cfg.probe_batch_size,
                lr=cfg.probe_lr,
                seed=cfg.seed,
                device=cfg.device,
                progress=self.log,
            )
            history["train_images"] = len(paths)  # renders of training species (prior renders apart)
            history["prior_renders"] = 0 if prior is None else len(prior[1])
            probe_mod.save_probe(self.probe, out / "probe", history)
        losses = history.get("loss") or [None]
        block: dict[str, Any] = {
            "epochs": len(history.get("loss", [])),
            "train_images": history.get("train_images"),
            "final_loss": losses[-1],
            "seconds": history.get("seconds"),
            "loaded_from": history.get("loaded_from"),
            "prior_renders": history.get("prior_renders", 0),
            "prior_note": self.prior_note,
            "r2": {},
            "r2_clade": {},
            "r2_mean": {},
            "discrete_accuracy": {},
            "n_images": {},
        }
        for split in SPLITS:
            recs = [
                r for r in self.ds.records(split) if r.images and all(n in r.traits for n in self.ordered)
            ]
            if not recs:
                continue
            per_image = np.repeat(trait_matrix(recs, self.ordered, split), [len(r.images) for r in recs], 0)
            truth = self.probe.spec.standardize(per_image)
            pred = self.predict([self.ds.root / p for r in recs for p in r.images])
            r2 = probe_mod.r2_scores(pred, truth, self.ordered)
            cont_r2 = [r2[n] for n in self.continuous if r2[n] is not None]
            block["r2"][split] = r2
            # against the clade-wide spread (z-scored with the training sd): 1 − MSE, continuous only
            mse = np.mean((pred - truth)[:, : self.n_cont] ** 2, axis=0)
            block["r2_clade"][split] = {n: float(1.0 - mse[j]) for j, n in enumerate(self.continuous)}
            block["r2_mean"][split] = float(np.mean(cont_r2)) if cont_r2 else None
            block["discrete_accuracy"][split] = score_predictions(pred, truth, self.n_cont, self.ordered)[
                "discrete_accuracy"
            ]
            block["n_images"][split] = len(pred)
        return block

    # 3a. baselines
    def build_baselines(self, out: Path | None = None) -> None:
        """Every method's images (or trait vectors) per split; ``out``: where the rendered rows' pictures go
        (``OUT/baselines/``; without it those rows are empty)."""
        from phenogen.evaluate import baselines

        cfg, ds = self.cfg, self.ds
        every = [t for ts in self.targets.values() for t in ts]
        near = baselines.nearest_by_barcode(
            [t.painted for t in every],  # the barcode the generator was given (e.g. reconstructed)
            [r.sequence for r in self.train],
            mode=cfg.nearest_mode,
            max_align=cfg.nearest_max_align,
        )
        self.nearest_of = {
            t.record.record_id: (self.train[j].species, ident)
            for t, (j, ident) in zip(every, near, strict=True)
        }
        rendered: dict[str, dict[str, list[tuple[int, Path]]]] = {}
        if self.has_traits:
            self._build_oracle(every)
            rendered = self._render_vectors(out)
            spec = self.probe.spec
            mean_z = spec.standardize(self.train_traits.mean(0)[None])  # (1, P)
        else:
            self.render_note = "the dataset declares no traits"
        for split, ts in self.targets.items():
            sets: dict[str, list[list[tuple[int, Path]]]] = {m: [] for m in IMAGE_METHODS}
            sets["generated"].append([(i, p) for i, t in enumerate(ts) for p in t.generated])
            sets["nearest"].append(
                [
                    (i, p)
                    for i, t in enumerate(ts)
                    for p in baselines.sample_paths(
                        self.pool[self.nearest_of[t.record.record_id][0]], len(t.generated), self.rng
                    )
                ]
            )
            for _ in range(cfg.random_repeats):
                draw = []
                for i, t in enumerate(ts):
                    sp = self.train_species[int(self.rng.integers(len(self.train_species)))]
                    draw += [
                        (i, p) for p in baselines.sample_paths(self.pool[sp], len(t.generated), self.rng)
                    ]
                sets["random"].append(draw)
            truth = []
            for i, t in enumerate(ts):
                own = [ds.root / p for p in t.record.images]
                if own:
                    truth += [(i, p) for p in baselines.sample_paths(own, len(t.generated), self.rng)]
            sets["truth"].append(truth)
            for m in RENDER_METHODS:
                sets[m].append(rendered.get(m, {}).get(split, []))
            self.sets[split] = sets
            if not self.has_traits:
                continue
            have_oracle = all(t.record.record_id in self.oracle_of for t in ts)
            self.vectors[split] = {
                "mean": np.repeat(mean_z, len(ts), 0),
                "oracle": spec.standardize(np.stack([self.oracle_of[t.record.record_id] for t in ts]))
                if have_oracle
                else None,
            }

    def _render_vectors(self, out: Path | None) -> dict[str, dict[str, list[tuple[int, Path]]]]:
        """``mean_render`` / ``oracle_render``: the mean training bird's and each target's oracle trait vector
        drawn by the clade's own renderer (:func:`phenogen.sim.render.render_photos`, a random pose, light and
        background per photo, as the truth photos), as many photos per target as it has generated images,
        written to ``OUT/baselines/<method>/``. The direct ``mean`` / ``oracle`` rows pay no probe error; these
        pay the same as every image row, so "generated vs oracle" can be read picture against picture.
        Binary traits are drawn when the vector's value is above 0.5."""
        from phenogen.data.dataset import read_image
        from phenogen.diffusion.generate import safe_name
        from phenogen.sim.render import render_photos

        if out is None:
            self.render_note = "no output directory for the renders"
            return {}
        if self.ds.info.get("source") != "synthetic" or not set(self.ordered) <= set(TRAIT_NAMES):
            self.render_note = (
                "rendered baselines need a phenogen synthetic clade (its renderer draws the traits)"
            )
            return {}
        size = read_image(self.ds.root / self.train[0].images[0], "training image").size[0]
        mean_raw = self.train_traits.mean(0)

        def as_traits(vec: np.ndarray) -> dict[str, float]:
            values = {n: 0.0 for n in TRAIT_NAMES}
            for j, n in enumerate(self.ordered):
                values[n] = float(vec[j]) if j < self.n_cont else float(vec[j] > 0.5)
            return values

        result: dict[str, dict[str, list[tuple[int, Path]]]] = {m: {} for m in RENDER_METHODS}
        n_images = 0
        for s_i, (split, ts) in enumerate(self.targets.items()):
            for m, source in RENDER_METHODS.items():
                if source == "oracle" and not all(t.record.record_id in self.oracle_of for t in ts):
                    continue
                folder = out / "baselines" / m
                folder.mkdir(parents=True, exist_ok=True)
                draw = []
                for i, t in enumerate(ts):
                    rid = t.record.record_id
                    vec = mean_raw if source == "mean" else self.oracle_of[rid]
                    rng = np.random.default_rng([self.cfg.seed, 11, s_i, i, 0 if source == "mean" else 1])
                    for k, im in enumerate(render_photos(as_traits(vec), len(t.generated), size, rng)):
                        path = folder / f"{safe_name(rid)}_{k}.png"  # derived pictures, redrawn by a rerun
                        im.convert("RGB").save(path)
                        draw.append((i, path))
                        n_images += 1
                result[m][split] = draw
        self.log(
            f"rendered {n_images} baseline images (mean and oracle trait vectors) into {out / 'baselines'}"
        )
        return result

    def _build_oracle(self, every: Sequence[Target]) -> None:
        from phenogen.evaluate import baselines

        tree = self.ds.tree_path
        if tree is None:
            self.oracle_note = "no true tree in the dataset"
            return
        tree_names = baselines.tree_node_names(tree)
        species = np.array([r.species for r in self.train])
        known = {sp: self.train_traits[species == sp].mean(0) for sp in self.train_species}
        missing = [sp for sp in known if sp not in tree_names]
        if missing:
            self.oracle_note = f"training species {', '.join(missing[:3])} are not nodes of the tree"
            return
        node = {}
        for t in every:
            r = t.record
            node[r.record_id] = next(
                (c for c in (r.species, r.individual, r.record_id) if c in tree_names), None
            )
        pred = baselines.bm_conditional_mean(tree, known, sorted({n for n in node.values() if n}))
        for rid, n in node.items():
            if n in pred:
                v = pred[n]
                self.oracle_of[rid] = np.concatenate([v[: self.n_cont], np.clip(v[self.n_cont :], 0.0, 1.0)])
        if len(self.oracle_of) < len(node):
            self.oracle_note = f"{len(node) - len(self.oracle_of)} target(s) are not nodes of the true tree"

    # 3b. trait error
    def score_traits(self) -> None:
        spec = self.probe.spec
        for split, ts in self.targets.items():
            truth_z = spec.standardize(trait_matrix([t.record for t in ts], self.ordered, split))  # (T, P)
            counts = np.array([len(t.generated) for t in ts])
            methods: dict[str, Any] = {}
            for m in METHODS:
                if m in IMAGE_METHODS:
                    methods[m] = self._score_images(split, m, truth_z, len(ts))
                    continue
                vec = self.vectors[split][m]
                if vec is None:
                    methods[m] = _empty_row(self.oracle_note or "oracle not available")
                    continue
                row = _empty_row()
                row.update(
                    score_predictions(
                        np.repeat(vec, counts, 0), np.repeat(truth_z, counts, 0), self.n_cont, self.ordered
                    )
                )
                row.update(n_images=int(counts.sum()), n_targets=len(ts))
                methods[m] = row
            self.results[split] = {"n_targets": len(ts), "n_images": int(counts.sum()), "methods": methods}

    def _score_images(self, split: str, method: str, truth_z: np.ndarray, n_targets: int) -> dict[str, Any]:
        draws = [d for d in self.sets[split][method] if d]
        if not draws:
            if method in RENDER_METHODS:
                return _empty_row(self.render_note or self.oracle_note or "oracle not available")
            return _empty_row("no images available")
        scores, ses = [], []
        for draw in draws:
            idx = np.array([i for i, _ in draw])
            pred = self.predict([p for _, p in draw])
            scores.append(score_predictions(pred, truth_z[idx], self.n_cont, self.ordered))
            sq = np.mean((pred - truth_z[idx])[:, : self.n_cont] ** 2, axis=1)  # per-image MSE
            ses.append(redraw_se(sq, idx))
            if method == "generated":
                for i in np.unique(idx):
                    rid = self.targets[split][int(i)].record.record_id
                    self.gen_error[rid] = float(np.sqrt(np.mean(sq[idx == i])))
        row = _empty_row()
        row.update(scores[0])
        if all(se is not None for se in ses):  # independent draws: the mean's error shrinks by √draws
            row["trait_rmse_se"] = float(np.mean(ses)) / np.sqrt(len(ses))
        if len(scores) > 1:
            vals = [s["trait_rmse"] for s in scores]
            accs = [s["discrete_accuracy"] for s in scores if s["discrete_accuracy"] is not None]
            row.update(
                trait_rmse=float(np.mean(vals)),
                trait_rmse_std=float(np.std(vals)),
                per_trait_rmse={
                    n: float(np.mean([s["per_trait_rmse"][n] for s in scores])) for n in self.ordered
                },
                discrete_accuracy=float(np.mean(accs)) if accs else None,
            )
        row["n_images"] = len(draws[0])
        row["n_targets"] = len({i for i, _ in draws[0]})
        if row["n_targets"] < n_targets:
            row["note"] = f"{n_targets - row['n_targets']} target(s) have no images for this row"
        return row

    # 4. retrieval
    def candidate_records(self) -> dict[str, list[Any]]:
        """The retrieval candidates: every species of split ``train`` plus every species of the scored
        splits, each with all of its records of those splits."""
        ds = self.ds
        names = dict.fromkeys([*ds.species("train"), *ds.species(tuple(self.cfg.splits))])
        out: dict[str, list[Any]] = {sp: [] for sp in names}
        for r in ds.records(("train", *self.cfg.splits)):
            out[r.species].append(r)
        return out

    def candidates(self) -> tuple[list[str], np.ndarray]:
        """The retrieval candidates (:meth:`candidate_records`) with the mean k-mer profile (S, 4^k) of all
        of their records."""
        from phenogen.evaluate import retrieval

        seqs = {sp: [r.sequence for r in recs] for sp, recs in self.candidate_records().items()}
        return retrieval.species_profiles(seqs, self.cfg.retrieval_k)

    def score_identification(self) -> dict[str, Any]:
        """``top1_traits`` / ``top5_traits`` of every row: the share of images (or trait vectors) that lie
        nearer their own species' true traits than any other candidate's (continuous traits, z-scored; a
        species' truth = the mean over its records). No model is trained: it asks whether a person holding
        the clade's trait table could name the species from the picture, so it separates "the portrait
        is not distinct enough" from "the retrieval model does not know this species" (``top1``).
        Needs every candidate's true traits; otherwise every row keeps ``None`` and the block says why."""
        from phenogen.evaluate import retrieval

        records = self.candidate_records()
        block: dict[str, Any] = {"n_candidates": len(records), "traits": list(self.continuous), "note": None}
        lacking = [
            sp for sp, recs in records.items() if not all(set(self.continuous) <= set(r.traits) for r in recs)
        ]
        if lacking or not self.continuous:
            block["note"] = (
                f"species {', '.join(lacking[:3])} have no true traits" if lacking else "no continuous traits"
            )
            return block
        names = list(records)
        index = {sp: i for i, sp in enumerate(names)}
        spec = self.probe.spec
        truth = np.stack(
            [spec.standardize(trait_matrix(records[sp], self.continuous, sp)).mean(0) for sp in names]
        )  # (S, C)
        for split, ts in self.targets.items():
            counts = np.array([len(t.generated) for t in ts])
            for m, row in self.results[split]["methods"].items():
                if m in IMAGE_METHODS:
                    pairs = [
                        ([index[ts[i].record.species] for i, _ in draw], self.predict([p for _, p in draw]))
                        for draw in self.sets[split][m]
                        if draw
                    ]
                elif self.vectors[split].get(m) is not None:
                    true = np.repeat([index[t.record.species] for t in ts], counts)
                    pairs = [(true, np.repeat(self.vectors[split][m], counts, 0))]
                else:
                    continue
                rates = [
                    retrieval.success_rates(
                        retrieval.rank_by_traits(pred[:, : self.n_cont], truth, true), len(names)
                    )
                    for true, pred in pairs
                ]
                for key in ("top1", "top5") if rates else ():
                    row[f"{key}_traits"] = float(np.mean([r[key] for r in rates]))
                if m == "generated" and pairs:
                    self._name_portraits(
                        split, [i for i, _ in self.sets[split][m][0]], pairs[0], truth, names
                    )
        return block

    def _name_portraits(
        self, split: str, target_of: list[int], pair, truth: np.ndarray, names: list[str]
    ) -> None:
        """Per target of ``split``: the species its portraits are most often nearest to in trait space (ties: the
        nearer on average), how many portraits it has and how many are nearest to its own species."""
        from phenogen.evaluate.retrieval import trait_distances

        true = np.asarray(pair[0])
        dist = trait_distances(pair[1][:, : self.n_cont], truth)  # (N, S)
        nearest = dist.argmin(1)
        target_of = np.asarray(target_of)
        for i in np.unique(target_of):
            rows = target_of == i
            votes = np.bincount(nearest[rows], minlength=len(names))
            tied = np.flatnonzero(votes == votes.max())
            best = int(tied[dist[rows][:, tied].mean(0).argmin()])
            rid = self.targets[split][int(i)].record.record_id
            self.named_of[rid] = (names[best], int(rows.sum()), int((nearest[rows] == true[rows]).sum()))

    def score_retrieval(self) -> dict[str, Any]:
        import torch

        from phenogen.evaluate import retrieval

        cfg = self.cfg
        names, profiles = self.candidates()  # (S, 4^k)
        index = {sp: i for i, sp in enumerate(names)}
        paths = [p for sp in self.train_species for p in self.pool[sp]]
        labels = np.array([i for i, sp in enumerate(self.train_species) for _ in self.pool[sp]])
        self.log(f"training the DNA→image retrieval model on {len(paths)} training images")
        model, history = retrieval.train_retrieval(
            self.bank.read(self.probe, paths)[1],
            labels,
            profiles[[index[sp] for sp in self.train_species]],
            k=cfg.retrieval_k,
            dim=cfg.retrieval_dim,
            epochs=cfg.retrieval_epochs,
            lr=cfg.retrieval_lr,
            weight_decay=cfg.retrieval_weight_decay,
            dropout=cfg.retrieval_dropout,
            temperature=cfg.retrieval_temperature,
            seed=cfg.seed,
            progress=self.log,
        )
        chance = retrieval.success_rates(np.zeros(0), len(names))
        dna = retrieval.embed_dna(model, profiles)  # (S, dim)
        unique = list(
            dict.fromkeys(p for sets in self.sets.values() for d in sets.values() for w in d for _, p in w)
        )
        emb = dict(
            zip(unique, retrieval.embed_images(model, self.bank.read(self.probe, unique)[1]), strict=True)
        )
        for split, ts in self.targets.items():
            for m in METHODS:
                row = self.results[split]["methods"][m]
                row["chance_top1"], row["chance_top5"] = chance["chance_top1"], chance["chance_top5"]
                rates = []
                for draw in self.sets[split].get(m, []):
                    if draw:
                        true = [index[ts[i].record.species] for i, _ in draw]
                        ranks = retrieval.rank_species(torch.stack([emb[p] for _, p in draw]), dna, true)
                        rates.append(retrieval.success_rates(ranks, len(names)))
                for key in ("top1", "top5", "mean_rank") if rates else ():
                    row[key] = float(np.mean([r[key] for r in rates]))
        return {
            "n_candidates": len(names),
            "candidates": "every species of split train plus every species of the scored splits",
            "chance_top1": chance["chance_top1"],
            "chance_top5": chance["chance_top5"],
            "train_species": len(self.train_species),
            "train_images": len(paths),
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "seconds": history["seconds"],
        }

    # 5. FID / KID
    def score_distribution(self) -> None:
        import torch

        from phenogen.evaluate.fid import fid_kid_features

        cfg = self.cfg
        for split, ts in self.targets.items():
            reference = self.bank.read(self.probe, [self.ds.root / p for t in ts for p in t.record.images])[1]
            for m in IMAGE_METHODS:
                vals = [
                    fid_kid_features(
                        torch.from_numpy(reference),
                        torch.from_numpy(self.bank.read(self.probe, [p for _, p in draw])[1]),
                        kid_subset_size=cfg.kid_subset_size,
                        kid_subsets=cfg.kid_subsets,
                        seed=cfg.seed,
                    )
                    for draw in self.sets[split][m]
                    if draw
                ]
                vals = [v for v in vals if v["fid"] is not None]
                for key in ("fid", "kid_mean", "kid_std") if vals else ():
                    self.results[split]["methods"][m][key] = float(np.mean([v[key] for v in vals]))

    def target_rows(self) -> list[dict[str, Any]]:
        rows = []
        for split, ts in self.targets.items():
            for t in ts:
                rid = t.record.record_id
                sp, ident = self.nearest_of[rid]
                rows.append(
                    {
                        "record_id": rid,
                        "species": t.record.species,
                        "split": split,
                        "n_images": len(t.generated),
                        "generated_rmse": self.gen_error.get(rid),
                        "nearest_species": sp,
                        "nearest_identity": ident,
                    }
                )
                if rid in self.named_of:
                    named, n, own = self.named_of[rid]
                    rows[-1].update(named_as=named, named_own=f"{own}/{n}")
        return rows
