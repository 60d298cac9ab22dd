"""Pixel-wise explanations: Grad-CAM against the closed form of CAM, guided backprop against a hand-written
backward, the default Grad-CAM layer per architecture, and ``tff explain`` end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import make_tree
from lrp_helpers import pseudo_trained
from tffkit.analysis import pixel_explain as pe
from tffkit.cli import main
from tffkit.detectors import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _cam_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 1)).double().eval()


def test_grad_cam_equals_class_activation_map_after_global_pooling():
    net, x = _cam_net(), torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert pe.last_spatial_layer(net, x) == "1"
    for seed in (1.0, -1.0):
        cam = pe.grad_cam(net, x, "1", seed)
        act = F.relu(net[0](x))
        expected = F.relu(seed * torch.einsum("c,bchw->bhw", net[4].weight[0], act))
        expected = expected / expected.flatten(1).amax(1).reshape(-1, 1, 1)
        assert torch.allclose(cam, expected, atol=1e-12)


def test_guided_backprop_by_hand():
    net, x = _cam_net(), torch.randn(2, 3, 9, 9, dtype=torch.float64)
    for seed in (1.0, -1.0):
        guided = pe.guided_backprop(net, x, seed)
        xg = x.clone().requires_grad_(True)
        pre = net[0](xg)
        g_act = (seed * net[4].weight[0] / 81).reshape(1, -1, 1, 1).expand_as(pre)
        (expected,) = torch.autograd.grad(pre, xg, (pre > 0) * g_act.clamp(min=0))
        assert torch.allclose(guided, expected, atol=1e-14)
    cam, ggc = pe.guided_grad_cam(net, x)
    assert torch.allclose(ggc, pe.guided_backprop(net, x) * cam[:, None])


@pytest.mark.parametrize("arch,layer", [("tiny_resnet", "layer4.0.relu"), ("resnet50", "layer4.2.relu"),
                                        ("efficientnet_b0", "features.8.2"), ("efficientnet_b0_lukemelas", "_swish")])
def test_default_grad_cam_layer_and_model_untouched(arch, layer):
    model = pseudo_trained(arch)
    x = torch.randn(1, 3, 32, 32)
    assert pe.last_spatial_layer(model, x) == layer
    with torch.no_grad():
        before = model(x)
    cam, ggc = pe.guided_grad_cam(model, x)
    assert cam.shape == (1, 32, 32) and ggc.shape == (1, 3, 32, 32) and float(cam.max()) <= 1
    assert all(not m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_explain_cli_loose_images_center224(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 32), (28, 36)]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    model = pseudo_trained("tiny_resnet")
    out = tmp_path / "out"
    rc = main(["explain", "--arch", "tiny_resnet", "--weights", str(save_checkpoint(tmp_path / "w.pth", model)),
               "--images", *map(str, paths), "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(out),
               "--small-images", "pad"])  # zero-padded to 224 (the default resizes small images up first)
    assert rc == 0
    table = pd.read_csv(out / "explain.csv")
    assert len(table) == 2 and (table["seed"] == 1).all() and table["cam_layer"].eq("layer4.0.relu").all()
    # ResNet: the LRP map totals (f − b) / f of the explained logit
    b = float(model.fc.bias.detach())
    assert np.allclose(table["lrp_sum"], (table["logit"] - b) / table["logit"], rtol=1e-3)
    for name in table["name"]:
        for folder in ("lrp", "gradcam", "guided_gradcam", "panels"):
            assert (out / folder / f"{name}.png").stat().st_size > 0
        assert Image.open(out / "lrp" / f"{name}.png").size == (224, 224)
    assert json.loads((out / "run.json").read_text())["n_explained"] == 2


def test_explain_cli_dataset_efficientnet_full(tmp_path):
    tree = make_tree(tmp_path / "d", {"progan": ["car"], "stylegan": []}, n=1, size=32)
    out = tmp_path / "out"
    rc = main(["explain", "--arch", "efficientnet_b0",
               "--weights", str(save_checkpoint(tmp_path / "w.pth", pseudo_trained("efficientnet_b0"))),
               "--data", str(tree), "--max-per-class", "1", "--preset", "full", "--device", "cpu", "--workers", "0",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    table = pd.read_csv(out / "explain.csv", keep_default_na=False)
    assert len(table) == 4 and sorted(table["seed"]) == [-1, -1, 1, 1]
    assert (table["seed"] == np.where(table["label"] == 1, 1, -1)).all()
    for name in table["name"]:
        assert (out / "panels" / f"{name}.png").stat().st_size > 0
    assert main(["explain", "--arch", "tiny_resnet", "--images", str(tmp_path / "missing.png"), "--device", "cpu",
                 "--out", str(out)]) == 2
