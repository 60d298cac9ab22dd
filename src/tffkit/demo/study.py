"""``tff demo``: build the embedded mini benchmark, train a small universal and a colour-robust detector per fold of
photographs and per seed, run the whole study on one of them and the headline steps on every other, and write the
report — no downloads, no user data, cached between runs.

A *replicate* is one training seed: its detectors (and their shared start) are trained once per fold of photographs
(:data:`~tffkit.demo.benchmark.PHOTO_FOLDS`), each tested on its own fold, so a replicate's pooled test sets hold
every photograph once. The first replicate's fold 0 runs the whole study (``study/``, the report); every (seed, fold)
runs the headline steps (evaluate, rank, colour, colour-robust) into ``replicates/seed<s>/fold<k>/``."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from ..results import link_or_copy, read_json, write_json
from .artefacts import PlantedArtefacts
from .benchmark import FOLDS, PHOTO_GROUP_PATTERN, photo_split

DEMO_ARCH = "tiny_resnet"
#: the demo generators' ×2 upsampling (decoder.4; a unit only for tconv and pixel shuffle) and the convolution
#: feeding it — where the families differ, so where their traces should be found (decoder.5, which reads it, writes
#: the image and is not a unit)
UPSAMPLING_NEIGHBOURS = ("decoder.2", "decoder.4.op", "decoder.4.op.0")


#: the steps every replicate runs (the headline claims'); the whole study runs once
HEADLINE_STEPS = ("evaluate", "rank", "color", "color_robust")


def demo_config(out: Path, bench: dict, universal: str, color_robust: str, *, fold: int = 0,
                study: Path | None = None, whole: bool = True) -> dict:
    """The study config of the demo for ``fold``'s two trained detectors: the training family plays ProGAN, the
    others are unseen sets. ``whole``: every step, else only :data:`HEADLINE_STEPS`."""
    data = out / "benchmark" / f"fold{fold}"
    steps = {
        # 5 rankings of resampled photographs beside the ranking of all (the whole study): dropout and colour carry
        # them to their headline numbers (the report's "Replicates of the ranking")
        "rank": {"min_prob": 0.9, "k": 12, **({"replicates": 5} if whole else {})},
        "dropout": {"k_sweep": [3, 6, 12, 24]},  # the default 20 random-k replicas as the null
        # rankings compared by deletion (k = 1 … 16, the default 20 random rankings as the null, a fully
        # randomised detector) on every test fake and real
        "faithfulness": {"enabled": True, "k_max": 16, "randomise": [1.0]},
        "lrpmax": {"k": 6, "per_tff": 8, "show": 4},
        "color": {"k": 12},
        "color_robust": {"enabled": True, "label": "colour-robust (demo)", "weights": color_robust},
        # LRP into each family's generator, fed with the family's real test crops (it regenerates them);
        # p ≥ 0.5: on the unseen families few fakes reach the paper's 0.9
        "generator": {"enabled": True, "images": 60, "percent": 5.0, "random_repeats": 3, "min_prob": 0.5,
                      "generators": [{"name": fam, "kind": f"demo:{fam}",
                                      "weights": str(out / "benchmark" / "generators" / f"{fam}.pth"),
                                      "inputs": str(data / "test" / fam / "0_real"),
                                      "near": list(UPSAMPLING_NEIGHBOURS)} for fam in bench["families"]]},
    }
    if not whole:
        steps = {name: ({**settings, "enabled": False} if name not in HEADLINE_STEPS else settings)
                 for name, settings in {**steps, "planted": {}, "card": {}}.items()}
    return {
        "name": "embedded mini benchmark" + ("" if whole else f" (fold {fold})"),
        "out": str(study or out / "study"),
        "preset": "full",
        "batch_size": 64,
        "detector": {"arch": DEMO_ARCH, "weights": universal, "label": "universal (demo)"},
        "data": {"source": str(data / "val"), "test": str(data / "test"),
                 "train_set": [bench["training_family"]], "group_pattern": PHOTO_GROUP_PATTERN},
        "steps": steps,
    }


def _train_logged(log: str, args: tuple, kwargs: dict) -> None:
    """Child-process entry: train one detector, its console output going to ``log``."""

    if sys.platform == "linux":  # a spawned process inherits "spawn": its data loaders would re-import torch each epoch
        mp.set_start_method("fork", force=True)
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        _train(*args, **kwargs)


def _train(data: Path, val: Path, out: Path, **options) -> dict:
    """Train the demo's detector on ``data`` (validation ``val``) into ``out`` with these TrainOptions fields."""
    from ..jobs.train import TrainOptions, train

    init = options.get("init")
    options = {**options, "init": None if init is None else str(init)}
    return train(data, val, options=TrainOptions(arch=DEMO_ARCH, **options), out=out)


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


#: training epochs of the detectors and of their shared start at scale 1
EPOCHS, PRETEXT_EPOCHS = 20, 5
#: what the shared initialisation learns (recorded with it; a new value retrains everything)
PRETEXT = ("photo category: the fold's training real photographs, 'everyday' (label 0) vs 'technical' (label 1), "
           "in colour — no fakes, no planted artefact")


def _folder(out: Path, seed: int, fold: int) -> Path:
    return out / "detectors" / f"seed{seed}" / f"fold{fold}"


def pretrain_shared_init(out: Path, bench: dict, train_args: dict, device: str, progress: bool, *,
                         fold: int = 0) -> Path:
    """Train the starting point both detectors of ``fold`` share (seed ``train_args['seed']``; cached), as the
    paper's detectors share ImageNet weights: the tiny detector learns to tell the benchmark's two photo categories
    apart on the fold's real training photographs only, so its features come from photo content, not from any fake.
    Returns the checkpoint."""
    folder = _folder(out, train_args["seed"], fold) / "shared_init"
    built = {**_benchmark_stamp(bench), "pretext": PRETEXT, "fold": fold}
    if _needs_training(folder, built):
        for split in ("train", "val"):
            for label, category in enumerate(photo_split(fold)[split]):
                dst = folder / "data" / split / "photos" / f"{label}_{('real', 'fake')[label]}"
                dst.mkdir(parents=True, exist_ok=True)
                for src in sorted((out / "benchmark" / f"fold{fold}" / split / category / "0_real").iterdir()):
                    if not (dst / src.name).exists():
                        link_or_copy(src, dst / src.name)
        write_json(folder / "pretext.json", {"task": PRETEXT, "epochs": train_args["max_epochs"]})
        _train(folder / "data" / "train", folder / "data" / "val", folder, device=device, progress=progress,
               resume=(folder / "model_last.pth").is_file(), **train_args)
    return folder / "model_best.pth"


def train_detectors(out: Path, bench: dict, train_args: dict, device: str, progress: bool,
                    init: Path | None = None, *, fold: int = 0) -> dict[str, Path]:
    """Train ``fold``'s universal and colour-robust detectors (seed ``train_args['seed']``; cached), both starting
    from ``init`` when given; returns their best checkpoints. When both need training, the colour-robust one trains
    in a second process at the same time (its output in its folder's ``train.log``): each uses one compute thread,
    so the results are those of training one after the other."""
    built = {**_benchmark_stamp(bench), "fold": fold}
    if init is not None:
        built["init"] = PRETEXT
    base = _folder(out, train_args["seed"], fold)
    folders = {"universal": base / "universal", "colour_robust": base / "colour_robust"}
    data = (out / "benchmark" / f"fold{fold}" / "train", out / "benchmark" / f"fold{fold}" / "val")
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
            _train(*args, progress=progress, **kwargs)
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


def run_demo(out: str | os.PathLike = "demo_out", *, scale: float = 1.0, seed: int = 0, seeds: int = 3,
             device: str = "auto", progress: bool = True, artefacts: PlantedArtefacts | None = None) -> Path:
    """Run the embedded study end to end into ``out``; returns the report's path. ``seed``: the benchmark's and the
    first replicate's; ``seeds``: how many training seeds (``seed``, ``seed + 1``, …). ``artefacts``: the strengths
    of the artefacts planted in the benchmark (:class:`~tffkit.demo.artefacts.PlantedArtefacts`' defaults)."""
    from ..jobs.study import run_study
    from ..report.html import build_report
    from .benchmark import build_benchmark
    from .summary import write_summary

    start = time.perf_counter()
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
    epochs = max(3, round(EPOCHS * scale))
    pretext_epochs = max(2, round(PRETEXT_EPOCHS * scale))
    train_args = {"crop_size": 64, "load_size": 64, "batch_size": 64, "max_epochs": epochs, "lr": 1e-3,
                  "blur_prob": 0.0, "jpeg_prob": 0.0, "patience": epochs}
    replicates = {}
    for s in range(seed, seed + seeds):
        for fold in range(FOLDS):
            args = {**train_args, "seed": s}
            init = pretrain_shared_init(out, bench, {**args, "max_epochs": pretext_epochs, "patience": pretext_epochs},
                                        device, progress, fold=fold)
            replicates[s, fold] = train_detectors(out, bench, args, device, progress, init, fold=fold)
    write_json(out / "demo.json", {"scale": scale, "seed": seed, "seeds": list(range(seed, seed + seeds)),
                                   "folds": FOLDS, "benchmark": bench.get("counts"),
                                   "training_family": bench["training_family"], "artefacts": bench.get("artefacts"),
                                   "training": train_args, "headline_steps": list(HEADLINE_STEPS),
                                   "shared_init": {"pretext": PRETEXT, "epochs": pretext_epochs}})
    for (s, fold), best in replicates.items():
        if (s, fold) != (seed, 0):
            cfg = demo_config(out, bench, str(best["universal"]), str(best["colour_robust"]), fold=fold,
                              study=out / "replicates" / f"seed{s}" / f"fold{fold}", whole=False)
            run_study({**cfg, "device": device}, progress=progress, report=False)  # its numbers go to the summary
    best = replicates[seed, 0]
    cfg = {**demo_config(out, bench, str(best["universal"]), str(best["colour_robust"])), "device": device}
    (out / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_study(cfg, progress=progress)
    write_summary(out, elapsed_s=round(time.perf_counter() - start, 1))  # and study/replicates.json, for the report
    return build_report(out / "study")
