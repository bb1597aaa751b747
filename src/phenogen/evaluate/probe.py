"""The trait probe: a small CNN that reads a bird picture back into its trait vector.

It is the yardstick of ``phenogen evaluate``: trained on real renders of *training* species only,
it predicts the continuous traits (z-scored with the training records' mean and standard
deviation, MSE loss) and the binary traits (logits, BCE loss). Its R² on renders of held-out
species says how far the yardstick can be trusted; its penultimate layer is the feature space in
which FID and KID compare generated and real images (:mod:`phenogen.evaluate.fid`).

Saved as ``probe.safetensors`` (weights) + ``probe.json`` (:class:`ProbeSpec`, history); never a
pickle.

>>> import torch
>>> spec = ProbeSpec(continuous=["a", "b"], discrete=["c"], mean=[0.0, 0.0], std=[1.0, 1.0], image_size=32)
>>> probe = TraitProbe(spec)
>>> probe(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from phenogen.errors import CheckpointError, InputError

__all__ = [
    "ProbeSpec",
    "SmallCNN",
    "TraitProbe",
    "load_images",
    "prior_renders",
    "train_probe",
    "predict",
    "r2_scores",
    "save_probe",
    "load_probe",
]

WEIGHTS_NAME = "probe.safetensors"
SPEC_NAME = "probe.json"


@dataclass
class ProbeSpec:
    """What a probe reads and predicts; stored as ``probe.json`` beside the weights."""

    continuous: list[str]
    discrete: list[str]
    mean: list[float]  # per continuous trait, training records (latent scale)
    std: list[float]
    image_size: int = 64
    width: int = 32
    features: int = 64

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.continuous) or len(self.std) != len(self.continuous):
            raise ValueError("mean and std need one value per continuous trait")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be > 0 for every continuous trait, got {self.std}")
        if not self.continuous and not self.discrete:
            raise ValueError("a probe needs at least one trait to predict")

    @property
    def trait_names(self) -> list[str]:
        return [*self.continuous, *self.discrete]

    def standardize(self, values: np.ndarray) -> np.ndarray:
        """Latent-scale trait matrix (N, C + D) → continuous z-scored, discrete untouched."""
        out = np.array(values, dtype=np.float64, copy=True)
        c = len(self.continuous)
        out[..., :c] = (out[..., :c] - np.asarray(self.mean)) / np.asarray(self.std)
        return out


class SmallCNN(nn.Module):
    """Four stride-2 3×3 conv stages with GroupNorm, then a linear map of the flattened (S/16)² grid.

    (B, 3, H, W) → (B, out). Shared by the probe and the retrieval model's image tower. Flattening
    the final grid (instead of average pooling) keeps *where* things are, which is what lengths
    (beak, tail, legs) and sizes are made of. Input is uint8 [0, 255] or float [0, 1]; it is
    resized to ``image_size`` and centred.
    """

    def __init__(self, out_features: int, width: int = 32, image_size: int = 64) -> None:
        super().__init__()
        self.image_size = image_size
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        side = image_size
        for i in range(4):  # stride 2 from the first layer: 4x cheaper than a full-resolution stem
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                nn.GroupNorm(min(8, chans[i + 1]), chans[i + 1]),
                nn.SiLU(),
            ]
            side = (side + 1) // 2
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(chans[-1] * side * side, out_features)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 [0, 255] or float [0, 1] → (B, 3, S, S) float, centred."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return (x - 0.5) / 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.prepare(x))  # (B, 4w, S/16, S/16)
        return self.proj(h.flatten(1))  # (B, out)


class TraitProbe(nn.Module):
    """Images → (B, C + D): z-scored continuous traits, then logits of the binary traits."""

    def __init__(self, spec: ProbeSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_features = spec.features  # torchmetrics reads this for FID/KID
        self.backbone = SmallCNN(spec.features, spec.width, spec.image_size)
        self.head = nn.Linear(spec.features, len(spec.trait_names))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, F): the penultimate activations (FID/KID feature space)."""
        return F.silu(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C + D)


def load_images(paths: Sequence[str | Path], size: int | None = None) -> torch.Tensor:
    """Read image files into a (N, 3, S, S) uint8 tensor (RGB; resized to ``size`` when given)."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except FileNotFoundError:
            raise InputError(f"image {p} does not exist") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"image {p} cannot be read as a picture ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - PIL plugins raise ValueError, SyntaxError, struct.error ...
            raise InputError(f"image {p} cannot be decoded ({type(exc).__name__}: {exc})") from None
    if not arrays:
        return torch.zeros(0, 3, size or 1, size or 1, dtype=torch.uint8)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images differ in size ({sorted(shapes)}); pass size= to resize them")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


def prior_renders(
    continuous: Sequence[str],
    discrete: Sequence[str],
    n: int,
    size: int,
    rng: np.random.Generator,
    sd: float = 1.2,
    out_size: int | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` photos of random birds drawn from the trait prior, with their (latent-scale) traits.

    Continuous traits ~ N(0, ``sd``²) independently, binary traits a fair coin; each bird is drawn
    once with :func:`phenogen.sim.render.render_photos` (its own random pose, light, background).
    Extra probe training data for synthetic clades: it teaches the renderer's inverse over the
    whole trait space instead of the ~40 points the training species occupy, and it holds no
    information about held-out, extinct or ancestral birds. Drawn at ``size`` (the dataset's), then
    resized to ``out_size`` like :func:`load_images` does. Returns ((n, 3, S, S) uint8, (n, C + D) traits).
    """
    from PIL import Image

    from phenogen.sim.render import render_photos

    out_size = out_size or size

    images, rows = [], []
    for _ in range(n):
        traits = {t: float(rng.normal(0.0, sd)) for t in continuous}
        traits |= {t: float(rng.random() < 0.5) for t in discrete}
        im = render_photos(traits, 1, size, rng)[0].convert("RGB")
        if out_size != size:
            im = im.resize((out_size, out_size), Image.Resampling.BILINEAR)
        images.append(np.asarray(im, dtype=np.uint8))
        rows.append([traits[t] for t in (*continuous, *discrete)])
    if not images:
        return torch.zeros(0, 3, out_size, out_size, dtype=torch.uint8), np.zeros(
            (0, len(continuous) + len(discrete))
        )
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), np.array(rows)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a shift of up to 1/16 of the frame (edge padding)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = max(1, h // 16)
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[:, :, dy : dy + h, dx : dx + w]


def _loss(out: torch.Tensor, target: torch.Tensor, n_cont: int) -> torch.Tensor:
    loss = out.new_zeros(())
    if n_cont:
        loss = loss + F.mse_loss(out[:, :n_cont], target[:, :n_cont])
    if out.shape[1] > n_cont:
        loss = loss + F.binary_cross_entropy_with_logits(out[:, n_cont:], target[:, n_cont:])
    return loss


def train_probe(
    images: torch.Tensor,
    traits: np.ndarray,
    spec: ProbeSpec,
    *,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> tuple[TraitProbe, dict]:
    """Fit a probe on (N, 3, H, W) uint8 ``images`` with latent-scale ``traits`` (N, C + D).

    Returns the probe (eval mode, on CPU) and a history dict (loss per epoch, seconds).
    """
    if images.shape[0] != traits.shape[0]:
        raise InputError(f"{images.shape[0]} images but {traits.shape[0]} trait rows")
    if images.shape[0] < 2:
        raise InputError("the probe needs at least 2 training images (renders of training species)")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = TraitProbe(spec).to(device)
    target = torch.as_tensor(spec.standardize(traits), dtype=torch.float32)
    n = images.shape[0]
    steps_per_epoch = -(-n // batch_size)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    n_cont = len(spec.continuous)
    history: dict = {"loss": []}
    start = time.perf_counter()
    probe.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = augment(images[idx], gen).to(device) / 255.0  # (B, 3, H, W) in [0, 1]
            loss = _loss(probe(x), target[idx].to(device), n_cont)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history["loss"].append(total / n)
        if progress is not None and (epoch + 1) % max(1, epochs // 5) == 0:
            progress(f"probe epoch {epoch + 1}/{epochs}: loss {total / n:.3f}")
    history["seconds"] = time.perf_counter() - start
    history["train_images"] = n
    return probe.cpu().eval(), history


@torch.no_grad()
def predict(
    probe: TraitProbe, images: torch.Tensor, batch_size: int = 256, *, return_features: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) images → (N, C + D): z-scored continuous traits, then binary probabilities.

    With ``return_features=True`` also the (N, F) penultimate features (one pass for both).
    """
    probe.eval()
    n_cont = len(probe.spec.continuous)
    outs, feats = [], []
    for i in range(0, images.shape[0], batch_size):
        f = probe.features(images[i : i + batch_size])  # (B, F)
        out = probe.head(f).double()  # (B, C + D)
        out[:, n_cont:] = torch.sigmoid(out[:, n_cont:])
        outs.append(out.numpy())
        feats.append(f.double().numpy())
    pred = np.concatenate(outs) if outs else np.zeros((0, len(probe.spec.trait_names)))
    if not return_features:
        return pred
    return pred, (np.concatenate(feats) if feats else np.zeros((0, probe.spec.features)))


def r2_scores(pred: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """Coefficient of determination per column (``None`` where the truth does not vary)."""
    out: dict[str, float | None] = {}
    for j, name in enumerate(names):
        sst = float(np.sum((truth[:, j] - truth[:, j].mean()) ** 2))
        sse = float(np.sum((truth[:, j] - pred[:, j]) ** 2))
        out[name] = None if sst <= 1e-12 else 1.0 - sse / sst
    return out


def save_spec_model(model, out_dir: str | Path, history: dict | None = None, weights: str = WEIGHTS_NAME,
                    spec: str = SPEC_NAME) -> Path:  # fmt: skip
    """Write a small model with a dataclass ``spec`` as ``weights`` (safetensors) + ``spec`` (JSON)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / weights))
    payload = {"spec": asdict(model.spec), "history": history or {}}
    (out / spec).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return out


def load_spec_model(model_cls, spec_cls, model_dir: str | Path, what: str, weights: str = WEIGHTS_NAME,
                    spec: str = SPEC_NAME):  # fmt: skip
    """Load a model saved by :func:`save_spec_model` (CheckpointError naming what is missing or wrong)."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    for name in (weights, spec):
        if not (d / name).is_file():
            raise CheckpointError(
                f"{d}: missing {name}; is this a {what} directory written by phenogen evaluate?"
            )
    try:
        model_spec = spec_cls(**json.loads((d / spec).read_text(encoding="utf-8"))["spec"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{d / spec}: not a valid {what} description ({exc})") from exc
    model = model_cls(model_spec)
    try:
        model.load_state_dict(load_file(str(d / weights)))
    except RuntimeError as exc:
        raise CheckpointError(f"{d / weights}: weights do not match {spec} ({exc})") from exc
    return model.eval()


def save_probe(probe: TraitProbe, out_dir: str | Path, history: dict | None = None) -> Path:
    """Write ``probe.safetensors`` + ``probe.json`` into ``out_dir``; returns the directory."""
    return save_spec_model(probe, out_dir, history)


def load_probe(model_dir: str | Path) -> TraitProbe:
    """Load a probe saved by :func:`save_probe` (CheckpointError naming what is missing)."""
    return load_spec_model(TraitProbe, ProbeSpec, model_dir, "probe")
