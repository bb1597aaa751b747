"""Style transfer (``phenogen.style``, ``phenogen stylize``) on a tiny real trait probe built in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from phenogen import style as st
from phenogen.cli import main
from phenogen.errors import ConfigError
from phenogen.evaluate.probe import ProbeSpec, TraitProbe, save_probe

torch.set_num_threads(2)


def _probe() -> TraitProbe:
    torch.manual_seed(0)
    spec = ProbeSpec(continuous=["body_hue", "size"], discrete=["crest"], mean=[0.0, 0.0], std=[1.0, 1.0],
                     width=8, features=16)  # fmt: skip
    return TraitProbe(spec).eval()


def _bird(colour: tuple[int, int, int], size: int = 48) -> Image.Image:
    img = Image.new("RGB", (size, size), (200, 220, 190))
    d = ImageDraw.Draw(img)
    d.ellipse([size * 0.25, size * 0.3, size * 0.75, size * 0.7], fill=colour)
    d.ellipse([size * 0.6, size * 0.2, size * 0.85, size * 0.42], fill=colour)
    d.line([(size * 0.3, size * 0.8), (size * 0.7, size * 0.8)], fill=(90, 60, 30), width=3)
    return img


def _gram_distance(backbone, x, style, stages=(1, 2, 3, 4)) -> float:
    fx, fs = st.stage_features(backbone, x, stages), st.stage_features(backbone, style, stages)
    return sum(
        float(((st.gram(fx[k]) - st.gram(fs[k])) ** 2).sum() / (st.gram(fs[k]) ** 2).sum()) for k in stages
    )


def test_stylize_moves_the_grams_to_the_style_keeps_the_hues_and_is_deterministic():
    probe = _probe()
    content = torch.cat([st.to_tensor(_bird((40, 150, 60))), st.to_tensor(_bird((200, 40, 40)))])
    style = st.to_tensor(st.builtin_style("strokes", 96))
    cfg = st.StyleConfig(steps=60, lr=0.05, keep_colours=False)
    out, losses = st.stylize(probe.backbone, content, style, cfg)
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    before, after = _gram_distance(probe.backbone, content, style), _gram_distance(probe.backbone, out, style)
    assert after < 0.6 * before, (before, after)
    assert losses["style"] == pytest.approx(after / 2, rel=0.05)  # the batch mean, the same sum over stages
    again, _ = st.stylize(probe.backbone, content, style, cfg)
    assert torch.equal(out, again)
    # luminance-only transfer: the portrait's chroma survives, the luminance carries the style
    kept, _ = st.stylize(probe.backbone, content, style, st.StyleConfig(steps=60, keep_colours=True))
    _, chroma_c = st._luma_chroma(content)
    y_k, chroma_k = st._luma_chroma(kept)
    y_c, _ = st._luma_chroma(content)
    assert float((chroma_k - chroma_c).abs().mean()) < 0.02
    assert float((y_k - y_c).abs().mean()) > 0.02
    # a larger style weight moves further from the content
    strong, _ = st.stylize(
        probe.backbone, content, style, st.StyleConfig(steps=60, style_weight=50.0, keep_colours=False)
    )
    weak, _ = st.stylize(
        probe.backbone, content, style, st.StyleConfig(steps=60, style_weight=0.5, keep_colours=False)
    )
    assert float((strong - content).abs().mean()) > float((weak - content).abs().mean())


def test_builtin_styles_are_deterministic_per_seed_and_unknown_names_are_refused():
    for name in st.BUILTIN_STYLES:
        a, b = st.builtin_style(name, 64, seed=1), st.builtin_style(name, 64, seed=1)
        assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(st.builtin_style(name, 64, seed=2)))
        assert np.asarray(a).std() > 10  # a texture, not a flat canvas
    with pytest.raises(ConfigError, match="strokes, hatching"):
        st.builtin_style("watercolour")


@pytest.mark.parametrize(
    "field, value, message",
    [("steps", 0, "at least 1"), ("lr", 0.0, "positive"), ("style_weight", -1.0, ">= 0"),
     ("content_layer", 5, "stages 1-4"), ("style_layers", [0, 2], "among 1-4"), ("size", 8, "16-1024"), ("jitter", 17, "0-16")],
)  # fmt: skip
def test_bad_style_settings_are_config_errors(field, value, message):
    cfg = st.StyleConfig()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=message):
        cfg.check()


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    save_probe(_probe(), tmp_path / "run" / "eval" / "probe")
    gen = tmp_path / "gen"
    (gen / "images").mkdir(parents=True)
    rows = ["record_id\tk\timage"]
    for i, colour in enumerate([(40, 150, 60), (200, 40, 40), (40, 60, 200)]):
        for k in range(2):
            _bird(colour, 40).save(gen / "images" / f"sp_{i}_{k}.png")
            rows.append(f"sp_{i}\t{k}\timages/sp_{i}_{k}.png")
    (gen / "generated.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def test_stylize_command_writes_images_sheet_style_and_probe_shift(inputs, capsys):
    out = inputs / "paleo"
    argv = ["stylize", "--features", str(inputs / "run"), "--generated", str(inputs / "gen"), "--out", str(out),
            "--steps", "20", "--style", "builtin:hatching", "--limit", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    info = json.loads((out / "style.json").read_text())
    assert [r["id"] for r in info["images"]] == ["sp_0", "sp_1"]  # --limit, first image per record
    for r in info["images"]:
        with Image.open(out / r["image"]) as im:
            assert im.size == (40, 40)
        assert r["probe_shift"] >= 0
    assert info["config"]["steps"] == 20 and info["config"]["keep_colours"] is True
    assert info["probe_shift_between_portraits"] > 0 and info["losses"]["style"] > 0
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.size == (64 + 2 * 40, 14 + 2 * 40)
    assert (out / "style.png").is_file()
    # a user's own style image and --image; --force replaces the earlier output
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(
        inputs / "art.png"
    )
    argv = ["stylize", "--features", str(inputs / "run" / "eval" / "probe"), "--image", str(inputs / "gen" / "images" / "sp_2_0.png"),
            "--style", str(inputs / "art.png"), "--out", str(out), "--steps", "3", "--force", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert [r["id"] for r in json.loads((out / "style.json").read_text())["images"]] == ["sp_2_0"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--features": "nowhere"}, "does not exist"),
        ({"--features": "gen"}, "no trait probe here"),
        ({"--style": "builtin:watercolour"}, "unknown builtin style"),
        ({"--style": "gen/generated.tsv"}, "not a readable image"),
        ({"--steps": "0"}, "style.steps = 0"),
        ({"--limit": "0"}, "--limit 0"),
        ({"--generated": "run"}, "no generated.tsv"),
    ],
)
def test_stylize_command_bad_inputs_are_one_line_and_write_nothing(inputs, capsys, change, message):
    args = {
        "--features": "run",
        "--generated": "gen",
        "--style": "builtin:strokes",
        "--steps": "2",
        "--limit": "3",
    }
    args.update(change)
    argv = ["stylize", "--out", str(inputs / "paleo")]
    for flag, value in args.items():
        argv += [
            flag,
            value if flag in ("--steps", "--limit") or value.startswith("builtin:") else str(inputs / value),
        ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (inputs / "paleo").exists()


def test_a_broken_portrait_is_named_before_anything_is_written(inputs, capsys):
    (inputs / "gen" / "images" / "sp_1_0.png").write_bytes(b"not a png")
    argv = [
        "stylize",
        "--features",
        str(inputs / "run"),
        "--generated",
        str(inputs / "gen"),
        "--out",
        str(inputs / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sp_1_0.png" in err and "not a readable image" in err
    assert not (inputs / "o").exists()
