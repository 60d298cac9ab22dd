"""Generator architectures written in our own code, with the parameter names of widely used checkpoints.

- :class:`ProGANGenerator`: the progressive GAN generator (Karras et al., ICLR 2018) as in the PyTorch GAN
  zoo (``PGAN``): a latent vector → pixel norm → equalised linear to 4×4 → per scale nearest ×2 upsampling
  and two equalised 3×3 convolutions with leaky ReLU and pixel norm → equalised 1×1 ``toRGB``. Parameter
  names follow its ``GNet`` (``formatLayer``, ``groupScale0.0``, ``scaleLayers.i.j``, ``toRGBLayers.i``);
  the zoo's checkpoints store them with or without a ``.module`` level, both load.
- :class:`DCGANGenerator`: the DCGAN generator of the PyTorch examples (``main.0`` … ``main.12``).
The architecture is read off the state dict's shapes, so a checkpoint needs no config to load.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EqualizedLinear(nn.Module):
    """Linear layer with weights ~ N(0, 1) scaled at run time by He's constant sqrt(2 / fan_in) (bias too)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = math.sqrt(2.0 / in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.scale)


class EqualizedConv2d(nn.Module):
    """Conv2d with weights ~ N(0, 1) scaled at run time by He's constant sqrt(2 / fan_in) (bias too)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, padding: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale, self.padding = math.sqrt(2.0 / (in_channels * kernel * kernel)), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias * self.scale, padding=self.padding)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each pixel's feature vector divided by its root mean square over channels."""
    return x * torch.rsqrt((x * x).mean(dim=1, keepdim=True) + eps)


class ProGANGenerator(nn.Module):
    """Fully grown progressive GAN generator; output (B, 3, 4·2^k, 4·2^k) in about [−1, 1].

    ``depths[0]`` is the 4×4 scale's width, every further entry adds a ×2 scale."""

    def __init__(self, latent: int = 512, depths: Sequence[int] = (512, 512, 512, 512, 256, 128, 64),
                 out_channels: int = 3, leak: float = 0.2, pixelwise_norm: bool = True):
        super().__init__()
        self.latent, self.depths, self.leak, self.pixelwise_norm = latent, tuple(depths), leak, pixelwise_norm
        self.formatLayer = EqualizedLinear(latent, 16 * depths[0])
        self.groupScale0 = nn.ModuleList([EqualizedConv2d(depths[0], depths[0], 3, padding=1)])
        self.scaleLayers = nn.ModuleList(
            nn.ModuleList([EqualizedConv2d(prev, depth, 3, padding=1), EqualizedConv2d(depth, depth, 3, padding=1)])
            for prev, depth in zip(depths[:-1], depths[1:], strict=True))
        self.toRGBLayers = nn.ModuleList(EqualizedConv2d(depth, out_channels, 1) for depth in depths)
        self.tff_input_shape = (latent,)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x) if self.pixelwise_norm else x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self._norm(z.reshape(z.shape[0], self.latent, 1, 1)).flatten(1)
        x = F.leaky_relu(self.formatLayer(x), self.leak).reshape(z.shape[0], self.depths[0], 4, 4)
        x = self._norm(x)
        for conv in self.groupScale0:
            x = self._norm(F.leaky_relu(conv(x), self.leak))
        for group in self.scaleLayers:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            for conv in group:
                x = self._norm(F.leaky_relu(conv(x), self.leak))
        return self.toRGBLayers[-1](x)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], **kwargs) -> ProGANGenerator:
        """The architecture that fits ``sd`` (GAN zoo ``GNet`` keys, with or without ``.module``), loaded strictly."""
        sd = {k.replace(".module.", "."): v for k, v in sd.items()}
        if "formatLayer.weight" not in sd:
            raise ValueError("not a ProGAN (GAN zoo GNet) state dict: no formatLayer.weight; keys look like "
                             f"{list(sd)[:4]}")
        latent = sd["formatLayer.weight"].shape[1]
        depths = [sd["groupScale0.0.weight"].shape[0]]
        i = 0
        while f"scaleLayers.{i}.0.weight" in sd:
            depths.append(sd[f"scaleLayers.{i}.0.weight"].shape[0])
            i += 1
        model = cls(latent, depths, sd["toRGBLayers.0.weight"].shape[0], **kwargs)
        model.load_state_dict(sd, strict=True)
        return model


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016) with the PyTorch examples' layout: ``main`` of five transposed
    convolutions (4×4, stride 2 after the first), batch norm and ReLU, tanh; output (B, nc, 64, 64)."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        layers: list[nn.Module] = []
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        super().__init__()
        self.main = nn.Sequential(*layers)
        self.tff_input_shape = (nz, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], -1, 1, 1))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> DCGANGenerator:
        """The architecture that fits ``sd`` (``main.0.weight`` … ``main.12.weight``), loaded strictly."""
        if "main.0.weight" not in sd or "main.12.weight" not in sd:
            raise ValueError(f"not a DCGAN generator state dict (main.0 … main.12); keys look like {list(sd)[:4]}")
        nz, ngf8 = sd["main.0.weight"].shape[:2]
        model = cls(nz, ngf8 // 8, sd["main.12.weight"].shape[1])
        model.load_state_dict(sd, strict=True)
        return model


GENERATORS = {"progan": ProGANGenerator, "dcgan": DCGANGenerator}


def generator_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The generator weights in a checkpoint: GAN zoo's ``avgG`` (the averaged generator used for sampling) or
    ``netG``, a ``'generator'``/``'state_dict'``/``'model'`` entry, or a bare state dict; ``module.`` stripped."""
    for key in ("avgG", "netG", "generator", "state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    sd = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError("the checkpoint holds no generator state dict")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


#: image-to-image generator kinds ``<prefix>:<name>`` that other code adds (:func:`register_generator_kind`; the
#: embedded demo adds ``demo``): prefix → a function building the untrained generator ``name``
GENERATOR_KINDS: dict[str, Callable[[str], nn.Module]] = {}


def register_generator_kind(prefix: str, build: Callable[[str], nn.Module]) -> None:
    """Let ``load_generator`` read ``<prefix>:<name>`` generators: ``build(name)`` returns the untrained module, the
    checkpoint's state dict is loaded into it strictly."""
    GENERATOR_KINDS[prefix] = build


def load_generator(kind: str, weights: str | os.PathLike, trust: bool = False) -> nn.Module:
    """A ``progan`` or ``dcgan`` generator whose architecture is read off the checkpoint, or a registered
    image-to-image kind ``<prefix>:<name>`` (the embedded demo's ``demo:<family>``, e.g. ``demo:tconv``, once
    ``tffkit.demo`` is imported), in eval mode.

    Checkpoints load with ``weights_only=True``; GAN zoo files pickle their training config, so they need
    ``trust=True`` (only for files from a source you trust: unpickling can run code)."""
    prefix, _, name = kind.partition(":")
    if kind not in GENERATORS and (not name or prefix not in GENERATOR_KINDS):
        known = [*GENERATORS, *(f"{p}:<name>" for p in GENERATOR_KINDS)]
        raise ValueError(f"unknown generator {kind!r}; known: {', '.join(known)}")
    from ..detectors.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(weights, trust, "generator weights")
    sd = generator_state_dict(checkpoint)
    if kind in GENERATORS:
        return GENERATORS[kind].from_state_dict(sd).eval()
    model = GENERATOR_KINDS[prefix](name)
    model.load_state_dict(sd, strict=True)
    return model.eval()
