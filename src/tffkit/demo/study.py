"""``tff demo``: build the embedded mini benchmark, train a small universal and a colour-robust detector,
run the whole study on them and write the report — no downloads, no user data, cached between runs."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import sys
from pathlib import Path

import yaml

from ..results import link_or_copy, read_json, write_json
from .artefacts import PlantedArtefacts
from .benchmark import PHOTO_GROUP_PATTERN, PHOTO_SPLIT

DEMO_ARCH = "tiny_resnet"
#: the demo generators' ×2 upsampling (decoder.4; a unit only for tconv and pixel shuffle) and the convolution
#: feeding it — where the families differ, so where their traces should be found (decoder.5, which reads it, writes
#: the image and is not a unit)
UPSAMPLING_NEIGHBOURS = ("decoder.2", "decoder.4.op", "decoder.4.op.0")


def demo_config(out: Path, bench: dict, universal: str, colour_robust: str) -> dict:
    """The study config of the demo (the two trained detectors' checkpoints): the training family plays ProGAN, the
    others are unseen sets."""
    return {
        "name": "embedded mini benchmark",
        "out": str(out / "study"),
        "preset": "full",
        "batch_size": 64,
        "detector": {"arch": DEMO_ARCH, "weights": universal, "label": "universal (demo)"},
        "data": {"source": str(out / "benchmark" / "val"), "test": str(out / "benchmark" / "test"),
                 "train_set": [bench["training_family"]], "group_pattern": PHOTO_GROUP_PATTERN},
        "steps": {
            "rank": {"min_prob": 0.9, "k": 12},
            "dropout": {"k_sweep": [3, 6, 12, 24]},  # the default 20 random-k replicas as the null
            # rankings compared by deletion (k = 1 … 16, the default 20 random rankings as the null, a fully
            # randomised detector) on 100 fakes and 100 reals per test set
            "faithfulness": {"enabled": True, "k_max": 16, "randomise": [1.0],
                             "max_per_class": 100, "deletion_max_per_class": 100},
            "lrpmax": {"k": 6, "per_tff": 8, "show": 4, "max_per_class": 100},
            "color": {"k": 12, "max_per_class": 100},
            "color_robust": {"enabled": True, "label": "colour-robust (demo)", "weights": colour_robust},
            # LRP into each family's generator, fed with the family's real test crops (it regenerates them);
            # p ≥ 0.5: on the unseen families few fakes reach the paper's 0.9
            "generator": {"enabled": True, "images": 60, "percent": 5.0, "random_repeats": 3, "min_prob": 0.5,
                          "generators": [{"name": fam, "kind": f"demo:{fam}",
                                          "weights": str(out / "benchmark" / "generators" / f"{fam}.pth"),
                                          "inputs": str(out / "benchmark" / "test" / fam / "0_real"),
                                          "near": list(UPSAMPLING_NEIGHBOURS)} for fam in bench["families"]]},
        },
    }


def _train_logged(log: str, args: tuple, kwargs: dict) -> None:
    """Child-process entry: train one detector, its console output going to ``log``."""
    from ..train import train_detector

    if sys.platform == "linux":  # a spawned process inherits "spawn": its data loaders would re-import torch each epoch
        mp.set_start_method("fork", force=True)
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        train_detector(*args, **kwargs)


def _benchmark_stamp(bench: dict) -> dict:
    """What identifies a built benchmark (a detector trained on another is retrained)."""
    return {k: bench.get(k) for k in ("version", "scale", "seed", "artefacts", "build_time")}


def _needs_training(folder: Path, built: dict) -> bool:
    """Whether ``folder`` lacks a finished detector trained on the benchmark ``built``; clears one trained on another
    and stamps the folder (before training, so an interrupted training resumes on the same benchmark)."""
    stamp = folder / "benchmark_stamp.json"
    if folder.is_dir() and (not stamp.is_file() or read_json(stamp) != built):
        shutil.rmtree(folder)
    if (folder / "model_best.pth").is_file() and (folder / "run.json").is_file():
        return False
    write_json(stamp, built)
    return True


#: what the shared initialisation learns (recorded with it; a new value retrains everything)
PRETEXT = ("photo category: the training split's real photographs, 'everyday' (label 0) vs 'technical' (label 1), "
           "in colour — no fakes, no planted artefact")


def pretrain_shared_init(out: Path, bench: dict, train_args: dict, device: str, progress: bool) -> Path:
    """Train the starting point both demo detectors share (cached in ``out/detectors/shared_init``), as the paper's
    detectors share ImageNet weights: the tiny detector learns to tell the benchmark's two photo categories apart on
    the real training photographs only, so its features come from photo content, not from any fake. Returns the
    checkpoint."""
    from ..train import train_detector

    folder = out / "detectors" / "shared_init"
    built = {**_benchmark_stamp(bench), "pretext": PRETEXT}
    if _needs_training(folder, built):
        for split in ("train", "val"):
            for label, category in enumerate(PHOTO_SPLIT[split]):
                dst = folder / "data" / split / "photos" / f"{label}_{('real', 'fake')[label]}"
                dst.mkdir(parents=True, exist_ok=True)
                for src in sorted((out / "benchmark" / split / category / "0_real").iterdir()):
                    if not (dst / src.name).exists():
                        link_or_copy(src, dst / src.name)
        write_json(folder / "pretext.json", {"task": PRETEXT, "epochs": train_args["max_epochs"]})
        train_detector(DEMO_ARCH, folder / "data" / "train", folder / "data" / "val", folder, device=device,
                       progress=progress, resume=(folder / "model_last.pth").is_file(), **train_args)
    return folder / "model_best.pth"


def train_detectors(out: Path, bench: dict, train_args: dict, device: str, progress: bool,
                    init: Path | None = None) -> dict[str, Path]:
    """Train the demo's universal and colour-robust detectors (cached) into ``out/detectors``, both starting from
    ``init`` when given; returns their best checkpoints. When both need training, the colour-robust one trains in a
    second process at the same time (its output in ``detectors/colour_robust/train.log``): each uses one compute
    thread, so the results are those of training one after the other."""
    from ..train import train_detector

    built = _benchmark_stamp(bench)
    if init is not None:
        built["init"] = PRETEXT
    folders = {"universal": out / "detectors" / "universal", "colour_robust": out / "detectors" / "colour_robust"}
    data = (DEMO_ARCH, out / "benchmark" / "train", out / "benchmark" / "val")
    jobs = {name: (data + (folder,), {"color_robust": name == "colour_robust", "device": device,
                                      "init": init, "resume": (folder / "model_last.pth").is_file(), **train_args})
            for name, folder in folders.items() if _needs_training(folder, built)}
    child = None
    if len(jobs) == 2:
        args, kwargs = jobs.pop("colour_robust")
        log = folders["colour_robust"] / "train.log"
        print(f"training the colour-robust detector in a second process (output: {log})")
        child = mp.get_context("spawn").Process(target=_train_logged, args=(str(log), args,
                                                                             {**kwargs, "progress": False}))
        child.start()
    try:
        for args, kwargs in jobs.values():
            train_detector(*args, progress=progress, **kwargs)
        if child is not None:
            child.join()
            if child.exitcode != 0:
                raise RuntimeError(f"training the colour-robust detector failed (exit code {child.exitcode}): see "
                                   f"{log}, or the output above if it failed before it started")
    finally:
        if child is not None and child.is_alive():
            child.terminate()
            child.join()
    return {name: folder / "model_best.pth" for name, folder in folders.items()}


def run_demo(out: str | os.PathLike = "demo_out", scale: float = 1.0, seed: int = 0, device: str = "auto",
             progress: bool = True, artefacts: PlantedArtefacts | None = None) -> Path:
    """Run the embedded study end to end into ``out``; returns the report's path. ``artefacts``: the strengths of
    the artefacts planted in the benchmark (:class:`~tffkit.demo.artefacts.PlantedArtefacts`' defaults)."""
    from ..study import run_study
    from .benchmark import build_benchmark

    out = Path(out).absolute()
    bench = build_benchmark(out / "benchmark", scale=scale, seed=seed, progress=progress, artefacts=artefacts)
    # Wang et al.'s recipe at demo size: whole 64-px images (a random crop would shift the phase of the
    # period-2 upsampling artifacts), a larger learning rate for a small network, and no blur/JPEG augmentation —
    # at 64 px, σ up to 3 erases the artifacts the benchmark is about (the paper's detectors see 224-px crops of
    # 256-px images). No learning-rate drop within the budget: the tiny detectors' validation accuracy swings by
    # ±20 pp between epochs, and a drop after 8 flat epochs froze the colour-robust detector before it had learned
    # the upsampling trace (its grayscale AP stayed at chance, 52–53%). Both start from one shared initialisation,
    # as the paper's start from ImageNet: from random weights every first-layer filter mixes R, G and B at random,
    # so nearly every early feature map reacts to grayscale whatever the detector learned (measured: 83% of the
    # colour-robust detector's top-12 T-FF colour-conditional from scratch, 50–58% from the shared start, seed 0).
    epochs = max(3, round(20 * scale))
    train_args = {"crop_size": 64, "load_size": 64, "batch_size": 64, "max_epochs": epochs,
                  "seed": seed, "lr": 1e-3, "blur_prob": 0.0, "jpeg_prob": 0.0, "patience": epochs}
    pretext_epochs = max(2, round(8 * scale))
    init = pretrain_shared_init(out, bench, {**train_args, "max_epochs": pretext_epochs, "patience": pretext_epochs},
                                device, progress)
    best = train_detectors(out, bench, train_args, device, progress, init)
    cfg = demo_config(out, bench, str(best["universal"]), str(best["colour_robust"]))
    cfg["device"] = device
    (out / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    write_json(out / "demo.json", {"scale": scale, "seed": seed, "benchmark": bench.get("counts"),
                                   "training_family": bench["training_family"], "artefacts": bench.get("artefacts"),
                                   "training": train_args,
                                   "shared_init": {"checkpoint": str(init), "pretext": PRETEXT,
                                                   "epochs": pretext_epochs}})
    return run_study(cfg, progress)
