"""DEAR (Kim et al., ICML 2026, 'Dissect and Prune'): a Corvi or Rajan ResNet-50 whose ``layer4`` output is
multiplied by a fixed 0/1 channel gate (a buffer saved with the weights), then average pooling and a refit head.

Facts from the original repository (dahyedahye/dear, ``GatedResNet``/``ChannelGate``; the code here is ours): the
gate sits after ``layer4`` and before the pooling, the base network keeps its names under ``backbone.``, the gate is
``gate.gate`` (2048 values, 1 = kept), the file is ``{'model': state_dict}`` without ``module.`` prefixes. DEAR-c
keeps the middle 60% of the channels ranked by their Regional Activation Discrepancy on inpainted images, DEAR-r the
middle 40%.

The gate is a unit selection in the sense of FF-RS: :func:`tffkit.analysis.gate.gate_units` lists the kept and pruned
``layer4`` channels as ranking units (the last block's ``conv3``, whose channel c only reaches the logit through gate
channel c), and :func:`tffkit.analysis.gate.gate_vs_ranking` compares an FF-RS ranking (of the base detector, usually)
with the gate.
"""

from __future__ import annotations

import torch
from torch import nn

from .forensic import corvi_resnet50


class ChannelGate(nn.Module):
    """Multiplies the channels of a (B, C, H, W) map by the fixed buffer ``gate`` (C,)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("gate", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate.view(1, -1, 1, 1)


class DEARResNet(nn.Module):
    """DEAR's gated detector: ``backbone`` (Corvi's/Rajan's stride-1 ResNet-50), ``gate`` after ``layer4``.

    ``keep``: for a randomly initialised model only (tests, ``--random-weights``), the share of channels the gate
    keeps, drawn with ``gate_seed``; the released files set the gate (strict loading)."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), layers: tuple[int, ...] = (3, 4, 6, 3),
                 keep: float = 1.0, gate_seed: int = 0):
        super().__init__()
        self.backbone = corvi_resnet50(widths, layers)
        self.gate = ChannelGate(self.backbone.fc.in_features)
        if keep < 1.0:
            n = self.gate.gate.numel()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(gate_seed))
            self.gate.gate.zero_()[order[:max(1, round(keep * n))]] = 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The ungated ``layer4`` output (what DEAR's dissection scores)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.features(x))
        return self.backbone.fc(torch.flatten(self.backbone.avgpool(x), 1))


def dear_of(model: nn.Module) -> DEARResNet:
    """The DEAR module inside a loaded detector (``load_detector`` may wrap it)."""
    for m in model.modules():
        if isinstance(m, DEARResNet):
            return m
    raise ValueError("not a DEAR detector (no gated ResNet inside); use --arch dear_c or dear_r")
