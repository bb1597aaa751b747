"""CUDA paths with tiny real models: the same answers as on the CPU, mixed-precision training, half-precision
sampling. Marked ``gpu`` (deselected by default; ``pytest -m gpu`` on a machine with a CUDA device)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_diffusion import SEQS, _tiny_cfg, _tiny_dataset, _tiny_pipeline
from test_lm import TOY_CFG, _toy_splits

from phenogen.diffusion.pipeline import load_pipeline
from phenogen.diffusion.train import train_image_model
from phenogen.dna.tokenizer import KmerTokenizer
from phenogen.lm.config import LMConfig, SampleConfig
from phenogen.lm.encode import encode
from phenogen.lm.model import build_model, load_lm
from phenogen.lm.sample import sample
from phenogen.lm.train import train_lm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_kv_cached_sampling_on_cuda_matches_the_naive_loop_and_the_cpu():
    """Draws come from a CPU generator, so in float64 a CUDA run samples the very same barcodes."""
    lm = build_model(KmerTokenizer(k=3), "tiny", n_positions=48, seed=3)
    lm.model.double()
    cfg = SampleConfig(n=6, batch_size=4, max_tokens=30, top_p=0.9, seed=11, schedule="rise_fall")
    on_cpu = sample(lm, cfg)
    lm.model.to("cuda")
    assert lm.device.type == "cuda"
    kv = sample(lm, cfg)
    naive = sample(lm, SampleConfig(**{**cfg.__dict__, "mode": "naive"}))
    assert kv.sequences == naive.sequences == on_cpu.sequences
    assert kv.ended == naive.ended == on_cpu.ended


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lm_trains_with_mixed_precision_on_cuda_and_resumes(tmp_path, precision):
    cfg = LMConfig(**TOY_CFG, mixed_precision=precision)
    full = train_lm(_toy_splits(), tmp_path / "a", cfg, progress=False)
    losses = [s["loss"] for s in full.history["steps"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.5
    assert json.loads((tmp_path / "a" / "config.json").read_text())["lm"]["mixed_precision"] == precision
    part = train_lm(_toy_splits(), tmp_path / "b", cfg, stop_after_steps=3, progress=False)
    assert not part.finished
    resumed = train_lm(_toy_splits(), tmp_path / "b", cfg, resume=True, progress=False)
    assert resumed.finished and resumed.global_step == full.global_step
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(a[k].dtype == torch.float32 for k in a)  # master weights stay float32
    # CUDA kernels (atomic adds in the embedding backward) are not bit-reproducible: close, not equal
    assert all(torch.allclose(a[k], b[k], atol=1e-3, rtol=1e-3) for k in a)
    assert [s["loss"] for s in resumed.history["steps"]] == pytest.approx(losses, rel=1e-2, abs=1e-3)
    # the trained model encodes the same on the GPU as on the CPU
    seqs = [seq for _, seq in _toy_splits().heldout]
    h_cpu, m_cpu = encode(load_lm(tmp_path / "a"), seqs, device="cpu")
    h_gpu, m_gpu = encode(load_lm(tmp_path / "a", device="cuda"), seqs, device="cuda")
    assert torch.equal(m_cpu, m_gpu.cpu())
    assert torch.allclose(h_cpu, h_gpu.float().cpu(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_image_model_trains_with_mixed_precision_on_cuda(tmp_path, precision):
    data = _tiny_dataset(tmp_path / "data")
    cfg = _tiny_cfg(max_steps=6, mixed_precision=precision, checkpoint_every=2)
    result = train_image_model(data.root, tmp_path / "run", cfg, progress=False)
    assert result.global_step == 6 and all(np.isfinite(result.losses))
    weights = load_file(tmp_path / "run" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    pipe = load_pipeline(tmp_path / "run" / "pipeline", device="cuda")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(SEQS, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 16, 16, 3) and np.isfinite(out.images).all()


def test_half_precision_sampling_on_cuda_matches_float32_and_the_cpu():
    pipe = _tiny_pipeline()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def paint(p):
        kw = dict(num_inference_steps=4, guidance_scale=4.0, output_type="np", latents=latents.clone())
        return p(SEQS, **kw).images

    on_cpu = paint(pipe)
    pipe.to("cuda")
    fp32 = paint(pipe)
    assert np.abs(fp32 - on_cpu).max() < 1e-3
    for dtype in (torch.float16, torch.bfloat16):
        pipe.to("cuda", dtype)
        half = paint(pipe)
        assert np.isfinite(half).all()
        assert np.abs(half - fp32).mean() < 0.02, dtype
        pipe.to("cuda", torch.float32)
