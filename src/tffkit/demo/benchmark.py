"""Embedded mini deepfake-detection benchmark in the ForenSynths folder layout.

Real images are random 64x64 crops (several scales, antialiased down-sizing, flips) of
the twelve colour images bundled inside the installed scikit-image, scikit-learn and matplotlib
wheels (eleven photographs and a colour chart; :data:`PHOTO_FOLDS`, their sources and licences in
docs/demo.md) -- nothing is downloaded.  Twelve images cannot give every test set eight photographs
disjoint from training, so the benchmark *cross-fits over photographs*: the images form two folds of
six; fold ``k``'s detectors train (and are validated, and rank their units) on the other fold's
photographs and are tested on fold ``k``'s, so every photograph is a test photograph exactly once and
the pooled test sets hold all twelve.  Fake images are the same kind of crops "regenerated" by tiny
autoencoder generators (see :mod:`tffkit.demo.generators`) trained for a few seconds on crops of every
image (a generator, like a real one, is not the detector's training data); each fake is made from a
real crop of the same split.  The fakes carry artefacts planted on purpose, each with a known cause
and strength (:mod:`tffkit.demo.artefacts`).

Fake ``1_fake/NNNNN_<photo>.png`` is the regeneration of real ``0_real/NNNNN_<photo>.png`` (``.jpg`` for the
reals when the format shortcut is on).

Layout under ``root``::

    fold<k>/train/<class>/{0_real,1_fake}/*.png   # fakes of TRAINING_FAMILY only, the other fold's photographs
    fold<k>/val/<class>/{0_real,1_fake}/*.png     # TRAINING_FAMILY, the other fold's validation photographs
    fold<k>/test/<family>/{0_real,1_fake}/*.png   # every family, fold k's photographs
    generators/<family>.pth                        # the trained generators, colour formation planted
    benchmark.json                                 # parameters, planted-artefact strengths, measured chroma
    ground_truth.csv                               # every image: which artefacts it carries, with their strengths
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tffkit.analysis.planted import GROUND_TRUTH
from tffkit.demo.artefacts import PlantedArtefacts, chroma_stats, plant_color
from tffkit.demo.generators import FAMILIES, TRAINING_FAMILY, n_parameters, regenerate, train_generator
from tffkit.progress import progress_bar
from tffkit.results import write_csv

__all__ = ["BENCHMARK_VERSION", "FAMILIES", "FOLDS", "GROUND_TRUTH", "IMAGE_SIZE", "PHOTO_FOLDS", "TRAINING_FAMILY",
           "PlantedArtefacts", "build_benchmark", "expected_counts", "load_photo", "photo_split"]

#: Bump whenever the content produced for a given (scale, seed) changes.
# 2: the trained generators are kept (generators/<family>.pth); 3: planted artefacts and ground_truth.csv;
# 4: twelve images in two folds (cross-fitting over photographs)
BENCHMARK_VERSION: int = 4
_SUFFIXES = {"png": ".png", "jpeg": ".jpg"}
#: The file names ``NNNNN_<photo>.png`` name their source photograph: the group of intervals (docs/algorithms.md §10).
PHOTO_GROUP_PATTERN = r"^\d{5}_(.+)\.(?:png|jpg)$"
IMAGE_SIZE: int = 64
#: Crop windows are ``IMAGE_SIZE * s`` pixels wide (clipped to the photo), then resized to 64.
CROP_SCALES: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 4.0)

#: The two folds of photographs, each grouped into content classes (the shared start's pretext task).
PHOTO_FOLDS: tuple[dict[str, list[str]], ...] = (
    {"everyday": ["coffee", "china", "astronaut", "rocket"], "technical": ["retina", "hubble_deep_field"]},
    {"everyday": ["chelsea", "flower", "motorcycle", "grace_hopper"],
     "technical": ["immunohistochemistry", "colorwheel"]},
)
FOLDS: int = len(PHOTO_FOLDS)


def photo_split(fold: int) -> dict[str, dict[str, list[str]]]:
    """Fold ``fold``'s photographs per split: test are its own; train and val the other fold's (by class) — val holds
    other crops of the training photographs (model selection and the FF-RS source set): with six photographs to
    learn from, none can be spared, and the test photographs are never seen."""
    other = {c: list(names) for c, names in PHOTO_FOLDS[(fold + 1) % FOLDS].items()}
    return {"train": other, "val": other, "test": {"all": [n for names in PHOTO_FOLDS[fold].values() for n in names]}}


# Images per label at scale 1: per class for train/val, per family for test.
_BASE_COUNTS = {"train": 300, "val": 60, "test": 72}  # val: 10 crops per photograph
_MIN_COUNT = 4
_GEN_STEPS = 400  # generator optimisation steps at scale 1
_GEN_POOL = 512  # training crops the generators learn from at scale 1
_MIN_GEN_STEPS = 20


def _skimage(name: str) -> Callable[[], list[np.ndarray]]:
    def load() -> list[np.ndarray]:
        from skimage import data

        out = getattr(data, name)()
        # stereo_motorcycle -> (left, right, disparity): both views are one scene.
        return list(out[:2]) if isinstance(out, tuple) else [out]
    return load


def _sklearn(filename: str) -> Callable[[], list[np.ndarray]]:
    def load() -> list[np.ndarray]:
        from sklearn.datasets import load_sample_image

        return [load_sample_image(filename)]
    return load


def _matplotlib(filename: str) -> Callable[[], list[np.ndarray]]:
    def load() -> list[np.ndarray]:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(filename, asfileobj=False)) as img:
            return [np.asarray(img.convert("RGB"))]
    return load


_SOURCES: dict[str, tuple[str, Callable[[], list[np.ndarray]]]] = {
    "astronaut": ("skimage.data.astronaut", _skimage("astronaut")),
    "rocket": ("skimage.data.rocket", _skimage("rocket")),
    "motorcycle": ("skimage.data.stereo_motorcycle (left+right views)", _skimage("stereo_motorcycle")),
    "hubble_deep_field": ("skimage.data.hubble_deep_field", _skimage("hubble_deep_field")),
    "retina": ("skimage.data.retina", _skimage("retina")),
    "colorwheel": ("skimage.data.colorwheel", _skimage("colorwheel")),
    "chelsea": ("skimage.data.chelsea", _skimage("chelsea")),
    "immunohistochemistry": ("skimage.data.immunohistochemistry", _skimage("immunohistochemistry")),
    "coffee": ("skimage.data.coffee", _skimage("coffee")),
    "china": ("sklearn.datasets.load_sample_image('china.jpg')", _sklearn("china.jpg")),
    "flower": ("sklearn.datasets.load_sample_image('flower.jpg')", _sklearn("flower.jpg")),
    "grace_hopper": ("matplotlib sample_data/grace_hopper.jpg", _matplotlib("grace_hopper.jpg")),
}


@functools.cache
def _load_views(name: str) -> tuple[np.ndarray, ...]:
    views = [np.ascontiguousarray(v[..., :3], dtype=np.uint8) for v in _SOURCES[name][1]()]
    for v in views:
        v.flags.writeable = False
    return tuple(views)


def load_photo(name: str) -> list[np.ndarray]:
    """Load one bundled source photograph: read-only uint8 RGB views of one scene (cached)."""
    return list(_load_views(name))


def _n(base: int, scale: float, photos: int) -> int:
    """Images per label of a folder: at least one per photograph (crops cycle over the photographs)."""
    return max(_MIN_COUNT, photos, int(round(base * scale)))


def expected_counts(scale: float = 1.0) -> dict[str, int]:
    """Number of PNG files in every leaf folder (``fold/split/group/label``) for a given ``scale``."""
    counts: dict[str, int] = {}
    for fold in range(FOLDS):
        split = photo_split(fold)
        for part in ("train", "val"):
            for cls, names in split[part].items():
                for label in ("0_real", "1_fake"):
                    counts[f"fold{fold}/{part}/{cls}/{label}"] = _n(_BASE_COUNTS[part], scale, len(names))
        for fam in FAMILIES:
            for label in ("0_real", "1_fake"):
                counts[f"fold{fold}/test/{fam}/{label}"] = _n(_BASE_COUNTS["test"], scale, len(split["test"]["all"]))
    return counts


def _sample_crops(photos: dict[str, list[np.ndarray]], names: Sequence[str], n: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``n`` random 64x64 crops cycling over ``names``; returns images and their source photo."""
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    sources: list[str] = []
    for i in range(n):
        name = names[i % len(names)]
        views = photos[name]
        img = views[int(rng.integers(len(views)))]
        h, w = img.shape[:2]
        side = min(int(round(IMAGE_SIZE * float(rng.choice(CROP_SCALES)))), h, w)
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(img[y:y + side, x:x + side])
        if side != IMAGE_SIZE:
            crop = crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, reducing_gap=None)
        arr = np.asarray(crop)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[i] = arr
        sources.append(name)
    return out, sources


def _write(folder: Path, images: np.ndarray, sources: Sequence[str], fmt: str = "png",
           quality: int = 90) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, src) in enumerate(zip(images, sources, strict=True)):
        path = folder / f"{i:05d}_{src}{_SUFFIXES[fmt]}"
        if fmt == "jpeg":
            Image.fromarray(img).save(path, format="JPEG", quality=quality)
        else:
            Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _count_on_disk(root: Path, rel: str) -> int:
    folder = root / rel
    return sum(1 for p in folder.iterdir() if p.suffix in _SUFFIXES.values()) if folder.is_dir() else -1


def _cached(root: Path, scale: float, seed: int, artefacts: PlantedArtefacts) -> dict[str, Any] | None:
    """The stored metadata if ``root`` holds a complete benchmark built with these parameters."""
    meta_path = root / "benchmark.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if (meta.get("version") != BENCHMARK_VERSION or meta.get("seed") != seed
            or meta.get("scale") != scale or meta.get("counts") != expected_counts(scale)
            or meta.get("artefacts") != artefacts.record()):
        return None
    if any(_count_on_disk(root, rel) != n for rel, n in meta["counts"].items()):
        return None
    if any(not (root / "generators" / f"{fam}.pth").is_file() for fam in FAMILIES):
        return None
    if not (root / GROUND_TRUTH).is_file():
        return None
    return meta


def _versions() -> dict[str, str]:
    import PIL
    import skimage
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "scikit-image": skimage.__version__, "scikit-learn": sklearn.__version__,
            "pillow": PIL.__version__}


class _deterministic:
    """Context manager: enable ``torch.use_deterministic_algorithms`` and restore afterwards."""

    def __enter__(self) -> None:
        self.prev = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.prev, warn_only=self.prev_warn)


def _generate(tmp: Path, scale: float, seed: int, progress: bool, artefacts: PlantedArtefacts) -> dict[str, Any]:
    """Write the whole benchmark into ``tmp`` and return its metadata (without timings)."""
    seeds = np.random.SeedSequence(seed).spawn(3)
    rng_pool, rng_real = (np.random.default_rng(s) for s in seeds[:2])
    torch_seed = int(seeds[2].generate_state(1)[0] % 2**31)
    all_names = [n for fold in PHOTO_FOLDS for names in fold.values() for n in names]
    photos = {name: load_photo(name) for name in all_names}
    steps = max(_MIN_GEN_STEPS, int(round(_GEN_STEPS * scale)))
    pool, _ = _sample_crops(photos, all_names, max(64, int(round(_GEN_POOL * scale))), rng_pool)

    counts = expected_counts(scale)
    total = steps * len(FAMILIES) + sum(counts.values())
    bar = progress_bar(total, "building benchmark", "step", progress)
    gen_info: dict[str, dict[str, float | int]] = {}
    models = {}
    with _deterministic():
        for k, fam in enumerate(FAMILIES):
            bar.set_postfix_str(f"training {fam} generator")
            models[fam], loss = train_generator(fam, pool, steps, seed=torch_seed + 1000 * k,
                                                on_step=lambda: bar.update(1))
            gen_info[fam] = {"parameters": n_parameters(models[fam]), "final_loss": round(loss, 5)}
            plant_color(models[fam], artefacts.color)  # after training: the generator cannot learn to undo it
            (tmp / "generators").mkdir(parents=True, exist_ok=True)  # kept for LRP into the generator
            torch.save(models[fam].state_dict(), tmp / "generators" / f"{fam}.pth")

        truth: list[dict[str, Any]] = []
        measured: dict[str, dict[str, dict[str, float]]] = {}
        real_fmt = "jpeg" if artefacts.format_shortcut else "png"

        def emit(rel: str, names: Sequence[str], family: str) -> None:
            # The fake with index i is the regenerated version of real i (paired), so a
            # detector cannot separate the labels by content alone.
            label_n = counts[f"{rel}/0_real"]
            bar.set_postfix_str(f"writing {rel}")
            reals, real_src = _sample_crops(photos, names, label_n, rng_real)
            real_paths = _write(tmp / rel / "0_real", reals, real_src, real_fmt, artefacts.jpeg_quality)
            bar.update(label_n)
            fakes = regenerate(models[family], reals)
            fake_paths = _write(tmp / rel / "1_fake", fakes, real_src)
            bar.update(label_n)
            measured[rel] = {"real": chroma_stats(reals), "fake": chroma_stats(fakes)}
            for label, paths, fmt in ((0, real_paths, real_fmt), (1, fake_paths, "png")):
                truth.extend(_truth_row(tmp, path, label, family, fmt, src, artefacts)
                             for path, src in zip(paths, real_src, strict=True))

        for fold in range(FOLDS):
            split = photo_split(fold)
            for part in ("train", "val"):
                for cls, names in split[part].items():
                    emit(f"fold{fold}/{part}/{cls}", names, TRAINING_FAMILY)
            for fam in FAMILIES:
                emit(f"fold{fold}/test/{fam}", split["test"]["all"], fam)
    bar.close()
    write_csv(tmp / GROUND_TRUTH, truth)
    return {
        "version": BENCHMARK_VERSION, "scale": scale, "seed": seed, "image_size": IMAGE_SIZE,
        "families": list(FAMILIES), "training_family": TRAINING_FAMILY,
        "classes": list(PHOTO_FOLDS[0]), "folds": [photo_split(k) for k in range(FOLDS)],
        "photo_sources": {n: _SOURCES[n][0] for n in all_names},
        "crop_scales": list(CROP_SCALES), "paired_fakes": True,
        "generators": {"steps": steps, "training_crops": len(pool), "families": gen_info},
        "counts": counts, "artefacts": artefacts.record(), "ground_truth": GROUND_TRUTH,
        "measured_chroma": measured,
    }


def _truth_row(root: Path, path: Path, label: int, family: str, fmt: str, photo: str,
               artefacts: PlantedArtefacts) -> dict[str, Any]:
    """One image's ground truth: the artefacts it carries (strength 0 / empty when it carries none)."""
    rel = path.relative_to(root)
    fake = label == 1
    return {"path": rel.as_posix(), "fold": rel.parts[0], "split": rel.parts[1], "set": rel.parts[2], "label": label,
            "photo": photo,
            "family": family if fake else "", "upsampling": family if fake else "",
            "colour": artefacts.color if fake else 0.0, "format": fmt,
            "format_shortcut": artefacts.format_shortcut,
            "jpeg_quality": artefacts.jpeg_quality if fmt == "jpeg" else ""}


def build_benchmark(root: str | os.PathLike[str], scale: float = 1.0, seed: int = 0,
                    progress: bool = True, force: bool = False,
                    artefacts: PlantedArtefacts | None = None) -> dict[str, Any]:
    """Build (or reuse) the mini benchmark under ``root`` and return its ``benchmark.json`` content.

    A complete benchmark already at ``root`` with the same ``scale``, ``seed`` and
    :data:`BENCHMARK_VERSION` is reused unless ``force``.  The build happens in a
    temporary sibling folder that is renamed into place at the end, so an interrupted
    build never leaves a benchmark that looks complete.  ``scale`` multiplies image
    counts and generator training.  ``artefacts``: the planted artefacts' strengths (defaults:
    :class:`PlantedArtefacts`).  Deterministic for a given seed on a given machine.
    """
    artefacts = artefacts or PlantedArtefacts()
    root = Path(root).expanduser().absolute()
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not force:
        meta = _cached(root, scale, seed, artefacts)
        if meta is not None:
            return meta
    if root.exists() and not (root / "benchmark.json").is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists, is not empty and holds no benchmark.json; refusing to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    start = time.perf_counter()
    try:
        meta = _generate(tmp, scale, seed, progress, artefacts)
        meta["versions"] = _versions()
        meta["build_time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        meta["build_seconds"] = round(time.perf_counter() - start, 2)
        (tmp / "benchmark.json").write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o755)
        old = None
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "benchmark")
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta
