"""Tests of species names in ``phenogen ancestors``: headers, species tables, --mrca/--node by name."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from phenogen.cli import main
from phenogen.errors import InputError
from phenogen.phylo.names import TipNames, read_species_table
from phenogen.phylo.select import resolve_choices, select_nodes
from phenogen.phylo.tree import parse_newick, read_tree

DATA = Path(__file__).parent / "data" / "phylo"
needs_fasttree = pytest.mark.skipif(
    shutil.which("fasttree") is None and shutil.which("FastTree") is None,
    reason="Debian package fasttree not installed",
)

HEADERS = [
    "ABCD001-10|Turdus merula|COI-5P|MN000001",  # BOLD
    "MN000002.1 Turdus philomelos voucher USNM 1 cytochrome oxidase subunit I (COI) gene, partial cds",
    "gi|100003|gb|MN000003.1| Parus major isolate 7 cytochrome oxidase subunit I (COI) gene",
    "seq4 Cyanistes caeruleus",  # plain, species in the description
    "Sitta_europaea_12",  # plain, Genus_species id
    "KJ000006",  # accession only: no species
]


@pytest.fixture
def names() -> TipNames:
    return TipNames.from_headers(HEADERS)


def test_species_are_read_from_bold_genbank_gi_and_plain_headers(names):
    """Every header style gives its species; an accession-only header gives none."""
    assert names.ids[:3] == ["ABCD001-10", "MN000002.1", "gi|100003|gb|MN000003.1|"]
    got = [names.species[i] for i in names.ids]
    assert got == ["Turdus merula", "Turdus philomelos", "Parus major", "Cyanistes caeruleus",
                   "Sitta europaea", None]  # fmt: skip
    assert names.gi["gi|100003|gb|MN000003.1|"] == "100003"
    assert names.label("ABCD001-10") == "Turdus merula|ABCD001-10" and names.label("KJ000006") == "KJ000006"


def test_resolve_by_id_accession_gi_species_and_genus(names):
    """Ids, accessions with or without version, gi numbers, species in any case and genera all resolve."""
    assert names.resolve("MN000001") == ["ABCD001-10"]  # BOLD record by its accession
    assert names.resolve("MN000002") == ["MN000002.1"]
    assert names.resolve("100003") == ["gi|100003|gb|MN000003.1|"]
    assert names.resolve("parus_MAJOR") == ["gi|100003|gb|MN000003.1|"]
    assert names.resolve("Turdus") == ["ABCD001-10", "MN000002.1"]
    assert names.resolve_group(["Turdus"]) == ["ABCD001-10", "MN000002.1"]


def test_unknown_names_suggest_close_matches_in_one_line(names):
    """A misspelt species is refused with the close match; one tip is not an MRCA."""
    with pytest.raises(InputError, match=r"--mrca 'Turdus merla'.*did you mean 'Turdus merula'") as exc:
        names.resolve("Turdus merla")
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="at least two tips"):
        names.resolve_group(["Parus major"])


def test_species_table_overrides_headers_and_reads_a_manifest(tmp_path, names):
    """A TSV with accession/scientific_name (USNM) or record_id/species (a manifest) names tips by id or accession."""
    usnm = tmp_path / "meta.tsv"
    usnm.write_text("accession\tscientific_name\nKJ000006\tPoecile palustris\nMN000001\tTurdus torquatus\n")
    assert names.add_table(read_species_table(usnm)) == 2
    assert (
        names.species["KJ000006"] == "Poecile palustris" and names.species["ABCD001-10"] == "Turdus torquatus"
    )
    assert names.species_source["KJ000006"] == "table"
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("record_id\tspecies\tsplit\nSitta_europaea_12\tSitta whiteheadi\ttrain\n")
    assert read_species_table(manifest) == {"Sitta_europaea_12": "Sitta whiteheadi"}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,count\na,1\n")
    with pytest.raises(InputError, match="needs an id column"):
        read_species_table(bad)


def test_usnm_metadata_names_every_barcode():
    """The USNM metadata TSV gives a species to each of its accessions (the real set's species source)."""
    table = read_species_table("data/usnm_birds_coi/schindel2017.tsv")
    assert table["JQ176654"] == "Xiphorhynchus obsoletus" and len(set(table.values())) > 1000


def test_given_tree_tips_named_by_gi_are_matched_to_ncbi_headers():
    """Tips that are gi numbers (or accessions, or labels 'species|id') are renamed to the FASTA ids."""
    headers = [
        line[1:].strip() for line in (DATA / "coi_ncbi.fasta").read_text().splitlines() if line[0] == ">"
    ]
    names = TipNames.from_headers(headers)
    tree = read_tree(DATA / "nj_gi_negative.nwk")
    assert names.match_tree_tips(tree) == 8
    assert sorted(t.name for t in tree.get_terminals()) == sorted(names.ids)
    other = parse_newick("((KJ013277,'Tolmomyias poliocephalus'),('Sternula antillarum|x',JQ176521.1));")
    assert names.match_tree_tips(other) == 3  # accession, unique species, label; JQ176521.1 once


def test_choices_resolve_before_the_tree_and_select_after():
    """--node by species is that tip; --mrca by genus is the MRCA of its tips; anc names wait for the tree."""
    names = TipNames.from_ids(["A", "B", "C", "D"], {"A": "Aa x", "B": "Aa y", "C": "Bb z", "D": "Cc w"})
    tree = parse_newick("((A:1,B:1)x:1,(C:1,D:1)y:1)r;")
    choices = resolve_choices(names, nodes=["Bb z", "anc002"], mrca=[["Aa"], ["Aa x", "D"]])
    assert [c.tips for c in choices] == [("C",), (), ("A", "B"), ("A", "D")]
    with pytest.raises(InputError, match="no node named 'anc002'"):
        select_nodes(tree, choices=choices)
    assert select_nodes(tree, choices=[c for c in choices if c.tips]) == ["C", "x", "r"]
    with pytest.raises(InputError, match="did you mean node x"):
        resolve_choices(names, nodes=["xx"], internal_names={"x", "y", "r"})


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["ancestors", *argv])
    return code, capsys.readouterr().err


def test_mrca_typo_fails_before_any_tree_with_one_line(tmp_path, capsys):
    """A misspelt --mrca species is exit 2, one line with the suggestion, and no output written."""
    out = tmp_path / "out"
    code, err = _run(["--fasta", str(DATA / "coi_ncbi.fasta"), "--out", str(out),
                      "--mrca", "Tolmomyas assimilis", "Sternula antillarum"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "did you mean 'Tolmomyias assimilis'" in err
    assert not out.exists()


@needs_fasttree
def test_command_by_species_names_labels_every_output(tmp_path, capsys):
    """--mrca by genus and --node by species on NCBI headers: species in tips.csv, nodes.csv, annotated tree."""
    out = tmp_path / "out"
    code, err = _run(["--fasta", str(DATA / "coi_ncbi.fasta"), "--out", str(out), "--mrca", "Tolmomyias",
                      "--node", "Megaceryle torquata", "--mrca", "Tolmomyias assimilis", "KJ013276"], capsys)  # fmt: skip
    assert code == 0, err
    selected = json.loads((out / "selected.json").read_text())
    rows = {r["node"]: r for r in json.loads((out / "nodes.json").read_text())}
    genus_node = selected["selected"][1]
    assert selected["selected"][0] == "gi|100051|gb|KJ013275.1|"
    assert rows[genus_node]["taxon"] == "Tolmomyias" and rows[genus_node]["n_tips"] == 2
    assert "Tolmomyias poliocephalus" in rows[genus_node]["species"]
    tips = list(csv.DictReader((out / "tips.csv").open()))
    assert {t["species_from"] for t in tips} == {"header"} and tips[0]["gi"] == "100000"
    annotated = (out / "tree.annotated.nwk").read_text()
    assert (
        "'Tolmomyias assimilis|gi|100000|gb|KJ013277.1|'" in annotated and 'taxon="Tolmomyias"' in annotated
    )
    assert (out / "tree.png").stat().st_size > 1000


@needs_fasttree
def test_unknown_internal_node_fails_after_nodes_csv_is_written(tmp_path, capsys):
    """--node anc015 passes the early check (8 tips) but not the tree: the error comes with nodes.csv on disk."""
    out = tmp_path / "out"
    code, err = _run(["--fasta", str(DATA / "coi_ncbi.fasta"), "--out", str(out), "--node", "anc015"], capsys)
    assert code == 2 and "no node named 'anc015'" in err
    assert (out / "nodes.csv").is_file() and (out / "tips.csv").is_file()
