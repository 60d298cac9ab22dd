from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tffkit import distributed as tdist
from tffkit.data import (
    DatasetLayoutError,
    ImageDataset,
    Perturbation,
    center_crop,
    find_samples,
    load_rgb,
    normalize,
    to_grayscale,
)
from tffkit.passes import DatasetPass


def test_find_samples_nested_and_flat(tree: Path):
    samples = find_samples(tree)
    assert len(samples) == 4 * 2 * 3
    assert {(s.set, s.cls) for s in samples} == {("progan", "car"), ("progan", "cat"), ("stylegan", "")}
    assert all(s.label == (1 if "1_fake" in s.path else 0) for s in samples)
    assert samples == find_samples(tree)  # deterministic
    only = find_samples(tree, sets=["stylegan"])
    assert {s.set for s in only} == {"stylegan"} and len(only) == 8


def test_subsetting(tree: Path):
    per_class = find_samples(tree, max_per_class=1)
    assert len(per_class) == 3 * 2
    per_label = find_samples(tree, sets=["progan"], max_per_label=5)
    assert sum(s.label == 1 for s in per_label) == 5 and sum(s.label == 0 for s in per_label) == 5


def test_layout_errors(tmp_path: Path, tree: Path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        find_samples(tmp_path / "empty_missing")
    (tmp_path / "plain" / "images").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="expected ForenSynths folders"):
        find_samples(tmp_path / "plain")
    (tmp_path / "hollow" / "x" / "0_real").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="holds no images"):
        find_samples(tmp_path / "hollow")
    with pytest.raises(DatasetLayoutError, match="sets found"):
        find_samples(tree, sets=["biggan"])


def test_decoding_modes(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "g.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "i16.png")
    for name in ("g.png", "a.png", "p.png", "c.jpg", "i16.png"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (8, 8)
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "a.png")), rgb)
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "i16.png"))[..., 0], rgb[..., 0])


def test_corrupt_files_are_skipped_and_listed(tree: Path):
    bad = tree / "stylegan" / "1_fake"
    (bad / "zero.png").write_bytes(b"")
    good = (bad / "000.png").read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    samples = find_samples(tree)
    ctx = tdist.init("cpu")
    run = DatasetPass(samples, ctx, "full", batch_size=5, num_workers=0, progress=False)
    seen = sum(len(idx) for _, idx in run)
    failed = run.gather_failed()
    assert seen == len(samples) - 2
    assert sorted(Path(r["path"]).name for r in failed) == ["truncated.png", "zero.png"]


def test_grayscale_is_pil_luma():
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8))
    gray = np.asarray(to_grayscale(rgb))
    luma = np.asarray(rgb.convert("L"))
    assert all(np.array_equal(gray[..., c], luma) for c in range(3))
    r, g, b = (np.asarray(rgb, dtype=np.float64)[..., c] for c in range(3))
    assert np.abs(luma - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1.0


def test_perturbations_deterministic_and_effective(tree: Path):
    s = find_samples(tree)[:2]
    p = Perturbation(grayscale=False, jpeg=50, blur=1.0, resize=0.5)
    a = ImageDataset(s, "full", p)[0][0]
    b = ImageDataset(s, "full", p)[0][0]
    plain = ImageDataset(s, "full")[0][0]
    assert torch.equal(a, b) and a.shape == (3, 16, 16) and plain.shape == (3, 32, 32)
    assert p.describe() == "resize0.5+blur1+jpeg50"


def test_center_crop_and_normalize():
    arr = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    assert center_crop(arr, 4).shape == (4, 4, 3)
    assert np.array_equal(center_crop(arr, 4), arr[3:7, 4:8])
    assert center_crop(arr, 16).shape == (16, 16, 3)
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(x)[0, :, 0, 0], torch.tensor([(1 - .485) / .229, (1 - .456) / .224,
                                                                   (1 - .406) / .225]))
