from pathlib import Path

import pytest
import torch

from tffkit.detectors import (
    CheckpointMismatchError,
    build_detector,
    load_detector,
    save_checkpoint,
)


@pytest.mark.parametrize("fmt", ["wang", "state_dict", "bare", "module_prefix", "ddp_wang"])
def test_checkpoint_round_trip(tmp_path: Path, fmt: str):
    torch.manual_seed(0)
    model = build_detector("tiny_resnet").eval()
    sd = model.state_dict()
    payload = {
        "wang": {"model": sd, "epoch": 3},
        "state_dict": {"state_dict": sd},
        "bare": sd,
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "ddp_wang": {"model": {f"module.{k}": v for k, v in sd.items()}},
    }[fmt]
    torch.save(payload, tmp_path / "w.pth")
    loaded = load_detector("tiny_resnet", tmp_path / "w.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_checkpoint_is_wang_format(tmp_path: Path):
    model = build_detector("tiny_resnet")
    save_checkpoint(tmp_path / "c.pth", model, epoch=1)
    ckpt = torch.load(tmp_path / "c.pth", weights_only=False)
    assert set(ckpt) == {"model", "epoch"} and set(ckpt["model"]) == set(model.state_dict())


def test_wrong_architecture_names_the_mismatch(tmp_path: Path):
    torch.save({"model": build_detector("resnet18").state_dict()}, tmp_path / "r18.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_detector("resnet50", tmp_path / "r18.pth")
    msg = str(err.value)
    assert "'resnet50'" in msg and "missing keys" in msg and "conv3" in msg and "shape mismatches" in msg


def test_unknown_arch_and_missing_file(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("vgg99")
    with pytest.raises(FileNotFoundError):
        load_detector("tiny_resnet", tmp_path / "nope.pth")


@pytest.mark.parametrize("arch", ["resnet50", "efficientnet_b0", "efficientnet_b0_lukemelas", "tiny_resnet"])
def test_one_logit(arch: str):
    model = build_detector(arch).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1)
