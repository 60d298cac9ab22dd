"""The detector zoo: each entry's full-size key layout equals the original repository's, random weights saved in each
original layout and container load back strictly, polarity gives p(fake), and `tff evaluate` scores with the
entry's preprocessing."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import make_tree
from tffkit.cli import main
from tffkit.data import load_rgb
from tffkit.detectors import ZOO, CheckpointMismatchError, build_detector, load_detector, resolve
from tffkit.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

ZOO_NAMES = ["wang2020", "corvi2023", "npr2024", "univfd2023", "rine2024", "drct2024"]


def _bn(p: str) -> list[str]:
    return [f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var", f"{p}.num_batches_tracked"]


def resnet_keys(layers, head="fc") -> set[str]:
    """torchvision/CNNDetection/NPR ResNet naming with Bottleneck blocks (written from the original code)."""
    keys = ["conv1.weight", *_bn("bn1")]
    for i, n in enumerate(layers, start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            for c in (1, 2, 3):
                keys += [f"{p}.conv{c}.weight", *_bn(f"{p}.bn{c}")]
            if j == 0:
                keys += [f"{p}.downsample.0.weight", *_bn(f"{p}.downsample.1")]
    return set(keys + [f"{head}.weight", f"{head}.bias"])


def openai_visual_keys(blocks: int) -> set[str]:
    """OpenAI CLIP's ``visual.*`` keys (models/clip/model.py of the original repositories)."""
    keys = ["class_embedding", "positional_embedding", "proj", "conv1.weight", "ln_pre.weight", "ln_pre.bias",
            "ln_post.weight", "ln_post.bias"]
    for i in range(blocks):
        keys += [f"transformer.resblocks.{i}.{k}" for k in (
            "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias", "ln_1.weight",
            "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight",
            "ln_2.bias")]
    return {f"visual.{k}" for k in keys}


# the trainable parts saved in RINE's ckpt/model_2class_trainable.pth (read from the released file)
RINE_2CLASS = {"alpha": (1, 24, 128), "proj1.1.weight": (128, 1024), "proj1.1.bias": (128,),
               **{f"proj1.{i}.{w}": (128, 128) if w == "weight" else (128,) for i in (4, 7, 10)
                  for w in ("weight", "bias")},
               **{f"proj2.{i}.{w}": (128, 128) if w == "weight" else (128,) for i in (1, 4, 7, 10)
                  for w in ("weight", "bias")},
               "head.0.weight": (128, 128), "head.0.bias": (128,), "head.3.weight": (128, 128), "head.3.bias": (128,),
               "head.6.weight": (1, 128), "head.6.bias": (1,)}


def _meta(name: str, **kwargs) -> dict[str, tuple]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_detector(name, **kwargs).state_dict().items()}


def test_full_size_layouts_match_the_originals():
    wang = _meta("wang2020")
    assert set(wang) == resnet_keys((3, 4, 6, 3)) and wang["fc.weight"] == (1, 2048)
    corvi = _meta("corvi2023")
    assert set(corvi) == resnet_keys((3, 4, 6, 3)) and corvi["conv1.weight"] == (64, 3, 7, 7)
    npr = _meta("npr2024")
    assert set(npr) == resnet_keys((3, 4), head="fc1") and npr["fc1.weight"] == (1, 512)
    assert npr["conv1.weight"] == (64, 3, 3, 3)
    univfd = _meta("univfd2023")
    assert set(univfd) == openai_visual_keys(24) | {"fc.weight", "fc.bias"}
    assert univfd["fc.weight"] == (1, 768) and univfd["visual.proj"] == (1024, 768)
    assert univfd["visual.positional_embedding"] == (257, 1024)
    rine = _meta("rine2024", nproj=4, proj_dim=128)
    assert {k: v for k, v in rine.items() if not k.startswith("visual.")} == RINE_2CLASS
    assert set(k for k in rine if k.startswith("visual.")) == openai_visual_keys(24)
    drct = _meta("drct2024")
    assert drct["model.head.fc.weight"] == (1024, 1024) and drct["fc.weight"] == (2, 1024)
    assert drct["model.stem.0.weight"] == (128, 3, 4, 4) and len(drct) == 346


def test_no_downsampling_in_corvi_first_layers():
    m = build_detector("corvi2023@tiny").eval()
    assert m.conv1.stride == (1, 1) and m.maxpool.stride == 1
    with torch.no_grad():
        assert m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(torch.zeros(1, 3, 40, 40)))))).shape[-1] == 40


def test_npr_input_is_the_neighbouring_pixel_residual():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 3, 1, 1)
    expected = x - x[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(build_detector("npr2024@tiny").residual(x), expected)


def _fp16_exact(model: torch.nn.Module) -> torch.nn.Module:
    """Round the weights to float16 values (OpenAI's CLIP files are float16)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


class FakeOpenAICLIP(torch.nn.Module):
    """A CLIP-shaped module (image tower + text parts) to write the backbone file in OpenAI's formats."""

    def __init__(self, visual: torch.nn.Module):
        super().__init__()
        self.visual = visual
        self.token_embedding = torch.nn.Embedding(10, 16)
        self.ln_final = torch.nn.LayerNorm(16)
        self.logit_scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.visual(x) * self.logit_scale


def original_files(name: str, raw: torch.nn.Module, folder: Path, backbone_format: str = "openai_jit") -> list[str]:
    """Save ``raw``'s weights in the original repository's layout and container; returns the CLI weight args."""
    sd = raw.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    if name in ("wang2020", "efficientnet_b0_lukemelas"):
        torch.save({"model": sd}, folder / "w.pth")
    elif name == "corvi2023":  # DataParallel training: 'module.' prefixes under 'model', with the trainer's extras
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"state": {}, "param_groups": []},
                    "total_steps": 1000}, folder / "w.pth")
    elif name in ("npr2024", "drct2024"):
        torch.save(sd, folder / "w.pth")
    elif name in ("univfd2023", "rine2024"):
        head = ({"weight": sd["fc.weight"], "bias": sd["fc.bias"]} if name == "univfd2023" else
                {k: v for k, v in sd.items() if not k.startswith("visual.")})
        torch.save(head, folder / "w.pth")
        clip = FakeOpenAICLIP(copy.deepcopy(raw.visual))
        if backbone_format == "openai_jit":
            clip = torch.jit.trace(clip.eval(), torch.zeros(1, 3, 224, 224), check_trace=False).half()
            clip.save(str(folder / "ViT-L-14.pt"))
            return ["--weights", str(folder / "w.pth"), "--backbone-weights", str(folder / "ViT-L-14.pt")]
        if backbone_format == "open_clip_bin":
            torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")  # with the text parts
            bb = folder / "open_clip_pytorch_model.bin"
            return ["--weights", str(folder / "w.pth"), "--backbone-weights", str(bb)]
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, folder / "open_clip_model.safetensors")
        return ["--weights", str(folder / "w.pth"), "--backbone-weights", str(folder / "open_clip_model.safetensors")]
    return ["--weights", str(folder / "w.pth")]


def _load(name: str, args: list[str]) -> torch.nn.Module:
    w = args[1]
    bb = args[3] if len(args) > 2 else None
    return load_detector(f"{name}@tiny", w, backbone_weights=bb)


@pytest.mark.parametrize("name,fmt", [(n, "openai_jit") for n in ZOO_NAMES]
                         + [("univfd2023", "open_clip_bin"), ("rine2024", "safetensors")])
def test_original_layout_loads_strictly_and_polarity_gives_p_fake(tmp_path: Path, name: str, fmt: str):
    torch.manual_seed(0)
    raw = _fp16_exact(build_detector(f"{name}@tiny")).eval()
    args = original_files(name, raw, tmp_path, fmt)
    model = _load(name, args)
    x = torch.randn(2, *model.tff_input_shape)
    with torch.no_grad():
        out, got = raw(x), model(x).reshape(-1)
    if ZOO[name].outputs == 2:  # DRCT: (real, fake) → p(fake) = softmax[1]
        assert torch.allclose(torch.sigmoid(got), torch.softmax(out, 1)[:, 1], atol=1e-6)
    else:
        assert torch.equal(got, out.reshape(-1))


def test_rine_shape_is_read_from_its_checkpoint(tmp_path: Path):
    raw = build_detector("rine2024@tiny", nproj=3, proj_dim=12).eval()
    args = original_files("rine2024", raw, tmp_path, "open_clip_bin")
    model = _load("rine2024", args)
    assert len(model.proj1) == 1 + 3 * 3 and model.alpha.shape == (1, 2, 12)


def test_a_wrong_file_names_detector_keys_and_layout(tmp_path: Path):
    args = original_files("npr2024", build_detector("npr2024@tiny"), tmp_path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_detector("wang2020@tiny", args[1])
    msg = str(err.value)
    assert "'wang2020@tiny'" in msg and "missing keys" in msg and "layer3.0.conv1.weight" in msg
    assert "unexpected keys" in msg and "shape mismatches" in msg
    assert "fc1.weight" in msg and "expected layout: {'model': state_dict}" in msg and str(args[1]) in msg
    with pytest.raises(ValueError, match="needs two files"):
        load_detector("univfd2023@tiny", args[1])


def _preprocess_by_hand(path: str, name: str) -> torch.Tensor:
    """The entry's published evaluation transform, written out with PIL and numpy."""
    img = load_rgb(path)
    if name == "npr2024":
        img = img.resize((256, 256), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float64)
    if name in ("wang2020", "univfd2023", "rine2024", "drct2024"):
        h, w = arr.shape[:2]
        if min(h, w) < 224:  # Wang et al.'s advice: shorter side up to the crop first
            s = 224 / min(h, w)
            img = img.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float64)
            h, w = arr.shape[:2]
        top, left = int(round((h - 224) / 2)), int(round((w - 224) / 2))
        arr = arr[top:top + 224, left:left + 224]
    mean, std = (CLIP_MEAN, CLIP_STD) if name in ("univfd2023", "rine2024") else (IMAGENET_MEAN, IMAGENET_STD)
    arr = (arr / 255.0 - np.array(mean)) / np.array(std)
    return torch.from_numpy(arr.transpose(2, 0, 1)).float()[None]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_tff_evaluate_scores_every_entry_with_its_preprocessing(tmp_path: Path, name: str):
    torch.manual_seed(1)
    tree = make_tree(tmp_path / "data", {"progan": [], "stylegan": []}, n=2, size=48)
    raw = _fp16_exact(build_detector(f"{name}@tiny")).eval()
    args = original_files(name, raw, tmp_path / "w")
    out = tmp_path / "out"
    rc = main(["evaluate", "--arch", f"{name}@tiny", *args, "--data", str(tree), "--device", "cpu", "--workers", "0",
               "--no-progress", "--batch-size", "3", "--out", str(out)])
    assert rc == 0
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 8 and set(scores["label"]) == {0, 1}
    run = json.loads((out / "run.json").read_text())
    assert run["preprocessing"]["description"] == ZOO[name].preprocessing.describe()
    model = _load(name, args)
    with torch.no_grad():
        logit = float(model(_preprocess_by_hand(scores["path"][0], name)).reshape(-1)[0])
    assert logit == pytest.approx(scores["logit"][0], rel=1e-4, abs=1e-5)


def test_preprocessing_is_the_entry_s():
    assert ZOO["univfd2023"].preprocessing.mean == CLIP_MEAN and ZOO["univfd2023"].preprocessing.crop == 224
    assert ZOO["wang2020"].preprocessing.mean == IMAGENET_MEAN and ZOO["wang2020"].preprocessing.resize is None
    assert ZOO["npr2024"].preprocessing.resize == (256, 256) and ZOO["npr2024"].preprocessing.crop is None
    assert ZOO["corvi2023"].preprocessing.crop is None
    assert resolve("clip_vit_l14").preprocessing.mean == CLIP_MEAN  # CLIP towers are CLIP-normalised everywhere


FACTORY = '''
import torch
from torch import nn


class TwoLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def build():
    return TwoLogits()


build.tff_fake_index = 0  # this detector's head is (fake, real)
build.tff_preprocessing = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop": 32}
'''


def test_python_factory_two_logits_fake_first(tmp_path: Path):
    (tmp_path / "mydet.py").write_text(FACTORY)
    arch = f"python:{tmp_path / 'mydet.py'}:build"
    raw = build_detector(arch).eval()
    torch.save({"state_dict": raw.state_dict()}, tmp_path / "w.pth")
    model = load_detector(arch, tmp_path / "w.pth")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(model(x)), torch.softmax(raw(x), 1)[:, 0], atol=1e-6)
    tree = make_tree(tmp_path / "d", {"s": []}, n=2, size=40)
    rc = main(["evaluate", "--arch", arch, "--weights", str(tmp_path / "w.pth"), "--data", str(tree), "--device",
               "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "o"), "--trust-code"])
    assert rc == 0
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and run["preprocessing"]["crop"] == 32


@pytest.mark.parametrize("arch", ["torchvision:mobilenet_v3_small", "timm:resnet10t"])
def test_torchvision_and_timm_specs(tmp_path: Path, arch: str):
    torch.save({"model": build_detector(arch).state_dict()}, tmp_path / "w.pth")
    tree = make_tree(tmp_path / "d", {"s": []}, n=1, size=64)
    rc = main(["evaluate", "--arch", arch, "--weights", str(tmp_path / "w.pth"), "--data", str(tree), "--device",
               "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")])
    assert rc == 0 and len(pd.read_csv(tmp_path / "o" / "scores.csv")) == 2


def test_unknown_specs_say_what_is_known():
    with pytest.raises(ValueError, match="torchvision has no model"):
        resolve("torchvision:resnet5000")
    with pytest.raises(ValueError, match="cannot import"):
        resolve("python:no_such_module_xyz:build")
    with pytest.raises(ValueError, match="no variant"):
        resolve("wang2020@huge")


def test_tff_detectors_lists_the_zoo(capsys):
    assert main(["detectors", "--json"]) == 0
    listing = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert set(ZOO_NAMES) <= set(listing)
    for name in ZOO_NAMES:
        e = listing[name]
        assert e["paper"] and e["backbone"] and e["preprocessing"] and e["files"] and e["layout"] and e["licence"]
        assert "evaluate" in e["verified"]
    assert "softmax[1]" in listing["drct2024"]["polarity"]
    assert main(["detectors", "npr2024"]) == 0
    assert "x − up(down(x))" in capsys.readouterr().out


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_rank_explains_every_zoo_entry(tmp_path: Path, name: str):
    from tffkit.jobs.rank import RankOptions, rank

    tree = make_tree(tmp_path / "d", {"progan": []}, n=2, size=32)
    res = rank(tree, options=RankOptions(arch=f"{name}@tiny", random_weights=True, min_prob=0.0, k=3, batch_size=2,
                                         device="cpu", workers=0, progress=False), out=tmp_path / "rank")
    assert res.summary["fakes_used"] == 2 and np.isfinite(res.ranking["omega"]).all()
    assert json.loads((tmp_path / "rank" / "run.json").read_text())["detector"]["random_weights"]


def run_analysis(analysis: str, arch: str, folder: Path, tree: Path, ranking: Path | None) -> int:
    """One tffkit analysis through the CLI on random weights (``tff <analysis> …``)."""
    common = ["--arch", arch, "--random-weights", "--device", "cpu", "--workers", "0", "--no-progress",
              "--batch-size", "2", "--out", str(folder / analysis)]
    data = ["--data", str(tree)]
    args = {"evaluate": data, "rank": [*data, "--min-prob", "0", "--k", "3"],
            "dropout": [*data, "--ranking", str(ranking), "--k", "2", "--random-repeats", "1", "--train-set"],
            "lrpmax": [*data, "--ranking", str(ranking), "--k", "2", "--per-tff", "1", "--show", "1"],
            "color": [*data, "--ranking", str(ranking), "--k", "2", "--min-prob", "0"],
            "explain": [*data, "--max-per-class", "1"]}
    if analysis == "train":
        return main(["train", "--arch", arch, "--data", str(tree), "--val", str(tree), "--out", str(folder / "train"),
                     "--max-steps", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0", "--no-progress"])
    return main([analysis, *common, *args[analysis]])


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES + ["efficientnet_b0_lukemelas", "efficientnet_b0"])
def test_every_verified_analysis_runs(tmp_path: Path, name: str):
    """What `tff detectors` lists as verified: every analysis runs end to end on the entry (random weights)."""
    arch = f"{name}@tiny" if ZOO[name].tiny else name
    tree = make_tree(tmp_path / "d", {"progan": [], "stylegan": []}, n=2, size=32)
    for analysis in ("evaluate", "rank", "dropout", "lrpmax", "color", "explain", "train"):
        if analysis in ZOO[name].verified:
            assert run_analysis(analysis, arch, tmp_path, tree, tmp_path / "rank" / "ffrs.csv") == 0, analysis
