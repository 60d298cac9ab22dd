"""``tff demo``: build the embedded mini benchmark, train a small universal and a colour-robust detector,
run the whole study on them and write the report — no downloads, no user data, cached between runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from ..results import read_json, write_json
from .artefacts import PlantedArtefacts

DEMO_ARCH = "tiny_resnet"
#: the demo generators' ×2 upsampling (decoder.4; a unit only for tconv and pixel shuffle) and the convolution
#: feeding it — where the families differ, so where their traces should be found (decoder.5, which reads it, writes
#: the image and is not a unit)
UPSAMPLING_NEIGHBOURS = ("decoder.2", "decoder.4.op", "decoder.4.op.0")


def demo_config(out: Path, bench: dict, universal: str, train_args: dict) -> dict:
    """The study config of the demo: the training family plays ProGAN, the others are unseen sets."""
    return {
        "name": "embedded mini benchmark",
        "out": str(out / "study"),
        "preset": "full",
        "batch_size": 64,
        "detector": {"arch": DEMO_ARCH, "weights": universal, "label": "universal (demo)"},
        "data": {"source": str(out / "benchmark" / "val"), "test": str(out / "benchmark" / "test"),
                 "train_set": [bench["training_family"]]},
        "steps": {
            "rank": {"min_prob": 0.9, "k": 12},
            "dropout": {"k_sweep": [3, 6, 12, 24], "random_repeats": 3},
            # rankings compared by deletion (k = 1 … 16, 3 random rankings, a fully randomised detector)
            "faithfulness": {"enabled": True, "k_max": 16, "random_repeats": 3, "randomise": [1.0],
                             "max_per_class": 100},
            "lrpmax": {"k": 6, "per_tff": 8, "show": 4, "max_per_class": 100},
            "color": {"k": 12, "max_per_class": 100},
            "color_robust": {"enabled": True, "label": "colour-robust (demo)",
                             "train": {"arch": DEMO_ARCH, "data": str(out / "benchmark" / "train"),
                                       "val": str(out / "benchmark" / "val"), **train_args}},
            # LRP into each family's generator, fed with the family's real test crops (it regenerates them);
            # p ≥ 0.5: on the unseen families few fakes reach the paper's 0.9
            "generator": {"enabled": True, "images": 60, "percent": 5.0, "random_repeats": 3, "min_prob": 0.5,
                          "generators": [{"name": fam, "kind": f"demo:{fam}",
                                          "weights": str(out / "benchmark" / "generators" / f"{fam}.pth"),
                                          "inputs": str(out / "benchmark" / "test" / fam / "0_real"),
                                          "near": list(UPSAMPLING_NEIGHBOURS)} for fam in bench["families"]]},
        },
    }


def run_demo(out: str | os.PathLike = "demo_out", scale: float = 1.0, seed: int = 0, device: str = "auto",
             progress: bool = True, artefacts: PlantedArtefacts | None = None) -> Path:
    """Run the embedded study end to end into ``out``; returns the report's path. ``artefacts``: the strengths of
    the artefacts planted in the benchmark (:class:`~tffkit.demo.artefacts.PlantedArtefacts`' defaults)."""
    from ..study import run_study
    from ..train import train_detector
    from .benchmark import build_benchmark

    out = Path(out).absolute()
    bench = build_benchmark(out / "benchmark", scale=scale, seed=seed, progress=progress, artefacts=artefacts)
    # Wang et al.'s recipe at demo size: whole 64-px images (a random crop would shift the phase of the
    # period-2 upsampling artifacts), a larger learning rate and patience for a small network trained from
    # scratch, and no blur/JPEG augmentation — at 64 px, σ up to 3 erases the artifacts the benchmark is
    # about (the paper's detectors see 224-px crops of 256-px images).
    train_args = {"crop_size": 64, "load_size": 64, "batch_size": 64, "max_epochs": max(3, round(12 * scale)),
                  "seed": seed, "lr": 1e-3, "blur_prob": 0.0, "jpeg_prob": 0.0, "patience": 8}
    universal = out / "detectors" / "universal"
    best, stamp = universal / "model_best.pth", universal / "benchmark_stamp.json"
    built = {k: bench.get(k) for k in ("version", "scale", "seed", "artefacts", "build_time")}
    if universal.is_dir() and (not stamp.is_file() or read_json(stamp) != built):  # trained on another benchmark
        shutil.rmtree(universal)
    if not (best.is_file() and (universal / "run.json").is_file()):
        write_json(stamp, built)  # before training, so an interrupted training resumes on the same benchmark
        train_detector(DEMO_ARCH, out / "benchmark" / "train", out / "benchmark" / "val", universal, device=device,
                       progress=progress, resume=(universal / "model_last.pth").is_file(), **train_args)
    cfg = demo_config(out, bench, str(best), train_args)
    cfg["device"] = device
    (out / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    write_json(out / "demo.json", {"scale": scale, "seed": seed, "benchmark": bench.get("counts"),
                                   "training_family": bench["training_family"], "artefacts": bench.get("artefacts")})
    return run_study(cfg, progress)
