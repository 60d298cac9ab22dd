"""SPAI (Karageorgiou et al., CVPR 2025, 'Any-resolution AI-generated image detection by spectral learning';
mever-team/spai ``PatchBasedMFViT``), with the key layout of its released checkpoint. Facts from the original
repository (configs/spai.yaml, spai/models/sid.py, vision_transformer.py, filters.py); the code is ours.

- Input: the image in [0, 1] at its own resolution (no resize; ``A.Normalize(mean=0, std=1)`` is x/255), padded
  to at least 224×224 (albumentations ``PadIfNeeded``: centred, reflect-101). Normalisation happens in ``forward``.
- Patches: non-overlapping 224-px patches (stride 224, the remainder dropped); with fewer than 4 patches, the five
  224-px crops (corners and centre) instead.
- Per patch (``MFViT``): an FFT circular mask (radius 16 around the shifted spectrum's centre, the stored parameter
  ``mfvit.frequencies_mask``) splits the patch into a low-pass and a high-pass image, each clamped to [0, 1]; the
  patch and both bands are ImageNet-normalised and go through a BEiT-style ViT-B/16 (q/v biases, no layer scale,
  absolute position embedding); the patch tokens of all 12 blocks are projected per block (LayerNorm → Linear →
  GELU → Linear → LayerNorm); per block, the cosine similarities orig–low, orig–high and low–high of every token are
  summarised by their mean and (unbiased) std over the tokens (6 × 12 features), and the original's projected
  tokens by a softmax(alpha)-weighted mix of per-block [mean, std] projections (1024 features).
- Spectral context attention: one learnable query per head attends over the patches' 1096-d vectors (12 heads of
  128), → Linear → LayerNorm → MLP head (1096 → 3288 → 3288 → 1): one logit, p(fake) = sigmoid (class 1 = fake).

Every image is one batch row: the 3 × L (band, patch) sequences are a second batch axis inside the ViT (its
linear layers and LayerNorms act on the last axis; attention runs per sequence), and the patch embedding reads
the sequences laid side by side, so every unit's output has one row per image for FF-RS. The released ViT also
stores weights that SPAI never uses (``fc_norm``, ``intermediate_fc_norm``, ``head``, the ``cls_*`` tokens and
block): they are kept so that the checkpoint loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..lrp.registry import Epsilon, Gradient, Identity
from ..lrp.similarity import Cosine
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD

BANDS = ("original", "low", "high")


def circular_mask(size: int, radius: int) -> torch.Tensor:
    """SPAI's mask (int64, size × size): 1 where the distance of the coordinates [s/2−1, …, 0, 0, …, s/2−1] (per
    axis) is below ``radius``."""
    half = torch.arange(size // 2, dtype=torch.float32)
    axis = torch.cat([half.flip(0), half])
    radius_grid = torch.sqrt(axis[None, :] ** 2 + axis[:, None] ** 2)
    return (radius_grid < radius).long()


def low_pass(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Re(IFFT(ifftshift(mask · fftshift(FFT(x))))) over the last two axes: linear in ``x``."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))).real


def high_pass(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The residual band: the same with ``1 − mask``."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * (1 - mask), dim=(-2, -1))).real


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """(x − ImageNet mean) / std over the channel axis (−3)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last axis (``F.cosine_similarity``)."""
    return F.cosine_similarity(a, b, dim=-1)


def token_std(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Unbiased standard deviation along ``dim`` (``Tensor.std``)."""
    return x.std(dim)


def reflect101_index(n: int, before: int, after: int) -> torch.Tensor:
    """Indices of an axis of length ``n`` padded by reflect-101 (OpenCV's ``BORDER_REFLECT_101``, periodic for pads
    longer than the axis, as albumentations' ``PadIfNeeded``)."""
    period = max(2 * (n - 1), 1)
    pos = torch.arange(-before, n + after) % period
    return torch.where(pos < n, pos, period - pos) if n > 1 else torch.zeros_like(pos)


def image_patches(x: torch.Tensor, size: int, minimum: int) -> torch.Tensor:
    """(B, C, H, W) → (B, L, C, size, size): SPAI's padding to ``size``, its non-overlapping patches (row-major, the
    remainder dropped), or the five crops (corners, centre) when there are fewer than ``minimum`` patches."""
    h, w = x.shape[-2:]
    if h < size or w < size:  # PadIfNeeded: centred, reflect-101
        ph, pw = max(size - h, 0), max(size - w, 0)
        rows = reflect101_index(h, ph // 2, ph - ph // 2).to(x.device)
        cols = reflect101_index(w, pw // 2, pw - pw // 2).to(x.device)
        x = x[..., rows, :][..., cols]
        h, w = x.shape[-2:]
    nh, nw = h // size, w // size
    if nh * nw >= minimum:
        t = x[..., :nh * size, :nw * size].reshape(x.shape[0], x.shape[1], nh, size, nw, size)
        return t.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], nh * nw, x.shape[1], size, size)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    crops = [x[..., :size, :size], x[..., :size, w - size:], x[..., h - size:, :size], x[..., h - size:, w - size:],
             x[..., top:top + size, left:left + size]]
    return torch.stack(crops, 1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """BEiT attention: ``qkv`` without bias, separate ``q_bias`` and ``v_bias``; within each sequence of ``tokens``
    tokens of a (B, S·tokens, D) input (S sequences per image; heads output (B, heads, S, tokens, head_dim))."""

    def __init__(self, dim: int, heads: int, tokens: int):
        super().__init__()
        self.heads, self.tokens = heads, tokens
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape[0], x.shape[1], x.shape[2]
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, -1, self.tokens, 3, self.heads, d // self.heads)
        qkv = qkv.permute(3, 0, 4, 1, 2, 5)  # (3, B, heads, S, tokens, head_dim)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(b, length, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, tokens: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, tokens)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class SpaiViT(nn.Module):
    """SPAI's ViT (MFM's ``VisionTransformer`` with ``return_features``): the patch tokens after every block."""

    def __init__(self, img_size: int, patch: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        tokens = (img_size // patch) ** 2 + 1
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token, self.pos_embed = nn.Parameter(torch.zeros(1, 1, dim)), nn.Parameter(torch.zeros(1, tokens, dim))
        self.tokens = tokens
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, tokens) for _ in range(depth))
        # stored in the released checkpoint, unused by SPAI's forward
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.actual_cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, tokens)])
        self.intermediate_fc_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(depth))
        self.head = nn.Linear(dim * depth, 2)
        for p in (self.cls_token, self.pos_embed, self.cls_pos_embed, self.actual_cls_token):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, S, 3, P, P) normalised patches → per block (B, S, tokens − 1, D) patch tokens (class token dropped);
        the residual stream is (B, S·tokens, D): one row per image, sequences one after the other."""
        b, s, c, p = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        grid = self.patch_embed.proj(x.permute(0, 2, 3, 1, 4).reshape(b, c, p, s * p))  # sequences side by side
        d, g = grid.shape[1], grid.shape[2]
        t = grid.reshape(b, d, g, s, g).permute(0, 3, 2, 4, 1).reshape(b, s, g * g, d)
        t = torch.cat([self.cls_token.expand(b, s, 1, d), t], 2) + self.pos_embed.unsqueeze(1)
        t = t.reshape(b, s * self.tokens, d)
        features = []
        for block in self.blocks:
            t = block(t)
            features.append(t.reshape(b, s, self.tokens, d)[:, :, 1:])
        return features


class Projector(nn.Module):
    """SPAI's ``Projector``: [LayerNorm] → Dropout, (Linear, GELU/last activation, Dropout) × layers → LayerNorm."""

    def __init__(self, layers: int, dim_in: int, dim: int, last: type[nn.Module], input_norm: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim_in) if input_norm else nn.Identity()
        mods: list[nn.Module] = [nn.Dropout(0.5)]
        for i in range(layers):
            mods += [nn.Linear(dim_in if i == 0 else dim, dim), nn.GELU() if i < layers - 1 else last(),
                     nn.Dropout(0.5)]
        self.projector = nn.Sequential(*mods)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.projector(self.norm1(x)))


class FeatureSpecificProjector(nn.Module):
    def __init__(self, depth: int, layers: int, dim_in: int, dim: int):
        super().__init__()
        self.projectors = nn.ModuleList(Projector(layers, dim_in, dim, nn.Identity) for _ in range(depth))


class FeatureImportanceProjector(nn.Module):
    """The original-image branch: per block [mean, std] over tokens → proj1 → softmax(alpha)-weighted sum → proj2."""

    def __init__(self, depth: int, dim: int, layers: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.randn(1, depth, dim))
        self.proj1 = Projector(layers, 2 * dim, dim, nn.GELU, input_norm=False)
        self.proj2 = Projector(layers, dim, dim, nn.GELU, input_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, blocks, tokens, D) → (…, D)."""
        x = torch.cat([x.mean(-2), token_std(x, -2)], -1)
        x = torch.softmax(self.alpha, dim=1) * self.proj1(x)
        return self.proj2(x.sum(-2))


class FrequencyRestorationEstimator(nn.Module):
    def __init__(self, depth: int, dim_in: int, dim: int, layers: int):
        super().__init__()
        self.patch_projector = FeatureSpecificProjector(depth, layers, dim_in, dim)
        self.original_features_processor = FeatureImportanceProjector(depth, dim, layers)

    def forward(self, features: list[torch.Tensor], patches: int) -> torch.Tensor:
        """Per block (B, 3·L, tokens, D) → (B, L, 6·blocks + D)."""
        stats: list[list[torch.Tensor]] = [[] for _ in range(6)]
        originals = []
        for f, projector in zip(features, self.patch_projector.projectors, strict=True):
            f = projector(f)
            f = f.unflatten(1, (3, patches))
            orig, low, high = f[:, 0], f[:, 1], f[:, 2]  # (B, L, tokens, D) each
            for j, sim in enumerate((cosine(orig, low), cosine(orig, high), cosine(low, high))):
                stats[2 * j].append(sim.mean(-1))
                stats[2 * j + 1].append(token_std(sim, -1))
            originals.append(orig)
        summary = torch.cat([torch.stack(s, -1) for s in stats], -1)  # (B, L, 6·blocks)
        orig = self.original_features_processor(torch.stack(originals, 2))  # (B, L, D)
        return torch.cat([summary, orig], -1)


class MFViT(nn.Module):
    """The per-patch encoder: FFT band split, the ViT on the patch and both bands, the frequency restoration
    estimator. ``band_original/low/high`` mark the three branches (the [0, 1] images the ViT reads) so that the
    relevance reaching each can be read (:func:`tffkit.analysis.bands.band_relevance`)."""

    def __init__(self, vit: SpaiViT, fre: FrequencyRestorationEstimator, img_size: int, radius: int):
        super().__init__()
        self.vit, self.features_processor = vit, fre
        self.register_buffer("frequencies_mask", circular_mask(img_size, radius))
        self.band_original, self.band_low, self.band_high = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, 3, P, P) patches in [0, 1] → (B, L, features)."""
        low = torch.clamp(low_pass(x, self.frequencies_mask), 0.0, 1.0)
        high = torch.clamp(high_pass(x, self.frequencies_mask), 0.0, 1.0)
        bands = torch.cat([self.band_original(x), self.band_low(low), self.band_high(high)], 1)  # (B, 3·L, …)
        return self.features_processor(self.vit(imagenet_normalize(bands)), x.shape[1])


class ClassificationHead(nn.Module):
    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(dim, dim * ratio), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(dim * ratio, dim * ratio), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(dim * ratio, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class SPAI(nn.Module):
    """SPAI's ``PatchBasedMFViT`` (defaults: the released configuration, configs/spai.yaml)."""

    # the FFT bands are linear in the patch (ε); normalisation passes relevance as the zoo's outside normalisation
    # does; copies of pixels (padding, crops) sum back; std: ε (exact, docs/lrp.md); cosine: lrp.similarity
    tff_lrp_rules = {image_patches: Gradient(), low_pass: Epsilon(), high_pass: Epsilon(),
                     imagenet_normalize: Identity(), cosine: Cosine(), token_std: Epsilon()}
    tff_relevance_branches = {b: f"mfvit.band_{b}" for b in BANDS}

    def __init__(self, img_size: int = 224, patch: int = 16, embed_dim: int = 768, depth: int = 12, heads: int = 12,
                 mlp_ratio: float = 4.0, proj_dim: int = 1024, proj_layers: int = 2, radius: int = 16,
                 attn_dim: int = 1536, attn_heads: int = 12, head_ratio: int = 3, minimum_patches: int = 4):
        super().__init__()
        self.img_size, self.minimum_patches, self.heads = img_size, minimum_patches, attn_heads
        vit = SpaiViT(img_size, patch, embed_dim, depth, heads, mlp_ratio)
        fre = FrequencyRestorationEstimator(depth, embed_dim, proj_dim, proj_layers)
        self.mfvit = MFViT(vit, fre, img_size, radius)
        dim = 6 * depth + proj_dim
        self.to_kv = nn.Linear(dim, 2 * attn_dim, bias=False)
        self.patch_aggregator = nn.Parameter(torch.zeros(attn_heads, 1, attn_dim // attn_heads))
        self.to_out = nn.Sequential(nn.Linear(attn_dim, dim, bias=False), nn.Dropout(0.5))
        self.norm = nn.LayerNorm(dim)
        self.cls_head = ClassificationHead(dim, head_ratio)
        nn.init.trunc_normal_(self.patch_aggregator, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def patches_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Spectral context attention: (B, L, dim) → (B, dim)."""
        b, n = x.shape[0], x.shape[1]
        kv = self.to_kv(x).reshape(b, n, 2, self.heads, -1)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, heads, L, head_dim)
        query = self.patch_aggregator.expand(b, -1, -1, -1)  # (B, heads, 1, head_dim)
        out = F.scaled_dot_product_attention(query, k, v)  # scale head_dim^-0.5, as the original
        return self.to_out(out.transpose(1, 2).reshape(b, -1)).reshape(b, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] (one size per batch) → (B, 1) logits."""
        features = self.mfvit(image_patches(x, self.img_size, self.minimum_patches))
        return self.cls_head(self.norm(self.patches_attention(features)))


__all__ = ["BANDS", "SPAI", "circular_mask", "high_pass", "image_patches", "low_pass"]
