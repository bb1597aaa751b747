"""Counterfactuals — "what if this DNA were different?": mutated, interpolated and trait-swapped barcodes
painted at equal noise, and which barcode positions drive which written trait.

- :func:`mutate` substitutes ``n`` distinct sites (each to one of the three other bases, uniformly),
  anywhere, at one codon position or inside a region. The sites come from one random order per
  ``seed`` and a level takes a prefix of it, so the sites mutated at 5 % include those at 1 %: a row of
  levels drifts progressively away from the same barcode.
- :func:`interpolate` walks from barcode ``a`` to barcode ``b`` (equal length) by taking ``b``'s base at
  a growing, nested set of the sites where they differ.
- :func:`swap_trait` is a caption counterfactual: the caption a barcode writes with some traits set.
- :func:`counterfactual_grid` paints variants of one barcode with *the same noise* for every row
  (``shared_noise=True``), so what differs between rows is the DNA (or caption), not the draw.
- :func:`attribution` is in-silico mutagenesis (ISM) through the caption head: every position is
  substituted to each of its three other bases and the change of the written caption is averaged.
  Exact for whatever the head computes (k-mer profiles → LayerNorm → linear map: not linear in the
  bases, so no shortcut through the weights is exact) and model-agnostic; 3 × L barcodes, seconds.
  :func:`attribution_figure` draws it along the barcode, coloured by codon position.

Codon positions are counted from base 1 of the barcode (the frame the simulator's barcodes and COI
barcodes of the standard primers start in). Sites holding ``N`` are never mutated and score 0.

>>> seq = "ACGTACGTACGTACGTACGT"
>>> sum(a != b for a, b in zip(seq, mutate(seq, n=3, seed=1)))
3
>>> m = mutate(seq, n=3, where="codon2", seed=1)        # only second codon positions change
>>> [i % 3 for i in range(len(seq)) if m[i] != seq[i]]
[1, 1, 1]
>>> [n_differences(seq, s) for s in interpolate(seq, "T" * 20, 3)]
[0, 8, 15]
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from phenogen.errors import ConfigError, InputError, SequenceError

__all__ = [
    "WHERE",
    "Where",
    "Variant",
    "parse_where",
    "parse_swap",
    "eligible_sites",
    "mutation_order",
    "mutate",
    "interpolate",
    "n_differences",
    "swap_trait",
    "default_traits",
    "counterfactual_grid",
    "attribution",
    "attribution_figure",
]

WHERE = ("random", "codon1", "codon2", "codon3")
"""The named places :func:`mutate` draws sites from (or a ``(start, end)`` region, 1-based inclusive)."""

Where = str | tuple[int, int]
_BASES = "ACGT"
_STREAM_MUTATE, _STREAM_INTERPOLATE = 0x6D75, 0x696E  # separate random streams per use of a seed


@dataclass
class Variant:
    """One painted row of :func:`counterfactual_grid`.

    ``caption`` is what the row was painted from (written by its barcode, or given), by trait name
    (caption-head models; ``None`` otherwise); ``n_sites`` the sites where its barcode differs from the
    original; ``given`` whether the caption was given (a trait swap) rather than written.
    """

    label: str
    sequence: str
    n_sites: int
    caption: dict[str, float] | None
    given: bool = False
    images: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------ parsing
def parse_where(text: str | tuple[int, int]) -> Where:
    """``random``, ``codon1``/``codon2``/``codon3`` or a region ``START-END`` (1-based, inclusive).

    >>> parse_where("codon3"), parse_where("10-60")
    ('codon3', (10, 60))
    """
    if isinstance(text, tuple):
        start, end = text
    else:
        t = str(text).strip().lower()
        if t in WHERE:
            return t
        parts = t.split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise InputError(
                f"--where {text!r}: use random, codon1, codon2, codon3 or a region START-END (1-based, e.g. 1-300)"
            )
        start, end = int(parts[0]), int(parts[1])
    if not (isinstance(start, int) and isinstance(end, int)) or start < 1 or end < start:
        raise InputError(f"--where {text!r}: a region needs 1 <= START <= END (1-based, inclusive)")
    return (start, end)


def parse_swap(text: str) -> dict[str, float]:
    """``trait=value[,trait=value...]`` → ``{trait: value}`` (names are checked against a model later).

    >>> parse_swap("body_hue=1.5, wing_hue=-1")
    {'body_hue': 1.5, 'wing_hue': -1.0}
    """
    out: dict[str, float] = {}
    for part in str(text).split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name or not np.isfinite(number):
            raise InputError(f"--swap {text!r}: use trait=value with a finite number, e.g. body_hue=1.5")
        if name in out:
            raise InputError(f"--swap {text!r}: trait {name!r} is set twice")
        out[name] = number
    return out


# --------------------------------------------------------------------------------------- mutations
def eligible_sites(seq: str, where: Where = "random") -> np.ndarray:
    """0-based positions :func:`mutate` may change: A/C/G/T sites, at the codon position or in the region."""
    where = parse_where(where)
    pos = np.arange(len(seq))
    known = np.array([c in _BASES for c in seq], dtype=bool)
    if where == "random":
        keep = known
    elif isinstance(where, str):
        keep = known & (pos % 3 == int(where[-1]) - 1)
    else:
        start, end = where
        if end > len(seq):
            raise InputError(f"--where {start}-{end}: the barcode has {len(seq)} bp")
        keep = known & (pos >= start - 1) & (pos <= end - 1)
    return pos[keep]


def mutation_order(seq: str, where: Where = "random", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The order in which :func:`mutate` takes sites for ``seed``, and the base each site becomes.

    Returns ``(sites, new_bases)``: a permutation of :func:`eligible_sites` and, for each, a base other
    than the one there (uniform among the three). Depends on ``seed``, ``where`` and the barcode's
    length and N positions only, so barcodes of one length share the order.
    """
    sites = eligible_sites(seq, where)
    rng = np.random.default_rng([int(seed), _STREAM_MUTATE, len(seq)])
    order = rng.permutation(len(sites))
    shift = rng.integers(1, 4, size=len(seq))  # per position: 1..3 steps round ACGT, never the same base
    sites = sites[order]
    old = np.array([_BASES.index(seq[i]) for i in sites], dtype=np.int64)
    new = np.array(list(_BASES))[(old + shift[sites]) % 4] if len(sites) else np.array([], dtype="<U1")
    return sites, new


def mutate(
    seq: str, fraction: float | None = None, *, n: int | None = None, where: Where = "random", seed: int = 0
) -> str:
    """``seq`` with ``n`` distinct sites substituted (or ``round(fraction × eligible sites)``).

    Parameters
    ----------
    seq : str
        A cleaned barcode (upper case; ``N`` sites are never chosen).
    fraction : float, optional
        Share of the *eligible* sites to mutate, in [0, 1] (of the whole barcode for ``random``, of the
        codon position's sites for ``codonK``, of the region's for a region).
    n : int, optional
        Exact number of sites instead of ``fraction`` (give exactly one of the two).
    where : ``"random"``, ``"codon1"``, ``"codon2"``, ``"codon3"`` or ``(start, end)``
        Where sites are drawn (a region is 1-based, inclusive; ``"START-END"`` text is accepted).
    seed : int
        Picks the site order and the new bases; for one seed, a larger level mutates a superset of the
        sites of a smaller one, to the same bases (nested prefixes of :func:`mutation_order`).

    >>> s = "ACGT" * 30
    >>> a, b = mutate(s, 0.05, seed=3), mutate(s, 0.2, seed=3)
    >>> all(x == y for x, y, z in zip(a, b, s) if x != z)     # every 5 % change is also in the 20 % one
    True
    >>> mutate(s, 0.0) == s
    True
    """
    if (fraction is None) == (n is None):
        raise InputError("mutate: give either a fraction of sites or a number n of sites")
    sites, new = mutation_order(seq, where, seed)
    if n is None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise InputError(f"mutate: fraction {fraction} is outside [0, 1] (5 % is 0.05)")
        n = int(round(float(fraction) * len(sites)))
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InputError(f"mutate: n = {n!r}; give a whole number of sites >= 0")
    if n > len(sites):
        raise InputError(f"mutate: {n} sites asked, {where!r} holds {len(sites)} mutable (A/C/G/T) sites")
    out = list(seq)
    for i, b in zip(sites[:n], new[:n], strict=True):
        out[i] = str(b)
    return "".join(out)


def n_differences(a: str, b: str) -> int:
    """Sites where two barcodes of equal length differ (extra length counts as differences)."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def interpolate(a: str, b: str, steps: int, *, seed: int = 0) -> list[str]:
    """``steps`` barcodes from ``a`` (first) to ``b`` (last) taking ``b``'s base at a growing share of
    the sites where they differ: barcode ``i`` takes the first ``round(i / (steps - 1) × D)`` of one
    random order of the ``D`` differing sites, so each barcode holds every change of the one before.

    The barcodes must have equal length (an unaligned pair has no site-by-site path; align them, e.g.
    ``phenogen ancestors`` writes ``alignment.fasta``, and give gap-free sequences of one length).

    >>> interpolate("AAAA", "AACC", 3)
    ['AAAA', 'AACA', 'AACC']
    """
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:
        raise InputError(f"interpolate: steps = {steps!r}; give at least 2 (the two ends)")
    if len(a) != len(b):
        raise SequenceError(
            f"interpolate: the barcodes are {len(a)} and {len(b)} bp; interpolation swaps bases site by "
            "site and needs barcodes of equal length (aligned, without gaps)"
        )
    differ = np.array([i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y], dtype=np.int64)
    rng = np.random.default_rng([int(seed), _STREAM_INTERPOLATE, len(a)])
    differ = differ[rng.permutation(len(differ))]
    out = []
    for i in range(steps):
        k = int(round(i / (steps - 1) * len(differ)))
        seq = list(a)
        for site in differ[:k]:
            seq[site] = b[site]
        out.append("".join(seq))
    return out


# ----------------------------------------------------------------------------------- trait swaps
def swap_trait(model, barcode: str, values: Mapping[str, float]) -> dict[str, float]:
    """The caption ``barcode`` writes with the traits of ``values`` set: ``{trait: value}``, all traits.

    Paint it with ``model.paint({id: barcode}, captions={id: swap_trait(...)})`` or as a variant of
    :func:`counterfactual_grid`. ``model`` is an :class:`phenogen.api.Model` with the caption head.

    >>> # swap_trait(model, seq, {"body_hue": 1.5})["body_hue"]
    >>> # 1.5
    """
    if not values:
        raise InputError("swap_trait: give at least one trait=value")
    model._need_captions("a trait swap")
    names = model.caption_names
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(
            f"--swap: unknown trait(s) {', '.join(unknown)}; the model writes {', '.join(names)}"
        )
    caption = next(iter(model.describe({"barcode": barcode}).values()))
    for name, value in values.items():
        v = float(value)
        if not np.isfinite(v):
            raise InputError(f"--swap {name}={value}: not a finite number")
        caption[name] = v
    return caption


def default_traits(names: Sequence[str]) -> list[str]:
    """The traits printed beside grid rows and drawn by default: the hue and lightness ones, else the first 4."""
    chosen = [n for n in names if "hue" in n or "lightness" in n]
    return chosen or list(names)[:4]


# -------------------------------------------------------------------------------------- the grid
def counterfactual_grid(
    model,
    barcode: str,
    variants: Sequence[tuple[str, str | Mapping[str, float]]],
    *,
    images: int = 2,
    seed: int = 0,
    traits: Sequence[str] | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    scheduler: str | None = None,
    batch_size: int = 16,
    scale: int = 1,
    progress: Callable[[int, int], None] | None = None,
):
    """Paint variants of one barcode at equal noise: one row per variant, ``images`` columns.

    Parameters
    ----------
    model : phenogen.api.Model
    barcode : str
        The original barcode (a caption variant is painted under it).
    variants : list of (label, barcode or caption)
        A barcode (``str``), or a caption ``{trait: value}`` (traits not named: what ``barcode``
        writes; e.g. :func:`swap_trait`). Labels name the rows and must be unique.
    images, seed
        Images per row; every row gets the noise of ``(seed, k)`` (``shared_noise=True``), so row
        differences come from the DNA or the caption alone.
    traits : list of str, optional
        Caption values printed under each label (default :func:`default_traits`; ``[]``: none).
    steps, guidance_scale, scheduler
        ``None``: the settings stored with the model.
    scale : int
        Images are enlarged this many times in the sheet (nearest neighbour; ``rows`` keep the originals).
    progress : callable(done, total), optional
        Called after every denoising step.

    Returns
    -------
    sheet : PIL.Image
        The labelled grid.
    rows : list of Variant
        Per row: label, barcode, sites differing from ``barcode``, caption painted from, images.
    """
    if not variants:
        raise InputError("counterfactual_grid: no variants to paint")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 8:
        raise InputError(f"counterfactual_grid: scale = {scale!r}; give a whole number 1-8")
    labels = [str(label) for label, _ in variants]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InputError(f"counterfactual_grid: variant label(s) {', '.join(dupes[:5])} appear twice")
    [(_, original)] = model.check({"original": barcode})
    records, captions = {}, {}
    for label, v in variants:
        if isinstance(v, str):
            records[str(label)] = v
        elif isinstance(v, Mapping):
            records[str(label)] = original
            captions[str(label)] = dict(v)
        else:
            raise InputError(f"variant {label!r}: give a barcode (text) or a caption {{trait: value}}")
    portraits = model.paint(
        records, images=images, steps=steps, guidance_scale=guidance_scale, scheduler=scheduler, seed=seed,
        shared_noise=True, captions=captions or None, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    names = model.caption_names
    shown = default_traits(names) if traits is None else list(traits)
    unknown = sorted(set(shown) - set(names))
    if unknown and names:
        raise InputError(f"traits {', '.join(unknown)}: not among the model's ({', '.join(names)})")
    rows = []
    for label in labels:
        seq = portraits.sequences.get(label, records[label])
        rows.append(Variant(
            label, seq, n_differences(original, seq),
            portraits.captions[label] if portraits.captions else None, label in captions, portraits.images[label],
        ))  # fmt: skip
    if scale != 1:
        from dataclasses import replace

        from PIL import Image

        big = {k: [im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) for im in v]
               for k, v in portraits.images.items()}  # fmt: skip
        portraits = replace(portraits, images=big)
    return portraits.grid(traits=shown if names else ()), rows


# ------------------------------------------------------------------------------------ attribution
def _conditioner(model):
    cond = getattr(getattr(model, "pipeline", None), "conditioner", None) or model
    head = getattr(getattr(cond, "config", None), "head", None)
    if head != "caption":
        where = getattr(model, "path", "this model")
        raise ConfigError(
            f"attribution needs a caption-head model (image.cond_head = 'caption'): it scores how each "
            f"position moves the caption the barcode writes; {where} has the '{head}' head"
        )
    return cond


def attribution(model, barcode: str, *, signed: bool = False, batch_size: int = 512) -> np.ndarray:
    """Which barcode positions drive which written trait: ``(n_traits, L)`` float64, by in-silico mutagenesis.

    Entry ``[t, i]`` is the mean over the three substitutions of position ``i`` of the change of trait
    ``t`` in the caption the barcode writes (``|Δ|`` by default; the signed mean with ``signed=True``),
    in caption units (standardised traits). ``N`` sites score 0. Computed through the conditioner's
    :meth:`~phenogen.diffusion.conditioning.DNAConditioner.caption_matrix` on the ``3 L`` single mutants.

    ``model``: a :class:`phenogen.api.Model` (or a caption-head ``DNAConditioner``); other heads are a
    :class:`~phenogen.errors.ConfigError`. Rows follow ``model.caption_names``.
    """
    cond = _conditioner(model)
    if hasattr(model, "check"):
        [(_, barcode)] = model.check({"barcode": barcode})
    seq = str(barcode)
    if not seq:
        raise SequenceError("attribution: empty barcode")
    sites = [i for i, c in enumerate(seq) if c in _BASES]
    mutants, where = [], []
    for i in sites:
        for b in _BASES:
            if b != seq[i]:
                mutants.append(seq[:i] + b + seq[i + 1 :])
                where.append(i)
    ref = cond.caption_matrix([seq])[0]  # (T,)
    delta = (
        np.concatenate(
            [cond.caption_matrix(mutants[a : a + batch_size]) for a in range(0, len(mutants), batch_size)]
        )
        - ref
    )  # (3 L, T)
    if not signed:
        delta = np.abs(delta)
    out = np.zeros((len(ref), len(seq)))
    np.add.at(out.T, np.asarray(where, dtype=np.int64), delta / 3.0)
    return out


def attribution_figure(
    attr: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    traits: Sequence[str] | None = None,
    record_id: str = "",
    barcode: str | None = None,
    marks: Sequence[int] = (),
    marks_label: str = "marked sites",
) -> Path:
    """Draw :func:`attribution` along the barcode: one panel per trait, x = position (bp), one bar per
        site coloured by codon position (1/2/3), a 15-bp running mean in black, a tick every 30 bp (minor
    ticks every codon); written atomically as PNG.

        ``traits``: the panels (default :func:`default_traits`); ``barcode`` marks ``N`` sites (not scored);
    ``marks`` (1-based positions, e.g. the sites that vary among the training barcodes) are drawn as a
    rug under each panel, named ``marks_label`` in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phenogen.fsio import atomic_write_bytes

    attr = np.asarray(attr, dtype=np.float64)
    names = list(names)
    if attr.ndim != 2 or attr.shape[0] != len(names):
        raise InputError(f"attribution_figure: {attr.shape} values for {len(names)} trait names")
    shown = default_traits(names) if traits is None else list(traits)
    unknown = [t for t in shown if t not in names]
    if unknown or not shown:
        raise InputError(
            f"attribution_figure: trait(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(names)}"
        )
    length = attr.shape[1]
    x = np.arange(1, length + 1)
    colours = np.array(["#d62728", "#1f77b4", "#7f7f7f"])[(x - 1) % 3]
    signed = bool((attr < 0).any())
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 1.7 * len(shown) + 0.9), sharex=True, squeeze=False)
    for ax, trait in zip(axes[:, 0], shown, strict=True):
        y = attr[names.index(trait)]
        ax.bar(x, y, width=1.0, color=colours, linewidth=0)
        if length >= 15:  # the trend: a 15-bp (5-codon) running mean
            ax.plot(x, np.convolve(y, np.ones(15) / 15, mode="same"), color="black", linewidth=0.8)
        ax.set_ylabel(trait, rotation=0, ha="right", va="center", fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
        if barcode is not None:
            ns = [i + 1 for i, c in enumerate(barcode) if c not in _BASES]
            ax.plot(ns, np.zeros(len(ns)), "|", color="orange", markersize=6)
        if len(marks):
            top = float(np.max(attr[[names.index(t) for t in shown]])) or 1.0
            ax.plot(list(marks), np.full(len(marks), -0.06 * top), "|", color="black", markersize=4)
        ax.set_xticks(np.arange(0, length + 1, 30), minor=False)
        ax.set_xticks(np.arange(0, length + 1, 3), minor=True)
        ax.tick_params(axis="x", which="minor", length=2)
        ax.set_xlim(0.5, length + 0.5)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlabel("position in barcode (bp); bars coloured by codon position")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    axes[0, 0].legend(
        handles=[Patch(color=c, label=f"codon position {k}") for k, c in enumerate(["#d62728", "#1f77b4", "#7f7f7f"], 1)]
        + ([Line2D([], [], marker="|", linestyle="", color="black", label=marks_label)] if len(marks) else []),
        ncol=4, fontsize=8, loc="upper right", frameon=False,
    )  # fmt: skip
    what = "mean signed" if signed else "mean |Δ|"
    fig.suptitle(
        f"In-silico mutagenesis of {record_id or 'the barcode'}: {what} written caption value per substitution "
        "(caption units)", fontsize=10,
    )  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
