"""The detector zoo: published detectors with their architecture, exact preprocessing, label polarity and the key
layout of their released weights — plus ``torchvision:<name>``, ``timm:<name>`` and ``python:<module>:<factory>``.

``tff detectors`` lists the zoo. Every entry has a ``@tiny`` variant (``npr2024@tiny``): the same structure, key
layout and preprocessing at a few thousand parameters, for tests and smoke runs with random weights.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from ..options import code_trusted
from ..preprocess import CLIP_MEAN, CLIP_STD, Preprocessing
from ..results import file_sha256
from . import forensic as fz
from . import vits
from .archs import ARCHITECTURES, efficientnet_b0_lukemelas, tiny_resnet
from .checkpoints import CheckpointMismatchError, extract_state_dict
from .dear import DEARResNet
from .spai import SPAI

ANALYSES = ("evaluate", "rank", "dropout", "lrpmax", "color", "explain", "train")
EXPLAINED = ANALYSES[:-1]  # tff train is Wang et al.'s recipe: not the CLIP detectors' nor DRCT's own training
CLIP_PREP = Preprocessing(CLIP_MEAN, CLIP_STD, crop=224)
TINY_CLIP = {"vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14,
                            "mlp_ratio": 2.0}, "embed_dim": 16}
CLIP_FILES = ("the CLIP ViT-L/14 image tower: OpenAI's ViT-L-14.pt (TorchScript) or open_clip's "
              "open_clip_pytorch_model.bin / .safetensors (keys visual.*; the text tower is ignored)")


@dataclass(frozen=True)
class Detector:
    """A zoo entry: how to build the detector, read its weights, prepare its inputs and read its output.

    ``outputs``: logits per image (1, or 2 for a (real, fake) head; None: found by a probe forward).
    ``fake_index``: for two logits, the index of 'fake'; for one logit, 1 if it is the fake logit, 0 if the real
    one (p(fake) is then sigmoid(−logit)). ``backbone_prefix``: the keys a second file (``backbone_weights``)
    provides; ``head_prefix``: the prefix put before the keys of the weights file when it holds only the head.
    ``input_rule``: the LRP rule of the convolution reading the pixels (as timm's ``first_conv``): ``zbox`` (zβ with
    the preprocessing's pixel bounds, the paper's ResNets) or ``zplus`` (the other convolutions' rule); the
    model carries it as ``tff_input_rule`` and ``Explainer(input_rule='auto')`` reads it.
    """

    name: str
    build: Callable[..., nn.Module]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    paper: str = ""
    backbone: str = ""
    files: str = ""
    layout: str = ""
    licence: str = ""
    verified: tuple[str, ...] = ()
    outputs: int | None = 1
    fake_index: int = 1
    backbone_prefix: str | None = None
    head_prefix: str = ""
    infer: Callable[[Mapping[str, torch.Tensor]], dict] | None = None
    tiny: dict[str, Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, int, int] | None = None
    notes: str = ""
    code: dict[str, str] | None = None  # python:FILE.py specs: {'file', 'sha256'} of the file that was run
    input_rule: str = "zplus"

    def create(self, **kwargs: Any) -> nn.Module:
        """A freshly initialised detector (raw outputs, before the polarity wrapper), carrying ``tff_input_rule`` and
        ``tff_normalization`` (its preprocessing's mean and std: :mod:`tffkit.heads`)."""
        model = self.build(**{**self.kwargs, **kwargs})
        model.tff_input_rule = self.input_rule
        model.tff_normalization = (tuple(self.preprocessing.mean), tuple(self.preprocessing.std))
        return model

    def state_dict(self, weights: Any | None, backbone: Any | None) -> dict[str, torch.Tensor]:
        """The model's state dict assembled from the checkpoint(s) in this entry's original layout."""
        sd = extract_state_dict(weights) if weights is not None else {}
        if self.backbone_prefix is None:
            if backbone is not None:
                raise ValueError(f"detector {self.name!r} takes one weights file; --backbone-weights is not used")
            return sd
        if any(k.startswith(self.backbone_prefix) for k in sd):  # a whole-model file (e.g. written by tff train)
            if backbone is not None:
                raise ValueError(f"{self.name}: the weights file already holds the backbone ({self.backbone_prefix}*"
                                 "); do not pass --backbone-weights too")
            return sd
        if backbone is None:
            raise ValueError(f"detector {self.name!r} needs two files: --weights {self.files.split(';')[0]} and "
                             f"--backbone-weights with {CLIP_FILES}")
        tower = {k: v for k, v in extract_state_dict(backbone).items() if k.startswith(self.backbone_prefix)}
        if not tower:
            raise CheckpointMismatchError(f"the backbone file of {self.name!r} holds no '{self.backbone_prefix}*' keys;"
                                          f" expected {CLIP_FILES}")
        return {**tower, **{self.head_prefix + k: v for k, v in sd.items()}}

    def listing(self) -> dict[str, Any]:
        """The fields ``tff detectors`` shows."""
        return {"name": self.name, "paper": self.paper, "backbone": self.backbone,
                "preprocessing": self.preprocessing.describe(), "files": self.files, "layout": self.layout,
                "licence": self.licence, "polarity": self.polarity(), "verified": list(self.verified),
                "notes": self.notes}

    def polarity(self) -> str:
        """How p(fake) is read from the output."""
        if self.outputs == 2:
            return f"two logits, fake = index {self.fake_index}: p = softmax[{self.fake_index}]"
        if self.outputs == 1:
            return ("one logit, p = sigmoid(logit)" if self.fake_index == 1 else
                    "one logit of 'real': p = sigmoid(−logit)")
        return "one or two logits (found when loaded)"


def wang_resnet50(widths: tuple[int, ...] | None = None, layers: tuple[int, ...] = (1, 1, 1, 1)) -> nn.Module:
    """Wang et al.'s detector: torchvision ResNet-50 with one logit (``widths``: a narrow one, for tests)."""
    if widths is None:
        return torchvision.models.resnet50(weights=None, num_classes=1)
    from torchvision.models.resnet import Bottleneck

    return tiny_resnet(widths, layers, Bottleneck)


ANALYSES_ZOO = ("evaluate", "rank", "dropout", "faithfulness", "lrpmax", "color", "explain")
DEAR_LAYOUT = ("{'model': state_dict} (no 'module.'): backbone.* (Corvi/Rajan ResNet-50 keys, backbone.fc 2048 → 1) "
               "and gate.gate (2048,) 0/1")
DEAR_TINY = {"widths": (4, 8, 8, 16), "layers": (1, 1, 1, 1), "keep": 0.5}
DEAR_NOTES = ("whole images, ImageNet mean/std, no resize (scripts/inference.py); the gate is a unit selection: "
              "tffkit.analysis.gate.gate_units lists it as layer4's last conv3 channels (gated-off ones get ω = 0) "
              "and gate_vs_ranking compares an FF-RS ranking of the base detector with it")
RESNET_KEYS = "torchvision ResNet keys conv1, bn1, layer1…layer4 (conv1/bn1…conv3/bn3, downsample.0/1), fc"
ZOO: dict[str, Detector] = {d.name: d for d in [
    Detector("wang2020", wang_resnet50,
             paper="Wang et al., CVPR 2020 (CNNSpot, 'CNN-generated images are surprisingly easy to spot')",
             backbone="ResNet-50", files="blur_jpg_prob0.5.pth / blur_jpg_prob0.1.pth",
             layout="{'model': state_dict}, " + RESNET_KEYS, licence="CC BY-NC-SA 4.0 (CNNDetection repository)",
             verified=ANALYSES, tiny={"widths": (8, 16, 32, 64), "layers": (1, 1, 1, 1)}, input_rule="zbox",
             notes="= resnet50; evaluation without resizing, centre crop 224 (the paper's setting)"),
    Detector("corvi2023", fz.corvi_resnet50,
             Preprocessing(crop=None),
             paper="Corvi et al., ICASSP 2023 ('On the detection of synthetic images generated by diffusion models')",
             backbone="ResNet-50, conv1 and max-pool at stride 1", files="Grag2021_progan/model_epoch_best.pth, "
             "Grag2021_latent/model_epoch_best.pth", layout="{'model': state_dict} with 'module.' prefixes, "
             + RESNET_KEYS + " (fc: 2048 → 1)", licence="GRIP-UNINA licence: non-profit use only",
             verified=ANALYSES, tiny={"widths": (4, 8, 8, 16), "layers": (1, 1, 1, 1)}, input_shape=(3, 96, 96),
             input_rule="zbox",
             notes="whole images, batch by size (the original tests one image at a time)"),
    Detector("npr2024", fz.NPRResNet, Preprocessing(crop=None, resize=(256, 256)),
             paper="Tan et al., CVPR 2024 ('Rethinking the up-sampling operations … NPR')",
             backbone="ResNet-50 cut after layer2, input x − up(down(x))", files="NPR.pth, model_epoch_last_3090.pth",
             layout="bare state_dict: conv1 (3×3), bn1, layer1, layer2, fc1 (512 → 1)",
             licence="none stated in the repository", verified=ANALYSES,
             tiny={"widths": (8, 16), "layers": (1, 1)}, input_shape=(3, 256, 256),
             notes="resized to 256×256 as its test script does for ForenSynths/DiffusionForensics/UnivFD sets; "
                   "image sides must be even"),
    Detector("univfd2023", fz.UnivFD, CLIP_PREP,
             paper="Ojha et al., CVPR 2023 ('Towards universal fake image detectors …', UnivFD)",
             backbone="CLIP ViT-L/14 (OpenAI, QuickGELU) + linear probe 768 → 1",
             files="fc_weights.pth; CLIP weights via --backbone-weights",
             layout="fc_weights.pth: bare {weight (1, 768), bias (1,)}; backbone: CLIP state dict visual.*",
             licence="MIT (UniversalFakeDetect); CLIP weights: MIT (OpenAI)", verified=EXPLAINED,
             backbone_prefix="visual.", head_prefix="fc.", tiny=dict(TINY_CLIP), input_shape=(3, 224, 224),
             notes="no resize, centre crop 224, CLIP mean/std (validate.py)"),
    Detector("rine2024", fz.Rine, CLIP_PREP,
             paper="Koutlis & Papadopoulos, ECCV 2024 ('Leveraging representations from intermediate encoder-blocks "
                   "…', RINE)",
             backbone="CLIP ViT-L/14 CLS tokens of all 24 blocks + trainable importance, projections and head",
             files="ckpt/model_{1,2,4}class_trainable.pth, model_ldm_trainable.pth; CLIP via --backbone-weights",
             layout="bare {alpha (1, 24, d), proj1.{1,4,…}.weight/bias, proj2.…, head.{0,3,6}.weight/bias}; "
                    "backbone: CLIP state dict visual.*",
             licence="Apache-2.0 (rine repository); CLIP weights: MIT (OpenAI)", verified=EXPLAINED,
             backbone_prefix="visual.", infer=fz.rine_shape, tiny={**TINY_CLIP, "nproj": 2, "proj_dim": 8},
             input_shape=(3, 224, 224),
             notes="nproj and d read from the checkpoint (4/1024, 4/128, 2/1024, 4/1024 for the 1/2/4-class and LDM "
                   "files); run in float32 (the original runs CLIP in float16 on a GPU)"),
    Detector("drct2024", fz.DRCTConvNeXt,
             paper="Chen et al., ICML 2024 ('DRCT: Diffusion reconstruction contrastive training …')",
             backbone="timm ConvNeXt-base → 1024-d embedding → fc (real, fake)",
             files="pretrained/…/convnext_base_in22k_224_drct_amp_crop/*.pth",
             layout="bare state_dict: model.* (timm convnext_base keys, head.fc 1024 → 1024), fc (2, 1024)",
             licence="none stated in the repository", verified=EXPLAINED, outputs=2, fake_index=1,
             tiny={"embedding": 16, "depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}, input_shape=(3, 224, 224),
             notes="centre crop 224 (--is_crop), ImageNet mean/std; p(fake) = softmax[1] = sigmoid(log-odds)"),
    Detector("rajan2025", fz.corvi_resnet50, Preprocessing(crop=None),
             paper="Rajan et al., ICLR 2025 ('Aligned datasets improve detection of latent diffusion-generated "
                   "images') and ICML 2025 ('Stay-Positive …')",
             backbone="ResNet-50 without early down-sampling (conv1 and max-pool at stride 1; Corvi's graph), "
                      "one logit",
             files="weights/ours-sync/weights.pth (the README's other ResNet-50 files, Ours, shaders and "
                   "Stay-Positive 'Corvi +' / 'Rajan +', were not inspected)",
             layout="{'model': state_dict} with 'module.' prefixes, " + RESNET_KEYS + " (fc: 2048 → 1)",
             licence="Apache-2.0 (AlignedForensics test code, GRIP-UNINA)", verified=ANALYSES_ZOO,
             tiny={"widths": (4, 8, 8, 16), "layers": (1, 1, 1, 1)}, input_shape=(3, 96, 96), input_rule="zbox",
             notes="config arch res50nodown, norm_type resnet, patch_size null: whole images, no resize; the "
                   "original's dropout (p = 0.5) before fc is inactive at test time"),
    Detector("dear_c", DEARResNet, Preprocessing(crop=None),
             paper="Kim et al., ICML 2026 ('Dissect and Prune: enhancing robustness in AI-generated image "
                   "detection', DEAR-c)",
             backbone="Corvi's stride-1 ResNet-50, fixed 0/1 channel gate on layer4 (middle 60% of channels by RAD "
                      "kept), refit fc", files="checkpoints/dear_c/model_best.pth",
             layout=DEAR_LAYOUT, licence="MIT (dear repository)", verified=ANALYSES_ZOO,
             tiny=DEAR_TINY, input_shape=(3, 96, 96), input_rule="zbox", notes=DEAR_NOTES),
    Detector("dear_r", DEARResNet, Preprocessing(crop=None),
             paper="Kim et al., ICML 2026 ('Dissect and Prune …', DEAR-r)",
             backbone="Rajan's stride-1 ResNet-50, fixed 0/1 channel gate on layer4 (middle 40% kept), refit fc",
             files="checkpoints/dear_r/model_best.pth", layout=DEAR_LAYOUT, licence="MIT (dear repository)",
             verified=ANALYSES_ZOO, tiny=DEAR_TINY, input_shape=(3, 96, 96), input_rule="zbox",
             notes=DEAR_NOTES),
    Detector("bfree2025", vits.bfree_vit, Preprocessing(crop=None),
             paper="Guillaro et al., CVPR 2025 ('A bias-free training paradigm for more general AI-generated image "
                   "detection', B-Free)",
             backbone="timm vit_base_patch14_reg4_dinov2 (DINOv2 ViT-B/14, 4 registers) at 504 px, one logit; "
                      "logits of five 36×36 token crops averaged",
             files="BFREE_dino2reg4/model_epoch_best.pth (config arch timm_c5i504_vit_base_patch14_reg4_dinov2)",
             layout="{'model': state_dict}, timm ViT keys: patch_embed.proj.*, cls_token, reg_token, pos_embed "
                    "(1, 1296, 768), blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}, "
                    "norm, head (768 → 1)",
             licence="GRIP-UNINA licence: research (nonprofit) use only", verified=ANALYSES_ZOO,
             tiny={"img_size": 56, "embed_dim": 32, "depth": 2, "num_heads": 2}, input_shape=(3, 56, 56),
             notes="whole image at full resolution, ImageNet mean/std (the original's norm_type is in the weights "
                   "zip's config.yaml); a token grid below 36×36 is tiled; the five crops attend only within "
                   "themselves (block-diagonal mask), so LRP sees one pass per image"),
    Detector("commfor2025", vits.CommunityForensics, Preprocessing(resize=440, crop=384),
             paper="Park & Owens, CVPR 2025 ('Community Forensics: using thousands of generators to train fake "
                   "image detectors')",
             backbone="timm vit_small_patch16_384 → Linear(384, 1)",
             files="Hugging Face OwensLab/commfor-model-384: a folder with config.json + model.safetensors "
                   "(pass the folder or the .safetensors file)",
             layout="safetensors, timm ViT keys under vit.: vit.cls_token, vit.pos_embed (1, 577, 384), "
                    "vit.patch_embed.proj.*, vit.blocks.N.*, vit.norm.*, vit.head (384 → 1)",
             licence="MIT (Community-Forensics repository)", verified=ANALYSES_ZOO,
             tiny={"embed_dim": 32, "depth": 2, "num_heads": 2}, input_shape=(3, 384, 384),
             notes="shorter side resized to 440, centre crop 384, ImageNet mean/std (its test transform); the file "
                   "is read with the safetensors package (no pickle)"),
    Detector("commfor2025_224", vits.CommunityForensics, Preprocessing(resize=256, crop=224),
             paper="Park & Owens, CVPR 2025 (Community Forensics, 224-px model)",
             backbone="timm vit_small_patch16_224 → Linear(384, 1)",
             files="Hugging Face OwensLab/commfor-model-224: config.json + model.safetensors",
             layout="safetensors, timm ViT keys under vit.: vit.pos_embed (1, 197, 384), …, vit.head (384 → 1)",
             licence="MIT (Community-Forensics repository)", verified=ANALYSES_ZOO,
             kwargs={"img_size": 224}, tiny={"img_size": 224, "embed_dim": 32, "depth": 2, "num_heads": 2},
             input_shape=(3, 224, 224), notes="shorter side resized to 256, centre crop 224, ImageNet mean/std"),
    Detector("spai2025", SPAI, Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop=None),
             paper="Karageorgiou et al., CVPR 2025 ('Any-resolution AI-generated image detection by spectral "
                   "learning', SPAI)",
             backbone="BEiT-style ViT-B/16 (MFM pre-training) on each 224-px patch and its FFT low-/high-pass bands; "
                      "patch tokens of all 12 blocks projected per block, cosine similarities summarised by mean and "
                      "std, spectral context attention over the patches, MLP head → one logit",
             files="weights/spai.pth (configs/spai.yaml)",
             layout="{'model': state_dict} (no 'module.'): mfvit.frequencies_mask (224, 224), mfvit.vit.* (MFM ViT: "
                    "patch_embed.proj, cls_token, pos_embed (1, 197, 768), blocks.N.{norm1, attn.qkv.weight, "
                    "attn.q_bias, attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}, unused fc_norm, cls_pos_embed, "
                    "actual_cls_token, cls_blocks.0, intermediate_fc_norm.N, head (9216 → 2)), "
                    "mfvit.features_processor.patch_projector.projectors.N.{norm1, projector.1, projector.4, norm2}, "
                    "mfvit.features_processor.original_features_processor.{alpha, proj1.*, proj2.*}, to_kv, "
                    "patch_aggregator (12, 1, 128), to_out.0, norm, cls_head.head.{0,3,6} (1096 → 3288 → 3288 → 1)",
             licence="Apache-2.0 (spai repository: code and weights)", verified=ANALYSES_ZOO,
             tiny={"img_size": 32, "patch": 8, "embed_dim": 16, "depth": 2, "heads": 2, "proj_dim": 8, "radius": 4,
                   "attn_dim": 8, "attn_heads": 2, "head_ratio": 1}, input_shape=(3, 32, 32),
             notes="pixels in [0, 1] (normalised inside forward), whole image at its resolution, padded to 224 "
                   "(reflect-101) when smaller; 224-px patches (five crops below 4 patches); the released file may "
                   "also hold the training config (a yacs CfgNode): pass --trust-checkpoint or re-save "
                   "{'model': …}; relevance per frequency band in tff explain (explain.csv relevance_original/"
                   "_low/_high, share_*)"),
    Detector("efficientnet_b0_lukemelas", efficientnet_b0_lukemelas,
             paper="Chandrasegaran et al., ECCV 2022 (this toolkit's paper)",
             backbone="EfficientNet-B0 (efficientnet-pytorch 0.7.1)", files="weights/efb0/blur_jpg_prob0.5.pth",
             layout="{'model': state_dict}, efficientnet-pytorch keys _conv_stem, _bn0, _blocks.*, _conv_head, "
                    "_fc (1280 → 1)", licence="MIT (transferable-forensic-features)", verified=ANALYSES,
             notes="pip install 'tffkit[efficientnet]'"),
    Detector("efficientnet_b0", ARCHITECTURES["efficientnet_b0"],
             paper="torchvision EfficientNet-B0 with a one-logit head (the modern equivalent of the paper's B0)",
             backbone="EfficientNet-B0 (torchvision)", files="your own training (tff train)",
             layout="{'model': state_dict}, torchvision keys features.*, classifier.1 (1280 → 1)",
             licence="—", verified=ANALYSES),
]}
ZOO["resnet50"] = replace(ZOO["wang2020"], name="resnet50", notes="= wang2020 (torchvision ResNet-50, one logit)")
LEGACY_CLIP = {"clip_vit_b16": "ViT-B-16", "clip_vit_l14": "ViT-L-14"}


def _legacy(name: str) -> Detector:
    """Plain architectures of :data:`ARCHITECTURES` (one logit, ImageNet normalisation unless CLIP)."""
    prep = CLIP_PREP if name in LEGACY_CLIP else Preprocessing(crop=32) if name == "tiny_vit" else Preprocessing()
    return Detector(name, ARCHITECTURES[name], prep, backbone=name, layout="{'model': state_dict} or bare",
                    input_rule=resnet_input_rule(name.removeprefix("tiny_")))


def resnet_input_rule(name: str) -> str:
    """``zbox`` for the ResNet family (the paper's zβ at the pixels), ``zplus`` for other architectures."""
    return "zbox" if re.match(r"(resnet|resnext|wide_resnet|seresnet|seresnext)(\d|_|$)", name) else "zplus"


def _torchvision_spec(name: str) -> Detector:
    available = set(torchvision.models.list_models())
    if name not in available:
        raise ValueError(f"torchvision has no model {name!r} (e.g. {', '.join(sorted(available)[:8])}, …)")
    extra = {"aux_logits": False} if name in ("inception_v3", "googlenet") else {}

    def build() -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=1, **extra)
    return Detector(f"torchvision:{name}", build, Preprocessing(), backbone=name, input_rule=resnet_input_rule(name),
                    layout="{'model': state_dict} or bare, torchvision keys (one-logit head)")


def _timm_spec(name: str) -> Detector:
    try:
        import timm
    except ImportError as exc:
        raise ImportError("timm:<name> needs timm: pip install 'tffkit[timm]'") from exc
    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}")
    prep = Preprocessing()
    try:
        cfg = timm.get_pretrained_cfg(name)
        if cfg is not None:
            cfg = cfg.to_dict()
            interp = cfg.get("interpolation", "bilinear")
            prep = Preprocessing(tuple(cfg["mean"]), tuple(cfg["std"]), crop=int(cfg["input_size"][-1]),
                                 interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear")
    except Exception:  # noqa: BLE001 - models without a pretrained config keep ImageNet's
        pass

    def build() -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=1)
    return Detector(f"timm:{name}", build, prep, backbone=name,
                    layout="{'model': state_dict} or bare, timm keys (one-logit head)",
                    input_shape=(3, prep.crop or 224, prep.crop or 224), input_rule=resnet_input_rule(name),
                    notes="mean/std and input size from timm's pretrained config; no resize")


def _python_spec(spec: str) -> Detector:
    target, sep, factory_name = spec.rpartition(":")
    if not sep or not target or not factory_name:
        raise ValueError(f"python detector {spec!r}: expected python:<module or file.py>:<factory>")
    code = None
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"python detector file {target} not found")
        code = {"file": str(path.resolve()), "sha256": file_sha256(path)}
    if not code_trusted():
        what = f"the Python file {code['file']} (sha256 {code['sha256'][:16]}…)" if code else f"the module {target!r}"
        raise ValueError(f"detector {'python:' + spec!r} runs {what}: pass --trust-code (study: detector.trust_code: "
                         "true) if you trust it")
    try:
        if target.endswith(".py"):
            loader = importlib.util.spec_from_file_location(f"tff_user_{path.stem}", path)
            if loader is None or not path.is_file():
                raise FileNotFoundError(f"python detector file {target} not found")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise ValueError(f"python detector {spec!r}: cannot import {target!r} ({exc})") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"python detector {spec!r}: {target!r} has no callable {factory_name!r}")
    prep = getattr(factory, "tff_preprocessing", None)
    prep = Preprocessing(**prep) if isinstance(prep, dict) else prep or Preprocessing()
    return Detector(f"python:{spec}", factory, prep, backbone=f"{target}.{factory_name}()", outputs=None, code=code,
                    fake_index=int(getattr(factory, "tff_fake_index", 1)),
                    input_rule=str(getattr(factory, "tff_input_rule", "zplus")),
                    layout="{'model': state_dict}, {'state_dict': …} or bare (your model's keys)",
                    notes="your factory; set tff_preprocessing (dict or Preprocessing), tff_fake_index and "
                          "tff_input_rule (zbox for zβ at the pixels) on it")


def resolve(arch: str) -> Detector:
    """The zoo entry or spec entry for ``arch`` (``name``, ``name@tiny``, ``torchvision:…``, ``timm:…``,
    ``python:<module>:<factory>``); an unknown name lists what is known."""
    name, _, variant = arch.partition("@")
    if name.startswith("torchvision:"):
        det = _torchvision_spec(name.split(":", 1)[1])
    elif name.startswith("timm:"):
        det = _timm_spec(name.split(":", 1)[1])
    elif name.startswith("python:"):
        det = _python_spec(name.split(":", 1)[1])
    elif name in ZOO:
        det = ZOO[name]
    elif name in ARCHITECTURES:
        det = _legacy(name)
    else:
        raise ValueError(f"unknown detector {arch!r}; the zoo has {', '.join(ZOO)} (tff detectors lists them), "
                         f"other architectures: {', '.join(a for a in ARCHITECTURES if a not in ZOO)}; or give "
                         "torchvision:<name>, timm:<name> or python:<module>:<factory>")
    if variant:
        if variant != "tiny" or det.tiny is None:
            raise ValueError(f"detector {name!r} has no variant {variant!r}"
                             + (" (only @tiny)" if det.tiny is not None else ""))
        det = replace(det, name=arch, kwargs=dict(det.tiny))
    return det
