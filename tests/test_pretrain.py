"""The pretraining engine end to end on a tiny synthetic cohort: outputs, resume after SIGKILL, NaN
and collapse stops, the same-subject masking check, DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mocomri.cli import main as cli_main
from mocomri.config import load_config
from mocomri.files import file_digest
from mocomri.train.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort_manifest(tmp_path_factory) -> Path:
    """A 12-subject synthetic cohort and its manifest (subject-level train/test split)."""
    from mocomri.data.synthetic import make_cohort

    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, subjects=12, modalities=["T1w"], shape=(32, 32, 24), seed=0)
    manifest = root / "manifest.csv"
    assert cli_main(["manifest", "--root", str(root), "--out", str(manifest)]) == 0
    return manifest


@pytest.fixture(scope="module")
def one_subject_manifest(cohort_manifest) -> Path:
    """The cohort's manifest with every train subject but one merged into one pseudo-subject."""
    with cohort_manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    train = sorted({r["subject"] for r in rows if r["split"] == "train"})
    assert len(train) >= 5
    for r in rows:
        if r["split"] == "train" and r["subject"] != train[0]:
            r["subject"] = "near-duplicates-1"
    path = cohort_manifest.with_name("manifest_one_subject.csv")  # beside it: the paths stay valid
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_config(tmp_path: Path, manifest: Path, **overrides: object) -> Path:
    tree = {
        "data": {"manifest": str(manifest), "kind": "slices2d", "image_size": 32, "num_workers": 0, "min_foreground": 0.1, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "resnet18", "width": 8},
        "moco": {"queue_size": 64, "proj_hidden_dim": 32, "proj_dim": 16, "bn_splits": 2},
        "optim": {"lr": 0.05, "warmup_epochs": 0.5},
        "train": {"batch_size": 8, "max_steps": 24, "out_dir": str(tmp_path / "run"), "checkpoint_every_steps": 4, "deterministic": True, "precision": "fp32"},
        "log": {"every_steps": 2, "knn_monitor": False, "progress": False},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        tree[section][key] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrain_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mocomri", "pretrain", "--config", str(cfg), *extra]


def test_pretrain__writes_run_directory(tmp_path, cohort_manifest):
    # through the command, as a user runs it: the command hands pretrain() the kNN monitor
    cfg_path = tiny_config(tmp_path, cohort_manifest, train__max_steps=6, log__knn_monitor=True, log__knn_every_steps=4)
    assert cli_main(["pretrain", "--config", str(cfg_path)]) == 0
    run = Path(load_config(cfg_path).train.out_dir)
    for name in ("config.yaml", "metrics.jsonl", "encoder.pt", "summary.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = read_metrics(run / "metrics.jsonl", kind="train")
    assert [r["step"] for r in records] == [2, 4, 6]
    for key in ("loss", "lr", "momentum", "contrastive_acc", "pos_logit", "neg_logit", "spread", "alignment", "uniformity", "images_per_s", "data_wait_frac"):
        assert key in records[-1], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["config"]["train"]["max_steps"] == 6
    assert {"queue.keys", "queue.subjects", "queue.ptr"} <= set(ckpt["model"])
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    # the kNN monitor measures the encoder as initialised (step 0), every log.knn_every_steps and at the end
    monitor = read_metrics(run / "metrics.jsonl", kind="monitor")
    assert [r["step"] for r in monitor] == [0, 4, 6]
    assert all(0.0 <= r["knn_acc"] <= 1.0 for r in monitor)


def test_pretrain__knn_monitor_false_builds_no_monitor(tmp_path, cohort_manifest):
    from mocomri.train.pretrain import pretrain

    built = []

    def monitor(manifest, cfg, rt):  # the factory a command hands over; never called here
        built.append(cfg)

    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__max_steps=2, log__knn_monitor=False))
    assert pretrain(cfg, monitor=monitor).steps == 2
    assert built == []
    assert read_metrics(Path(cfg.train.out_dir) / "metrics.jsonl", kind="monitor") == []


def test_pretrain__resume_after_sigkill_matches_uninterrupted(tmp_path, cohort_manifest):
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref_dir.mkdir(), cut_dir.mkdir()
    ref_cfg = tiny_config(ref_dir, cohort_manifest)
    cut_cfg = tiny_config(cut_dir, cohort_manifest)
    subprocess.run(_pretrain_cmd(ref_cfg), check=True, env=_env(), cwd=REPO, capture_output=True)

    # Kill the second run for real (SIGKILL: no handler, no cleanup) once it has checkpointed.
    proc = subprocess.Popen(_pretrain_cmd(cut_cfg), env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = cut_dir / "run" / "checkpoints" / "step_00000008.pt"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (cut_dir / "run" / "summary.json").exists()

    out = subprocess.run(_pretrain_cmd(cut_cfg), check=True, env=_env(), cwd=REPO, capture_output=True, text=True)
    assert "resuming from" in out.stdout
    ref = {r["step"]: r["loss"] for r in read_metrics(ref_dir / "run" / "metrics.jsonl", kind="train")}
    cut = {r["step"]: r["loss"] for r in read_metrics(cut_dir / "run" / "metrics.jsonl", kind="train")}
    assert sorted(cut) == sorted(ref)
    assert set(range(2, 25, 2)) <= set(ref)  # and each epoch's end
    for step in ref:
        assert cut[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    a = torch.load(ref_dir / "run" / "encoder.pt", weights_only=True)
    b = torch.load(cut_dir / "run" / "encoder.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_pretrain__nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cohort_manifest, monkeypatch):
    from mocomri.train import pretrain as pretrain_mod

    real_forward = pretrain_mod.MoCo.forward
    calls = {"n": 0}

    def poisoned_forward(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # the 7th step's loss is NaN
            out = out._replace(loss=out.loss * float("nan")) if hasattr(out, "_replace") else out
            if not hasattr(out, "_replace"):
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(pretrain_mod.MoCo, "forward", poisoned_forward)
    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__max_steps=12))
    with pytest.raises(pretrain_mod.NonFiniteLossError, match=r"NaN/Inf at step 7 .*last good checkpoint.*step 4"):
        pretrain_mod.pretrain(cfg)
    last = torch.load(Path(cfg.train.out_dir) / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_pretrain__cli_reports_unknown_config_key(tmp_path, cohort_manifest, capsys):
    cfg = tiny_config(tmp_path, cohort_manifest)
    assert cli_main(["pretrain", "--config", str(cfg), "moco.queue_sise=8"]) == 2
    assert "unknown config key 'moco.queue_sise'" in capsys.readouterr().err


def test_pretrain__two_process_ddp_gloo(tmp_path, cohort_manifest):
    cfg = tiny_config(tmp_path, cohort_manifest, train__max_steps=4, train__batch_size=4)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "mocomri", "pretrain", "--config", str(cfg),
           "moco.mask_max_share=1"]  # every subject masked: each key entered keeps its subject's id
    env = _env()
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    subjects = ckpt["model"]["queue.subjects"]
    # 4 steps x 2 ranks x 4 keys entered the queue (keys gathered from both ranks)
    assert int((subjects >= 0).sum()) == 32


def test_pretrain__one_subject_holding_most_items_is_left_unmasked_and_the_run_says_so(tmp_path, one_subject_manifest, capsys):
    cfg = tiny_config(tmp_path, one_subject_manifest, train__max_steps=3)
    assert cli_main(["pretrain", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if line.startswith("note: same-subject masking"))
    # two train subjects: one of ~1/9 of the items (masked, ~1.2 % of the queue), the merged one
    # of ~8/9 (all masked: ~80 % of the queue gone); the merged one is left unmasked
    assert "masking 1 subjects" in note and "not the largest 1: 'near-duplicates-1' 8" in note
    assert "moco.mask_same_subject=false" in note and "--near-threshold" in note
    with one_subject_manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    subjects = sorted({r["subject"] for r in rows})  # the dataset's ids: indices in this list
    kept = {subjects.index(r["subject"]) for r in rows if r["split"] == "train" and r["subject"] != "near-duplicates-1"}
    queue = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]["queue.subjects"]
    # every key entered carries the masked subject's id or -1 (never masked); the merged one's id never
    assert set(queue[queue >= 0].tolist()) <= kept and subjects.index("near-duplicates-1") not in queue.tolist()
    assert int((queue == -1).sum()) > 0


def test_pretrain__balanced_subjects_are_all_masked_without_a_note(tmp_path, cohort_manifest, capsys):
    from mocomri.train.pretrain import pretrain

    # 8-9 train subjects of 20-22 slices each: 0.11-0.125 of the queue masked, within 0.15
    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__max_steps=2), ["moco.mask_max_share=0.15"])
    assert pretrain(cfg).steps == 2
    assert "note: same-subject masking" not in capsys.readouterr().out
    queue = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]["queue.subjects"]
    assert int((queue >= 0).sum()) == 2 * cfg.train.batch_size  # 2 steps of keys, each with its subject's id


def _spreads(monkeypatch, values: list[float]) -> list[int]:
    """Makes the n-th log step see the n-th spread of ``values``; returns the list of calls."""
    from mocomri.train import monitors

    calls: list[int] = []

    def fake_spread(z):
        calls.append(len(calls))
        return torch.tensor(values[min(len(calls) - 1, len(values) - 1)])

    monkeypatch.setattr(monitors, "embedding_spread", fake_spread)
    return calls


def _checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))


def test_pretrain__sustained_collapse_stops_and_keeps_the_checkpoint_from_before(tmp_path, cohort_manifest, monkeypatch):
    from mocomri.train import pretrain as pretrain_mod

    # log steps 2, 4 spread out (checkpoint at 4), then collapsed from step 6 on: 4 steps later
    # (step 10) the run stops; the checkpoint due at 8 is not written.
    _spreads(monkeypatch, [0.9, 0.9, 0.01])
    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__keep_checkpoints=5),
                      ["train.collapse_patience_steps=4", "train.collapse_spread=0.2"])
    with pytest.raises(pretrain_mod.CollapsedRunError) as caught:
        pretrain_mod.pretrain(cfg)
    message = str(caught.value)
    assert "spread was 0.010 at step 10" in message and "since step 6 (train.collapse_patience_steps=4)" in message
    assert "last good checkpoint" in message and "(step 4)" in message
    assert "optim.lr" in message and "moco.mask_same_subject" in message and "moco.temperature" in message
    assert "\n" not in message
    run = Path(cfg.train.out_dir)
    assert _checkpoint_steps(run) == [4]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    assert not (run / "encoder.pt").exists()


def test_pretrain__checkpoint_steps_are_log_steps_and_skipped_while_collapsing(tmp_path, cohort_manifest, monkeypatch):
    from mocomri.train.pretrain import pretrain

    # log.every_steps=3 and checkpoints every 4 steps: log steps 3, 4, 6, 8, 9, 12. The spread
    # is below the threshold at step 4, so the checkpoint due then is not written; and from
    # step 9 on, within the patience: the run ends (not stops) at 12 and writes its final state.
    calls = _spreads(monkeypatch, [0.9, 0.01, 0.9, 0.9, 0.01, 0.01])
    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__max_steps=12, train__keep_checkpoints=5, log__every_steps=3))
    assert pretrain(cfg).steps == 12
    run = Path(cfg.train.out_dir)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", kind="train")] == [3, 4, 6, 8, 9, 12]
    assert len(calls) == 6
    assert _checkpoint_steps(run) == [8, 12]
    assert (run / "encoder.pt").is_file()


def test_pretrain__collapse_with_stop_on_collapse_false_warns_and_runs_to_the_end(tmp_path, cohort_manifest, capsys):
    from mocomri.train.pretrain import pretrain

    # A threshold no spread reaches (spread is at most about 1): every log step counts as collapsed.
    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__max_steps=8),
                      ["train.collapse_spread=10", "train.collapse_patience_steps=0", "train.stop_on_collapse=false"])
    result = pretrain(cfg)
    run = Path(cfg.train.out_dir)
    assert result.steps == 8 and (run / "encoder.pt").is_file()
    assert _checkpoint_steps(run) == [4, 8]
    out = capsys.readouterr()
    assert (out.out + out.err).count("the embeddings are collapsing") == 4  # log steps 2, 4, 6, 8


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cohort_manifest) -> Path:
    """A finished 4-step run (optim.lr=0.03) in ``run/``, beside the ``cfg.yaml`` it ran."""
    root = tmp_path_factory.mktemp("finished")
    assert cli_main(["pretrain", "--config", str(tiny_config(root, cohort_manifest, train__max_steps=4, optim__lr=0.03))]) == 0
    return root


def _copy_of(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The finished run's config and a copy of its run directory (each test changes its own)."""
    shutil.copytree(finished_run / "run", tmp_path / "run")
    return finished_run / "cfg.yaml", tmp_path / "run"


def _files(run: Path) -> dict[Path, bytes]:
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_pretrain__resume_under_another_config_is_refused_naming_the_changes_and_changes_nothing(finished_run, tmp_path, capsys):
    cfg, run = _copy_of(finished_run, tmp_path)
    before = _files(run)
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", str(cfg), "--out", str(run), "optim.lr=0.1", "moco.momentum=0.9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"mocomri pretrain: error: {run} was pretrained with another config "
                          "(moco.momentum: 0.99 -> 0.9; optim.lr: 0.03 -> 0.1); --no-resume starts it over")
    assert _files(run) == before  # config.yaml, checkpoints, metrics, TensorBoard: byte for byte, no file added


def test_pretrain__resume_allows_keys_that_change_no_step(finished_run, tmp_path, capsys):
    cfg, run = _copy_of(finished_run, tmp_path)  # the run directory moved too: train.out_dir differs
    checkpoint = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", str(cfg), "--out", str(run), "log.every_steps=1", "train.time_budget_min=60",
                     "train.keep_checkpoints=3", "train.stop_on_collapse=false"]) == 0
    assert f"resuming from {run / 'checkpoints' / 'last.pt'} at step 4/4" in capsys.readouterr().out
    assert (run / "checkpoints" / "last.pt").read_bytes() == checkpoint
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["log"]["every_steps"] == 1 and saved["train"]["out_dir"] == str(run)


def test_pretrain__no_resume_starts_over_with_the_previous_run_moved_aside(finished_run, tmp_path):
    cfg, run = _copy_of(finished_run, tmp_path)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert cli_main(["pretrain", "--config", str(cfg), "--out", str(run), "--no-resume", "optim.lr=0.1",
                     "train.max_steps=2", "train.checkpoint_every_steps=2"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "step_00000002.pt"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 2 and last["config"]["optim"]["lr"] == 0.1
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", kind="train")] == [2]  # not the old run's 4
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.1
    (aside,) = (run / "previous").iterdir()  # nothing of the earlier run is lost
    moved = {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()}
    assert moved == {k: v for k, v in before.items() if k in moved} and len(moved) >= 5
    assert Path("checkpoints/last.pt") in moved and Path("config.yaml") in moved


def test_pretrain__model_init_starts_a_fresh_run_from_a_run_and_a_resumed_run_from_its_checkpoint(finished_run, tmp_path, cohort_manifest):
    source = tmp_path / "source"
    shutil.copytree(finished_run / "run", source)
    cfg = tiny_config(tmp_path, cohort_manifest, train__max_steps=2, optim__lr=1e-6)
    argv = ["pretrain", "--config", str(cfg), f"model.init={source}"]
    assert cli_main(argv) == 0
    run = tmp_path / "run"
    start, end = (torch.load(d / "encoder.pt", weights_only=True) for d in (source, run))
    torch.testing.assert_close(end["conv1.weight"], start["conv1.weight"], rtol=0, atol=1e-4)  # lr 1e-6: barely moved
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init"] == str(source)
    digest = file_digest(source / "encoder.pt")
    assert json.loads((run / "summary.json").read_text())["init_sha1"] == digest

    shutil.rmtree(source)  # a resumed run reads its checkpoint, never model.init again
    assert cli_main(argv) == 0
    assert json.loads((run / "summary.json").read_text())["init_sha1"] == digest


@pytest.mark.parametrize("override, message", [
    (["model.width=16"], "encoder.pt does not fit model.name=resnet18 width=16 in_channels=1 norm=batch: "
                         "conv1.weight is (8, 1, 7, 7) in the file but (16, 1, 7, 7) in the model"),
    (["model.init=nowhere"], "model.init=nowhere: encoder weights not found: nowhere"),
])
def test_pretrain__model_init_that_does_not_fit_or_is_missing_is_one_line_and_writes_nothing(
        override, message, finished_run, tmp_path, cohort_manifest, capsys):
    cfg = tiny_config(tmp_path, cohort_manifest)
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", str(cfg), f"model.init={finished_run / 'run'}", *override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
