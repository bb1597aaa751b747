"""Contact sheets: a grid of named images on white, for looking at many renders or samples at once.

>>> from PIL import Image
>>> sheet = contact_sheet([("a", Image.new("RGB", (64, 64))), ("b", Image.new("RGB", (64, 64)))], cols=8, cell=96)
>>> sheet.size
(192, 110)
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from phenogen.errors import InputError

__all__ = ["contact_sheet", "LABEL_HEIGHT"]

LABEL_HEIGHT = 14  # pixels of the caption strip under each cell


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten ``text`` with a trailing "…" until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(
    items: list[tuple[str, Image.Image]],
    cols: int = 8,
    cell: int = 96,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """Lay ``(name, image)`` pairs out in a grid, each image fitted into a ``cell``×``cell`` square
    (aspect kept, centred) with its name in a :data:`LABEL_HEIGHT`-pixel strip underneath.

    The sheet is ``min(cols, len(items)) * cell`` wide and ``ceil(len(items) / cols) * (cell +
    LABEL_HEIGHT)`` high, RGB on white. Pass ``resample=Image.Resampling.NEAREST`` to see pixels.
    """
    if not items:
        raise InputError("contact_sheet needs at least one (name, image) pair")
    if cols < 1 or cell < 8:
        raise InputError(f"contact_sheet needs cols >= 1 and cell >= 8, got cols={cols}, cell={cell}")
    n_cols = min(cols, len(items))
    n_rows = math.ceil(len(items) / cols)
    sheet = Image.new("RGB", (n_cols * cell, n_rows * (cell + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (name, img) in enumerate(items):
        x0, y0 = (i % cols) * cell, (i // cols) * (cell + LABEL_HEIGHT)
        img = img.convert("RGB")
        f = min((cell - 2) / img.width, (cell - 2) / img.height)
        w, h = max(1, round(img.width * f)), max(1, round(img.height * f))
        sheet.paste(img.resize((w, h), resample), (x0 + (cell - w) // 2, y0 + (cell - h) // 2))
        label = _fit_label(draw, str(name), font, cell - 4)
        tw = draw.textlength(label, font=font)
        draw.text((x0 + (cell - tw) / 2, y0 + cell), label, fill=(30, 30, 30), font=font)
    return sheet
