"""``run_probe`` / ``mocomri probe --finetune``: the encoder fine-tuned end to end beside the same
training from random init (supervised from scratch), on the tiny fake cohort of test_run_probe."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mocomri.cli import build_parser, main
from mocomri.data.manifest import Manifest, ManifestRow, write_manifest
from mocomri.eval import ProbeOptions, format_table, run_probe
from mocomri.eval import runner
from mocomri.eval.baselines import SupervisedBudget
from mocomri.models.encoders import create_encoder
from tests.test_run_probe import TINY, FakeSliceDataset, _write_manifest, _write_run

FAST = dict(n_boot=100, knn_k=5, cv_jobs=1, Cs=(1.0,), cv_folds=2)  # one C, serial: the probes are not under test
BUDGET = SupervisedBudget(steps=3, batch_size=8, warmup_steps=1)


@pytest.fixture
def fake_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_build_eval_dataset", FakeSliceDataset)


def _options(budget: SupervisedBudget = BUDGET) -> ProbeOptions:
    return ProbeOptions(**FAST, supervised=budget)


def test_run_probe__finetune_reports_both_trainings_and_their_paired_gap(tmp_path: Path, fake_dataset: None) -> None:
    run_dir = _write_run(tmp_path / "run")
    out = tmp_path / "p"
    metrics = run_probe(run_dir, _write_manifest(tmp_path / "m.csv"), out_dir=out, label_fractions=(0.5,), seeds=2,
                        baselines=("finetune",), options=_options(), verbose=False)

    assert list(metrics["methods"]) == ["moco", "moco_knn", "random_init", "random_init_knn", "finetune", "supervised"]
    moco = metrics["methods"]["moco"]["0.5"]
    for method in ("finetune", "supervised"):  # the probe's label subsets
        entry = metrics["methods"][method]["0.5"]
        assert (entry["n_train_subjects"], entry["n_train_items"]) == (moco["n_train_subjects"], moco["n_train_items"])
        assert len(entry["accuracy"]["per_seed"]) == 2
    assert {"finetune - supervised", "moco - supervised", "moco - random_init"} <= set(metrics["differences"])
    gap = metrics["differences"]["finetune - supervised"]["0.5"]["accuracy"]
    means = [metrics["methods"][m]["0.5"]["accuracy"]["mean"] for m in ("finetune", "supervised")]
    assert gap["mean"] == pytest.approx(means[0] - means[1])
    assert gap["ci"][0] <= gap["ci"][1]

    table = format_table(metrics)
    for row in ("MoCo encoder (fine-tuned)", "Random init (fine-tuned) = supervised from scratch",
                "MoCo fine-tuned − random init fine-tuned, paired"):
        assert row in table
    report = (out / "report.md").read_text()
    assert "MoCo fine-tuned − random init fine-tuned, paired" in report
    assert "Fine-tuned (`--finetune`): every weight of the MoCo backbone and a new linear head" in report
    assert "3 AdamW steps of batch 8, peak lr 0.001 (linear warm-up over 1 steps" in report
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["settings"]["finetune"] is True and stored["settings"]["supervised"]["steps"] == 3
    assert "finetune - supervised" in stored["differences"]


def test_run_probe__finetune_starts_from_the_encoders_weights(
    tmp_path: Path, fake_dataset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = []
    train = runner.train_supervised

    def keep(*args, **kwargs):
        model = train(*args, **kwargs)
        trained.append({k: v.clone() for k, v in model[0].state_dict().items()})
        return model

    monkeypatch.setattr(runner, "train_supervised", keep)
    run_dir = _write_run(tmp_path / "run")
    run_probe(run_dir, _write_manifest(tmp_path / "m.csv"), out_dir=tmp_path / "p", label_fractions=(1.0,), seeds=1,
              baselines=("finetune",), options=_options(SupervisedBudget(steps=0)), verbose=False)

    # With no step taken, each backbone is exactly where it started: the encoder's file, and the
    # architecture initialised from the seed (0) for supervised from scratch.
    encoder = torch.load(run_dir / "encoder.pt", weights_only=True)
    torch.manual_seed(0)
    scratch = create_encoder("resnet18", in_channels=1, width=4)[0].state_dict()

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert len(trained) == 2
    assert [same(t, encoder) for t in trained] == [True, False]  # finetune runs before supervised
    assert [same(t, scratch) for t in trained] == [False, True]


def test_run_probe__random_init_fine_tune_is_the_supervised_baseline(tmp_path: Path, fake_dataset: None) -> None:
    run_dir = _write_run(tmp_path / "run")
    manifest = _write_manifest(tmp_path / "m.csv")
    kwargs = dict(out_dir=tmp_path / "p", label_fractions=(0.5,), seeds=2, options=_options(), verbose=False)
    before = runner.collect_probe_runs(run_dir, manifest, baselines=("supervised",), **kwargs).runs
    after = runner.collect_probe_runs(run_dir, manifest, baselines=("finetune",), **kwargs).runs

    for seed in range(2):
        assert np.array_equal(after["supervised"][0.5][seed]["proba"], before["supervised"][0.5][seed]["proba"])
    # and fine-tuning the encoder is another model: its probabilities differ
    assert not np.array_equal(after["finetune"][0.5][0]["proba"], after["supervised"][0.5][0]["proba"])


def test_run_probe__finetune_of_a_random_encoder_is_supervised_alone(tmp_path: Path, fake_dataset: None) -> None:
    metrics = run_probe("random", _write_manifest(tmp_path / "m.csv"), TINY, out_dir=tmp_path / "p",
                        label_fractions=(1.0,), seeds=1, baselines=("finetune",), options=_options(), verbose=False)
    assert "finetune" not in metrics["methods"] and "supervised" in metrics["methods"]


def _age_manifest(path: Path) -> Path:
    """Twelve training and four test subjects, one scan each, an age per subject (a regression)."""
    rows = [ManifestRow(f"sub-{split}{s}/scan.nii.gz", f"sub-{split}{s}", "", "T1w",
                        str(20 + 3 * s + (split == "test")), split, hashlib.sha1(f"{split}{s}".encode()).hexdigest())
            for split, n in (("train", 12), ("test", 4)) for s in range(n)]
    write_manifest(Manifest(path.parent, rows), path)
    return path


def test_probe_cli__finetune_on_a_regression_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    manifest = _age_manifest(tmp_path / "m.csv")
    code = main(["probe", "--encoder", "random", "--manifest", str(manifest), "--out", str(tmp_path / "p"),
                 "--finetune", "model.width=4"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mocomri probe: error: the 'finetune' method has no regression form: drop it (--finetune), "
                   "or probe with --task classification")


@pytest.mark.parametrize("flag", ["--finetune-steps", "--supervised-steps"])
def test_probe_cli__one_step_budget_under_both_names(flag: str) -> None:
    args = build_parser().parse_args(["probe", "--encoder", "random", "--manifest", "m.csv", "--finetune", flag, "7"])
    assert args.finetune and args.finetune_steps == 7
