"""tools/peft_experiments.py --quick end to end on a tiny cohort of PNG images, and its resumption.

The data pipeline, encoder, modules, arithmetic and scoring are all real; the images are 32 px
drawings (a bright disc, the 'head', and a square whose corner depends on the class) and the
encoder a width-4 ResNet-18 at 16 px, so the run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocomri.config import Config, ModelConfig, MocoConfig
from mocomri.data.manifest import Manifest, ManifestRow, write_manifest
from mocomri.data.settings import DataConfig
from mocomri.peft import load_pem
from test_peft_cli import tiny_run
from tools.peft_experiments import subset
from tools.peft_experiments import main as run_experiments

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def _image(rng: np.random.Generator, c: int) -> np.ndarray:
    yy, xx = np.mgrid[:32, :32]
    image = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < 14**2, 90.0, 5.0) + rng.normal(0, 5, (32, 32))
    y, x = 6 + 12 * (c // 2), 6 + 12 * (c % 2)
    image[y : y + 8, x : x + 8] += 120
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    rows = []
    for c, label in enumerate(CLASSES):
        for split, n in (("train", 6), ("val", 3), ("test", 3)):
            for s in range(n):
                name = f"{split}-{label}-{s}"
                Image.fromarray(_image(rng, c)).save(tmp_path / f"{name}.png")
                rows.append(ManifestRow(f"{name}.png", name, modality="T1c", label=label, split=split))
    manifest = tmp_path / "manifest.csv"
    write_manifest(Manifest(tmp_path, rows), manifest)
    config = Config(model=ModelConfig(name="resnet18", width=4), moco=MocoConfig(proj_hidden_dim=16, proj_dim=8),
                    data=DataConfig(kind="images2d", image_size=16, num_workers=0, cache_dir=str(tmp_path / "cache")))
    return tiny_run(tmp_path / "run", config), manifest


def test_peft_experiments__quick_run_writes_every_report_and_resumes(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    run, manifest = cohort
    out = tmp_path / "out"
    args = ["--encoder", str(run), "--manifest", str(manifest), "--out", str(out), "--quick", "--seeds", "0",
            "--device", "cpu"]
    assert run_experiments(args) == 0
    for name in ("distribution", "multitask", "domain"):
        for suffix in (".json", ".md", "_lambda.png"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
    modules = sorted(p.stem for p in (out / "modules").glob("*.safetensors"))
    per_kind = ["half_a", "half_b", "presence", "source_ssl", "target_ssl", "type", "union"]
    assert modules == sorted([f"ia3_s0_{m}" for m in per_kind] + [f"lora_s0_{m}" for m in per_kind]
                             + ["lora_s0_half_b_init1000"])  # the domain experiment reuses the union modules

    distribution = json.loads((out / "distribution.json").read_text())
    accuracy = distribution["sections"]["test accuracy"]
    for kind in ("lora", "ia3"):
        for row in ("half A", "half B", "merged", "union", "mean of halves"):
            low, high = accuracy[f"{row} | {kind}"]["seeds"]["0"]["ci95"]
            assert 0 <= low <= accuracy[f"{row} | {kind}"]["seeds"]["0"]["value"] <= high <= 1, (row, kind)
        assert distribution["sections"]["λ"][f"λ (same init) | {kind}"]["seeds"]["0"]["value"] in (0.0, 0.5, 1.0)
        assert [p["lambda"] for p in distribution["curves"][kind]["same init"]["0"]] == [0.0, 0.5, 1.0]
    assert {"linear probe | —", "full fine-tuning | —", "merged, different init | lora"} <= set(accuracy)
    assert {b["kind"] for b in distribution["bars"]} == {"lora", "ia3"}
    domain = json.loads((out / "domain.json").read_text())
    assert {"analogy on target | ia3", "source-only module on source | lora", "linear probe on target | —"} <= set(
        domain["sections"]["test accuracy"])
    target = (out / "data" / "target" / "manifest.csv").read_text()
    assert target.count(".png") == 48

    stamps = {p: p.stat().st_mtime_ns for p in (out / "modules").iterdir()}
    assert run_experiments(args + ["--experiments", "distribution"]) == 0
    assert json.loads((out / "distribution.json").read_text())["seconds"] == {}  # nothing trained again
    assert {p: p.stat().st_mtime_ns for p in (out / "modules").iterdir()} == stamps

    # λ on the mean of both domains' val splits, over another grid: the same modules, another report.
    assert run_experiments(args + ["--experiments", "domain", "--domain-lambda", "both", "--grid", "0,0.25,1"]) == 0
    both = json.loads((out / "domain_lambda_both.json").read_text())
    assert [p["lambda"] for p in both["curves"]["ia3"]["analogy"]["0"]] == [0.0, 0.25, 1.0]
    assert "mean of the target and source val" in both["description"]
    assert {p: p.stat().st_mtime_ns for p in (out / "modules").iterdir()} == stamps

    # Guarded: the best target val accuracy among the λ that lose at most 1 point of source val accuracy.
    assert run_experiments(args + ["--experiments", "domain", "--domain-lambda", "guarded", "--guard-by", "estimate",
                                   "--grid", "0,0.5,1", "--test-every-lambda"]) == 0
    guarded = json.loads((out / "domain_lambda_guarded.json").read_text())
    for kind in ("lora", "ia3"):
        target_val = {p["lambda"]: p["score"] for p in guarded["curves"][kind]["target val"]["0"]}
        source_val = {p["lambda"]: p["score"] for p in guarded["curves"][kind]["source val"]["0"]}
        allowed = [x for x in (0.0, 0.5, 1.0) if source_val[x] >= source_val[1.0] - 0.01]
        expected = max(allowed, key=lambda x: target_val[x])
        lam = guarded["sections"]["λ"][f"λ | {kind}"]["seeds"]["0"]["value"]
        assert lam == expected
        assert [p["lambda"] for p in guarded["curves"][kind]["target val"]["0"] if p.get("chosen")] == [expected]
        # The test trade-off, read only: 0 at λ = 1, and at the chosen λ the analogy's difference.
        every = next(v for k, v in guarded["sections"].items() if k.startswith("analogy − source-only on test"))
        for where in ("target", "source"):
            assert every[f"λ = 1.00 on {where} | {kind}"]["seeds"]["0"]["value"] == 0
            chosen = guarded["sections"]["differences (points)"][f"analogy − source-only on {where} | {kind}"]
            assert every[f"λ = {lam:.2f} on {where} | {kind}"]["seeds"]["0"]["value"] == pytest.approx(
                chosen["seeds"]["0"]["value"])
    assert {p: p.stat().st_mtime_ns for p in (out / "modules").iterdir()} == stamps
    # By default the guard is the lower end of the source loss's CI: the chosen λ is the best allowed.
    assert run_experiments(args + ["--experiments", "domain", "--domain-lambda", "guarded", "--grid", "0,0.5,1"]) == 0
    guarded = json.loads((out / "domain_lambda_guarded.json").read_text())
    assert "lower end of the paired 95% CI" in guarded["description"]
    for kind in ("lora", "ia3"):
        allowed = guarded["curves"][kind]["allowed by the guard"]["0"]
        assert 1.0 in [p["lambda"] for p in allowed]
        lam = guarded["sections"]["λ"][f"λ | {kind}"]["seeds"]["0"]["value"]
        assert lam == max(allowed, key=lambda p: p["score"])["lambda"]
    with pytest.raises(SystemExit):  # the guard's reference is λ = 1
        run_experiments(args + ["--experiments", "domain", "--domain-lambda", "guarded", "--grid", "0,0.5"])
    with pytest.raises(SystemExit, match="lr"):  # MoCo modules made at another learning rate: not this run's
        run_experiments(args + ["--experiments", "domain", "--moco-lr", "5e-4"])
    for bad in (["--moco-lr", "0"], ["--guard", "-0.01"]):
        with pytest.raises(SystemExit) as refused:
            run_experiments(args + ["--experiments", "domain", *bad])
        assert refused.value.code == 2


def test_peft_experiments__targets_and_rank_reach_every_module(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    run, manifest = cohort
    out = tmp_path / "out"
    args = ["--encoder", str(run), "--manifest", str(manifest), "--out", str(out), "--quick", "--seeds", "0",
            "--device", "cpu", "--kinds", "lora", "--experiments", "multitask",
            "--targets", "layer4.*.conv1,layer3.0.conv2", "--rank", "2"]
    assert run_experiments(args) == 0
    for task in ("presence", "type"):
        pem = load_pem(out / "modules" / f"lora_s0_{task}.safetensors")
        assert pem.spec.targets == ("layer4.*.conv1", "layer3.0.conv2") and pem.spec.rank == 2
        assert sorted(pem.layers) == ["layer3.0.conv2", "layer4.0.conv1", "layer4.1.conv1"]
    settings = json.loads((out / "multitask.json").read_text())["settings"]
    assert settings["encoder weights sha1"] == pem.base.sha1  # the report names the weights the modules were made on
    budget = settings["budget"]
    assert budget["targets"] == ["layer4.*.conv1", "layer3.0.conv2"] and budget["rank"] == 2

    # λ on the smaller share of an own module's val accuracy kept: at λ = 1 the merge is the presence
    # module, which keeps all of its own presence score, so that point scores at most 1.
    assert run_experiments(args + ["--multitask-lambda", "kept"]) == 0
    kept = json.loads((out / "multitask_lambda_kept.json").read_text())
    curve = kept["curves"]["lora"]["smaller share kept"]["0"]
    assert [p["lambda"] for p in curve] == [0.0, 0.5, 1.0] and curve[-1]["score"] <= 1.0
    best = max(curve, key=lambda p: p["score"])
    assert kept["sections"]["λ"]["λ | lora"]["seeds"]["0"]["value"] == best["lambda"]
    assert "smaller share of an own module" in kept["description"]

    # The same --out asked for another rank: the modules on disk are not this run's.
    with pytest.raises(SystemExit, match="lora_s0_presence.safetensors: made with targets"):
        run_experiments(args[:-2] + ["--rank", "3"])
    with pytest.raises(SystemExit) as refused:  # argparse's error, not a rank silently left at its default
        run_experiments(args[:-2] + ["--rank", "0"])
    assert refused.value.code == 2

    # Heads that start as the linear probe: not the random-head modules on disk, so another --out.
    with pytest.raises(SystemExit, match="head random, .*; this run asks for .* head probe"):
        run_experiments(args + ["--head-init", "probe"])
    probe_args = [str(tmp_path / "probe_heads") if a == str(out) else a for a in args] + ["--head-init", "probe"]
    assert run_experiments(probe_args) == 0
    for task in ("presence", "type"):  # presence has two classes, type three
        pem = load_pem(tmp_path / "probe_heads" / "modules" / f"lora_s0_{task}.safetensors")
        assert pem.provenance["options"]["head_init"] == "probe"


def test_subset__single_image_subjects_per_split_and_class() -> None:
    rows = [ManifestRow(f"{s}-{i}.png", s, label=label, split=split)
            for split in ("train", "test") for label in ("a", "b")
            for s, n in ((f"{split}{label}1", 1), (f"{split}{label}2", 2), (f"{split}{label}3", 1), (f"{split}{label}4", 1))
            for i in range(n)]
    kept = subset(Manifest(Path("."), rows), per_class=2)
    assert [r.subject for r in kept.rows] == ["testa1", "testa3", "testb1", "testb3", "traina1", "traina3",
                                              "trainb1", "trainb3"]
