"""Fine-tuning a (tiny, real) Stable Diffusion with the DNA conditioner in CLIP's place: ``image.base``,
full and LoRA training, exact resume, artifacts a stock diffusers pipeline opens and paints with bit for
bit like phenogen, the LoRA scale, and clear refusals of directories that are not SD-shaped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from phenogen.diffusion.config import ImageConfig
from phenogen.diffusion.train import train_image_model
from phenogen.errors import ConfigError, InputError

sys.path.insert(0, str(Path(__file__).parent))
from sd_tiny import photo_dataset, tiny_sd  # noqa: E402

torch.set_num_threads(2)
LORA = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return tiny_sd(tmp_path_factory.mktemp("sd") / "sd15")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_dataset(tmp_path_factory.mktemp("photos") / "data")


def _cfg(base: Path, **kw) -> ImageConfig:
    settings = dict(base=str(base), max_steps=4, batch_size=4, lr=1e-2, unet_lr=1e-2, lr_warmup_steps=1, kmer_k=2,
                    kmer_segments=2, sample_steps=2, ema_decay=0.0)  # fmt: skip
    return ImageConfig(**(settings | kw))


@pytest.fixture(scope="module")
def lora_run(sd_dir, photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    train_image_model(photos.root, out, _cfg(sd_dir, lora_rank=4, lora_alpha=2.0), progress=False)
    return out


def _stock(sd_dir: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _stock_images(pipe, run: Path, records: dict[str, str], seed_offset: int = 0, **kw) -> np.ndarray:
    """A stock pipeline's images of ``records`` from phenogen's prompt embeddings, one record per call,
    each with the noise ``phenogen generate`` keys to its id (seed 0)."""
    from diffusers import DDIMScheduler

    from phenogen.api import dna_prompt_embeds
    from phenogen.diffusion.generate import image_seed

    pipe.scheduler = DDIMScheduler.from_pretrained(run / "pipeline", subfolder="scheduler")
    out = []
    for rid, seq in records.items():
        prompt, negative = dna_prompt_embeds(run, [seq])
        out.append(pipe(prompt_embeds=prompt, negative_prompt_embeds=negative, num_inference_steps=4,
                        guidance_scale=3.0, output_type="np", **kw,
                        generator=torch.Generator().manual_seed(image_seed(0, rid, 0) + seed_offset)).images[0])  # fmt: skip
    return np.stack(out)


def _phenogen_images(model, records: dict[str, str], **kw) -> np.ndarray:
    """One record per batch, as the stock pipeline is called here (batches of other sizes round the
    floating point differently: up to 1/255 apart)."""
    portraits = model.paint(records, steps=4, guidance_scale=3.0, scheduler="ddim", batch_size=1, **kw)
    return np.stack([np.asarray(portraits.images[rid][0], dtype=np.float64) / 255 for rid in records])


def _uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------- LoRA
def test_lora_run_writes_diffusers_lora_that_a_stock_pipeline_paints_with_identically(
    lora_run, sd_dir, photos
):
    """The LoRA file loads into a stock StableDiffusionPipeline; with dna_prompt_embeds and the noise
    phenogen keys to each record, the stock pipeline's images equal phenogen's, pixel for pixel."""
    from phenogen import api

    for where in ("pipeline", "lora"):
        assert (lora_run / where / LORA).is_file() and (
            lora_run / where / "conditioner" / "config.json"
        ).is_file()
    lora = load_file(lora_run / "pipeline" / LORA)
    assert lora and all(k.startswith("unet.") and ".lora." in k for k in lora)
    assert any("lora.up" in k and v.abs().max() > 0 for k, v in lora.items())  # trained away from zero
    # the pipeline's UNet is the base as it came (no adapter keys), so the LoRA file is the whole change
    unet = load_file(lora_run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    base = load_file(sd_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert unet.keys() == base.keys() and all(torch.equal(unet[k], base[k]) for k in base)

    records = {r.record_id: r.sequence for r in photos.records("heldout")} | {
        r.record_id: r.sequence for r in photos.records("train")[:1]
    }
    model = api.load_model(lora_run / "pipeline")
    ours = _phenogen_images(model, records)
    embeds = api.dna_prompt_embeds(lora_run, list(records.values()))
    assert embeds[0].shape == embeds[1].shape and embeds[0].shape[-1] == 32  # (B, T, cross_attention_dim)
    assert not torch.allclose(embeds[0][0], embeds[0][1])
    stock = _stock(sd_dir)
    stock.load_lora_weights(lora_run / "lora")
    theirs = _stock_images(stock, lora_run, records)
    assert np.array_equal(_uint8(theirs), (ours * 255).round().astype(np.uint8))
    # other noise gives other pictures: the comparison above is not vacuous
    other = _stock_images(stock, lora_run, records, seed_offset=1)
    assert np.abs(other - theirs).max() > 0.05


def test_lora_scale_zero_paints_the_base_model(lora_run, sd_dir, photos):
    from phenogen import api

    records = {r.record_id: r.sequence for r in photos.records("heldout")}
    model = api.load_model(lora_run)
    full = _phenogen_images(model, records)
    zero = _phenogen_images(model, records, lora_scale=0.0)
    assert np.abs(full - zero).max() > 1 / 255  # the LoRA changes the picture ...
    base = _stock_images(_stock(sd_dir), lora_run, records)  # no LoRA loaded
    assert np.array_equal(_uint8(base), (zero * 255).round().astype(np.uint8))  # ... and scale 0 removes it


def test_lora_resume_equals_an_uninterrupted_run_and_checkpoints_hold_only_the_lora(sd_dir, photos, tmp_path):
    cfg = _cfg(sd_dir, lora_rank=4, lora_alpha=2.0, max_steps=6, checkpoint_every=2, ema_decay=0.9)
    full = train_image_model(photos.root, tmp_path / "full", cfg, progress=False)
    train_image_model(photos.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    resumed = train_image_model(photos.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.global_step == full.global_step == 6
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)
    a, b = (load_file(tmp_path / run / "pipeline" / LORA) for run in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ckpt = sorted((tmp_path / "cut" / "checkpoints").glob("checkpoint-*"))[-1]
    lora = load_file(ckpt / "unet_lora.safetensors")
    assert lora and all("lora_" in k for k in lora)
    saved_models = [load_file(f) for f in ckpt.glob("model*.safetensors")]
    assert saved_models and not any("down_blocks" in k for m in saved_models for k in m)  # no frozen base


def test_generate_command_lora_scale(lora_run, photos, tmp_path):
    """``phenogen generate --lora-scale 0`` paints the base; the flag on a model without LoRA is refused."""
    seq = photos.records("heldout")[0].sequence
    cmd = [sys.executable, "-m", "phenogen.cli", "generate", "--model", str(lora_run / "pipeline"), "--sequence",
           seq, "--steps", "3", "--device", "cpu"]  # fmt: skip
    for scale, out in (("1", "one"), ("0", "zero")):
        done = subprocess.run([*cmd, "--lora-scale", scale, "--out", str(tmp_path / out)], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    one, zero = (np.asarray(Image.open(tmp_path / d / "images" / "sequence_0.png")) for d in ("one", "zero"))
    assert np.abs(one.astype(int) - zero.astype(int)).max() > 0
    config = json.loads((tmp_path / "zero" / "config.json").read_text())
    assert config["generate"]["lora_scale"] == 0


# ------------------------------------------------------------------------------------- full fine-tuning
def test_full_finetuning_trains_every_unet_weight_and_resumes_exactly(sd_dir, photos, tmp_path):
    cfg = _cfg(sd_dir, max_steps=4, checkpoint_every=2, unet_lr=1e-3)
    full = train_image_model(photos.root, tmp_path / "full", cfg, progress=False)
    train_image_model(photos.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    resumed = train_image_model(photos.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)
    assert not (tmp_path / "full" / "pipeline" / LORA).exists() and not (tmp_path / "full" / "lora").exists()
    a, b = (
        load_file(tmp_path / r / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
        for r in ("full", "cut")
    )
    base = load_file(sd_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    changed = [k for k in base if not torch.equal(a[k], base[k])]
    assert len(changed) > 0.9 * len(base)  # the whole UNet, not an adapter
    # the fine-tuned UNet opens as a plain diffusers UNet and the stock pipeline paints with it
    from diffusers import UNet2DConditionModel

    from phenogen import api

    stock = _stock(sd_dir)
    stock.unet = UNet2DConditionModel.from_pretrained(tmp_path / "full" / "pipeline" / "unet")
    records = {r.record_id: r.sequence for r in photos.records("heldout")[:1]}
    ours = _phenogen_images(api.load_model(tmp_path / "full"), records)
    theirs = _stock_images(stock, tmp_path / "full", records)
    assert np.array_equal(_uint8(theirs), (ours * 255).round().astype(np.uint8))


def test_v_prediction_base_trains_with_its_own_schedule(tmp_path, photos):
    """An SD 2.x-shaped base (v-prediction, another cross-attention width): the schedule and width come
    from the base; min-SNR weighting and gradient checkpointing run on it."""
    sd2 = tiny_sd(tmp_path / "sd2", cross_attention_dim=48, v_prediction=True)
    cfg = _cfg(sd2, lora_rank=2, snr_gamma=5.0, gradient_checkpointing=True, max_steps=2)
    result = train_image_model(photos.root, tmp_path / "run", cfg, progress=False)
    assert all(np.isfinite(result.losses))
    sched = json.loads((tmp_path / "run" / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction" and sched["set_alpha_to_one"] is False
    cond = json.loads((tmp_path / "run" / "pipeline" / "conditioner" / "config.json").read_text())
    assert cond["cross_attention_dim"] == 48 and cond["fixed_length"] is True


def test_gradient_checkpointing_gives_the_same_training(sd_dir, photos, tmp_path):
    plain = train_image_model(photos.root, tmp_path / "a", _cfg(sd_dir, max_steps=2), progress=False)
    ckpt = train_image_model(photos.root, tmp_path / "b", _cfg(sd_dir, max_steps=2, gradient_checkpointing=True),
                             progress=False)  # fmt: skip
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-5)


def test_bf16_mixed_precision_lora_resumes(sd_dir, photos, tmp_path):
    """bf16 autocast (the CPU's half type) with LoRA: the adapter trains in float32 (no "unscale FP16
    gradients" failure) and a resumed run equals an uninterrupted one."""
    cfg = _cfg(sd_dir, lora_rank=4, mixed_precision="bf16", max_steps=4, checkpoint_every=2)
    full = train_image_model(photos.root, tmp_path / "full", cfg, progress=False)
    train_image_model(photos.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    resumed = train_image_model(photos.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    lora = load_file(tmp_path / "cut" / "pipeline" / LORA)
    assert all(v.dtype == torch.float32 for v in lora.values())


# ------------------------------------------------------------------------------------- opening the artifacts
def test_plain_diffusers_opens_the_pipeline_directory(lora_run, photos):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(lora_run / "pipeline", trust_remote_code=True,
                                             custom_pipeline=str(lora_run / "pipeline" / "phenogen_pipeline.py"))  # fmt: skip
    assert type(pipe).__name__ == "DNAToImagePipeline"
    image = pipe([photos.records("heldout")[0].sequence], num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    readme = (lora_run / "pipeline" / "README.md").read_text()
    assert "load_lora_weights" in readme and "dna_prompt_embeds" in readme


def test_dna_prompt_embeds_refuses_bad_input(lora_run, tmp_path):
    from phenogen import api
    from phenogen.errors import CheckpointError, SequenceError

    with pytest.raises(CheckpointError, match="no conditioner"):
        api.dna_prompt_embeds(tmp_path, ["ACGT" * 10])
    with pytest.raises(SequenceError):
        api.dna_prompt_embeds(lora_run, ["ACGT-XYZ"])


# ------------------------------------------------------------------------------------- refusals
def _broken(tmp_path: Path, sd_dir: Path, what: str) -> Path:
    bad = tmp_path / what
    shutil.copytree(sd_dir, bad)
    config = bad / "unet" / "config.json"
    doc = json.loads(config.read_text())
    if what == "no-unet":
        shutil.rmtree(bad / "unet")
    elif what == "sdxl":
        doc |= {"addition_embed_type": "text_time", "projection_class_embeddings_input_dim": 64}
    elif what == "inpainting":
        doc["in_channels"] = 9
    elif what == "multi-width":
        doc["cross_attention_dim"] = [32, 32]
    if what != "no-unet":
        config.write_text(json.dumps(doc))
    return bad


@pytest.mark.parametrize(
    ("what", "message"),
    [("no-unet", "no unet/config.json"), ("sdxl", "SDXL"), ("inpainting", "9 channels"),
     ("multi-width", "one cross-attention width")],
)  # fmt: skip
def test_a_base_that_is_not_stable_diffusion_is_refused_before_anything_is_written(
    what, message, sd_dir, photos, tmp_path
):
    bad = _broken(tmp_path, sd_dir, what)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "phenogen.cli", "train-image", "--data", str(photos.root), "--out",
                           str(out), "--set", f"image.base={json.dumps(str(bad))}"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and str(bad) in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(("lora_rank", "expected"), [(4, 1e-4), (0, 1e-5)])
def test_a_base_unet_gets_the_usual_gentle_rate_and_the_conditioner_its_own(
    lora_rank, expected, sd_dir, photos, tmp_path
):
    cfg = ImageConfig(**(_cfg(sd_dir).__dict__ | {"unet_lr": None, "lora_rank": lora_rank, "max_steps": 1}))
    train_image_model(photos.root, tmp_path / "run", cfg, progress=False)
    ckpt = next((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    groups = torch.load(ckpt / "optimizer.bin", weights_only=True)["param_groups"]
    assert [g["initial_lr"] for g in groups] == [expected, cfg.lr]


def test_base_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="both bring a UNet"):
        ImageConfig(base="sd", init="builtin")
    with pytest.raises(ValueError, match="lora_rank adapts a pretrained UNet"):
        ImageConfig(lora_rank=8)
    with pytest.raises(ValueError, match="pooled_condition"):
        ImageConfig(base="sd", pooled_condition=True)
    with pytest.raises(ValueError, match="lora_targets"):
        ImageConfig(base="sd", lora_rank=4, lora_targets="to_q,,to_v")


def test_lora_targets_missing_from_the_unet_and_lora_scale_without_lora_are_refused(sd_dir, photos, tmp_path):
    from phenogen import api

    with pytest.raises(ConfigError, match="no module named to_qkv"):
        train_image_model(photos.root, tmp_path / "r", _cfg(sd_dir, lora_rank=4, lora_targets="to_qkv"),
                          progress=False)  # fmt: skip
    run = tmp_path / "full"
    train_image_model(photos.root, run, _cfg(sd_dir, max_steps=1), progress=False)
    with pytest.raises(InputError, match="lora_scale is for a LoRA model"):
        api.load_model(run).paint({"x": photos.records("train")[0].sequence}, steps=2, lora_scale=0.5)


def test_non_square_photos_are_centre_cropped_not_stretched(tmp_path):
    from phenogen.diffusion.vae import load_images

    im = Image.new("RGB", (30, 10), (255, 0, 0))
    im.paste((0, 0, 255), (10, 0, 20, 10))  # blue centre square between red sides
    im.save(tmp_path / "wide.png")
    out = load_images([tmp_path / "wide.png"], 8)[0]
    assert out.shape == (3, 8, 8)
    assert int(out[2].min()) > 200 and int(out[0].max()) < 60  # all centre: blue, no red


def test_the_demo_sweeps_add_a_lora_scale_grid_for_a_lora_model(lora_run, photos, tmp_path):
    from phenogen.demo import DemoConfig, _run_sweeps, _Stages

    seqs = [r for r in photos.records("heldout")]
    (tmp_path / "targets.fasta").write_text(
        "".join(f">{r.record_id} split=heldout\n{r.sequence}\n" for r in seqs)
    )
    cfg = DemoConfig(sweep_guidance=(1.0,), sweep_steps=(2,), sweep_lora_scale=(0.0, 1.0), sweep_sequences=2)
    _run_sweeps(_Stages(1), tmp_path, lora_run / "pipeline", cfg, ["--steps", "2", "--device", "cpu"])
    grid = Image.open(tmp_path / "sweeps" / "lora_scale.png")
    assert grid.size == (2 * 16, 2 * 16 + 14)  # columns: scales; rows: sequences
    zero, one = (np.asarray(Image.open(tmp_path / "sweeps" / f"lora_scale_{v}" / "images" / f"{seqs[0].record_id}_0.png"))
                 for v in (0.0, 1.0))  # fmt: skip
    assert np.abs(zero.astype(int) - one.astype(int)).max() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("lora_rank", [4, 0])
def test_half_precision_training_on_a_gpu_resumes_without_unscaling_half_gradients(
    precision, lora_rank, sd_dir, photos, tmp_path
):
    """fp16 (with its loss scaler) and bf16 on CUDA, LoRA (frozen base in half precision) and full
    fine-tuning: the trained weights stay float32, so the scaler never meets half gradients
    ("Attempting to unscale FP16 gradients"), and a resumed run equals an uninterrupted one."""
    cfg = _cfg(sd_dir, lora_rank=lora_rank, mixed_precision=precision, max_steps=4, checkpoint_every=2)
    full = train_image_model(photos.root, tmp_path / "full", cfg, progress=False)
    train_image_model(photos.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    resumed = train_image_model(photos.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert all(np.isfinite(full.losses))
    assert resumed.losses == pytest.approx(full.losses, rel=1e-3)


def test_the_thesis_condition_gpt2_hidden_states_on_a_base_pads_to_the_lm_positions(sd_dir, photos, tmp_path):
    """encoder gpt2 (the thesis: the DNA LM's hidden states in CLIP's place) with a LoRA base: every
    condition is the LM's n_positions tokens long, and the stock pipeline paints what phenogen paints."""
    from phenogen import api
    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, save_lm

    lm_dir = save_lm(build_model(KmerTokenizer(k=3), preset="tiny", n_positions=32, seed=0), tmp_path / "lm")
    run = tmp_path / "run"
    cfg = _cfg(
        sd_dir,
        lora_rank=4,
        encoder="gpt2",
        lm_model=str(lm_dir),
        null_condition="empty_sequence",
        max_steps=2,
    )
    train_image_model(photos.root, run, cfg, progress=False)
    records = {r.record_id: r.sequence for r in photos.records("heldout")[:1]}
    prompt, negative = api.dna_prompt_embeds(run, list(records.values()))
    assert prompt.shape == negative.shape == (1, 32, 32)
    ours = _phenogen_images(api.load_model(run), records)
    stock = _stock(sd_dir)
    stock.load_lora_weights(run / "lora")
    assert np.array_equal(_uint8(_stock_images(stock, run, records)), (ours * 255).round().astype(np.uint8))


@pytest.mark.slow  # two launches of two processes: ~40 s on 2 cores
def test_two_processes_train_the_lora_one_process_trains(sd_dir, photos, tmp_path):
    """LoRA under ``torchrun --nproc_per_node 2`` (gloo): the DDP-wrapped adapter learns what one process
    learns (up to rounding), the checkpoint hooks find the wrapped UNet, and only the LoRA is saved."""
    import os
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    sets = ["--set", f"image.base={json.dumps(str(sd_dir))}", "--set", "image.lora_rank=4", "--set", "image.max_steps=4",
            "--set", "image.batch_size=4", "--set", "image.unet_lr=0.01", "--set", "image.kmer_k=2", "--set",
            "image.kmer_segments=2", "--set", "image.sample_steps=2", "--set", "image.ema_decay=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    runs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node", "2",
                                                  "--master_addr", "127.0.0.1", "--master_port", str(free_port())])):  # fmt: skip
        out = tmp_path / name
        argv = [sys.executable, *launcher, "-m", "phenogen.cli", "train-image", "--data", str(photos.root), "--out",
                str(out), "--no-progress", *sets]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = load_file(out / "pipeline" / LORA)
    a, b = runs["one"], runs["two"]
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-4
    ckpt = next((tmp_path / "two" / "checkpoints").glob("checkpoint-*"))
    assert (ckpt / "unet_lora.safetensors").is_file() and (ckpt / "random_states_1.pkl").is_file()


def test_the_code_in_the_pipeline_readme_runs_and_paints_what_phenogen_paints(lora_run, photos):
    """The stock-pipeline snippet of ``OUT/pipeline/README.md``, run as written (paths filled in)."""
    import re

    from phenogen import api

    readme = (lora_run / "pipeline" / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[-1]
    seq = photos.records("heldout")[0].sequence
    code = code.replace("OUT/pipeline", str(lora_run / "pipeline")).replace("ACGT...", seq)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own documentation
    ours = api.load_model(lora_run).paint({"my_record": seq}, steps=50, guidance_scale=8.0, scheduler="ddim")
    assert np.array_equal(np.asarray(scope["image"]), np.asarray(ours.images["my_record"][0]))


def test_8bit_adam_without_bitsandbytes_is_refused_before_training(sd_dir, photos, tmp_path, monkeypatch):
    import builtins

    from phenogen.diffusion.train import check_inputs

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ConfigError, match="needs bitsandbytes"):
        check_inputs(photos.root, _cfg(sd_dir, lora_rank=4, optimizer="adamw8bit"))
