"""Recent zoo entries (Rajan et al., DEAR-c/-r, B-Free, Community Forensics): full-size key layouts equal the
originals' (timm's own models where the original uses timm), random weights saved in each original container load
back strictly, B-Free's masked token crops equal five separate crops, DEAR's gate zeroes exactly its gated channels,
and the analyses run on each @tiny variant (docs/detectors.md)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import hypergeom

from conftest import make_tree
from test_zoo import resnet_keys, run_analysis
from tffkit.analysis.gate import gate_units, gate_vs_ranking
from tffkit.cli import main
from tffkit.detectors import ZOO, CheckpointReadError, build_detector, load_detector

RECENT = ["rajan2025", "dear_c", "dear_r", "bfree2025", "commfor2025", "commfor2025_224"]


def _meta(name: str) -> dict[str, tuple]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_detector(name).state_dict().items()}


def _timm_meta(name: str, **kwargs) -> dict[str, tuple]:
    import timm

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in timm.create_model(name, num_classes=1, **kwargs).state_dict().items()}


def test_full_size_layouts_match_the_originals():
    rajan = _meta("rajan2025")
    assert set(rajan) == resnet_keys((3, 4, 6, 3)) and rajan["fc.weight"] == (1, 2048)
    for name in ("dear_c", "dear_r"):
        dear = _meta(name)
        assert set(dear) == {f"backbone.{k}" for k in resnet_keys((3, 4, 6, 3))} | {"gate.gate"}
        assert dear["gate.gate"] == (2048,) and dear["backbone.conv1.weight"] == (64, 3, 7, 7)
    # B-Free: timm's DINOv2-register ViT-B/14 resized to 504 px (set_input_size(504) in the original)
    assert _meta("bfree2025") == _timm_meta("vit_base_patch14_reg4_dinov2", img_size=504)
    assert _meta("bfree2025")["pos_embed"] == (1, 1296, 768) and _meta("bfree2025")["reg_token"] == (1, 4, 768)
    for name, timm_name, tokens in (("commfor2025", "vit_small_patch16_384", 577),
                                    ("commfor2025_224", "vit_small_patch16_224", 197)):
        cf = _meta(name)
        assert cf == {f"vit.{k}": v for k, v in _timm_meta(timm_name).items()}
        assert cf["vit.head.weight"] == (1, 384) and cf["vit.pos_embed"] == (1, tokens, 384)


def save_original(name: str, raw: torch.nn.Module, folder: Path) -> Path:
    """``raw``'s weights in the original repository's container; returns what --weights takes."""
    sd = {k: v.detach().clone() for k, v in raw.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    if name == "rajan2025":  # DataParallel training (AlignedForensics load_weights strips 'module.')
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, folder / "weights.pth")
        return folder / "weights.pth"
    if name.startswith(("dear", "bfree")):
        torch.save({"model": sd}, folder / "model_best.pth")
        return folder / "model_best.pth"
    from safetensors.torch import save_file  # PyTorchModelHubMixin.save_pretrained: a snapshot folder

    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_size": "small", "input_size": 384, "patch_size": 16}))
    return folder


@pytest.mark.parametrize("name", RECENT)
def test_original_layout_loads_strictly(tmp_path: Path, name: str):
    torch.manual_seed(0)
    raw = build_detector(f"{name}@tiny").eval()
    for p in raw.parameters():  # layer-scale γ starts constant: give every tensor its own values
        p.data.normal_(0, 0.1)
    if name.startswith("dear"):  # a gate the freshly built model does not have, so loading must set it
        raw.gate.gate.copy_(1 - raw.gate.gate)
    model = load_detector(f"{name}@tiny", save_original(name, raw, tmp_path))
    assert model.tff_preprocessing == ZOO[name].preprocessing
    x = torch.randn(2, *model.tff_input_shape)
    with torch.no_grad():
        assert torch.equal(model(x).reshape(-1), raw(x).reshape(-1))
    got = dict(model.state_dict())
    assert all(torch.equal(got[k], v) for k, v in raw.state_dict().items())


def test_a_folder_without_weights_is_refused(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointReadError, match="model.safetensors"):
        load_detector("commfor2025@tiny", tmp_path)


def five_crops_separately(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """B-Free as its repository runs it (Wrapper5crops): tile the token grid, five crops stacked in the batch, timm's
    ViT forward on each, the logits averaged — written here with plain indexing."""
    grid = model.patch_embed.grid_size
    emb = model.patch_embed.proj(x)
    if emb.shape[-2] < grid[0] or emb.shape[-1] < grid[1]:
        reps = [max(-(-g // s), 1) for g, s in zip(grid, emb.shape[-2:], strict=True)]
        emb = emb.repeat(1, 1, *reps)[..., :grid[0], :grid[1]]
    h, w = emb.shape[-2:]
    hs, ws = max((h - grid[0]) // 2, 0), max((w - grid[1]) // 2, 0)
    crops = [emb[..., hs:hs + grid[0], ws:ws + grid[1]], emb[..., :grid[0], :grid[1]], emb[..., -grid[0]:, :grid[1]],
             emb[..., -grid[0]:, -grid[1]:], emb[..., :grid[0], -grid[1]:]]
    tokens = torch.cat(crops, 0).flatten(2).transpose(1, 2)
    z = model.norm(model.blocks(model._pos_embed(tokens)))
    y = model.forward_head(z)
    return y.reshape(5, len(x), -1).mean(0)


@pytest.mark.parametrize("size", [(40, 90), (56, 56), (100, 71), (20, 20)])
def test_bfree_masked_crops_equal_five_separate_crops(size):
    torch.manual_seed(0)
    model = build_detector("bfree2025@tiny").eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(model(x), five_crops_separately(model, x), atol=1e-5)
        assert torch.allclose(model(x)[1], model(x[1:])[0], atol=1e-6)  # crops of one image see no other image


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("recent") / "d", {"progan": [], "stylegan": []}, n=2, size=32)


def test_dear_gate_zeroes_exactly_its_gated_channels(tmp_path: Path, tree: Path):
    torch.manual_seed(0)
    model = load_detector("dear_c@tiny", random_weights=True)
    gate = model.gate.gate
    assert 0 < int(gate.sum()) < gate.numel() and set(gate.tolist()) == {0.0, 1.0}
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        feats = model.features(x)
        gated = model.gate(feats)
    assert (feats[:, gate == 0] != 0).any()  # the pruned channels are active before the gate
    assert torch.equal(gated[:, gate == 0], torch.zeros_like(gated[:, gate == 0]))
    assert torch.equal(gated[:, gate == 1], feats[:, gate == 1])
    # FF-RS through the gate: the last block's conv3 channel c reaches the logit only through gate c
    units = gate_units(model)
    assert list(units["gate"]) == gate.int().tolist() and units["layer"].iloc[0] == "backbone.layer4.0.conv3"
    assert main(["rank", "--arch", "dear_c@tiny", "--random-weights", "--data", str(tree), "--min-prob", "0",
                 "--k", "3", "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    ranking = pd.read_csv(tmp_path / "r" / "ffrs.csv")
    last = ranking[ranking["layer"] == units["layer"].iloc[0]].set_index("channel").loc[units["channel"]]
    assert (last["omega"].to_numpy()[units["gate"] == 0] == 0).all()
    assert (last["omega"].to_numpy()[units["gate"] == 1] > 0).any()
    assert set(units["key"]) <= set(ranking["key"])


def test_gate_vs_ranking_counts_and_hypergeometric_tail():
    gate = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
    ranking = pd.DataFrame({"layer": "L", "channel": np.arange(10),
                            "omega": [0.9, 0.8, 0.7, 0.1, 0.6, 0.0, 0.2, 0.3, 0.05, 0.5]})
    out = gate_vs_ranking(ranking, gate, layer="L", k=4)  # top-4: channels 0, 1, 2, 4 → 3 kept
    assert out["kept_in_top_k"] == 3 and out["kept"] == 5 and out["expected"] == pytest.approx(2.0)
    by_count = sum(hypergeom.pmf(i, 10, 5, 4) for i in (3, 4))
    assert out["p_enriched"] == pytest.approx(by_count) and out["p_depleted"] == pytest.approx(1 - hypergeom.pmf(4, 10,
                                                                                                               5, 4))
    with pytest.raises(ValueError, match="units of layer"):
        gate_vs_ranking(ranking, gate[:5], layer="L", k=2)


def test_tff_detectors_lists_the_recent_entries(capsys):
    assert main(["detectors", "--json"]) == 0
    listing = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    for name in RECENT:
        e = listing[name]
        assert e["paper"] and e["backbone"] and e["preprocessing"] and e["files"] and e["layout"] and e["licence"]
        assert {"rank", "dropout", "faithfulness", "color", "explain"} <= set(e["verified"])
    assert "research" in listing["bfree2025"]["licence"] and "gate_units" in listing["dear_c"]["notes"]
    assert "safetensors" in listing["commfor2025"]["layout"]


@pytest.mark.parametrize("name", ["rajan2025", "dear_r", "bfree2025"])
def test_rank_runs_on_each_tiny_entry(tmp_path: Path, tree: Path, name: str):
    assert run_analysis("rank", f"{name}@tiny", tmp_path, tree, None) == 0
    ranking = pd.read_csv(tmp_path / "rank" / "ffrs.csv")
    assert np.isfinite(ranking["omega"]).all() and len(ranking) == ranking["key"].nunique()


def _faithfulness(arch: str, folder: Path, tree: Path) -> int:
    return main(["faithfulness", "--arch", arch, "--random-weights", "--data", str(tree), "--source", str(tree),
                 "--device", "cpu", "--workers", "0", "--no-progress", "--batch-size", "4", "--min-prob", "0",
                 "--k", "1", "2", "--random-repeats", "2", "--randomise", "1.0", "--top-k", "2",
                 "--out", str(folder / "faithfulness")])


@pytest.mark.tier2
@pytest.mark.parametrize("name", RECENT)
def test_every_verified_analysis_runs(tmp_path: Path, tree: Path, name: str):
    """What `tff detectors` lists as verified: each analysis end to end on the @tiny entry (random weights)."""
    arch = f"{name}@tiny"
    for analysis in ("evaluate", "rank", "dropout", "lrpmax", "color", "explain"):
        assert run_analysis(analysis, arch, tmp_path, tree, tmp_path / "rank" / "ffrs.csv") == 0, analysis
    assert _faithfulness(arch, tmp_path, tree) == 0


def test_evaluate_reads_a_snapshot_folder_with_the_original_transform(tmp_path: Path):
    """`tff evaluate --weights FOLDER` on Community Forensics: scores equal the model on its repository's test
    transform (torchvision Resize(440), CenterCrop(384), ToTensor, ImageNet Normalize)."""
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    for label, size in (("0_real", (61, 45)), ("1_fake", (45, 70))):
        (tmp_path / "d" / "s" / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "d" / "s" / label / "a.png")
    torch.manual_seed(0)
    raw = build_detector("commfor2025@tiny").eval()
    folder = save_original("commfor2025", raw, tmp_path / "commfor-model-384")
    assert main(["evaluate", "--arch", "commfor2025@tiny", "--weights", str(folder), "--data", str(tmp_path / "d"),
                 "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    scores = pd.read_csv(tmp_path / "o" / "scores.csv")
    original = transforms.Compose([transforms.Resize(440), transforms.CenterCrop(384), transforms.ToTensor(),
                                   transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    for path, logit in zip(scores["path"], scores["logit"], strict=True):
        with torch.no_grad():
            expected = float(raw(original(Image.open(path).convert("RGB"))[None]))
        assert logit == pytest.approx(expected, rel=1e-4, abs=1e-5)


def _explain_full_size(name: str, size: int, device: str) -> None:
    from tffkit.lrp import Explainer

    torch.manual_seed(0)
    model = load_detector(name, random_weights=True, device=device)
    x = torch.randn(1, 3, size, size, device=device)
    e = Explainer(model).explain(x)
    with torch.no_grad():
        assert torch.allclose(e.logits.reshape(-1), model(x).reshape(-1), atol=1e-4)
    assert torch.isfinite(e.input_relevance).all()


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("rajan2025", 64), ("dear_r", 64), ("commfor2025", 384)])
def test_full_size_entry_is_explained(name: str, size: int):
    """The full-size graphs: the LRP copy's logits equal the detector's and relevance is finite (one image)."""
    _explain_full_size(name, size, "cpu")


@pytest.mark.gpu
def test_full_size_bfree_is_explained_on_a_gpu():
    """Full-size B-Free: 5 × 1301 tokens with the crop mask (on the 2-core CPU machine, stopped above 15 GB)."""
    _explain_full_size("bfree2025", 504, "cuda")
