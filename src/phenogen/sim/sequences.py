"""COI-like barcodes evolved along the species tree with a codon model (MG94 × HKY, F3x4, + Γ).

Choices (documented because every test and benchmark leans on them):

* **Root.** The protein of the root is :data:`COI_BARCODE_PROTEIN`, the consensus of the 219 amino
  acids encoded by the 29 full-length (658 bp) barcodes of the USNM bird COI data (Schindel et al.
  2017, ``data/usnm_birds_coi``), tiled or trimmed to ``seq_length / 3`` codons. It is
  back-translated codon by codon, drawing among synonymous codons with the codon usage of the 2,962
  unambiguous USNM barcodes (:data:`BIRD_COI_CODON_USAGE`), so the root is a realistic open reading
  frame with no stop codon under the vertebrate mitochondrial code (NCBI table 2).
* **Stop codons.** The Markov chain runs on the 60 *sense* codons of table 2; a substitution that
  would create TAA, TAG, AGA or AGG has rate 0. Every node's sequence is therefore an ORF by
  construction (no rejection sampling needed).
* **Substitution model.** A single-nucleotide change at codon position ``k`` from codon ``i`` to
  ``j`` has rate ``mu_k * pi_k(new base) * kappa^[transition] * omega^[amino acid changes]``
  (Muse–Gaut 1994 with HKY transition bias and position-specific base frequencies ``pi_k`` from the
  USNM codon usage). ``omega`` < 1 is purifying selection: non-synonymous changes are accepted with
  probability ``omega`` relative to synonymous ones, which is what makes third codon positions evolve
  fastest, as in real COI. Rates vary across codons by a discrete gamma (mean-of-bin rates, Yang
  1994), each codon keeping its category along the whole tree. The rate matrix is scaled to one
  expected substitution per *nucleotide* site per unit branch length.
* **Branches.** ``P(t) = expm(Q r t)`` for each rate category ``r`` is computed from one symmetric
  eigendecomposition of the reversible ``Q``; each branch then draws every codon of the child from
  its parent's row: exact, vectorised, a few milliseconds for the whole clade.

>>> import numpy as np
>>> model = CodonModel.build(kappa=10.0, omega=0.05, position_rates=(1, 1, 1), gamma_shape=0.5, gamma_categories=4)
>>> root = root_codons(219, np.random.default_rng(0))
>>> len(decode(root)), round(model.rate_per_site(), 6)
(657, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phenogen.dna.codons import codon_table

__all__ = [
    "COI_BARCODE_PROTEIN",
    "BIRD_COI_CODON_USAGE",
    "SENSE_CODONS",
    "CodonModel",
    "discrete_gamma_rates",
    "root_codons",
    "evolve_branch",
    "evolve_tree",
    "decode",
    "encode",
    "pairwise_identity",
]

# Consensus translation (NCBI table 2) of the 29 full-length 658-bp USNM bird barcodes, frame 2.
COI_BARCODE_PROTEIN = (
    "TLYLIFGAWAGMVGTALSLLIRAELGQPGTLLGDDQIYNVIVTAHAFVMIFFMVMPIMIGGFGNWLVPLMIGAPDMAFPRMNNMSFWLLPPSFL"
    "LLLASSTVEAGVGTGWTVYPPLAGNLAHAGASVDLAIFSLHLAGVSSILGAINFITTAINMKPPALSQYQTPLFVWSVLITAVLLLLSLPVLAAG"
    "ITMLLTDRNLNTTFFDPAGGGDPVLYQHLF"
)
# In-frame codon counts of the 2,962 unambiguous USNM bird COI barcodes (Schindel et al. 2017).
BIRD_COI_CODON_USAGE: dict[str, int] = {
    "AAA": 2923, "AAC": 21494, "AAG": 47, "AAT": 5125, "ACA": 17374, "ACC": 13838, "ACG": 966,
    "ACT": 8617, "AGC": 5462, "AGT": 536, "ATA": 27912, "ATC": 30882, "ATG": 4880, "ATT": 15775,
    "CAA": 13323, "CAC": 6628, "CAG": 1351, "CAT": 5078, "CCA": 20145, "CCC": 15189, "CCG": 1156,
    "CCT": 7867, "CGA": 4519, "CGC": 2330, "CGG": 293, "CGT": 1718, "CTA": 44191, "CTC": 28679,
    "CTG": 6720, "CTT": 15805, "GAA": 5355, "GAC": 17041, "GAG": 568, "GAT": 3545, "GCA": 23859,
    "GCC": 30639, "GCG": 1141, "GCT": 14360, "GGA": 30597, "GGC": 14997, "GGG": 5676, "GGT": 10387,
    "GTA": 17349, "GTC": 15752, "GTG": 2441, "GTT": 7509, "TAC": 10943, "TAT": 3327, "TCA": 11064,
    "TCC": 13568, "TCG": 431, "TCT": 4939, "TGA": 13928, "TGC": 0, "TGG": 801, "TGT": 7, "TTA": 8879,
    "TTC": 29156, "TTG": 575, "TTT": 9404,
}  # fmt: skip

_FORWARD, _STOPS = codon_table(2)
SENSE_CODONS: tuple[str, ...] = tuple(sorted(_FORWARD))  # the 60 sense codons of table 2
_INDEX = {c: i for i, c in enumerate(SENSE_CODONS)}
_BASES = "ACGT"
_PURINES = frozenset("AG")


def discrete_gamma_rates(shape: float, categories: int) -> np.ndarray:
    """Mean rate of each of ``categories`` equal-probability bins of Gamma(shape, rate=shape) (mean 1)."""
    if categories == 1:
        return np.ones(1)
    from scipy.special import gammainc
    from scipy.stats import gamma

    edges = gamma.ppf(np.arange(1, categories) / categories, a=shape, scale=1.0 / shape)
    cdf = np.concatenate([[0.0], gammainc(shape + 1.0, edges * shape), [1.0]])
    rates = categories * np.diff(cdf)
    return rates / rates.mean()


def _position_frequencies(usage: dict[str, int]) -> np.ndarray:
    """Base frequencies at codon positions 1-3 (rows) from codon counts; (3, 4), A C G T."""
    freqs = np.full((3, 4), 1.0)  # pseudocount
    for codon, count in usage.items():
        for k, base in enumerate(codon):
            freqs[k, _BASES.index(base)] += count
    return freqs / freqs.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class CodonModel:
    """A reversible codon substitution model with discrete gamma rates across codons.

    Attributes
    ----------
    q : numpy.ndarray
        (60, 60) rate matrix on :data:`SENSE_CODONS`, scaled to 1 substitution per nucleotide site.
    pi : numpy.ndarray
        (60,) stationary codon frequencies.
    rates : numpy.ndarray
        (K,) gamma category rates (mean 1).
    """

    q: np.ndarray
    pi: np.ndarray
    rates: np.ndarray
    _eigvals: np.ndarray
    _left: np.ndarray  # D^{-1/2} U
    _right: np.ndarray  # U^T D^{1/2}

    @classmethod
    def build(
        cls,
        kappa: float,
        omega: float,
        position_rates: Sequence[float],
        gamma_shape: float,
        gamma_categories: int,
    ) -> CodonModel:
        """Build the MG94 × HKY (F3x4) model; see the module docstring."""
        pos_freq = _position_frequencies(BIRD_COI_CODON_USAGE)
        n = len(SENSE_CODONS)
        pi = np.array(
            [np.prod([pos_freq[k, _BASES.index(b)] for k, b in enumerate(c)]) for c in SENSE_CODONS]
        )
        pi /= pi.sum()
        q = np.zeros((n, n))
        for i, a in enumerate(SENSE_CODONS):
            for k in range(3):
                for base in _BASES:
                    if base == a[k]:
                        continue
                    b = a[:k] + base + a[k + 1 :]
                    if b in _STOPS:
                        continue  # stop-creating substitutions never happen
                    rate = position_rates[k] * pos_freq[k, _BASES.index(base)]
                    if (base in _PURINES) == (a[k] in _PURINES):
                        rate *= kappa  # transition
                    if _FORWARD[a] != _FORWARD[b]:
                        rate *= omega  # non-synonymous: purifying selection
                    q[i, _INDEX[b]] = rate
        np.fill_diagonal(q, -q.sum(axis=1))
        q /= -(pi @ np.diag(q)) / 3.0  # one substitution per nucleotide site per unit length
        # Reversible: S = D^{1/2} Q D^{-1/2} is symmetric, so P(t) = D^{-1/2} U e^{Λt} U^T D^{1/2}.
        d_half = np.sqrt(pi)
        sym = d_half[:, None] * q / d_half[None, :]
        eigvals, u = np.linalg.eigh(0.5 * (sym + sym.T))
        return cls(
            q=q,
            pi=pi,
            rates=discrete_gamma_rates(gamma_shape, gamma_categories),
            _eigvals=eigvals,
            _left=u / d_half[:, None],
            _right=u.T * d_half[None, :],
        )

    def rate_per_site(self) -> float:
        """Expected substitutions per nucleotide site per unit length at equilibrium (1 by construction)."""
        return float(-(self.pi @ np.diag(self.q)) / 3.0)

    def transition(self, length: float) -> np.ndarray:
        """Transition matrices for a branch of ``length``: (K, 60, 60), one per gamma category."""
        expo = np.exp(np.outer(self.rates, self._eigvals) * length)  # (K, 60)
        p = np.einsum("ij,kj,jl->kil", self._left, expo, self._right)
        p = np.clip(p, 0.0, None)
        return p / p.sum(axis=2, keepdims=True)


def root_codons(n_codons: int, rng: np.random.Generator) -> np.ndarray:
    """Back-translate :data:`COI_BARCODE_PROTEIN` (tiled to ``n_codons``) with bird COI codon usage.

    Returns
    -------
    numpy.ndarray
        (n_codons,) int codon indices into :data:`SENSE_CODONS`.
    """
    protein = (COI_BARCODE_PROTEIN * (n_codons // len(COI_BARCODE_PROTEIN) + 1))[:n_codons]
    synonyms: dict[str, tuple[list[int], np.ndarray]] = {}
    for aa in sorted(set(protein)):
        codons = [i for i, c in enumerate(SENSE_CODONS) if _FORWARD[c] == aa]
        weights = np.array([BIRD_COI_CODON_USAGE.get(SENSE_CODONS[i], 0) + 1.0 for i in codons])
        synonyms[aa] = (codons, weights / weights.sum())
    u = rng.random(n_codons)
    out = np.empty(n_codons, dtype=np.int64)
    for pos, aa in enumerate(protein):
        codons, probs = synonyms[aa]
        out[pos] = codons[min(int(np.searchsorted(np.cumsum(probs), u[pos], side="right")), len(codons) - 1)]
    return out


def evolve_branch(
    model: CodonModel, parent: np.ndarray, categories: np.ndarray, length: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw a child sequence after ``length`` substitutions/site from ``parent`` (codon indices)."""
    if length <= 0:
        return parent.copy()
    p = model.transition(length)  # (K, 60, 60)
    cum = np.cumsum(p[categories, parent], axis=1)  # (L, 60)
    u = rng.random(len(parent))[:, None]
    return np.minimum((cum < u).sum(axis=1), len(SENSE_CODONS) - 1)


def evolve_tree(
    parents: Sequence[int],
    lengths: Sequence[float],
    root: np.ndarray,
    model: CodonModel,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Evolve ``root`` down a tree given in preorder.

    Parameters
    ----------
    parents : sequence of int
        Parent index of each node (``-1`` for the root, node 0); parents precede children.
    lengths : sequence of float
        Branch length of each node in substitutions per site.
    root : numpy.ndarray
        (L,) codon indices of the root.
    model : CodonModel
    rng : numpy.random.Generator

    Returns
    -------
    codons : numpy.ndarray
        (n_nodes, L) codon indices of every node.
    categories : numpy.ndarray
        (L,) gamma category of every codon (fixed along the tree).
    """
    categories = rng.integers(len(model.rates), size=len(root))
    out = np.empty((len(parents), len(root)), dtype=np.int64)
    for i, (parent, length) in enumerate(zip(parents, lengths, strict=True)):
        out[i] = root if parent < 0 else evolve_branch(model, out[parent], categories, length, rng)
    return out, categories


_CODON_ARRAY = np.array(SENSE_CODONS)


def decode(codons: np.ndarray) -> str:
    """Codon indices → DNA string."""
    return "".join(_CODON_ARRAY[np.asarray(codons)])


def encode(sequence: str) -> np.ndarray:
    """DNA string (in frame, sense codons only) → codon indices."""
    return np.array([_INDEX[sequence[i : i + 3]] for i in range(0, len(sequence) - 2, 3)], dtype=np.int64)


def pairwise_identity(sequences: Sequence[str]) -> np.ndarray:
    """(n, n) fraction of identical positions between equal-length DNA strings."""
    arr = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8).reshape(len(sequences), -1)
    out = np.empty((len(sequences), len(sequences)))
    for i in range(len(sequences)):
        out[i] = (arr == arr[i]).mean(axis=1)
    return out
