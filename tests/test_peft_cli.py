"""``mocomri peft train | compose | eval`` end to end on a tiny labelled cohort, and MoCo training of a module.

The data layer is replaced by small fakes (16x16 "slices" whose class is a bright square in a
class-specific corner); the encoder, module, training, composition, λ search and metrics are real.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, default_collate

from mocomri.cli import build_parser, main
from mocomri.config import Config, ModelConfig, save_config
from mocomri.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from mocomri.data.settings import DataConfig
from mocomri.models import create_encoder
from mocomri.peft import PEMSpec, load_pem
from mocomri.peft import inputs as peft_inputs
from mocomri.peft import train as peft_train
from mocomri.peft.train import TrainOptions, train_module

CLASSES = ["lesion", "none"]
TINY = Config(model=ModelConfig(name="resnet18", width=4), data=DataConfig(image_size=16, num_workers=0))


def _image(seed: int, label: str) -> torch.Tensor:
    image = np.random.default_rng(seed).normal(0.0, 1.0, size=(1, 16, 16))  # (C, H, W)
    corner = 0 if label == "lesion" else 8
    image[:, corner : corner + 8, corner : corner + 8] += 3.0
    return torch.from_numpy(image).float()


class FakeEvalDataset(Dataset):
    """Two slices per row of the given splits."""

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, splits: list[str], progress=None) -> None:
        self.rows = manifest.rows
        self.item_rows = [i for i, r in enumerate(self.rows) if r.split in splits for _ in range(2)]

    def __len__(self) -> int:
        return len(self.item_rows)

    def __getitem__(self, i: int) -> dict:
        return {"image": _image(i, self.rows[self.item_rows[i]].label), "row": self.item_rows[i]}


class FakeViewDataset(FakeEvalDataset):
    """Pretraining items: an image and its subject; the views are the image plus noise."""

    collate = staticmethod(default_collate)

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, aug_cfg, splits: list[str]) -> None:
        super().__init__(manifest, data_cfg, splits)

    def __getitem__(self, i: int) -> dict:
        return {"image": _image(i, "none"), "subject": torch.tensor(i // 2)}

    def make_views(self, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["image"].to(device)
        return x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)


@pytest.fixture
def cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    return make_cohort(tmp_path, monkeypatch)


def make_cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A run directory (tiny encoder and config) and a manifest of fake items, the data layer patched
    where the modules' training and evaluation build their datasets."""
    monkeypatch.setattr(peft_inputs, "build_eval_dataset", FakeEvalDataset)
    monkeypatch.setattr(peft_train, "build_pretrain_dataset", FakeViewDataset)
    rows = []
    for split, n in (("train", 4), ("val", 2), ("test", 2), ("unlabeled", 4)):
        for c, label in enumerate(CLASSES):
            for s in range(n):
                subject = f"sub-{split}{c}{s}"
                rows.append(ManifestRow(f"{subject}.nii.gz", subject, "", "T1w", "" if split == "unlabeled" else label,
                                        split, hashlib.sha1(subject.encode()).hexdigest()))
    manifest = tmp_path / "manifest.csv"
    write_manifest(Manifest(tmp_path, rows), manifest)
    return tiny_run(tmp_path / "run", TINY), manifest


def tiny_run(run: Path, config: Config) -> Path:
    """A run directory: ``config`` and a width-4 ResNet-18 ``encoder.pt`` (seed 0)."""
    run.mkdir()
    save_config(config, run / "config.yaml")
    torch.manual_seed(0)
    torch.save(create_encoder("resnet18", in_channels=1, width=4)[0].state_dict(), run / "encoder.pt")
    return run


def test_peft_cli__train_compose_eval(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    run, manifest = cohort
    common = ["--encoder", str(run), "--device", "cpu"]
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["peft", "train", *common, "--manifest", str(manifest), "--targets", "layer4.*.conv*",
                     "--rank", "2", "--steps", "3", "--batch-size", "8", "--seed", str(seed),
                     "--out", str(tmp_path / f"{name}.safetensors")]) == 0
    a = load_pem(tmp_path / "a.safetensors")
    assert a.provenance["objective"] == "ce" and a.provenance["labels"] == CLASSES
    assert a.heads[0].weight.shape == (2, 32)
    assert a.provenance["options"]["head_init"] == "probe"  # the default: LP-FT
    assert main(["peft", "train", *common, "--manifest", str(manifest), "--targets", "layer4.*.conv*", "--steps", "0",
                 "--head-init", "random", "--out", str(tmp_path / "random_head.safetensors")]) == 0
    assert load_pem(tmp_path / "random_head.safetensors").provenance["options"]["head_init"] == "random"

    out = tmp_path / "ab.safetensors"
    assert main(["peft", "compose", *common, "--add", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--lambda", "auto", "--val", str(manifest), "--out", str(out)]) == 0
    report = json.loads((tmp_path / "ab.safetensors.report.json").read_text())
    assert [p["lambda"] for p in report["curve"]] == pytest.approx([i / 10 for i in range(11)])
    assert report["lambda"] == max(report["curve"], key=lambda p: p["score"])["lambda"]
    assert report["validation"]["split"] == "val"
    assert load_pem(out).provenance["lambda"] == report["lambda"]

    # Two val manifests (the first's train and val rows swapped in the second: other images,
    # other scores): λ on their mean.
    swapped = tmp_path / "swapped.csv"
    rows = [dataclasses.replace(r, split={"val": "train", "train": "val"}.get(r.split, r.split))
            for r in read_manifest(manifest).rows]
    write_manifest(Manifest(tmp_path, rows), swapped)
    curves = []
    for vals, name in (([manifest], "v1"), ([swapped], "v2"), ([manifest, swapped], "v12")):
        assert main(["peft", "compose", *common, "--add", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                     *(a for v in vals for a in ("--val", str(v))), "--out", str(tmp_path / f"{name}.safetensors")]) == 0
        curves.append([p["score"] for p in json.loads((tmp_path / f"{name}.safetensors.report.json").read_text())["curve"]])
    assert curves[0] != curves[1]  # else the mean could not be told from either
    assert curves[2] == pytest.approx([(x + y) / 2 for x, y in zip(curves[0], curves[1])])
    assert "mean accuracy" in json.loads((tmp_path / "v12.safetensors.report.json").read_text())["validation"]["score"]
    # --grid: only those λ tried, each scored as on the default grid, the first best of them chosen.
    assert main(["peft", "compose", *common, "--add", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--val", str(manifest), "--val", str(swapped), "--grid", "0,0.5,1", "--out", str(tmp_path / "g.safetensors")]) == 0
    coarse = json.loads((tmp_path / "g.safetensors.report.json").read_text())
    mean = [(curves[0][i] + curves[1][i]) / 2 for i in (0, 5, 10)]  # the default grid's 0, 0.5 and 1
    assert [p["lambda"] for p in coarse["curve"]] == [0.0, 0.5, 1.0]
    assert [p["score"] for p in coarse["curve"]] == pytest.approx(mean)
    assert coarse["lambda"] == (0.0, 0.5, 1.0)[mean.index(max(mean))]

    assert main(["peft", "compose", "--negate", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "n.safetensors")]) == 0
    assert load_pem(tmp_path / "n.safetensors").heads == []

    # merge: the module folded into the base, a plain state dict with the outputs of base + module
    merged_path = tmp_path / "merged.pt"
    assert main(["peft", "merge", str(tmp_path / "a.safetensors"), *common, "--out", str(merged_path)]) == 0
    from mocomri.peft import PEMEncoder

    merged, _ = create_encoder("resnet18", in_channels=1, width=4)
    merged.load_state_dict(torch.load(merged_path, weights_only=True))
    base, _ = create_encoder("resnet18", in_channels=1, width=4)
    base.load_state_dict(torch.load(run / "encoder.pt", weights_only=True))
    running = PEMEncoder.from_pem(a, base).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(x), running(x), rtol=1e-4, atol=1e-5)

    metrics_path = tmp_path / "eval.json"
    assert main(["peft", "eval", str(out), *common, "--manifest", str(manifest), "--n-boot", "50",
                 "--out", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())["metrics"]
    low, high = metrics["accuracy"]["ci95"]
    assert 0 <= low <= metrics["accuracy"]["value"] <= high <= 1 and metrics["n_items"] == 8


def test_peft_cli__incompatible_modules_are_a_readable_error(cohort: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    run, manifest = cohort
    for name, rank in (("a", 2), ("b", 3)):
        main(["peft", "train", "--encoder", str(run), "--device", "cpu", "--manifest", str(manifest),
              "--targets", "layer4.0.conv1", "--rank", str(rank), "--steps", "1", "--out", str(tmp_path / f"{name}.st")])
    assert main(["peft", "compose", "--add", str(tmp_path / "a.st"), str(tmp_path / "b.st"), "--lambda", "0.5",
                 "--out", str(tmp_path / "ab.st")]) == 2
    assert "their rank differs (2 vs 3)" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["peft", "train", "--manifest", "m.csv", "--out", "a.st"],
    ["peft", "eval", "a.st", "--manifest", "m.csv"],
    ["peft", "merge", "a.st", "--out", "merged.pt"],
])
def test_peft_cli__without_encoder_is_a_usage_error_not_a_random_encoder(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "the following arguments are required: --encoder" in capsys.readouterr().err


def test_peft_cli__random_encoder_is_asked_for_by_name_and_compose_needs_none() -> None:
    args, _ = build_parser().parse_known_args(["peft", "train", "--encoder", "random", "--manifest", "m.csv", "--out", "a.st"])
    assert args.encoder == "random"
    # composition with a given λ is arithmetic on the modules alone
    args, _ = build_parser().parse_known_args(["peft", "compose", "--negate", "a.st", "--lambda", "1", "--out", "b.st"])
    assert args.encoder is None


def test_train_module__moco_objective_trains_only_the_module(cohort: tuple[Path, Path]) -> None:
    run, manifest = cohort
    spec = PEMSpec("ia3", ("layer4.*.conv2", "layer4.*.bn2"))
    pem = train_module(run, manifest, spec, options=TrainOptions(objective="moco", steps=3, batch_size=4, lr=1e-2,
                                                                  device="cpu"))
    assert pem.heads == [] and pem.provenance["objective"] == "moco"
    moved = [k for k, v in pem.tensors.items() if not torch.allclose(v, torch.ones_like(v))]
    assert moved  # the scales left their identity initialisation
    # the base encoder is untouched: the module file still refers to the weights on disk
    from mocomri.peft import state_dict_digest

    assert pem.base.sha1 == state_dict_digest(torch.load(run / "encoder.pt", weights_only=True))
