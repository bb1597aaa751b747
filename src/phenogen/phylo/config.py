"""``AncestorsConfig``: the ``[ancestors]`` section of ``phenogen ancestors``.

>>> AncestorsConfig(tree_method="iqtree").tree_method
'iqtree'
>>> AncestorsConfig(rooting="outgroup")
Traceback (most recent call last):
...
ValueError: rooting 'outgroup' needs outgroup = ["TIP", ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from phenogen.config import require_finite

__all__ = ["AncestorsConfig"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class AncestorsConfig:
    """Configuration of ``phenogen ancestors`` (section ``[ancestors]``)."""

    ambiguity_policy: Literal["mask", "reject", "drop"] = field(
        default="mask",
        metadata=_help("IUPAC ambiguity codes in the FASTA: mask (-> N, missing data), reject, drop record"),
    )
    mafft_args: tuple[str, ...] = field(
        default=("--auto",), metadata=_help("MAFFT options (alignment strategy)")
    )
    tree_method: Literal["fasttree", "iqtree"] = field(
        default="fasttree",
        metadata=_help("tree inference when no --tree is given: FastTree (GTR+G) or IQ-TREE"),
    )
    align: Literal["auto", "always", "never", "codon"] = field(
        default="auto",
        metadata=_help(
            "when to run MAFFT: auto (different lengths, or equal lengths that fail the reading-frame / "
            "shifted-stretch check), always, never (the input is the alignment; same as --aligned), "
            "codon (always, codon-aware: translate under genetic_code, align the proteins, back-translate)"
        ),
    )
    genetic_code: Literal[2, 5] = field(
        default=2,
        metadata=_help(
            "NCBI genetic code of the barcodes for stop-codon checks: 2 vertebrate mitochondrial, "
            "5 invertebrate mitochondrial"
        ),
    )
    strict_tree: bool = field(
        default=False,
        metadata=_help("refuse a given tree with negative branch lengths (default: set them to 0, counted)"),
    )
    iqtree_support: Literal["none", "ufboot", "sh-alrt", "both"] = field(
        default="ufboot",
        metadata=_help(
            "branch support with tree_method = 'iqtree': UFBoot (-B 1000), SH-aLRT (-alrt 1000), both, "
            "or none; FastTree always gives its SH-like local support"
        ),
    )
    bootstrap: int = field(
        default=0,
        metadata=_help(
            "reconstruct over tree uncertainty: this many bootstrap trees (0 = off); clade frequency and the "
            "spread of every node's reconstruction over them in nodes.csv and bootstrap.json"
        ),
    )
    bootstrap_method: Literal["fasttree", "ufboot"] = field(
        default="fasttree",
        metadata=_help(
            "bootstrap trees: fasttree (columns resampled, one FastTree run over all replicates) or ufboot "
            "(IQ-TREE's UFBoot trees, -B max(1000, bootstrap) -wbt, with iqtree_model)"
        ),
    )
    bootstrap_search: Literal["auto", "ml", "me", "nj"] = field(
        default="auto",
        metadata=_help(
            "FastTree search for each bootstrap tree: ml (its ML NNIs and SPRs, as the main tree), me "
            "(-noml: neighbour-joining + minimum-evolution NNIs/SPRs), nj (-noml -nni 0 -spr 0: "
            "neighbour-joining only, ~10x faster than ml); auto = ml below 500 tips, nj from 500"
        ),
    )
    bootstrap_portraits: int = field(
        default=4,
        metadata=_help(
            "with --bootstrap and --model: paint this many distinct replicate reconstructions per chosen node "
            "(most frequent first), one portrait each: the row that shows the spread"
        ),
    )
    low_support: float = field(
        default=0.7,
        metadata=_help(
            "branch support (0-1) below which a node is flagged low_support in nodes.csv and figures"
        ),
    )
    iqtree_model: str = field(
        default="GTR+G", metadata=_help("IQ-TREE substitution model (tree inference and -asr peer)")
    )
    rooting: Literal["midpoint", "outgroup", "none"] = field(
        default="midpoint",
        metadata=_help("how to root the tree: midpoint, outgroup (see outgroup), none (keep input root)"),
    )
    outgroup: tuple[str, ...] = field(
        default=(), metadata=_help("outgroup tip names when rooting = outgroup")
    )
    reroot_given_tree: bool = field(
        default=False,
        metadata=_help("also apply `rooting` to a tree given with --tree (default: keep its root)"),
    )
    missing_branch_length: float = field(
        default=1e-6, metadata=_help("branch length given to branches without one (counted and logged)")
    )
    low_confidence: float = field(
        default=0.9, metadata=_help("per-site posterior below which a reconstructed base counts as uncertain")
    )
    iqtree_peer: bool = field(
        default=True,
        metadata=_help("truth mode: also score IQ-TREE's own -asr reconstruction when iqtree2 is installed"),
    )
    with_extinct: bool = field(
        default=False,
        metadata=_help("dataset mode: add one barcode per extinct species as a fossil tip with DNA"),
    )
    threads: int = field(default=1, metadata=_help("threads for MAFFT / IQ-TREE"))
    seed: int = field(default=0, metadata=_help("random seed (IQ-TREE, TreeTime tie-breaking, portraits)"))
    # --- portraits --------------------------------------------------------------------------------
    images_per_node: int = field(default=4, metadata=_help("portraits painted per chosen node (--model)"))
    num_inference_steps: int | None = field(
        default=None,
        metadata=_help("diffusion sampling steps for portraits; unset = the pipeline's tuned setting"),
    )
    guidance_scale: float | None = field(
        default=None,
        metadata=_help("classifier-free guidance scale for portraits; unset = the pipeline's tuned setting"),
    )
    scheduler: Literal["ddim", "ddpm", "dpm++2m-karras", "unipc", "euler", "euler-a"] | None = field(
        default=None, metadata=_help("sampler for portraits; unset = the pipeline's tuned setting")
    )
    portrait_condition: Literal["sequence", "tree"] = field(
        default="sequence",
        metadata=_help(
            "what an internal node's portrait is painted from: 'sequence' (its reconstructed barcode) or "
            "'tree' (a caption-head model only: the captions the tips' barcodes write, reconstructed at "
            "the node under Brownian motion on the tree)"
        ),
    )

    caption_tips: Literal["all", "train"] = field(
        default="all",
        metadata=_help(
            "with portrait_condition = 'tree': whose captions are reconstructed — 'all' tips, or 'train' "
            "(--dataset only): the dataset's training species, whose captions the model fitted to their "
            "photos (held-out and fossil tips' captions are predictions from DNA alone)"
        ),
    )
    caption_tip_noise: float = field(
        default=0.0,
        metadata=_help(
            "with portrait_condition = 'tree': treat the tips' captions as measurements with independent error of "
            "this variance (a fraction of the mean root-to-tip variance), so a node's caption leans on the "
            "consensus of relatives and is shrunk towards the root state rather than following the closest "
            "tip's caption; 0 = the captions are exact"
        ),
    )

    def __post_init__(self) -> None:
        require_finite(self)
        if self.caption_tip_noise < 0:
            raise ValueError(f"caption_tip_noise must be >= 0, got {self.caption_tip_noise}")
        if self.caption_tips not in ("all", "train"):
            raise ValueError(f"caption_tips must be 'all' or 'train', got {self.caption_tips!r}")
        if self.rooting == "outgroup" and not self.outgroup:
            raise ValueError("rooting 'outgroup' needs outgroup = [\"TIP\", ...]")
        if not 0 < self.missing_branch_length < 1:
            raise ValueError(f"missing_branch_length must be in (0, 1), got {self.missing_branch_length}")
        if not 0 <= self.low_support <= 1:
            raise ValueError(f"low_support must be in [0, 1], got {self.low_support}")
        if self.genetic_code not in (2, 5):
            raise ValueError(
                f"genetic_code must be 2 (vertebrate mito) or 5 (invertebrate mito), got {self.genetic_code}"
            )
        if not 0 < self.low_confidence <= 1:
            raise ValueError(f"low_confidence must be in (0, 1], got {self.low_confidence}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0 (0 = off), got {self.bootstrap}")
        if self.bootstrap_portraits < 0:
            raise ValueError(f"bootstrap_portraits must be >= 0, got {self.bootstrap_portraits}")
        for name in ("threads", "images_per_node", "num_inference_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.portrait_condition not in ("sequence", "tree"):
            raise ValueError(
                f"portrait_condition must be 'sequence' or 'tree', got {self.portrait_condition!r}"
            )
