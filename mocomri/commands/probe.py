"""``mocomri probe``: linear probe and kNN of a frozen encoder against its baselines, with a report;
``--finetune`` adds the encoder fine-tuned end to end beside the same training from random init.

A numeric label with more than 10 distinct values is a regression target (ridge and kNN
regression, MAE and R²); ``--task`` overrides the rule (:mod:`mocomri.eval.tasks`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mocomri.commands._config_args import add_config_arguments, config_source, load_encoder_config


def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"label fractions must be in (0, 1], got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="linear probe / kNN of a frozen encoder, with baselines and a report",
        description="Probe a frozen encoder at several label fractions, beside the random-init "
        "encoder, raw pixels and (with --supervised) training from scratch; with --finetune, also "
        "fine-tune the encoder end to end beside the same training from random init; writes report.md, "
        "metrics.json and plots.",
    )
    p.add_argument("--encoder", required=True, help="a pretraining run directory, an encoder.pt, or 'random'")
    p.add_argument("--manifest", required=True, help="manifest CSV with labelled train and test rows")
    p.add_argument("--out", help="output directory (default: RUN_DIR/probe, or runs/probe)")
    add_config_arguments(p, help="YAML config for the data settings and the architecture (default: the run's "
                         "config.yaml; for 'random' or a bare encoder.pt, the defaults)")
    p.add_argument("--label-fractions", type=_fractions, default=[0.01, 0.1, 1.0],
                   help="comma-separated shares of labelled training subjects (default 0.01,0.1,1.0)")
    p.add_argument("--seeds", type=int, default=3, help="draws per label fraction (default 3)")
    p.add_argument("--unit", choices=["item", "slice", "scan", "subject"], default="scan",
                   help="what one prediction is: an item (a slice or image; 'slice' is an alias), "
                   "a scan (its slices averaged) or a subject (default scan)")
    p.add_argument("--eval-split", choices=["test", "val"], default="test", help="split to evaluate on")
    p.add_argument("--task", choices=["auto", "classification", "regression"], default="auto",
                   help="classification (one class per label) or regression (the label as a number: ridge and "
                   "kNN regression, MAE and R²); auto (default): regression when every label is a finite number "
                   "and there are more than 10 distinct values, else classification")
    p.add_argument("--supervised", action="store_true",
                   help="also train the architecture from scratch on each labelled subset")
    p.add_argument("--finetune", action="store_true",
                   help="also fine-tune the encoder and a new linear head end to end on each labelled subset "
                   "(classification only); implies --supervised, the same training from random init")
    # One budget for both: a fine-tuned encoder is only comparable with a scratch run of the same length.
    p.add_argument("--finetune-steps", "--supervised-steps", dest="finetune_steps", type=int, default=200,
                   help="step budget of --finetune and --supervised (default 200; --supervised-steps is the "
                   "same flag under its older name)")
    p.add_argument("--no-raw-pixels", action="store_true", help="skip the raw-pixel baseline")
    p.add_argument("--intensity-stats", action="store_true",
                   help="also probe each image's intensity statistics (mean, std, percentiles)")
    p.add_argument("--features", choices=["pooled", "stages", "patches"], default="pooled",
                   help="what the probe reads off the encoders: the pooled output (default), every stage "
                        "pooled and concatenated, or (3D) the pooled output averaged over patches of the "
                        "pretraining views' side, for the random-init encoder alike")
    p.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN probe (default 20)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--allow-leakage", action="store_true",
                   help="evaluate even if test items share subjects or content with training (reported)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for feature extraction")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.eval import ProbeOptions, format_table, format_task, run_probe
    from mocomri.eval.baselines import SupervisedBudget

    cfg = load_encoder_config(args, args.encoder)
    run_dir = None if args.encoder == "random" else Path(args.encoder)
    default_out = run_dir / "probe" if run_dir is not None and run_dir.is_dir() else Path("runs/probe")
    baselines = ["random_init"] + ([] if args.no_raw_pixels else ["raw_pixels"])
    if args.intensity_stats:
        baselines.append("intensity_stats")
    if args.supervised:
        baselines.append("supervised")
    if args.finetune:
        baselines.append("finetune")
    options = ProbeOptions(
        eval_split=args.eval_split,
        knn_k=args.knn_k,
        n_boot=args.n_boot,
        allow_leakage=args.allow_leakage,
        device=args.device,
        bf16=args.bf16,
        batch_size=args.batch_size,
        features=args.features,
        task=args.task,
        supervised=SupervisedBudget(steps=args.finetune_steps),
        config_source=config_source(args, args.encoder),
    )
    metrics = run_probe(
        args.encoder,
        args.manifest,
        cfg,
        out_dir=args.out or default_out,
        label_fractions=args.label_fractions,
        seeds=args.seeds,
        baselines=baselines,
        unit=args.unit,
        options=options,
    )
    print(format_task(metrics))
    print(format_table(metrics))
    if metrics["leakage"]["findings"]:
        print(f"warning: evaluated with {len(metrics['leakage']['findings'])} leakage finding(s) allowed")
    print(f"report: {metrics['files']['report']}")
    return 0
