"""The published detectors' architectures, written so that their released checkpoints load with strict keys.

Facts taken from the original repositories (layer names, strides, heads); the code is ours:

- Corvi et al. (ICASSP 2023, DMimageDetection ``res50stride1``): torchvision ResNet-50 names, the first
  convolution and the max-pool at stride 1 (no down-sampling before ``layer1``), a one-logit ``fc``. The original
  applies ``fc`` per position and averages the logits; averaging first is the same affine map.
- Tan et al. (CVPR 2024, NPR): ResNet-50 cut after ``layer2`` (512 features → ``fc1``), a 3×3 stride-2 first
  convolution, input ``(x − up(down(x)))·2/3`` with nearest ×0.5 then ×2 resampling.
- Ojha et al. (CVPR 2023, UnivFD): the CLIP ViT-L/14 image tower (OpenAI weights, QuickGELU) and ``fc``: 768 → 1.
- Koutlis & Papadopoulos (ECCV 2024, RINE): the CLS token after each block's ``ln_2`` (24 for ViT-L/14) →
  ``proj1`` → softmax(``alpha``)-weighted sum over blocks → ``proj2`` → ``head``; Dropout/ReLU at the original
  indices so the released keys (``alpha``, ``proj1.1.weight`` …, ``head.6.bias``) match.
- Chen et al. (ICML 2024, DRCT): timm ``convnext_base`` whose classifier is a 1024-d embedding, then ``fc``: 1024 → 2
  (index 1 = fake).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from .archs import init_resnet_weights


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """A torchvision Bottleneck stage (``downsample.0`` conv + ``downsample.1`` BN when the shape changes)."""
    down = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        down = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride, bias=False),
                             nn.BatchNorm2d(planes * Bottleneck.expansion))
    layers = [Bottleneck(inplanes, planes, stride, down)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def corvi_resnet50(widths: tuple[int, ...] = (64, 128, 256, 512), layers: tuple[int, ...] = (3, 4, 6, 3)) -> ResNet:
    """Corvi et al.'s ``res50stride1``: a one-logit ResNet-50 with no down-sampling in conv1 and the max-pool."""
    model = ResNet(Bottleneck, list(layers), num_classes=1)
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=1, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    for i, (w, n) in enumerate(zip(widths, layers, strict=True)):
        setattr(model, f"layer{i + 1}", _stage(model.inplanes, w, n, 1 if i == 0 else 2))
        model.inplanes = w * Bottleneck.expansion
    model.fc = nn.Linear(widths[-1] * Bottleneck.expansion, 1)
    init_resnet_weights(model)
    return model


class NPRResNet(nn.Module):
    """Tan et al.'s NPR detector: neighbouring-pixel residuals into a ResNet-50 cut after ``layer2``."""

    def __init__(self, widths: tuple[int, int] = (64, 128), layers: tuple[int, int] = (3, 4)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(widths[0], widths[0], layers[0], 1)
        self.layer2 = _stage(widths[0] * Bottleneck.expansion, widths[1], layers[1], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc1 = nn.Linear(widths[1] * Bottleneck.expansion, 1)
        init_resnet_weights(self)

    @staticmethod
    def residual(x: torch.Tensor) -> torch.Tensor:
        """x − up(down(x)): nearest ×0.5 then ×2 (even sizes only, as in the original)."""
        down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
        return x - F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.residual(x) * (2.0 / 3.0))
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc1(torch.flatten(self.avgpool(x), 1))


def clip_tower(vision_cfg: dict[str, Any] | None = None, embed_dim: int | None = None) -> nn.Module:
    """An open_clip image tower with OpenAI's QuickGELU; default ViT-L/14 (keys as OpenAI's ``visual.*``)."""
    try:
        import open_clip
        from open_clip.model import _build_vision_tower
    except ImportError as exc:
        raise ImportError("the CLIP detectors need open_clip: pip install 'tffkit[clip]'") from exc
    if vision_cfg is None:
        cfg = open_clip.get_model_config("ViT-L-14")
        vision_cfg, embed_dim = cfg["vision_cfg"], cfg["embed_dim"]
    return _build_vision_tower(embed_dim, dict(vision_cfg), quick_gelu=True)


class UnivFD(nn.Module):
    """Ojha et al.'s UnivFD: a frozen CLIP image tower (``visual``) and a linear probe ``fc`` to one logit."""

    def __init__(self, vision_cfg: dict[str, Any] | None = None, embed_dim: int = 768):
        super().__init__()
        self.visual = clip_tower(vision_cfg, embed_dim)
        self.fc = nn.Linear(embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.visual(x))


def _mlp(width_in: int, width: int, n: int) -> nn.Sequential:
    """RINE's projection: Dropout, then n × (Linear, ReLU, Dropout) — Linear at indices 1, 4, 7, …"""
    layers: list[nn.Module] = [nn.Dropout()]
    for i in range(n):
        layers += [nn.Linear(width_in if i == 0 else width, width), nn.ReLU(), nn.Dropout()]
    return nn.Sequential(*layers)


class Rine(nn.Module):
    """Koutlis & Papadopoulos' RINE: intermediate CLS tokens of a CLIP tower weighted by a trainable importance."""

    def __init__(self, vision_cfg: dict[str, Any] | None = None, embed_dim: int = 768, nproj: int = 2,
                 proj_dim: int = 1024):
        super().__init__()
        self.visual = clip_tower(vision_cfg, embed_dim)
        width, blocks = self.visual.conv1.out_channels, len(self.visual.transformer.resblocks)
        self.alpha = nn.Parameter(torch.randn(1, blocks, proj_dim))
        self.proj1 = _mlp(width, proj_dim, nproj)
        self.proj2 = _mlp(proj_dim, proj_dim, nproj)
        self.head = nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(),
                                  nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(), nn.Linear(proj_dim, 1))

    def cls_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, blocks, width): the CLS token of every block's ``ln_2`` output (the input of its MLP)."""
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        tokens = []
        blocks = list(v.transformer.resblocks)
        for i, block in enumerate(blocks):
            x = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
            h = block.ln_2(x)
            tokens.append(h[:, 0] if batch_first else h[0])
            if i < len(blocks) - 1:  # the last block's MLP feeds nothing RINE reads
                x = x + block.ls_2(block.mlp(h))
        return torch.stack(tokens, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.proj1(self.cls_tokens(x))
        z = torch.sum(torch.softmax(self.alpha, dim=1) * g, dim=1)
        return self.head(self.proj2(z))


def rine_shape(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """RINE's ``nproj`` and ``proj_dim`` read from its released parts (they differ between its checkpoints)."""
    if "alpha" not in state:
        return {}
    return {"proj_dim": int(state["alpha"].shape[-1]),
            "nproj": sum(1 for k in state if k.startswith("proj1.") and k.endswith(".weight"))}


class DRCTConvNeXt(nn.Module):
    """Chen et al.'s DRCT ConvNeXt-base: timm ``convnext_base`` → 1024-d embedding (``model``) → ``fc`` (real, fake)."""

    def __init__(self, embedding: int = 1024, **convnext: Any):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise ImportError("drct2024 needs timm: pip install 'tffkit[timm]'") from exc
        self.model = timm.create_model("convnext_base", pretrained=False, num_classes=embedding, **convnext)
        self.fc = nn.Linear(embedding, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.model(x))
