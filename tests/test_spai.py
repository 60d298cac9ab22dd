"""SPAI (spai2025): the released key layout and container load strictly; the FFT band split equals a dense DFT;
the logits equal an independent per-patch implementation of the original's forward (its padding, patches or five
crops, one ViT pass per patch and band, spectral context attention); the LRP rules of its new operations in matrix
form; the relevance per frequency band; the analyses end to end on @tiny (docs/detectors.md, docs/lrp.md)."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import five_crop

from conftest import make_tree
from test_zoo import run_analysis
from tffkit.analysis.bands import band_relevance, relevance_branches
from tffkit.cli import main
from tffkit.detectors import ZOO, CheckpointMismatchError, build_detector, load_detector
from tffkit.detectors.spai import circular_mask, cosine, high_pass, imagenet_normalize, low_pass, token_std
from tffkit.lrp import Explainer
from tffkit.lrp.kinds import LRPOp
from tffkit.lrp.registry import DEFAULT, Epsilon
from tffkit.lrp.similarity import Cosine

EPS = 1e-6
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


def randomised(seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_detector("spai2025@tiny").eval().to(dtype)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    return model


# --- the released layout ------------------------------------------------------------------------------------------

def test_full_size_layout_is_the_released_one():
    with torch.device("meta"):
        sd = {k: tuple(v.shape) for k, v in build_detector("spai2025").state_dict().items()}
    # 13 BEiT blocks (12 + the unused cls block) × 13 tensors, 34 other ViT tensors, 12 projectors × 8, the
    # original-image branch 13, the mask, and 11 of the attention and head
    assert len(sd) == 13 * 13 + 34 + 12 * 8 + 13 + 1 + 11
    expected = {"mfvit.frequencies_mask": (224, 224), "mfvit.vit.pos_embed": (1, 197, 768),
                "mfvit.vit.patch_embed.proj.weight": (768, 3, 16, 16), "mfvit.vit.blocks.11.attn.q_bias": (768,),
                "mfvit.vit.blocks.0.attn.qkv.weight": (2304, 768), "mfvit.vit.head.weight": (2, 9216),
                "mfvit.vit.intermediate_fc_norm.11.bias": (768,), "mfvit.vit.cls_blocks.0.mlp.fc1.weight": (3072, 768),
                "mfvit.features_processor.patch_projector.projectors.11.projector.4.weight": (1024, 1024),
                "mfvit.features_processor.patch_projector.projectors.0.norm1.weight": (768,),
                "mfvit.features_processor.original_features_processor.alpha": (1, 12, 1024),
                "mfvit.features_processor.original_features_processor.proj1.projector.1.weight": (1024, 2048),
                "to_kv.weight": (3072, 1096), "patch_aggregator": (12, 1, 128), "to_out.0.weight": (1096, 1536),
                "norm.weight": (1096,), "cls_head.head.0.weight": (3288, 1096), "cls_head.head.6.weight": (1, 3288)}
    assert {k: sd[k] for k in expected} == expected
    assert "mfvit.vit.blocks.0.attn.qkv.bias" not in sd and "mfvit.vit.blocks.0.gamma_1" not in sd


def test_released_container_loads_strictly(tmp_path: Path):
    raw = randomised(dtype=torch.float32)
    sd = {k: v.clone() for k, v in raw.state_dict().items()}
    assert sd["mfvit.frequencies_mask"].dtype == torch.int64
    torch.save({"model": sd}, tmp_path / "spai.pth")
    model = load_detector("spai2025@tiny", tmp_path / "spai.pth")
    assert model.tff_preprocessing == ZOO["spai2025"].preprocessing
    x = torch.rand(2, 3, 40, 70)
    with torch.no_grad():
        assert torch.equal(model(x), raw(x))
    del sd["mfvit.frequencies_mask"]
    torch.save({"model": sd}, tmp_path / "no_mask.pth")
    with pytest.raises(CheckpointMismatchError, match="frequencies_mask"):
        load_detector("spai2025@tiny", tmp_path / "no_mask.pth")


# --- the spectral filter and the whole forward against independent code -------------------------------------------

def dense_bands(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low and high band of an (H, W) image with dense DFT matrices; the mask is read in the centre-shifted
    spectrum (frequency k sits at index (k + N/2) mod N)."""
    h, w = x.shape
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    fw = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w)
    spectrum = fh @ x @ fw.T
    unshifted = mask[np.ix_((np.arange(h) + h // 2) % h, (np.arange(w) + w // 2) % w)]
    back = [np.real(fh.conj() @ (m * spectrum) @ fw.conj().T) / (h * w) for m in (unshifted, 1 - unshifted)]
    return back[0], back[1]


def test_mask_and_bands_equal_the_dense_dft():
    size, radius = 16, 4
    coords = np.abs(np.arange(size) - (size - 1) / 2) - 0.5  # [s/2−1, …, 0, 0, …, s/2−1]
    mask = (np.hypot(coords[None, :], coords[:, None]) < radius).astype(np.int64)
    assert np.array_equal(circular_mask(size, radius).numpy(), mask)
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    low, high = low_pass(x, torch.from_numpy(mask)), high_pass(x, torch.from_numpy(mask))
    ref_low, ref_high = dense_bands(x[1, 2].numpy(), mask)
    assert np.allclose(low[1, 2].numpy(), ref_low, atol=1e-12) and np.allclose(high[1, 2].numpy(), ref_high, atol=1e-12)
    assert torch.allclose(low + high, x, atol=1e-12)


def reference_patch(model, patch: torch.Tensor) -> torch.Tensor:
    """The original's MFViT on one (3, P, P) patch: bands by the dense DFT, three separate ViT passes."""
    mfvit, vit = model.mfvit, model.mfvit.vit
    mask = mfvit.frequencies_mask.numpy()
    bands = [patch] + [torch.from_numpy(np.stack([dense_bands(c.numpy(), mask)[i] for c in patch])).clamp(0, 1)
                       for i in (0, 1)]
    tokens = []
    for band in bands:
        t = F.conv2d(((band - IMAGENET[0][:, None, None]) / IMAGENET[1][:, None, None])[None],
                     vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=vit.patch_embed.proj.stride)
        t = torch.cat([vit.cls_token[0], t.flatten(2)[0].T]) + vit.pos_embed[0]
        per_block = []
        for blk in vit.blocks:
            h, a = blk.norm1(t), blk.attn
            qkv = h @ a.qkv.weight.T + torch.cat([a.q_bias, torch.zeros_like(a.v_bias), a.v_bias])
            q, k, v = (z.reshape(len(t), a.heads, -1).transpose(0, 1) for z in qkv.chunk(3, -1))
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1)
            t = t + a.proj((att @ v).transpose(0, 1).reshape(len(t), -1))
            t = t + blk.mlp(blk.norm2(t))
            per_block.append(t[1:])
        tokens.append(per_block)
    fre = mfvit.features_processor
    sims = [[], [], [], [], [], []]
    origs = []
    for i, proj in enumerate(fre.patch_projector.projectors):
        o, lo, hi = (proj(tokens[b][i]) for b in range(3))
        for j, (a, b) in enumerate(((o, lo), (o, hi), (lo, hi))):
            s = F.cosine_similarity(a, b, dim=-1)
            sims[2 * j].append(s.mean())
            sims[2 * j + 1].append(s.std())
        origs.append(torch.cat([o.mean(0), o.std(0)]))
    op = fre.original_features_processor
    mixed = (torch.softmax(op.alpha[0], 0) * op.proj1(torch.stack(origs))).sum(0)
    return torch.cat([torch.stack([v for s in sims for v in s]), op.proj2(mixed)])


def reference_logit(model, img: torch.Tensor) -> float:
    """The original's PatchBasedMFViT on one (3, H, W) image in [0, 1]: PadIfNeeded (OpenCV reflect-101), patchify by
    unfold, five_crop below the minimum, spectral context attention by explicit matrices."""
    size = model.img_size
    h, w = img.shape[1:]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        arr = cv2.copyMakeBorder(img.permute(1, 2, 0).numpy(), ph // 2, ph - ph // 2, pw // 2, pw - pw // 2,
                                 cv2.BORDER_REFLECT_101)
        img = torch.from_numpy(arr).permute(2, 0, 1)
    patches = img[None].unfold(2, size, size).unfold(3, size, size).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, size, size)
    if len(patches) < model.minimum_patches:
        patches = torch.stack(five_crop(img, [size, size]))
    x = torch.stack([reference_patch(model, p) for p in patches])  # (L, features)
    k, v = (z.reshape(len(x), model.heads, -1).transpose(0, 1) for z in (x @ model.to_kv.weight.T).chunk(2, -1))
    q = model.patch_aggregator  # (heads, 1, d)
    att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1)
    out = model.to_out[0]((att @ v).reshape(-1))
    return float(model.cls_head(model.norm(out)))


@pytest.mark.parametrize("size", [(70, 96)])  # 2 × 3 patches, remainder cut (padding: the evaluate test)
def test_logits_equal_the_per_patch_reference(size):
    model = randomised()
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        got = model(x).reshape(-1)
        assert got.tolist() == pytest.approx([reference_logit(model, img) for img in x], rel=1e-7)
        assert torch.allclose(model(x[1:]).reshape(-1), got[1:], atol=1e-12)  # an image sees no other image


# --- LRP rules of the new operations (matrix form, float64) -------------------------------------------------------

def lrp_of(op: LRPOp, args: list, rel: torch.Tensor) -> tuple[torch.Tensor, ...]:
    live = [a.clone().requires_grad_(True) if i in op.keys else a for i, a in enumerate(args)]
    return torch.autograd.grad(op(*live), [live[i] for i in op.keys], rel)


def test_band_filter_rule_is_the_epsilon_rule_of_its_matrix():
    torch.manual_seed(0)
    mask = circular_mask(8, 2)
    x, rel = torch.rand(8, 8, dtype=torch.float64) + 0.1, torch.randn(8, 8, dtype=torch.float64)
    for fn in (low_pass, high_pass):
        jac = fn(torch.eye(64, dtype=torch.float64).reshape(64, 8, 8), mask).reshape(64, 64).T  # column j: e_j
        z = jac @ x.reshape(-1)
        expected = x.reshape(-1) * (jac.T @ (rel.reshape(-1) / (z + EPS * torch.where(z >= 0, 1.0, -1.0))))
        (got,) = lrp_of(LRPOp(fn, Epsilon(), (0,), EPS), [x, mask], rel)
        assert torch.allclose(got.reshape(-1), expected, atol=1e-10)
        assert float(got.sum()) == pytest.approx(float(rel.sum()), rel=1e-4)


def test_clamp_and_normalisation_pass_relevance_unchanged():
    x, rel = torch.randn(1, 3, 4, 4, dtype=torch.float64), torch.randn(1, 3, 4, 4, dtype=torch.float64)
    clamp = DEFAULT.function_rule(torch.clamp)
    (got,) = lrp_of(LRPOp(lambda t: torch.clamp(t, 0.0, 1.0), clamp, (0,), EPS), [x], rel)
    assert clamp.activation and torch.equal(got, rel)  # clamped pixels included
    (got,) = lrp_of(LRPOp(imagenet_normalize, ZOO["spai2025"].build.tff_lrp_rules[imagenet_normalize], (0,), EPS),
                    [x], rel)
    assert torch.equal(got, rel)


def test_cosine_rule_holds_the_norms_constant_and_splits_products_uniformly():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5, 6, dtype=torch.float64), torch.randn(3, 5, 6, dtype=torch.float64)
    rel = torch.randn(3, 5, dtype=torch.float64)
    cos = F.cosine_similarity(a, b, dim=-1)
    terms = a * b / (a.norm(dim=-1) * b.norm(dim=-1))[..., None]  # Σ_d terms = cos
    share = (rel / (cos + EPS * torch.where(cos >= 0, 1.0, -1.0)))[..., None] * terms  # the ε-rule's shares
    ra, rb = lrp_of(LRPOp(cosine, Cosine(), (0, 1), EPS), [a, b], rel)
    assert torch.allclose(ra, share / 2, atol=1e-12) and torch.allclose(rb, share / 2, atol=1e-12)
    stabilised = cos + EPS * torch.where(cos >= 0, 1.0, -1.0)
    assert torch.allclose(ra.sum(-1) + rb.sum(-1), rel * cos / stabilised, atol=1e-12)  # conserved up to ε
    (ra,) = lrp_of(LRPOp(cosine, Cosine(), (0,), EPS), [a, b], rel)  # b constant: a receives everything
    assert torch.allclose(ra, share, atol=1e-12)


def test_std_rule_is_exactly_conservative():
    torch.manual_seed(0)
    x, rel = torch.randn(4, 7, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    m, s = x.mean(1, keepdim=True), x.std(1, keepdim=True)
    expected = x * (x - m) / ((x.shape[1] - 1) * s) * (rel[:, None] / (s + EPS))  # σ linear in x − m, weights fixed
    (got,) = lrp_of(LRPOp(token_std, Epsilon(), (0,), EPS), [x, 1], rel)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(got.sum(1), rel, atol=1e-5)


# --- relevance per frequency band ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def explained():
    model = randomised(seed=1)
    return model, Explainer(model)


def test_band_shares_add_up_to_the_input_relevance(explained):
    model, ex = explained
    branches = relevance_branches(model)
    assert set(branches) == {"original", "low", "high"}
    x = torch.rand(2, 3, 40, 70, dtype=torch.float64)
    found = band_relevance(ex, x, torch.tensor([1.0, -1.0], dtype=torch.float64), branches=branches)
    total = found["original"] + found["low"] + found["high"]
    assert all(bool((found[b] != 0).all()) for b in branches)
    assert torch.allclose(total, found["input"], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("band", [0, 1, 2])
def test_a_planted_band_receives_all_relevance(explained, band):
    """Relevance placed on one band's tokens (the first per-block projector's units, whose rows are (band, patch)
    sequences) reaches that band's branch only, and all of it the image."""
    model, ex = explained
    branches = relevance_branches(model)
    name = "mfvit.features_processor.patch_projector.projectors.0.projector.1"
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = {}
        handle = ex.model.get_submodule(name).register_forward_hook(lambda m, i, o: out.setdefault("o", o))
        ex.model(x)
        handle.remove()
    seed = torch.zeros_like(out["o"])
    patches = seed.shape[1] // 3
    seed[:, band * patches:(band + 1) * patches] = torch.randn_like(seed[:, :patches]).abs()
    from tffkit.analysis.bands import branch_relevance

    with branch_relevance(ex, branches) as found:
        rel = ex.explain_neurons(x, {name: seed})
    shares = {b: float(found[b][0]) for b in ("original", "low", "high")}
    planted = ("original", "low", "high")[band]
    assert all(v == 0.0 for b, v in shares.items() if b != planted) and shares[planted] != 0
    assert float(rel.sum()) == pytest.approx(shares[planted], rel=1e-4)


def test_every_unit_layer_has_one_row_per_image(explained):
    """Patches and bands stay in their image's row: each unit layer's output is (B, …), its heads included."""
    model, ex = explained
    shapes = {}

    def tap(layer, out) -> None:
        shapes[layer.name] = tuple(out.shape)
    ex.forward(torch.rand(3, 3, 70, 96, dtype=torch.float64), tap=tap)
    assert len(shapes) == len(ex.layers) and all(s[0] == 3 for s in shapes.values())
    kinds = {layer.name: layer.kind for layer in ex.layers}
    assert kinds["mfvit.vit.blocks.0.attn.heads"] == "head" and shapes["mfvit.vit.blocks.0.attn.heads"][1:3] == (2, 18)
    assert {"conv", "neuron", "residual", "head"} <= set(kinds.values())


# --- the analyses end to end ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("spai") / "d", {"progan": []}, n=1, size=32)


def test_tff_detectors_lists_spai(capsys):
    assert main(["detectors", "--json"]) == 0
    e = {d["name"]: d for d in json.loads(capsys.readouterr().out)}["spai2025"]
    assert "Apache-2.0" in e["licence"] and "frequencies_mask" in e["layout"] and "CVPR 2025" in e["paper"]
    assert {"evaluate", "rank", "dropout", "faithfulness", "color", "explain"} <= set(e["verified"])


def test_explain_reports_the_band_shares(tmp_path: Path, tree: Path):
    assert run_analysis("explain", "spai2025@tiny", tmp_path, tree, None) == 0
    table = pd.read_csv(tmp_path / "explain" / "explain.csv")
    shares = table[["share_original", "share_low", "share_high"]].sum(axis=1)
    assert len(table) == 2 and np.allclose(shares, 1.0)
    total = table[["relevance_original", "relevance_low", "relevance_high"]].sum(axis=1)
    assert np.allclose(total, table["lrp_sum"], rtol=1e-3, atol=1e-9)
    assert set(json.loads((tmp_path / "explain" / "explain.json").read_text())["mean_band_share"]) == {
        "original", "low", "high"}


def test_evaluate_scores_images_of_any_size_as_released(tmp_path: Path):
    """`tff evaluate` on images of two sizes (one per batch): logits equal the reference on x/255 (the original's
    A.Normalize(mean=0, std=1) and no resize)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, size in (("0_real", (45, 20)), ("1_fake", (70, 70))):
        (tmp_path / "d" / "s" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            tmp_path / "d" / "s" / label / f"{size[0]}.png")
    raw = randomised(dtype=torch.float32)
    torch.save({"model": raw.state_dict()}, tmp_path / "spai.pth")
    assert main(["evaluate", "--arch", "spai2025@tiny", "--weights", str(tmp_path / "spai.pth"), "--data",
                 str(tmp_path / "d"), "--device", "cpu", "--workers", "0", "--no-progress",
                 "--out", str(tmp_path / "o")]) == 0
    scores = pd.read_csv(tmp_path / "o" / "scores.csv")
    raw = raw.double()
    for path, logit in zip(scores["path"], scores["logit"], strict=True):
        img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255).permute(2, 0, 1)
        with torch.no_grad():
            assert logit == pytest.approx(reference_logit(raw, img), rel=1e-4, abs=1e-5)


def test_rank_runs_on_the_tiny_entry(tmp_path: Path, tree: Path):
    assert run_analysis("rank", "spai2025@tiny", tmp_path, tree, None) == 0
    ranking = pd.read_csv(tmp_path / "rank" / "ffrs.csv")
    assert np.isfinite(ranking["omega"]).all() and len(ranking) == ranking["key"].nunique()
    assert "mfvit.vit.blocks.0.attn.heads" in set(ranking["layer"])


@pytest.mark.tier2
def test_every_verified_analysis_runs(tmp_path: Path):
    from test_zoo_recent import _faithfulness

    tree = make_tree(tmp_path / "d", {"progan": [], "stylegan": []}, n=2, size=32)
    for analysis in ("evaluate", "rank", "dropout", "lrpmax", "color", "explain"):
        assert run_analysis(analysis, "spai2025@tiny", tmp_path, tree, tmp_path / "rank" / "ffrs.csv") == 0, analysis
    assert _faithfulness("spai2025@tiny", tmp_path, tree) == 0
