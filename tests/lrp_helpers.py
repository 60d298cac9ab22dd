"""Helpers for LRP tests: detectors with realistic (non-degenerate) batch-norm statistics."""

import torch
from torch import nn

from tffkit.detectors import build_detector


def pseudo_trained(arch: str, seed: int = 0) -> nn.Module:
    """A detector whose BN statistics and affine parameters are randomised, so activations neither
    vanish nor explode as in a fresh initialisation (a stand-in for trained weights)."""
    torch.manual_seed(seed)
    model = randomise_batch_norm(build_detector(arch).eval())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.fill_(0.05)
    return model


def randomise_batch_norm(model: nn.Module) -> nn.Module:
    """Draw every BatchNorm2d's running statistics and affine parameters from ranges a trained net has (in place,
    from torch's global generator)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


def calibrate_batch_norm(model: nn.Module, size: int, passes: int = 3, seed: int = 0) -> nn.Module:
    """Batch-norm statistics measured on random inputs (cumulative average, momentum None) over a few forward
    passes in train mode, then eval mode (in place): as calibrated detectors have, where each BN normalises what
    reaches it — the setting in which unfolded or unmerged layers make relevance explode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(torch.randn(4, 3, size, size, generator=g))
    return model.eval()
