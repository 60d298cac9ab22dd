"""Tiny image-to-image CNN "generators" used to synthesise the demo benchmark's fakes.

Every family is the same small autoencoder -- an encoder that halves the resolution
into a low-capacity latent and a decoder that upsamples it back -- and the families
differ *only* in the decoder's 2x upsampling operator.  Each operator leaves its own
trace in the output spectrum (checkerboards for transposed convolutions, blocky
replication for nearest neighbour, periodic sub-pixel patterns for pixel shuffle,
ringing for Fourier zero-padding, ...), which is what makes the families behave like
different GAN architectures for a forensic detector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..lrp.registry import Epsilon

#: Generator families, named after their decoder's upsampling operator.
FAMILIES: tuple[str, ...] = ("tconv", "nearest", "bilinear", "pixelshuffle", "fourier")

#: The family whose fakes are used for training (the role ProGAN plays in the paper).
TRAINING_FAMILY: str = "tconv"


def fourier_upsample(x: torch.Tensor) -> torch.Tensor:
    """Upsample 2x by zero-padding the centred 2-D spectrum (band-limited sinc interpolation)."""
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x, norm="forward"), dim=(-2, -1))
    spec = F.pad(spec, (w // 2, w - w // 2, h // 2, h - h // 2))
    return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1)), norm="forward").real


# the Fourier upsampling is linear in its input: the ε-rule applies (torch.fx keeps it as one operation); the
# modules calling it carry the rule, and an Explainer extends its composite with it (no global table)
LRP_RULES = {fourier_upsample: Epsilon()}


class Upsample2x(nn.Module):
    """Family-specific 2x spatial upsampling of a ``channels``-channel feature map."""

    tff_lrp_rules = LRP_RULES  # the rules of its own operations (tffkit.lrp.composite)

    def __init__(self, family: str, channels: int) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown generator family {family!r}; expected one of {FAMILIES}")
        self.family = family
        self.op: nn.Module | None = None
        if family == "tconv":
            # 3x3 kernel, stride 2: uneven kernel overlap -> the classic checkerboard fingerprint.
            self.op = nn.ConvTranspose2d(channels, channels, kernel_size=3, stride=2, padding=1,
                                         output_padding=1)
        elif family == "pixelshuffle":
            self.op = nn.Sequential(
                nn.Conv2d(channels, 4 * channels, 3, padding=1, padding_mode="reflect"),
                nn.PixelShuffle(2),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` upsampled by a factor of two in height and width."""
        if self.op is not None:
            return self.op(x)
        if self.family == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.family == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return fourier_upsample(x)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2 if stride == 1 else 1,
                     padding_mode="reflect")


class RegenGenerator(nn.Module):
    """Autoencoder that "regenerates" an image in [-1, 1] through a half-resolution latent."""

    def __init__(self, family: str, width: int = 16, latent: int = 8) -> None:
        super().__init__()
        self.family = family
        act: Callable[[], nn.Module] = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.encoder = nn.Sequential(
            _conv(3, width), act(),
            _conv(width, 2 * width, k=4, stride=2), act(),
            _conv(2 * width, latent),
        )
        self.decoder = nn.Sequential(
            _conv(latent, 2 * width), act(),
            _conv(2 * width, width), act(),
            Upsample2x(family, width),
            _conv(width, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and decode a batch ``(N, 3, H, W)`` with even H and W."""
        return self.decoder(self.encoder(x))


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images -> float ``(N, 3, H, W)`` tensor in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float ``(N, 3, H, W)`` tensor in [-1, 1] -> uint8 ``(N, H, W, 3)`` images."""
    out = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def spectral_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the 2-D amplitude spectra (penalises blur and missing detail)."""
    fa = torch.fft.rfft2(a, norm="ortho").abs()
    fb = torch.fft.rfft2(b, norm="ortho").abs()
    return (fa - fb).abs().mean()


def train_generator(
    family: str,
    images: np.ndarray,
    steps: int,
    seed: int,
    batch_size: int = 32,
    patch: int = 32,
    lr: float = 3e-3,
    spectral_weight: float = 6.0,
    on_step: Callable[[], None] | None = None,
) -> tuple[RegenGenerator, float]:
    """Train one family's generator to reconstruct random ``patch``-sized crops of ``images``.

    ``images`` are uint8 ``(N, H, W, 3)`` training crops.  The loss is pixel L1 plus an
    amplitude-spectrum L1 term (so the outputs are not merely blurry).  Returns the model
    in eval mode and the mean loss over the last tenth of the steps.  Deterministic for a
    given seed; the global torch RNG state is left untouched.
    """
    data = to_tensor(images)
    n, _, h, w = data.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RegenGenerator(family)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.99))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=lr * 0.05)
        tail: list[float] = []
        model.train()
        for step in range(steps):
            idx = torch.randint(0, n, (batch_size,), generator=gen)
            y0, x0 = (int(v) for v in torch.randint(0, min(h, w) - patch + 1, (2,), generator=gen))
            x = data[idx, :, y0:y0 + patch, x0:x0 + patch]
            if bool(torch.randint(0, 2, (1,), generator=gen)):
                x = x.flip(-1)
            y = model(x)
            loss = (y - x).abs().mean() + spectral_weight * spectral_l1(y, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step >= steps - max(1, steps // 10):
                tail.append(loss.item())
            if on_step is not None:
                on_step()
    model.eval()
    return model, float(np.mean(tail)) if tail else float("nan")


@torch.no_grad()
def regenerate(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pass uint8 ``(N, H, W, 3)`` images through ``model``; returns uint8 images of equal shape."""
    outs = [to_uint8(model(to_tensor(images[i:i + batch_size])))
            for i in range(0, len(images), batch_size)]
    return np.concatenate(outs) if outs else images[:0].copy()


def _register() -> None:
    """The demo adds its generators to the library as ``demo:<family>`` (the library does not import the demo)."""
    from ..generation.models import register_generator_kind

    register_generator_kind("demo", RegenGenerator)


_register()
