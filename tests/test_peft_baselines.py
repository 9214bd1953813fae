"""Full fine-tuning runs module training's loop (same head initialisation, every weight trained); the linear probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mocomri.peft import PEMSpec
from mocomri.peft.baselines import fine_tune, linear_probe, load_fine_tuned, probe_proba, save_fine_tuned
from mocomri.peft.inputs import labelled_items, load_base
from mocomri.peft.train import TrainOptions, train_module
from test_peft_cli import make_cohort

OPTIONS = dict(batch_size=4, lr=1e-2, seed=3, device="cpu")


@pytest.fixture
def cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    return make_cohort(tmp_path, monkeypatch)


def test_fine_tune__starts_from_the_head_a_module_starts_from(cohort: tuple[Path, Path]) -> None:
    run, manifest = cohort
    module = train_module(run, manifest, PEMSpec("lora", ("layer4.*.conv*",), rank=2), options=TrainOptions(steps=0, **OPTIONS))
    tuned = fine_tune(run, manifest, options=TrainOptions(steps=0, **OPTIONS))
    (head,) = module.heads
    assert tuned.head.labels == head.labels
    assert torch.equal(tuned.head.weight, head.weight) and torch.equal(tuned.head.bias, head.bias)


def test_fine_tune__trains_every_weight_with_batchnorm_in_train_mode(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    run, manifest = cohort
    before = torch.load(run / "encoder.pt", weights_only=True)
    tuned = fine_tune(run, manifest, options=TrainOptions(steps=2, **OPTIONS))
    assert tuned.encoder.keys() == before.keys()
    weights = [k for k in before if k.endswith("weight")]
    unchanged = [k for k in weights if torch.equal(tuned.encoder[k], before[k])]
    assert not unchanged, unchanged  # every conv and BatchNorm weight moved
    assert not torch.equal(tuned.encoder["bn1.running_mean"], before["bn1.running_mean"])  # batch statistics used
    assert tuned.provenance["operation"] == "fine_tune" and tuned.provenance["options"]["steps"] == 2

    back = load_fine_tuned(save_fine_tuned(tuned, tmp_path / "ft.pt"))
    assert back.head.labels == tuned.head.labels and back.provenance == tuned.provenance
    built = back.build(load_base(run))
    assert not built.training
    for key, value in built.state_dict().items():
        assert torch.equal(value, tuned.encoder[key]), key


def test_linear_probe__probabilities_over_the_training_classes(cohort: tuple[Path, Path]) -> None:
    run, manifest = cohort
    base = load_base(run)
    train = labelled_items(manifest, base.config, "train")
    test = labelled_items(manifest, base.config, "test", train.label_names)
    proba = probe_proba(linear_probe(base, train, device="cpu"), base, test, device="cpu")
    assert proba.shape == (len(test.labels), len(train.label_names))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
