"""The demo's ancestors stage: reconstruct from the barcodes, paint reconstructed sequences under true ids."""

from __future__ import annotations

import json
import shutil

import pytest
from toy_clade import make_clade

from phenogen.cli import main
from phenogen.config import load_sections
from phenogen.data.dataset import load_dataset
from phenogen.demo import DemoConfig, _ancestor_targets, _ancestors_argv
from phenogen.dna.seqio import read_fasta, write_fasta
from phenogen.errors import DataError
from phenogen.phylo.truth import reconstructed_counterparts, sequence_identity

needs_fasttree = pytest.mark.skipif(
    shutil.which("fasttree") is None and shutil.which("FastTree") is None,
    reason="Debian package fasttree not installed",
)


def _targets(path) -> dict[str, tuple[str, str]]:
    """record id -> (description, sequence) of a targets FASTA."""
    return {r.id: (r.description, r.sequence) for r in read_fasta(path, policy="reject").records}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A demo run directory after the ancestors stage: toy clade, LM samples, resolved config."""
    run = tmp_path_factory.mktemp("run")
    ds = make_clade(run / "data", n_tips=14, n_extinct=3, seq_len=240)
    living = list(ds.records(("train",)))
    write_fasta(run / "lm_eval" / "samples.fasta", [(f"s{i}", r.sequence) for i, r in enumerate(living[:6])])
    (run / "config.toml").write_text(
        "[demo]\nmax_targets_per_split = 5\n\n[ancestors]\niqtree_peer = false\n"
    )
    argv = _ancestors_argv(
        run / "data", run / "ancestors", run / "lm_eval" / "samples.fasta", run / "config.toml"
    )
    assert "ancestors.with_extinct=true" in argv and "--lm-samples" in argv
    if shutil.which("fasttree") or shutil.which("FastTree"):
        assert main(argv) == 0
    return run


def _cfg(run, **overrides) -> DemoConfig:
    cfg = load_sections({"demo": DemoConfig}, run / "config.toml")["demo"]
    return DemoConfig(**(vars(cfg) | overrides))


@needs_fasttree
def test_reconstructed_targets_carry_true_ids_and_reconstructed_sequences(run_dir):
    """Ancestor targets: the dataset's record ids, the reconstructed (ungapped) sequence of the matched node."""
    counts = _ancestor_targets(run_dir, _cfg(run_dir))
    ds = load_dataset(run_dir / "data")
    targets = _targets(run_dir / "targets.fasta")
    record = json.loads((run_dir / "ancestors" / "targets.json").read_text())
    ancestors = {r.record_id: r for r in ds.records("ancestor")}
    rows = record["targets"]
    assert counts["ancestor"] == len(rows) == 5 and record["ancestor_sequences"] == "reconstructed"
    recon = {r.id: r.sequence for r in read_fasta(run_dir / "ancestors" / "ancestors.fasta",
                                                   policy="mask", allow_gaps=True).records}  # fmt: skip
    for row in rows:
        desc, seq = targets[row["record_id"]]
        true = ancestors[row["record_id"]]
        assert true.species == row["node"] and "split=ancestor" in desc
        assert seq == recon[row["recon_node"]].replace("-", "")
        assert row["identity"] == pytest.approx(sequence_identity(true.sequence, recon[row["recon_node"]]))
    assert any(targets[r["record_id"]][1] != ancestors[r["record_id"]].sequence for r in rows)
    # living and extinct targets keep their own barcodes
    for split in ("heldout", "extinct"):
        first = {}
        for r in ds.records(split):
            first.setdefault(r.species, r)
        for r in list(first.values())[:5]:
            assert targets[r.record_id][1] == r.sequence
    # with fossils every true internal node is identifiable; the stage scored the LM samples too
    assert record["n_identifiable"] == record["n_true_internal"]
    assert {"treetime", "closest_living", "lm_samples"} <= set(record["all_nodes_mean_identity"])
    assert 0.8 < record["targets_mean_identity"] <= 1.0


@needs_fasttree
def test_true_mode_writes_the_true_ancestral_sequences(run_dir):
    """[demo] ancestor_sequences = "true": the simulator's sequences, still recorded in targets.json."""
    _ancestor_targets(run_dir, _cfg(run_dir, ancestor_sequences="true"))
    ds = load_dataset(run_dir / "data")
    targets = _targets(run_dir / "targets.fasta")
    anc = list(ds.records("ancestor"))[:5]
    assert all(targets[r.record_id][1] == r.sequence for r in anc)
    assert json.loads((run_dir / "ancestors" / "targets.json").read_text())["ancestor_sequences"] == "true"


def test_counterparts_need_a_truth_comparison(tmp_path):
    """Reading counterparts from a directory without metrics.json is one DataError saying what to run."""
    with pytest.raises(DataError, match="phenogen ancestors --dataset"):
        reconstructed_counterparts(tmp_path)


def test_demo_config_rejects_unknown_ancestor_sequences():
    """ancestor_sequences must be 'reconstructed' or 'true'."""
    with pytest.raises(ValueError, match="ancestor_sequences"):
        DemoConfig(ancestor_sequences="sampled")


def test_an_explicit_with_extinct_setting_is_respected(tmp_path):
    """The demo adds fossils by default, but not over a config that says with_extinct = false."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[ancestors]\nwith_extinct = false\n")
    argv = _ancestors_argv(tmp_path / "d", tmp_path / "a", tmp_path / "missing.fasta", cfg)
    assert "ancestors.with_extinct=true" not in argv and "--lm-samples" not in argv


@needs_fasttree
def test_tree_captions_file_for_the_ancestor_targets(run_dir, tmp_path):
    """[ancestors] portrait_condition = "tree": RUN/ancestors/captions.tsv holds one caption per ancestor
    target, the BM reconstruction at its matched node from what every tip's barcode writes; "sequence"
    writes none; a tokens-head model is a ConfigError."""
    import csv

    import numpy as np
    from test_phylo import _tiny_pipeline_dir

    from phenogen.demo import _tree_captions_file
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.errors import ConfigError
    from phenogen.phylo.portraits import tree_captions

    _ancestor_targets(run_dir, _cfg(run_dir))
    model = _tiny_pipeline_dir(tmp_path / "pipeline", caption=True)
    only_ancestors = DemoConfig(tree_splits=())
    assert _tree_captions_file(run_dir, model, run_dir / "config.toml", only_ancestors) is None  # sequences
    conf = tmp_path / "c.toml"
    conf.write_text(
        (run_dir / "config.toml")
        .read_text()
        .replace("[ancestors]", '[ancestors]\nportrait_condition = "tree"')
    )
    path = _tree_captions_file(run_dir, model, conf, only_ancestors)
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    targets = json.loads((run_dir / "ancestors" / "targets.json").read_text())["targets"]
    assert [r["record_id"] for r in rows] == [t["record_id"] for t in targets]
    cond = load_pipeline(model).conditioner
    tips = {
        r.id: r.sequence for r in read_fasta(run_dir / "ancestors" / "input.fasta", policy="mask").records
    }
    written = dict(zip(tips, cond.caption_matrix(list(tips.values())), strict=True))
    expect = tree_captions(run_dir / "ancestors" / "tree.nwk", written, [t["recon_node"] for t in targets])
    for row, t in zip(rows, targets, strict=True):
        assert np.allclose(
            [float(row[k]) for k in ("size", "hue", "crest")], expect[t["recon_node"]], atol=1e-4
        )
    # caption_tips = "train": the training species' captions only, which moves every ancestor's caption
    conf_train = tmp_path / "c_train.toml"
    conf_train.write_text(conf.read_text().replace("[ancestors]", '[ancestors]\ncaption_tips = "train"'))
    with open(_tree_captions_file(run_dir, model, conf_train, only_ancestors), encoding="utf-8") as fh:
        rows_train = list(csv.DictReader(fh, delimiter="\t"))
    train = set(load_dataset(run_dir / "data").species("train"))
    assert train < set(written)
    expect_train = tree_captions(
        run_dir / "ancestors" / "tree.nwk",
        {k: v for k, v in written.items() if k in train},
        [t["recon_node"] for t in targets],
    )
    for row, t in zip(rows_train, targets, strict=True):
        got = [float(row[k]) for k in ("size", "hue", "crest")]
        assert np.allclose(got, expect_train[t["recon_node"]], atol=1e-4)
        assert not np.allclose(got, expect[t["recon_node"]], atol=1e-3)
    with pytest.raises(ConfigError, match="cond_head"):
        _tree_captions_file(run_dir, _tiny_pipeline_dir(tmp_path / "tokens"), conf)
    assert _tree_captions_file(run_dir, model, run_dir / "config.toml", only_ancestors) is None
    assert not path.exists()


def test_heldout_and_extinct_targets_are_painted_from_their_place_on_the_tree(run_dir, tmp_path):
    """[demo] tree_splits: each held-out / extinct target's caption is the BM conditional mean at its tip
    of the training species' written captions (its own left out), blended with its own caption by
    own_caption_weight; ancestors are untouched by it, and a tokens-head model gets no tree captions."""
    import csv

    import numpy as np
    from test_phylo import _tiny_pipeline_dir

    from phenogen.demo import _tree_captions_file
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.errors import DataError as _DataError
    from phenogen.phylo.portraits import place_captions, tree_captions

    _ancestor_targets(run_dir, _cfg(run_dir))
    model = _tiny_pipeline_dir(tmp_path / "pipeline", caption=True)
    ds = load_dataset(run_dir / "data")
    species = {r.record_id: r.species for s in ("heldout", "extinct") for r in ds.records(s)}
    path = _tree_captions_file(run_dir, model, run_dir / "config.toml", DemoConfig())
    with open(path, encoding="utf-8") as fh:
        rows = {r["record_id"]: r for r in csv.DictReader(fh, delimiter="\t")}
    targets = [r.id for r in read_fasta(run_dir / "targets.fasta", policy="mask").records]
    painted = [t for t in targets if t in species]
    assert painted and set(rows) == set(painted)  # portrait_condition = sequence: no ancestor rows
    assert {species[t] for t in painted} & set(ds.species("extinct"))  # fossils are tips of that tree
    cond = load_pipeline(model).conditioner
    tips = {
        r.id: r.sequence for r in read_fasta(run_dir / "ancestors" / "input.fasta", policy="mask").records
    }
    train = set(ds.species("train"))
    written = dict(zip(tips, cond.caption_matrix(list(tips.values())), strict=True))
    tree = run_dir / "ancestors" / "tree.nwk"
    expect = tree_captions(
        tree, {k: v for k, v in written.items() if k in train}, sorted(set(species.values()))
    )
    for rid in painted:
        got = [float(rows[rid][k]) for k in ("size", "hue", "crest")]
        assert np.allclose(got, expect[species[rid]], atol=1e-4)
        assert not np.allclose(got, written[species[rid]], atol=1e-3)  # not its own caption
    some = sorted({species[t] for t in painted})[:2]
    half = place_captions(cond, tree, tips, train, some, own_weight=0.5)
    for sp in some:
        assert np.allclose(half[sp], 0.5 * expect[sp] + 0.5 * written[sp], atol=1e-5)
    with pytest.raises(_DataError, match="own_weight"):
        place_captions(cond, tree, tips, train, some, own_weight=2.0)
    assert _tree_captions_file(run_dir, _tiny_pipeline_dir(tmp_path / "tokens"), run_dir / "config.toml",
                               DemoConfig()) is None  # fmt: skip
    with pytest.raises(ValueError, match="tree_splits"):
        DemoConfig(tree_splits=("ancestor",))


@needs_fasttree
def test_dataset_mode_portraits_from_the_training_species_captions(run_dir, tmp_path):
    """phenogen ancestors --dataset --model with caption_tips = "train": the chosen nodes' captions are the
    BM reconstruction from the training species' captions alone (listed in portraits.json)."""
    import numpy as np
    from Bio import Phylo
    from test_phylo import _tiny_pipeline_dir

    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.phylo.portraits import tree_captions

    model = _tiny_pipeline_dir(tmp_path / "pipeline", caption=True)
    out = tmp_path / "anc"
    argv = ["ancestors", "--dataset", str(run_dir / "data"), "--out", str(out), "--model", str(model),
            "--all-internal", "--set", "ancestors.images_per_node=1", "--set", "ancestors.num_inference_steps=1",
            "--set", 'ancestors.portrait_condition="tree"', "--set", 'ancestors.caption_tips="train"',
            "--set", "ancestors.iqtree_peer=false"]  # fmt: skip
    assert main(argv) == 0
    portraits = json.loads((out / "summary.json").read_text())["portraits"]
    train = sorted(load_dataset(run_dir / "data").species("train"))
    assert portraits["settings"]["caption_tips"] == train
    tips = {r.id: r.sequence for r in read_fasta(out / "input.fasta", policy="mask").records}
    assert set(train) < set(tips)
    cond = load_pipeline(model).conditioner
    written = dict(zip(train, cond.caption_matrix([tips[t] for t in train]), strict=True))
    nodes = sorted(portraits["captions"])
    expect = tree_captions(Phylo.read(str(out / "tree.nwk"), "newick"), written, nodes)
    for node in nodes:
        got = [portraits["captions"][node][k] for k in ("size", "hue", "crest")]
        assert np.allclose(got, expect[node], atol=1e-3), node


@needs_fasttree
def test_inverted_tip_captions_replace_the_written_ones_on_the_tree(run_dir, tmp_path):
    """[demo] tip_captions = "inverted": the training species' captions are fitted to their photos through the
    pipeline's caption decoder (RUN/ancestors/tip_captions.tsv, written and tip rows), and held-out / extinct
    targets are the BM conditional mean of those tip captions; a pipeline without a caption decoder fails."""
    import csv

    import numpy as np
    import torch
    from test_phylo import _tiny_pipeline_dir

    from phenogen.demo import _tree_captions_file
    from phenogen.diffusion.caption_decoder import CaptionDecoder
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.errors import CheckpointError
    from phenogen.phylo.portraits import place_captions

    _ancestor_targets(run_dir, _cfg(run_dir))
    model = _tiny_pipeline_dir(tmp_path / "pipeline", caption=True)
    cfg = DemoConfig(tip_captions="inverted", inversion_steps=3)
    with pytest.raises(CheckpointError, match="caption decoder"):
        _tree_captions_file(run_dir, model, run_dir / "config.toml", cfg)
    pipe = load_pipeline(model)
    dec = CaptionDecoder.from_vae(pipe.vae, n_traits=3, embed_dim=16)
    with torch.no_grad():
        for lin in dec.film:
            lin.weight.normal_(0.0, 0.3)
    pipe.register_modules(caption_decoder=dec)
    pipe.save_pretrained(model)
    path = _tree_captions_file(run_dir, model, run_dir / "config.toml", cfg)
    with open(path, encoding="utf-8") as fh:
        rows = {r["record_id"]: r for r in csv.DictReader(fh, delimiter="\t")}
    with open(run_dir / "ancestors" / "tip_captions.tsv", encoding="utf-8") as fh:
        tip_rows = list(csv.DictReader(fh, delimiter="\t"))
    train = set(load_dataset(run_dir / "data").species("train"))
    keys = ("size", "hue", "crest")
    tip = {r["species"]: np.array([float(r[k]) for k in keys]) for r in tip_rows if r["caption"] == "tip"}
    written = {
        r["species"]: np.array([float(r[k]) for k in keys]) for r in tip_rows if r["caption"] == "written"
    }
    assert set(tip) == set(written) and set(tip) <= train and tip
    assert any(not np.allclose(tip[s], written[s], atol=1e-4) for s in tip)  # inversion moved them
    cond = load_pipeline(model).conditioner
    tips = {
        r.id: r.sequence for r in read_fasta(run_dir / "ancestors" / "input.fasta", policy="mask").records
    }
    ds = load_dataset(run_dir / "data")
    species = {r.record_id: r.species for s in ("heldout", "extinct") for r in ds.records(s)}
    painted = sorted(set(rows) & set(species))
    assert painted
    targets = sorted({species[r] for r in painted})
    expect = place_captions(cond, run_dir / "ancestors" / "tree.nwk", tips, train, targets, tip_captions=tip)
    plain = place_captions(cond, run_dir / "ancestors" / "tree.nwk", tips, train, targets)
    for rid in painted:
        got = np.array([float(rows[rid][k]) for k in keys])
        assert np.allclose(got, expect[species[rid]], atol=1e-4)
    assert any(not np.allclose(expect[t], plain[t], atol=1e-4) for t in targets)
    with pytest.raises(ValueError, match="tip_captions"):
        DemoConfig(tip_captions="truth")
