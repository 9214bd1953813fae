"""``mocomri peft train | compose | eval | merge``: parameter-efficient modules on a frozen encoder, and their arithmetic."""

from __future__ import annotations

import argparse

from mocomri.commands._config_args import add_config_arguments, load_encoder_config


def _lambda(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _grid(text: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(not 0.0 <= x <= 1.0 for x in grid):
        raise argparse.ArgumentTypeError(f"λ values lie in [0, 1], got {text!r}")
    return grid


def _patterns(text: str) -> list[str]:
    patterns = [t.strip() for t in text.split(",") if t.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(f"expected comma-separated module name patterns, got {text!r}")
    return patterns


def _common(p: argparse.ArgumentParser, encoder_required: bool = True) -> None:
    # Required wherever a module meets its encoder: a random base is asked for by name
    # ("--encoder random"), never got by leaving the option out.
    p.add_argument("--encoder", required=encoder_required,
                   help="the base encoder: a pretraining run directory, an encoder.pt, or 'random'"
                   + ("" if encoder_required else " (needed only to choose λ on --val)"))
    add_config_arguments(p, help="YAML config for the data settings and the architecture (default: the run's "
                         "config.yaml; for 'random' or a bare encoder.pt, the defaults)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("peft", help="train LoRA/(IA)3 modules on a frozen encoder, compose and evaluate them",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="peft_command", required=True)

    t = sub.add_parser("train", help="train a module (and a linear head with --objective ce)")
    _common(t)
    t.add_argument("--manifest", required=True, help="labelled train rows (ce) or the pretraining splits (moco)")
    t.add_argument("--kind", choices=["lora", "ia3"], default="lora")
    # One value per flag (comma-separated, repeatable), never nargs="*": a list option would
    # swallow the positional config overrides that follow it.
    t.add_argument("--targets", type=_patterns, action="extend", default=[], metavar="PATTERN[,PATTERN...]",
                   help="fnmatch patterns over module names, comma-separated or repeated, e.g. "
                   "'layer3.*.conv2,layer3.*.bn2' (default: per kind)")
    t.add_argument("--rank", type=int, default=4, help="LoRA rank r (default 4)")
    t.add_argument("--alpha", type=float, default=8.0, help="LoRA scale alpha; the update is alpha/r·BA (default 8)")
    t.add_argument("--init", choices=["kaiming", "gaussian"], default="kaiming", help="LoRA's A initialisation")
    t.add_argument("--init-seed", type=int, default=0, help="seed of LoRA's A (modules to compose share it)")
    t.add_argument("--objective", choices=["ce", "moco"], default="ce")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0, help="data order and head initialisation")
    # The probe start is the default: modules trained from it compose better (tools/peft_lab/README.md, LP-FT).
    t.add_argument("--head-init", choices=["random", "probe"], default="probe",
                   help="ce: the head starts as the linear probe on the frozen features (LP-FT; default) or random")
    t.add_argument("--out", required=True, help="the module file to write (.safetensors)")
    t.set_defaults(func=run_train)

    c = sub.add_parser("compose", help="add, negate or take an analogy of modules; writes a module and a report")
    _common(c, encoder_required=False)  # composition is arithmetic on the modules' tensors alone
    op = c.add_mutually_exclusive_group(required=True)
    op.add_argument("--add", nargs=2, metavar=("A", "B"), help="λ·A ⊕ (1-λ)·B")
    op.add_argument("--negate", nargs=1, metavar="A", help="-A")
    op.add_argument("--analogy", nargs=3, metavar=("SOURCE_CLS", "TARGET_SSL", "SOURCE_SSL"),
                    help="λ·SOURCE_CLS ⊕ (1-λ)·(TARGET_SSL ⊖ SOURCE_SSL)")
    c.add_argument("--lambda", dest="lam", type=_lambda, default=None,
                   help="λ, or 'auto' (default) to choose it on the val rows of --val")
    c.add_argument("--val", action="append", metavar="MANIFEST",
                   help="a manifest whose labelled 'val' rows choose λ: the λ of --grid with the best accuracy "
                   "(repeated, e.g. --val SOURCE.csv --val TARGET.csv: the best mean accuracy, for one module "
                   "that serves both)")
    c.add_argument("--grid", type=_grid, default=None, metavar="L1,L2,...",
                   help="the λ values tried (default 0, 0.1, ..., 1)")
    c.add_argument("--out", required=True, help="the module file to write")
    c.set_defaults(func=run_compose)

    e = sub.add_parser("eval", help="a module's task head on its merged encoder, with 95%% bootstrap CIs")
    e.add_argument("module", help="a module file")  # before the overrides: the first positional is the module
    _common(e)
    e.add_argument("--manifest", required=True)
    e.add_argument("--split", default="test", choices=["test", "val", "train"])
    e.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    e.add_argument("--out", help="also write the metrics as JSON here")
    e.set_defaults(func=run_eval)

    m = sub.add_parser("merge", help="fold a module into its base encoder and write a plain encoder.pt")
    m.add_argument("module", help="a module file")
    _common(m)
    m.add_argument("--out", required=True, help="the encoder state dict to write (read by probe, export, pretrain)")
    m.set_defaults(func=run_merge)


def run_train(args: argparse.Namespace) -> int:
    from mocomri.peft import PEMSpec, save_pem
    from mocomri.peft.train import TrainOptions, train_module

    config = load_encoder_config(args, args.encoder)
    spec = PEMSpec(args.kind, tuple(args.targets), rank=args.rank, alpha=args.alpha, init=args.init, seed=args.init_seed)
    options = TrainOptions(objective=args.objective, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, head_init=args.head_init, device=args.device)
    pem = train_module(args.encoder, args.manifest, spec, config, options)
    path = save_pem(pem, args.out)
    print(f"wrote {path}: {pem.spec.kind} on {len(pem.layers)} layers, objective {args.objective}, "
          f"{sum(t.numel() for t in pem.tensors.values())} module parameters")
    return 0


def run_compose(args: argparse.Namespace) -> int:
    from mocomri.peft.compose import compose_files

    config = load_encoder_config(args, args.encoder)
    operation, modules = next((name, getattr(args, name)) for name in ("add", "negate", "analogy") if getattr(args, name))
    result = compose_files(operation, modules, args.out, lam=args.lam, encoder=args.encoder,
                           val_manifest=args.val, config=config, device=args.device,
                           **({"grid": args.grid} if args.grid else {}))
    chosen = "" if result.lam is None else f" with λ={result.lam:g}" + (" (chosen on val)" if result.curve else "")
    print(f"wrote {result.module}{chosen}; report {result.report}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json

    from mocomri.files import atomic_write
    from mocomri.peft.evaluate import evaluate_file

    config = load_encoder_config(args, args.encoder)
    result = evaluate_file(args.module, args.encoder, args.manifest, split=args.split, config=config,
                           n_boot=args.n_boot, device=args.device)
    for name, m in result["metrics"].items():
        if isinstance(m, dict):
            print(f"{name:18s} {m['value']:.4f}  95% CI [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]")
    if args.out:
        atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=2).encode()))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from mocomri.peft import load_pem
    from mocomri.peft.inputs import load_base
    from mocomri.peft.merge import save_merged

    config = load_encoder_config(args, args.encoder)
    pem = load_pem(args.module)
    path = save_merged(pem, load_base(args.encoder, config).encoder, args.out)
    print(f"wrote {path}: {args.encoder} with {pem.spec.kind} on {len(pem.layers)} layers folded in")
    return 0
