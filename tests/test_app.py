"""The web app (``phenogen app``): its pure helpers on a tiny real run, the command's input checks, and
one end-to-end pass through the real app in headless Chromium (Selenium, Debian's driver)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toy_clade import make_clade

from phenogen import api
from phenogen.app import (
    LIMITS,
    Limits,
    counterfactual,
    node_choices,
    paint_barcodes,
    paint_node,
    tree_picture,
)
from phenogen.errors import ConfigError

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FAST = dict(steps=2, guidance=2.0, scheduler="ddim", seed=0)  # the tiny model paints in well under a second


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory as ``phenogen demo`` lays it out: a toy clade, a tiny captioned prior, a caption-head
    pipeline trained for 3 steps, the clade's tree as ``ancestors/tree.nwk`` with the tips' barcodes, a
    targets FASTA and one true portrait (of the extinct tip ``ext_01``)."""
    from phenogen.cli import main
    from phenogen.diffusion.config import ImageConfig
    from phenogen.diffusion.settings import GenerationSettings, write_settings
    from phenogen.diffusion.train import train_image_model
    from phenogen.dna.seqio import write_fasta

    root = tmp_path_factory.mktemp("app")
    sets = ["prior.preset=tiny", "prior.n_images=16", "prior.vae_steps=2", "prior.unet_steps=2", "prior.batch_size=8",
            "prior.vae_minutes=1", "prior.unet_minutes=1", "prior.decoder_minutes=0.01", "prior.captions=true",
            "prior.reader_renders=32", "prior.reader_epochs=1"]  # fmt: skip
    assert (
        main(
            [
                "pretrain-image",
                "--out",
                str(root / "prior"),
                "--no-progress",
                *[a for s in sets for a in ("--set", s)],
            ]
        )
        == 0
    )
    run = root / "run"
    ds = make_clade(run / "data", n_tips=10, n_extinct=2, seq_len=120)
    cfg = ImageConfig(preset="tiny", max_steps=3, batch_size=4, lr_warmup_steps=1, kmer_k=2, kmer_segments=2,
                      sample_steps=2, init=str(root / "prior"), cond_head="caption", train_unet=False,
                      train_caption_encoder=False, lr=1e-2)  # fmt: skip
    result = train_image_model(ds.root, run / "image", cfg, progress=False)
    write_settings(result.pipeline_dir, GenerationSettings("ddim", 2, 2.0), "test")
    first: dict[str, object] = {}
    for r in ds.records(("train", "heldout", "extinct")):
        first.setdefault(r.species, r)
    (run / "ancestors").mkdir()
    shutil.copy(run / "data" / "tree.nwk", run / "ancestors" / "tree.nwk")
    write_fasta(run / "ancestors" / "input.fasta", [(sp, r.sequence) for sp, r in first.items()])
    write_fasta(
        run / "targets.fasta", [(r.record_id, r.sequence) for r in first.values() if r.split != "train"]
    )
    truth = run / "data" / "truth" / "images" / "extinct"
    truth.mkdir(parents=True)
    shutil.copy(run / "data" / first["ext_01"].images[0], truth / "ext_01.png")
    return run


@pytest.fixture(scope="module")
def tiny_run(run_dir) -> api.Run:
    return api.load_run(run_dir)


def _barcodes(run: api.Run, split: str, n: int) -> list[tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}
    for r in run.dataset.records(split):
        seen.setdefault(r.species, (r.record_id, r.sequence))
    return list(seen.values())[:n]


def _fasta(records) -> str:
    return "".join(f">{rid}\n{seq}\n" for rid, seq in records)


# ------------------------------------------------------------------------------------- the helpers
def test_paint_barcodes_labels_each_image_and_tables_what_the_dna_wrote(tiny_run):
    """Pasted FASTA: n images per record, labelled by id; the table holds what model.describe says each
    barcode writes; progress reaches the last step; the same request paints the same images."""
    records = _barcodes(tiny_run, "heldout", 2)
    calls: list[tuple[int, int]] = []
    gallery, table, status = paint_barcodes(
        tiny_run, _fasta(records), None, 2, progress=lambda d, t: calls.append((d, t)), **FAST
    )
    ids = [rid for rid, _ in records]
    assert [label for _, label in gallery] == [f"{rid} #{k}" for rid in ids for k in (1, 2)]
    assert all(im.size[0] > 0 for im, _ in gallery) and status.startswith("Painted 2 image(s) for each of 2")
    written = tiny_run.model.describe(dict(records))
    assert table["headers"] == ["trait", *ids] and len(table["data"]) == len(tiny_run.model.caption_names)
    for row in table["data"]:
        assert row[1:] == [round(written[rid][row[0]], 2) for rid in ids]
    assert calls and calls[-1][0] == calls[-1][1] == 2
    again, _, _ = paint_barcodes(tiny_run, _fasta(records), None, 2, **FAST)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for (a, _), (b, _) in zip(gallery, again, strict=True)
    )


def test_an_uploaded_fasta_is_read_and_text_plus_file_is_refused(tiny_run, tmp_path):
    """The upload path (where Gradio keeps the upload) is read; pasted text with it is ambiguous, refused."""
    records = _barcodes(tiny_run, "train", 1)
    path = tmp_path / "mine.fasta"
    path.write_text(_fasta(records))
    gallery, _, status = paint_barcodes(tiny_run, "", str(path), 1, **FAST)
    assert [label for _, label in gallery] == [records[0][0]], status
    gallery, _, status = paint_barcodes(tiny_run, "ACGT" * 20, str(path), 1, **FAST)
    assert gallery == [] and "not both" in status
    path.write_bytes(b">x\n\xff\xfeACGT\n")
    assert "not UTF-8" in paint_barcodes(tiny_run, "", str(path), 1, **FAST)[2]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ACGTXYZ", "'X' at position 5 is an amino-acid letter"),
        ("ACG", "shorter than the"),
        ("   ", "nothing to paint"),
        (">a\nACGTACGTACGTACGT\n>a\nACGTACGTACGTACGT\n", "duplicate id 'a'"),
    ],
)
def test_bad_barcodes_show_the_api_message(tiny_run, text, expected):
    """A bad barcode paints nothing and the status is the API's one-line message, marked ⚠️."""
    gallery, table, status = paint_barcodes(tiny_run, text, None, 1, **FAST)
    assert gallery == [] and table["data"] == [] and status.startswith("⚠️") and expected in status


def test_limits_are_enforced_with_a_message_naming_them(tiny_run):
    """Records, length, images, steps, guidance, seed and scheduler outside their bounds are refused."""
    limits = Limits(max_records=2, max_length=100, max_images=4, max_steps=3)
    three = _barcodes(tiny_run, "train", 3)
    short = [(rid, seq[:90]) for rid, seq in three]
    cases = [
        (dict(text=_fasta(three)), "3 records; the app paints at most 2"),
        (dict(text=_fasta(three[:1])), "120 bp; the app reads barcodes of at most 100 bp"),
        (dict(text=_fasta(short[:2]), images=3), "2 × 3 = 6 images: the app paints at most 4"),
        (dict(text=_fasta(short[:1]), steps=4), "steps = 4: choose 1 to 3"),
        (dict(text=_fasta(short[:1]), guidance=99), "guidance = 99"),
        (dict(text=_fasta(short[:1]), seed=-1), "seed = -1"),
        (dict(text=_fasta(short[:1]), seed=1.5), "seed: expected a whole number"),
        (dict(text=_fasta(short[:1]), scheduler="warp"), "scheduler 'warp': choose one of"),
    ]
    for given, expected in cases:
        args = FAST | {"images": 1, "upload": None} | given
        gallery, _, status = paint_barcodes(tiny_run, limits=limits, **args)
        assert gallery == [] and expected in status, (given, status)
    assert paint_barcodes(tiny_run, _fasta(short[:1]), None, 1, limits=limits, **FAST)[
        0
    ]  # within bounds: painted
    assert LIMITS.max_records == 16 and LIMITS.max_images == 32 and LIMITS.max_steps == 100
    with pytest.raises(ConfigError, match="max_records"):
        Limits(max_records=0)


def test_tree_nodes_paint_from_the_tree_with_their_true_portrait(tiny_run):
    """Every node is offered with its kind; an ancestor and an extinct tip paint, the tip beside its
    true portrait; an unknown node is named in the status."""
    choices = dict((value, label) for label, value in node_choices(tiny_run))
    assert choices["n000"].startswith("n000 — ancestor, 10 tips") and choices["ext_01"] == "ext_01 — extinct"
    assert {label.split(" — ")[1].split(",")[0] for label in choices.values()} == {
        "ancestor",
        "train",
        "heldout",
        "extinct",
    }
    gallery, truth, table, status = paint_node(tiny_run, "n003", 2, **FAST)
    assert len(gallery) == 2 and truth is None and "no true portrait of n003" in status
    assert table["headers"] == ["trait", "n003"]
    gallery, truth, _, status = paint_node(tiny_run, "ext_01", 1, **FAST)
    assert len(gallery) == 1 and truth is not None and "true portrait of ext_01" in status
    assert "no node named 'nope'" in paint_node(tiny_run, "nope", 1, **FAST)[3]
    assert "choose a node" in paint_node(tiny_run, None, 1, **FAST)[3]
    plain, marked = np.asarray(tree_picture(tiny_run)), np.asarray(tree_picture(tiny_run, "n003"))
    assert plain.shape == marked.shape and plain.shape[0] > 200 and (plain != marked).any()


def test_counterfactual_rows_share_the_noise_and_mutations_nest(tiny_run):
    """The grid's rows are the barcode and its 5 % / 20 % mutants painted with one noise per column: each
    row's last image is what painting that barcode alone under shared noise gives."""
    from phenogen.counterfactual import mutate

    [(rid, seq)] = _barcodes(tiny_run, "heldout", 1)
    grid, table, status = counterfactual(tiny_run, _fasta([(rid, seq)]), ["20", "5"], "random", 2, **FAST)
    assert grid is not None, status
    labels = table["headers"][1:]
    assert labels == [f"{rid} as given", "5 % mutated (6 sites)", "20 % mutated (24 sites)"]
    small = grid
    row_h = small.height // 3
    model = tiny_run.model
    for i, mutant in enumerate([seq, mutate(seq, 0.05, seed=0), mutate(seq, 0.2, seed=0)]):
        alone = model.paint({"alone": mutant}, images=2, shared_noise=True, steps=2, guidance_scale=2.0,
                            scheduler="ddim", seed=0).images["alone"][1]  # fmt: skip
        w, h = alone.size
        cell = small.crop((small.width - w, i * row_h, small.width, i * row_h + h))
        assert np.abs(np.asarray(cell, dtype=int) - np.asarray(alone, dtype=int)).max() <= 2
    five, twenty = mutate(seq, 0.05, seed=0), mutate(seq, 0.2, seed=0)
    assert all(
        b == c for a, b, c in zip(seq, five, twenty, strict=True) if a != b
    )  # the 5 % sites are among the 20 %
    assert "⚠️" in counterfactual(tiny_run, _fasta([(rid, seq)]), [], "random", 2, **FAST)[2]
    assert "at most 5 beside" in counterfactual(tiny_run, seq, list(range(1, 8)), "random", 1, **FAST)[2]
    assert (
        "takes one barcode"
        in counterfactual(tiny_run, _fasta(_barcodes(tiny_run, "train", 2)), ["5"], "random", 1, **FAST)[2]
    )


def test_the_command_checks_its_arguments_before_importing_gradio(tmp_path):
    """A missing run or a bad port is one stderr line and exit code 2, and gradio is never imported."""
    code = ("import sys; from phenogen.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'gradio' in sys.modules)")  # fmt: skip
    for argv, expected in [
        (["app", "--run", str(tmp_path / "nope")], "not a run directory"),
        (["app", "--run", str(tmp_path), "--port", "70000"], "--port 70000"),
        (["app", "--run", str(tmp_path), "--set", "image.preset=tiny"], "takes no configuration"),
    ]:
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == ["2", "False"], out.stderr[-2000:]
        assert expected in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------- in a browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_app(tiny_run):
    """The app served on 127.0.0.1 in this process, and headless Chromium driven through Debian's
    chromedriver (Selenium Manager never runs: the driver's path is given and SE_OFFLINE is set)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian packages chromium and chromedriver not installed")
    pytest.importorskip("gradio", reason="the app extra (pip install -e '.[app]') is not installed")
    pytest.importorskip("selenium", reason="the dev extra (selenium) is not installed")
    import os

    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from phenogen.app import build_app, launch

    demo = build_app(tiny_run)
    _, url, _ = launch(demo, port=_free_port(), block=False)
    driver = None
    try:
        assert url.startswith("http://127.0.0.1:")
        options = webdriver.ChromeOptions()
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ):
            options.add_argument(arg)
        options.binary_location = str(CHROMIUM)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.get(url)
        yield demo, driver
    finally:
        if driver is not None:
            driver.quit()
        demo.close()


def _wait(driver, condition, timeout: float = 60):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:  # say what the page showed instead
        shown = {
            e.get_attribute("id"): e.text for e in driver.find_elements(By.CSS_SELECTOR, "[id$=-status]")
        }
        raise AssertionError(f"timed out after {timeout} s; the status lines read {shown}") from None


def _type(driver, css: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def test_the_app_in_a_browser_paints_shows_errors_and_walks_the_tree(browser_app, tiny_run, tmp_path):
    """Paste a barcode, Generate: the gallery shows the images and the table the written traits; a bad
    barcode shows the API's message; the Tree tab paints a node beside its true portrait."""
    from selenium.webdriver.common.by import By

    demo, driver = browser_app
    assert demo._queue.default_concurrency_limit == 1 and demo._queue.max_size == LIMITS.queue_size
    [(rid, seq)] = _barcodes(tiny_run, "heldout", 1)
    _type(driver, "#paint-text textarea", f">{rid}\n{seq}")
    _type(driver, "#paint-images input[type=number]", "2")
    driver.find_element(By.ID, "paint-go").click()
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#paint-gallery img")) >= 2)
    _wait(driver, lambda d: "body_hue" in d.find_element(By.ID, "paint-table").text)
    assert rid in driver.find_element(By.ID, "paint-table").text
    assert "Painted 2 image(s)" in driver.find_element(By.ID, "paint-status").text

    _type(driver, "#paint-text textarea", "ACGTXYZ")
    driver.find_element(By.ID, "paint-go").click()
    _wait(driver, lambda d: "amino-acid letter" in d.find_element(By.ID, "paint-status").text)
    assert "'X' at position 5" in driver.find_element(By.ID, "paint-status").text

    # an uploaded FASTA (through the upload box, the only way a file reaches the app)
    [(up_id, up_seq)] = _barcodes(tiny_run, "train", 1)
    path = tmp_path / "upload.fasta"
    path.write_text(_fasta([(up_id, up_seq)]))
    _type(driver, "#paint-text textarea", " ")
    driver.find_element(By.CSS_SELECTOR, "#paint-file input[type=file]").send_keys(str(path))
    _wait(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#paint-file button[aria-label=Clear]")
    )  # uploaded
    driver.find_element(By.ID, "paint-go").click()
    _wait(driver, lambda d: up_id in d.find_element(By.ID, "paint-table").text)
    assert "Painted 2 image(s) for each of 1" in driver.find_element(By.ID, "paint-status").text

    driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Tree')]").click()
    _type(driver, "#tree-node input", "ext_01")
    _wait(driver, lambda d: d.find_elements(By.XPATH, "//ul[@role='listbox']//li[contains(., 'ext_01')]"))
    driver.find_element(By.XPATH, "//ul[@role='listbox']//li[contains(., 'ext_01')]").click()
    driver.find_element(By.ID, "tree-go").click()
    _wait(driver, lambda d: "true portrait of ext_01" in d.find_element(By.ID, "tree-status").text)
    assert driver.find_elements(By.CSS_SELECTOR, "#tree-gallery img")
    assert driver.find_elements(By.CSS_SELECTOR, "#tree-truth img")
