"""``phenogen app --run DIR``: the web app (Gradio Blocks) over a run directory.

Three tabs, every one a thin caller of :mod:`phenogen.api` (and :mod:`phenogen.counterfactual`):

- **Paint a barcode** — paste a barcode or FASTA records, or upload a FASTA file; the portraits each
  barcode paints, labelled by record, and what its DNA *wrote* (the caption values, caption-head models).
- **Tree** — the run's reconstructed tree; paint any node (an ancestor from the captions reconstructed
  at it, a tip from its place on the tree) beside its true portrait when the run has one.
- **Counterfactual** — one barcode and copies of it with 1, 5, 20 … % of its sites mutated, painted
  at the same noise, with the traits each wrote beside its row.

Requests are bounded (:class:`Limits`), run one at a time through Gradio's queue, and read no server
file a visitor names: files arrive through the upload component only. The server listens on
127.0.0.1 unless ``--host`` says otherwise. The pure functions (:func:`paint_barcodes`,
:func:`paint_node`, :func:`counterfactual`) return what the components show and are tested without a
browser; :func:`build_app` wires them to components and is tested with one.

>>> # from phenogen import api; from phenogen.app import build_app
>>> # build_app(api.load_run("runs/demo")).launch()
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phenogen.errors import ConfigError, InputError, PhenogenError, one_line

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from phenogen.api import Run

__all__ = [
    "Limits",
    "LIMITS",
    "add_arguments",
    "run",
    "build_app",
    "read_barcodes",
    "paint_barcodes",
    "paint_node",
    "counterfactual",
    "node_choices",
    "target_records",
    "tree_picture",
]

Progress = Callable[[int, int], None] | None
Gallery = list[tuple["Image.Image", str]]
Table = dict[str, list]  # what gr.Dataframe shows: {"headers": [...], "data": [[...], ...]}

FASTA_TYPES = [".fasta", ".fa", ".fas", ".fna", ".txt"]
MAX_GUIDANCE = 30.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; more is refused with a message saying the limit."""

    max_records: int = 16  # sequences per request
    max_length: int = 5_000  # bp per barcode
    max_steps: int = 100  # denoising steps (and never more than the model was trained on)
    max_images: int = 32  # images per request, all records together
    max_images_per_record: int = 8
    max_variants: int = 6  # counterfactual rows, the original included
    max_upload_bytes: int = 1_000_000
    queue_size: int = 16  # requests waiting; more are turned away by the queue

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"app limit {f.name} must be a whole number >= 1, got {value!r}")


LIMITS = Limits()

# ------------------------------------------------------------------------------------------ helpers
_model_lock = threading.Lock()


def _model(run: Run):
    """``run.model``, loaded once even when the warm-up thread and a first request race for it."""
    with _model_lock:
        return run.model


def _whole(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` (a number from a slider or the API) as an int in ``[lo, hi]``, or an InputError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{name}: expected a whole number, got {value!r}")
    if not lo <= int(number) <= hi:
        raise InputError(f"{name} = {int(number)}: choose {lo} to {hi}")
    return int(number)


def _settings(run: Run, limits: Limits, steps, guidance, scheduler, seed) -> dict[str, Any]:
    """The generation keywords of :meth:`~phenogen.api.Model.paint`, checked against ``limits``."""
    from phenogen.diffusion.config import SCHEDULERS

    model = _model(run)
    most = min(limits.max_steps, model.max_steps)
    out = {"steps": _whole(steps, "steps", 1, most), "seed": _whole(seed, "seed", 0, 2**32 - 1)}
    try:
        g = float(guidance)
    except (TypeError, ValueError):
        g = float("nan")
    if not math.isfinite(g) or not 0.0 <= g <= MAX_GUIDANCE:
        raise InputError(f"guidance = {guidance!r}: choose a number from 0 to {MAX_GUIDANCE:g}")
    if scheduler not in SCHEDULERS:
        raise InputError(f"scheduler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    return out | {"guidance_scale": g, "scheduler": scheduler}


def _images(n, n_records: int, limits: Limits, per: str = "barcode") -> int:
    n = _whole(n, f"images per {per}", 1, limits.max_images_per_record)
    if n * n_records > limits.max_images:
        raise InputError(
            f"{n_records} × {n} = {n * n_records} images: the app paints at most {limits.max_images} per "
            f"request; ask for fewer {per}s or images"
        )
    return n


def _caption_table(captions: dict[str, dict[str, float]] | None, ids: Sequence[str]) -> Table:
    """One row per trait, one column per record (values in caption units, 2 decimals)."""
    if not captions:
        return {"headers": ["trait"], "data": []}
    traits = list(captions[ids[0]])
    rows = [[t, *(round(captions[rid][t], 2) for rid in ids)] for t in traits]
    return {"headers": ["trait", *ids], "data": rows}


def _error(exc: PhenogenError) -> str:
    return f"⚠️ {one_line(exc, limit=400)}"


def _done(what: str, settings: dict[str, Any], started: float) -> str:
    return (
        f"{what} — {settings['scheduler']}, {settings['steps']} steps, guidance {settings['guidance_scale']:g}, "
        f"seed {settings['seed']} ({time.perf_counter() - started:.1f} s)"
    )


def _empty_table() -> Table:
    return {"headers": ["trait"], "data": []}


def read_barcodes(run: Run, text: str | None, upload: str | Path | None, limits: Limits = LIMITS):
    """The records a visitor gave, checked: pasted ``text`` *or* an ``upload`` (the path Gradio saved
    the uploaded file at), at most ``limits.max_records`` of at most ``limits.max_length`` bp, valid for
    the run's model. Returns ``[(id, sequence), ...]``; a mistake is a PhenogenError naming it."""
    from phenogen import api

    text = text or ""
    if upload and text.strip():
        raise InputError("give pasted text or an uploaded file, not both: clear one of them")
    if upload:
        path = Path(upload)
        source = f"uploaded file {path.name}"
        size = path.stat().st_size
        if size > limits.max_upload_bytes:
            raise InputError(f"{source}: {size:,} bytes, more than the {limits.max_upload_bytes:,} accepted")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{source}: not UTF-8 text (byte {exc.start}); upload a FASTA text file"
            ) from None
    else:
        source = "pasted text"
        if not text.strip():
            raise InputError("nothing to paint: paste a barcode (or FASTA records) or upload a FASTA file")
    records = api.parse_fasta(text, source=source, max_bytes=limits.max_upload_bytes)
    if len(records) > limits.max_records:
        raise InputError(
            f"{source}: {len(records)} records; the app paints at most {limits.max_records} per request"
        )
    for rid, seq in records:
        if len(seq) > limits.max_length:
            raise InputError(
                f"{source}: record {rid!r} is {len(seq):,} bp; the app reads barcodes of at most "
                f"{limits.max_length:,} bp"
            )
    return _model(run).check(records, source=source)


# ---------------------------------------------------------------------------------- paint barcodes
def paint_barcodes(
    run: Run,
    text: str | None,
    upload: str | Path | None,
    images: int,
    steps: int,
    guidance: float,
    scheduler: str,
    seed: int,
    progress: Progress = None,
    limits: Limits = LIMITS,
) -> tuple[Gallery, Table, str]:
    """Paint the barcodes a visitor gave: ``(gallery items (image, "id #k"), the caption table, status)``.

    A mistake (bad barcode, too many records or images …) gives an empty gallery and the error's
    message as the status, starting with ⚠️.
    """
    started = time.perf_counter()
    try:
        records = read_barcodes(run, text, upload, limits)
        n = _images(images, len(records), limits)
        settings = _settings(run, limits, steps, guidance, scheduler, seed)
        portraits = _model(run).paint(dict(records), images=n, progress=progress, **settings)
    except PhenogenError as exc:
        return [], _empty_table(), _error(exc)
    ids = portraits.record_ids
    gallery = [
        (im, f"{rid} #{k + 1}" if n > 1 else rid) for rid in ids for k, im in enumerate(portraits.images[rid])
    ]
    status = _done(f"Painted {n} image(s) for each of {len(ids)} barcode(s)", settings, started)
    if portraits.captions is None:
        status += "; this model's barcodes write no caption (tokens head)"
    return gallery, _caption_table(portraits.captions, ids), status


# ---------------------------------------------------------------------------------------- the tree
def node_choices(run: Run) -> list[tuple[str, str]]:
    """``(label, name)`` of every node of the run's tree, in pre-order: ``anc012 — ancestor, 5 tips``."""
    out = []
    for row in run.nodes():
        extra = f", {row['n_tips']} tips" if row["kind"] == "ancestor" else ""
        out.append((f"{row['name']} — {row['kind']}{extra}", row["name"]))
    return out


def _true_counterparts(run: Run) -> dict[str, str]:
    """Reconstructed node -> the true ancestor with the same clade (simulated runs; else empty)."""
    cached = getattr(run, "_app_counterparts", None)
    if cached is None:
        from phenogen.phylo.truth import reconstructed_counterparts

        try:
            matched = reconstructed_counterparts(run.ancestors_dir).items()
            cached = {v["recon_node"]: true for true, v in matched if v.get("clade_match")}
        except (PhenogenError, OSError, ValueError, KeyError):  # no truth comparison in this run
            cached = {}
        run._app_counterparts = cached  # type: ignore[attr-defined]
    return cached


def true_portrait(run: Run, name: str) -> tuple[Image.Image | None, str]:
    """The true portrait of node ``name`` when the run has one, and a label saying whose it is."""
    from phenogen.data.dataset import read_image

    path, label = run.truth_image(name), f"true portrait of {name}"
    if path is None and name in _true_counterparts(run):
        true = _true_counterparts(run)[name]
        path, label = run.truth_image(true), f"true portrait of {true} (the true ancestor of the same clade)"
    if path is None:
        return None, f"no true portrait of {name} in this run"
    return read_image(path, "true portrait"), label


def tree_picture(run: Run, highlight: str | None = None) -> Image.Image:
    """The run's tree (x = substitutions per site from the root), tips coloured by kind, internal nodes
    labelled; ``highlight`` marked in red."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image as PILImage

    from phenogen.phylo.portraits import draw_branches, tree_layout

    tree = run.tree
    pos = tree_layout(tree)
    kinds = {row["name"]: row["kind"] for row in run.nodes()}
    colours = {"train": "0.25", "heldout": "tab:blue", "extinct": "tab:brown"}
    n_tips = len(tree.get_terminals())
    fig, ax = plt.subplots(figsize=(6.2, max(2.5, min(0.14 * n_tips + 0.8, 30.0))), dpi=100)
    draw_branches(ax, tree, pos, color="0.55", lw=0.7)
    if n_tips <= 150:
        for clade in tree.get_nonterminals():
            x, y = pos[clade.name]
            ax.text(x, y, clade.name + " ", ha="right", va="bottom", fontsize=5, color="0.45")
    if n_tips <= 150:
        for tip in tree.get_terminals():
            x, y = pos[tip.name]
            kind = kinds.get(tip.name, "tip")
            ax.text(x, y, f" {tip.name}", va="center", fontsize=6, color=colours.get(kind, "black"))
    if highlight in pos:
        x, y = pos[highlight]
        ax.plot([x], [y], "o", color="tab:red", markersize=7, zorder=5)
        ax.annotate(highlight, (x, y), xytext=(4, 4), textcoords="offset points", color="tab:red", fontsize=8)
    handles = [plt.Line2D([], [], color=c, lw=0, marker="s", label=k) for k, c in colours.items()]
    ax.legend(handles=handles, loc="lower left", fontsize=6, frameon=False, title="tips", title_fontsize=6)
    ax.set_xlabel("substitutions per site from the root", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.spines[["left", "right", "top"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB")


def paint_node(
    run: Run,
    name: str | None,
    images: int,
    steps: int,
    guidance: float,
    scheduler: str,
    seed: int,
    progress: Progress = None,
    limits: Limits = LIMITS,
) -> tuple[Gallery, Image.Image | None, Table, str]:
    """Paint a node of the run's tree from :meth:`~phenogen.api.Run.paint_nodes`: ``(gallery, its true
    portrait or None, its caption table, status)``."""
    started = time.perf_counter()
    try:
        if not name:
            raise InputError("choose a node of the tree first")
        n = _images(images, 1, limits, per="node")
        settings = _settings(run, limits, steps, guidance, scheduler, seed)
        portraits = run.paint_nodes([name], images=n, progress=progress, **settings)
        truth, label = true_portrait(run, name)
    except PhenogenError as exc:
        return [], None, _empty_table(), _error(exc)
    gallery = [(im, f"{name} #{k + 1}") for k, im in enumerate(portraits.images[name])]
    kind = {row["name"]: row["kind"] for row in run.nodes()}.get(name, "node")
    how = (
        "the captions reconstructed at it"
        if kind == "ancestor"
        else "the captions placed at its place on the tree"
    )
    status = _done(f"Painted {name} ({kind}) from {how}; {label}", settings, started)
    return gallery, truth, _caption_table(portraits.captions, [name]), status


# ------------------------------------------------------------------------------------ counterfactual
def target_records(run: Run) -> dict[str, tuple[str, str]]:
    """The run's targets (``RUN/targets.fasta``): ``{id: (label, sequence)}``; empty when it has none."""
    from phenogen.dna.seqio import read_fasta

    path = run.path / "targets.fasta"
    if not path.is_file():
        return {}
    out = {}
    for r in read_fasta(path, policy="mask", max_bytes=20_000_000).records:
        split = next((w.split("=", 1)[1] for w in r.description.split() if w.startswith("split=")), "")
        out[r.id] = (f"{r.id} ({split})" if split else r.id, r.sequence)
    return out


def _parse_levels(levels: Sequence[Any], limits: Limits) -> list[float]:
    """Percentages of sites to mutate, sorted, without 0 (the original row is always painted)."""
    out = set()
    for v in levels or ():
        try:
            p = float(str(v).strip().rstrip("%"))
        except ValueError:
            raise InputError(f"mutation level {v!r}: give a percentage of sites, e.g. 5") from None
        if not math.isfinite(p) or not 0.0 <= p <= 100.0:
            raise InputError(f"mutation level {v!r}: choose 0 to 100 % of sites")
        if p > 0:
            out.add(p)
    if not out:
        raise InputError("choose at least one mutation level (e.g. 1, 5 and 20 % of sites)")
    if len(out) + 1 > limits.max_variants:
        raise InputError(
            f"{len(out)} mutation levels: the app paints at most {limits.max_variants - 1} beside the original"
        )
    return sorted(out)


def counterfactual(
    run: Run,
    text: str | None,
    levels: Sequence[Any],
    where: str,
    images: int,
    steps: int,
    guidance: float,
    scheduler: str,
    seed: int,
    progress: Progress = None,
    limits: Limits = LIMITS,
) -> tuple[Image.Image | None, Table, str]:
    """One barcode and copies with ``levels`` % of its sites mutated (nested: the 20 % copy holds the
    5 % copy's changes; ``where``: random or one codon position), painted at the same noise
    (:func:`phenogen.counterfactual.counterfactual_grid`): ``(grid with the colour traits beside each
    row, the caption table of every row, status)``."""
    from phenogen.counterfactual import WHERE, counterfactual_grid, mutate, n_differences

    started = time.perf_counter()
    try:
        records = read_barcodes(run, text, None, limits)
        if len(records) != 1:
            raise InputError(
                f"pasted text: {len(records)} records; the counterfactual grid takes one barcode"
            )
        [(rid, seq)] = records
        if where not in WHERE:
            raise InputError(f"where {where!r}: choose one of {', '.join(WHERE)}")
        pcts = _parse_levels(levels, limits)
        n = _images(images, len(pcts) + 1, limits, per="row")
        settings = _settings(run, limits, steps, guidance, scheduler, seed)
        variants = [(f"{rid[:20]} as given", seq)]
        for p in pcts:
            mutant = mutate(seq, p / 100.0, where=where, seed=settings["seed"])
            variants.append((f"{p:g} % mutated ({n_differences(seq, mutant)} sites)", mutant))
        sheet, rows = counterfactual_grid(
            _model(run), seq, variants, images=n, seed=settings["seed"], steps=settings["steps"],
            guidance_scale=settings["guidance_scale"], scheduler=settings["scheduler"], progress=progress,
        )  # fmt: skip
    except PhenogenError as exc:
        return None, _empty_table(), _error(exc)
    labels = [r.label for r in rows]
    captions = {lab: r.caption for lab, r in zip(labels, rows, strict=True)} if rows[0].caption else None
    what = f"{rid}: {len(rows) - 1} mutated copies ({where} sites), {n} image(s) each at the same noise"
    return sheet, _caption_table(captions, labels), _done(what, settings, started)


def _for_screen(sheet: Image.Image, top: int = 14) -> Image.Image:
    """The grid 2× (nearest: crisp pixels), with a white band on top for the label Gradio lays over it."""
    from PIL import Image as PILImage

    padded = PILImage.new("RGB", (sheet.width, sheet.height + top), "white")
    padded.paste(sheet, (0, top))
    return padded.resize((padded.width * 2, padded.height * 2), resample=PILImage.Resampling.NEAREST)


# ------------------------------------------------------------------------------------------ the app
def _warm_up(run: Run) -> None:
    """Load the model while the server starts, so the first request does not wait for it."""
    try:
        _model(run)
    except PhenogenError as exc:  # the first request shows it too
        print(f"phenogen app: the model did not load: {one_line(exc)}")


def _gradio():
    """Import gradio with analytics, version checks and telemetry off (they would reach the internet)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    return gr


def _stored_defaults(run: Run, limits: Limits) -> tuple[Any, int]:
    """The pipeline's stored generation settings and the most steps the UI offers, without loading it."""
    from phenogen.diffusion.settings import read_settings
    from phenogen.fsio import read_json

    settings, _ = read_settings(run.pipeline_dir)
    trained = 1000
    config = run.pipeline_dir / "scheduler" / "scheduler_config.json"
    if config.is_file():
        trained = int(read_json(config, "scheduler config").get("num_train_timesteps", 1000))
    return settings, max(1, min(limits.max_steps, trained))


def _progress_feed(progress) -> Callable[[int, int], None]:
    def feed(done: int, total: int) -> None:
        progress((done, total), desc="denoising", unit="steps")

    return feed


def build_app(run: Run, limits: Limits = LIMITS):
    """The Gradio Blocks app over ``run`` (queued: one request at a time, ``limits.queue_size`` waiting).

    Nothing heavy loads here; the model loads on the first request (``run`` starts a warm-up).
    Components carry ``elem_id``s (``paint-text``, ``paint-go``, ``paint-gallery``, ``paint-status`` …).
    """
    gr = _gradio()
    from phenogen.diffusion.config import SCHEDULERS

    stored, most_steps = _stored_defaults(run, limits)
    targets = target_records(run)
    target_list = [(label, rid) for rid, (label, _) in targets.items()]
    try:
        nodes = node_choices(run)
        tree_error = ""
    except PhenogenError as exc:
        nodes, tree_error = [], one_line(exc, limit=300)

    upload_root = Path(gr.utils.get_upload_folder()).resolve()

    def uploaded(path: str | None) -> str | None:
        # Gradio hands over the path of its own copy of the upload; refuse anything else
        if path and upload_root not in Path(path).resolve().parents:
            raise InputError("the file must be uploaded through the upload box")
        return path

    def controls(prefix: str, per: str, n_default: int):
        with gr.Row():
            n = gr.Slider(1, limits.max_images_per_record, value=n_default, step=1, label=f"images per {per}",
                          elem_id=f"{prefix}-images")  # fmt: skip
            seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id=f"{prefix}-seed")
        with gr.Row():
            steps = gr.Slider(1, most_steps, value=min(stored.steps, most_steps), step=1, label="steps",
                              elem_id=f"{prefix}-steps")  # fmt: skip
            guidance = gr.Slider(0, MAX_GUIDANCE, value=stored.guidance_scale, step=0.5, label="guidance",
                                 elem_id=f"{prefix}-guidance")  # fmt: skip
        scheduler = gr.Dropdown(list(SCHEDULERS), value=stored.scheduler, label="scheduler",
                                elem_id=f"{prefix}-scheduler")  # fmt: skip
        return [n, steps, guidance, scheduler, seed]

    def pick(rid: str | None) -> str:
        if not rid or rid not in targets:
            return gr.skip()
        return f">{rid}\n{targets[rid][1]}"

    # Gradio recognises a gr.Progress default and feeds it to the page; the API's callback drives it
    def on_paint(text, upload, n, steps, guidance, scheduler, seed, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        try:
            upload = uploaded(upload)
        except PhenogenError as exc:
            return [], _empty_table(), _error(exc)
        return paint_barcodes(
            run, text, upload, n, steps, guidance, scheduler, seed, _progress_feed(progress), limits
        )

    def on_node(name, n, steps, guidance, scheduler, seed, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        gallery, truth, table, status = paint_node(
            run, name, n, steps, guidance, scheduler, seed, _progress_feed(progress), limits
        )
        picture = tree_picture(run, name) if gallery else gr.skip()
        if truth is not None:  # as large as a gallery image: 64-px renders would show as thumbnails
            truth = truth.resize((truth.width * 3, truth.height * 3), resample=3)  # 3: bicubic
        return gallery, truth, table, status, picture

    def on_counterfactual(text, levels, where, n, steps, guidance, scheduler, seed, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        sheet, table, status = counterfactual(run, text, levels, where, n, steps, guidance, scheduler, seed,
                                              _progress_feed(progress), limits)  # fmt: skip
        return (_for_screen(sheet) if sheet is not None else None), table, status

    settings_line = (
        f"Run `{run.path.name}` · the model's stored settings: {stored.scheduler}, {stored.steps} steps, "
        f"guidance {stored.guidance_scale:g} · at most {limits.max_records} barcodes, {limits.max_images} "
        f"images and {most_steps} steps per request"
    )
    with gr.Blocks(title="phenogen", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"## phenogen — from DNA barcodes to portraits\n{settings_line}")
        with gr.Tab("Paint a barcode", id="paint"):
            with gr.Row():
                with gr.Column(scale=2):
                    p_target = gr.Dropdown(target_list, value=None, label="one of this run's targets …",
                                           visible=bool(target_list), elem_id="paint-target")  # fmt: skip
                    p_text = gr.Textbox(lines=5, max_lines=12, label="… or paste a barcode or FASTA records",
                                        placeholder=">my_bird\nACACTATATCTAATCTTCGG…", elem_id="paint-text")  # fmt: skip
                    p_file = gr.File(label="… or upload a FASTA file", file_types=FASTA_TYPES, type="filepath",
                                     height=120, elem_id="paint-file")  # fmt: skip
                    p_controls = controls("paint", "barcode", 4)
                    p_go = gr.Button("Generate", variant="primary", elem_id="paint-go")
                with gr.Column(scale=3):
                    p_status = gr.Markdown(elem_id="paint-status")
                    p_gallery = gr.Gallery(label="portraits", columns=4, height=250, format="png",
                                           object_fit="contain", elem_id="paint-gallery")  # fmt: skip
                    p_table = gr.Dataframe(_empty_table(), label="what the DNA wrote (caption units: 0 = the "
                                           "average bird)", interactive=False, max_height=420,
                                           elem_id="paint-table")  # fmt: skip
            p_target.change(pick, p_target, p_text, queue=False)
            p_go.click(on_paint, [p_text, p_file, *p_controls], [p_gallery, p_table, p_status])

        with gr.Tab("Tree", id="tree"):
            if not nodes:
                gr.Markdown(f"⚠️ {tree_error}")
            else:
                with gr.Row():
                    with gr.Column(scale=2):
                        t_node = gr.Dropdown(nodes, value=nodes[0][1], label="node (ancestor, extinct, heldout "
                                             "or train tip)", elem_id="tree-node")  # fmt: skip
                        t_controls = controls("tree", "node", 4)
                        t_go = gr.Button("Paint this node", variant="primary", elem_id="tree-go")
                        t_status = gr.Markdown(elem_id="tree-status")
                        t_figure = gr.Image(tree_picture(run), label="the run's tree", format="png",
                                            interactive=False, elem_id="tree-figure")  # fmt: skip
                    with gr.Column(scale=3):
                        with gr.Row():
                            t_gallery = gr.Gallery(label="painted from the tree", columns=4, height=200,
                                                   format="png", object_fit="contain", scale=3,
                                                   elem_id="tree-gallery")  # fmt: skip
                            t_truth = gr.Image(label="true portrait", format="png", interactive=False,
                                               height=200, scale=1, elem_id="tree-truth")  # fmt: skip
                        t_table = gr.Dataframe(_empty_table(), label="its caption (caption units)",
                                               interactive=False, max_height=520, elem_id="tree-table")  # fmt: skip
                t_go.click(on_node, [t_node, *t_controls], [t_gallery, t_truth, t_table, t_status, t_figure])

        with gr.Tab("Counterfactual", id="counterfactual"):
            with gr.Row():
                with gr.Column(scale=2):
                    c_target = gr.Dropdown(target_list, value=None, label="one of this run's targets …",
                                           visible=bool(target_list), elem_id="cf-target")  # fmt: skip
                    c_text = gr.Textbox(lines=4, max_lines=10, label="… or paste one barcode",
                                        elem_id="cf-text")  # fmt: skip
                    with gr.Row():
                        c_levels = gr.CheckboxGroup(["1", "5", "20", "50"], value=["1", "5", "20"],
                                                    label="mutate % of sites (beside the barcode as given)",
                                                    elem_id="cf-levels")  # fmt: skip
                        c_where = gr.Dropdown(["random", "codon1", "codon2", "codon3"], value="random",
                                              label="which sites", elem_id="cf-where")  # fmt: skip
                    c_controls = controls("cf", "row", 4)
                    c_go = gr.Button("Paint the variants", variant="primary", elem_id="cf-go")
                with gr.Column(scale=3):
                    c_status = gr.Markdown(elem_id="cf-status")
                    c_grid = gr.Image(label="same noise in every row: what differs is the DNA", format="png", height="auto",
                                      interactive=False, elem_id="cf-grid")  # fmt: skip
                    c_table = gr.Dataframe(_empty_table(), label="what each variant wrote (caption units)",
                                           interactive=False, max_height=420, elem_id="cf-table")  # fmt: skip
            c_target.change(pick, c_target, c_text, queue=False)
            c_go.click(
                on_counterfactual, [c_text, c_levels, c_where, *c_controls], [c_grid, c_table, c_status]
            )
    demo.queue(default_concurrency_limit=1, max_size=limits.queue_size)
    return demo


def launch(demo, limits: Limits = LIMITS, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve ``demo`` on ``host:port`` (no share link, no analytics, no SSR); returns Gradio's
    ``(app, local_url, share_url)``. ``block=False`` returns at once (tests)."""
    gr = _gradio()
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # system fonts: nothing fetched
    try:
        served = demo.launch(
            server_name=host, server_port=port, share=False, prevent_thread_lock=True, inbrowser=False,
            max_file_size=limits.max_upload_bytes, ssr_mode=False, mcp_server=False, pwa=False,
            enable_monitoring=False, theme=theme, quiet=True, footer_links=["gradio", "settings"],
        )  # fmt: skip
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise InputError(
            f"--host {host} --port {port}: cannot listen there ({one_line(exc, 160)}); choose another --port"
        ) from None
    if block:
        print(f"phenogen app: serving on {served[1]} (Ctrl-C stops it)", flush=True)
        demo.block_thread()  # until Ctrl-C, then closes the server
    return served


# ---------------------------------------------------------------------------------------- command
def add_arguments(parser) -> None:
    parser.add_argument(
        "--run", required=True, metavar="DIR", help="a run directory (phenogen demo --out DIR)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only); 0.0.0.0 or a network address "
        "EXPOSES the app, and the CPU or GPU behind it, to everyone who can reach this machine",
    )
    parser.add_argument(
        "--device", default=None, help="torch device of the model (default: cuda if available)"
    )


def run(args) -> int:
    from phenogen import api

    if getattr(args, "config", None) or getattr(args, "set", None):
        raise ConfigError(
            "phenogen app takes no configuration (--config/--set); the run's pipeline stores its settings"
        )
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: choose a port from 1 to 65535")
    if not str(args.host).strip():
        raise InputError("--host: give an address, e.g. 127.0.0.1")
    the_run = api.load_run(args.run, device=args.device)
    demo = build_app(the_run)
    threading.Thread(target=_warm_up, args=(the_run,), daemon=True, name="phenogen-warm-up").start()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"phenogen app: listening on {args.host}: the app is reachable from other machines")
    launch(demo, host=args.host, port=args.port, block=True)
    return 0
