"""One self-contained HTML page for a phenogen run: every image and figure embedded as base64 PNG.

Any run directory works: the demo's layout below, or folders of one's choosing that the commands were
run into (``RUN/`` holding them, or an ``evaluate --out`` itself) — :class:`RunParts` finds each part
from the paths the commands recorded in their ``config.json``. The demo's layout (every part optional —
a missing part is shown as "not run")::

    RUN/data/           dataset (phenogen simulate): manifest, images, tree.nwk, contact_sheet.png
    RUN/lm/             DNA language model (phenogen train-lm): losses.json, loss_curve.png
    RUN/lm_eval/        DNA model evaluation (phenogen evaluate-dna): metrics.json, identity_by_epoch.png,
                        bits_per_base.png, sample_report.png (also looked for under RUN/lm/)
    RUN/image/          image model (phenogen train-image): losses.json, loss_curve.png
    RUN/generated/      phenogen generate output: generated.tsv, images/, grid.png
    RUN/eval/           phenogen evaluate output: metrics.json, targets.tsv, trait_rmse.png, probe_r2.png
    RUN/sweeps/         guidance.png, steps.png (guidance-scale and sampling-steps grids), other PNGs
    RUN/ancestors/      phenogen ancestors output: targets.json, identity_vs_depth.png (shown when present)
    RUN/families/NAME/  other generators on the same targets (bench/generator_families.sh: model/, generated/,
                        eval/; or a whole demo run): one table beside this run (:mod:`phenogen.report.families`)
    RUN/report.html     this report

Sections: headline numbers; metric table with baselines; truth vs generated side by side per split;
the generator families side by side (when ``RUN/families/`` exists);
the species tree with thumbnails; training curves and the DNA model's identity-by-epoch figure;
sweeps; the sequence side. Figures are looked up by file name, so a partial or older run still
gives a readable page.

Hostile or broken inputs: ``eval/metrics.json`` is read with :func:`phenogen.fsio.read_json` and its
shape checked (one :class:`~phenogen.errors.InputError` naming the field otherwise). Every image is
resolved and embedded only when it lies inside the run directory or the dataset directory (symlinks
followed; a dataset imported with ``image_mode = "symlink"`` shows its linked photos as notes) and
decodes completely; any other image is *skipped with a visible note*
inline and listed under "Files not embedded" — a corrupt PNG never stops the page. Every string
from a file (split, method, species, trait names, any metrics string) is HTML-escaped.
"""

from __future__ import annotations

import base64
import contextvars
import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phenogen.api import RUN_LAYOUT  # one run layout for the API, the app and the report
from phenogen.errors import InputError, PhenogenError

__all__ = ["build_report", "RUN_LAYOUT"]

_SPLIT_TITLES = {
    "heldout": "Held-out living species",
    "extinct": "Extinct species",
    "ancestor": "Ancestors (internal nodes)",
    "train": "Training species (fit check: species the model was trained on)",
}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;line-height:1.45;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{margin-bottom:6px}.sub{color:#666;margin-top:0}.missing{color:#a33;font-style:italic}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}tr.gen td{background:#fff3f0;font-weight:600}
.pairs td,.pairs th{text-align:center;vertical-align:middle}.pairs img{margin:1px;border:1px solid #ccc}
.pairs img.g{border:2px solid #d62728}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px;background:#fafafa}
.card b{font-size:22px;display:block}ul.verdict{font-size:15px;margin:4px 0 12px}.fig{max-width:100%;border:1px solid #eee}.small{font-size:12px;color:#666}
"""


@dataclass
class _Embedder:
    """Which image files the page may embed (resolved ``roots``) and the ones it skipped, with why."""

    roots: list[Path] | None = None  # None: no containment check (a section rendered on its own)
    skipped: list[str] = field(default_factory=list)

    def read(self, path: Path) -> tuple[bytes, str]:
        """The bytes and MIME type of an image to embed; PhenogenError when outside the roots or undecodable."""
        from PIL import Image

        from phenogen.data.dataset import check_image

        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise InputError(f"{path}: cannot be resolved ({exc})") from None
        if self.roots is not None and not any(real.is_relative_to(r) for r in self.roots):
            raise InputError(f"{path}: lies outside the run and dataset directories (resolves to {real})")
        check_image(real, "image", error=InputError)
        try:
            with Image.open(real) as im:
                fmt = im.format
                if fmt in ("PNG", "JPEG"):
                    return real.read_bytes(), f"image/{fmt.lower()}"
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                return buf.getvalue(), "image/png"
        except Exception as exc:  # noqa: BLE001 - PIL raises many types; the file changed since the check
            raise InputError(f"{path}: cannot be decoded ({type(exc).__name__})") from None

    def open(self, path: Path) -> Any:
        """The decoded RGB PIL image at ``path`` (same checks as :meth:`read`), or None with a note."""
        from PIL import Image

        try:
            data, _ = self.read(path)
            with Image.open(io.BytesIO(data)) as im:
                return im.convert("RGB")
        except PhenogenError as exc:
            self.skipped.append(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - see read()
            self.skipped.append(f"{path}: cannot be decoded ({type(exc).__name__})")
            return None


_EMBED: contextvars.ContextVar[_Embedder | None] = contextvars.ContextVar(
    "phenogen_report_embed", default=None
)


def _embedder() -> _Embedder:
    emb = _EMBED.get()
    return emb if emb is not None else _Embedder()


def _data_uri(src: bytes | Path | Any) -> str:
    """PNG bytes, an image file (checked by :class:`_Embedder`) or a PIL image → ``data:`` URI."""
    if isinstance(src, Path):
        data, mime = _embedder().read(src)
    elif isinstance(src, bytes | bytearray):
        data, mime = bytes(src), "image/png"
    else:  # PIL image
        buf = io.BytesIO()
        src.save(buf, format="PNG")
        data, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(src: bytes | Path | Any, *, width: int | None = None, title: str = "", cls: str = "") -> str:
    """An ``<img>`` with the image embedded; a file that may not be embedded becomes a visible note."""
    w = f' width="{int(width)}"' if width else ""
    c = f' class="{html.escape(cls)}"' if cls else ""
    try:
        uri = _data_uri(src)
    except PhenogenError as exc:
        note = str(exc)
        _embedder().skipped.append(note)
        return f'<span class="missing" title="{html.escape(note)}">[image not embedded: {html.escape(note)}]</span>'
    return f'<img src="{uri}"{w}{c} alt="{html.escape(title)}" title="{html.escape(title)}">'


def _e(value: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(value))


def _missing(what: str, where: Path) -> str:
    return f'<p class="missing">{html.escape(what)}: not run (looked for {html.escape(str(where))})</p>'


def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    """A number as text (``—`` for None); anything else escaped as is (never an exception)."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, int) and abs(v) >= 1e300):
        return _e(v)[:60]
    if not math.isfinite(v):
        return _e(v)
    return f"{100 * v:.0f}%" if pct else f"{v:.{digits}f}"


class RunParts:
    """Where each part of a run lives (:data:`RUN_LAYOUT` keys → directories).

    A demo run (``phenogen demo --out RUN``) has them at ``RUN/<part>``. Any other run directory — the
    commands run one by one into folders of one's choosing — is read from what its commands recorded:
    every ``config.json`` in ``RUN`` and its sub-directories names its command's section (``evaluate``,
    ``generate``, ``image``, ``lm``), and an evaluation records its dataset, generated images and sequence
    metrics, a ``generate`` its model (``train-image``'s ``OUT/pipeline``), a ``train-image`` its DNA
    model (``image.lm_model``). ``RUN`` may also be an ``evaluate --out`` itself. Recorded paths are
    tried as written (relative to the working directory) and relative to ``RUN`` and its parents.
    """

    def __init__(self, root: Path, found: dict[str, Path]):
        self.root, self.found = root, found

    def __getitem__(self, key: str) -> Path:
        """The part's directory; one that was not found is ``RUN/<part>`` (shown as "not run")."""
        return self.found.get(key, self.root / RUN_LAYOUT[key])

    def __contains__(self, key: str) -> bool:
        return key in self.found

    @property
    def dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.found.values()))

    @classmethod
    def resolve(cls, root: Path) -> RunParts:
        found = {k: root / d for k, d in RUN_LAYOUT.items() if (root / d).is_dir()}
        if found and (root / RUN_LAYOUT["eval"] / "metrics.json").is_file():
            return cls(root, found)  # the demo's layout
        configs = {}
        if (root / "metrics.json").is_file():  # an evaluate --out itself
            found.setdefault("eval", root)
        for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
            doc = _read_config(d / "config.json")
            if doc is not None:
                configs[d] = doc
            if (d / "dataset.json").is_file():
                found.setdefault("data", d)
        for d, doc in configs.items():
            for section, key in (("evaluate", "eval"), ("generate", "generated"), ("image", "image"),
                                 ("lm", "lm")):  # fmt: skip
                if isinstance(doc.get(section), dict):
                    found.setdefault(key, d)
        links = [("eval", "data", "data", False), ("eval", "generated", "generated", False),
                 ("eval", "sequence_metrics", "lm_eval", True), ("generated", "model", "image", False)]  # fmt: skip
        for _ in range(2):  # an evaluation leads to its images, those to their model, that to its DNA model
            for source, field_name, key, parent in links:
                doc = _read_config(found[source] / "config.json") if source in found else None
                target = _locate(doc.get(field_name) if doc else None, root)
                if target is not None and key not in found:
                    target = target.parent if parent or target.is_file() else target
                    if key == "image" and target.name == "pipeline":
                        target = target.parent
                    found[key] = target
            image_doc = _read_config(found["image"] / "config.json") if "image" in found else None
            lm = _locate(((image_doc or {}).get("image") or {}).get("lm_model"), root)
            if lm is not None and "lm" not in found:
                found["lm"] = lm.parent if lm.name == "model" else lm
        return cls(root, found)


def _read_config(path: Path) -> dict | None:
    """A command's ``config.json`` as a dict, or None (missing, unreadable: the part is just not found)."""
    import json

    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _locate(recorded: Any, root: Path) -> Path | None:
    """A path a command recorded, found as written or relative to ``root`` and its parents."""
    if not isinstance(recorded, str) or not recorded or len(recorded) > 4096:
        return None
    given = Path(recorded.removeprefix("dataset "))
    for base in (Path("."), root, *root.resolve().parents):
        candidate = given if given.is_absolute() else base / given
        if candidate.exists():
            return candidate
        if given.is_absolute():
            break
    return None


def _find(parts: RunParts, *names: str, under: tuple[str, ...] = ("lm_eval", "lm", "eval")) -> Path | None:
    """First existing <part>/<name> for the parts ``under``, then anywhere below the run's directories
    (sorted, for determinism)."""
    for name in names:
        for key in under:
            p = parts[key] / name
            if p.is_file():
                return p
        if (parts.root / name).is_file():
            return parts.root / name
    for name in names:
        for d in [parts.root, *parts.dirs]:
            hits = sorted(d.rglob(name)) if d.is_dir() else []
            if hits:
                return hits[0]
    return None


# ---------------------------------------------------------------- sections
def _photo_headline(metrics: dict[str, Any] | None) -> str:
    """Cards of the photo scores' headline (``metrics["photo"]["headline"]``): retrieval, similarity, KID."""
    h = ((metrics or {}).get("photo") or {}).get("headline")
    if not isinstance(h, dict):
        return ""
    by_row = h.get("top5_by_row") if isinstance(h.get("top5_by_row"), dict) else {}
    sim = h.get("similarity_by_row") if isinstance(h.get("similarity_by_row"), dict) else {}
    agree = h.get("taxon_agreement") if isinstance(h.get("taxon_agreement"), dict) else {}
    cards = [
        ("photo top-1 / 5 / 100, generated", " / ".join(_fmt(h.get(k), True) for k in ("top1", "top5", "top100")),
         "chance " + " / ".join(_fmt(h.get(f"chance_{k}"), True) for k in ("top1", "top5", "top100"))),
        ("top-5: truth / nearest / random", " / ".join(_fmt(by_row.get(k), True) for k in ("truth", "nearest", "random")),
         "real photos of the target = the ceiling"),
        ("image–barcode similarity", _fmt(sim.get("generated")), f"truth {_fmt(sim.get('truth'))}, random {_fmt(sim.get('random'))}"),
        ("taxonomic agreement", ", ".join(f"{_e(k)} {_fmt(v, True)}" for k, v in agree.items()) or "—", "predicted vs the target's"),
    ]  # fmt: skip
    body = "".join(
        f'<div class="card">{html.escape(a)}<b>{b}</b><span class="small">{c}</span></div>'
        for a, b, c in cards
    )
    return (
        f'<p>Photo scores ({_e(h.get("split", "?"))}; no traits needed):</p><div class="cards">{body}</div>'
    )


def _photo_tables(metrics: dict[str, Any] | None) -> str:
    """The per-split photo tables (``splits[S].photo``): retrieval, similarity, FID/KID, taxonomy."""
    out = []
    for split, block in ((metrics or {}).get("splits") or {}).items():
        photo = block.get("photo") if isinstance(block, dict) else None
        if not isinstance(photo, dict) or not isinstance(photo.get("methods"), dict):
            continue
        heads = sorted({h for r in photo["methods"].values() if isinstance(r, dict)
                        for h in (r.get("taxon_agreement") or {})})  # fmt: skip
        head_cells = "".join(f"<th>{_e(h)}</th>" for h in heads)
        rows = [f"<h3>{_e(_SPLIT_TITLES.get(split, split))}: photo scores "
                f"({_fmt(photo.get('n_reference_photos'), digits=0)} reference photos)</h3>",
                '<table><tr><th class="l">method</th><th>top-1</th><th>top-5</th><th>top-100</th><th>mean rank</th>'
                f"<th>similarity</th><th>FID</th><th>KID</th>{head_cells}<th class=\"l\">note</th></tr>"]  # fmt: skip
        for method, r in photo["methods"].items():
            if not isinstance(r, dict):
                continue
            agree = r.get("taxon_agreement") if isinstance(r.get("taxon_agreement"), dict) else {}
            rows.append(
                f'<tr class="{"gen" if method == "generated" else ""}"><td class="l">{_e(method)}</td>'
                + "".join(f"<td>{_fmt(r.get(k), True)}</td>" for k in ("top1", "top5", "top100"))
                + f"<td>{_fmt(r.get('mean_rank'), digits=1)}</td><td>{_fmt(r.get('similarity'))}</td>"
                f"<td>{_fmt(r.get('fid'), digits=2)}</td><td>{_fmt(r.get('kid_mean'), digits=4)}</td>"
                + "".join(f"<td>{_fmt(agree.get(h), True)}</td>" for h in heads)
                + f'<td class="l">{html.escape(str(r.get("note") or ""))}</td></tr>'
            )
        rows.append("</table>")
        gen = photo["methods"].get("generated") or {}
        if isinstance(gen, dict) and gen.get("chance_top5") is not None:
            rows.append(
                f'<p class="small">chance: top-1 {_fmt(gen.get("chance_top1"), True)}, top-5 '
                f"{_fmt(gen.get('chance_top5'), True)}, top-100 {_fmt(gen.get('chance_top100'), True)}</p>"
            )
        out.extend(rows)
    if not out:
        return ""
    intro = (
        "<p><b>Photo scores</b> (no traits needed; the same for real photos): a small CNN trained on the training "
        "photos (species and taxonomic heads) gives the features; DNA→image retrieval success is measured with "
        "a contrastive DNA–image model trained on the training pairs only; <code>truth</code> = real photos of "
        "the target species (the ceiling), <code>nearest</code> = the closest training relative's photos, "
        "<code>random</code> = a random training species'; similarity = mean cosine of an image and its barcode "
        "in that model's space; taxonomic agreement = the classifier's genus / family / order of the image vs "
        "the target's.</p>"
    )
    return intro + "".join(out)


def _headline(metrics: dict[str, Any] | None) -> str:
    if not metrics or not metrics.get("headline"):
        return _photo_headline(metrics)
    from phenogen.evaluate.steps import rmse_text

    h = metrics["headline"]
    rmse = h["trait_rmse"]
    generated_row = metrics.get("splits", {}).get(h["split"], {}).get("methods", {}).get("generated")
    cards = [
        (
            "trait RMSE, generated",
            rmse_text(generated_row) if generated_row else _fmt(rmse.get("generated")),
            f"split {_e(h['split'])}",
        ),
        ("vs mean / random", f"{_fmt(rmse.get('mean'))} / {_fmt(rmse.get('random'))}", "DNA-blind baselines"),
        (
            "nearest / oracle / truth",
            " / ".join(_fmt(rmse.get(k)) for k in ("nearest", "oracle", "truth")),
            "",
        ),
        ("top-5 success", _fmt(h.get("top5"), True), f"chance {_fmt(h.get('chance_top5'), True)}"),
    ]
    named = h.get("top1_traits") or {}
    if any(v is not None for v in named.values()):
        cards.append((
            "named from the trait table, top-1",
            " / ".join(_fmt(named.get(k), True) for k in ("generated", "oracle", "truth")),
            "generated / oracle vector / own photos",
        ))  # fmt: skip
    if rmse.get("oracle_render") is not None or rmse.get("mean_render") is not None:
        cards.insert(3, ("mean / oracle, rendered", f"{_fmt(rmse.get('mean_render'))} / {_fmt(rmse.get('oracle_render'))}",
                         "the vectors drawn as pictures and read by the probe"))  # fmt: skip
    body = "".join(
        f'<div class="card">{html.escape(a)}<b>{b}</b><span class="small">{c}</span></div>'
        for a, b, c in cards
    )
    verdict = []
    if h.get("beats_mean") is not None:
        verdict.append("beats the mean baseline" if h["beats_mean"] else "does not beat the mean baseline")
    if h.get("ratio_to_random") is not None:
        verdict.append(f"{h['ratio_to_random']:.2f} × random's error")
    if h.get("top5_over_chance") is not None:
        verdict.append(f"top-5 success {h['top5_over_chance']:.1f} × chance")
    lines = "".join(f"<li>{html.escape(v)}</li>" for v in verdict_lines(metrics))
    return (
        f'<ul class="verdict">{lines}</ul><div class="cards">{body}</div>'
        f"<p>Generated images ({_e(h['split'])}): {_e('; '.join(verdict))}.</p>" + _photo_headline(metrics)
    )


def verdict_lines(metrics: dict[str, Any] | None) -> list[str]:
    """One plain sentence per scored split: generated against ``nearest``, ``mean`` and ``oracle`` at once,
    and against the mean and oracle vectors rendered as pictures (``mean_render`` / ``oracle_render``, which
    pay the probe's error as every image does) when the metrics have them.

    ``"held-out living species: generated 0.80 ± 0.01 — beats nearest (0.84) and mean (1.07); 1.18 × oracle
    (0.68); 1.27 × truth; rendered: beats mean (1.10), 1.00 × oracle (0.80)"``. Shared by the report's first screen and the demo's printed headline.
    """
    from phenogen.evaluate.steps import rmse_text

    out = []
    splits = (metrics or {}).get("splits", {})
    order = [s for s in ("heldout", "extinct", "ancestor", "train") if s in splits]
    for split in order + [s for s in splits if s not in order]:
        m = splits[split].get("methods", {})
        gen = (m.get("generated") or {}).get("trait_rmse")
        if gen is None:
            continue
        beats, loses = [], []
        for base in ("nearest", "mean"):
            v = (m.get(base) or {}).get("trait_rmse")
            if v is not None:
                (beats if gen < v else loses).append(f"{base} ({v:.3f})")
        parts = []
        if beats:
            parts.append("beats " + " and ".join(beats))
        if loses:
            parts.append("worse than " + " and ".join(loses))
        oracle = (m.get("oracle") or {}).get("trait_rmse")
        if oracle:
            parts.append(f"{gen / oracle:.2f} × oracle ({oracle:.3f})")
        # picture against picture: the mean and oracle vectors drawn by the clade's renderer, read by the probe
        drawn = []
        mean_r = (m.get("mean_render") or {}).get("trait_rmse")
        if mean_r:
            drawn.append(f"{'beats' if gen < mean_r else 'worse than'} mean ({mean_r:.3f})")
        oracle_r = (m.get("oracle_render") or {}).get("trait_rmse")
        if oracle_r:
            drawn.append(f"{gen / oracle_r:.2f} × oracle ({oracle_r:.3f})")
        if drawn:
            parts.append("rendered: " + ", ".join(drawn))
        truth = (m.get("truth") or {}).get("trait_rmse")
        if truth:
            parts.append(f"{gen / truth:.2f} × truth")
        name = _SPLIT_TITLES.get(split, split)
        out.append(f"{name}: generated {rmse_text(m['generated'])} — {'; '.join(parts)}")
    return out


def _contact_sheet(
    ds, generated: dict[str, list[Path]] | None, split: str = "heldout", limit: int = 16
) -> str:
    """Truth above generated, one column per target species of ``split``, labelled with its name."""
    if ds is None or not generated:
        return ""
    recs, seen = [], set()
    for r in ds.records(split):
        if r.record_id in generated and r.species not in seen and r.images:
            recs.append(r)
            seen.add(r.species)
    if not recs:
        return ""
    recs = recs[:limit]
    head = "".join(f'<th class="small">{html.escape(r.species)}</th>' for r in recs)
    truth = "".join(
        f"<td>{_img(ds.root / r.images[0], width=64, title=r.species + ' (truth)')}</td>" for r in recs
    )
    gen = "".join(
        f"<td>{_img(generated[r.record_id][0], width=64, cls='g', title=r.species + ' (generated)')}</td>"
        for r in recs
    )
    return (
        f"<p><b>{_e(_SPLIT_TITLES.get(split, split))}</b>: true image (top: a render, or a photo) and generated portrait (bottom, red), "
        f"one column per species.</p>"
        f'<table class="pairs"><tr><th class="l"></th>{head}</tr><tr><th class="l">truth</th>{truth}</tr>'
        f'<tr><th class="l">generated</th>{gen}</tr></table>'
    )


def _metric_tables(metrics: dict[str, Any] | None, eval_dir: Path) -> str:
    from phenogen.evaluate.steps import rmse_text

    if not metrics:
        return _missing("evaluation (phenogen evaluate)", eval_dir / "metrics.json")
    if not any(
        (b or {}).get("methods") for b in (metrics.get("splits") or {}).values() if isinstance(b, dict)
    ):
        return _photo_tables(metrics) or "<p>No trait or photo scores in this evaluation.</p>"  # no traits
    out = [
        "<p>Trait RMSE is on z-scored continuous traits (1.0 ≈ one clade-wide standard deviation), "
        "read by the trait probe from each image and compared with the target's true traits; lower is better. "
        "<code>nearest</code> = renders of the training species with the closest barcode, <code>random</code> = "
        "a random training species, <code>mean</code> = the average training bird, <code>oracle</code> = "
        "Brownian-motion prediction from the true tree, <code>truth</code> = renders of the target itself "
        "(the probe's noise floor). ± is the standard error of an image row's trait RMSE from redrawing its "
        "images for the same targets. Top-1/top-5: DNA→image retrieval success. Named (top-1): the share of images "
        "whose traits, as the probe reads them, lie nearer their own species' true traits than any other "
        "candidate's — could a person holding the trait table name the species from the picture?</p>"
    ]
    for split, block in (metrics.get("splits") or {}).items():
        out.append(
            f"<h3>{_e(_SPLIT_TITLES.get(split, split))} — {_fmt(block.get('n_targets'), digits=0)} targets, "
            f"{_fmt(block.get('n_images'), digits=0)} images</h3>"
        )
        rows = ['<table><tr><th class="l">method</th><th>trait RMSE</th><th>binary acc.</th><th>top-1</th>'
                "<th>top-5</th><th>named (top-1)</th><th>mean rank</th><th>FID</th><th>KID</th><th class=\"l\">note</th></tr>"]  # fmt: skip
        for method, r in (block.get("methods") or {}).items():
            rmse = rmse_text(r)
            rows.append(
                f'<tr class="{"gen" if method == "generated" else ""}"><td class="l">{_e(method)}</td><td>{rmse}</td>'
                f"<td>{_fmt(r.get('discrete_accuracy'), True)}</td><td>{_fmt(r.get('top1'), True)}</td>"
                f"<td>{_fmt(r.get('top5'), True)}</td><td>{_fmt(r.get('top1_traits'), True)}</td>"
                f"<td>{_fmt(r.get('mean_rank'), digits=1)}</td>"
                f"<td>{_fmt(r.get('fid'), digits=2)}</td><td>{_fmt(r.get('kid_mean'), digits=4)}</td>"
                f'<td class="l">{html.escape(r.get("note") or "")}</td></tr>'
            )
        rows.append("</table>")
        gen = (block.get("methods") or {}).get("generated") or {}
        if gen.get("chance_top5") is not None:
            rows.append(
                f'<p class="small">chance: top-1 {_fmt(gen.get("chance_top1"), True)}, top-5 {_fmt(gen["chance_top5"], True)} '
                f"({_e((metrics.get('retrieval') or {}).get('n_candidates', '?'))} candidate species)</p>"
            )
        out.extend(rows)
    probe = metrics.get("probe") or {}
    r2 = ", ".join(f"{_e(s)}: {_fmt(v)}" for s, v in (probe.get("r2_mean") or {}).items())
    prior = probe.get("prior_renders") or 0
    seen = "renders of the training species" + (
        f" plus {prior:,} renders of random birds drawn from the trait prior (no held-out, extinct or "
        "ancestral bird among them)"
        if prior
        else " only"
    )
    out.append(f"<p><b>Trait probe</b> (trained on {seen}): mean R² {r2}.</p>")
    for name in ("trait_rmse.png", "probe_r2.png"):
        if (eval_dir / name).is_file():
            out.append(_img(eval_dir / name, cls="fig", title=name))
    out.append(_photo_tables(metrics))
    return "".join(out)


def _read_targets(path: Path) -> dict[str, dict[str, str]]:
    """``eval/targets.tsv`` by record id (empty when absent); a broken file is one InputError."""
    from phenogen.fsio import read_text

    if not path.is_file():
        return {}
    text = read_text(path, "targets table")
    try:
        reader = csv.DictReader(text.splitlines(), delimiter="\t")
        if "record_id" not in (reader.fieldnames or []):
            raise InputError(f"{path}: targets table has no record_id column")
        return {row["record_id"]: row for row in reader if isinstance(row.get("record_id"), str)}
    except csv.Error as exc:
        raise InputError(f"{path}: targets table is not a valid TSV ({exc})") from None


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _pairs(
    ds,
    generated: dict[str, list[Path]] | None,
    targets: dict[str, dict[str, str]],
    limit: int,
    oracle_dir: Path | None = None,
) -> str:
    """The truth | generated | nearest table per split; with ``oracle_dir`` (``eval/baselines/oracle_render``,
    written by ``evaluate`` on synthetic clades) also the oracle's vector drawn by the clade's renderer."""
    from phenogen.diffusion.generate import safe_name

    if ds is None or not generated:
        return ""
    oracle_dir = oracle_dir if oracle_dir is not None and oracle_dir.is_dir() else None
    first_image, any_image = {}, {}
    for r in ds.records():
        if r.images:
            any_image.setdefault(r.species, ds.root / r.images[0])
            if r.split == "train":
                first_image.setdefault(r.species, ds.root / r.images[0])
    named_col = any(t.get("named_as") for t in targets.values())
    out = ["<p>Each row: the target's true images (grey), the generated images (red), a render of the "
           "training species with the closest barcode (the <code>nearest</code> baseline)"
           + (" and the <code>oracle</code>'s prediction from the true tree and traits, drawn by the clade's own "
              "renderer (<code>oracle_render</code>: what a perfect DNA-only reading would show)" if oracle_dir else "")
           + (". Named from traits: the species whose true traits the portraits' traits lie nearest to, most often "
              "(k/n: how many of the n portraits are nearest to the target's own species)" if named_col else "")
           + ".</p>"]  # fmt: skip
    for split in ("heldout", "extinct", "ancestor", "train"):
        recs = [r for r in ds.records(split) if r.record_id in generated]
        if not recs:
            continue
        if len(recs) > limit:  # an even spread over the split, deterministic
            recs = (
                [recs[round(i * (len(recs) - 1) / (limit - 1))] for i in range(limit)]
                if limit > 1
                else recs[:1]
            )
        out.append(f"<h3>{_e(_SPLIT_TITLES.get(split, split))}</h3>")
        oracle_head = "<th>oracle, rendered</th>" if oracle_dir else ""
        named_head = "<th>named from traits</th>" if named_col else ""
        out.append('<table class="pairs"><tr><th class="l">target</th><th>truth</th><th>generated</th>'
                   f"<th>nearest relative</th>{oracle_head}{named_head}<th>trait RMSE</th></tr>")  # fmt: skip
        for r in recs:
            truth = "".join(_img(ds.root / p, width=80, title=p) for p in r.images[:2]) or "—"
            gen = "".join(_img(p, width=80, cls="g", title=p.name) for p in generated[r.record_id][:4])
            t = targets.get(r.record_id, {})
            near = t.get("nearest_species")
            near_cell = "—"
            if near and near in first_image:
                ident = _number(t.get("nearest_identity"))
                label = f"{near}" + (f" ({100 * ident:.1f}% id.)" if ident is not None else "")
                near_cell = (
                    _img(first_image[near], width=80, title=label)
                    + f'<br><span class="small">{html.escape(label)}</span>'
                )
            rmse = _fmt(_number(t.get("generated_rmse")))
            oracle_cell = ""
            if oracle_dir:
                drawn = [oracle_dir / f"{safe_name(r.record_id)}_{k}.png" for k in range(2)]
                oracle_cell = (
                    "<td>"
                    + ("".join(_img(p, width=80, title=p.name) for p in drawn if p.is_file()) or "—")
                    + "</td>"
                )
            named_cell = ""
            if named_col:
                named, own = t.get("named_as"), t.get("named_own") or ""
                label = ("itself" if named == r.species else str(named)) + (f" · {own} own" if own else "")
                picture = (
                    _img(any_image[named], width=80, title=str(named)) + "<br>" if named in any_image else ""
                )
                named_cell = (
                    f'<td>{picture}<span class="small">{html.escape(label)}</span></td>'
                    if named
                    else "<td>—</td>"
                )
            out.append(
                f'<tr><td class="l">{html.escape(r.record_id)}<br><span class="small">{html.escape(r.species)}</span></td>'
                f"<td>{truth}</td><td>{gen}</td><td>{near_cell}</td>{oracle_cell}{named_cell}<td>{rmse}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _families(parts: RunParts, ds, max_targets: int) -> str:
    """The generator families side by side (:mod:`phenogen.report.families`): one table of every
    ``RUN/families/<name>/`` beside this run, the best per split named, and a contact sheet of held-out
    species (truth, then each generator's first portrait). Empty when the run has no ``families/``."""
    from phenogen.evaluate.targets import read_generated
    from phenogen.report.families import FAMILIES_DIR, SPLITS, best_by_split, collect, verdicts

    if not (parts.root / FAMILIES_DIR).is_dir():
        return ""
    rows, notes = collect(parts.root, parts["eval"], parts["generated"])
    out = [
        "<p>Every generator painted the same targets (8 portraits each, as this run) and was scored by the same "
        "<code>evaluate</code>: trait RMSE ± standard error per split (lowest in bold), held-out DNA→image "
        "retrieval and FID/KID, training minutes, sampling speed, and <code>diversity</code> — the spread of "
        "one barcode's portraits under different noise ÷ that of one species' real photos (~0 = mode "
        "collapse). <code>bash bench/generator_families.sh RUN</code> fills <code>RUN/families/</code>.</p>"
    ]
    if rows:
        best = best_by_split(rows)
        head = "".join(f"<th>{_e(_SPLIT_TITLES.get(s, s).split(' (')[0])}</th>" for s in SPLITS)
        table = [f'<table><tr><th class="l">generator</th><th class="l">family</th>{head}<th>held-out top-1 / top-5'
                 "</th><th>FID</th><th>KID</th><th>train min</th><th>sample img/s</th><th>diversity</th>"
                 '<th class="l">note</th></tr>']  # fmt: skip
        for row in rows:
            cells = []
            for split in SPLITS:
                got = row.rmse(split)
                text = (
                    "—"
                    if got is None
                    else f"{got[0]:.3f}" + (f" ± {got[1]:.3f}" if got[1] is not None else "")
                )
                cells.append(f"<td><b>{text}</b></td>" if best.get(split) is row else f"<td>{text}</td>")
            p = row.photo("heldout")
            table.append(
                f'<tr class="{"gen" if row.name == "this run" else ""}"><td class="l">{_e(row.name)}</td>'
                f'<td class="l">{_e(row.kind)}</td>{"".join(cells)}'
                f"<td>{_fmt(p['top1'], True)} / {_fmt(p['top5'], True)}</td><td>{_fmt(p['fid'], digits=0)}</td>"
                f"<td>{_fmt(p['kid_mean'], digits=3)}</td><td>{_fmt(row.train_minutes, digits=1)}</td>"
                f"<td>{_fmt(row.images_per_second, digits=1)}</td><td>{_fmt(row.diversity, digits=2)}</td>"
                f'<td class="l">{_e(row.note)}</td></tr>'
            )
        for method in ("nearest", "mean", "oracle", "truth"):
            cells = "".join(f"<td>{_fmt((rows[0].rmse(s, method) or (None,))[0])}</td>" for s in SPLITS)
            table.append(f'<tr><td class="l"><i>{method}</i></td><td></td>{cells}<td colspan="7"></td></tr>')
        table.append("</table>")
        out.extend(table)
        out.append('<ul class="verdict">' + "".join(f"<li>{_e(v)}</li>" for v in verdicts(rows)) + "</ul>")
        out.append(_families_sheet(rows, ds, max_targets, read_generated))
    else:
        out.append(_missing("an evaluated generator", parts.root / FAMILIES_DIR))
    out.extend(f'<p class="missing">{_e(n)}</p>' for n in notes)
    return "".join(out)


def _families_sheet(rows, ds, limit: int, read_generated) -> str:
    """Held-out species in columns; the true image, then each comparable generator's first portrait."""
    if ds is None:
        return ""
    painted: list[tuple[str, dict[str, list[Path]]]] = []
    notes = []
    for row in rows:
        if not row.comparable or row.generated is None:
            continue
        try:
            painted.append((row.name, read_generated(row.generated)))
        except PhenogenError as exc:
            notes.append(f'<p class="missing">{_e(row.name)}: {_e(exc)}</p>')
    recs, seen = [], set()
    for r in ds.records("heldout"):
        if r.images and r.species not in seen and all(r.record_id in g for _, g in painted):
            recs.append(r)
            seen.add(r.species)
    if not painted or not recs:
        return "".join(notes)
    if len(recs) > limit:  # an even spread over the split, deterministic
        recs = (
            [recs[round(i * (len(recs) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else recs[:1]
        )
    head = "".join(f'<th class="small">{_e(r.species)}</th>' for r in recs)
    body = ['<tr><th class="l">truth</th>'
            + "".join(f"<td>{_img(ds.root / r.images[0], width=64, title=r.species + ' (truth)')}</td>" for r in recs)
            + "</tr>"]  # fmt: skip
    for name, gen in painted:
        body.append(
            f'<tr><th class="l">{_e(name)}</th>'
            + "".join(
                f"<td>{_img(gen[r.record_id][0], width=64, cls='g', title=f'{r.species} ({name})')}</td>"
                for r in recs
            )  # fmt: skip
            + "</tr>"
        )
    return (
        "<p><b>Held-out living species</b>: the true image (top), then each generator's first portrait of the "
        "same barcode (red).</p>"
        f'<table class="pairs"><tr><th class="l"></th>{head}</tr>{"".join(body)}</table>' + "".join(notes)
    )


def _tree(ds, generated: dict[str, list[Path]] | None) -> str:
    from phenogen.report.figures import tree_with_thumbnails

    if ds is None or ds.tree_path is None:
        return ""
    emb = _embedder()
    thumbs: dict[str, list[Any]] = {}
    splits: dict[str, str] = {}
    for r in ds.records():
        splits.setdefault(r.species, r.split)
        pair = thumbs.setdefault(r.species, [None, None])
        if pair[0] is None and r.images:
            canon = [p for p in r.images if "canon" in p] or list(r.images)
            pair[0] = emb.open(ds.root / canon[0])
        if pair[1] is None and generated and r.record_id in generated:
            pair[1] = emb.open(generated[r.record_id][0])
    try:
        png = tree_with_thumbnails(ds.tree_path, {k: (a, b) for k, (a, b) in thumbs.items()}, splits)
    except RecursionError:
        return f'<p class="missing">{_e(ds.tree_path)}: the tree is nested too deeply to draw</p>'
    except Exception as exc:  # noqa: BLE001 - Bio.Phylo and matplotlib raise many types on a bad tree
        return f'<p class="missing">{_e(ds.tree_path)}: the tree could not be drawn ({_e(type(exc).__name__)}: {_e(exc)[:200]})</p>'
    finally:
        for pair in thumbs.values():
            for im in pair:
                if im is not None:
                    im.close()
    return _img(png, cls="fig", title="species tree")


def _training(run: RunParts) -> str:
    from phenogen.fsio import read_json
    from phenogen.report.figures import loss_curves, plot_loss_curves

    out = []
    for key, title in (("lm", "DNA language model"), ("image", "Image model (diffusion)")):
        d = run[key]
        out.append(f"<h3>{title}</h3>")
        curves = {}
        if (d / "losses.json").is_file():
            try:
                curves = loss_curves(read_json(d / "losses.json", "losses.json", expect=(dict, list)))
            except PhenogenError as exc:
                out.append(f'<p class="missing">{_e(exc)}</p>')
        if curves:
            out.append(_img(plot_loss_curves(curves, f"{title}: losses"), cls="fig", title=f"{title} losses"))
        elif (d / "loss_curve.png").is_file():
            out.append(_img(d / "loss_curve.png", cls="fig", title=f"{title} losses"))
        else:
            out.append(_missing(f"{title} training", d / "losses.json"))
        if key == "image" and (d / "caption_scan.json").is_file():
            out.append(_caption_scan(d / "caption_scan.json"))
    out.append("<h3>DNA model: identity to the nearest training barcode, by epoch</h3>")
    ident = _find(run, "identity_by_epoch.png", "selection.png")
    out.append(
        _img(ident, cls="fig", title=ident.name)
        if ident
        else _missing("checkpoint selection", run["lm_eval"] / "identity_by_epoch.png")
    )
    return "".join(out)


def _caption_scan(path: Path) -> str:
    """The caption scan of ``train-image`` (``image.caption_scan_at``): which training species' written values
    it moved to another minimum of the caption decoder's loss, from where to where."""
    from phenogen.fsio import read_json

    try:
        scan = read_json(path, "caption scan")
        moves = scan["moves"]
        rows = "".join(
            f"<tr><td>{_e(m['species'])}</td><td>{_e(m['trait'])}</td><td>{float(m['before']):.2f} → "
            f"{float(m['after']):.2f}</td><td>{float(m['loss_before']):.3f} → {float(m['loss_after']):.3f}</td></tr>"
            for m in moves
        )
        head = (f"<h3>Caption scan (step {int(scan['step'])}): {len(moves)} value(s) of {int(scan['species'])} "
                "training species moved to a lower minimum of the caption decoder's loss</h3>")  # fmt: skip
    except PhenogenError as exc:
        return f'<p class="missing">{_e(exc)}</p>'
    except (KeyError, TypeError, ValueError) as exc:
        return f'<p class="missing">{_e(path)}: not a caption scan ({type(exc).__name__}: {_e(exc)})</p>'
    if not moves:
        return head + "<p>Every written hue was already in its best minimum.</p>"
    return (head + "<table><tr><th>species</th><th>value</th><th>written → moved to</th><th>decoder loss</th></tr>"
            + rows + "</table>")  # fmt: skip


def _sweeps(run: RunParts) -> str:
    d = run["sweeps"]
    pngs = sorted(d.glob("*.png")) if d.is_dir() else []
    if not pngs:
        return _missing("guidance-scale and steps sweeps", d)
    order = {"guidance.png": 0, "steps.png": 1, "lora_scale.png": 2}
    captions = {"guidance.png": "Guidance scale sweep (columns: scale; rows: sequences)",
                "steps.png": "Sampling steps sweep (columns: steps; rows: sequences)",
                "lora_scale.png": "LoRA scale sweep (columns: weight of the LoRA update, 0 = the base model; "
                                  "rows: sequences)"}  # fmt: skip
    out = []
    for p in sorted(pngs, key=lambda p: (order.get(p.name, 9), p.name)):
        out.append(f"<h3>{html.escape(captions.get(p.name, p.stem))}</h3>{_img(p, cls='fig', title=p.name)}")
    return "".join(out)


def _ancestors(run: RunParts) -> str:
    """Ancestral sequences vs the truth (``phenogen ancestors`` in the demo); empty when not run."""
    from phenogen.demo import tree_caption_tips
    from phenogen.fsio import read_json

    d = run["ancestors"]
    if not (d / "targets.json").is_file():
        return ""
    try:
        rec = read_json(d / "targets.json", "ancestors targets.json")
    except PhenogenError as exc:
        return f'<p class="missing">{_e(exc)}</p>'
    means = rec.get("all_nodes_mean_identity")
    if not isinstance(means, dict):
        return f'<p class="missing">{_e(d / "targets.json")}: field all_nodes_mean_identity must be an object</p>'
    painted = f"the <b>{_e(rec.get('ancestor_sequences', '?'))}</b> sequences"
    if tips := tree_caption_tips(run.root):
        painted = (
            f"the captions the barcodes of {_e(tips)} write, <b>reconstructed at each ancestor on the tree</b> "
            '(Brownian motion; <code>[ancestors] portrait_condition = "tree"</code>)'
        )
    out = [
        f"<p>Identity with the true ancestral sequences, mean over {_e(rec.get('n_identifiable', '?'))} identifiable "
        f"nodes of {_e(rec.get('n_true_internal', '?'))} (nearest-of-pool rows pick with hindsight). Ancestor targets "
        f"are painted from {painted}.</p><table>"
        '<tr><th class="l">method</th><th>identity</th></tr>'
    ]
    out += [
        f'<tr><td class="l">{html.escape(m)}</td><td>{_fmt(v, digits=4)}</td></tr>' for m, v in means.items()
    ]
    out.append("</table>")
    fig = d / "identity_vs_depth.png"
    if fig.is_file():
        out.append(_img(fig, cls="fig", title=fig.name))
    return "".join(out)


def _flat_numbers(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict) and depth < 2:
        for k, v in obj.items():
            out += _flat_numbers(v, f"{prefix}{k}." if depth < 1 else f"{prefix}{k}", depth + 1)
    elif isinstance(obj, int | float | str) and not isinstance(obj, bool) and len(str(obj)) < 60:
        out.append((prefix.rstrip("."), obj))
    return out


def _sequence(run: RunParts, metrics: dict[str, Any] | None) -> str:
    seq = (metrics or {}).get("sequence")
    source = None
    if seq is None:
        source = _find(run, "metrics.json", under=("lm_eval",))
        if source is not None and source.parent.name == "lm_eval":
            from phenogen.fsio import read_json

            try:
                seq = {"source": str(source), "metrics": read_json(source, "DNA evaluation metrics.json")}
            except PhenogenError as exc:
                return f'<p class="missing">{_e(exc)}</p>'
    out = []
    if isinstance(seq, dict) and "metrics" in seq:
        rows = _flat_numbers(seq["metrics"])[:40]
        out.append(f'<p class="small">from {_e(seq.get("source", "?"))}</p><table>')
        out += [
            f'<tr><td class="l">{html.escape(k)}</td><td>{html.escape(_fmt(v) if isinstance(v, float) else str(v))}</td></tr>'
            for k, v in rows
        ]
        out.append("</table>")
    for name in ("bits_per_base.png", "sample_report.png"):
        p = _find(run, name)
        if p:
            out.append(_img(p, cls="fig", title=name))
    return "".join(out) or _missing("DNA model evaluation (phenogen evaluate-dna)", run["lm_eval"])


def _caption_readout(metrics: dict[str, Any] | None) -> str:
    """The caption head's read-out: how well what each barcode wrote tracks the true traits."""
    block = (metrics or {}).get("caption_readout")
    if not block or not block.get("splits"):
        return ""
    splits = list(block["splits"])
    head = "".join(f"<th>{_e(s)}</th>" for s in splits)
    means = "".join(f"<td><b>{_fmt(block['splits'][s].get('mean_r'))}</b></td>" for s in splits)
    rows = [f'<tr><td class="l"><b>mean r</b></td>{means}</tr>']
    for name in block.get("traits") or []:
        cells = "".join(
            f"<td>{_fmt((block['splits'][s].get('per_trait_r') or {}).get(name))}</td>" for s in splits
        )
        rows.append(f'<tr><td class="l">{_e(name)}</td>{cells}</tr>')
    return (
        "<p>The image model's DNA conditioner <i>writes a caption</i> for the prior's caption encoder "
        "(<code>image.cond_head = caption</code>). Pearson r, over each split's targets, between the "
        "value a target's barcode writes and its true trait (1 = the DNA is read perfectly, up to scale):</p>"
        f'<table><tr><th class="l">trait</th>{head}</tr>{"".join(rows)}</table>'
    )


# ---------------------------------------------------------------- metrics.json shape
_ROW_NUMBERS = ("trait_rmse", "trait_rmse_se", "discrete_accuracy", "top1", "top5", "top1_traits", "top5_traits",
                "mean_rank", "fid", "kid_mean", "chance_top1", "chance_top5")  # fmt: skip


def _is_num(v: Any) -> bool:
    """None, a float, or an int a float can hold (JSON allows 10**400; formatting it would overflow)."""
    if v is None or isinstance(v, float):
        return True
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) < 1e300


def check_metrics(metrics: dict[str, Any], path: Path) -> dict[str, Any]:
    """Raise one InputError naming the field unless ``metrics`` has the shape the report reads.

    Only the fields the page formats are checked (numbers where numbers are printed, objects where
    it iterates); unknown fields are ignored and any missing optional part shows as "—".
    """

    def need(ok: bool, where: str, what: str) -> None:
        if not ok:
            raise InputError(f"{path}: field {where} must be {what}")

    def obj(v: Any, where: str) -> dict:
        need(isinstance(v, dict), where, "an object {...}")
        return v

    h = metrics.get("headline")
    if h:
        obj(h, "headline")
        need(isinstance(h.get("split"), str), "headline.split", "a string")
        tr = obj(h.get("trait_rmse"), "headline.trait_rmse")
        for k, v in tr.items():
            need(_is_num(v), f"headline.trait_rmse.{k}", "a number or null")
        for k in ("top5", "chance_top5", "ratio_to_random", "top5_over_chance"):
            need(_is_num(h.get(k)), f"headline.{k}", "a number or null")
        for k, v in obj(h.get("top1_traits") or {}, "headline.top1_traits").items():
            need(_is_num(v), f"headline.top1_traits.{k}", "a number or null")
        need(
            h.get("beats_mean") is None or isinstance(h["beats_mean"], bool),
            "headline.beats_mean",
            "true/false",
        )
    splits = obj(metrics.get("splits", {}), "splits")
    for split, block in splits.items():
        obj(block, f"splits.{split}")
        for k in ("n_targets", "n_images"):
            need(_is_num(block.get(k)), f"splits.{split}.{k}", "a number")
        methods = obj(block.get("methods", {}), f"splits.{split}.methods")
        for method, row in methods.items():
            obj(row, f"splits.{split}.methods.{method}")
            for k in _ROW_NUMBERS:
                need(_is_num(row.get(k)), f"splits.{split}.methods.{method}.{k}", "a number or null")
            need(row.get("note") is None or isinstance(row["note"], str), f"splits.{split}.methods.{method}.note",
                 "a string or null")  # fmt: skip
    if metrics.get("probe") is not None:
        probe = obj(metrics["probe"], "probe")
        r2 = obj(probe.get("r2_mean", {}), "probe.r2_mean")
        for k, v in r2.items():
            need(_is_num(v), f"probe.r2_mean.{k}", "a number or null")
        need(_is_num(probe.get("prior_renders")), "probe.prior_renders", "a number")
    if metrics.get("retrieval") is not None:
        obj(metrics["retrieval"], "retrieval")
    block = metrics.get("caption_readout")
    if block:
        obj(block, "caption_readout")
        traits = block.get("traits", [])
        need(isinstance(traits, list) and all(isinstance(t, str) for t in traits), "caption_readout.traits",
             "a list of strings")  # fmt: skip
        for split, b in obj(block.get("splits", {}), "caption_readout.splits").items():
            obj(b, f"caption_readout.splits.{split}")
            need(_is_num(b.get("mean_r")), f"caption_readout.splits.{split}.mean_r", "a number or null")
            obj(b.get("per_trait_r", {}), f"caption_readout.splits.{split}.per_trait_r")
    if metrics.get("sequence") is not None:
        need(isinstance(metrics["sequence"], dict) and "metrics" in metrics["sequence"], "sequence",
             "an object with 'source' and 'metrics'")  # fmt: skip
    photo = metrics.get("photo")
    if photo is not None:
        obj(photo, "photo")
        if photo.get("headline") is not None:
            h = obj(photo["headline"], "photo.headline")
            for k in ("top1", "top5", "top100", "chance_top1", "chance_top5", "chance_top100", "kid_mean"):
                need(_is_num(h.get(k)), f"photo.headline.{k}", "a number or null")
            for k in ("top5_by_row", "similarity_by_row", "taxon_agreement"):
                for name, v in obj(h.get(k) or {}, f"photo.headline.{k}").items():
                    need(_is_num(v), f"photo.headline.{k}.{name}", "a number or null")
    for split, block in splits.items():
        if block.get("photo") is None:
            continue
        pb = obj(block["photo"], f"splits.{split}.photo")
        for method, row in obj(pb.get("methods", {}), f"splits.{split}.photo.methods").items():
            where = f"splits.{split}.photo.methods.{method}"
            obj(row, where)
            for k in _PHOTO_NUMBERS:
                need(_is_num(row.get(k)), f"{where}.{k}", "a number or null")
            for head, v in obj(row.get("taxon_agreement") or {}, f"{where}.taxon_agreement").items():
                need(_is_num(v), f"{where}.taxon_agreement.{head}", "a number or null")
            need(row.get("note") is None or isinstance(row["note"], str), f"{where}.note", "a string or null")
    return metrics


_PHOTO_NUMBERS = ("top1", "top5", "top100", "mean_rank", "chance_top1", "chance_top5", "chance_top100",
                  "similarity", "fid", "kid_mean", "kid_std", "n_images", "n_targets")  # fmt: skip


# ---------------------------------------------------------------- page
def build_report(run_dir: str | Path, out_path: str | Path | None = None, *, max_targets: int = 12) -> Path:
    """Write the report of ``run_dir`` (default ``RUN/report.html``) and return its path.

    >>> build_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    from phenogen.fsio import check_output_file

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: no such run directory (expected the output of `phenogen demo --out DIR`)")
    parts = RunParts.resolve(run)
    if not parts.found and not (run / "metrics.json").is_file():
        raise InputError(
            f"{run}: not a phenogen run directory (none of {', '.join(sorted(RUN_LAYOUT.values()))}/ in it, "
            "and no command's config.json); give the output of `phenogen demo --out DIR`, or a directory "
            "holding the --out folders of train-lm / train-image / generate / evaluate"
        )
    out = check_output_file(Path(out_path) if out_path else run / "report.html")
    # the run directory (and, below, the dataset's image folders): a row of generated.tsv or a symlink
    # leading anywhere else is not embedded
    emb = _Embedder(roots=[run.resolve(), *(d.resolve() for d in parts.dirs)])
    token = _EMBED.set(emb)
    try:
        page = _page(parts, emb, max_targets)
    finally:
        _EMBED.reset(token)
    from phenogen.fsio import atomic_write_text

    atomic_write_text(out, page)
    return out


def _page(parts: RunParts, emb: _Embedder, max_targets: int) -> str:
    from phenogen.data.dataset import load_dataset
    from phenogen.evaluate.targets import read_generated
    from phenogen.fsio import read_json

    run = parts.root
    data_dir, eval_dir, gen_dir = (parts[k] for k in ("data", "eval", "generated"))
    ds = load_dataset(data_dir) if (data_dir / "dataset.json").is_file() else None
    if ds is not None:
        # not ds.image_roots: dataset.json's image_links (symlink imports) is not trusted for embedding
        emb.roots = [*(emb.roots or []), ds.root.resolve()]
    generated, gen_error = None, ""
    if (gen_dir / "generated.tsv").is_file():
        try:
            generated = read_generated(gen_dir)
        except PhenogenError as exc:
            gen_error = str(exc)
        except (UnicodeDecodeError, csv.Error) as exc:
            gen_error = f"{gen_dir / 'generated.tsv'}: cannot be read ({type(exc).__name__}: {exc})"
    metrics = None
    if (eval_dir / "metrics.json").is_file():
        metrics = check_metrics(
            read_json(eval_dir / "metrics.json", "metrics.json"), eval_dir / "metrics.json"
        )
    targets = _read_targets(eval_dir / "targets.tsv")

    sections: list[tuple[str, str]] = []
    headline = _headline(metrics) or _missing("evaluation", eval_dir / "metrics.json")
    sections.append(("Headline", headline + _contact_sheet(ds, generated)))
    sections.append(("Metrics with baselines", _metric_tables(metrics, eval_dir)))
    pairs = _pairs(ds, generated, targets, max_targets, eval_dir / "baselines" / "oracle_render")
    if not pairs:
        pairs = _missing(
            "generated images" if ds else "dataset", gen_dir / "generated.tsv" if ds else data_dir
        )
        if ds is not None and generated is None and (gen_dir / "generated.tsv").is_file():
            pairs += f'<p class="missing">{html.escape(gen_error)}</p>'
    sections.append(("Truth vs generated", pairs))
    families = _families(parts, ds, max_targets)
    if families:
        sections.append(("Generator families side by side", families))
    sections.append(("Species tree", _tree(ds, generated) or _missing("true tree", data_dir / "tree.nwk")))
    grid = gen_dir / "grid.png"
    if grid.is_file():
        sections.append(("Generated grid", _img(grid, cls="fig", title="grid.png")))
    sections.append(("Training", _training(parts)))
    sections.append(("Sweeps", _sweeps(parts)))
    readout = _caption_readout(metrics)
    if readout:
        sections.append(("What the DNA wrote", readout))
    sections.append(("Sequence side (DNA model)", _sequence(parts, metrics)))
    ancestors = _ancestors(parts)
    if ancestors:
        sections.append(("Ancestral sequences vs the truth", ancestors))
    if ds is not None and (ds.root / "contact_sheet.png").is_file():
        sections.append(
            ("The clade (contact sheet of true renders)", _img(ds.root / "contact_sheet.png", cls="fig"))
        )
    if emb.skipped:
        notes = "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(emb.skipped))
        sections.append(
            (
                "Files not embedded",
                f'<p class="missing">{len(set(emb.skipped))} image(s) were skipped: outside the run and dataset '
                f"directories, or not decodable.</p><ul>{notes}</ul>",
            )
        )

    body = "".join(f'<h2 id="s{i}">{html.escape(t)}</h2>{c}' for i, (t, c) in enumerate(sections))
    toc = " · ".join(f'<a href="#s{i}">{html.escape(t)}</a>' for i, (t, _) in enumerate(sections))
    counts = ""
    if ds is not None:
        counts = ", ".join(f"{len(ds.species(s))} {s}" for s in ("train", "heldout", "extinct", "ancestor"))
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>phenogen report — {html.escape(run.name)}</title><style>{_CSS}</style></head><body>"
        f'<h1>phenogen report</h1><p class="sub">run <code>{html.escape(str(run))}</code>'
        f'{" · species: " + counts if counts else ""}</p><p class="small">{toc}</p>{body}</body></html>\n'
    )
    return page
