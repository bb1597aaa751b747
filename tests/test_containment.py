"""Issue 22: no traceback on any bad input, no file from outside the user's folder, no unescaped HTML.

Targeted cases the hostile tester found, each through the reader it hit (``load_dataset``, ``import
folder``, ``validate``, ``dataset build``, ``report``); the CLI ones check exit code 2 and one line.
"""

from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from phenogen.cli import main
from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import Record, check_image, load_dataset, write_dataset
from phenogen.data.folder import import_folder, read_sample_csv
from phenogen.errors import DataError, InputError
from phenogen.fsio import MARKER

SEQ = "ACGTTGCAAC" * 12
XSS = "<script>alert(1)</script>"


def _png(path, seed=0, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _dataset(root, species=("sp a", "sp b"), tree=True):
    _png(root / "images" / "a.png", 1)
    _png(root / "images" / "b.png", 2)
    recs = [
        Record("a1", species[0], "a_1", "train", "living", SEQ, ("images/a.png",), ("Aves",), {"size": 0.5}),
        Record(
            "b1", species[1], "b_1", "heldout", "living", SEQ, ("images/b.png",), ("Aves",), {"size": 1.0}
        ),
    ]
    newick = f"('{species[0]}':1,'{species[1]}':1)root;" if tree else None
    return write_dataset(root, recs, {"source": "test", "trait_names": ["size"]}, newick)


def _one_line(capsys, argv) -> str:
    """Run the CLI: exit code 2 and exactly one stderr line, no traceback; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def _set_manifest_cell(root, row, col, value):
    path = root / "manifest.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    rows[row][rows[0].index(col)] = value
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")


# ------------------------------------------------------------------------------- dataset.json
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1", "must hold an object"),
        (b"[]", "must hold an object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"format": "phenogen-dataset", "version": 1, "x": \xff}', "not UTF-8"),
        (b'{"format": "phenogen-dataset", "version": 1, "trait_names": 1}', "field 'trait_names'"),
        (b'{"format": "phenogen-dataset", "version": "1"}', "field 'version'"),
        (b'{"format": "phenogen-dataset", "version": 1, "counts": []}', "field 'counts'"),
        (b'{"format": "phenogen-dataset", "version": 1, "trait_names": ["a", "a"]}', "twice"),
        (b'{"format": "phenogen-dataset", "version": 1, "image_links": "rel/dir"}', "absolute path"),
        (b'{"format": "phenogen-dataset", "version": NaN}', "not valid JSON"),
    ],
)
def test_bad_dataset_json_is_one_data_error(tmp_path, content, message):
    _dataset(tmp_path)
    (tmp_path / "dataset.json").write_bytes(content)
    with pytest.raises(DataError, match="dataset.json") as info:
        load_dataset(tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------- manifest.tsv
def test_huge_cell_non_utf8_and_duplicate_columns_name_the_row(tmp_path):
    _dataset(tmp_path)
    _set_manifest_cell(tmp_path, 2, "taxonomy", "x" * 200_000)
    with pytest.raises(DataError, match=r"manifest.tsv, row 3: not a valid TSV row \(field larger"):
        load_dataset(tmp_path)
    _dataset(tmp_path)
    path = tmp_path / "manifest.tsv"
    path.write_bytes(path.read_bytes().replace(b"sp b", b"sp \xe9"))
    with pytest.raises(DataError, match=r"manifest.tsv, row 3: not UTF-8"):
        load_dataset(tmp_path)
    _dataset(tmp_path)
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0] + "\tspecies", *(line + "\tx" for line in text[1:])]) + "\n")
    with pytest.raises(DataError, match="row 1: column.*'species' appear more than once"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_traits_are_refused(tmp_path, value):
    _dataset(tmp_path)
    _set_manifest_cell(tmp_path, 1, "trait:size", value)
    with pytest.raises(DataError, match="row 2: record 'a1': trait size = .* is not a finite number"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        ("images/" + "a" * 300 + ".png", "is too long"),
        ("ABS", "is absolute"),
        ("images/../../outside.png", "climbs out of the dataset"),
        ("images/a\x00.png", "NUL"),
    ],
)
def test_image_paths_must_stay_inside_the_dataset(tmp_path, rel, message):
    root = tmp_path / "ds"
    _dataset(root)
    outside = _png(tmp_path / "outside.png")
    _set_manifest_cell(root, 1, "images", str(outside) if rel == "ABS" else rel)
    with pytest.raises(DataError, match=r"manifest.tsv, row 2: record 'a1': field images: ") as info:
        load_dataset(root)
    assert message in str(info.value)


def test_symlinks_out_of_the_dataset_are_refused(tmp_path):
    """A link to a file outside (or a linked folder) is refused; a link inside the dataset is fine."""
    root = tmp_path / "ds"
    _dataset(root)
    outside = _png(tmp_path / "secret" / "x.png")
    os.symlink(outside, root / "images" / "link.png")
    os.symlink(outside.parent, root / "images" / "dir")
    os.symlink(root / "images" / "b.png", root / "images" / "inside.png")
    for rel in ("images/link.png", "images/dir/x.png"):
        _set_manifest_cell(root, 1, "images", rel)
        with pytest.raises(
            DataError, match="row 2: record 'a1': field images: .* points outside the dataset"
        ):
            load_dataset(root)
    _set_manifest_cell(root, 1, "images", "images/inside.png")
    assert load_dataset(root).records("train")[0].images == ("images/inside.png",)


def test_write_dataset_refuses_outside_paths(tmp_path):
    rec = Record("a1", "s", "i", "train", "living", SEQ, ("../x.png",))
    with pytest.raises(DataError, match="climbs out"):
        write_dataset(tmp_path, [rec], {})


# ---------------------------------------------------------------------------------- validate
def test_validate_reports_a_corrupt_png_with_exit_2(tmp_path, capsys):
    _dataset(tmp_path / "ds")
    png = tmp_path / "ds" / "images" / "b.png"
    png.write_bytes(png.read_bytes()[:-40])  # truncated: the header opens, the pixels do not decode
    line = _one_line(capsys, ["validate", str(tmp_path / "ds")])
    assert "manifest.tsv, row 3: record 'b1': field images:" in line and "b.png" in line
    assert "cannot be decoded" in line


def test_validate_refuses_a_decompression_bomb(tmp_path, monkeypatch):
    ds = _dataset(tmp_path / "ds")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="MAX_IMAGE_PIXELS.*decompression bomb"):
        ds.verify_images()


def test_validate_json_to_a_directory_and_non_utf8_fasta(tmp_path, capsys):
    fasta = tmp_path / "a.fasta"
    fasta.write_text(f">a\n{SEQ}\n")
    assert "--json" in _one_line(capsys, ["validate", str(fasta), "--json", str(tmp_path)])
    fasta.write_bytes(b">a \xff\xfe\n" + SEQ.encode() + b"\n")
    assert "not UTF-8" in _one_line(capsys, ["validate", str(fasta)])


# ------------------------------------------------------------------------------ import folder
@pytest.fixture
def user(tmp_path):
    """A user's folder with two photos; a photo and a text file next to (outside) the folder."""
    root = tmp_path / "user"
    _png(root / "photos" / "a.png", 1)
    _png(root / "photos" / "b.jpg", 2, "JPEG")
    _png(tmp_path / "outside.png", 3)
    (root / "notes.txt").write_text("not a photo")
    (root / "seqs.fasta").write_text(f">r1\n{SEQ}\n>r2\n{SEQ}\n")
    return root


def _csv(root, images, name="samples.csv"):
    (root / name).write_text(
        f"record_id,species,images\nr1,Turdus merula,{images}\nr2,Parus major,photos/b.jpg\n",
        encoding="utf-8",
    )
    return root / name


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("../outside.png", "climbs out of the CSV's folder"),
        ("ABS", "is an absolute path"),
        ("photos/link.png", "leads outside the CSV's folder"),
        ("notes.txt", "is not an image file"),
        ("photos/fake.png", "cannot be decoded"),
    ],
)
def test_import_folder_reads_only_images_inside_the_folder(user, images, message):
    os.symlink(user.parent / "outside.png", user / "photos" / "link.png")
    (user / "photos" / "fake.png").write_text("not a png")
    path = _csv(user, str(user.parent / "outside.png") if images == "ABS" else images)
    with pytest.raises(InputError, match=r"samples.csv, row 2, record r1, field images: ") as info:
        read_sample_csv(path)
    assert message in str(info.value)


def test_allow_outside_admits_outside_images(user):
    path = _csv(user, "../outside.png")
    assert read_sample_csv(path, allow_outside=True)["r1"].images == [(user.parent / "outside.png").resolve()]


def test_import_folder_refuses_bombs_and_non_utf8_csv(user, monkeypatch, capsys):
    path = _csv(user, "photos/a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match="decompression bomb"):
        read_sample_csv(path)
    monkeypatch.undo()
    path.write_bytes(b"record_id,species,images\nr1,Turdus m\xe9rula,photos/a.png\n")
    argv = [
        "import",
        "folder",
        "--fasta",
        str(user / "seqs.fasta"),
        "--csv",
        str(path),
        "--out",
        str(user / "o"),
    ]
    assert "not UTF-8" in _one_line(capsys, argv)


def test_a_real_jpeg_bomb_header_is_refused(tmp_path):
    """A 24-px JPEG whose header claims 20000 x 20000 pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (24, 24)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    k = data.index(b"\xff\xc0")
    data[k + 5 : k + 9] = struct.pack(">HH", 20000, 20000)
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    with pytest.raises(DataError, match="decompression bomb"):
        check_image(tmp_path / "bomb.jpg")


def test_import_out_is_checked_first_and_force_only_replaces_phenogen_output(user, capsys):
    """--out: a foreign non-empty directory is refused before any input is read; --force replaces only a
    marked one; a failed import leaves the earlier dataset as it was."""
    foreign = user / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    argv = ["import", "folder", "--fasta", str(user / "seqs.fasta"), "--csv", str(user / "missing.csv")]
    for extra in ([], ["--force"]):
        line = _one_line(capsys, [*argv, "--out", str(foreign), *extra])
        assert "not written by phenogen" in line
    assert (foreign / "thesis.tex").read_text() == "precious"
    csv_path = _csv(user, "photos/a.png")
    good = ["import", "folder", "--fasta", str(user / "seqs.fasta"), "--csv", str(csv_path), "--out"]
    assert main([*good, str(user / "ds")]) == 0
    assert (user / "ds" / MARKER).is_file() and (user / "ds" / "config.json").is_file()
    assert "--force" in _one_line(capsys, [*good, str(user / "ds")])
    before = (user / "ds" / "manifest.tsv").read_text()
    _csv(user, "../outside.png")
    assert "climbs out" in _one_line(capsys, [*good, str(user / "ds"), "--force"])
    assert (user / "ds" / "manifest.tsv").read_text() == before and not (user / "ds.tmp").exists()
    _csv(user, "photos/b.jpg")
    assert main([*good, str(user / "ds"), "--force"]) == 0
    assert load_dataset(user / "ds").records()[0].images[0].endswith("b.jpg")


def test_import_folder_function_refuses_a_file_as_out(user):
    with pytest.raises(InputError, match="is a file"):
        import_folder(
            user / "seqs.fasta", _csv(user, "photos/a.png"), user / "notes.txt", ImportConfig(), BuildConfig()
        )


def test_dataset_build_non_utf8_barcodes_and_file_out(tmp_path, capsys):
    bar = tmp_path / "barcodes.tsv"
    bar.write_bytes(b"record_id\ttaxon\tspecies\n\xff\xfe\n")
    line = _one_line(capsys, ["dataset", "build", "--barcodes", str(bar), "--out", str(tmp_path / "o")])
    assert "utf-8" in line.lower() and "barcodes.tsv" in line
    assert "is a file" in _one_line(capsys, ["dataset", "build", "--barcodes", str(bar), "--out", str(bar)])


# ------------------------------------------------------------------------------------- report
def _run_dir(tmp_path, species=("sp a", "sp b")):
    run = tmp_path / "run"
    _dataset(run / "data", species)
    gen = run / "generated"
    _png(gen / "images" / "b1_0.png", 5)
    (gen / "generated.tsv").write_text("record_id\tk\timage\nb1\t0\timages/b1_0.png\n")
    return run


def _page(run) -> str:
    from phenogen.report.html import build_report

    return build_report(run).read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must hold an object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"splits": 1}', "field splits must be an object"),
        (
            b'{"splits": {"heldout": {"methods": {"generated": {"trait_rmse": "x"}}}}}',
            "trait_rmse must be a number",
        ),
        (b'{"headline": {"split": "heldout", "trait_rmse": 3}}', "field headline.trait_rmse"),
        (
            b'{"headline": {"split": "heldout", "trait_rmse": {}, "top1_traits": {"truth": "x"}}}',
            "field headline.top1_traits.truth must be a number",
        ),
    ],
)
def test_report_on_bad_metrics_is_one_error(tmp_path, capsys, content, message):
    run = _run_dir(tmp_path)
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_bytes(content)
    line = _one_line(capsys, ["report", "--run", str(run)])
    assert "metrics.json" in line and message in line


def test_report_skips_a_corrupt_png_with_a_visible_note(tmp_path):
    run = _run_dir(tmp_path)
    png = run / "data" / "images" / "b.png"
    png.write_bytes(png.read_bytes()[:-40])
    page = _page(run)
    assert "image not embedded" in page and "Files not embedded" in page and "b.png" in page


def test_report_never_embeds_files_from_outside(tmp_path):
    """generated.tsv pointing out of the run, and a symlinked sweep figure leading out: not embedded."""
    import base64

    run = _run_dir(tmp_path)
    secret = _png(tmp_path / "secret.png", 9)
    (run / "generated" / "generated.tsv").write_text(
        f"record_id\tk\timage\nb1\t0\t{secret}\nb1\t1\t../../secret.png\n"
    )
    (run / "sweeps").mkdir()
    os.symlink(secret, run / "sweeps" / "guidance.png")
    page = _page(run)
    assert base64.b64encode(secret.read_bytes()).decode()[:200] not in page
    assert "outside the run and dataset directories" in page


def test_report_escapes_every_string_from_files(tmp_path):
    """A split, method, species, trait, note and metrics strings of ``<script>`` never reach the page raw."""
    run = _run_dir(tmp_path, species=(XSS, "sp " + XSS))
    (run / "eval").mkdir()
    metrics = {
        "headline": {"split": XSS, "trait_rmse": {"generated": 0.5, "mean": 0.9}, "beats_mean": True},
        "splits": {
            XSS: {"n_targets": 1, "n_images": 2, "methods": {XSS: {"trait_rmse": 0.4, "note": XSS},
                                                             "generated": {"trait_rmse": 0.5}}},
            "heldout": {"n_targets": 1, "n_images": 1, "methods": {"generated": {"trait_rmse": 0.5}}},
        },
        "probe": {"r2_mean": {XSS: 0.1}, "prior_renders": 0},
        "retrieval": {"n_candidates": XSS},
        "caption_readout": {"traits": [XSS], "splits": {XSS: {"mean_r": 0.1, "per_trait_r": {XSS: 0.2}}}},
        "sequence": {"source": XSS, "metrics": {XSS: XSS, "n": 3}},
    }  # fmt: skip
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    (run / "eval" / "targets.tsv").write_text(
        f"record_id\tnearest_species\tnearest_identity\tnamed_as\tnamed_own\nb1\t{XSS}\tx\t{XSS}\t{XSS}\n"
    )
    (run / "ancestors").mkdir()
    (run / "ancestors" / "targets.json").write_text(
        json.dumps({"ancestor_sequences": XSS, "all_nodes_mean_identity": {XSS: 0.9}, "n_identifiable": XSS})
    )
    page = _page(run)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_staged_output_never_touches_foreign_tmp_or_old(user):
    """OUT.tmp / OUT.old that phenogen did not write are refused, not deleted."""
    csv_path = _csv(user, "photos/a.png")
    for name in ("ds.tmp", "ds.old"):
        (user / name).mkdir()
        (user / name / "keep.txt").write_text("mine")
        with pytest.raises(InputError, match="not written by phenogen"):
            import_folder(user / "seqs.fasta", csv_path, user / "ds", ImportConfig(), BuildConfig())
        assert (user / name / "keep.txt").read_text() == "mine"
        (user / name / "keep.txt").unlink()
        (user / name).rmdir()


def test_dataset_build_reads_only_photos_inside_the_images_folder(tmp_path):
    """images.tsv rows naming '../' or absolute files are refused with the row and field."""
    from phenogen.data.barcodes import Barcode
    from phenogen.data.build import build_dataset
    from phenogen.data.images import ImageEntry

    photos = tmp_path / "photos"
    _png(photos / "images" / "Parus_major" / "a.jpg", 1, "JPEG")
    secret = _png(tmp_path / "secret.png", 2)
    barcodes = [Barcode("r1", "Parus major", "Parus major", "ncbi", "X1", "COI", ("Aves",), SEQ)]
    for file in ("../../secret.png", str(secret)):
        entry = ImageEntry(file, "Parus major", "Parus major", "cc0", "", "", "", "inaturalist", "")
        with pytest.raises(InputError, match=r"images.tsv, row 2: field file: "):
            build_dataset(
                barcodes, [entry], photos / "images", tmp_path / "ds", BuildConfig(heldout_fraction=0)
            )
    entry = ImageEntry(
        "Parus_major/a.jpg", "Parus major", "Parus major", "cc0", "", "", "", "inaturalist", ""
    )
    ds = build_dataset(barcodes, [entry], photos / "images", tmp_path / "ds", BuildConfig(heldout_fraction=0))
    assert ds.records()[0].images == ("images/Parus_major/a.jpg",) and ds.verify_images() == 1
