"""BIOSCAN-5M images read in place from the official zip packages: import, read, validate, train."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from fixture_server import FIXTURES

from phenogen.cli import main
from phenogen.data.archive import (
    MemberPath,
    close_archives,
    member_path,
    open_archive,
    open_image,
    split_member,
)
from phenogen.data.bioscan import find_archives, import_bioscan5m
from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import load_dataset
from phenogen.diffusion.vae import load_images
from phenogen.errors import DataError, InputError

BIOSCAN = FIXTURES / "bioscan"
PACKAGE = "bioscan5m/images/cropped_256"


@pytest.fixture(autouse=True)
def _fresh_handles():
    """Each test opens its zips afresh: handles are cached per process, and tests rewrite archives."""
    close_archives()
    yield
    close_archives()


def _zip_tree(root: Path, name: str = "BIOSCAN_5M_cropped_256.zip", splits: set[str] | None = None) -> Path:
    """Zip ``root``'s extracted images as the official packages hold them (``bioscan5m/images/...``)."""
    archive = root / name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((root / PACKAGE).rglob("*.jpg")):
            rel = path.relative_to(root).as_posix()
            if splits is None or rel.split("/")[3] in splits:
                zf.write(path, rel)
    return archive


@pytest.fixture
def zipped(tmp_path) -> Path:
    """The BIOSCAN fixture with its images in BIOSCAN_5M_cropped_256.zip and NOT extracted."""
    root = tmp_path / "bioscan"
    shutil.copytree(BIOSCAN, root)
    _zip_tree(root)
    shutil.rmtree(root / "bioscan5m" / "images")
    return root


def _import(root: Path, out: Path, **icfg):
    return import_bioscan5m(root, out, ImportConfig(**icfg), BuildConfig())


def test_zip_import_reads_in_place_with_the_extracted_import_s_records_and_pixels(zipped, tmp_path):
    """auto picks the zip: nothing is extracted, manifests name images/..., pixels equal the files'."""
    ds, summary = _import(zipped, tmp_path / "ds")
    ref, ref_summary = _import(BIOSCAN, tmp_path / "ref")  # the extracted layout, copied
    assert [r.__dict__ for r in ds.records()] == [r.__dict__ for r in ref.records()]
    assert summary.skipped == ref_summary.skipped == {"no species label": 1, "image missing": 1}
    assert not (tmp_path / "ds" / "images").exists()
    archive = str(zipped.resolve() / "BIOSCAN_5M_cropped_256.zip")
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["image_archives"] == [
        {"path": archive, "prefix": "bioscan5m/"}
    ]
    rels = [rel for r in ds.records() for rel in r.images]
    paths = [str(ds.image_path(rel)) for rel in rels]  # what train-image passes to load_images
    assert paths[0] == f"{archive}!/bioscan5m/{rels[0]}" and ds.image_path(rels[0]).is_file()
    pixels = load_images(paths, 16)
    assert torch.equal(pixels, load_images([ref.image_path(rel) for rel in rels], 16))
    assert pixels.float().std() > 0  # the fixture's photos differ
    assert ds.verify_images() == len(rels) == 4


def test_validate_command_passes_on_the_archive_backed_dataset(zipped, tmp_path, capsys):
    _import(zipped, tmp_path / "ds")
    assert main(["validate", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "images    4 files (4 decoded)" in out and out.rstrip().endswith("OK")


def test_parquet_and_species_split_imports_check_members_row_group_by_row_group(zipped, tmp_path):
    """The streamed Parquet manifest (two passes for a species split) reads the same members."""
    icfg = ImportConfig(format="parquet", row_group_size=2)
    ds, _ = import_bioscan5m(zipped, tmp_path / "ds", icfg, BuildConfig(heldout_fraction=0.5), "species")
    assert ds.format == "parquet" and ds.image_archives and ds.verify_images() == 4
    assert not set(ds.species("train")) & set(ds.species("heldout"))


def test_a_member_missing_after_import_is_a_data_error_naming_archive_and_member(zipped, tmp_path):
    ds, _ = _import(zipped, tmp_path / "ds")
    archive = zipped / "BIOSCAN_5M_cropped_256.zip"
    gone = "bioscan5m/images/cropped_256/train/a/BIOUG001-22.jpg"
    with zipfile.ZipFile(archive) as old, zipfile.ZipFile(tmp_path / "new.zip", "w") as new:
        for info in old.infolist():
            if info.filename != gone:
                new.writestr(info, old.read(info))
    os.replace(tmp_path / "new.zip", archive)
    close_archives()  # as a new process would, read the replaced zip
    with pytest.raises(DataError, match=r"BIOUG001-22\.jpg.* is not a member of the image archive"):
        load_dataset(tmp_path / "ds")
    with pytest.raises(
        DataError, match=rf"BIOSCAN_5M_cropped_256\.zip: image archive has no member '{gone}'"
    ):
        load_images([str(ds.image_path("images/cropped_256/train/a/BIOUG001-22.jpg"))], 16)


def test_a_corrupt_zip_is_one_data_error_at_import_and_at_read(zipped, tmp_path, capsys):
    _import(zipped, tmp_path / "ds")
    archive = zipped / "BIOSCAN_5M_cropped_256.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    close_archives()
    with pytest.raises(DataError, match=r"BIOSCAN_5M_cropped_256\.zip: not a readable zip archive"):
        _import(zipped, tmp_path / "again")
    assert main(["validate", str(tmp_path / "ds")]) == 2
    assert "not a readable zip archive" in capsys.readouterr().err


def test_split_zips_of_the_official_loader_each_serve_their_partitions(tmp_path):
    """BIOSCAN_5M_cropped_256_train.zip + _eval.zip: both recorded, each image read from its own."""
    root = tmp_path / "bioscan"
    shutil.copytree(BIOSCAN, root)
    _zip_tree(root, "BIOSCAN_5M_cropped_256_train.zip", {"train"})
    _zip_tree(root, "bioscan5m/BIOSCAN_5M_cropped_256_eval.zip", {"val", "test"})
    _zip_tree(root, "BIOSCAN_5M_cropped.zip")  # another package: not picked up
    shutil.rmtree(root / "bioscan5m" / "images")
    names = [p.name for p in find_archives(root, "cropped_256")]
    assert names == ["BIOSCAN_5M_cropped_256_train.zip", "BIOSCAN_5M_cropped_256_eval.zip"]
    ds, _ = _import(root, tmp_path / "ds", image_mode="archive")
    assert [Path(a).name for a, _ in ds.image_archives] == names
    held = ds.records("heldout")[0].images[0]
    assert split_member(ds.image_path(held))[0].endswith("_eval.zip")
    assert ds.verify_images() == 4


def test_copy_mode_extracts_only_the_kept_images_and_links_are_refused(zipped, tmp_path):
    ds, _ = _import(zipped, tmp_path / "ds", image_mode="copy")
    assert "image_archives" not in ds.info
    files = sorted(p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds" / "images").rglob("*"))
    assert [f for f in files if f.endswith(".jpg")] == sorted(r.images[0] for r in ds.records())
    with pytest.raises(InputError, match="cannot link to"):
        _import(zipped, tmp_path / "linked", image_mode="symlink")


def test_archive_override_and_a_missing_zip(zipped, tmp_path):
    moved = tmp_path / "elsewhere" / "photos.zip"
    moved.parent.mkdir()
    shutil.move(zipped / "BIOSCAN_5M_cropped_256.zip", moved)
    with pytest.raises(InputError, match="image_mode archive, but no BIOSCAN_5M_cropped_256"):
        _import(zipped, tmp_path / "none", image_mode="archive")
    with pytest.raises(InputError, match="no row's image is in"):
        _import(zipped, tmp_path / "auto")  # auto, nothing found: every row lacks its image
    ds, _ = _import(zipped, tmp_path / "ds", image_archive=str(moved))
    assert ds.image_archives == [(str(moved.resolve()), "bioscan5m/")]


def _read_in_child(path: str, queue) -> None:
    with open_image(path) as im:
        queue.put((os.getpid(), open_archive(split_member(path)[0]).fp.fileno(), im.size))


def test_handles_are_cached_per_process_and_reopened_after_fork(zipped):
    archive = zipped / "BIOSCAN_5M_cropped_256.zip"
    path = member_path(archive, "bioscan5m/images/cropped_256/val/BIOUG003-22.jpg")
    assert isinstance(path, MemberPath) and path.exists() and not path.with_name("nope.jpg").is_file()
    assert open_archive(archive) is open_archive(archive)  # one handle per archive
    with open_image(path) as im:
        size = im.size
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(str(path), queue))
    child.start()
    pid, _, child_size = queue.get(timeout=60)
    child.join(60)
    assert pid != os.getpid() and child_size == size and child.exitcode == 0
    assert open_archive(archive) is open_archive(archive)  # the parent's handle is untouched


def test_train_image_trains_from_the_archive_backed_dataset(zipped, tmp_path):
    """A tiny train-image run reads its photos from the zip (VAE fit, latent cache, samples)."""
    from phenogen.diffusion.config import ImageConfig
    from phenogen.diffusion.train import train_image_model

    ds, _ = _import(zipped, tmp_path / "ds")
    cfg = ImageConfig(preset="tiny", max_steps=2, batch_size=2, vae_steps=2, vae_batch_size=2,
                      lr_warmup_steps=1, kmer_k=2, kmer_segments=2, sample_steps=2)  # fmt: skip
    result = train_image_model(ds.root, tmp_path / "run", cfg, progress=False)
    assert result.global_step == 2 and (tmp_path / "run" / "pipeline" / "model_index.json").is_file()


@pytest.mark.parametrize(
    ("archives", "message"),
    [
        ("x.zip", "field 'image_archives' must be a non-empty list"),
        (
            [{"path": "rel/x.zip", "prefix": ""}],
            r"image_archives\[0\]\.path must be an absolute path of a \.zip",
        ),
        (
            [{"path": "/x.tar", "prefix": ""}],
            r"image_archives\[0\]\.path must be an absolute path of a \.zip",
        ),
        ([{"path": "/x.zip", "prefix": 3}], r"image_archives\[0\]\.prefix must be a relative member prefix"),
    ],
)
def test_a_hostile_image_archives_field_is_one_data_error(zipped, tmp_path, archives, message):
    _import(zipped, tmp_path / "ds")
    info_path = tmp_path / "ds" / "dataset.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "image_archives": archives}))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "ds")
