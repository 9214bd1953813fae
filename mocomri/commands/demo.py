"""``mocomri demo``: the whole job on the synthetic cohort, end to end, in a few CPU minutes.

synthetic cohort -> manifest (subject-level splits, audit) -> MoCo pretraining -> linear probe
against the random-init, raw-pixel and intensity-statistics baselines -> a table with 95%
confidence intervals.

The task: does a subject have grey-matter heterotopia (:mod:`mocomri.data.synthetic`), judged
from one axial slice at a time. The nodules show in nearly every slice through the white
matter and have the signal of grey matter, so a slice's histogram cannot tell; where the grey
matter lies can.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mocomri.commands._config_args import add_config_arguments, load_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="synthetic cohort -> pretrain -> probe -> table")
    p.add_argument("--out", default="demo_out", help="where the cohort, run and report go")
    add_config_arguments(p, help="pretraining config (default: configs/demo.yaml)")
    p.add_argument("--subjects", type=int, default=120)
    p.add_argument("--modalities", default="T1w,T2w,FLAIR")
    p.add_argument("--seeds", type=int, default=3, help="label-fraction draws per fraction")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.config import PACKAGED_CONFIGS
    from mocomri.data.manifest import build_manifest, write_manifest
    from mocomri.data.synthetic import make_cohort
    from mocomri.eval import format_table, run_probe
    from mocomri.eval.knn_monitor import KnnMonitor
    from mocomri.train.pretrain import pretrain

    out = Path(args.out)
    cohort, manifest = out / "cohort", out / "manifest.csv"
    default_config = PACKAGED_CONFIGS / "demo.yaml"
    if not (cohort / "participants.tsv").is_file():
        print(f"[1/4] writing a synthetic cohort of {args.subjects} subjects to {cohort}")
        make_cohort(cohort, subjects=args.subjects, modalities=tuple(args.modalities.split(",")), seed=0)
    if not manifest.is_file():
        print(f"[2/4] manifest and audit -> {manifest}")
        built = build_manifest(cohort, test_fraction=0.3, val_fraction=0.1, progress=True)
        write_manifest(built.manifest, manifest)
        print(built)
    # The cohort's manifest and the run directory are the demo's own: applied after the overrides.
    own = [f"data.manifest={manifest}", f"train.out_dir={out / 'run'}"]
    cfg = load_config_arguments(args, default=default_config, then=own)
    print("[3/4] MoCo pretraining on the train split (labels unused)")
    if cfg.train.keep_freed_memory:
        from mocomri.train.runtime import keep_freed_memory

        keep_freed_memory()  # process-wide: the command's choice
    pretrain(cfg, monitor=KnnMonitor)
    print("[4/4] linear probe on frozen features, per slice, against baselines")
    metrics = run_probe(
        encoder=out / "run",
        manifest=manifest,
        config=cfg,
        out_dir=out / "probe",
        label_fractions=(0.1, 1.0),
        seeds=args.seeds,
        baselines=("random_init", "raw_pixels", "intensity_stats"),
        unit="item",
        verbose=False,
    )
    print()
    print("Heterotopia vs healthy on the held-out test subjects, one prediction per axial slice:")
    print(format_table(metrics))
    print()
    print(f"run:         {out / 'run'}  (encoder.pt, checkpoints/, metrics.jsonl)")
    print(f"tensorboard: tensorboard --logdir {out / 'run' / 'tb'}")
    print(f"report:      {out / 'probe' / 'report.md'}")
    return 0
