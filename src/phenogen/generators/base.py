"""The interface every non-diffusion DNA → image generator family implements, its registry, export and loading.

A *family* (conditional VAE, conditional GAN, plugin network …) is a :class:`GeneratorFamily`: a
``torch.nn.Module`` built from a JSON-able ``config`` that knows how to do one training step and how to
paint a batch from DNA condition vectors and noise. Everything else is the framework's and is shared:

- **the DNA condition** (:mod:`phenogen.generators.features`): frozen, standardised features of the
  barcode — the same k-mer profiles or GPT-2 states the diffusion model reads;
- **the loop** (:mod:`phenogen.generators.train`): data, fixed step count, progress, exact resume;
- **the export** (:func:`save_generator`): ``OUT/generator/`` holds ``generator.json``
  (``{"family", "format_version"}``), the family's ``config.json``, ``model.safetensors`` (weights +
  :meth:`GeneratorFamily.extra_state` under ``extra.``), and the featurizer's files;
- **loading and painting** (:func:`load_generator` → :class:`Generator`): image ``k`` of record ``rid``
  is painted from noise drawn by ``torch.Generator().manual_seed(image_seed(seed, rid, k))`` — the same
  seeding as the diffusion pipelines, so an image depends neither on the batch nor on the other records.

A family module imports only this module (and torch / numpy / diffusers / phenogen.diffusion helpers) and
registers itself with :func:`register_family`; :mod:`phenogen.generators` imports every family module.

>>> # gen = load_generator("run/cvae")          # OUT of train-generator, or OUT/generator
>>> # painted = gen.paint([("sp_001_i1", "ACGT...")], images_per_sequence=2, seed=0)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor, nn

from phenogen.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "GeneratorFamily",
    "FAMILIES",
    "register_family",
    "build_family",
    "FORMAT_VERSION",
    "GENERATOR_JSON",
    "Generator",
    "find_generator_dir",
    "save_generator",
    "load_generator",
    "to_pil",
    "family_params",
    "generate_to_dir",
]

FORMAT_VERSION = 1
"""Version of the ``OUT/generator/`` layout; :func:`load_generator` refuses others."""

GENERATOR_JSON = "generator.json"
"""The file that marks a directory as an exported generator (``{"family", "format_version"}``)."""

EXTRA_PREFIX = "extra."
"""Prefix of the :meth:`GeneratorFamily.extra_state` tensors inside ``model.safetensors``."""


# ------------------------------------------------------------------------------------ interface
class GeneratorFamily(nn.Module):
    """One non-diffusion DNA → image generator family. Subclasses register with ``@register_family("name")``.

    Parameters
    ----------
    config : dict
        JSON-able; must hold ``resolution`` (int, px, the side of the square images) and ``cond_dim``
        (int, the length of a DNA condition vector). Saved as ``config.json``; :meth:`from_config`
        rebuilds the module from it. A family fills in its defaults in its own ``__init__`` and stores the
        completed dict as ``self.config`` (so the saved config is explicit).
    """

    family: ClassVar[str] = ""

    def __init__(self, config: dict):
        super().__init__()
        config = dict(config)
        for key in ("resolution", "cond_dim"):
            value = config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"generator family {self.family or type(self).__name__}: config needs {key!r} as a "
                    f"positive integer, got {value!r}"
                )
        self.config: dict = config

    @classmethod
    def from_config(cls, config: dict) -> GeneratorFamily:
        """Rebuild the module (fresh weights) from its saved ``config.json``."""
        return cls(dict(config))

    def noise_shape(self) -> tuple[int, ...]:
        """Shape of ONE image's noise (e.g. ``(z_dim,)``); the framework draws it from the image's seed."""
        raise NotImplementedError

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, by name (e.g. ``{"model": AdamW}`` or ``{"g": …, "d": …}``)."""
        raise NotImplementedError

    def train_step(
        self, images: Tensor, cond: Tensor, optimizers: dict, generator: torch.Generator
    ) -> dict[str, float]:
        """ONE optimizer step of every optimizer the family uses (zero_grad / backward / step inside).

        ``images`` (B, 3, R, R) float32 in [-1, 1]; ``cond`` (B, cond_dim) float32 standardised DNA
        features. ALL randomness is drawn from ``generator`` (a CPU ``torch.Generator`` the framework
        seeds per step), so a resumed run equals an uninterrupted one. Returns named losses.
        """
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, cond: Tensor, noise: Tensor) -> Tensor:
        """``cond`` (B, cond_dim), ``noise`` (B, *noise_shape) → images (B, 3, R, R) in [-1, 1]."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Tensor]:
        """Extra tensors saved beside the weights (e.g. concept vectors); default none."""
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        """Restore what :meth:`extra_state` returned (called with ``{}`` when nothing was saved)."""

    def after_training(self, images: Tensor, cond: Tensor, traits: dict[str, Tensor]) -> dict | None:
        """Optional hook, called once after the last step, before the export (default: nothing).

        ``images`` (N, 3, R, R) uint8: every training photo; ``cond`` (N, cond_dim): its barcode's
        condition; ``traits``: trait name → (N,) float64 values of the photos' records (NaN where a
        record has none; only traits some record has). The cVAE fits its concept vectors here. Returns
        JSON-able notes for ``train_metrics.json`` (or None).
        """
        return None


FAMILIES: dict[str, type[GeneratorFamily]] = {}
"""Registered families by name (filled by the family modules' :func:`register_family`)."""


def register_family(name: str):
    """Class decorator: register a :class:`GeneratorFamily` subclass under ``name`` (sets ``cls.family``)."""

    def decorate(cls: type[GeneratorFamily]) -> type[GeneratorFamily]:
        if not (isinstance(cls, type) and issubclass(cls, GeneratorFamily)):
            raise TypeError(f"register_family({name!r}): {cls!r} is not a GeneratorFamily subclass")
        if name in FAMILIES and FAMILIES[name] is not cls:
            raise ValueError(f"generator family {name!r} is registered twice")
        cls.family = name
        FAMILIES[name] = cls
        return cls

    return decorate


def _families() -> dict[str, type[GeneratorFamily]]:
    import phenogen.generators  # noqa: F401  (imports every family module: registration)

    return FAMILIES


def build_family(name: str, config: dict) -> GeneratorFamily:
    """Build family ``name`` from ``config``; :class:`ConfigError` for an unknown name."""
    families = _families()
    if name not in families:
        known = ", ".join(sorted(families)) or "none"
        raise ConfigError(f"generator.family = {name!r}: unknown generator family; known: {known}")
    return families[name](dict(config))


# ------------------------------------------------------------------------------------ images
def to_pil(images: Tensor) -> list[Image.Image]:
    """(B, 3, R, R) tensors in [-1, 1] → RGB PIL images (rounded, clamped)."""
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).numpy()]


# ------------------------------------------------------------------------------------ the object
class Generator:
    """A loaded generator: the family module (eval mode) and its DNA featurizer.

    Attributes
    ----------
    family : GeneratorFamily
        The module (``family.family`` is the family's name).
    featurizer : phenogen.generators.features.Featurizer
        Barcode → standardised condition vector.
    config : dict
        The family's config (``resolution``, ``cond_dim`` and its hyper-parameters).
    path : Path or None
        The ``generator/`` directory it was loaded from.
    """

    def __init__(self, family: GeneratorFamily, featurizer, path: Path | None = None):
        self.family = family.eval()
        self.featurizer = featurizer
        self.config = family.config
        self.path = path

    @property
    def name(self) -> str:
        return self.family.family

    @property
    def resolution(self) -> int:
        return int(self.config["resolution"])

    def noise(self, seed: int, record_id: str | None, k: int) -> Tensor:
        """The noise of image ``k`` of ``record_id`` (``None``: the shared noise of :func:`image_seed`)."""
        from phenogen.diffusion.generate import image_seed

        gen = torch.Generator().manual_seed(image_seed(seed, record_id, k))
        return torch.randn(self.family.noise_shape(), generator=gen)

    def condition(self, sequences: Sequence[str]) -> Tensor:
        """(N, cond_dim) standardised DNA condition vectors of ``sequences``."""
        return self.featurizer(list(sequences))

    @torch.no_grad()
    def paint_tensors(self, cond: Tensor, noise: Tensor, batch_size: int = 16) -> Tensor:
        """Images (N, 3, R, R) in [-1, 1] from conditions (N, cond_dim) and noise (N, *noise_shape)."""
        out = [
            self.family.sample(cond[a : a + batch_size], noise[a : a + batch_size])
            for a in range(0, len(cond), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, 3, self.resolution, self.resolution)

    def paint(
        self,
        records: Sequence[tuple[str, str]],
        images_per_sequence: int = 1,
        seed: int = 0,
        batch_size: int = 16,
        shared_noise: bool = False,
        progress=None,
    ) -> list[tuple[str, int, Image.Image]]:
        """Paint ``images_per_sequence`` images per ``(record_id, sequence)``.

        Image ``k`` of record ``rid`` comes from noise seeded by ``image_seed(seed, rid, k)``
        (``shared_noise``: ``image_seed(seed, None, k)``, the same for every record).
        ``progress(done, total)`` is called after every batch. Returns ``(record_id, k, image)`` in record
        order.
        """
        if not records:
            raise InputError("no records to generate images for")
        if images_per_sequence < 1 or batch_size < 1:
            raise InputError("images_per_sequence and batch_size must be >= 1")
        ids = [r[0] for r in records]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InputError(f"duplicate record ids {', '.join(dupes[:5])}: each record needs a unique id")
        out: list[tuple[str, int, Image.Image]] = []
        total = -(-len(records) // batch_size)
        for n, a in enumerate(range(0, len(records), batch_size)):
            chunk = records[a : a + batch_size]
            cond = self.condition([seq for _, seq in chunk])  # (b, cond_dim)
            cond = cond.repeat_interleave(images_per_sequence, dim=0)  # (b*K, cond_dim)
            noise = torch.stack(
                [
                    self.noise(seed, None if shared_noise else rid, k)
                    for rid, _ in chunk
                    for k in range(images_per_sequence)
                ]
            )
            images = to_pil(self.paint_tensors(cond, noise, batch_size=len(noise)))
            for j, image in enumerate(images):
                out.append((chunk[j // images_per_sequence][0], j % images_per_sequence, image))
            if progress is not None:
                progress(n + 1, total)
        return out

    def move(
        self, record: tuple[str, str], trait: str, amounts: Sequence[float], seed: int = 0, k: int = 0
    ) -> list[Image.Image]:
        """Image ``k`` of ``record`` (``(record_id, sequence)``) moved along ``trait``'s concept vector by
        each of ``amounts`` (trait standard deviations; 0 = the portrait itself), at equal noise.

        Only families with concept vectors (the cVAE) can; others raise :class:`InputError`.
        """
        if not hasattr(self.family, "move"):
            raise InputError(f"the {self.name} family has no concept vectors; train a cvae to move portraits")
        rid, seq = record
        cond = self.condition([seq])  # (1, cond_dim)
        noise = self.noise(seed, rid, k)[None]  # (1, *noise_shape)
        return to_pil(self.family.move(cond, noise, trait, list(amounts)))

    @property
    def concept_names(self) -> list[str]:
        """The traits with a concept vector (empty for families without)."""
        return list(self.config.get("concept_names") or [])


def generate_to_dir(
    generator: Generator,
    records: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    images_per_sequence: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    shared_noise: bool = False,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Paint ``records`` with ``generator`` and write them in ``generate``'s layout (``images/``,
    ``generated.tsv``, ``sequences.fasta``, ``grid.png``, ``timing.json``; :func:`phenogen.diffusion.generate.write_generated`)."""
    from tqdm.auto import tqdm

    from phenogen.diffusion.generate import write_generated

    bar = tqdm(total=1, desc="generate", disable=not progress, leave=False, unit="batch")

    def tick(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    t0 = time.perf_counter()
    painted = generator.paint(
        records, images_per_sequence=images_per_sequence, seed=seed, batch_size=batch_size,
        shared_noise=shared_noise, progress=tick,
    )  # fmt: skip
    bar.close()
    return write_generated(out_dir, records, painted, images_per_sequence, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ export / load
def find_generator_dir(path: str | Path) -> Path | None:
    """The exported ``generator/`` directory at ``path``: ``path`` itself when it holds ``generator.json``,
    else ``path/generator`` (a ``train-generator`` OUT); None when neither is a generator."""
    from phenogen.fsio import complete_dir

    path = Path(path)
    if (path / GENERATOR_JSON).is_file():
        return path
    sub = complete_dir(path / "generator")
    if sub is not None and (sub / GENERATOR_JSON).is_file():
        return sub
    return None


def save_generator(family: GeneratorFamily, featurizer, out_dir: str | Path) -> Path:
    """Export ``family`` and its ``featurizer`` to ``out_dir`` atomically (written aside, then renamed).

    Layout: ``generator.json``, ``config.json``, ``model.safetensors`` (state dict + ``extra.*``
    tensors), the featurizer's ``featurizer.json`` + ``featurizer.safetensors``.
    """
    import shutil

    from safetensors.torch import save_file

    from phenogen.fsio import atomic_write_json, replace_dir

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in family.state_dict().items()}
    for key, value in family.extra_state().items():
        tensors[EXTRA_PREFIX + key] = value.detach().cpu().contiguous()
    save_file(tensors, str(tmp / "model.safetensors"))
    atomic_write_json(tmp / "config.json", family.config)
    featurizer.save(tmp)
    atomic_write_json(tmp / GENERATOR_JSON, {"family": family.family, "format_version": FORMAT_VERSION})
    return replace_dir(tmp, out)


def _read_json(path: Path) -> Any:
    from phenogen.fsio import read_json

    return read_json(path, "generator file", error=CheckpointError)


def load_family(gen_dir: str | Path) -> GeneratorFamily:
    """The family module (eval mode, weights and extra state restored) of an exported ``generator/`` dir."""
    from safetensors.torch import load_file

    gen_dir = Path(gen_dir)
    meta = _read_json(gen_dir / GENERATOR_JSON)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{gen_dir / GENERATOR_JSON}: format_version {meta.get('format_version') if isinstance(meta, dict) else meta!r}, "
            f"this phenogen reads {FORMAT_VERSION}; re-export it with this version's train-generator"
        )
    config = _read_json(gen_dir / "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{gen_dir / 'config.json'}: not a JSON object")
    try:
        family = build_family(str(meta.get("family")), config)
    except ConfigError as exc:
        raise CheckpointError(f"{gen_dir}: {exc}") from None
    weights = gen_dir / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; the generator export is incomplete")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{weights}: cannot be read ({exc})") from None
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    try:
        family.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights}: does not match its config.json ({str(exc).splitlines()[0]})"
        ) from None
    family.load_extra_state(extra)
    return family.eval()


def load_generator(path: str | Path) -> Generator:
    """Load a generator exported by ``train-generator``: its OUT, or OUT/generator.

    Raises :class:`~phenogen.errors.CheckpointError` when ``path`` holds no (readable) generator.
    """
    from phenogen.generators.features import Featurizer

    gen_dir = find_generator_dir(path)
    if gen_dir is None:
        raise CheckpointError(
            f"{path}: not a generator (no {GENERATOR_JSON} here or in {Path(path) / 'generator'}); "
            "give the --out of phenogen train-generator"
        )
    family = load_family(gen_dir)
    featurizer = Featurizer.load(gen_dir)
    if featurizer.dim != family.config["cond_dim"]:
        raise CheckpointError(
            f"{gen_dir}: featurizer gives {featurizer.dim} features, the model expects "
            f"cond_dim {family.config['cond_dim']}"
        )
    return Generator(family, featurizer, path=gen_dir)


def family_params(family: str, config: dict, defaults: dict) -> dict:
    """``config`` completed with ``defaults``; :class:`ConfigError` naming an unknown key.

    For a family's ``__init__``: ``resolution`` and ``cond_dim`` are always allowed.
    """
    known = {"resolution", "cond_dim", *defaults}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(
            f"generator family {family}: unknown params {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **config}
