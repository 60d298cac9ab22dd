"""Published detectors built on timm Vision Transformers, with the key layouts of their released weights.

Facts from the original repositories (the code is ours):

- Guillaro et al. (CVPR 2025, B-Free, grip-unina/B-Free ``Wrapper5crops``): timm ``vit_base_patch14_reg4_dinov2``
  (DINOv2 ViT-B/14 with 4 registers) at 504 px, one logit. The whole image is embedded by the patch convolution at
  full resolution; a token grid smaller than 36×36 is tiled (repeated, then cut to 36×36); five 36×36 token crops
  (centre and the four corners) each go through the transformer, and their logits are averaged. The file is
  ``{'model': sd}`` with timm's keys, the patch embedding (``patch_embed.proj``) stored next to the rest.
  Here the five crops are concatenated along the token axis and a block-diagonal attention mask keeps them apart,
  so every unit (MLP neuron, residual dimension, attention head) is one layer output per image for FF-RS.
- Park & Owens (CVPR 2025, Community Forensics, JeongsooP/Community-Forensics ``ViTClassifier``): timm
  ``vit_small_patch16_384`` (or ``_224``) under ``vit.``, its head replaced by Linear(384, 1); released as a
  Hugging Face hub-mixin folder (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..lrp.registry import Gradient


def _timm_vit() -> type:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as exc:
        raise ImportError("this detector needs timm: pip install 'tffkit[timm]'") from exc
    return VisionTransformer


def token_crops(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) patch embeddings → (B, 5, C, gh, gw): B-Free's five token crops (centre, top-left, bottom-left,
    bottom-right, top-right) of a grid tiled up to (gh, gw) when smaller (then cut to exactly (gh, gw))."""
    gh, gw = grid
    h, w = tokens.shape[-2:]
    if h < gh or w < gw:
        tokens = tokens.repeat(1, 1, max(math.ceil(gh / h), 1), max(math.ceil(gw / w), 1))[..., :gh, :gw]
        h, w = gh, gw
    top, left = (h - gh) // 2, (w - gw) // 2
    crops = [tokens[..., top:top + gh, left:left + gw], tokens[..., :gh, :gw], tokens[..., h - gh:, :gw],
             tokens[..., h - gh:, w - gw:], tokens[..., :gh, w - gw:]]
    return torch.stack(crops, 1)



def crop_mask(crops: int, length: int, device: torch.device) -> torch.Tensor:
    """(crops·length)² boolean attention mask: True within a crop's tokens, False across crops."""
    block = torch.arange(crops, device=device).repeat_interleave(length)
    return block[:, None] == block[None, :]


def bfree_vit(**kwargs: Any) -> nn.Module:
    """B-Free's detector (default: ViT-B/14, 4 registers, 504 px; ``kwargs`` override timm's arguments)."""
    VisionTransformer = _timm_vit()

    class BFree(VisionTransformer):
        """timm DINOv2-register ViT whose forward averages the logits of five token crops of the whole image."""

        crops = 5
        # copies of tokens: the relevance of the copies sums back (one traced operation; tffkit.lrp.composite)
        tff_lrp_rules = {token_crops: Gradient()}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grid = self.patch_embed.grid_size  # the mask is made per call: a bool buffer would be read as the dtype
            mask = crop_mask(self.crops, grid[0] * grid[1] + self.num_prefix_tokens, x.device)
            t = token_crops(self.patch_embed.proj(x), grid)  # (B, 5, C, gh, gw)
            t = self.patch_embed.norm(t.flatten(3).transpose(2, 3)) + self.pos_embed  # (B, 5, N, C)
            prefix = torch.cat([self.cls_token, self.reg_token], 1)  # (1, 1 + registers, C)
            t = torch.cat([prefix.expand(t.shape[0], self.crops, -1, -1), t], 2)
            t = self.norm_pre(self.patch_drop(self.pos_drop(t.flatten(1, 2))))
            for block in self.blocks:
                t = block(t, attn_mask=mask)
            t = self.norm(t).unflatten(1, (self.crops, -1))[:, :, 0]  # each crop's class token
            return self.head(self.head_drop(self.fc_norm(t))).mean(1)

    args = dict(img_size=504, patch_size=14, embed_dim=768, depth=12, num_heads=12, init_values=1e-5, reg_tokens=4,
                no_embed_class=True, num_classes=1)
    return BFree(**{**args, **kwargs})


class CommunityForensics(nn.Module):
    """Park & Owens' ``ViTClassifier``: a timm ViT-S/16 (``vit``) with a one-logit head."""

    def __init__(self, img_size: int = 384, **kwargs: Any):
        super().__init__()
        VisionTransformer = _timm_vit()
        args = dict(img_size=img_size, patch_size=16, embed_dim=384, depth=12, num_heads=6, num_classes=1)
        self.vit = VisionTransformer(**{**args, **kwargs})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)
