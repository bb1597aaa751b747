"""The synthetic clade, end to end: tree → barcodes → traits → splits → photos → dataset directory.

:func:`simulate_clade` writes a :mod:`phenogen.data.dataset` directory with ground truth set apart::

    OUT/
      dataset.json  manifest.tsv  sequences.fasta   (train + heldout barcodes only)
      tree.nwk                   the full true tree: extinct tips, internal names, time units
      contact_sheet.png          one canonical render per living and extinct species, in tree order
      images/train/SPECIES/SPECIES_iK_pJ.png      photos of training individuals
      images/heldout/SPECIES/...                  photos of held-out living individuals
      truth/                     NEVER for training: what a model must predict
        tree_living.nwk          the true tree pruned to living species
        species.fasta            the true barcode of every living and extinct species (tip of the tree)
        extinct.fasta            barcodes of the extinct species' individuals
        ancestors.fasta          barcodes of every internal node (root n000 first)
        traits.tsv               true traits, depth, age, parent, clade and genus of every node
        images/species/NAME.png  canonical render of every living and extinct species
        images/extinct/...       photos of extinct individuals
        images/ancestor/NODE/NODE_canon.png, NODE_pJ.png   renders of every internal node

Manifest rows: one per individual of a living species (split ``train`` or ``heldout``, node kind
``living``), one per individual of an extinct species (``extinct``/``extinct``) and one per internal
node (``ancestor``/``internal``, individual = the node, first image = its canonical render).
Taxonomy is ``("Aves", clade, genus, species)`` from :func:`~phenogen.sim.tree.cut_labels`.

Randomness: every stage draws from its own ``numpy.random.Generator`` seeded with
``[seed, stage]`` (each photo set with ``[seed, stage, record]``), so the same seed gives the same
bytes and changing e.g. the photo count does not change the tree or the barcodes.
No timestamps are written anywhere.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phenogen.data.dataset import Dataset, Record, write_dataset
from phenogen.sim.config import SimConfig
from phenogen.sim.sequences import (
    CodonModel,
    decode,
    evolve_branch,
    evolve_tree,
    pairwise_identity,
    root_codons,
)
from phenogen.sim.traits import TraitValues, evolve_traits, individual_traits
from phenogen.sim.traitspec import CONTINUOUS, DISCRETE, TRAIT_NAMES
from phenogen.sim.tree import SimTree, choose_heldout_clades, cut_labels, simulate_tree

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["simulate_clade", "CladeTruth", "build_truth", "OUTPUT_ENTRIES"]

# Stage ids of the random streams (never renumber: outputs of a seed would change).
_TREE, _SEQUENCES, _TRAITS, _SPLITS, _INDIVIDUALS, _PHOTOS = range(1, 7)
# What simulate writes at the top of its output directory (the command may replace exactly these).
OUTPUT_ENTRIES: tuple[str, ...] = (
    "dataset.json",
    "manifest.tsv",
    "sequences.fasta",
    "tree.nwk",
    "contact_sheet.png",
    "config.json",
    "images",
    "truth",
)
TAXONOMY_ROOT = "Aves"


@dataclass(frozen=True)
class CladeTruth:
    """Everything :func:`simulate_clade` knows before rendering (handy for tests and benchmarks)."""

    tree: SimTree
    sequences: list[str]  # per node, in tree.nodes order
    traits: TraitValues
    heldout_roots: list[int]
    heldout_species: frozenset[str]
    clade: dict[int, str]
    genus: dict[int, str]
    individuals: dict[int, list[tuple[str, str, dict[str, float]]]]  # tip -> [(id, sequence, traits)]


def build_truth(cfg: SimConfig) -> CladeTruth:
    """Simulate tree, barcodes, traits, splits and individuals (no images, no files)."""
    tree = simulate_tree(
        cfg.n_living,
        cfg.birth_rate,
        cfg.death_rate,
        cfg.tree_height,
        np.random.default_rng([cfg.seed, _TREE]),
        min_species_age=cfg.min_species_age,
    )
    parents = [n.parent for n in tree.nodes]
    rel_lengths = [n.branch / tree.height for n in tree.nodes]  # units of tree height

    model = CodonModel.build(
        cfg.kappa, cfg.omega, cfg.codon_position_rates, cfg.gamma_shape, cfg.gamma_categories
    )
    rng_seq = np.random.default_rng([cfg.seed, _SEQUENCES])
    root = root_codons(cfg.n_codons, rng_seq)
    codons, categories = evolve_tree(
        parents, [t * cfg.root_to_tip for t in rel_lengths], root, model, rng_seq
    )

    traits = evolve_traits(
        parents,
        rel_lengths,
        np.random.default_rng([cfg.seed, _TRAITS]),
        model=cfg.trait_model,
        sigma=cfg.trait_sigma,
        alpha=cfg.ou_alpha,
        correlation=cfg.trait_correlation,
        mk_rate=cfg.mk_rate,
        standardize_over=tree.tips() if cfg.standardize_traits else None,
    )

    heldout_roots = choose_heldout_clades(
        tree, cfg.heldout_fraction, np.random.default_rng([cfg.seed, _SPLITS]), unit=cfg.heldout_unit
    )
    heldout = frozenset(tree.nodes[i].name for r in heldout_roots for i in tree.living_descendants(r))

    rng_ind = np.random.default_rng([cfg.seed, _INDIVIDUALS])
    individuals: dict[int, list[tuple[str, str, dict[str, float]]]] = {}
    for tip in tree.tips():
        name = tree.nodes[tip].name
        individuals[tip] = []
        for k in range(1, cfg.individuals_per_species + 1):
            mean = cfg.within_species_divergence
            length = rng_ind.gamma(2.0, mean / 2.0) if mean > 0 else 0.0  # gamma(shape 2): few outliers
            seq = decode(evolve_branch(model, codons[tip], categories, length, rng_ind))
            ind_traits = individual_traits(traits.of(tip), cfg.individual_trait_noise, rng_ind)
            individuals[tip].append((f"{name}_i{k}", seq, ind_traits))
    return CladeTruth(
        tree=tree,
        sequences=[decode(c) for c in codons],
        traits=traits,
        heldout_roots=heldout_roots,
        heldout_species=heldout,
        clade=cut_labels(tree, cfg.n_clades, "clade_"),
        genus=cut_labels(tree, cfg.n_genera, "genus_", numbered=True),
        individuals=individuals,
    )


def _taxonomy(truth: CladeTruth, node: int) -> tuple[str, ...]:
    ranks = [truth.clade.get(node), truth.genus.get(node)]
    tax = [TAXONOMY_ROOT, *(r for r in ranks if r)]
    if truth.tree.nodes[node].kind != "internal":
        tax.append(truth.tree.nodes[node].name)
    return tuple(tax)


def _splits(truth: CladeTruth) -> dict[int, str]:
    """Split of every node: living → train/heldout, extinct tips → extinct, internal → ancestor."""
    out = {}
    for node in truth.tree.nodes:
        if node.kind == "living":
            out[node.index] = "heldout" if node.name in truth.heldout_species else "train"
        else:
            out[node.index] = "extinct" if node.kind == "extinct" else "ancestor"
    return out


@dataclass(frozen=True)
class _Job:
    """One manifest record waiting for its images."""

    record_id: str
    species: str
    split: str
    node_kind: str
    sequence: str
    taxonomy: tuple[str, ...]
    traits: dict[str, float]
    n_photos: int
    canonical: bool  # internal nodes also get one canonical (unposed) render, listed first

    @property
    def folder(self) -> str:
        base = "images" if self.split in ("train", "heldout") else "truth/images"
        return f"{base}/{self.split}/{self.species}"

    def record(self, images: tuple[str, ...]) -> Record:
        return Record(
            record_id=self.record_id,
            species=self.species,
            individual=self.record_id,
            split=self.split,
            node_kind=self.node_kind,
            sequence=self.sequence,
            images=images,
            taxonomy=self.taxonomy,
            traits=self.traits,
        )


def _plan(truth: CladeTruth, cfg: SimConfig, splits: Mapping[int, str]) -> list[_Job]:
    """Records in manifest order: living individuals, extinct individuals, internal nodes (preorder)."""
    tree = truth.tree
    jobs = []
    for tip in tree.living() + tree.extinct():
        node = tree.nodes[tip]
        for rid, seq, traits in truth.individuals[tip]:
            jobs.append(
                _Job(
                    rid,
                    node.name,
                    splits[tip],
                    node.kind,
                    seq,
                    _taxonomy(truth, tip),
                    traits,
                    cfg.photos_per_individual,
                    False,
                )
            )
    for i in tree.internal():
        name = tree.nodes[i].name
        jobs.append(
            _Job(
                name,
                name,
                "ancestor",
                "internal",
                truth.sequences[i],
                _taxonomy(truth, i),
                truth.traits.of(i),
                cfg.ancestor_photos,
                True,
            )
        )
    return jobs


def _identity_summary(truth: CladeTruth) -> dict[str, Any]:
    """Identity between living species (true tip barcodes) and within species (individuals)."""
    living = truth.tree.living()
    between = pairwise_identity([truth.sequences[i] for i in living])
    upper = between[np.triu_indices(len(living), 1)]
    np.fill_diagonal(between, 0.0)
    within = []
    for tip in living:
        seqs = [s for _, s, _ in truth.individuals[tip]]
        if len(seqs) > 1:
            ident = pairwise_identity(seqs)
            within.extend(ident[np.triu_indices(len(seqs), 1)].tolist())

    def stats(values: np.ndarray | list[float]) -> dict[str, float]:
        v = np.asarray(values, dtype=float)
        if not v.size:
            return {}
        return {
            k: round(float(f(v)), 4) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))
        }

    return {
        "between_living_species": stats(upper),
        "nearest_living_species": stats(between.max(axis=1)),
        "within_species": stats(within),
    }


def _save(image: Image.Image, root: Path, rel: str) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return rel


def _write_fasta(path: Path, items: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for name, seq in items:
            fh.write(f">{name}\n")
            for i in range(0, len(seq), 80):
                fh.write(seq[i : i + 80] + "\n")


def _write_truth_tables(truth: CladeTruth, root: Path, splits: Mapping[int, str]) -> None:
    tree = truth.tree
    with open(root / "truth" / "traits.tsv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["node", "kind", "split", "parent", "depth", "age", "clade", "genus", *TRAIT_NAMES])
        for node in tree.nodes:
            values = truth.traits.of(node.index)
            writer.writerow(
                [
                    node.name,
                    node.kind,
                    splits[node.index],
                    tree.nodes[node.parent].name if node.parent >= 0 else "",
                    f"{node.depth:.6f}",
                    f"{tree.height - node.depth:.6f}",
                    truth.clade.get(node.index, ""),
                    truth.genus.get(node.index, ""),
                    *(repr(values[t]) for t in TRAIT_NAMES),
                ]
            )
    _write_fasta(
        root / "truth" / "species.fasta", [(tree.nodes[i].name, truth.sequences[i]) for i in tree.tips()]
    )
    _write_fasta(
        root / "truth" / "extinct.fasta",
        [(rid, seq) for tip in tree.extinct() for rid, seq, _ in truth.individuals[tip]],
    )
    _write_fasta(
        root / "truth" / "ancestors.fasta",
        [(tree.nodes[i].name, truth.sequences[i]) for i in tree.internal()],
    )
    (root / "truth" / "tree_living.nwk").write_text(tree.to_newick(living_only=True) + "\n", encoding="utf-8")


def simulate_clade(cfg: SimConfig, out_dir: str | Path, progress: bool = True) -> Dataset:
    """Simulate the synthetic clade and write it as a dataset directory with ground truth.

    Parameters
    ----------
    cfg : SimConfig
        The ``[sim]`` configuration (seed, sizes, models).
    out_dir : str or Path
        Target directory; created if missing. Existing files of a previous run are overwritten
        (the ``simulate`` command decides whether that is allowed).
    progress : bool
        Show a tqdm bar on stderr while rendering.

    Returns
    -------
    Dataset
        The written dataset, loaded and validated; ``info["summary"]`` has counts and identities.

    Examples
    --------
    >>> ds = simulate_clade(SimConfig(n_living=8, image_size=32, photos_per_individual=1), "/tmp/clade")  # doctest: +SKIP
    >>> ds.records("train")[0].species  # doctest: +SKIP
    'sp_001'
    """
    from tqdm.auto import tqdm

    from phenogen import __version__
    from phenogen.config import to_jsonable
    from phenogen.sim.contact import contact_sheet
    from phenogen.sim.render import render_bird, render_photos

    # 1. simulate everything but the pictures
    root = Path(out_dir)
    (root / "truth").mkdir(parents=True, exist_ok=True)
    truth = build_truth(cfg)
    tree = truth.tree
    splits = _splits(truth)

    # 2. render the photos of every record (manifest order) and the canonical render of every species
    jobs = _plan(truth, cfg, splits)
    tips = tree.tips()
    n_images = sum(job.n_photos + job.canonical for job in jobs) + len(tips)
    bar = tqdm(
        total=n_images, desc="rendering", unit="img", file=sys.stderr, disable=not progress, leave=False
    )
    records: list[Record] = []
    for k, job in enumerate(jobs):
        rels = []
        if job.canonical:
            rels.append(
                _save(
                    render_bird(job.traits, cfg.image_size), root, f"{job.folder}/{job.record_id}_canon.png"
                )
            )
        photos = render_photos(
            job.traits, job.n_photos, cfg.image_size, np.random.default_rng([cfg.seed, _PHOTOS, k])
        )
        rels.extend(
            _save(img, root, f"{job.folder}/{job.record_id}_p{j + 1}.png") for j, img in enumerate(photos)
        )
        records.append(job.record(tuple(rels)))
        bar.update(len(rels))
    sheet_items: list[tuple[str, Image.Image]] = []
    for tip in tips:
        node = tree.nodes[tip]
        image = render_bird(truth.traits.of(tip), cfg.image_size)
        _save(image, root, f"truth/images/species/{node.name}.png")
        label = node.name + (" (extinct)" if node.kind == "extinct" else "")
        label += " (held out)" if node.name in truth.heldout_species else ""
        sheet_items.append((label, image))
        bar.update(1)
    bar.close()

    # 3. contact sheet, ground-truth tables, dataset directory
    contact_sheet(sheet_items).save(root / "contact_sheet.png", format="PNG")
    _write_truth_tables(truth, root, splits)
    summary = {
        "species": {
            "train": sum(splits[i] == "train" for i in tree.living()),
            "heldout": len(truth.heldout_species),
            "extinct": len(tree.extinct()),
            "internal_nodes": len(tree.internal()),
        },
        "identity": _identity_summary(truth),
        "images": n_images,
    }
    info = {
        "source": "synthetic",
        "generator": "phenogen simulate",
        "phenogen_version": __version__,
        "seed": cfg.seed,
        "config": to_jsonable(cfg),
        "trait_names": list(TRAIT_NAMES),
        "trait_kinds": {**{t: "continuous" for t in CONTINUOUS}, **{t: "discrete" for t in DISCRETE}},
        "genetic_code": 2,
        "reading_frame": 0,
        "tree": {
            "file": "tree.nwk",
            "living_only": "truth/tree_living.nwk",
            "branch_length_units": "time; the root is tree_height old; "
            "substitutions per site = length / tree_height * root_to_tip",
            "root": tree.nodes[0].name,
        },
        "heldout_clades": [
            {"node": tree.nodes[r].name, "species": [tree.nodes[i].name for i in tree.living_descendants(r)]}
            for r in truth.heldout_roots
        ],
        "truth_dir": "truth",
        "summary": summary,
    }
    return write_dataset(root, records, info, tree_newick=tree.to_newick())
