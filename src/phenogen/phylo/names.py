"""Who each tip is: ids, accessions, gi numbers and species names, and the names a user may choose by.

Tips keep their FASTA id as their name in every machine-read file (``tree.nwk``, ``alignment.fasta``,
``ancestors.fasta``): ids are unique, species names are not. What a biologist reads carries the species
as well: the annotated tree labels tips ``'Genus species|id'``, ``nodes.csv`` has a ``species`` and a
``taxon`` column, ``tips.csv`` lists every tip's id, species, accession and gi number, and figures
label tips by species.

Where a species comes from, in order (the first that knows wins):

1. a species table (``--species-table FILE``: TSV or CSV, the USNM metadata or a dataset's
   ``manifest.tsv``): an id column (``id``, ``record_id``, ``processid``, ``accession`` …) and a species
   column (``species``, ``scientific_name`` …), matched by id, by accession with or without its
   version, or by gi number;
2. the header (:func:`phenogen.dna.headers.parse_header`): BOLD ``id|species|marker|accession``,
   GenBank ``ACC.1 Genus species …`` and ``gi|…|gb|ACC| Genus species …``;
3. a plain header whose description starts ``Genus species`` (``>seq7 Turdus merula``), or whose id is
   ``Genus_species`` or ``Genus_species_…`` with a capitalised genus and a lower-case epithet.

:meth:`TipNames.resolve` turns what a user wrote after ``--mrca``/``--node``/``--outgroup`` into tips:
an id, an accession (versioned or not), a gi number, a species name (spaces or underscores, any case)
or a genus (all its tips). Unknown words are one :class:`~phenogen.errors.InputError` with close
matches, raised before any tree is built.

>>> names = TipNames.from_headers(["A1|Turdus merula|COI-5P|MN1", "A2|Turdus merula|COI-5P|MN2",
...                                "A3|Parus major|COI-5P|MN3"])
>>> names.resolve("Turdus"), names.resolve("turdus_merula"), names.label("A3")
(['A1', 'A2'], ['A1', 'A2'], 'Parus major|A3')
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from phenogen.dna.headers import parse_header
from phenogen.errors import InputError

__all__ = ["TipNames", "read_species_table", "ID_COLUMNS", "SPECIES_COLUMNS"]

ID_COLUMNS = ("id", "record_id", "processid", "process_id", "sampleid", "sample_id", "seqid", "accession")
SPECIES_COLUMNS = ("species", "scientific_name", "species_name", "taxon", "organism")
_GI = re.compile(r"(?:^|\|)gi\|(\d+)")
_ID_BINOMIAL = re.compile(r"^([A-Z][a-z]+)_([a-z][a-z-]+)(?:_|$)")
_DESC_BINOMIAL = re.compile(r"^([A-Z][a-z]+) ([a-z][a-z-]+)\b")


def _key(text: str) -> str:
    """Case-, space- and underscore-insensitive form of a name (``Turdus_merula`` = ``turdus merula``)."""
    return " ".join(text.replace("_", " ").split()).casefold()


def _unversioned(accession: str) -> str:
    return accession.split(".")[0]


def read_species_table(path: str | Path) -> dict[str, str]:
    """``id -> species`` from a TSV/CSV table with an id and a species column (see :data:`ID_COLUMNS`).

    Every id column present is used (a row may be found by record id or by accession). Raises
    :class:`InputError` naming the columns found when no id or species column is there.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"species table {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    first = text.splitlines()[0] if text else ""
    delimiter = "\t" if "\t" in first else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = {(c or "").strip().casefold(): c for c in reader.fieldnames or []}
    ids = [columns[c] for c in ID_COLUMNS if c in columns]
    species_col = next((columns[c] for c in SPECIES_COLUMNS if c in columns), None)
    if not ids or species_col is None:
        raise InputError(
            f"species table {path}: needs an id column ({', '.join(ID_COLUMNS)}) and a species column "
            f"({', '.join(SPECIES_COLUMNS)}); found {', '.join(columns) or 'none'}"
        )
    out: dict[str, str] = {}
    for row in reader:
        species = " ".join((row.get(species_col) or "").split())
        if not species:
            continue
        for col in ids:
            ident = (row.get(col) or "").strip()
            if ident:
                out.setdefault(ident, species)
                out.setdefault(_unversioned(ident), species)
    return out


@dataclass
class TipNames:
    """Per tip id: species (or ``None``), accession and gi number; plus where each species came from."""

    ids: list[str]
    species: dict[str, str | None] = field(default_factory=dict)
    accession: dict[str, str | None] = field(default_factory=dict)
    gi: dict[str, str | None] = field(default_factory=dict)
    species_source: dict[str, str] = field(default_factory=dict)  # id -> "table" | "header" | "id"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_headers(cls, headers: Iterable[str]) -> TipNames:
        """From FASTA header lines (without ``>``); the id is the header's first word (or BOLD field)."""
        out = cls([])
        for header in headers:
            head = parse_header(header)
            ident, species, source = head.id, head.species, "header"
            if species is None:
                rest = header.strip()[len(ident) :].strip()
                m = _DESC_BINOMIAL.match(rest) or _ID_BINOMIAL.match(ident)
                species, source = (f"{m.group(1)} {m.group(2)}", "id") if m else (None, "")
            gi = _GI.search(ident)
            out._add(ident, species, head.accession, gi.group(1) if gi else None, source)
        return out

    @classmethod
    def from_ids(cls, ids: Iterable[str], species: dict[str, str] | None = None) -> TipNames:
        """Tips named by ``ids``; ``species`` maps some of them to a species (dataset mode: id = species)."""
        out = cls([])
        for ident in ids:
            sp = (species or {}).get(ident)
            out._add(ident, sp, None, None, "table" if sp else "")
        return out

    def _add(self, ident: str, species, accession, gi, source: str) -> None:
        self.ids.append(ident)
        self.species[ident] = species
        self.accession[ident] = accession
        self.gi[ident] = gi
        if species:
            self.species_source[ident] = source

    def add_table(self, table: dict[str, str]) -> int:
        """Take species from ``table`` (id/accession/gi -> species) over the headers'; return how many tips matched."""
        n = 0
        for ident in self.ids:
            for k in self.aliases(ident):
                if k in table:
                    self.species[ident] = table[k]
                    self.species_source[ident] = "table"
                    n += 1
                    break
        return n

    # ------------------------------------------------------------------ reading
    def aliases(self, ident: str) -> list[str]:
        """Every string that names tip ``ident``: the id, its accession with and without version, its gi."""
        out = [ident]
        acc = self.accession.get(ident)
        for a in (acc, _unversioned(acc) if acc else None, _unversioned(ident), self.gi.get(ident)):
            if a and a not in out:
                out.append(a)
        return out

    def genus(self, ident: str) -> str | None:
        sp = self.species.get(ident)
        return sp.split()[0] if sp else None

    def label(self, ident: str) -> str:
        """``Genus species|id`` (the id alone when the species is unknown or is the id)."""
        sp = self.species.get(ident)
        return f"{sp}|{ident}" if sp and _key(sp) != _key(ident) else ident

    def display(self, ident: str) -> str:
        """What a figure prints for a tip: its species, else its id."""
        return self.species.get(ident) or ident

    def n_with_species(self) -> int:
        return sum(1 for s in self.species.values() if s)

    def taxon(self, tips: Sequence[str]) -> str:
        """The species all ``tips`` share, else their shared genus, else ``''``."""
        species = {self.species.get(t) for t in tips}
        if len(species) == 1 and None not in species:
            return species.pop()  # type: ignore[return-value]
        genera = {self.genus(t) for t in tips}
        return genera.pop() if len(genera) == 1 and None not in genera else ""  # type: ignore[return-value]

    def tip_rows(self) -> list[dict[str, str]]:
        """One row per tip for ``tips.csv``."""
        return [
            {
                "id": i,
                "species": self.species.get(i) or "",
                "accession": self.accession.get(i) or "",
                "gi": self.gi.get(i) or "",
                "species_from": self.species_source.get(i, ""),
                "label": self.label(i),
            }
            for i in self.ids
        ]

    # ------------------------------------------------------------------ resolving
    def _index(self) -> dict[str, list[str]]:
        """Lookup key -> tip ids: ids and aliases (exact), species and genera (case/space-insensitive)."""
        index: dict[str, list[str]] = {}

        def put(key: str, ident: str) -> None:
            ids = index.setdefault(key, [])
            if ident not in ids:
                ids.append(ident)

        for ident in self.ids:  # ids and aliases first: they win over a species spelled the same
            for a in self.aliases(ident):
                put(a, ident)
        for ident in self.ids:
            sp = self.species.get(ident)
            if sp:
                put(_key(sp), ident)
                put(_key(sp.split()[0]), ident)
        return index

    def resolve(self, word: str, *, flag: str = "--mrca") -> list[str]:
        """The tip ids ``word`` names (an id, accession, gi, species or genus); :class:`InputError` if none."""
        index = getattr(self, "_cache", None)
        if index is None:
            index = self._cache = self._index()
        hit = index.get(word) or index.get(_key(word))
        if hit:
            return list(hit)
        raise InputError(self._unknown(word, flag))

    def _unknown(self, word: str, flag: str) -> str:
        known = sorted({s for s in self.species.values() if s}) + self.ids
        close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
        if not close:  # "turdus merula" vs "Turdus merula": compare the folded forms
            folded = {_key(k): k for k in known}
            close = [folded[k] for k in difflib.get_close_matches(_key(word), list(folded), n=3)]
        hint = (
            f"did you mean {', '.join(map(repr, close))}?"
            if close
            else "names look like " + ", ".join(repr(k) for k in known[:2])
        )
        n_sp = len({s for s in self.species.values() if s})
        return (
            f"{flag} {word!r}: no tip id, accession, species or genus of that name; {hint} "
            f"({len(self.ids)} tips, {n_sp} species)"
        )

    def resolve_group(self, words: Sequence[str], *, flag: str = "--mrca") -> list[str]:
        """Tips of the MRCA asked for by ``words`` (union); at least two distinct tips in all."""
        tips: list[str] = []
        for w in words:
            tips.extend(t for t in self.resolve(w, flag=flag) if t not in tips)
        if len(tips) < 2:
            raise InputError(
                f"{flag} {' '.join(words)}: names {len(tips)} tip; an MRCA needs at least two tips "
                "(two names, or a species or genus with several tips)"
            )
        return tips

    def match_tree_tips(self, tree, *, source: str = "tree") -> int:
        """Rename the tips of a given tree that name a FASTA record by accession, gi number, unique
        species or ``Genus species|id`` label to that record's id; return how many were renamed.

        Tips that already are ids stay; a name that fits several records is left for
        :func:`phenogen.phylo.tree.check_names` to report.
        """
        import logging

        ids = set(self.ids)
        by_alias: dict[str, set[str]] = {}
        for ident in self.ids:
            for a in self.aliases(ident):
                by_alias.setdefault(a, set()).add(ident)
            sp = self.species.get(ident)
            if sp:
                by_alias.setdefault(_key(sp), set()).add(ident)
        renamed = 0
        for tip in tree.get_terminals():
            name = tip.name
            if not name or name in ids:
                continue
            candidates = [name, name.rsplit("|", 1)[-1], _unversioned(name), _key(name)]
            gi = _GI.search(name)
            if gi:
                candidates.insert(1, gi.group(1))
            for c in candidates:
                hit = by_alias.get(c)
                if hit and len(hit) == 1:
                    tip.name = next(iter(hit))
                    renamed += 1
                    break
        if renamed:
            logging.getLogger(__name__).info(
                "%s: %d tip name(s) matched to FASTA ids by accession, gi number or species", source, renamed
            )
        return renamed
