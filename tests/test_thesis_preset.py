"""The ``thesis`` preset (``phenogen demo --config thesis``): found by name, resolves to the thesis' settings,
differs from demo.toml only where the thesis decides, has no key the config sections lack, and trains and
paints with a tiny GPT-2 and the shipped bird prior."""

from __future__ import annotations

import csv
import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
import torch
from test_diffusion import _tiny_dataset

from phenogen.cli import main
from phenogen.config import load_sections, merge_to_toml
from phenogen.demo import _demo_sections, check_config, default_config_path, resolve_config, shipped_presets
from phenogen.errors import ConfigError

torch.set_num_threads(2)

# what the thesis decides, and so the only places the preset may differ from demo.toml (section -> keys)
THESIS_KEYS = {
    "demo": {"tree_splits"},
    "sample": {"schedule"},  # top_p 0.6 is SampleConfig's default, so demo.toml has it too
    "image": {"encoder", "cond_head", "cond_depth", "train_unet", "null_condition", "lr",
              # demo.toml's caption-head settings (meaningless with the tokens head)
              "train_caption_encoder", "decoder_loss_batch", "caption_prior_weight", "caption_scan_at"},
    "ancestors": {"portrait_condition", "caption_tips"},  # caption_tips: read with tree portraits only
    "generate": {"steps", "scheduler", "guidance_scale", "best_of"},
}  # fmt: skip


def _resolved(name: str, tmp_path: Path, overrides: tuple[str, ...] = ()) -> Path:
    """The one resolved TOML the demo hands every stage (run_demo: file <- --set, merged)."""
    path = tmp_path / f"{name}.toml"
    path.write_text(merge_to_toml(resolve_config(name), list(overrides)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def thesis(tmp_path_factory):
    return load_sections(_demo_sections(), _resolved("thesis", tmp_path_factory.mktemp("cfg")))


def test_thesis_preset_is_shipped_and_found_by_name(tmp_path):
    """``--config thesis`` is the packaged configs/thesis.toml; an existing path wins; an unknown bare name
    is one clear error naming the presets; a named file stays a file (missing: load_sections' error)."""
    assert {"demo", "thesis"} <= set(shipped_presets())
    path = resolve_config("thesis")
    assert path.is_file() and path.parent == default_config_path().parent and path.name == "thesis.toml"
    assert resolve_config("demo") == default_config_path()
    assert resolve_config(None) is None
    own = tmp_path / "thesis"
    own.write_text("[sim]\nseed = 3\n", encoding="utf-8")
    assert resolve_config(str(own)) == own
    with pytest.raises(ConfigError, match=r"no shipped preset of that name \(shipped: .*thesis"):
        resolve_config("thesys")
    assert resolve_config("missing.toml") == Path("missing.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        check_config(resolve_config("missing.toml"), [])


def test_demo_command_takes_the_preset_by_name(tmp_path, capsys):
    """``phenogen demo --config thesis`` reads the shipped preset (a bad --set is then that key's error, not
    a missing file), and an unknown name fails before the run directory is made."""
    out = tmp_path / "run"
    assert main(["demo", "--config", "thesis", "--out", str(out), "--set", "image.nope=1"]) == 2
    assert "unknown key(s) nope" in capsys.readouterr().err
    assert main(["demo", "--config", "thesys", "--out", str(out)]) == 2
    assert "no shipped preset of that name" in capsys.readouterr().err and not out.exists()


def test_thesis_preset_resolves_to_the_thesis_settings(thesis):
    """GPT-2's last hidden layer as cross-attention tokens, the prior's UNet fine-tuned, empty-sequence null,
    50 DDIM steps at guidance 8, barcodes at top-p 0.6 with a rising-then-falling temperature, every target
    painted from its own barcode."""
    image, gen, sample = thesis["image"], thesis["generate"], thesis["sample"]
    assert (image.encoder, image.lm_layer, image.cond_head, image.train_unet) == ("gpt2", -1, "tokens", True)
    assert (image.init, image.lora_rank, image.null_condition) == ("builtin", 0, "empty_sequence")
    assert (gen.scheduler, gen.steps, gen.guidance_scale) == ("ddim", 50, 8.0)
    assert sample.top_p == 0.6 and sample.schedule == "rise_fall"
    temps = sample.temperatures(100)
    peak = temps.index(max(temps))
    assert temps[0] < max(temps) > temps[-1] and 0 < peak < 99  # rises, then falls
    assert thesis["lm"].k == 6 and thesis["lm"].stride is None  # non-overlapping 6-mers
    assert thesis["demo"].tree_splits == () and thesis["ancestors"].portrait_condition == "sequence"


def test_thesis_preset_equals_demo_toml_except_where_the_thesis_decides(thesis, tmp_path):
    """Same data, LM, image step budget, targets, portraits per target, sweeps and evaluation as demo.toml:
    the two runs compare. Any other difference (a drifted copy) fails here."""
    demo = load_sections(_demo_sections(), _resolved("demo", tmp_path))
    differ = {}
    for name in demo:
        keys = {f.name for f in dataclasses.fields(demo[name])
                if getattr(demo[name], f.name) != getattr(thesis[name], f.name)}  # fmt: skip
        if keys:
            differ[name] = keys
    assert differ == THESIS_KEYS
    assert (thesis["image"].epochs, thesis["image"].max_steps) == (demo["image"].epochs, 0)  # 675 steps both
    assert thesis["demo"].images_per_target == demo["demo"].images_per_target == 8


def test_every_key_of_the_preset_exists_in_the_config_sections(tmp_path):
    """Each [section] is one the demo reads and each key a field of its dataclass; the demo's own check
    passes, and the same file with one misspelt key fails it."""
    text = resolve_config("thesis").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    sections = _demo_sections()
    for name, table in doc.items():
        assert name in sections, name
        fields = {f.name for f in dataclasses.fields(sections[name])}
        assert set(table) <= fields, (name, set(table) - fields)
    check_config(resolve_config("thesis"), [])
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace("null_condition =", "null_conditon ="), encoding="utf-8")
    with pytest.raises(ConfigError, match="null_conditon"):
        check_config(typo, [])


def test_the_thesis_image_settings_train_and_paint_with_a_tiny_gpt2(tmp_path):
    """train-image with the preset (a 6-mer GPT-2, the shipped prior, a few steps) fine-tunes the prior's UNet
    with the DNA tokens; the pipeline stores DDIM 50 / guidance 8 and the empty-sequence null, and generate
    paints with them."""
    from safetensors.torch import load_file

    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.diffusion.prior import builtin_prior_dir
    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, save_lm

    data = _tiny_dataset(tmp_path / "clade").root
    lm = save_lm(build_model(KmerTokenizer(k=6), preset="tiny", n_positions=16, seed=0), tmp_path / "lm")
    sets = [f"image.lm_model={json.dumps(str(lm))}", "image.max_steps=2", "image.batch_size=4",
            "image.lr_warmup_steps=1", "image.sample_steps=2"]  # fmt: skip
    config = _resolved("thesis", tmp_path, tuple(f"{s}" for s in sets))
    run = tmp_path / "image"
    assert main(["train-image", "--data", str(data), "--out", str(run), "--config", str(config),
                 "--no-progress"]) == 0  # fmt: skip
    pipeline = run / "pipeline"
    stored = json.loads((pipeline / "generation_config.json").read_text())
    assert (stored["scheduler"], stored["steps"], stored["guidance_scale"], stored["best_of"]) == (
        "ddim",
        50,
        8.0,
        1,
    )
    pipe = load_pipeline(pipeline)
    cond = pipe.conditioner.config
    assert (cond.encoder, cond.head, cond.null_condition, cond.lm_layer, cond.depth) == (
        "gpt2", "tokens", "empty_sequence", -1, 0
    )  # fmt: skip
    # the whole UNet was fine-tuned from the shipped prior (not frozen, not a fresh one)
    prior = load_file(builtin_prior_dir("cpu") / "unet" / "diffusion_pytorch_model.safetensors")
    tuned = pipe.unet.state_dict()
    moved = [k for k, v in prior.items() if not torch.equal(v.float(), tuned[k].float())]
    assert len(moved) > len(prior) // 2
    assert torch.allclose(tuned["conv_in.weight"].float(), prior["conv_in.weight"].float(), atol=0.05)

    fasta = tmp_path / "targets.fasta"
    fasta.write_text(">a\nACGTACGTTTGACAACGTAGGCTACGTACGTTTGACAACGTAGGCTAC\n>b\n" + "ACGGTT" * 8 + "\n")
    out = tmp_path / "generated"
    assert main(["generate", "--model", str(pipeline), "--fasta", str(fasta), "--out", str(out), "--n", "1",
                 "--config", str(config)]) == 0  # fmt: skip
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["scheduler"], settings["steps"], settings["guidance_scale"]) == ("ddim", 50, 8.0)
    with open(out / "generated.tsv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 2 and all((out / r["image"]).is_file() for r in rows)
