"""Study: config validation, resume after interruption, report completeness (and rendering in Chromium)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tffkit.jobs import study as study_mod
from tffkit.jobs.study import ConfigError, load_config, run_study


def _config(tmp_path: Path, weights: Path, data: Path, **steps) -> dict:
    return {"name": "t", "out": str(tmp_path / "study"), "preset": "full", "device": "cpu", "workers": 0,
            "batch_size": 32, "detector": {"arch": "tiny_resnet", "weights": str(weights)},
            "data": {"source": str(data), "source_sets": ["progan"], "test": str(data), "train_set": ["progan"]},
            "steps": {"rank": {"min_prob": 0.5, "k": 8}, "dropout": {"k_sweep": [8], "random_repeats": 2},
                      "lrpmax": {"enabled": False}, "color": {"enabled": False}, **steps}}


def test_config_errors_name_the_field(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    cfg["batch_size"] = "big"
    cfg["detector"]["arch"] = "vgg99"
    cfg["data"]["test"] = str(tmp_path / "missing")
    cfg["steps"]["dropout"]["site"] = "somewhere"
    cfg["steps"]["faithfulness"] = {"enabled": True, "k_max": "many", "site": "nowhere"}
    cfg["steps"]["bogus"] = {}
    cfg["colour"] = 1
    cfg["uncertainty"] = {"resamples": 0, "bogus": 1}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    for field in ("batch_size: expected int", "detector.arch: unknown detector", "data.test:",
                  "steps.dropout.site", "steps.bogus: unknown step", "colour: unknown field",
                  "steps.faithfulness.k_max: expected int", "steps.faithfulness.site",
                  "uncertainty.resamples: must be at least 1", "uncertainty.bogus: unknown field"):
        assert field in msg, field
    with pytest.raises(ConfigError, match="out: required"):
        load_config({k: v for k, v in _config(tmp_path, weights, data).items() if k != "out"})


def test_config_reads_exponents_as_numbers(tmp_path: Path, trained_tiny):
    """PyYAML reads 1e-6 (no dot) as a string; a float field takes it as the number, a word stays an error."""
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data, faithfulness={"enabled": True, "lrp_epsilon": 1e-6})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg).replace("1.0e-06", "1e-6"))
    assert "lrp_epsilon: 1e-6" in path.read_text()
    assert load_config(path)["steps"]["faithfulness"]["lrp_epsilon"] == 1e-6
    cfg["steps"]["faithfulness"]["lrp_epsilon"] = "tiny"
    with pytest.raises(ConfigError, match="lrp_epsilon: expected float"):
        load_config(cfg)


def test_config_takes_detector_and_layout_options(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    cfg["detector"].pop("weights")
    with pytest.raises(ConfigError, match="detector.weights: required .*random_weights"):
        load_config(cfg)
    cfg["detector"].update(random_weights=True, arch="torchvision:resnet18", trust_checkpoint=True)
    cfg["data"].update(layout="genimage", real_dirs=["nature", "0_real"], fake_dirs="ai,1_fake", split="val",
                       small_images="pad")
    loaded = load_config(cfg)
    assert loaded["detector"]["random_weights"] and loaded["data"]["real_dirs"] == ["nature", "0_real"]
    cfg["data"]["layout"] = "zigzag"
    cfg["detector"]["arch"] = "python:no_such_module_q:build"
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "data.layout: 'zigzag' is not one of" in str(err.value)
    assert "detector.arch: python detector" in str(err.value)


def test_color_robust_training_takes_the_options_of_tff_train(tmp_path: Path, trained_tiny):
    """steps.color_robust.train: data, val and tff train's options (TrainOptions' fields, their defaults); an unknown
    key or a bad value is one line naming it."""
    weights, data = trained_tiny
    train = {"data": str(data), "val": str(data), "max_epochs": 1, "lr": 1, "trust_init": True, "amp": "bf16"}
    cfg = _config(tmp_path, weights, data, color_robust={"enabled": True, "train": train})
    assert load_config(cfg)["steps"]["color_robust"]["train"] == train  # kept as given (the step's settings)
    cfg["steps"]["color_robust"]["train"] = {**train, "epochs": 3, "amp": "fp8"}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    lines = str(err.value).splitlines()
    assert any(line.strip().startswith("steps.color_robust.train.epochs: unknown field (known: data, val, arch")
               for line in lines)
    assert any("steps.color_robust.train.amp: 'fp8' is not one of" in line for line in lines)
    cfg["steps"]["color_robust"]["train"] = {"data": str(data), "max_epochs": 1, "device": "cpu"}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "steps.color_robust.train.val: required" in str(err.value)
    assert "steps.color_robust.train.device: unknown field" in str(err.value)  # the study's device trains


def test_a_study_loads_and_traces_its_detector_once(tmp_path: Path, trained_tiny, monkeypatch):
    """Every step of a study (evaluate, rank, dropout, lrpmax, color) shares one loaded detector and one traced
    explainer; outside a study each job loads its own."""
    import tffkit.jobs.runner as runner

    weights, data = trained_tiny
    loads, traces = [], []
    load, trace = runner.load_model, runner.explainer_for
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    monkeypatch.setattr(runner, "explainer_for", lambda *a, **k: traces.append(1) or trace(*a, **k))
    cfg = _config(tmp_path, weights, data, lrpmax={"k": 2, "per_tff": 1, "show": 1, "max_per_class": 2},
                  color={"k": 4, "max_per_class": 4})
    cfg["data"]["max_per_class"] = 4
    run_study(cfg, progress=False, report=False)
    status = json.loads((tmp_path / "study" / "study.json").read_text())["status"]
    assert list(status) == ["evaluate", "rank", "dropout", "lrpmax", "color", "card"]
    assert loads == ["tiny_resnet"] and traces == [1]  # the card step runs no model
    md = (tmp_path / "study" / "card" / "detector.md").read_text()
    for section in ("Identity", "Detection per generator", "Colour", "Robustness to perturbations",
                    "Top units (FF-RS)", "Explanation examples", "Explanation figures"):
        assert f"\n## {section}\n" in md, section
    assert "## Explanation examples\n\nLRP-max" in md and "(../lrpmax/overlays/" in md
    from tffkit.jobs.rank import RankOptions, rank

    rank(data, options=RankOptions(arch="tiny_resnet", weights=str(weights), min_prob=0.5, max_per_class=2,
                                   device="cpu", workers=0, progress=False))
    assert len(loads) == 2 and len(traces) == 2  # a job on its own: nothing is cached across calls


@pytest.mark.tier2  # a study run again and again (resumed, changed inputs)
def test_interrupted_study_resumes_without_recomputing(tmp_path: Path, trained_tiny, monkeypatch):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    calls = []
    original = study_mod.build_steps

    def counting_steps(c, progress=True):
        steps = original(c, False)
        for s in steps:
            run = s.run

            def wrapped(folder, run=run, name=s.name):
                calls.append(name)
                if name == "dropout" and calls.count("dropout") == 1:
                    raise KeyboardInterrupt("simulated interruption")
                run(folder)
            s.run = wrapped
        return steps

    monkeypatch.setattr(study_mod, "build_steps", counting_steps)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg)
    assert calls == ["evaluate", "rank", "dropout"]
    report = run_study(cfg)
    assert calls == ["evaluate", "rank", "dropout", "dropout", "card"]  # evaluate and rank were not recomputed
    run_study(cfg)
    assert calls.count("evaluate") == 1 and calls.count("dropout") == 2 and calls.count("card") == 1
    cfg["steps"]["dropout"]["random_repeats"] = 3  # changed settings → that step (and the card drawn from it) again
    run_study(cfg)
    assert calls.count("dropout") == 3 and calls.count("rank") == 1 and calls.count("card") == 2

    page = report.read_text()
    for section in ("Detectors", "Data", "Cross-model transfer", "Forensic feature relevance",
                    "Sensitivity assessment"):
        assert section in page, section
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 3
    assert "http://" not in page and "https://" not in page  # self-contained


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, trained_tiny) -> Path:
    """A study with every step enabled (the colour-robust step loads a given checkpoint)."""
    import torch

    from tffkit.generation.models import DCGANGenerator

    weights, data = trained_tiny
    tmp = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    torch.save(DCGANGenerator(8, 4).state_dict(), tmp / "dcgan.pth")
    cfg = _config(tmp, weights, data, lrpmax={"k": 3, "per_tff": 2, "show": 2},
                  color={"k": 8, "max_per_class": 8},
                  color_robust={"enabled": True, "weights": str(weights), "label": "CR"},
                  faithfulness={"enabled": True, "ks": [2, 8], "random_repeats": 2, "randomise": [1.0],
                                "min_prob": 0.5, "deletion_max_per_class": 3},
                  robustness={"enabled": True, "jpeg": [50], "resize": [], "blur": [2.0], "grayscale": False},
                  generator={"enabled": True, "images": 6, "percent": 10.0, "random_repeats": 2, "min_prob": 0.0,
                             "generators": [{"name": "dcgan", "kind": "dcgan", "weights": str(tmp / "dcgan.pth"),
                                             "near": ["main.12"]}]})
    cfg["detector"]["paper_detector"] = "wang2020_resnet50_blur_jpg_prob0.5"
    return run_study(cfg, progress=False)


@pytest.mark.tier2  # a full study run (every step)
def test_full_study_report_has_every_section(full_report: Path):
    page = full_report.read_text()
    for section in ("Detectors", "Data", "Cross-model transfer", "Forensic feature relevance",
                    "Sensitivity assessment", "What the T-FF detect", "Colour ablation", "Colour-robust detector",
                    "(paper)", "colour-conditional", "Where the traces come from in the generator",
                    "Does the ranking find what matters?", "FF-RS (ω): AOPC", "Robustness to perturbations"):
        assert section in page, section
    for step in ("evaluate", "robustness", "rank", "dropout", "faithfulness", "lrpmax", "color", "color_robust",
                 "generator"):
        marker = json.loads((full_report.parent / step / ".step.json").read_text())
        assert all((full_report.parent / step / f).is_file() for f in marker["files"])
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 8


@pytest.mark.tier2  # a full study run (every step)
def test_robustness_step_reuses_the_clean_scores_and_the_card_shows_it(full_report: Path):
    study = full_report.parent
    scores = pd.read_csv(study / "robustness" / "scores.csv")
    clean = scores[scores["perturbation"] == "none"].reset_index(drop=True)
    evaluated = pd.read_csv(study / "evaluate" / "scores.csv")
    assert clean[["path", "logit"]].equals(evaluated[["path", "logit"]])  # evaluate's pass, not a second one
    assert sorted(scores["perturbation"].unique()) == ["blur2", "jpeg50", "none"]
    verdicts = json.loads((study / "robustness" / "robustness.json").read_text())["asymmetry"]
    md = (study / "card" / "detector.md").read_text()  # the study's card step
    assert all(f"{v['perturbation']} (mean over sets): {v['verdict']}" in md for v in verdicts)


@pytest.mark.tier2  # a full study run (every step)
def test_the_card_step_draws_every_element_from_the_study_files(full_report: Path):
    """The card step's pages (both detectors) hold every element of a card, with the study files' numbers, and the
    report links them."""
    study = full_report.parent
    md = (study / "card" / "detector.md").read_text()
    sha = json.loads((study / "evaluate" / "run.json").read_text())["checkpoint_sha256"]
    assert f"| checkpoint SHA-256 | {sha} |" in md and "| preprocessing | " in md and "| licence of the" in md
    ci = pd.read_csv(study / "evaluate" / "metrics_ci.csv").set_index(["set", "metric"])
    for set_name in ("progan", "gan_b", "gan_c", "mean"):
        r = ci.loc[(set_name, "fake_acc")]
        assert f"{100 * r['estimate']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]" in md.split(
            f"| {set_name} |")[1].splitlines()[0]
    changes = pd.read_csv(study / "robustness" / "robustness.csv").set_index(["perturbation", "set", "metric"])
    r = changes.loc[("jpeg50", "mean", "fake_acc")]
    assert ("| jpeg50 | mean |" in md and f"(Δ {100 * r['change']:+.1f} [{100 * r['low']:+.1f}, "
            f"{100 * r['high']:+.1f}])" in md)
    ranking = pd.read_csv(study / "rank" / "ffrs.csv")
    top = ranking.iloc[0]
    assert f"| 1 | {top['layer']} | {top['channel']} | {top['omega']:.4f} |" in md
    index = pd.read_csv(study / "lrpmax" / "lrpmax_index.csv")
    examples = md.split("## Explanation examples")[1].split("\n## ")[0]
    assert examples.count("- [overlay of T-FF") == min(3, index["tff"].nunique())
    assert all((study / "card" / link).is_file() for link in re.findall(r"\]\((\.\./[^)]+)\)", md))
    cr = (study / "card" / "color_robust.md").read_text()
    assert cr.startswith("# Detector card: CR") and "## Top units (FF-RS)" in cr
    page = full_report.read_text()
    assert "href='card/detector.html'" in page and "href='card/color_robust.html'" in page


@pytest.mark.tier2  # a full study run (every step)
def test_faithfulness_step_deletes_on_its_own_share_of_the_test_images(full_report: Path):
    run = json.loads((full_report.parent / "faithfulness" / "run.json").read_text())
    scored = pd.read_csv(full_report.parent / "evaluate" / "scores.csv")
    assert run["args"]["max_per_class"] == 3 and scored.groupby(["set", "label"]).size().min() > 3


@pytest.mark.tier2  # a full study run (every step)
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_report_figures_load_in_chromium(tmp_path: Path, full_report: Path):
    """As a reader sees it at 1400 px: every figure loads and no table is wider than the page (nothing cut off)."""
    probe = tmp_path / "probe.html"
    page = full_report.read_text().replace(
        "</body>", "<script>window.onload=()=>{const bad=[...document.images].filter(i=>!i.complete||"
                   "i.naturalWidth===0).length;const page=document.body.clientWidth;"
                   "const wide=[...document.querySelectorAll('details')].forEach(d=>d.open=true)||"
                   "[...document.querySelectorAll('table')].filter(t=>t.getBoundingClientRect().width>page+1);"
                   "document.title='IMAGES:'+document.images.length+':BROKEN:'+bad+':TABLES:'"
                   "+document.querySelectorAll('table').length+':WIDE:'+wide.length;}</script></body>")
    probe.write_text(page)
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--window-size=1400,1000", "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    m = re.search(r"<title>IMAGES:(\d+):BROKEN:(\d+):TABLES:(\d+):WIDE:(\d+)</title>", out.stdout)
    assert m, out.stderr[-2000:]
    assert int(m.group(1)) >= 8 and int(m.group(2)) == 0
    assert int(m.group(3)) >= 10 and int(m.group(4)) == 0, m.group(0)


def test_shipped_forensynths_config_is_valid(tmp_path: Path):
    """The documented ForenSynths config validates once its data and weights exist."""
    from importlib import resources

    import yaml

    text = resources.files("tffkit").joinpath("configs/forensynths_wang2020.yaml").read_text()
    cfg_path = tmp_path / "forensynths.yaml"
    cfg_path.write_text(text)
    raw = yaml.safe_load(text)
    for rel in (raw["detector"]["weights"], raw["data"]["source"], raw["data"]["test"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch() if rel.endswith(".pth") else (tmp_path / rel).mkdir(exist_ok=True)
    cfg = load_config(cfg_path)
    assert cfg["detector"]["arch"] == "wang2020" and cfg["steps"]["dropout"]["k_sweep"] == [29, 57, 114, 228]
    assert cfg["preset"] == "detector" and cfg["data"]["layout"] == "auto"
    assert cfg["out"] == str((tmp_path / raw["out"]).resolve())


@pytest.mark.tier2  # a study run again and again (resumed, changed inputs)
def test_resume_checks_what_the_config_points_to(tmp_path: Path, trained_tiny, monkeypatch):
    """Replacing the detector file or a data file at the same path re-runs the steps that read it; the report
    shows the new numbers (stale results were reused before: the digest covered only the config text)."""
    import hashlib

    import pandas as pd
    import torch

    from tffkit.detectors import build_detector, save_checkpoint
    from tffkit.jobs.evaluate import EvaluateOptions, evaluate

    weights, data = trained_tiny
    local_weights, local_data = tmp_path / "detector.pth", tmp_path / "data"
    shutil.copy(weights, local_weights)
    shutil.copytree(data, local_data)
    cfg = _config(tmp_path, local_weights, local_data, dropout={"enabled": False})
    calls = []
    original = study_mod.build_steps

    def counting_steps(c, progress=True):
        steps = original(c, False)
        for s in steps:
            s.run = lambda folder, run=s.run, name=s.name: (calls.append(name), run(folder))
        return steps

    monkeypatch.setattr(study_mod, "build_steps", counting_steps)
    run_study(cfg)
    run_study(cfg)
    assert calls == ["evaluate", "rank", "card"]
    out = Path(cfg["out"])
    assert json.loads((out / "evaluate" / "run.json").read_text())["checkpoint_sha256"] == \
        hashlib.sha256(local_weights.read_bytes()).hexdigest()

    torch.manual_seed(123)  # another detector, saved at the same path
    save_checkpoint(local_weights, build_detector("tiny_resnet"))
    report = run_study(cfg)
    assert calls == ["evaluate", "rank", "card", "evaluate", "rank", "card"]
    fresh = evaluate(local_data, options=EvaluateOptions(arch="tiny_resnet", weights=str(local_weights), preset="full",
                                                         device="cpu", workers=0, batch_size=32,
                                                         progress=False)).metrics
    stored = pd.read_csv(out / "evaluate" / "metrics.csv", keep_default_na=False)
    assert stored["ap"].round(12).tolist() == fresh["ap"].round(12).tolist()
    mean_ap = float(fresh[fresh["set"] == "mean"]["ap"].iloc[0])
    assert f"{100 * mean_ap:.1f}" in report.read_text()

    image = sorted((local_data / "gan_b" / "1_fake").iterdir())[0]  # a data file rewritten in place
    shutil.copy(sorted((local_data / "gan_c" / "1_fake").iterdir())[0], image)
    run_study(cfg)
    assert calls[6:] == ["evaluate", "card"]  # the test data changed; the source set (progan) did not
    (local_data / "progan" / "1_fake" / "new.png").write_bytes(image.read_bytes())  # a file added to the source
    run_study(cfg)
    assert calls[8:] == ["evaluate", "rank", "card"]  # source and test are the same root here


class _Tables:
    """The report's tables as (header list, rows of cell texts, inside a scrolling box?)."""

    def __init__(self, page: str):
        from html.parser import HTMLParser

        tables, stack = [], []

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if tag == "div":
                    stack.append(a.get("class") == "scroll")
                elif tag == "table" and "tbl" in (a.get("class") or "") and "kv" not in (a.get("class") or ""):
                    tables.append({"scroll": bool(stack and stack[-1]), "head": [], "rows": []})
                    self.cell = None
                elif tag == "tr" and tables:
                    tables[-1]["rows"].append([])
                elif tag in ("td", "th") and tables:
                    self.cell = tag
                    self.text = ""

            def handle_endtag(self, tag):
                if tag == "div" and stack:
                    stack.pop()
                elif tag in ("td", "th") and tables and getattr(self, "cell", None):
                    (tables[-1]["head"] if tag == "th" else tables[-1]["rows"][-1]).append(self.text.strip())
                    self.cell = None

            def handle_data(self, data):
                if getattr(self, "cell", None):
                    self.text += data

        Parser().feed(page)
        self.tables = [dict(t, rows=[r for r in t["rows"] if r]) for t in tables]


@pytest.mark.tier2  # a full study run (every step)
def test_report_tables_are_readable(full_report: Path):
    """One precision per column, headers in words, no empty column, wide tables scroll, the training family
    marked, ± and (T=…) explained once, the config as YAML."""
    import html as html_mod

    import yaml

    page = full_report.read_text()
    tables = _Tables(page).tables
    assert len(tables) >= 8
    identifiers = {"n_real", "n_fake", "ap", "acc", "real_acc", "fake_acc", "cal_real_acc", "cal_fake_acc", "omega",
                   "median_colour", "median_grayscale", "median_change_pp", "median_change_pct", "bh_count",
                   "bh_percent", "activation_site", "n_negative_gamma", "column", ""}
    number = re.compile(r"^[−-]?\d[\d,]*(?:\.(\d+))?(?: ± \d+(?:\.\d+)?)?$")
    for t in tables:
        assert t["scroll"], t["head"]
        assert not identifiers & set(t["head"]), t["head"]
        for j, name in enumerate(t["head"]):
            cells = [r[j] for r in t["rows"] if j < len(r)]
            assert any(c not in ("", "–") for c in cells), f"empty column {name!r}"
            decimals = {len(m.group(1) or "") for c in cells if (m := number.match(c))}
            assert len(decimals) <= 1, f"column {name!r} mixes precisions: {cells}"
    transfer = next(t for t in tables if "AP (%)" in t["head"])
    assert {"progan†", "gan_b", "gan_c"} <= {r[0] for r in transfer["rows"]}
    assert all(re.fullmatch(r"\d+\.\d", r[transfer["head"].index("AP (%)")]) for r in transfer["rows"])
    assert page.count("<strong>a ± b</strong>") == 1 and page.count("<strong>layer.#c(T=n)</strong>") == 1
    assert "marks the detector's training family (progan)" in page
    config = html_mod.unescape(re.search(r"<h2>Configuration \(YAML\)</h2>\s*<pre>(.*?)</pre>", page, re.S).group(1))
    assert yaml.safe_load(config) == json.loads((full_report.parent / "study.json").read_text())
    weights = yaml.safe_load(config)["detector"]["weights"]
    import hashlib

    assert hashlib.sha256(Path(weights).read_bytes()).hexdigest() in page  # each detector's checkpoint hash


def test_report_summarises_a_trained_detector(tmp_path: Path, trained_tiny):
    """A detector trained by tff train is shown with its training history; a checkpoint replaced after the run
    is flagged."""
    import pandas as pd

    from tffkit.report.html import section_detectors

    weights, _ = trained_tiny
    folder = tmp_path / "detector"
    folder.mkdir()
    shutil.copy(weights, folder / "model_best.pth")
    pd.DataFrame({"epoch": [1, 2], "lr": [1e-3, 1e-3], "train_loss": [0.6, 0.3], "val_loss": [0.5, 0.2],
                  "val_acc": [0.75, 0.9375], "val_ap": [0.8, 0.99]}).to_csv(folder / "history.csv", index=False)
    args = {"color_robust": True, "data": "d", "init": "i.pth"}
    (folder / "run.json").write_text(json.dumps({"command": "train", "args": args,
                                                 "epochs": 2, "steps": 40, "stopped": "max_epochs",
                                                 "best": {"epoch": 2, "val_acc": 0.9375, "val_ap": 0.99}}))
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "run.json").write_text(json.dumps({"checkpoint_sha256": "0" * 64}))
    study = {"detector": {"arch": "tiny_resnet", "weights": str(folder / "model_best.pth"), "label": "mine"},
             "steps": {"color_robust": {"enabled": False}}}
    body = section_detectors(tmp_path, study)["body"]
    assert ("trained by tff train (colour-robust) on d, starting from i.pth: 2 epoch(s), 40 step(s), stopped by "
            "max_epochs") in body
    assert "best epoch 2: validation accuracy 93.8%, AP 99.0%" in body and "<td>93.8</td>" in body
    assert "changed after these results were computed" in body  # recorded hash 000… differs from the file's
