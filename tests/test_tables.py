"""Hugging Face tables (parquet / Arrow shards): labels, sets, groups and images read per row; memory bounded by
a row group, not by the table; a table without an image column refused in one line."""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import synth_image
from tffkit.cli import main
from tffkit.data import DatasetLayoutError, DataSpec, ImageDataset, discover
from tffkit.detectors import build_detector, save_checkpoint


def _png(seed: int, fake: bool) -> tuple[bytes, np.ndarray]:
    arr = synth_image(np.random.default_rng(seed), fake, 32)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue(), arr


def _hf_meta(features: dict) -> dict:
    return {"huggingface": json.dumps({"info": {"features": features}})}


@pytest.fixture
def hub_table(tmp_path: Path):
    """A Hub-style snapshot: data/test-0000{0,1}-of-00002.parquet, HF Image structs, ClassLabel ['fake', 'real']
    (0 is fake), model_name, prompt; the reals' model_name names no generator."""
    pixels = {}
    for shard in range(2):
        rows = []
        for i in range(6):
            fake = i % 2 == 0
            data, arr = _png(10 * shard + i, fake)
            rows.append({"image": {"bytes": data, "path": f"{i}.png"}, "label": 0 if fake else 1,
                         "model_name": (("sd", "gan")[shard] if fake else "coco"), "prompt": f"p{i // 2}"})
            pixels[(shard, i)] = (arr, len(data))
        table = pa.Table.from_pylist(rows).replace_schema_metadata(_hf_meta(
            {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["fake", "real"]},
             "model_name": {"_type": "Value", "dtype": "string"}}))
        (tmp_path / "hub" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path / "hub" / "data" / f"test-0000{shard}-of-00002.parquet", row_group_size=4)
    return tmp_path / "hub", pixels


def test_hub_parquet_labels_sets_groups_and_pixels(hub_table, tmp_path: Path):
    root, pixels = hub_table
    found = discover(root)
    assert found.layout == "table" and found.group_source == "table column"
    counts = {(s.set, s.label): 0 for s in found.samples}
    for s in found.samples:
        counts[(s.set, s.label)] += 1
    assert counts == {("sd", 1): 3, ("gan", 1): 3, ("sd", 0): 6, ("gan", 0): 6}  # the reals are shared by both
    assert any("6 real image(s) from coco (reals without fakes) are shared" in w for w in found.warnings)
    ds = ImageDataset(found.samples, preset="full")
    for i, s in enumerate(found.samples):
        shard, row = int(s.path.split("test-0000")[1][0]), int(s.path.rsplit("#", 1)[1])
        assert s.label == (row % 2 == 0) and s.group == f"p{row // 2}"  # ClassLabel index 0 is 'fake'
        image, _, info = ds[i]
        assert np.array_equal(image.permute(1, 2, 0).numpy(), pixels[(shard, row)][0])
        assert info["file_bytes"] == pixels[(shard, row)][1]
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    out = tmp_path / "o"
    assert main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(root), "--device", "cpu",
                 "--workers", "1", "--no-progress", "--out", str(out)]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 18 and scores["path"].str.match(r".*test-0000[01]-of-00002\.parquet#\d{9}$").all()
    assert set(scores["group"]) == {"p0", "p1", "p2"}
    assert json.loads((out / "run.json").read_text())["data_found"][0]["layout"] == "table"


def test_arrow_files_word_labels_splits_and_paths(tmp_path: Path):
    root = tmp_path / "saved"
    (root / "train").mkdir(parents=True)
    images = [_png(i, i % 2 == 1) for i in range(4)]
    table = pa.table({"image_data": [d for d, _ in images], "label": ["REAL", "Fake", "real", "FAKE"],
                      "split": ["test", "test", "train", "train"]})
    with pa.ipc.new_stream(root / "train" / "data-00000-of-00001.arrow", table.schema) as out:  # save_to_disk
        out.write_table(table, max_chunksize=3)
    with pa.ipc.new_file(root / "other.arrow", table.schema) as out:  # the IPC file format
        out.write_table(table)
    found = discover(root)
    assert found.layout == "table" and {s.set for s in found.samples} == {"saved"}  # no generator column
    assert [(s.label, s.path.rsplit("#", 1)[1]) for s in found.samples] == [
        (0, "000000000"), (0, "000000000"), (1, "000000001"), (1, "000000001")]
    assert any("using 'test'" in w for w in found.warnings)
    train = discover(DataSpec(str(root), split="train")).samples
    ds = ImageDataset(train, preset="full")
    assert [s.label for s in train] == [0, 0, 1, 1]
    assert all(np.array_equal(ds[i][0].permute(1, 2, 0).numpy(), images[int(s.path[-1])][1])
               for i, s in enumerate(train))
    hub = tmp_path / "hub"  # splits from file-name prefixes; HF's 'validation' is chosen like 'val'
    hub.mkdir()
    for split in ("train", "validation"):
        pq.write_table(table.drop_columns(["split"]), hub / f"{split}-00000-of-00001.parquet")
    found = discover(hub)
    assert {s.path.split(os.sep)[-1][:5] for s in found.samples} == {"valid"}
    assert any("using 'validation'" in w for w in found.warnings)
    # image paths instead of bytes (relative to the shard's folder), as a string column and in HF's struct
    Image.fromarray(images[0][1]).save(tmp_path / "a.png")
    Image.fromarray(images[1][1]).save(tmp_path / "b.png")
    pq.write_table(pa.table({"image": ["a.png", str(tmp_path / "b.png")], "label": [0, 1]}), tmp_path / "paths.parquet")
    pq.write_table(pa.table({"image": [{"bytes": None, "path": "a.png"}, {"bytes": None, "path": "b.png"}],
                             "target": [False, True]}), tmp_path / "structs.parquet")
    for name in ("paths.parquet", "structs.parquet"):
        found = discover(tmp_path / name)
        ds = ImageDataset(found.samples, preset="full")
        assert [s.label for s in found.samples] == [0, 1]
        assert np.array_equal(ds[1][0].permute(1, 2, 0).numpy(), images[1][1])


def test_bad_tables_are_refused_in_one_line(tmp_path: Path, capsys):
    pq.write_table(pa.table({"picture_id": [1, 2], "label": [0, 1]}), tmp_path / "noimage.parquet")
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(tmp_path / "noimage.parquet"),
               "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "noimage.parquet has no image column" in err and "'picture_id'" in err
    data = _png(0, False)[0]
    cases = {"nolabel": ({"image": [data]}, "has no label column"),
             "badlabel": ({"image": [data, data], "label": ["real", "maybe"]},
                          r"1 row\(s\) whose label is neither real nor fake: badlabel.parquet row 1 \('maybe'\)"),
             "numbers": ({"image": [1.5], "label": [0]}, "image column 'image' holds double")}
    for name, (columns, message) in cases.items():
        pq.write_table(pa.table(columns), tmp_path / f"{name}.parquet")
        with pytest.raises(DatasetLayoutError, match=message):
            discover(tmp_path / f"{name}.parquet")
    table = pa.table({"image": [data], "label": [0]}).replace_schema_metadata(
        _hf_meta({"label": {"_type": "ClassLabel", "names": ["dog", "cat"]}}))
    pq.write_table(table, tmp_path / "classes.parquet")
    with pytest.raises(DatasetLayoutError, match=r"class\(es\) \['dog', 'cat'\] of the ClassLabel column 'label'"):
        discover(tmp_path / "classes.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetLayoutError, match="table .*broken.parquet cannot be read"):
        discover(tmp_path / "broken.parquet")


MEASURE = """
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
from tffkit.data import ImageDataset, discover

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

found = discover(sys.argv[1])
dataset = ImageDataset(found.samples, preset="center224")
assert dataset[0][0] is not None  # imports and first allocations done: the baseline
pool, base, grown = pa.default_memory_pool(), rss(), 0
for _ in range(2):
    for i in range(len(dataset)):
        assert dataset[i][0] is not None
        grown = max(grown, rss() - base)
print(len(dataset), pool.max_memory(), grown)
whole = pq.read_table(sys.argv[1])  # what reading it whole costs: the same measurements see it
print(pool.max_memory(), rss() - base)
"""


def test_a_table_larger_than_the_memory_cap_streams(tmp_path: Path):
    """A 63 MB table, 16 rows per row group, read twice through the dataset: the Arrow memory pool's peak and the
    process's resident memory (after the first image, sampled after every image) stay below a 16 MB cap; reading
    the table whole raises both by more than its size."""
    cap = 16 << 20
    rng = np.random.default_rng(0)
    images = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, format="BMP")
        images.append(buf.getvalue())
    n = 320
    table = pa.table({"image": pa.array([{"bytes": images[i % 8], "path": None} for i in range(n)]),
                      "label": [i % 2 for i in range(n)], "generator": ["g"] * n})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=16, compression="none", use_dictionary=False)
    size = path.stat().st_size
    assert size > 3.5 * cap
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE), str(path)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.split("\n")[:2]
    count, pool_peak, rss_growth = map(int, first.split())
    assert count == n and pool_peak < cap and rss_growth < cap, (pool_peak, rss_growth)
    assert all(int(v) > size for v in second.split()), (second, size)  # the same measurements catch a whole read


def test_a_shard_with_a_non_utf8_name_is_read_and_written_escaped(tmp_path: Path):
    from tffkit.results import display_path

    data, arr = _png(3, True)
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/caf\xe9.parquet"  # Latin-1 bytes: not UTF-8
    pq.write_table(pa.table({"image": [data], "label": ["fake"]}), pa.OSFile(odd, "wb"))
    found = discover(folder)
    assert [s.label for s in found.samples] == [1]
    assert np.array_equal(ImageDataset(found.samples, preset="full")[0][0].permute(1, 2, 0).numpy(), arr)
    assert display_path(found.samples[0].path).endswith("caf\\xe9.parquet#000000000")
