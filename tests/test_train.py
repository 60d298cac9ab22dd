import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import make_tree, run_torchrun
from tffkit import distributed as tdist
from tffkit.augment import (
    JPEG_CODECS,
    AugmentedDataset,
    epoch_batches,
    item_rng,
    jpeg_roundtrip,
    training_augment,
    validation_augment,
)
from tffkit.cli import main
from tffkit.data import find_samples
from tffkit.detectors import CheckpointMismatchError, build_detector, load_init_weights, tiny_resnet
from tffkit.jobs.train import TrainOptions, train
from tffkit.train import EarlyStopping, Trainer

CROP, LOAD = 40, 48


def _image(size: int = 32) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8))


def _draws(aug, n: int = 400):
    img = _image()
    return [aug(img, item_rng(0, 0, epoch, 7)) for epoch in range(n)]


def test_training_augment_draws_within_the_recipe():
    cr = _draws(training_augment(color_robust=True, crop_size=CROP, load_size=LOAD))
    params = [p for _, p in cr]
    assert all(a.shape == (CROP, CROP, 3) and a.dtype == np.uint8 for a, _ in cr)
    assert all(p.resized_to is not None and min(p.resized_to) == LOAD for p in params)  # 32 px < 48: resized
    gray = np.mean([p.grayscale for p in params])
    assert 0.4 < gray < 0.6  # p = 0.5 over 400 draws (sd 0.025)
    assert all(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
               for a, p in cr if p.grayscale)
    sigmas = [p.blur_sigma for p in params if p.blur_sigma is not None]
    qualities = [p.jpeg_quality for p in params if p.jpeg_quality is not None]
    assert 0.4 < len(sigmas) / 400 < 0.6 and 0.4 < len(qualities) / 400 < 0.6
    assert all(0.0 <= s <= 3.0 for s in sigmas) and max(sigmas) > 2.5 and min(sigmas) < 0.5
    assert all(30 <= q <= 100 for q in qualities) and max(qualities) > 90 and min(qualities) < 40
    codecs = [p.jpeg_codec for p in params if p.jpeg_codec]
    assert set(JPEG_CODECS) == {"pil", "cv2"} and 0.35 < codecs.count("cv2") / len(codecs) < 0.65
    assert 0.4 < np.mean([p.flip for p in params]) < 0.6
    assert len({p.crop_top_left for p in params}) > 20
    plain = _draws(training_augment(color_robust=False, crop_size=CROP, load_size=LOAD))
    assert not any(p.grayscale for _, p in plain)
    assert any(not np.array_equal(a[..., 0], a[..., 1]) for a, _ in plain)


def test_both_jpeg_codecs_compress_for_real():
    yy, xx = np.mgrid[0:64, 0:72]
    img = np.stack([128 + 60 * np.sin(xx / 5), 128 + 60 * np.cos(yy / 7), (xx + yy) * 1.5], -1).astype(np.uint8)
    err = {(q, c): np.abs(jpeg_roundtrip(img, q, c).astype(int) - img).mean() for q in (30, 95) for c in JPEG_CODECS}
    assert all(0 < e < 10 for e in err.values())  # lossy but close to the input
    assert all(err[30, c] > err[95, c] for c in JPEG_CODECS)
    assert jpeg_roundtrip(img, 30, "cv2").shape == img.shape and jpeg_roundtrip(img, 30, "cv2").dtype == np.uint8


def test_validation_augment_is_fixed_and_never_gray():
    val = _draws(validation_augment(crop_size=CROP, load_size=LOAD))
    params = [p for _, p in val]
    assert not any(p.grayscale or p.flip for p in params)
    assert {p.blur_sigma for p in params} == {None, 1.5}
    assert {p.jpeg_quality for p in params} == {None, 65} and {p.jpeg_codec for p in params} == {None, "pil"}
    assert len({p.crop_top_left for p in params}) == 1 and all(a.shape == (CROP, CROP, 3) for a, _ in val)
    a1, p1 = validation_augment(crop_size=CROP, load_size=LOAD)(_image(), item_rng(0, 1, 0, 3))
    a2, p2 = validation_augment(crop_size=CROP, load_size=LOAD)(_image(), item_rng(0, 1, 0, 3))
    assert p1 == p2 and np.array_equal(a1, a2)
    with pytest.raises(ValueError, match="larger than load size"):
        training_augment(crop_size=64, load_size=48)


def test_dataset_is_keyed_by_epoch_and_skips_bad_files(tmp_path: Path):
    root = make_tree(tmp_path / "d", {"s": []}, n=3, size=32)
    (root / "s" / "0_real" / "bad.png").write_bytes(b"nope")
    samples = find_samples(root)
    ds = AugmentedDataset(samples, training_augment(True, crop_size=CROP, load_size=LOAD), seed=3)
    x0, label, idx = ds[(1, 0)]
    assert x0.shape == (3, CROP, CROP) and x0.dtype == torch.uint8 and idx == 1
    assert torch.equal(ds[(1, 0)][0], x0) and not torch.equal(ds[(1, 5)][0], x0)
    bad = [i for i, s in enumerate(samples) if s.path.endswith("bad.png")][0]
    assert ds[(bad, 0)][0] is None and "Error" in ds[(bad, 0)][2]


def test_epoch_batches_cover_each_image_once():
    single = epoch_batches(23, 8, seed=1, epoch=4)
    ranks = [epoch_batches(23, 8, seed=1, epoch=4, rank=r, world=3) for r in range(3)]
    assert len({len(b) for b in ranks}) == 1 and len(ranks[0]) == len(single) == 3
    flat = sorted(i for b in ranks for batch in b for i, _ in batch)
    assert flat == list(range(23))
    for g, batch in enumerate(single):
        assert sorted(batch) == sorted(x for r in ranks for x in r[g])
    assert epoch_batches(23, 8, 1, 5) != single
    assert epoch_batches(23, 8, 1, 4, skip=1) == single[1:]


def test_early_stopping_rule():
    es = EarlyStopping(patience=2, delta=0.001)
    assert [es.update(a) for a in (0.5, 0.6, 0.6005, 0.6, 0.7)] == [False, False, False, True, False]


def test_init_weights_reinitialise_the_head(tmp_path: Path):
    imagenet = tiny_resnet()
    imagenet.fc = torch.nn.Linear(128, 1000)
    sd = {k: v for k, v in imagenet.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "imagenet.pth")
    model = build_detector("tiny_resnet")
    rep = load_init_weights(model, tmp_path / "imagenet.pth")
    n_tracked = sum(k.endswith("num_batches_tracked") for k in model.state_dict())
    assert rep["reinitialised"] == ["fc.bias", "fc.weight"] and rep["loaded"] == rep["total"] - 2 - n_tracked
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight) and model.fc.weight.shape == (1, 128)
    assert model.fc.weight.std() < 0.05
    torch.save(build_detector("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        load_init_weights(build_detector("tiny_resnet"), tmp_path / "r18.pth")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_tree(root / "train", {"a": ["x"], "b": []}, n=8, size=LOAD, seed=0)
    make_tree(root / "val", {"v": []}, n=8, size=LOAD, seed=1)
    (root / "train" / "b" / "1_fake" / "zz_broken.png").write_bytes(b"not a png")
    return root


def _kw(data: Path, **extra) -> dict:
    kw = dict(arch="tiny_resnet", data=data / "train", val=data / "val", crop_size=CROP, load_size=LOAD,
              batch_size=8, lr=2e-3, device="cpu", workers=1, progress=False)
    return {**kw, **extra}


def train_detector(*, data: Path, val: Path, out: Path, **options) -> dict:
    """tff train's Python API with the options as keywords."""
    return train(data, val, options=TrainOptions(**options), out=out)


def test_tiny_run_learns_and_evaluate_loads_it(tmp_path: Path, data: Path):
    out = tmp_path / "run"
    res = train_detector(out=out, max_epochs=5, blur_prob=0.0, jpeg_prob=0.0, **_kw(data))
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2, 3, 4] and res["stopped"] == "max_epochs"
    assert {"lr", "train_loss", "val_loss", "val_acc", "val_ap", "images_per_s", "time_s"} <= set(hist.columns)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert (hist["n_seen"] == 32).all() and (hist["n_skipped"] == 1).all() and (hist["n_val"] == 16).all()
    assert len(res["skipped"]) == 1 and res["skipped"][0].endswith("zz_broken.png")
    assert res["best"]["val_acc"] == hist["val_acc"].max()
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "train" and run["stopped"] == "max_epochs" and run["init"] is None
    best = torch.load(out / "model_best.pth")  # torch ≥ 2.6 default: weights_only=True, no pickled objects inside
    assert set(torch.load(out / "model_last.pth")) >= {"model", "optimizer", "rng", "partial", "progress"}
    assert set(best) >= {"model", "epoch"} and best["epoch"] == res["best"]["epoch"]
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(out / "model_best.pth"), "--data",
               str(data / "val"), "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress",
               "--out", str(tmp_path / "ev")])
    assert rc == 0 and len(pd.read_csv(tmp_path / "ev" / "scores.csv")) == 16
    with pytest.raises(ValueError, match="--resume"):
        train_detector(out=out, max_epochs=1, **_kw(data))


def test_killed_run_resumes_to_the_same_state(tmp_path: Path, data: Path):
    kw = _kw(data, patience=1, color_robust=True)
    straight = train_detector(out=tmp_path / "a", max_epochs=3, **kw)
    stopped = train_detector(out=tmp_path / "b", max_steps=6, **kw)  # killed mid-epoch 1 (5 steps/epoch)
    assert stopped["stopped"] == "max_steps" and stopped["steps"] == 6
    train_detector(out=tmp_path / "b", max_epochs=2, resume=True, **kw)  # stopped again at an epoch boundary
    with pytest.raises(ValueError, match="other settings"):
        train_detector(out=tmp_path / "b", max_epochs=3, resume=True, **{**kw, "seed": 1})
    resumed = train_detector(out=tmp_path / "b", max_epochs=3, resume=True, **kw)
    a = torch.load(tmp_path / "a" / "model_last.pth", weights_only=True)  # resumable state is weights_only-safe
    b = torch.load(tmp_path / "b" / "model_last.pth", weights_only=True)
    for k, v in a["model"].items():
        assert torch.allclose(v.double(), b["model"][k].double(), atol=1e-6, rtol=0), k
    for s1, s2 in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.allclose(s1["exp_avg_sq"], s2["exp_avg_sq"], atol=1e-9) and torch.equal(s1["step"], s2["step"])
    assert a["progress"]["es"] == b["progress"]["es"] and a["progress"]["step"] == b["progress"]["step"] == 15
    cols = ["epoch", "lr", "train_loss", "val_loss", "val_acc", "seen_sha1", "n_seen"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "history.csv")[cols],
                                  pd.read_csv(tmp_path / "b" / "history.csv")[cols], rtol=1e-6)
    assert resumed["final"]["lr"] == straight["final"]["lr"] and resumed["resumed"]


def test_torchrun_two_processes_cover_the_same_images(tmp_path: Path, data: Path):
    common = ["--arch", "tiny_resnet", "--data", str(data / "train"), "--val", str(data / "val"), "--crop-size",
              str(CROP), "--load-size", str(LOAD), "--batch-size", "8", "--max-epochs", "2", "--device", "cpu",
              "--no-progress", "--lr", "1e-3"]
    assert main(["train", *common, "--workers", "1", "--out", str(tmp_path / "one")]) == 0
    run_torchrun(["train", *common, "--workers", "0", "--out", str(tmp_path / "two")])  # on a free port
    one, two = pd.read_csv(tmp_path / "one" / "history.csv"), pd.read_csv(tmp_path / "two" / "history.csv")
    for col in ("n_seen", "n_skipped", "seen_sha1", "steps", "n_val"):
        assert list(one[col]) == list(two[col]), col
    # 33 files / 8 = 5 global steps; the last holds one image, so one rank's share is empty
    assert list(two["n_seen"]) == [32, 32] and list(two["steps"]) == [5, 10]
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2 and run["ranks_in_sync"]
    # validation under torchrun is exact: one process re-validating model_last gives the same numbers
    options = TrainOptions(arch="tiny_resnet", crop_size=CROP, load_size=LOAD, batch_size=8, workers=0, progress=False)
    tr = Trainer(options, tdist.init("cpu"), data / "train", data / "val")
    tr.net.load_state_dict(torch.load(tmp_path / "two" / "model_last.pth", weights_only=True)["model"])
    v = tr.validate()
    assert v["n_val"] == 16 and abs(v["val_loss"] - two["val_loss"].iloc[-1]) < 1e-5
    assert v["val_acc"] == two["val_acc"].iloc[-1]
