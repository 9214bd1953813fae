"""Full fine-tuning runs module training's loop (same head initialisation, every weight trained); the linear
probe; a head that starts as the linear probe (LP-FT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mocomri.errors import DataError
from mocomri.eval.items import LabelledItems
from mocomri.eval.probe import fit_linear_probe
from mocomri.peft import PEMSpec
from mocomri.peft.evaluate import module_proba
from mocomri.peft.inputs import labelled_items, load_base
from mocomri.peft.train import TrainOptions, probe_head, train_module
from tools.peft_lab.baselines import fine_tune, linear_probe, load_fine_tuned, probe_proba, save_fine_tuned
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
    test = labelled_items(manifest, base.config, "test", train.classes)
    proba = probe_proba(linear_probe(base, train, device="cpu"), base, test, device="cpu")
    assert proba.shape == (len(test.labels), len(train.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_train_module__probe_head_starts_as_the_linear_probe(cohort: tuple[Path, Path]) -> None:
    run, manifest = cohort
    base = load_base(run)
    train = labelled_items(manifest, base.config, "train")
    test = labelled_items(manifest, base.config, "test", train.classes)
    pem = train_module(run, manifest, PEMSpec("ia3", ("layer4.*",)),
                       options=TrainOptions(steps=0, head_init="probe", **OPTIONS))
    expected = probe_proba(linear_probe(base, train, seed=OPTIONS["seed"], device="cpu"), base, test, device="cpu")
    np.testing.assert_allclose(module_proba(pem, base, test, device="cpu"), expected, atol=1e-5)
    assert pem.provenance["options"]["head_init"] == "probe"


def _items(features: np.ndarray, labels: list[int], names: tuple[str, ...]) -> LabelledItems:
    dataset = [{"image": torch.as_tensor(row, dtype=torch.float32)} for row in features]
    n = len(labels)
    return LabelledItems(dataset, np.asarray(labels), np.arange(n), names, np.full(n, "train"), np.arange(n))


def test_probe_head__two_classes_give_the_probes_sigmoid() -> None:
    rng = np.random.default_rng(0)
    labels = [0] * 20 + [1] * 20
    features = rng.normal(size=(40, 5)) * [1, 2, 3, 4, 5] + np.outer(labels, [2, 0, 0, 0, 1]) + 7
    items = _items(features, labels, ("a", "b"))
    weight, bias = probe_head(torch.nn.Identity(), items, seed=1, device="cpu")
    assert weight.shape == (2, 5) and bias.shape == (2,)
    proba = torch.softmax(torch.as_tensor(features, dtype=torch.float32) @ weight.T + bias, dim=1).numpy()
    probe = fit_linear_probe(features, np.asarray(labels), np.arange(40), seed=1)
    np.testing.assert_allclose(proba, probe.predict_proba(features), atol=1e-5)


def test_probe_head__a_class_with_no_training_rows_is_a_data_error() -> None:
    items = _items(np.eye(4), [0, 0, 1, 1], ("a", "b", "c"))
    with pytest.raises(DataError, match=r"\['c'\]"):
        probe_head(torch.nn.Identity(), items, device="cpu")
