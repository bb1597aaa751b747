"""The bundled real bird COI barcodes (USNM / Schindel et al. 2017) as a phenogen dataset.

``data/usnm_birds_coi/`` holds 2,980 unaligned COI barcodes of birds with GenBank accessions as
FASTA ids, a TSV with ``scientific_name`` per accession, and a Newick tree over the accessions.
:func:`build_usnm_dataset` turns them into a dataset directory with a **species-disjoint** split:
whole species are drawn (seeded) into ``heldout`` until it holds ``heldout_fraction`` of the
records, so a held-out loss measures barcodes of species the model has never seen. Ambiguity
codes are masked to N (policy "mask", counted in ``dataset.json``); there are no images.

>>> ds = build_usnm_dataset("/tmp/usnm")  # doctest: +SKIP
>>> len(ds.records("train")), len(ds.records("heldout"))  # doctest: +SKIP
(2384, 596)
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from phenogen.data.dataset import Dataset, Record, write_dataset
from phenogen.errors import DataError, InputError

__all__ = ["USNM_DIR", "build_usnm_dataset", "parse_usnm_tsv"]

USNM_DIR = Path(__file__).resolve().parents[3] / "data" / "usnm_birds_coi"
FASTA_NAME = "unaligned_schindel2017.fasta"
TSV_NAME = "schindel2017.tsv"
TREE_NAME = "bird_tree.nwk"


def parse_usnm_tsv(payload: bytes | str, source: str = TSV_NAME) -> dict[str, str]:
    """``accession -> scientific_name`` of the USNM table; :class:`DataError` naming the line if malformed.

    >>> parse_usnm_tsv(b"accession\\tscientific_name\\nKX1\\tParus major\\n")
    {'KX1': 'Parus major'}
    """
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    try:
        fields = reader.fieldnames or []
        if "accession" not in fields or "scientific_name" not in fields:
            raise DataError(f"{source}: expected columns accession and scientific_name, got {fields[:6]}")
        species_of: dict[str, str] = {}
        for row in reader:
            accession, name = row.get("accession"), row.get("scientific_name")
            if not isinstance(accession, str) or not isinstance(name, str):
                raise DataError(f"{source}: line {reader.line_num} has too few columns")
            if accession.strip():
                species_of[accession.strip()] = name.strip()
    except csv.Error as exc:
        raise DataError(f"{source}: unreadable TSV at line {reader.line_num} ({exc})") from None
    if not species_of:
        raise DataError(f"{source}: no rows")
    return species_of


def build_usnm_dataset(
    out_dir: str | Path,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    source_dir: str | Path | None = None,
) -> Dataset:
    """Write the USNM bird barcodes as a dataset directory with a species-disjoint train/heldout split.

    Parameters
    ----------
    out_dir : where the dataset directory is written.
    heldout_fraction : share of records (whole species) in the ``heldout`` split.
    seed : seed of the species draw.
    source_dir : directory with the FASTA, TSV (and tree); defaults to the repository's
        ``data/usnm_birds_coi``.
    """
    from phenogen.dna.seqio import read_fasta

    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    src = Path(source_dir) if source_dir is not None else USNM_DIR
    fasta, tsv = src / FASTA_NAME, src / TSV_NAME
    for path in (fasta, tsv):
        if not path.is_file():
            raise InputError(
                f"{path} not found; pass source_dir= the folder holding {FASTA_NAME} and {TSV_NAME}"
            )
    species_of = parse_usnm_tsv(tsv.read_bytes(), str(tsv))
    res = read_fasta(fasta, policy="mask")
    missing = [r.id for r in res.records if not species_of.get(r.id)]
    if missing:
        raise DataError(f"{tsv}: no scientific_name for {len(missing)} accession(s), e.g. {missing[0]}")

    names = sorted({species_of[r.id] for r in res.records})
    random.Random(seed).shuffle(names)
    per_species: dict[str, int] = {}
    for r in res.records:
        per_species[species_of[r.id]] = per_species.get(species_of[r.id], 0) + 1
    target = heldout_fraction * len(res.records)
    held: set[str] = set()
    n_held = 0
    for name in names:
        if n_held >= target:
            break
        held.add(name)
        n_held += per_species[name]

    records = []
    for r in res.records:
        sp = species_of[r.id]
        records.append(
            Record(
                record_id=r.id,
                species=sp,
                individual=r.id,
                split="heldout" if sp in held else "train",
                node_kind="living",
                sequence=r.sequence,
                images=(),
                taxonomy=("Aves", sp.split()[0], sp),
            )
        )
    info = {
        "source": "usnm_birds_coi",
        "description": "real bird COI barcodes (Schindel et al. 2017), species-disjoint train/heldout split",
        "source_dir": str(src),
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "split": "species-disjoint",
        "n_species": {"train": len(names) - len(held), "heldout": len(held)},
        "ambiguity_policy": "mask",
        "masked_bases": sum(res.masked.values()),
        "masked_records": len(res.masked),
    }
    tree = (src / TREE_NAME).read_text(encoding="utf-8") if (src / TREE_NAME).is_file() else None
    return write_dataset(out_dir, records, info, tree_newick=tree)
