"""phenogen.api and generation settings that travel with the pipeline: stored by train-image, used by
generate / the API unless overridden; ``generate --sequence``; noise keyed by seed + record id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_diffusion import _tiny_cfg, _tiny_dataset, _tiny_pipeline

from phenogen import api
from phenogen.cli import main
from phenogen.diffusion.generate import image_seed
from phenogen.diffusion.settings import FILE, THESIS, GenerationSettings, read_settings, write_settings
from phenogen.errors import CheckpointError, InputError, SequenceError

torch.set_num_threads(2)
BARCODE = "ACGTACGTTTGACAACGTAGGCTTACG"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny saved pipeline that stores tuned settings (euler-a, 3 steps, guidance 2)."""
    root = tmp_path_factory.mktemp("model")
    pipe = _tiny_pipeline()
    pipe.save_pretrained(root / "model")
    write_settings(root / "model", GenerationSettings("euler-a", 3, 2.0), "test")
    return root / "model"


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path)).astype(int)


def test_train_image_stores_the_generate_section_with_the_pipeline(tmp_path):
    data = _tiny_dataset(tmp_path / "clade")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[image]\npreset = "tiny"\n\n[generate]\nscheduler = "unipc"\nsteps = 7\n')
    sets = [f"image.{k}={json.dumps(v)}" for k, v in vars(_tiny_cfg(max_steps=1)).items()
            if k in ("max_steps", "batch_size", "vae_steps", "vae_batch_size", "kmer_k", "kmer_segments",
                     "sample_steps", "lr_warmup_steps")]  # fmt: skip
    assert main(["train-image", "--data", str(data.root), "--out", str(tmp_path / "run"), "--config", str(cfg),
                 "--no-progress", *(f"--set={s}" for s in sets)]) == 0  # fmt: skip
    settings, source = read_settings(tmp_path / "run" / "pipeline")
    # given values stored; guidance not given: the thesis' value
    assert settings == GenerationSettings("unipc", 7, THESIS.guidance_scale)
    assert "[generate]" in source


def test_a_pipeline_without_settings_is_painted_with_the_thesis_settings(tmp_path):
    _tiny_pipeline().save_pretrained(tmp_path / "m")
    assert read_settings(tmp_path / "m")[0] == THESIS == GenerationSettings("ddim", 50, 8.0)


def test_generate_defaults_equal_the_stored_settings_and_flags_override_them(model_dir, tmp_path):
    out = tmp_path / "g"
    assert main(["generate", "--model", str(model_dir), "--sequence", BARCODE, "--out", str(out)]) == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["settings"] == {"scheduler": "euler-a", "steps": 3, "guidance_scale": 2.0, "best_of": 1}
    assert (out / "images" / "sequence_0.png").is_file()
    out2 = tmp_path / "g2"
    assert main(["generate", "--model", str(model_dir), "--sequence", BARCODE, "--id", "mine", "--out", str(out2),
                 "--steps", "2", "--scheduler", "ddim"]) == 0  # fmt: skip
    resolved = json.loads((out2 / "config.json").read_text())
    assert resolved["settings"] == {"scheduler": "ddim", "steps": 2, "guidance_scale": 2.0, "best_of": 1}
    assert (out2 / "images" / "mine_0.png").is_file()


def test_noise_is_keyed_by_record_id_not_position(model_dir, tmp_path):
    """Reordering a FASTA or painting a record alone changes nothing; --sequence equals the FASTA record."""
    other = "TTGACAACGTAGGCTACGTACGTTACA"
    a, b = tmp_path / "a.fasta", tmp_path / "b.fasta"
    a.write_text(f">x\n{BARCODE}\n>y\n{other}\n")
    b.write_text(f">y\n{other}\n>x\n{BARCODE}\n")
    for f, o in ((a, "oa"), (b, "ob")):
        assert (
            main(["generate", "--model", str(model_dir), "--fasta", str(f), "--out", str(tmp_path / o)]) == 0
        )
    assert main(["generate", "--model", str(model_dir), "--sequence", BARCODE, "--id", "x",
                 "--out", str(tmp_path / "alone")]) == 0  # fmt: skip
    x = _pixels(tmp_path / "oa" / "images" / "x_0.png")
    assert np.array_equal(x, _pixels(tmp_path / "ob" / "images" / "x_0.png"))
    assert np.array_equal(x, _pixels(tmp_path / "alone" / "images" / "x_0.png"))
    assert image_seed(0, "x", 0) != image_seed(0, "y", 0) != image_seed(0, None, 0)


def test_shared_noise_gives_one_barcode_under_two_ids_the_same_image(model_dir, tmp_path):
    f = tmp_path / "twice.fasta"
    f.write_text(f">one\n{BARCODE}\n>two\n{BARCODE}\n")
    for flag, o in (([], "own"), (["--shared-noise"], "shared")):
        assert (
            main(
                ["generate", "--model", str(model_dir), "--fasta", str(f), "--out", str(tmp_path / o), *flag]
            )
            == 0
        )
    own = [_pixels(tmp_path / "own" / "images" / f"{r}_0.png") for r in ("one", "two")]
    shared = [_pixels(tmp_path / "shared" / "images" / f"{r}_0.png") for r in ("one", "two")]
    assert not np.array_equal(*own)
    assert np.array_equal(*shared)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sequence", "ACGTXXACGT"], "--sequence: record 'sequence'"),
        (["--sequence", "ACG"], "shorter than"),
        (["--sequence", BARCODE, "--fasta", "x.fasta"], "not allowed with"),
        (["--sequence", BARCODE, "--steps", "5000"], "noise levels"),
    ],
)
def test_generate_sequence_errors_are_one_line(model_dir, tmp_path, capsys, argv, message):
    code = main(["generate", "--model", str(model_dir), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_broken_settings_file_is_named(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    (broken / FILE).write_text('{"scheduler": "warp", "steps": 3, "guidance_scale": 2}')
    with pytest.raises(CheckpointError, match=FILE):
        api.load_model(broken)


def test_api_paints_what_generate_paints(model_dir, tmp_path):
    model = api.load_model(model_dir)
    assert model.settings == GenerationSettings("euler-a", 3, 2.0)
    seen = []
    p = model.paint({"x": BARCODE}, images=2, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3, 3) and len(p.images["x"]) == 2 and p.settings.steps == 3
    assert main(["generate", "--model", str(model_dir), "--sequence", BARCODE, "--id", "x", "--n", "2",
                 "--out", str(tmp_path / "g")]) == 0  # fmt: skip
    for k in range(2):
        assert np.array_equal(
            np.asarray(p.images["x"][k]).astype(int), _pixels(tmp_path / "g" / "images" / f"x_{k}.png")
        )
    assert p.grid().size[1] == 16
    assert model.paint(BARCODE, steps=2).settings.steps == 2


def test_api_checks_barcodes_before_painting(model_dir):
    model = api.load_model(model_dir)
    with pytest.raises(SequenceError, match="record 'b'"):
        model.paint({"a": BARCODE, "b": "ACGTQQ" * 5})
    with pytest.raises(InputError, match="noise levels"):
        model.paint(BARCODE, steps=10_000)
    with pytest.raises(InputError):
        model.paint(BARCODE, scheduler="warp")
    assert api.check_barcodes({"a": "acgu\nacgt"}) == [("a", "ACGTACGT")]
    assert api.check_barcodes({"a": "ACGRT"}) == [("a", "ACGNT")]


def test_parse_fasta_reads_pasted_text_and_names_the_source():
    assert api.parse_fasta(">a x\nACGT\nACGT\n>b\nTTTT\n") == [("a", "ACGTACGT"), ("b", "TTTT")]
    assert api.parse_fasta("  acgt acgt \n") == [("sequence", "acgtacgt")]
    with pytest.raises(InputError, match="pasted"):
        api.parse_fasta(">a\nMKVLA*\n", source="pasted")
    with pytest.raises(InputError, match="empty"):
        api.parse_fasta("   ")
    with pytest.raises(InputError, match="bytes"):
        api.parse_fasta(">a\n" + "A" * 100, max_bytes=50)


def test_describe_and_captions_need_a_caption_head(model_dir):
    model = api.load_model(model_dir)
    assert model.head == "tokens" and model.caption_names == []
    with pytest.raises(Exception, match="caption-head"):
        model.describe(BARCODE)


def test_run_lists_tree_nodes_with_their_split_and_checks_its_layout(tmp_path):
    import shutil

    from toy_clade import make_clade

    from phenogen.errors import ConfigError

    run = tmp_path / "run"
    with pytest.raises(InputError, match="not a run directory"):
        api.load_run(run)
    ds = make_clade(run / "data", n_tips=8, n_extinct=2, seq_len=120)
    with pytest.raises(InputError, match="no trained pipeline"):
        api.load_run(run)
    _tiny_pipeline().save_pretrained(run / "image" / "pipeline")
    r = api.load_run(run)
    with pytest.raises(Exception, match="ancestors/tree.nwk"):
        r.nodes()
    (run / "ancestors").mkdir()
    shutil.copy(run / "data" / "tree.nwk", run / "ancestors" / "tree.nwk")
    nodes = r.nodes()
    kinds = {n["kind"] for n in nodes}
    assert nodes[0]["parent"] is None and nodes[0]["n_tips"] == 8 and nodes[0]["kind"] == "ancestor"
    assert {"ancestor", "train", "extinct"} <= kinds
    assert sum(n["kind"] == "extinct" for n in nodes) == 2 == len(set(ds.species("extinct")))
    assert r.metrics() is None
    with pytest.raises(ConfigError, match="caption-head"):
        r.node_captions([nodes[0]["name"]])
