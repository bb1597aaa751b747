"""The bundled USNM bird barcodes as a dataset: species-disjoint split, masked ambiguity, seeded."""

import pytest

from phenogen.data.dataset import load_dataset
from phenogen.data.usnm import USNM_DIR, build_usnm_dataset
from phenogen.errors import InputError

pytestmark = pytest.mark.skipif(not (USNM_DIR / "schindel2017.tsv").is_file(), reason="USNM data not bundled")


@pytest.fixture(scope="module")
def usnm(tmp_path_factory):
    return build_usnm_dataset(tmp_path_factory.mktemp("usnm") / "ds", heldout_fraction=0.2, seed=0)


def test_split_is_species_disjoint_and_near_the_fraction(usnm):
    train = {r.species for r in usnm.records("train")}
    held = {r.species for r in usnm.records("heldout")}
    assert train and held and not train & held
    n = len(usnm.records())
    assert n == 2980
    assert 0.19 <= len(usnm.records("heldout")) / n <= 0.22


def test_records_are_masked_living_and_reload(usnm):
    again = load_dataset(usnm.root)
    assert len(again.records()) == 2980
    assert all(r.node_kind == "living" and r.images == () for r in again.records())
    assert all(set(r.sequence) <= set("ACGTN") for r in again.records())
    assert usnm.info["masked_bases"] > 0 and usnm.info["split"] == "species-disjoint"
    assert usnm.tree_path is not None


def test_seed_changes_the_split(usnm, tmp_path):
    other = build_usnm_dataset(tmp_path / "ds", seed=1)
    assert {r.species for r in other.records("heldout")} != {r.species for r in usnm.records("heldout")}


def test_missing_source_dir(tmp_path):
    with pytest.raises(InputError, match="source_dir"):
        build_usnm_dataset(tmp_path / "out", source_dir=tmp_path)
