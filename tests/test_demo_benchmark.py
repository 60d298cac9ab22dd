"""Tests for the embedded mini benchmark (tffkit.demo): layout, splits, determinism, caching."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tffkit.demo import FAMILIES, TRAINING_FAMILY, PlantedArtefacts, artefacts, build_benchmark, expected_counts
from tffkit.demo import benchmark as bm
from tffkit.demo import generators as gens

SCALE = 0.04
VOLATILE = {"build_time", "build_seconds", "versions"}


def _pngs(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def _photo_of(path: Path) -> str:
    return path.stem.split("_", 1)[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench") / "mini"
    meta = build_benchmark(root, scale=SCALE, seed=3, progress=False)
    return root, meta


def test_constants() -> None:
    assert TRAINING_FAMILY in FAMILIES
    assert len(set(FAMILIES)) == len(FAMILIES) >= 4


def test_layout_and_counts(built: tuple[Path, dict]) -> None:
    root, meta = built
    assert json.loads((root / "benchmark.json").read_text()) == meta
    assert meta["counts"] == expected_counts(SCALE)
    assert meta["training_family"] == TRAINING_FAMILY and meta["families"] == list(FAMILIES)
    leaves = {p.parent.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert leaves == set(meta["counts"])
    for rel, n in meta["counts"].items():
        assert len(list((root / rel).glob("*.png"))) == n > 0
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"fold{k}" for k in range(bm.FOLDS)] + [
        "generators"]
    for k in range(bm.FOLDS):
        fold = root / f"fold{k}"
        classes = sorted(p.name for p in (fold / "train").iterdir())
        assert len(classes) >= 2 and classes == sorted(p.name for p in (fold / "val").iterdir())
        assert sorted(p.name for p in (fold / "test").iterdir()) == sorted(FAMILIES)
        for split in ("train", "val"):
            for cls in classes:
                assert sorted(p.name for p in (fold / split / cls).iterdir()) == ["0_real", "1_fake"]
    # Sibling temporary folders are gone after a successful build.
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_folds_cross_fit_over_photographs(built: tuple[Path, dict]) -> None:
    """Within a fold, the test photographs are disjoint from the training and validation ones (val: other crops of
    the training photographs); over the folds every photograph is a test photograph exactly once, and every test set
    holds all of them."""
    root, meta = built
    tested: list[str] = []
    for k, split in enumerate(meta["folds"]):
        photos = {s: {n for names in groups.values() for n in names} for s, groups in split.items()}
        assert photos["val"] == photos["train"] and not photos["train"] & photos["test"]
        assert len(photos["val"]) >= 2  # a ranking never rests on one photograph
        for part in ("train", "val", "test"):
            used = {_photo_of(p) for p in (root / f"fold{k}" / part).rglob("*.png")}
            assert used == photos[part], (k, part, used ^ photos[part])
        for fam in FAMILIES:
            assert {_photo_of(p) for p in (root / f"fold{k}" / "test" / fam).rglob("*.png")} == photos["test"]
        tested += sorted(photos["test"])
    assert sorted(tested) == sorted(meta["photo_sources"]) and len(set(tested)) == len(tested) >= 12


def test_images_are_64px_rgb(built: tuple[Path, dict]) -> None:
    root, _ = built
    files = sorted(root.rglob("*.png"))
    assert len(files) == sum(expected_counts(SCALE).values())
    for f in files[::3]:
        with Image.open(f) as im:
            assert im.mode == "RGB" and im.size == (64, 64)


def test_fakes_are_regenerations_not_copies(built: tuple[Path, dict]) -> None:
    root, _ = built
    for fam in FAMILIES:
        reals = sorted((root / "fold0" / "test" / fam / "0_real").glob("*.png"))
        fakes = sorted((root / "fold0" / "test" / fam / "1_fake").glob("*.png"))
        assert [p.name for p in reals] == [p.name for p in fakes]  # paired by index and photo
        a = np.stack([np.asarray(Image.open(p), np.float64) for p in reals])
        b = np.stack([np.asarray(Image.open(p), np.float64) for p in fakes])
        diff = np.abs(a - b).mean(axis=(1, 2, 3))
        assert (diff > 0.5).all(), (fam, diff)  # every fake was changed by its generator...
        assert diff.mean() < 60.0, (fam, diff)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5  # ...yet still shows the same content


def test_cached_second_call_does_not_rebuild(built: tuple[Path, dict]) -> None:
    root, meta = built
    probe = next((root / "fold0" / "train").rglob("*.png"))
    before = (root / "benchmark.json").stat().st_mtime_ns, probe.stat().st_mtime_ns, probe.stat().st_ino
    assert build_benchmark(root, scale=SCALE, seed=3, progress=False) == meta
    assert ((root / "benchmark.json").stat().st_mtime_ns, probe.stat().st_mtime_ns, probe.stat().st_ino) == before


@pytest.mark.tier2  # two more benchmark builds
def test_same_seed_is_bit_identical_and_seed_matters(built: tuple[Path, dict], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, meta = built
    again = build_benchmark(tmp_path / "again", scale=SCALE, seed=3, progress=False)
    assert {k: v for k, v in again.items() if k not in VOLATILE} == {
        k: v for k, v in meta.items() if k not in VOLATILE}
    assert _pngs(tmp_path / "again") == _pngs(root)
    assert (tmp_path / "again" / "ground_truth.csv").read_bytes() == (root / "ground_truth.csv").read_bytes()
    for fam in FAMILIES:  # the generators, colour artefact folded in, are identical too
        a, b = (torch.load(r / "generators" / f"{fam}.pth") for r in (root, tmp_path / "again"))
        assert all(torch.equal(a[k], b[k]) for k in a)

    # A different seed changes the content; every generator learns from crops of every photograph.
    sampled: dict[int, list[str]] = {}
    real_sample, real_train = bm._sample_crops, bm.train_generator

    def spy_sample(photos, names, n, rng):  # type: ignore[no-untyped-def]
        out = real_sample(photos, names, n, rng)
        sampled[id(out[0])] = list(names)
        return out

    trained_on: list[list[str]] = []

    def spy_train(family, images, *args, **kwargs):  # type: ignore[no-untyped-def]
        trained_on.append(sampled[id(images)])
        return real_train(family, images, *args, **kwargs)

    monkeypatch.setattr(bm, "_sample_crops", spy_sample)
    monkeypatch.setattr(bm, "train_generator", spy_train)
    build_benchmark(tmp_path / "other", scale=SCALE, seed=4, progress=False)
    other = _pngs(tmp_path / "other")
    assert other.keys() == _pngs(root).keys() and other != _pngs(root)
    assert len(trained_on) == len(FAMILIES)
    assert all(set(names) == set(meta["photo_sources"]) for names in trained_on)


@pytest.mark.tier2  # three benchmark builds
def test_stale_or_damaged_benchmark_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "b"
    build_benchmark(root, scale=SCALE, seed=0, progress=False)
    victim = next((root / "fold0" / "test" / TRAINING_FAMILY / "1_fake").glob("*.png"))
    victim.unlink()
    build_benchmark(root, scale=SCALE, seed=0, progress=True)
    assert victim.is_file()
    stamp = (root / "benchmark.json").stat().st_mtime_ns
    build_benchmark(root, scale=SCALE, seed=0, progress=False, force=True)
    assert (root / "benchmark.json").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_write = bm._write

    def flaky_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(bm, "_write", flaky_write)
    monkeypatch.setattr(bm, "_GEN_STEPS", 1)
    monkeypatch.setattr(bm, "_MIN_GEN_STEPS", 1)
    with pytest.raises(KeyboardInterrupt):
        build_benchmark(tmp_path / "b", scale=SCALE, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        build_benchmark(tmp_path, scale=SCALE, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    with pytest.raises(ValueError):
        build_benchmark(tmp_path / "x", scale=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_generator_shapes_and_outputs(family: str) -> None:
    x = torch.rand(2, 6, 8, 10)
    assert gens.Upsample2x(family, 6)(x).shape == (2, 6, 16, 20)
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    model, loss = gens.train_generator(family, images, steps=3, seed=0, batch_size=4)
    assert np.isfinite(loss) and 1_000 < gens.n_parameters(model) < 100_000
    out = gens.regenerate(model, images)
    assert out.shape == images.shape and out.dtype == np.uint8 and not np.array_equal(out, images)
    again, _ = gens.train_generator(family, images, steps=3, seed=0, batch_size=4)
    assert np.array_equal(gens.regenerate(again, images), out)


def test_families_leave_different_outputs() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    outs = [gens.regenerate(gens.train_generator(f, images, steps=2, seed=0, batch_size=2)[0], images)
            for f in FAMILIES]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not np.array_equal(outs[i], outs[j]), (FAMILIES[i], FAMILIES[j])
    with pytest.raises(ValueError):
        gens.Upsample2x("unknown", 3)


# --- planted artefacts -------------------------------------------------------------------------------------------


def _read(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def _luma(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) @ np.array(artefacts.LUMA)


def test_ground_truth_lists_every_image_with_its_artefacts(built: tuple[Path, dict]) -> None:
    root, meta = built
    truth = pd.read_csv(root / meta["ground_truth"], keep_default_na=False)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".png", ".jpg")
               and "generators" not in p.parts}
    assert set(truth["path"]) == on_disk and len(truth) == len(on_disk) == sum(meta["counts"].values())
    assert meta["artefacts"] == PlantedArtefacts().record() and meta["artefacts"]["colour"] > 0
    fakes, reals = truth[truth["label"] == 1], truth[truth["label"] == 0]
    assert (fakes["colour"] == meta["artefacts"]["colour"]).all() and (reals["colour"] == 0).all()
    assert (reals["upsampling"] == "").all() and (fakes["format"] == "png").all() and (reals["format"] == "png").all()
    for path, fam in zip(fakes["path"], fakes["upsampling"], strict=True):
        expected = path.split("/")[2] if path.split("/")[1] == "test" else TRAINING_FAMILY
        assert fam == expected, path


def test_colour_artefact_keeps_luma_and_amplifies_chroma() -> None:
    m = artefacts.color_matrix(1.0)
    rgb = np.random.default_rng(0).uniform(-1, 1, (500, 3))
    assert np.allclose(rgb @ m.T @ np.array(artefacts.LUMA), rgb @ np.array(artefacts.LUMA))  # luma kept
    grey = np.full((4, 3), 0.3)
    assert np.allclose(grey @ m.T, grey)  # greys stay grey
    assert np.allclose(artefacts.color_matrix(0.0), np.eye(3))
    with pytest.raises(ValueError):
        PlantedArtefacts(color=-0.1)


@pytest.mark.parametrize("family", ["tconv", "nearest"])
def test_colour_strength_changes_measured_chroma_not_luma(family: str) -> None:
    images = np.stack([bm._sample_crops({n: bm.load_photo(n)}, [n], 6, np.random.default_rng(0))[0]
                       for n in ("astronaut", "coffee")]).reshape(-1, 64, 64, 3)
    model, _ = gens.train_generator(family, images, steps=30, seed=0, batch_size=8)
    plain = gens.regenerate(model, images)
    sat = {0.0: artefacts.chroma_stats(plain)["saturation"]}
    for strength in (0.5, 1.0):
        planted = copy.deepcopy(model)
        artefacts.plant_color(planted, strength)
        out = gens.regenerate(planted, images)
        sat[strength] = artefacts.chroma_stats(out)["saturation"]
        # the upsampling trace lives in luma: untouched up to rounding wherever no channel is clipped to the gamut
        inside = ((out > 0) & (out < 255) & (plain > 0) & (plain < 255)).all(axis=-1)
        assert inside.mean() > 0.3
        assert np.abs(_luma(out) - _luma(plain))[inside].max() <= 1.0
    assert sat[0.5] == pytest.approx(1.5 * sat[0.0], rel=0.1) and sat[1.0] == pytest.approx(2 * sat[0.0], rel=0.15)


def test_benchmark_fakes_carry_the_colour_artefact_and_the_upsampling_trace(built: tuple[Path, dict]) -> None:
    root, meta = built
    # measured chroma recorded per folder (the fixture's generators train a few steps: their own colours are dull,
    # so the gain is checked on a trained generator in test_colour_strength_changes_measured_chroma_not_luma)
    assert set(meta["measured_chroma"]) == {rel.rsplit("/", 1)[0] for rel in meta["counts"]}
    assert all(set(v) == {"real", "fake"} for v in meta["measured_chroma"].values())

    def nyquist_share(images: np.ndarray) -> float:  # spectral energy on the period-2 lines of the luma
        spec = np.abs(np.fft.fft2(_luma(images) - _luma(images).mean(axis=(1, 2), keepdims=True)))
        return float((spec[:, 32, :].sum() + spec[:, :, 32].sum()) / spec.sum())

    for fam in ("tconv", "nearest", "pixelshuffle"):
        real = _read(sorted((root / "fold0" / "test" / fam / "0_real").glob("*.png")))
        fake = _read(sorted((root / "fold0" / "test" / fam / "1_fake").glob("*.png")))
        assert nyquist_share(fake) != pytest.approx(nyquist_share(real), rel=0.05), fam


def test_format_shortcut_stores_reals_as_jpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm, "_GEN_STEPS", 1)
    monkeypatch.setattr(bm, "_MIN_GEN_STEPS", 1)
    planted = PlantedArtefacts(color=0.0, format_shortcut=True, jpeg_quality=80)
    meta = build_benchmark(tmp_path / "b", scale=SCALE, seed=0, progress=False, artefacts=planted)
    root = tmp_path / "b"
    assert meta["artefacts"]["format_shortcut"] and meta["artefacts"]["colour"] == 0.0
    reals, fakes = sorted(root.rglob("0_real/*")), sorted(root.rglob("1_fake/*"))
    assert reals and {p.suffix for p in reals} == {".jpg"} and {p.suffix for p in fakes} == {".png"}
    with Image.open(reals[0]) as im:
        assert im.format == "JPEG"
    truth = pd.read_csv(root / "ground_truth.csv", keep_default_na=False)
    reals_truth = truth[truth["label"] == 0]
    assert set(reals_truth["format"]) == {"jpeg"} and set(reals_truth["jpeg_quality"].astype(str)) == {"80"}
    assert build_benchmark(root, scale=SCALE, seed=0, progress=False, artefacts=planted) == meta  # cached
    # another strength is another benchmark: rebuilt, not reused
    assert build_benchmark(root, scale=SCALE, seed=0, progress=False)["artefacts"]["format_shortcut"] is False
    assert {p.suffix for p in root.rglob("0_real/*")} == {".png"}


@pytest.mark.tier2  # trains the demo's detectors (twice)
def test_demo_trains_both_detectors_at_once_and_reuses_them(built: tuple[Path, dict], tmp_path: Path) -> None:
    """The shared initialisation learns the photo categories from real photos only; the universal detector then
    trains here, the colour-robust one in a second process at the same time, both from it; a second call trains
    nothing, and a detector trained on another benchmark is retrained."""
    from tffkit.demo.study import pretrain_shared_init, train_detectors

    root, meta = built
    out = tmp_path / "demo"
    out.mkdir()
    (out / "benchmark").symlink_to(root, target_is_directory=True)
    args = {"crop_size": 64, "load_size": 64, "batch_size": 16, "max_epochs": 1, "seed": 0, "lr": 1e-3,
            "blur_prob": 0.0, "jpeg_prob": 0.0, "patience": 1}
    init = pretrain_shared_init(out, meta, args, "cpu", progress=False, fold=1)
    assert init.parent == out / "detectors" / "seed0" / "fold1" / "shared_init"
    for label, category in enumerate(bm.photo_split(1)["train"]):  # the real photos of each category, nothing else
        files = sorted((init.parent / "data" / "train" / "photos" / ("0_real", "1_fake")[label]).iterdir())
        reals = root / "fold1" / "train" / category / "0_real"
        assert [p.name for p in files] == sorted(p.name for p in reals.iterdir())
        assert all((reals / p.name).read_bytes() == p.read_bytes() for p in files[:5])
    assert pretrain_shared_init(out, meta, args, "cpu", progress=False, fold=1) == init  # cached
    best = train_detectors(out, meta, args, "cpu", progress=False, init=init, fold=1)
    runs = {name: json.loads((path.parent / "run.json").read_text()) for name, path in best.items()}
    assert all(run["args"]["init"] == str(init) for run in runs.values())
    assert all(path.is_file() for path in best.values())
    assert runs["colour_robust"]["args"]["color_robust"] and not runs["universal"]["args"]["color_robust"]
    assert "epoch 0" in (best["colour_robust"].parent / "train.log").read_text()  # its output went to its log
    stamps = {name: path.stat().st_mtime_ns for name, path in best.items()}
    assert train_detectors(out, meta, args, "cpu", progress=False, init=init, fold=1) == best
    assert {name: path.stat().st_mtime_ns for name, path in best.items()} == stamps  # cached: nothing retrained
    train_detectors(out, {**meta, "build_time": "another build"}, args, "cpu", progress=False, init=init, fold=1)
    assert all(path.stat().st_mtime_ns != stamps[name] for name, path in best.items())
