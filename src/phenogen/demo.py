"""``phenogen demo``: the whole pipeline on the embedded synthetic clade, end to end.

simulate → train the DNA language model → score it and pick a checkpoint → reconstruct the
ancestors from the barcodes (TreeTime on a FastTree tree) → train the image model → generate
portraits of held-out living species, extinct species, ancestors (and training species, as a fit
check) → guidance/steps sweeps →
evaluate against the ground truth and baselines → HTML report.

Each stage is the same subcommand a user would run by hand (``phenogen simulate`` …), called
in-process with the demo's configuration (``configs/demo.toml`` inside the package, overridable with
``--config`` / ``--set``; ``--config thesis`` takes the shipped ``configs/thesis.toml``, the thesis' own
settings on the same data and budget), so the demo is also a worked example of the CLI. The run directory::

    RUN/data        the synthetic clade (dataset format; ground truth under data/truth)
    RUN/lm          DNA language model (checkpoints, losses, model/)
    RUN/lm_eval     its evaluation: bits/base, samples, checkpoint pick (identity by epoch)
    RUN/ancestors   `phenogen ancestors` on the barcodes a user would have (living species + extinct
                    ones as fossils with DNA): reconstructed ancestors scored against the truth
                    (metrics.json, identity_vs_depth.png) and targets.json (the ancestor targets);
                    with [ancestors] portrait_condition = "tree" (the default here) captions.tsv: each
                    ancestor target's caption reconstructed on the tree from what the tips' barcodes
                    write, which `generate --captions` paints instead of its reconstructed barcode
    RUN/image       diffusion model (pipeline/, losses, sample grids)
    RUN/targets.fasta   one barcode per target: held-out living, extinct (their barcodes), ancestors
                    (the RECONSTRUCTED sequence under the true ancestor's record id, so `evaluate`
                    scores it against the true ancestral traits; [demo] ancestor_sequences = "true"
                    uses the true ancestral sequences instead, an upper bound)
    RUN/generated   portraits (generated.tsv + PNGs)
    RUN/sweeps      guidance-scale and steps sweeps
    RUN/eval        metrics.json + plots
    RUN/report.html the report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from phenogen.errors import InputError
from phenogen.fsio import atomic_write_text

__all__ = ["DemoConfig", "run_demo", "default_config_path", "resolve_config", "shipped_presets"]


@dataclass
class DemoConfig:
    """The ``[demo]`` section: what the demo generates and how it sweeps."""

    images_per_target: int = field(default=8, metadata={"help": "portraits per target sequence"})
    max_targets_per_split: int = field(default=24, metadata={"help": "cap on targets per split (0 = all)"})
    sweep_guidance: tuple[float, ...] = field(
        default=(1.0, 3.0, 8.0, 12.0), metadata={"help": "guidance scales"}
    )
    sweep_steps: tuple[int, ...] = field(
        default=(10, 25, 50), metadata={"help": "denoising steps for the sweep"}
    )
    sweep_lora_scale: tuple[float, ...] = field(
        default=(0.0, 0.5, 1.0, 1.5),
        metadata={"help": "LoRA scales for the sweep (only for a LoRA model, image.lora_rank > 0)"},
    )
    sweep_sequences: int = field(default=3, metadata={"help": "held-out sequences shown in the sweeps"})
    tree_splits: tuple[str, ...] = field(
        default=("heldout", "extinct"),
        metadata={
            "help": "caption-head models: target splits of *tips* (heldout, extinct) painted from the captions "
            "of the training species reconstructed at their place on the ancestors stage's tree (Brownian "
            "motion, as the ancestors), blended with their own barcode's caption by own_caption_weight; () = "
            "their own barcodes only. Ancestors follow [ancestors] portrait_condition"
        },
    )
    own_caption_weight: float = field(
        default=0.0,
        metadata={
            "help": "tree_splits: weight of a tip's own written caption against its tree caption (0 = the tree's "
            "alone, 1 = its own alone)"
        },
    )
    tip_captions: Literal["written", "inverted"] = field(
        default="written",
        metadata={
            "help": "caption-head models: the training species' captions that the tree reconstructs held-out, "
            "extinct and ancestor captions from: 'written' (what their barcodes write) or 'inverted' (fitted to "
            "their photos through the frozen caption decoder, starting from the written ones; "
            "phenogen.diffusion.invert), blended with the written ones by inverted_weight"
        },
    )
    inverted_weight: float = field(
        default=1.0,
        metadata={
            "help": "tip_captions = 'inverted': weight of the inverted caption against the written one"
        },
    )
    inversion_steps: int = field(default=200, metadata={"help": "tip_captions = 'inverted': Adam steps"})
    inversion_lr: float = field(
        default=0.05, metadata={"help": "tip_captions = 'inverted': Adam learning rate"}
    )
    inversion_prior_weight: float = field(
        default=0.0,
        metadata={
            "help": "tip_captions = 'inverted': weight of the pull towards the written caption (mean squares)"
        },
    )
    ancestor_sequences: Literal["reconstructed", "true"] = field(
        default="reconstructed",
        metadata={
            "help": "barcodes painted for the ancestor targets: 'reconstructed' (TreeTime, from the living "
            "and fossil barcodes; what a user would have) or 'true' (the simulator's, an upper bound)"
        },
    )

    def __post_init__(self) -> None:
        from phenogen.config import require_finite

        require_finite(self)
        if self.images_per_target < 1:
            raise ValueError("images_per_target must be >= 1")
        if self.ancestor_sequences not in ("reconstructed", "true"):
            raise ValueError(
                f"ancestor_sequences must be 'reconstructed' or 'true', got {self.ancestor_sequences!r}"
            )
        bad = [t for t in self.tree_splits if t not in ("heldout", "extinct")]
        if bad:
            raise ValueError(f"tree_splits takes heldout and extinct, got {', '.join(bad)}")
        if not 0.0 <= self.own_caption_weight <= 1.0:
            raise ValueError(f"own_caption_weight must be in [0, 1], got {self.own_caption_weight}")
        if self.tip_captions not in ("written", "inverted"):
            raise ValueError(f"tip_captions must be 'written' or 'inverted', got {self.tip_captions!r}")
        if not 0.0 <= self.inverted_weight <= 1.0:
            raise ValueError(f"inverted_weight must be in [0, 1], got {self.inverted_weight}")
        if self.inversion_steps < 0 or self.inversion_lr <= 0 or self.inversion_prior_weight < 0:
            raise ValueError("inversion_steps and inversion_prior_weight must be >= 0, inversion_lr > 0")
        if self.sweep_sequences < 0 or self.max_targets_per_split < 0:
            raise ValueError("sweep_sequences and max_targets_per_split must be >= 0")


def default_config_path() -> Path:
    return Path(str(resources.files("phenogen") / "configs" / "demo.toml"))


def shipped_presets() -> list[str]:
    """Names of the configurations shipped with the package (``configs/NAME.toml``): demo, thesis …"""
    root = resources.files("phenogen") / "configs"
    return sorted(p.name.removesuffix(".toml") for p in root.iterdir() if p.name.endswith(".toml"))


def resolve_config(value: str | Path | None) -> Path | None:
    """``--config`` → a file: an existing path as given, else a bare name of a shipped preset
    (``thesis`` → ``configs/thesis.toml`` inside the package); ``None`` stays ``None`` (demo.toml)."""
    from phenogen.errors import ConfigError

    if value is None:
        return None
    path = Path(value)
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path  # a file the user named (a missing one is load_sections' clear error)
    if path.name in shipped_presets():
        return Path(str(resources.files("phenogen") / "configs" / f"{path.name}.toml"))
    raise ConfigError(f"--config {value}: no such file, and no shipped preset of that name (shipped: "
                      f"{', '.join(shipped_presets())})")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="run directory (created)")
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier demo run in DIR (never a foreign directory)"
    )
    parser.add_argument("--skip-report", action="store_true", help="stop after the evaluation")
    parser.epilog = f"--config also takes a shipped preset by name: {', '.join(shipped_presets())}"


class _Stages:
    """Runs subcommands in-process, timing each and printing one progress line per stage."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    def __call__(self, name: str, argv: list[str]) -> None:
        from phenogen.cli import main

        self.done += 1
        print(
            f"\n[demo {self.done}/{self.total}] {name}: phenogen {' '.join(argv)}",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.perf_counter()
        code = main(argv)
        self.times[name] = time.perf_counter() - t0
        elapsed = time.perf_counter() - self.start
        print(f"[demo] {name} took {self.times[name]:.0f} s (total {elapsed / 60:.1f} min)", file=sys.stderr)
        if code:
            raise InputError(f"demo stage {name!r} failed (exit {code}); see the message above")

    def quiet(self, name: str, argv: list[str]) -> None:
        """A sub-step: run without a numbered banner (sweeps)."""
        from phenogen.cli import main

        if main(argv):
            raise InputError(f"demo step {name!r} failed; see the message above")


def _ancestors_argv(data: Path, anc_dir: Path, lm_samples: Path, resolved: Path) -> list[str]:
    """``phenogen ancestors`` on the dataset, with extinct species as fossils with DNA (unless the config
    sets ``ancestors.with_extinct``) and the DNA model's samples scored beside it when they exist."""
    import tomllib

    argv = ["ancestors", "--dataset", str(data), "--out", str(anc_dir), "--config", str(resolved)]
    if lm_samples.is_file():
        argv += ["--lm-samples", str(lm_samples)]
    with open(resolved, "rb") as fh:
        if "with_extinct" not in tomllib.load(fh).get("ancestors", {}):
            argv += ["--set", "ancestors.with_extinct=true"]
    return argv


def _write_targets(
    data_dir: Path,
    out: Path,
    cap: int,
    reconstructed: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """One barcode per target (first individual of each species / each ancestral node), training
    species last (scored as the fit check).

    With ``reconstructed`` (true node -> counterpart, from
    :func:`phenogen.phylo.truth.reconstructed_counterparts`) an ancestor target carries the
    reconstructed sequence under the true ancestor's record id, and ancestors the data cannot
    identify are left out. Returns the counts per split and one row per ancestor target.
    """
    from phenogen.data.dataset import load_dataset

    ds = load_dataset(data_dir)
    counts, rows = {}, []
    with open(out, "w", encoding="utf-8") as fh:
        # training species too: whether the model can paint the species it saw (a fit check; stop 12
        # found the demo's portraits of training species worse than the mean bird this way)
        for split in ("heldout", "extinct", "ancestor", "train"):
            seen: dict[str, str] = {}
            for rec in ds.records(split):
                if rec.species in seen or (cap and len(seen) >= cap):
                    continue
                seq, note = rec.sequence, ""
                if split == "ancestor" and reconstructed is not None:
                    match = reconstructed.get(rec.species)
                    if match is None:
                        continue  # not identifiable from the barcodes: no reconstructed counterpart
                    seq, note = match["sequence"], f" reconstructed={match['recon_node']}"
                    rows.append(
                        {"record_id": rec.record_id, "node": rec.species}
                        | {k: match[k] for k in ("recon_node", "clade_match", "depth", "identity")}
                    )
                seen[rec.species] = rec.record_id
                fh.write(f">{rec.record_id} split={split}{note}\n{seq}\n")
            counts[split] = len(seen)
    return counts, rows


def _ancestor_targets(out: Path, cfg: DemoConfig) -> dict[str, int]:
    """Write RUN/targets.fasta (reconstructed or true ancestors) and RUN/ancestors/targets.json."""
    from phenogen.phylo.truth import reconstructed_counterparts

    anc_dir = out / "ancestors"
    matched = reconstructed_counterparts(anc_dir)
    use = matched if cfg.ancestor_sequences == "reconstructed" else None
    counts, rows = _write_targets(out / "data", out / "targets.fasta", cfg.max_targets_per_split, use)
    scored = json.loads((anc_dir / "metrics.json").read_text(encoding="utf-8"))["ancestors"]
    idents = [r["identity"] for r in rows if r["identity"] is not None]
    record = {
        "ancestor_sequences": cfg.ancestor_sequences,
        "method": "treetime",
        "targets": rows,
        "targets_mean_identity": sum(idents) / len(idents) if idents else None,
        "all_nodes_mean_identity": {m: v["mean"] for m, v in scored["summary"].items()},
        "n_identifiable": scored["n_identifiable"],
        "n_true_internal": scored["n_true_internal"],
        "clade_match_fraction": scored["clade_match_fraction"],
    }
    atomic_write_text(anc_dir / "targets.json", json.dumps(record, indent=1) + "\n")
    if use is not None:
        mean = record["targets_mean_identity"]
        print(
            f"[demo] ancestor targets: {len(rows)} reconstructed sequences, identity with the true "
            f"ancestors {mean:.4f} (all {scored['n_identifiable']} nodes: "
            f"{record['all_nodes_mean_identity']['treetime']:.4f})",
            file=sys.stderr,
        )
    return counts


def _tree_captions_file(
    out: Path, pipeline: Path, resolved: Path, demo: DemoConfig | None = None
) -> Path | None:
    """``[ancestors] portrait_condition = "tree"``: write RUN/ancestors/captions.tsv, the caption of each
    ancestor target reconstructed on the ancestors stage's tree from the captions the tips' barcodes
    write (:func:`phenogen.phylo.portraits.tree_captions`); with ``[demo] tree_splits`` the held-out and
    extinct targets too, each at its own tip (:func:`phenogen.phylo.portraits.place_captions`); ``None``
    when nothing is painted from the tree."""
    from phenogen.config import load_sections
    from phenogen.diffusion.conditioning import DNAConditioner
    from phenogen.diffusion.generate import write_captions
    from phenogen.dna.seqio import read_fasta
    from phenogen.phylo.command import training_species
    from phenogen.phylo.config import AncestorsConfig
    from phenogen.phylo.portraits import reconstruct_captions

    anc = out / "ancestors"
    path = anc / "captions.tsv"
    cfg = load_sections({"ancestors": AncestorsConfig}, resolved)["ancestors"]
    demo = demo or DemoConfig()
    cond = DNAConditioner.from_pretrained(pipeline / "conditioner").eval()
    splits = demo.tree_splits if cond.config.head == "caption" else ()
    if cfg.portrait_condition != "tree" and not splits:
        path.unlink(missing_ok=True)  # a rerun into the same directory: no stale captions
        return None
    tips = {r.id: r.sequence for r in read_fasta(anc / "input.fasta", policy="mask", allow_gaps=True).records}
    captions: dict[str, Any] = {}
    train = training_species(out / "data")
    given = (
        _inverted_tip_captions(out, pipeline, cond, tips, train, demo)
        if demo.tip_captions == "inverted"
        else None
    )
    if cfg.portrait_condition == "tree":
        targets = json.loads((anc / "targets.json").read_text(encoding="utf-8"))["targets"]
        used = train if cfg.caption_tips == "train" else None
        recon = reconstruct_captions(cond, anc / "tree.nwk", tips, [t["recon_node"] for t in targets], used,
                                     tip_captions=given, tip_noise=cfg.caption_tip_noise)  # fmt: skip
        captions |= {t["record_id"]: recon[t["recon_node"]] for t in targets}
        n_used = len(tips) if used is None else len(used & set(tips))
        print(f"[demo] ancestor targets painted from tree captions ({len(targets)} nodes, {n_used} of {len(tips)} "
              "tips)", file=sys.stderr)  # fmt: skip
    if splits:
        from phenogen.data.dataset import load_dataset
        from phenogen.phylo.portraits import place_captions

        species = {r.record_id: r.species for r in load_dataset(out / "data").records(tuple(splits))}
        wanted = {}
        for line in (out / "targets.fasta").read_text(encoding="utf-8").splitlines():
            if line.startswith(">") and any(f"split={s}" in line for s in splits):
                rid = line[1:].split()[0]
                if species.get(rid) in tips:
                    wanted[rid] = species[rid]
        placed = place_captions(cond, anc / "tree.nwk", tips, train,
                                sorted(set(wanted.values())), own_weight=demo.own_caption_weight,
                                tip_captions=given, tip_noise=cfg.caption_tip_noise)  # fmt: skip
        captions |= {rid: placed[sp] for rid, sp in wanted.items()}
        print(f"[demo] {len(wanted)} {' and '.join(splits)} targets painted from their place on the tree "
              f"(own caption weight {demo.own_caption_weight:g})", file=sys.stderr)  # fmt: skip
    write_captions(path, cond.caption_names, captions)
    return path


def _inverted_tip_captions(
    out: Path, pipeline: Path, cond, tips: dict[str, str], train: set[str], demo: DemoConfig
) -> dict[str, Any]:
    """``[demo] tip_captions = "inverted"``: each training species' caption fitted to its photos through the
    pipeline's frozen caption decoder, from what its tip barcode writes (:mod:`phenogen.diffusion.invert`),
    blended with that by ``inverted_weight``; written to RUN/ancestors/tip_captions.tsv (``written`` and
    ``inverted`` rows per species) and returned as ``species -> caption``. No true trait is read."""
    import numpy as np

    from phenogen.diffusion.invert import invert_species_captions
    from phenogen.phylo.align import ungap

    t0 = time.perf_counter()
    names = sorted(train & set(tips))
    written = dict(zip(names, cond.caption_matrix([ungap(tips[t]) for t in names]), strict=True))
    inverted = invert_species_captions(pipeline, out / "data", written, steps=demo.inversion_steps,
                                       lr=demo.inversion_lr, prior_weight=demo.inversion_prior_weight)  # fmt: skip
    w = demo.inverted_weight
    used = {t: (1 - w) * written[t] + w * np.asarray(inverted[t]) for t in names if t in inverted}
    lines = ["\t".join(["species", "caption", *cond.caption_names])]
    for t in used:
        lines += ["\t".join([t, kind, *(f"{v:.6g}" for v in row)]) for kind, row in (("written", written[t]),
                                                                                   ("tip", used[t]))]  # fmt: skip
    atomic_write_text(out / "ancestors" / "tip_captions.tsv", "\n".join(lines) + "\n")
    print(f"[demo] tip captions of {len(used)} training species inverted from their photos "
          f"({demo.inversion_steps} steps, weight {w:g}, {time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
    return used


def tree_caption_tips(run: Path) -> str | None:
    """Whose captions a demo run's ancestor targets were reconstructed from ("every tip" or "the
    training species"); ``None`` when they were painted from sequences."""
    from phenogen.config import load_sections
    from phenogen.phylo.config import AncestorsConfig

    if not (run / "generated" / "captions.tsv").is_file():
        return None
    conf = run / "config.toml"
    cfg = load_sections({"ancestors": AncestorsConfig}, conf if conf.is_file() else None)["ancestors"]
    return "the training species" if cfg.caption_tips == "train" else "every tip"


def _sweep_grid(run: Path, name: str, values: list, dirs: list[Path]) -> None:
    """Compose one grid: rows = sequences, columns = setting values."""
    import csv

    from PIL import Image, ImageDraw

    columns = []
    for d in dirs:
        with open(d / "generated.tsv", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["k"] == "0"]
        columns.append([Image.open(d / r["image"]).convert("RGB") for r in rows])
    n_rows, cell = len(columns[0]), columns[0][0].width
    sheet = Image.new("RGB", (len(columns) * cell, n_rows * cell + 14), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (value, images) in enumerate(zip(values, columns, strict=True)):
        draw.text((c * cell + 3, 1), f"{name}={value}", fill="black")
        for r, image in enumerate(images):
            sheet.paste(image, (c * cell, 14 + r * cell))
    sheet.save(run / "sweeps" / f"{name}.png")


def run_demo(out: Path, config_file: Path | None, overrides: list[str], skip_report: bool = False) -> dict:
    from phenogen.config import load_sections, merge_to_toml, save_resolved

    out.mkdir(parents=True, exist_ok=True)
    # One resolved TOML for every stage: the file's sections with all --set overrides applied.
    # Each command reads the sections it knows from it, so `--set lm.lr=1e-3` reaches train-lm only.
    resolved = out / "config.toml"
    atomic_write_text(resolved, merge_to_toml(config_file or default_config_path(), overrides))
    cfg = load_sections({"demo": DemoConfig}, resolved)["demo"]
    common = ["--config", str(resolved)]
    save_resolved({"demo": cfg}, out, name="demo_config.json", overrides=overrides)
    stage = _Stages(total=8 if not skip_report else 7)
    data, lm, image, gen = out / "data", out / "lm", out / "image", out / "generated"

    stage("simulate", ["simulate", "--out", str(data), "--force", *common])
    stage("train-lm", ["train-lm", "--data", str(data), "--out", str(lm), *common])
    stage(
        "evaluate-dna",
        [
            "evaluate-dna",
            "--model",
            str(lm),
            "--data",
            str(data),
            "--out",
            str(out / "lm_eval"),
            "--select-checkpoints",
            *common,
        ],
    )
    stage("ancestors", _ancestors_argv(data, out / "ancestors", out / "lm_eval" / "samples.fasta", resolved))
    stage(
        "train-image",
        [
            "train-image",
            "--data",
            str(data),
            "--out",
            str(image),
            *common,
            "--set",
            f"image.lm_model={json.dumps(str(lm / 'model'))}",
        ],
    )
    counts = _ancestor_targets(out, cfg)
    print(f"[demo] targets: {counts}", file=sys.stderr)
    pipeline = image / "pipeline"
    from_tree = _tree_captions_file(out, pipeline, resolved, cfg)
    stage(
        "generate",
        ["generate", "--model", str(pipeline), "--fasta", str(out / "targets.fasta"), "--out", str(gen),
         "--n", str(cfg.images_per_target), *common, *(["--captions", str(from_tree)] if from_tree else [])],
    )  # fmt: skip
    _run_sweeps(stage, out, pipeline, cfg, common)
    stage(
        "evaluate",
        ["evaluate", "--data", str(data), "--generated", str(gen), "--out", str(out / "eval"),
         "--sequence-metrics", str(out / "lm_eval" / "metrics.json"), *common],
    )  # fmt: skip
    if not skip_report:
        stage("report", ["report", "--run", str(out)])
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    summary = {"stage_seconds": stage.times, "total_minutes": (time.perf_counter() - stage.start) / 60}
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    _print_headline(out, metrics, summary)
    return metrics


def _run_sweeps(stage: _Stages, out: Path, pipeline: Path, cfg: DemoConfig, common: list[str]) -> None:
    """Guidance-scale and steps sweeps (and, for a LoRA model, a LoRA-scale sweep) on a few held-out
    sequences, as practitioners tune SD."""
    from phenogen.diffusion.lora import LORA_WEIGHTS

    sweeps = out / "sweeps"
    sweeps.mkdir(parents=True, exist_ok=True)
    lines = (out / "targets.fasta").read_text(encoding="utf-8").splitlines()
    pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2) if "split=heldout" in lines[i]]
    fasta = sweeps / "sweep.fasta"
    atomic_write_text(fasta, "".join(f"{h}\n{s}\n" for h, s in pairs[: cfg.sweep_sequences]))
    if not pairs or cfg.sweep_sequences == 0:
        return
    sweeps_to_run = [("guidance", cfg.sweep_guidance, "--guidance"), ("steps", cfg.sweep_steps, "--steps")]
    if (pipeline / LORA_WEIGHTS).is_file() and cfg.sweep_lora_scale:
        sweeps_to_run.append(("lora_scale", cfg.sweep_lora_scale, "--lora-scale"))
    for name, values, flag in sweeps_to_run:
        dirs = []
        for value in values:
            d = sweeps / f"{name}_{value}"
            argv = [
                "generate",
                "--model",
                str(pipeline),
                "--fasta",
                str(fasta),
                "--out",
                str(d),
                "--n",
                "1",
                flag,
                str(value),
            ]
            stage.quiet(f"sweep {name}={value}", [*argv, *common])
            dirs.append(d)
        _sweep_grid(out, name, list(values), dirs)


def _print_headline(out: Path, metrics: dict, summary: dict) -> None:
    from phenogen.evaluate.steps import rmse_text
    from phenogen.report.html import verdict_lines

    print(f"\nphenogen demo finished in {summary['total_minutes']:.1f} min", flush=True)
    for line in verdict_lines(metrics):
        print(f"  {line}")
    splits = metrics.get("splits", {})
    for split in ("heldout", "extinct", "ancestor", "train"):
        methods = splits.get(split, {}).get("methods", {})
        if not methods:
            continue
        row = "  ".join(
            f"{m}={rmse_text(methods[m]).replace(' ', '')}"
            for m in ("generated", "nearest", "random", "mean", "oracle", "truth")
            if m in methods and methods[m].get("trait_rmse") is not None
        )
        print(f"  trait RMSE [{split}]: {row}")
        gen = methods.get("generated", {})
        if gen.get("top5") is not None:
            print(
                f"  retrieval [{split}]: top-1 {gen['top1']:.2f}  top-5 {gen['top5']:.2f}  (chance top-5 {gen.get('chance_top5', float('nan')):.2f})"
            )
        named = {m: methods.get(m, {}).get("top1_traits") for m in ("generated", "oracle", "truth")}
        if named["generated"] is not None:
            others = ", ".join(
                f"{k} {v:.2f}"
                for k, v in (("oracle vector", named["oracle"]), ("own photos", named["truth"]))
                if v is not None
            )
            print(f"  named from the true trait table [{split}]: top-1 {named['generated']:.2f}  ({others})")
    readout = (metrics.get("caption_readout") or {}).get("splits", {})
    if readout:
        row = "  ".join(f"{s}={v['mean_r']:.2f}" for s, v in readout.items() if v.get("mean_r") is not None)
        print(f"  what the DNA wrote vs the true traits (mean Pearson r): {row}")
    anc = out / "ancestors" / "targets.json"
    if anc.is_file():
        rec = json.loads(anc.read_text(encoding="utf-8"))
        row = "  ".join(f"{m}={v:.4f}" for m, v in rec["all_nodes_mean_identity"].items() if v is not None)
        print(f"  ancestral sequences, identity with the truth ({rec['n_identifiable']} nodes): {row}")
        how = f"{rec['ancestor_sequences']} sequences"
        if tips := tree_caption_tips(out):
            how = f"the captions of {tips}, reconstructed on the tree"
        print(f"  ancestor targets painted from: {how}")
    report = out / "report.html"
    print(f"  metrics: {out / 'eval' / 'metrics.json'}")
    if report.exists():
        print(f"  report:  {report}")


def _demo_sections() -> dict[str, type]:
    """Every configuration section a demo stage reads, by name."""
    from phenogen.diffusion.config import GenerateConfig, ImageConfig
    from phenogen.evaluate.config import EvaluateConfig
    from phenogen.lm.config import DnaEvalConfig, LMConfig, SampleConfig
    from phenogen.phylo.config import AncestorsConfig
    from phenogen.report.command import ReportConfig
    from phenogen.sim.config import SimConfig

    return {"demo": DemoConfig, "sim": SimConfig, "lm": LMConfig, "sample": SampleConfig,
            "dna_eval": DnaEvalConfig, "ancestors": AncestorsConfig, "image": ImageConfig,
            "generate": GenerateConfig, "evaluate": EvaluateConfig, "report": ReportConfig}  # fmt: skip


def check_config(config_file: Path | None, overrides: list[str]) -> None:
    """Resolve every section the stages read (file ← ``--set``), so that a typo fails before anything runs."""
    import tomllib

    from phenogen.config import load_sections, parse_override
    from phenogen.errors import ConfigError
    from phenogen.fsio import read_text

    specs = _demo_sections()
    config = config_file or default_config_path()
    by_section: dict[str, list[str]] = {name: [] for name in specs}
    for text in overrides:
        section = parse_override(text)[0]
        if section not in specs:
            raise ConfigError(
                f"--set {text!r}: the demo reads no section [{section}]; its sections are {', '.join(specs)}"
            )
        by_section[section].append(text)
    for name, cls in specs.items():
        load_sections({name: cls}, config, by_section[name])
    unknown = sorted(set(tomllib.loads(read_text(config, "config file", error=ConfigError))) - set(specs))
    if unknown:
        raise ConfigError(
            f"config file {config}: the demo reads no section [{unknown[0]}]; its sections are {', '.join(specs)}"
        )


def run(args: argparse.Namespace) -> int:
    from phenogen.fsio import check_output_dir, prepare_output_dir

    check_output_dir(args.out, force=args.force)
    config_file = resolve_config(args.config) if args.config else None
    check_config(config_file, list(args.set))  # a typo in --set must not cost the previous run
    prepare_output_dir(args.out, "demo", force=args.force)  # --force clears only a phenogen run directory
    run_demo(args.out, config_file, list(args.set), args.skip_report)
    return 0
