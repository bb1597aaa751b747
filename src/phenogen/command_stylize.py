"""``phenogen stylize``: portraits re-painted in a painting-like style ("paleoart"), Gatys style transfer.

::

    phenogen stylize --features RUN --generated RUN/generated --data RUN/data --out paleo
    phenogen stylize --features RUN/eval/probe --image bird.png --style my_painting.jpg --out paleo

``--features`` is the trained trait probe whose convolution stages give the content and style features
(a probe directory, an ``evaluate`` OUT holding ``probe/``, or a run directory holding ``eval/probe/``): the
project's own CNN, since no pretrained VGG exists offline (:mod:`phenogen.style`). Portraits come from
``--image FILE`` (repeatable) or ``--generated DIR`` (the first image of each record of a ``generate`` output,
at most ``--limit``). ``--style`` is ``builtin:strokes`` (default), ``builtin:hatching`` or an image file.
``--data`` labels the sheet with species names.

Writes ``OUT/images/<name>.png``, ``OUT/style.png`` (the style image used), ``OUT/sheet.png`` (original above
stylised, one column per portrait, labelled) and ``OUT/style.json``: the settings, the final losses and
``probe_shift`` — how far the style moved what the probe reads (RMSE of the z-scored continuous traits
between each portrait and its stylised version, beside the same distance between different portraits, for
scale). Every input is checked before the probe loads or anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "find_probe"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features", required=True, type=Path,
        help="trait probe: a probe dir, an evaluate OUT (OUT/probe) or a run dir (RUN/eval/probe)",
    )  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, action="append", help="a portrait to stylise (repeatable)")
    source.add_argument(
        "--generated", type=Path, help="a `phenogen generate` output: its first image per record"
    )
    parser.add_argument("--limit", type=int, default=16, help="at most this many records of --generated (16)")
    parser.add_argument(
        "--style", default="builtin:strokes",
        help="builtin:strokes (oil-like, default), builtin:hatching (ink) or an image file",
    )  # fmt: skip
    parser.add_argument("--data", type=Path, help="dataset directory: label the sheet with species names")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--steps", type=int, help="optimisation steps (style.steps, 300)")
    parser.add_argument("--style-weight", type=float, help="weight of the style loss (style.style_weight, 5)")
    parser.add_argument(
        "--style-colours", action="store_true",
        help="take the style image's colours too (default: keep the portrait's hues, luminance-only transfer)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )


def find_probe(path: Path) -> Path:
    """The probe directory behind ``--features``: ``path`` itself, ``path/probe`` or ``path/eval/probe``."""
    from phenogen.errors import InputError

    for d in (path, path / "probe", path / "eval" / "probe"):
        if (d / "probe.json").is_file():
            return d
    if not path.exists():
        raise InputError(
            f"--features {path}: does not exist; give a trait probe directory or a run directory"
        )
    raise InputError(
        f"--features {path}: no trait probe here (looked for probe.json in it, in probe/ and in eval/probe/); "
        "give the probe/ of a `phenogen evaluate` output or a `phenogen demo` run"
    )


def _check_image(path: Path, what: str) -> None:
    from PIL import Image, UnidentifiedImageError

    from phenogen.errors import InputError

    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{what} {path}: not a readable image ({type(exc).__name__}: {exc})") from None


def _portraits(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(record id or file stem, image path) of every portrait to stylise, each checked to open."""
    from phenogen.errors import InputError

    if args.limit < 1:
        raise InputError(f"--limit {args.limit}: give at least 1")
    if args.image:
        items = [(p.stem, p) for p in args.image]
        what = "--image"
    else:
        from phenogen.evaluate.targets import read_generated

        table = read_generated(args.generated)
        items = [(rid, paths[0]) for rid, paths in list(table.items())[: args.limit]]
        what = f"--generated {args.generated}:"
    for _, p in items:
        _check_image(p, what)
    return items


def _sheet(originals, stylised, labels: list[str]):
    """Original above stylised, one labelled column per portrait."""
    from PIL import Image, ImageDraw

    w, h = stylised[0].size
    label_h, side_w = 14, 64
    sheet = Image.new("RGB", (side_w + len(stylised) * w, label_h + 2 * h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, label_h + h // 2 - 5), "portrait", fill="black")
    draw.text((4, label_h + h + h // 2 - 5), "stylised", fill="black")
    for j, (a, b, label) in enumerate(zip(originals, stylised, labels, strict=True)):
        x = side_w + j * w
        draw.text((x + 2, 1), label[: max(4, w // 6)], fill="black")
        sheet.paste(a.resize((w, h)), (x, label_h))
        sheet.paste(b, (x, label_h + h))
    return sheet


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from phenogen import style as st
    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, to_jsonable
    from phenogen.errors import InputError
    from phenogen.evaluate.probe import load_probe
    from phenogen.fsio import atomic_write_json, check_output_dir, prepare_output_dir

    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"style.steps={args.steps}")
    if args.style_weight is not None:
        overrides.append(f"style.style_weight={json.dumps(args.style_weight)}")
    if args.style_colours:
        overrides.append("style.keep_colours=false")
    cfg: st.StyleConfig = load_sections({"style": st.StyleConfig}, args.config, overrides)["style"]
    cfg.check()
    # 1. every input checked before the probe loads or --out is touched
    check_output_dir(args.out, force=args.force)
    style_file = None if args.style.startswith("builtin:") else Path(args.style)
    check_inputs_outside(args.out, args.force, features=args.features, generated=args.generated,
                         data=args.data, style=style_file)  # fmt: skip
    probe_dir = find_probe(args.features)
    if style_file is None:
        name = args.style.removeprefix("builtin:")
        if name not in st.BUILTIN_STYLES:
            raise InputError(f"--style {args.style}: unknown builtin style; give one of "
                             f"{', '.join('builtin:' + s for s in st.BUILTIN_STYLES)} or an image file")  # fmt: skip
    else:
        _check_image(style_file, "--style")
    items = _portraits(args)
    species: dict[str, str] = {}
    if args.data is not None:
        from phenogen.data.dataset import load_dataset

        species = {r.record_id: r.species for r in load_dataset(args.data, check_images=False).records()}
    # 2. load, paint
    probe = load_probe(probe_dir)
    with Image.open(items[0][1]) as im:
        side = cfg.size or max(im.size)
    contents = []
    for _, p in items:
        with Image.open(p) as im:
            contents.append(st.to_tensor(im, side))
    content = torch.cat(contents)
    if style_file is None:
        style_image = st.builtin_style(name, size=max(2 * side, 128), seed=cfg.seed)
    else:
        with Image.open(style_file) as im:
            style_image = im.convert("RGB")
            style_image.load()
    style = st.to_tensor(style_image, max(2 * side, 128))
    bar = tqdm(total=cfg.steps, desc="stylize", unit="step", disable=args.no_progress)

    def tick(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    result, losses = st.stylize(probe.backbone, content, style, cfg, callback=tick)
    bar.close()
    n_cont = len(probe.spec.continuous)
    with torch.no_grad():
        before = probe(content)[:, :n_cont].numpy()
        after = probe(result)[:, :n_cont].numpy()
    shift = np.sqrt(((after - before) ** 2).mean(axis=1))
    if len(before) > 1:
        d = np.sqrt(((before[:, None] - before[None]) ** 2).mean(axis=2))
        between = float(d[np.triu_indices(len(before), 1)].mean())
    else:
        between = None
    # 3. write
    out = prepare_output_dir(args.out, "stylize", force=args.force)
    (out / "images").mkdir(exist_ok=True)
    stylised, originals, rows = [], [], []
    used: set[str] = set()
    for i, (rid, path) in enumerate(items):
        img = st.to_image(result[i])
        name_i = "".join(c if c.isalnum() or c in "-_." else "_" for c in rid) or f"image_{i}"
        while name_i in used:
            name_i += "_"
        used.add(name_i)
        img.save(out / "images" / f"{name_i}.png")
        stylised.append(img)
        originals.append(st.to_image(content[i]))
        rows.append({"id": rid, "species": species.get(rid), "source": str(path), "image": f"images/{name_i}.png",
                     "probe_shift": round(float(shift[i]), 4)})  # fmt: skip
    style_image.resize((style.shape[-1], style.shape[-2])).save(out / "style.png")
    _sheet(originals, stylised, [species.get(r, r) for r, _ in items]).save(out / "sheet.png")
    atomic_write_json(out / "style.json", {
        "config": to_jsonable(cfg), "style": args.style, "features": str(probe_dir),
        "losses": {k: round(v, 5) for k, v in losses.items()},
        "probe_shift_mean": round(float(shift.mean()), 4),
        "probe_shift_between_portraits": None if between is None else round(between, 4),
        "images": rows,
    })  # fmt: skip
    print(f"stylised {len(rows)} portrait(s) → {out}/images, sheet {out / 'sheet.png'}; the probe's read moved "
          f"{shift.mean():.2f} SD (different portraits: {'—' if between is None else f'{between:.2f}'} SD)",
          file=sys.stderr)  # fmt: skip
    return 0
