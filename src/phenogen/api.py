"""phenogen's Python API: the functions the CLI, the web app and notebooks share.

Load a trained pipeline (or a whole run directory), paint barcodes or captions, ask what a barcode
writes, paint the nodes of a run's tree, and ask "what if this DNA were different?"
(:mod:`phenogen.counterfactual`, re-exported here). Every function checks its inputs first and raises
a :class:`~phenogen.errors.PhenogenError` subclass with one readable line.

>>> # from phenogen import api
>>> # model = api.load_model("runs/demo/image/pipeline")          # or api.load_run("runs/demo").model
>>> # portraits = model.paint({"my_bird": "ACACTATATCTA..."}, images=4, seed=0)
>>> # portraits.images["my_bird"][0].save("my_bird.png"); portraits.grid().save("grid.png")
>>> # model.describe({"my_bird": "ACAC..."})["my_bird"]["body_hue"]     # what the barcode writes
>>> # run = api.load_run("runs/demo"); run.paint_nodes(["anc001"], images=2).grid()

Generation settings (scheduler, steps, guidance) default to the ones stored with the pipeline
(:mod:`phenogen.diffusion.settings`); pass any of them to override. The noise of image ``k`` of a
record is keyed by ``(seed, record id, k)`` — or by ``(seed, k)`` with ``shared_noise=True`` — so a
record painted alone, in a batch, or as an edited variant under the same id gets the same noise.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from phenogen.counterfactual import (
    attribution,
    attribution_figure,
    counterfactual_grid,
    interpolate,
    mutate,
    swap_trait,
)
from phenogen.diffusion.settings import GenerationSettings
from phenogen.errors import ConfigError, DataError, InputError, SequenceError

__all__ = [
    "GenerationSettings",
    "Portraits",
    "Model",
    "Run",
    "load_model",
    "load_run",
    "dna_prompt_embeds",
    "check_barcodes",
    "parse_fasta",
    "MAX_FASTA_BYTES",
    "RUN_LAYOUT",
    "mutate",
    "interpolate",
    "swap_trait",
    "counterfactual_grid",
    "attribution",
    "attribution_figure",
]

RUN_LAYOUT = {
    "data": "data",
    "lm": "lm",
    "lm_eval": "lm_eval",
    "image": "image",
    "generated": "generated",
    "eval": "eval",
    "sweeps": "sweeps",
    "ancestors": "ancestors",
}
"""The sub-directories of a run (``phenogen demo --out RUN``), read by :class:`Run`, the report and the app."""

MAX_FASTA_BYTES = 2_000_000
"""The largest FASTA text :func:`parse_fasta` reads (a few thousand barcodes)."""

Barcodes = Mapping[str, str] | Sequence[tuple[str, str]] | str
"""One barcode (``str``, id ``sequence``), ``{id: sequence}`` or ``[(id, sequence), ...]``."""


def _records(barcodes: Barcodes) -> list[tuple[str, str]]:
    if isinstance(barcodes, str):
        return [("sequence", barcodes)]
    if isinstance(barcodes, Mapping):
        return [(str(k), v) for k, v in barcodes.items()]
    try:
        return [(str(rid), seq) for rid, seq in barcodes]
    except (TypeError, ValueError):
        raise InputError("barcodes: give a sequence, {id: sequence} or [(id, sequence), ...]") from None


def check_barcodes(
    barcodes: Barcodes, *, source: str = "sequences", min_length: int = 1, policy: str = "mask"
) -> list[tuple[str, str]]:
    """Clean and check barcodes before any model runs: ``[(id, sequence), ...]``, upper case, U→T,
    whitespace removed, IUPAC ambiguity codes masked to ``N`` (``policy="reject"`` refuses them).

    Refused with a :class:`~phenogen.errors.SequenceError` naming ``source``, the record and the
    position: no records, duplicate ids, letters that are not DNA, gaps, all ``N``, or fewer than
    ``min_length`` bases (the model's encoder needs, see :attr:`Model.min_length`).

    >>> check_barcodes({"a": "acgu acgt"})
    [('a', 'ACGTACGT')]
    """
    from phenogen.diffusion.generate import check_records
    from phenogen.dna.seqio import clean_sequence

    records = _records(barcodes)
    seen: set[str] = set()
    out = []
    for rid, seq in records:
        if not rid.strip():
            raise SequenceError(f"{source}: a record has an empty id")
        if rid in seen:
            raise SequenceError(f"{source}: record {rid!r} appears twice; ids must be unique")
        seen.add(rid)
        if not isinstance(seq, str):
            raise SequenceError(f"{source}: record {rid!r}: expected the sequence as text")
        cleaned = clean_sequence("".join(seq.split()), record_id=rid, source=source, policy=policy)  # type: ignore[arg-type]
        if cleaned is None:
            raise SequenceError(f"{source}: record {rid!r} holds ambiguity codes (policy {policy})")
        out.append((rid, cleaned))
    check_records(out, source, min_length)
    return out


def parse_fasta(
    text: str, *, source: str = "FASTA text", max_bytes: int = MAX_FASTA_BYTES
) -> list[tuple[str, str]]:
    """Records of FASTA ``text`` (what a user pasted or uploaded), validated as ``phenogen validate`` does;
    a bare sequence without a ``>`` header becomes the record ``sequence``."""
    if not isinstance(text, str):
        raise InputError(f"{source}: expected text")
    data = text.encode("utf-8", "replace")
    if len(data) > max_bytes:
        raise InputError(f"{source}: {len(data):,} bytes, more than the {max_bytes:,} accepted")
    if not text.strip():
        raise InputError(f"{source}: empty; paste a barcode or FASTA records ('>id' then the sequence)")
    if not text.lstrip().startswith(">"):
        return [("sequence", "".join(text.split()))]
    from phenogen.dna.seqio import read_fasta

    fd, tmp = tempfile.mkstemp(suffix=".fasta", prefix="phenogen-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            result = read_fasta(tmp, policy="mask", max_bytes=max_bytes)
        except InputError as exc:  # name what the user gave, not the temporary file
            raise type(exc)(str(exc).replace(tmp, source)) from None
    finally:
        os.unlink(tmp)
    return [(r.id, r.sequence) for r in result.records]


@dataclass
class Portraits:
    """Images painted for records: ``images[record_id]`` is a list of PIL images (image ``k`` at ``k``).

    ``captions[record_id]`` is the caption each record was painted from (caption-head models: what its
    barcode writes, or the caption given), by trait name; ``None`` for other heads.
    """

    record_ids: list[str]
    images: dict[str, list[Image.Image]]
    captions: dict[str, dict[str, float]] | None
    settings: GenerationSettings
    seed: int
    shared_noise: bool = False
    sequences: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.record_ids)

    def grid(self, labels: Mapping[str, str] | None = None, traits: Sequence[str] = ()) -> Image.Image:
        """One row per record (its id, or ``labels[id]``, at the left; the values of ``traits`` of its
        caption under the id), one column per image."""
        from PIL import ImageDraw

        first = self.images[self.record_ids[0]][0]
        w, h = first.size
        n = max(len(v) for v in self.images.values())
        text = {
            rid: [(labels or {}).get(rid, rid)[:28]]
            + [
                f"{t} {self.captions[rid][t]:+.2f}"
                for t in traits
                if self.captions and t in self.captions[rid]
            ]
            for rid in self.record_ids
        }
        label_w = 8 + 6 * max(len(line) for lines in text.values() for line in lines)
        row_h = max(h, 12 * max(len(v) for v in text.values()) + 4)
        sheet = Image.new("RGB", (label_w + n * w, len(self.record_ids) * row_h), "white")
        draw = ImageDraw.Draw(sheet)
        for i, rid in enumerate(self.record_ids):
            for j, line in enumerate(text[rid]):
                draw.text((4, i * row_h + 4 + 12 * j), line, fill="black")
            for k, im in enumerate(self.images[rid]):
                sheet.paste(im, (label_w + k * w, i * row_h))
        return sheet

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write ``OUT/<record_id>_<k>.png`` (ids made file-name safe); returns the paths."""
        from phenogen.diffusion.generate import safe_name

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for rid in self.record_ids:
            for k, im in enumerate(self.images[rid]):
                p = out / f"{safe_name(rid)}_{k}.png"
                im.save(p)
                paths.append(p)
        return paths


class Model:
    """A trained DNA-to-image pipeline with the settings it was tuned with.

    Use :func:`load_model`. ``pipeline`` is the :class:`~phenogen.diffusion.pipeline.DNAToImagePipeline`.
    """

    def __init__(self, pipeline, path: Path):
        self.pipeline = pipeline
        self.path = path

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, head={self.head!r}, settings={self.settings})"

    @property
    def settings(self) -> GenerationSettings:
        """The generation settings stored with the pipeline (the thesis' when it stores none)."""
        from phenogen.diffusion.settings import THESIS

        return getattr(self.pipeline, "generation_settings", THESIS)

    @property
    def settings_source(self) -> str:
        return getattr(self.pipeline, "generation_settings_source", "the thesis' settings")

    @property
    def head(self) -> str:
        """The conditioner's head: ``caption`` (the barcode writes a caption) or ``tokens``."""
        return str(self.pipeline.conditioner.config.head)

    @property
    def caption_names(self) -> list[str]:
        """The names of the values a barcode writes (caption head); ``[]`` for other heads."""
        return self.pipeline.conditioner.caption_names if self.head == "caption" else []

    @property
    def min_length(self) -> int:
        """The shortest barcode the model's DNA encoder reads."""
        from phenogen.diffusion.generate import min_sequence_length

        return min_sequence_length(dict(self.pipeline.conditioner.config))

    @property
    def max_steps(self) -> int:
        """The most denoising steps (the noise levels the model was trained on)."""
        return int(self.pipeline.scheduler.config.get("num_train_timesteps", 1000))

    def check(self, barcodes: Barcodes, source: str = "sequences") -> list[tuple[str, str]]:
        """:func:`check_barcodes` with this model's minimum length and its DNA LM's positions."""
        from phenogen.diffusion.generate import check_lm_positions

        records = check_barcodes(barcodes, source=source, min_length=self.min_length)
        check_lm_positions(records, source, dict(self.pipeline.conditioner.config))
        return records

    def describe(self, barcodes: Barcodes) -> dict[str, dict[str, float]]:
        """What each barcode writes: ``{record_id: {trait: value}}`` (caption-head models).

        Values are in the prior's caption units (standardised traits: 0 = the average bird)."""
        self._need_captions("describe")
        records = self.check(barcodes)
        values = self.pipeline.conditioner.caption_matrix([s for _, s in records])
        names = self.caption_names
        return {
            rid: dict(zip(names, map(float, row), strict=True))
            for (rid, _), row in zip(records, values, strict=True)
        }

    def _need_captions(self, what: str) -> None:
        if self.head != "caption":
            raise ConfigError(
                f"{what} needs a caption-head model (image.cond_head = 'caption'); {self.path} has the "
                f"'{self.head}' head"
            )

    def _settings(self, scheduler, steps, guidance_scale, best_of=None) -> GenerationSettings:
        try:
            chosen = self.settings.override(scheduler, steps, guidance_scale, best_of)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if chosen.steps > self.max_steps:
            raise InputError(
                f"steps = {chosen.steps}: more than the {self.max_steps} noise levels the model was trained on"
            )
        return chosen

    def paint(
        self,
        barcodes: Barcodes,
        *,
        images: int = 1,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int = 0,
        shared_noise: bool = False,
        captions: Mapping[str, Mapping[str, float] | Sequence[float]] | None = None,
        batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
        lora_scale: float = 1.0,
        best_of: int | None = None,
    ) -> Portraits:
        """Paint ``images`` portraits per barcode (``lora_scale``: a LoRA model's LoRA weight, 0 = base).

        ``captions`` (caption-head models): paint these records from the given caption (by trait name,
        missing traits taken from what the barcode writes; or a full list of values) instead of their
        barcode. ``progress(done, total)`` is called after every denoising step. ``best_of``: candidates
        painted per portrait, the one the prior's reader reads closest to its caption kept (unset: the model's
        stored setting; :mod:`phenogen.diffusion.reader`).
        """
        from phenogen.diffusion.generate import paint

        records = self.check(barcodes)
        chosen = self._settings(scheduler, steps, guidance_scale, best_of)
        given = None
        if captions:
            self._need_captions("painting captions")
            given = self._caption_rows(records, captions)
        painted, values = paint(
            self.pipeline, records, images_per_sequence=images, steps=chosen.steps,
            guidance_scale=chosen.guidance_scale, scheduler=chosen.scheduler, seed=seed,
            batch_size=batch_size, captions=given, shared_noise=shared_noise, progress=progress,
            lora_scale=lora_scale, best_of=chosen.best_of,
        )  # fmt: skip
        return self._portraits(records, painted, values, chosen, seed, shared_noise)

    def prompt_embeds(self, barcodes: Barcodes):
        """``(prompt_embeds, negative_prompt_embeds)`` of barcodes for a stock ``StableDiffusionPipeline``
        (see :func:`dna_prompt_embeds`)."""
        return _prompt_embeds(self.pipeline.conditioner, self.check(barcodes))

    def paint_captions(
        self,
        captions: Mapping[str, Mapping[str, float] | Sequence[float]],
        *,
        images: int = 1,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int = 0,
        shared_noise: bool = False,
        progress: Callable[[int, int], None] | None = None,
        best_of: int | None = None,
    ) -> Portraits:
        """Paint captions given directly (``{record_id: {trait: value}}``, traits not named = 0, the
        average bird; or full value lists), with no barcode — e.g. captions reconstructed on a tree."""
        self._need_captions("painting captions")
        names = self.caption_names
        rows = {}
        for rid, cap in captions.items():
            rows[str(rid)] = self._caption_row(str(rid), cap, np.zeros(len(names)))
        chosen = self._settings(scheduler, steps, guidance_scale, best_of)
        from phenogen.diffusion.generate import paint

        records = [(rid, "") for rid in rows]  # no barcode: every record's caption is given
        painted, values = paint(
            self.pipeline, records, images_per_sequence=images, steps=chosen.steps,
            guidance_scale=chosen.guidance_scale, scheduler=chosen.scheduler, seed=seed,
            captions=rows, shared_noise=shared_noise, progress=progress, best_of=chosen.best_of,
        )  # fmt: skip
        return self._portraits(records, painted, values, chosen, seed, shared_noise)

    def _caption_row(self, rid: str, cap, base: np.ndarray) -> np.ndarray:
        names = self.caption_names
        if isinstance(cap, Mapping):
            unknown = sorted(set(cap) - set(names))
            if unknown:
                raise InputError(f"caption of {rid!r}: unknown trait(s) {', '.join(unknown[:5])}; the model's "
                                 f"are {', '.join(names)}")  # fmt: skip
            row = base.astype(np.float64).copy()
            for t, v in cap.items():
                row[names.index(t)] = float(v)
        else:
            row = np.asarray(cap, dtype=np.float64)
            if row.shape != (len(names),):
                raise InputError(
                    f"caption of {rid!r}: {row.size} values, the model's caption has {len(names)}"
                )
        if not np.isfinite(row).all():
            raise InputError(f"caption of {rid!r}: holds NaN or infinite values")
        return row

    def _caption_rows(self, records, captions) -> dict[str, np.ndarray]:
        ids = [rid for rid, _ in records]
        unknown = sorted(set(map(str, captions)) - set(ids))
        if unknown:
            raise InputError(
                f"captions for record(s) {', '.join(unknown[:5])} that are not among the barcodes"
            )
        written = self.pipeline.conditioner.caption_matrix([s for _, s in records])
        return {
            rid: self._caption_row(rid, captions[rid], written[i])
            for i, rid in enumerate(ids)
            if rid in captions
        }

    def _portraits(self, records, painted, values, chosen, seed, shared_noise) -> Portraits:
        ids = [rid for rid, _ in records]
        images: dict[str, list[Image.Image]] = {rid: [] for rid in ids}
        for rid, _, im in painted:
            images[rid].append(im)
        caps = None
        if values is not None:
            names = self.pipeline.conditioner.caption_names
            caps = {rid: dict(zip(names, map(float, values[i]), strict=True)) for i, rid in enumerate(ids)}
        return Portraits(ids, images, caps, chosen, seed, shared_noise, {rid: s for rid, s in records if s})


def _prompt_embeds(conditioner, records: list[tuple[str, str]]):
    import torch

    with torch.no_grad():
        modes = conditioner.training
        conditioner.eval()
        try:
            cond, mask = conditioner.encode([seq for _, seq in records])
            uncond, umask = conditioner.null_condition(len(records), cond.shape[1], device=cond.device)
        finally:
            conditioner.train(modes)
    if not (bool(mask.all()) and bool(umask.all())):
        raise InputError("this model's conditions need an attention mask, which stock Stable Diffusion pipelines "
                         "do not pass; train with image.base (fixed-length conditions) or paint with phenogen")  # fmt: skip
    return cond.float(), uncond.float()


def dna_prompt_embeds(run_dir: str | Path, sequences: Barcodes | Sequence[str], device: str | None = None):
    """``(prompt_embeds, negative_prompt_embeds)`` for a stock diffusers ``StableDiffusionPipeline``.

    The DNA conditioner of a run trained on a Stable Diffusion base (``image.base``) encodes each barcode
    to the fixed-length, fully attended tokens its UNet was fine-tuned on — CLIP's place — and the
    negative is the model's null condition (what classifier-free guidance was trained against). Passed
    as ``pipe(prompt_embeds=..., negative_prompt_embeds=...)`` with ``pipe.load_lora_weights(...)`` for a
    LoRA run, the stock pipeline paints what ``phenogen generate`` paints for the same noise (the
    generator of :func:`phenogen.diffusion.generate.image_seed`).

    ``run_dir``: ``train-image``'s OUT, its ``pipeline/`` or ``lora/``, or a run directory. Only the
    conditioner is loaded. Returns two float32 tensors ``(B, T, D)`` (``D`` = the UNet's
    ``cross_attention_dim``), in the order of ``sequences`` (a list, or a mapping id -> barcode).
    """
    from phenogen.diffusion.command_generate import check_device
    from phenogen.diffusion.components import check_component_dir
    from phenogen.diffusion.conditioning import DNAConditioner
    from phenogen.errors import CheckpointError
    from phenogen.lm.model import LOAD_ERRORS

    root = Path(run_dir)
    candidates = [root, root / "pipeline", root / "lora", root / "image" / "pipeline"]
    found = next(
        (c / "conditioner" for c in candidates if (c / "conditioner" / "config.json").is_file()), None
    )
    if found is None:
        raise CheckpointError(f"{root}: no conditioner/ (looked in ., pipeline/, lora/, image/pipeline/); "
                              "point at train-image's OUT")  # fmt: skip
    if (found.parent / "model_index.json").is_file():
        from phenogen.diffusion.pipeline import check_pipeline_dir

        check_pipeline_dir(found.parent)
    else:
        check_component_dir(found)
    if (
        isinstance(sequences, Sequence)
        and not isinstance(sequences, str)
        and all(isinstance(x, str) for x in sequences)
    ):
        sequences = [(f"#{i}", seq) for i, seq in enumerate(sequences)]  # a plain list of barcodes
    records = check_barcodes(sequences, source="sequences")
    try:
        conditioner = DNAConditioner.from_pretrained(found, local_files_only=True)
    except LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{found}: cannot load the conditioner ({' '.join(str(exc).split())[:300]})"
        ) from None
    conditioner.to(check_device(device))
    return _prompt_embeds(conditioner, records)


def load_model(path: str | Path, device: str | None = None) -> Model:
    """Load a trained pipeline: ``train-image``'s ``OUT/pipeline``, its ``OUT``, or a run directory
    (``RUN/image/pipeline``). Every file is checked first; a broken one is a
    :class:`~phenogen.errors.CheckpointError` naming it."""
    from phenogen.diffusion.command_generate import check_device
    from phenogen.diffusion.pipeline import check_pipeline_dir, load_pipeline

    given = Path(path)
    if (given / "image" / "pipeline" / "model_index.json").is_file():
        given = given / "image" / "pipeline"
    model_dir, _ = check_pipeline_dir(given)
    device = check_device(device)
    return Model(load_pipeline(model_dir, device=device), model_dir)


class Run:
    """A run directory (``phenogen demo --out RUN``, or one laid out alike): its dataset, trained
    pipeline, reconstructed tree and the truth when the data are simulated.

    The model loads on first use of :attr:`model`. Use :func:`load_run`.
    """

    def __init__(self, path: Path, device: str | None = None):
        self.path = path
        self.device = device

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def dir(self, part: str) -> Path:
        """A part of the run: one of :data:`RUN_LAYOUT` (``data``, ``image``, ``eval``, ``ancestors`` …)."""
        return self.path / RUN_LAYOUT[part]

    @property
    def pipeline_dir(self) -> Path:
        return self.dir("image") / "pipeline"

    @property
    def data_dir(self) -> Path:
        return self.dir("data")

    @property
    def ancestors_dir(self) -> Path:
        return self.dir("ancestors")

    @property
    def caption_tip_noise(self) -> float:
        """``[ancestors] caption_tip_noise`` of the run's ``config.toml`` (the default when it has none): how
        tree captions treat the tips' written captions (:func:`phenogen.phylo.portraits.tree_captions`)."""
        from phenogen.config import load_sections
        from phenogen.phylo.config import AncestorsConfig

        conf = self.path / "config.toml"
        cfg = load_sections({"ancestors": AncestorsConfig}, conf if conf.is_file() else None)["ancestors"]
        return float(cfg.caption_tip_noise)

    def metrics(self) -> dict[str, Any] | None:
        """The run's ``eval/metrics.json`` (checked as the report checks it), or ``None`` before evaluation."""
        from phenogen.fsio import read_json
        from phenogen.report.html import check_metrics

        path = self.dir("eval") / "metrics.json"
        if not path.is_file():
            return None
        return check_metrics(read_json(path, "metrics", expect=dict, error=DataError), path)

    @cached_property
    def model(self) -> Model:
        return load_model(self.pipeline_dir, device=self.device)

    @cached_property
    def dataset(self):
        from phenogen.data.dataset import load_dataset

        return load_dataset(self.data_dir)

    @cached_property
    def tree(self):
        """The run's reconstructed tree (Bio.Phylo), internal nodes named (``anc001`` …)."""
        from phenogen.phylo.tree import read_tree

        path = self.ancestors_dir / "tree.nwk"
        if not path.is_file():
            raise DataError(
                f"{self.path}: no reconstructed tree (ancestors/tree.nwk); run phenogen ancestors"
            )
        return read_tree(path)

    @cached_property
    def tip_sequences(self) -> dict[str, str]:
        """The tips' barcodes as the tree was built from them (``ancestors/input.fasta``)."""
        from phenogen.dna.seqio import read_fasta

        path = self.ancestors_dir / "input.fasta"
        return {r.id: r.sequence for r in read_fasta(path, policy="mask", allow_gaps=True).records}

    @cached_property
    def splits(self) -> dict[str, str]:
        """Tip (species) name → its split in the dataset (``train``, ``heldout``, ``extinct`` …)."""
        out: dict[str, str] = {}
        for r in self.dataset.records():
            out.setdefault(r.species, r.split)
        return out

    def nodes(self) -> list[dict[str, Any]]:
        """Every node of the tree: ``name``, ``kind`` (``ancestor`` or the tip's split), ``parent``,
        ``n_tips`` and ``depth`` (from the root), in pre-order."""
        rows = []
        parents = {}
        for clade in self.tree.find_clades(order="preorder"):
            for child in clade.clades:
                parents[child.name] = clade.name
        depths = self.tree.depths()
        for clade in self.tree.find_clades(order="preorder"):
            terminal = clade.is_terminal()
            rows.append({
                "name": clade.name,
                "kind": self.splits.get(clade.name, "tip") if terminal else "ancestor",
                "parent": parents.get(clade.name),
                "n_tips": 1 if terminal else len(clade.get_terminals()),
                "depth": round(float(depths.get(clade, 0.0)), 6),
            })  # fmt: skip
        return rows

    def node_captions(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """The caption each node is painted from: an ancestor's, the training species' written captions
        reconstructed at it under Brownian motion; a tip's, those captions placed at its place on the tree
        (not its own barcode) — as the demo paints ancestors, held-out and extinct species."""
        from phenogen.phylo.portraits import place_captions, reconstruct_captions

        model = self.model
        model._need_captions("painting tree nodes")
        known = {row["name"]: row for row in self.nodes()}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(
                f"{self.path}: no node named {', '.join(map(repr, unknown[:5]))} in ancestors/tree.nwk"
            )
        train = {t for t, s in self.splits.items() if s == "train"} & set(self.tip_sequences)
        cond = model.pipeline.conditioner
        inner = [n for n in names if known[n]["kind"] == "ancestor"]
        tips = [n for n in names if known[n]["kind"] != "ancestor"]
        out: dict[str, np.ndarray] = {}
        noise = self.caption_tip_noise
        if inner:
            out |= reconstruct_captions(cond, self.tree, self.tip_sequences, inner, train, tip_noise=noise)
        if tips:
            out |= place_captions(cond, self.tree, self.tip_sequences, train, tips, tip_noise=noise)
        names_ = model.caption_names
        return {n: dict(zip(names_, map(float, out[n]), strict=True)) for n in names}

    def paint_nodes(self, names: Sequence[str], **kwargs) -> Portraits:
        """Paint tree nodes from :meth:`node_captions` (keywords as :meth:`Model.paint_captions`)."""
        return self.model.paint_captions(self.node_captions(names), **kwargs)

    def truth_image(self, name: str) -> Path | None:
        """A rendered true portrait of a tip or (simulated data) a true node, when the run has one."""
        from phenogen.diffusion.generate import safe_name

        truth = self.data_dir / "truth" / "images"
        for kind in ("species", "extinct", "ancestor"):
            for p in (truth / kind / f"{name}.png", truth / kind / safe_name(name) / f"{name}.png"):
                if p.is_file():
                    return p
            folder = truth / kind / name
            if folder.is_dir():
                found = sorted(folder.glob("*.png"))
                if found:
                    return found[0]
        return None


def load_run(path: str | Path, device: str | None = None) -> Run:
    """Open a run directory (``phenogen demo --out RUN``); nothing heavy loads until used."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a run directory (run `phenogen demo --out {path}` first)")
    if not (path / "image" / "pipeline" / "model_index.json").is_file():
        raise InputError(f"{path}: no trained pipeline at image/pipeline; is this a phenogen run directory?")
    return Run(path, device=device)
