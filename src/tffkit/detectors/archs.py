"""Plain architectures with one-logit heads (torchvision, the paper's EfficientNet-B0, small test models).

The published detectors with their own layers, preprocessing and checkpoint layouts are in :mod:`.zoo`.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


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
    init_resnet_weights(model)
    return model


def init_resnet_weights(model: nn.Module) -> None:
    """torchvision's ResNet initialisation (He normal convolutions, BN γ = 1, β = 0) for a rebuilt stem or head."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
