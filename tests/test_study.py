"""Study: config validation, resume after interruption, report completeness (and rendering in Chromium)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tffkit import study as study_mod
from tffkit.study import ConfigError, load_config, run_study


def _config(tmp_path: Path, weights: Path, data: Path, **steps) -> dict:
    return {"name": "t", "out": str(tmp_path / "study"), "preset": "full", "device": "cpu", "workers": 0,
            "batch_size": 32, "detector": {"arch": "tiny_resnet", "weights": str(weights)},
            "data": {"source": str(data), "source_sets": ["progan"], "test": str(data), "train_set": ["progan"]},
            "steps": {"rank": {"min_prob": 0.5, "k": 8}, "dropout": {"k_sweep": [8], "random_repeats": 2},
                      "lrpmax": {"enabled": False}, "color": {"enabled": False}, **steps}}


def test_config_errors_name_the_field(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    cfg["batch_size"] = "big"
    cfg["detector"]["arch"] = "vgg99"
    cfg["data"]["test"] = str(tmp_path / "missing")
    cfg["steps"]["dropout"]["site"] = "somewhere"
    cfg["steps"]["bogus"] = {}
    cfg["colour"] = 1
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    for field in ("batch_size: expected int", "detector.arch: unknown detector", "data.test:",
                  "steps.dropout.site", "steps.bogus: unknown step", "colour: unknown field"):
        assert field in msg, field
    with pytest.raises(ConfigError, match="out: required"):
        load_config({k: v for k, v in _config(tmp_path, weights, data).items() if k != "out"})


def test_config_takes_detector_and_layout_options(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    cfg["detector"].pop("weights")
    with pytest.raises(ConfigError, match="detector.weights: required .*random_weights"):
        load_config(cfg)
    cfg["detector"].update(random_weights=True, arch="torchvision:resnet18", trust_checkpoint=True)
    cfg["data"].update(layout="genimage", real_dirs=["nature", "0_real"], fake_dirs="ai,1_fake", split="val",
                       small_images="pad")
    loaded = load_config(cfg)
    assert loaded["detector"]["random_weights"] and loaded["data"]["real_dirs"] == ["nature", "0_real"]
    cfg["data"]["layout"] = "zigzag"
    cfg["detector"]["arch"] = "python:no_such_module_q:build"
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "data.layout: 'zigzag' is not one of" in str(err.value)
    assert "detector.arch: python detector" in str(err.value)


def test_interrupted_study_resumes_without_recomputing(tmp_path: Path, trained_tiny, monkeypatch):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    calls = []
    original = study_mod.build_steps

    def counting_steps(c, progress=True):
        steps = original(c, False)
        for s in steps:
            run = s.run

            def wrapped(folder, run=run, name=s.name):
                calls.append(name)
                if name == "dropout" and calls.count("dropout") == 1:
                    raise KeyboardInterrupt("simulated interruption")
                run(folder)
            s.run = wrapped
        return steps

    monkeypatch.setattr(study_mod, "build_steps", counting_steps)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg)
    assert calls == ["evaluate", "rank", "dropout"]
    report = run_study(cfg)
    assert calls == ["evaluate", "rank", "dropout", "dropout"]  # evaluate and rank were not recomputed
    run_study(cfg)
    assert calls.count("evaluate") == 1 and calls.count("dropout") == 2
    cfg["steps"]["dropout"]["random_repeats"] = 3  # changed settings → that step (only) runs again
    run_study(cfg)
    assert calls.count("dropout") == 3 and calls.count("rank") == 1

    page = report.read_text()
    for section in ("Detector and data", "Cross-model transfer", "Forensic feature relevance",
                    "Sensitivity assessment"):
        assert section in page, section
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 3
    assert "http://" not in page and "https://" not in page  # self-contained


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, trained_tiny) -> Path:
    """A study with every step enabled (the colour-robust step loads a given checkpoint)."""
    import torch

    from tffkit.generation.models import DCGANGenerator

    weights, data = trained_tiny
    tmp = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    torch.save(DCGANGenerator(8, 4).state_dict(), tmp / "dcgan.pth")
    cfg = _config(tmp, weights, data, lrpmax={"k": 3, "per_tff": 2, "show": 2},
                  color={"k": 8, "max_per_class": 8},
                  color_robust={"enabled": True, "weights": str(weights), "label": "CR"},
                  generator={"enabled": True, "images": 6, "percent": 10.0, "random_repeats": 2, "min_prob": 0.0,
                             "generators": [{"name": "dcgan", "kind": "dcgan", "weights": str(tmp / "dcgan.pth"),
                                             "near": ["main.12"]}]})
    cfg["detector"]["paper_detector"] = "wang2020_resnet50_blur_jpg_prob0.5"
    return run_study(cfg, progress=False)


def test_full_study_report_has_every_section(full_report: Path):
    page = full_report.read_text()
    for section in ("Detector and data", "Cross-model transfer", "Forensic feature relevance",
                    "Sensitivity assessment", "What the T-FF detect", "Colour ablation", "Colour-robust detector",
                    "(paper)", "colour-conditional", "Where the traces come from in the generator"):
        assert section in page, section
    for step in ("evaluate", "rank", "dropout", "lrpmax", "color", "color_robust", "generator"):
        marker = json.loads((full_report.parent / step / ".step.json").read_text())
        assert all((full_report.parent / step / f).is_file() for f in marker["files"])
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 8


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_report_figures_load_in_chromium(tmp_path: Path, full_report: Path):
    probe = tmp_path / "probe.html"
    page = full_report.read_text().replace(
        "</body>", "<script>window.onload=()=>{const bad=[...document.images].filter(i=>!i.complete||"
                   "i.naturalWidth===0).length;document.title='IMAGES:'+document.images.length+':BROKEN:'+bad;}"
                   "</script></body>")
    probe.write_text(page)
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>IMAGES:(\d+):BROKEN:(\d+)</title>", out.stdout)
    assert m, out.stderr[-2000:]
    assert int(m.group(1)) >= 8 and int(m.group(2)) == 0


def test_shipped_forensynths_config_is_valid(tmp_path: Path):
    """The documented ForenSynths config validates once its data and weights exist."""
    from importlib import resources

    import yaml

    text = resources.files("tffkit").joinpath("configs/forensynths_wang2020.yaml").read_text()
    cfg_path = tmp_path / "forensynths.yaml"
    cfg_path.write_text(text)
    raw = yaml.safe_load(text)
    for rel in (raw["detector"]["weights"], raw["data"]["source"], raw["data"]["test"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch() if rel.endswith(".pth") else (tmp_path / rel).mkdir(exist_ok=True)
    cfg = load_config(cfg_path)
    assert cfg["detector"]["arch"] == "wang2020" and cfg["steps"]["dropout"]["k_sweep"] == [29, 57, 114, 228]
    assert cfg["preset"] == "detector" and cfg["data"]["layout"] == "auto"
    assert cfg["out"] == str((tmp_path / raw["out"]).resolve())
