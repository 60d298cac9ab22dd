"""Safe checkpoint reading: weights_only by default, the opt-in for pickled objects, one-line errors for bad files,
weights required (random only when asked), and the formats CLIP weights come in."""

import argparse
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from conftest import make_tree
from tffkit.cli import main
from tffkit.detectors import (
    CheckpointReadError,
    NoWeightsError,
    UnsafeCheckpointError,
    build_detector,
    load_detector,
    read_checkpoint,
    save_checkpoint,
)


class RunsCode:
    """Unpickling this object creates a folder: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    model = build_detector("tiny_resnet")
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "payload": RunsCode(marker)}, path)
    return path, marker


def test_pickled_code_does_not_run_without_the_opt_in(tmp_path: Path):
    path, marker = _evil(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_detector("tiny_resnet", path)
    msg = str(err.value)
    assert not marker.exists()
    assert str(path) in msg and "posix.mkdir" in msg and "--trust-checkpoint" in msg and "trust=True" in msg
    with pytest.warns(UserWarning, match="full unpickling"):
        model = load_detector("tiny_resnet", path, trust=True)
    assert marker.is_dir()  # the opt-in is what let it run
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1)


def test_namespace_inside_needs_trust_then_loads(tmp_path: Path):
    model = build_detector("tiny_resnet").eval()
    torch.save({"model": model.state_dict(), "opt": argparse.Namespace(arch="res50", lr=1e-4)}, tmp_path / "ns.pth")
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        read_checkpoint(tmp_path / "ns.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_detector("tiny_resnet", tmp_path / "ns.pth", trust=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_cli_refuses_then_accepts_with_the_flag(tmp_path: Path, capsys):
    tree = make_tree(tmp_path / "d", {"progan": []}, n=2)
    path, marker = _evil(tmp_path)
    common = ["evaluate", "--arch", "tiny_resnet", "--weights", str(path), "--data", str(tree), "--device", "cpu",
              "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")]
    assert main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tff evaluate: error:") and "--trust-checkpoint" in err[0]
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(common + ["--trust-checkpoint"]) == 0
    assert marker.exists()


@pytest.mark.parametrize("kind,expect", [
    ("empty", "the file is empty"),
    ("text", "not a PyTorch checkpoint"),
    ("truncated", "corrupt or truncated PyTorch archive"),
    ("legacy_truncated", "corrupt or truncated pickle"),
    ("png", "not a PyTorch checkpoint"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path: Path, capsys, kind: str, expect: str):
    good = save_checkpoint(tmp_path / "good.pth", build_detector("tiny_resnet"))
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": build_detector("tiny_resnet").state_dict()}, legacy, _use_new_zipfile_serialization=False)
    data = {"empty": b"", "text": b"this is not a checkpoint\n", "truncated": good.read_bytes()[:3000],
            "legacy_truncated": legacy.read_bytes()[:3000], "png": b"\x89PNG\r\n\x1a\n" + bytes(100)}[kind]
    bad = tmp_path / f"{kind}.pth"
    bad.write_bytes(data)
    with pytest.raises(CheckpointReadError) as err:
        read_checkpoint(bad)
    assert str(bad) in str(err.value) and expect in str(err.value)
    tree = make_tree(tmp_path / "d", {"s": []}, n=1)
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(bad), "--data", str(tree), "--device", "cpu",
               "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and str(bad) in lines[0] and expect in lines[0]


def test_weights_are_required_and_random_weights_are_stated(tmp_path: Path, capsys):
    tree = make_tree(tmp_path / "d", {"progan": []}, n=2)
    with pytest.raises(NoWeightsError, match="--random-weights"):
        load_detector("tiny_resnet")
    common = ["evaluate", "--arch", "tiny_resnet", "--data", str(tree), "--device", "cpu", "--workers", "0",
              "--no-progress", "--out", str(tmp_path / "o")]
    assert main(common) == 2
    assert "--random-weights" in capsys.readouterr().err
    assert main(common + ["--random-weights"]) == 0
    assert "RANDOM weights" in capsys.readouterr().out
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["detector"]["random_weights"] is True and run["args"]["weights"].startswith("random")
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    with pytest.raises(ValueError, match="exclude each other"):
        load_detector("tiny_resnet", w, random_weights=True)


def test_safetensors_and_torchscript_are_read(tmp_path: Path):
    from safetensors.torch import save_file

    lin = torch.nn.Linear(3, 2)
    save_file({k: v.contiguous() for k, v in lin.state_dict().items()}, tmp_path / "w.safetensors")
    assert torch.equal(read_checkpoint(tmp_path / "w.safetensors")["weight"], lin.weight.detach())
    torch.jit.trace(lin, torch.zeros(1, 3)).save(tmp_path / "w.pt")  # OpenAI's CLIP files are TorchScript
    assert torch.equal(read_checkpoint(tmp_path / "w.pt")["weight"], lin.weight.detach())
