"""The bird renderer and the contact sheet: sizes, determinism, every trait visible, bird in frame, errors."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from phenogen.errors import InputError
from phenogen.sim.contact import LABEL_HEIGHT, contact_sheet
from phenogen.sim.render import (
    MARGIN,
    VISUAL_MAP,
    PhotoStyle,
    random_style,
    render_background,
    render_bird,
    render_photos,
    visual_params,
)
from phenogen.sim.traitspec import CONTINUOUS, DISCRETE, TRAIT_NAMES

ZERO = {name: 0.0 for name in TRAIT_NAMES}
EXTREMES = {  # the biggest, smallest and most sprawling birds the latent scale can ask for
    "all_high": {**{n: 6.0 for n in CONTINUOUS}, **{n: 1.0 for n in DISCRETE}},
    "all_low": {**{n: -6.0 for n in CONTINUOUS}, **{n: 0.0 for n in DISCRETE}},
    "long_straight_beak": {
        **{n: 6.0 for n in CONTINUOUS},
        "beak_curvature": -6.0,
        "crest_size": -6.0,
        **dict.fromkeys(DISCRETE, 1.0),
    },
    "big_short_legs": {**{n: 6.0 for n in CONTINUOUS}, "leg_length": -6.0, **dict.fromkeys(DISCRETE, 0.0)},
}
STYLES = {
    "canonical_no_perch": PhotoStyle(perch=False),
    "big_tilted_left": PhotoStyle(rotation=10, scale=1.1, dx=0.08, dy=-0.08, perch=False),
    "big_tilted_right_flipped": PhotoStyle(
        rotation=-10, scale=1.1, dx=-0.08, dy=0.08, flip=True, perch=False
    ),
    "pushed_to_corner": PhotoStyle(
        scale=1.1, dx=0.5, dy=0.5, flip=True, brightness=1.15, contrast=0.85, perch=False
    ),
}


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_size_and_mode(size):
    """Canonical renders and photos are RGB images of the requested size."""
    img = render_bird(ZERO, size)
    assert img.size == (size, size) and img.mode == "RGB"
    photo = render_photos(ZERO, 1, size, np.random.default_rng(0))[0]
    assert photo.size == (size, size) and photo.mode == "RGB"


def test_resolution_independent():
    """A 128 px render box-averaged to 64 px is close to the 64 px render (same drawing, finer grid)."""
    traits = {**ZERO, "eye_stripe": 1.0, "breast_spots": 1.0}
    small = _px(render_bird(traits, 64))
    big = _px(render_bird(traits, 128).reduce(2))
    assert np.abs(small - big).mean() < 4.0


def test_deterministic():
    """Same traits and style give byte-identical images; the canonical render ignores earlier photos."""
    rng = np.random.default_rng(3)
    traits = {**{n: float(rng.normal()) for n in CONTINUOUS}, **{n: 1.0 for n in DISCRETE}}
    style = random_style(np.random.default_rng(7))
    assert render_bird(traits, 64, style).tobytes() == render_bird(traits, 64, style).tobytes()
    canonical = render_bird(traits).tobytes()
    render_photos(traits, 3, 64, rng)
    assert (
        render_bird(traits, 64, None).tobytes()
        == canonical
        == render_bird(traits, 64, PhotoStyle()).tobytes()
    )


def test_photos_differ_and_follow_rng():
    """Photos of one bird differ from each other and from the canonical render; the rng fixes them."""
    photos = render_photos(ZERO, 4, 64, np.random.default_rng(0))
    canonical = _px(render_bird(ZERO))
    arrays = [_px(p) for p in photos]
    for i, a in enumerate(arrays):
        assert np.abs(a - canonical).mean() > 2.0
        for b in arrays[i + 1 :]:
            assert np.abs(a - b).mean() > 2.0
    again = render_photos(ZERO, 4, 64, np.random.default_rng(0))
    assert [p.tobytes() for p in photos] == [p.tobytes() for p in again]


@pytest.mark.parametrize("trait", TRAIT_NAMES)
def test_every_trait_changes_the_picture(trait):
    """Latent -2 vs +2 (binary: 0 vs 1) changes a visible number of pixels by a visible amount."""
    lo, hi = (-2.0, 2.0) if trait in CONTINUOUS else (0.0, 1.0)
    a, b = _px(render_bird({**ZERO, trait: lo})), _px(render_bird({**ZERO, trait: hi}))
    changed = (np.abs(a - b).max(axis=-1) > 20).sum()  # pixels, of 4096
    assert changed >= 10, f"{trait}: only {changed} pixels changed visibly"


@pytest.mark.parametrize("trait", CONTINUOUS)
def test_visual_mapping_is_monotone_and_bounded(trait):
    """Each visual parameter rises with its latent and stays inside its [lo, hi] for any latent."""
    r = VISUAL_MAP[trait]
    values = [visual_params({**ZERO, trait: x})[r.param] for x in (-50.0, -2.0, 0.0, 2.0, 50.0)]
    assert all(r.lo <= x <= r.hi for x in values)
    assert values == sorted(values) and values[1] < values[2] < values[3]


@pytest.mark.parametrize("traits_name", sorted(EXTREMES))
@pytest.mark.parametrize("style_name", sorted(STYLES))
def test_bird_stays_inside_the_frame(traits_name, style_name):
    """At extreme traits and poses the outer border of the picture is untouched background."""
    style = STYLES[style_name]
    size = 64
    img, bg = _px(render_bird(EXTREMES[traits_name], size, style)), _px(render_background(size, style))
    border = int(MARGIN * size) - 1  # pixels the bird must never reach
    ring = np.ones((size, size), bool)
    ring[border:-border, border:-border] = False
    assert np.array_equal(img[ring], bg[ring])
    assert np.abs(img - bg).max() > 50  # ... and the bird was drawn


def test_perch_is_drawn_under_the_bird():
    """The perch branch adds dark pixels below the bird and runs out of the frame."""
    with_perch, without = _px(render_bird(ZERO)), _px(render_bird(ZERO, style=PhotoStyle(perch=False)))
    rows = np.nonzero(np.abs(with_perch - without).max(axis=(1, 2)) > 30)[0]
    assert rows.size > 0 and rows.mean() > 32  # lower half
    assert np.abs(with_perch[:, 0] - without[:, 0]).max() > 30  # reaches the left edge


def test_flip_mirrors_the_bird():
    """A flipped render is the mirror image of the unflipped one, away from the asymmetric background."""
    a = _px(render_bird(ZERO, style=PhotoStyle(perch=False)))
    b = _px(render_bird(ZERO, style=PhotoStyle(perch=False, flip=True)))
    assert np.abs(a[:, ::-1] - b).mean() < 1.5 < np.abs(a - b).mean()


def test_missing_and_bad_traits_raise_input_error():
    """Missing, non-numeric and non-finite traits are named in an InputError."""
    traits = {k: v for k, v in ZERO.items() if k != "beak_depth"}
    with pytest.raises(InputError, match="missing beak_depth"):
        render_bird(traits)
    with pytest.raises(InputError, match="tail_length = 'long' is not a number"):
        render_bird({**ZERO, "tail_length": "long"})
    with pytest.raises(InputError, match="crest_size = nan is not finite"):
        visual_params({**ZERO, "crest_size": float("nan")})
    with pytest.raises(InputError, match="missing body_size"):
        render_photos({}, 0, 64, np.random.default_rng(0))
    with pytest.raises(InputError, match="image size"):
        render_bird(ZERO, size=8)


def test_photo_style_validation_and_random_ranges():
    """Out-of-range styles raise ValueError; random styles stay within the documented jitter."""
    with pytest.raises(ValueError, match="scale"):
        PhotoStyle(scale=2.0)
    with pytest.raises(ValueError, match="background"):
        PhotoStyle(background=((0, 0, 0), (0, 0, 300)))
    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(200)]
    assert all(abs(s.rotation) <= 10 and 0.9 <= s.scale <= 1.1 and abs(s.dx) <= 0.08 for s in styles)
    assert {s.flip for s in styles} == {True, False} and len({s.background for s in styles}) > 100
    assert dataclasses.replace(styles[0], perch=False).perch is False


def test_binary_traits_threshold_at_one_half():
    """Binary traits are drawn when >= 0.5, so probabilities can be rendered too."""
    assert visual_params({**ZERO, "wing_bars": 0.49})["wing_bars"] == 0.0
    assert visual_params({**ZERO, "wing_bars": 0.5})["wing_bars"] == 1.0


@pytest.mark.parametrize(
    ("n", "cols", "cell", "expected"), [(5, 8, 96, (480, 110)), (10, 4, 64, (256, 3 * 78))]
)
def test_contact_sheet_dimensions(n, cols, cell, expected):
    """The sheet is min(cols, n) cells wide and ceil(n / cols) labelled cells high, on white."""
    items = [(f"bird number {i} with a long name", render_bird(ZERO, 64)) for i in range(n)]
    sheet = contact_sheet(items, cols=cols, cell=cell)
    assert sheet.size == expected and sheet.mode == "RGB"
    assert sheet.getpixel((sheet.width - 1, sheet.height - 1)) == (255, 255, 255)
    label = np.asarray(sheet)[cell : cell + LABEL_HEIGHT, :cell]
    assert (label < 128).any()  # a caption was written


def test_contact_sheet_rejects_empty():
    with pytest.raises(InputError, match="at least one"):
        contact_sheet([])


def test_largest_birds_are_not_shrunk_to_fit():
    """At the most sprawling traits, scale 1.1 and 10° tilt, a larger body_size still draws a larger bird."""
    style = PhotoStyle(rotation=10, scale=1.1, perch=False)
    bg = _px(render_background(64, style))

    def bird_pixels(body_size: float) -> int:
        img = _px(render_bird({**EXTREMES["long_straight_beak"], "body_size": body_size}, 64, style))
        return int((np.abs(img - bg).max(axis=-1) > 8).sum())

    assert bird_pixels(6.0) > bird_pixels(2.0) * 1.04
