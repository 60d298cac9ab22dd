"""GPU paths (skipped without CUDA): same results as on the CPU, pinned batches, no host syncs in hot loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lrp_helpers import pseudo_trained
from tffkit import distributed as tdist
from tffkit.analysis.ffrs import FFRSAccumulator, accumulate_batch
from tffkit.data import find_samples, normalize
from tffkit.jobs.rank import RankOptions, rank
from tffkit.jobs.train import TrainOptions, train
from tffkit.lrp import Explainer
from tffkit.passes import DatasetPass

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def full_fp32():
    """Comparisons with the CPU in true fp32 (PyTorch lets cuDNN convolutions use TF32 by default)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_loader_batches_are_pinned_and_land_on_the_gpu(tree: Path):
    ctx = tdist.DistContext(0, 1, torch.device("cuda", torch.cuda.current_device()))
    run = DatasetPass(find_samples(tree), ctx, "full", batch_size=4, num_workers=1, progress=False)
    loader = run._loader()
    batch = next(iter(loader))
    assert batch.images.is_pinned() and batch.indices.is_pinned()
    images, _ = next(iter(run))
    assert images.is_cuda


def test_rank_on_gpu_matches_cpu(trained_tiny):
    weights, data = trained_tiny
    args = dict(arch="tiny_resnet", weights=str(weights), preset="full", min_prob=0.5, batch_size=8, workers=0,
                progress=False)
    cpu = rank(data, options=RankOptions(**args, device="cpu")).ranking
    gpu = rank(data, options=RankOptions(**args, device="cuda")).ranking
    both = cpu.merge(gpu, on=["layer", "channel"], suffixes=("_cpu", "_gpu"))
    assert len(both) == len(cpu) == 720
    np.testing.assert_allclose(both["omega_gpu"], both["omega_cpu"], rtol=1e-3, atol=1e-6)


def _assert_explainer_on_gpu_matches_cpu(model, x: torch.Tensor) -> None:
    cpu = Explainer(model).explain(x)
    gpu = Explainer(model.to("cuda")).explain(x.to("cuda"))
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-4)
    scale = cpu.input_relevance.abs().max()
    torch.testing.assert_close(gpu.input_relevance.cpu() / scale, cpu.input_relevance / scale, rtol=0, atol=1e-3)


def test_lrp_on_gpu_matches_cpu_and_conserves():
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    _assert_explainer_on_gpu_matches_cpu(pseudo_trained("resnet18"), x)


@pytest.mark.parametrize("arch", ["tiny_vit", "tiny_convnext"])
def test_modern_architectures_on_gpu_match_cpu(arch):
    from tffkit.detectors import build_detector

    torch.manual_seed(0)
    model = build_detector(arch).eval()
    _assert_explainer_on_gpu_matches_cpu(model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


def test_generator_explainer_on_gpu_matches_cpu():
    from tffkit.generation.compose import GeneratorExplainer
    from tffkit.generation.models import ProGANGenerator

    torch.manual_seed(0)
    generator, detector = ProGANGenerator(16, (16, 8, 8)).eval(), pseudo_trained("tiny_resnet")
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    cpu = GeneratorExplainer(generator, detector).explainer.explain(z)
    gpu = GeneratorExplainer(generator.to("cuda"), detector.to("cuda")).explainer.explain(z.to("cuda"))
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-4)
    scale = cpu.input_relevance.abs().max()
    torch.testing.assert_close(gpu.input_relevance.cpu() / scale, cpu.input_relevance / scale, rtol=0, atol=1e-3)


def test_rank_batch_needs_no_host_sync():
    """The ω tap and the seeding run with CUDA's sync debug mode set to error."""
    dev = torch.device("cuda")
    explainer = Explainer(pseudo_trained("resnet18").to(dev))
    acc = FFRSAccumulator(explainer.layers, dev)
    x = normalize(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, device=dev))
    labels = torch.tensor([1, 1, 0, 1], device=dev)
    accumulate_batch(explainer, acc, x, labels, 0.0, False)  # warm-up (caches, cuDNN)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        accumulate_batch(explainer, acc, x, labels, 0.0, False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(acc.counts[0]) == 6



def test_omega_is_exactly_zero_without_positive_relevance_on_gpu():
    from test_ffrs import omega_of_non_positive_maps

    omega, retained, _, _ = omega_of_non_positive_maps("cuda")
    cpu_omega, cpu_retained, _, _ = omega_of_non_positive_maps("cpu")
    assert omega[:, [0, 2, 3, 4]].eq(0).all()  # the GPU's reduction order leaves no residue either
    torch.testing.assert_close(omega, cpu_omega, rtol=1e-5, atol=0)
    torch.testing.assert_close(retained, cpu_retained, rtol=1e-5, atol=0)

@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_training_runs_on_gpu(tmp_path: Path, tree: Path, amp: str):
    options = TrainOptions(arch="tiny_resnet", batch_size=8, max_epochs=1, amp=amp, crop_size=24, load_size=32,
                           device="cuda", workers=1, progress=False)
    result = train(tree, tree, options=options, out=tmp_path / amp)
    assert result["device"].startswith("cuda") and result["final"]["n_seen"] == 24
    assert (tmp_path / amp / "model_best.pth").is_file()
