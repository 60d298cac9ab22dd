"""Detector architectures (one-logit heads) and checkpoints in Wang et al.'s format.

p(fake) = sigmoid(logit). Checkpoints may be ``{'model': sd}`` (Wang et al.), ``{'state_dict': sd}``
or a bare state dict, with or without ``module.`` prefixes; loading is strict and a mismatch
names the architecture and the offending keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .results import atomic_write


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the requested architecture."""


def tiny_resnet(widths: tuple[int, ...] = (16, 32, 64, 128), layers: tuple[int, ...] = (1, 1, 1, 1),
                block: type[nn.Module] = BasicBlock) -> ResNet:
    """A torchvision ``ResNet`` with narrow stages (same module names) — for tests and the demo."""
    model = ResNet(block, list(layers), num_classes=1)
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    for i, (w, n) in enumerate(zip(widths, layers, strict=True)):
        setattr(model, f"layer{i + 1}", model._make_layer(block, w, n, stride=1 if i == 0 else 2))
    model.fc = nn.Linear(widths[-1] * block.expansion, 1)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(torchvision.models, name)(weights=None, num_classes=1)
    build.__doc__ = f"torchvision ``{name}`` with a one-logit head."
    return build


def efficientnet_b0_lukemelas() -> nn.Module:
    """The paper's EfficientNet-B0: efficientnet-pytorch 0.7.1, one logit, no dropout/drop-connect."""
    try:
        from efficientnet_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "arch 'efficientnet_b0_lukemelas' needs the optional extra: "
            "pip install 'tffkit[efficientnet]' (efficientnet-pytorch==0.7.1)"
        ) from exc
    return EfficientNet.from_name(
        "efficientnet-b0", num_classes=1, image_size=None, dropout_rate=0.0, drop_connect_rate=0.0
    )


def tiny_vit() -> nn.Module:
    """A torchvision ``VisionTransformer`` on 32×32 images (patch 8, 2 blocks, width 32) — tests and demos."""
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=1)
    nn.init.normal_(model.heads.head.weight, 0.0, 0.02)  # torchvision starts the head at zero
    return model


def tiny_convnext() -> nn.Module:
    """A torchvision ``ConvNeXt`` with two narrow stages (16 and 32 channels) — tests and demos."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], layer_scale=0.5, num_classes=1)


def clip_vit(name: str = "ViT-L-14", quick_gelu: bool = True) -> nn.Module:
    """An open_clip image tower (OpenAI CLIP uses QuickGELU) with a linear one-logit probe, as UnivFD."""
    try:
        import open_clip
        from open_clip.model import _build_vision_tower
    except ImportError as exc:
        raise ImportError(f"arch {name!r} needs open_clip: pip install 'tffkit[clip]'") from exc
    cfg = open_clip.get_model_config(name)
    tower = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=quick_gelu)
    return nn.Sequential(tower, nn.Linear(cfg["embed_dim"], 1))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "resnet101": _torchvision("resnet101"),
    "resnet152": _torchvision("resnet152"),
    "efficientnet_b0": _torchvision("efficientnet_b0"),
    "efficientnet_b0_lukemelas": efficientnet_b0_lukemelas,
    "convnext_tiny": _torchvision("convnext_tiny"),
    "densenet121": _torchvision("densenet121"),
    "inception_v3": lambda: torchvision.models.inception_v3(weights=None, num_classes=1, aux_logits=False),
    "swin_t": _torchvision("swin_t"),
    "vit_b_16": _torchvision("vit_b_16"),
    "clip_vit_b16": lambda: clip_vit("ViT-B-16"),
    "clip_vit_l14": lambda: clip_vit("ViT-L-14"),
    "tiny_resnet": tiny_resnet,
    "tiny_vit": tiny_vit,
    "tiny_convnext": tiny_convnext,
    "tiny_resnet_bottleneck": lambda: tiny_resnet((8, 16, 32, 64), (1, 1, 1, 1), Bottleneck),
}


def build_detector(arch: str) -> nn.Module:
    """A freshly initialised detector of architecture ``arch`` (see :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]()


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint: under ``'model'``/``'state_dict'`` or bare; ``module.`` stripped."""
    sd = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if isinstance(sd, nn.Module):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(
            "checkpoint holds no state dict: expected {'model': state_dict}, {'state_dict': ...} "
            "or a bare state dict of tensors"
        )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def load_state(model: nn.Module, checkpoint: Mapping[str, Any], arch: str = "model") -> nn.Module:
    """Load ``checkpoint`` strictly into ``model``; a mismatch names the keys and shapes at fault."""
    sd = extract_state_dict(checkpoint)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:

        def show(items: list[str]) -> str:
            head = ", ".join(items[:8])
            return f"{len(items)} ({head}{', …' if len(items) > 8 else ''})"

        raise CheckpointMismatchError(
            f"checkpoint does not fit architecture {arch!r}: missing keys {show(missing)}; "
            f"unexpected keys {show(unexpected)}; shape mismatches {show(shapes)}"
        )
    model.load_state_dict(sd, strict=True)
    return model


def load_detector(arch: str, weights: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu") -> nn.Module:
    """Build ``arch``, load ``weights`` if given (strictly), move to ``device``, set eval mode."""
    model = build_detector(arch)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        load_state(model, checkpoint, arch)
    return model.to(device).eval()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Save ``{'model': state_dict, **extra}`` (Wang et al.'s format), atomically."""
    net = model.module if hasattr(model, "module") else model
    payload = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_init_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Copy same-architecture weights (e.g. torchvision ImageNet) into ``model``; a head that does not fit
    (1000 classes vs one logit) is re-initialised as Wang et al. do (weight ~ N(0, 0.02)). Returns a report."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--init weights {path} not found")
    sd = extract_state_dict(torch.load(path, map_location="cpu", weights_only=False))
    own = model.state_dict()
    head_name = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    head = {k for k in own if k.startswith(head_name + ".")}
    fits = [k for k in own if k in sd and sd[k].shape == own[k].shape]
    missing = [k for k in own if k not in sd and k not in head and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and k not in head and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            f"--init {path} does not fit the architecture: missing {missing[:8]}, unexpected {unexpected[:8]}, "
            f"shape mismatches {shapes[:8]}")
    model.load_state_dict({k: sd[k] for k in fits}, strict=False)
    reinit = sorted(k for k in head if k not in fits)
    if f"{head_name}.weight" in reinit:
        nn.init.normal_(model.get_submodule(head_name).weight, 0.0, 0.02)
    return {"path": str(path), "loaded": len(fits), "total": len(own), "reinitialised": reinit,
            "not_in_file": [k for k in own if k not in sd and k not in head]}
