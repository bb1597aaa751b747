"""Write a small BIOSCAN-5M-format tree whose photos differ by species, for the README's real-data example.

The layout is the official loader's (``ROOT/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv``
and ``ROOT/bioscan5m/images/cropped_256/<split>/<chunk>/<processid>.jpg``), with its columns. The content
is synthetic: barcodes evolved on a two-level tree (genera, then species, then specimens: a few percent
of sites each), and 256-px photos of insect-like drawings — the genus sets the body plan (segment count,
wing shape, antennae) and a colour palette that its species inherit with a small shift each, so
relatives look alike as they share DNA; species also differ in markings; specimens jitter pose and
lighting, on a pale background as BIOSCAN's cropped images are. No real specimen is in it; the species names are made up.

    python examples/make_bioscan_like.py --out example/bioscan --species 12 --per-species 8
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

COLUMNS = (
    "processid,sampleid,taxon,phylum,class,order,family,subfamily,genus,species,dna_bin,dna_barcode,"
    "country,province_state,coord-lat,coord-lon,image_measurement_value,area_fraction,scale_factor,"
    "inferred_ranks,split,index_bioscan_1M_insect,chunk"
).split(",")
GENERA = [("Culicidae", "Aedes"), ("Culicidae", "Culex"), ("Chironomidae", "Chironomus"), ("Chironomidae", "Tanytarsus"),
          ("Sciaridae", "Bradysia"), ("Phoridae", "Megaselia")]  # fmt: skip
EPITHETS = ["alba", "rubra", "nigra", "viridis", "aurea", "caerulea", "fusca", "pallida", "maculata", "ornata",
            "minor", "major", "borealis", "sylvatica", "vernalis", "montana"]  # fmt: skip


def _mutate(seq: list[str], rate: float, rng: random.Random) -> list[str]:
    out = list(seq)
    for i in range(len(out)):
        if rng.random() < rate:
            out[i] = rng.choice([b for b in "ACGT" if b != out[i]])
    return out


def _colour(hue: float) -> tuple[int, int, int]:
    r, g, b = (int(255 * (0.5 + 0.45 * math.cos(2 * math.pi * (hue + k / 3)))) for k in range(3))
    return r, g, b


def draw_insect(genus: int, look: dict, rng: random.Random, size: int = 256) -> Image.Image:
    """One photo: the genus' body plan in the species' colours, jittered per specimen."""
    bg = tuple(min(255, c + rng.randint(-8, 8)) for c in (232, 228, 214))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    cx, cy = size / 2 + rng.uniform(-10, 10), size / 2 + rng.uniform(-10, 10)
    segments = 2 + genus % 3
    length = 70 + 12 * (genus % 2)
    wing = (40 + 15 * (genus % 3), 18 + 8 * (genus % 2))
    for side in (-1, 1):  # wings, translucent
        box = [cx - wing[0] * (side < 0), cy - wing[1] - 10, cx + wing[0] * (side > 0), cy + wing[1] - 10]
        d.ellipse(box, fill=tuple(int(0.6 * c + 0.4 * b) for c, b in zip(look["wing"], bg, strict=True)))
    for s in range(segments):  # body segments along the axis
        y = cy - length / 2 + s * length / segments
        w = 26 - 4 * abs(s - segments / 2)
        d.ellipse(
            [cx - w / 2, y, cx + w / 2, y + length / segments + 6],
            fill=look["body"] if s % 2 == 0 else look["band"],
        )
    if look["spots"]:
        for _ in range(6):
            x, y = cx + rng.uniform(-8, 8), cy + rng.uniform(-length / 3, length / 3)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=look["band"])
    for side in (-1, 1):  # legs and antennae
        for k in range(3):
            y = cy - 10 + 12 * k
            d.line([cx, y, cx + side * (38 + 4 * k), y + 20], fill=(40, 35, 30), width=2)
        if genus % 2 == 0:
            d.line([cx, cy - length / 2, cx + side * 30, cy - length / 2 - 35], fill=(40, 35, 30), width=2)
    im = im.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR, fillcolor=bg)
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))


def write(root: Path, n_species: int = 12, per_species: int = 8, length: int = 658, seed: int = 0) -> Path:
    """Write the tree under ``root``; returns the metadata CSV."""
    rng = random.Random(seed)
    meta = root / "bioscan5m" / "metadata" / "csv" / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    meta.parent.mkdir(parents=True, exist_ok=True)
    ancestor = [rng.choice("ACGT") for _ in range(length)]
    n_genera = max(2, min(len(GENERA), math.ceil(n_species / 2)))
    genus_seqs = [_mutate(ancestor, 0.12, rng) for _ in range(n_genera)]
    # colours are inherited: a genus palette (hues of body, band, wings), each species shifted a little
    palettes = [[rng.random() for _ in range(3)] for _ in range(n_genera)]
    lines = [",".join(COLUMNS)]
    row_no = 0
    for s in range(n_species):
        g = s % n_genera
        family, genus = GENERA[g]
        species = f"{genus} {EPITHETS[s % len(EPITHETS)]}"
        sp_seq = _mutate(genus_seqs[g], 0.04, rng)
        hues = [h + rng.uniform(-0.08, 0.08) for h in palettes[g]]
        look = {
            "body": _colour(hues[0]),
            "band": _colour(hues[1]),
            "wing": _colour(hues[2]),
            "spots": rng.random() < 0.5,
        }
        split = "test" if s % 4 == 3 else "train"  # species-disjoint: every 4th species held out
        for _ in range(per_species):
            row_no += 1
            pid = f"BIOUG{row_no:05d}-22"
            chunk = f"{row_no % 7:x}"
            row = dict.fromkeys(COLUMNS, "")
            row.update(processid=pid, sampleid=f"CCDB-{row_no:05d}", taxon=species, phylum="Arthropoda",
                       order="Diptera", family=family, genus=genus, species=species, dna_bin=f"BOLD:AB{s:05d}",
                       dna_barcode="".join(_mutate(sp_seq, 0.003, rng)), country="Canada", province_state="Ontario",
                       image_measurement_value="12345.0", area_fraction="0.05", scale_factor="1.0",
                       inferred_ranks="0", split=split, chunk=chunk, **{"class": "Insecta", "coord-lat": "43.5",
                       "coord-lon": "-80.2"})  # fmt: skip
            lines.append(",".join(row[c] for c in COLUMNS))
            img = root / "bioscan5m" / "images" / "cropped_256" / split / chunk / f"{pid}.jpg"
            img.parent.mkdir(parents=True, exist_ok=True)
            draw_insect(g, look, rng).save(img, quality=90)
    meta.write_text("\n".join(lines) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--species", type=int, default=12)
    parser.add_argument("--per-species", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    meta = write(args.out, args.species, args.per_species, seed=args.seed)
    print(f"wrote {meta} and {args.species * args.per_species} photos")


if __name__ == "__main__":
    main()
