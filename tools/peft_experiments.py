"""The composition experiments on brain-tumour MRI (Zhang et al. 2023, arXiv:2306.14870): merging
modules trained on label-skewed halves, merging a tumour-presence and a tumour-type module, and
domain transfer by analogy, for LoRA and (IA)³ over seeds, beside the linear probe and full
fine-tuning. tools/peft_lab/README.md states what each measures and its bar.

    .venv/bin/python tools/peft_experiments.py --encoder /work/runs/A_crop100 --out runs/peft \
        --kinds lora,ia3 --seeds 0,1,2
    .venv/bin/python tools/peft_experiments.py --encoder /work/runs/A_crop100 --out /tmp/peft_quick --quick

1. ``distribution``: the labelled training subjects split in two with opposite label skews (80% of
   glioma and meningioma images and 20% of notumor and pituitary, and the complement); one
   module per half, merged by λ-addition with λ chosen on val; beside each half, their mean, a
   module on the union, and (LoRA) the merge of halves initialised from different seeds.
2. ``multitask``: tumour vs no tumour ('notumor' against the three tumour classes) and tumour type
   (the three tumour classes, on tumour images only); one module each, merged (both heads kept),
   λ chosen on the mean of the two val accuracies; beside it each module used for both tasks.
3. ``domain``: the target domain is the same images through a fixed synthetic scanner shift
   (:mod:`tools.peft_lab.shift`: bias field, contrast, Rician noise), stated as such. MoCo modules
   on the unlabelled source and target training images; the target classifier is
   ``λ θ_source_cls ⊕ (1 − λ)(θ_target_ssl ⊖ θ_source_ssl)`` with ``θ_source_cls`` the union module
   of (1) and λ chosen on the labelled target val split (as the paper tunes on dev data).

Every accuracy is on a test split, with a 95% bootstrap CI by subject; differences are paired
(:mod:`tools.peft_lab.compare`). Modules train on the encoder frozen by the library
(:func:`mocomri.peft.train.train_module`); full fine-tuning runs the same loop and step count
(:func:`tools.peft_lab.baselines.fine_tune`). Into ``--out``: ``data/`` (derived manifests, the
shifted images), ``modules/`` and ``baselines/`` (one file each, reused when present: an
interrupted run resumes; a module made with other ``--targets`` or ``--rank`` is an error), and
per experiment ``<name>.json``, ``<name>.md``, ``<name>_lambda.png``.
``--quick`` runs everything on a few single-image subjects per class for a few steps: a smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.data.manifest import Manifest, read_manifest, write_manifest  # noqa: E402
from mocomri.eval.items import LabelledItems  # noqa: E402
from mocomri.eval.metrics import classification_metrics  # noqa: E402
from mocomri.files import state_dict_digest  # noqa: E402
from mocomri.peft import PEM, PEMSpec, add, analogy, load_pem, save_pem  # noqa: E402
from tools.peft_lab.compare import accuracy_contrast  # noqa: E402
from mocomri.peft.compose import DEFAULT_GRID, choose_lambda  # noqa: E402
from mocomri.peft.evaluate import module_proba, predict_with, score  # noqa: E402
from mocomri.peft.inputs import labelled_items, load_base  # noqa: E402
from mocomri.run_dir import encoder_config  # noqa: E402
from mocomri.peft.spec import default_targets  # noqa: E402
from mocomri.peft.train import TrainOptions, train_module  # noqa: E402
from tools.peft_lab.baselines import fine_tune, linear_probe, load_fine_tuned, probe_proba, save_fine_tuned  # noqa: E402
from tools.peft_lab.lambda_rules import DEFAULT_GUARD, GUARD_BY, choose_lambda_guarded, share_kept  # noqa: E402
from tools.peft_lab.report import Results  # noqa: E402
from tools.peft_lab.shift import ScannerShift, shift_manifest  # noqa: E402
from tools.peft_lab.subsets import label_skewed_halves, relabel  # noqa: E402

EXPERIMENTS = ("distribution", "multitask", "domain")
FAVOURED = ("glioma", "meningioma")  # the first half's 80% classes; the second half's are the other two
PRESENCE = {"glioma": "tumor", "meningioma": "tumor", "pituitary": "tumor", "notumor": "notumor"}
TYPE = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary", "notumor": None}
EVERY_LAMBDA = "analogy − source-only on test at every λ (points; read only: λ is chosen on val)"
DIFFERENT_INIT = 1000  # the different-init half B module is initialised from seed + this


@dataclass
class Budget:
    """Steps and statistics of a run; the same for every module, so the comparisons are at equal cost."""

    steps: int = 600  # cross-entropy steps of every module and of full fine-tuning
    moco_steps: int = 600  # MoCo steps of the domain modules
    batch_size: int = 32
    moco_batch_size: int = 64
    lr: float = 1e-3  # module and head (AdamW)
    moco_lr: float | None = None  # the MoCo modules' own; None: lr
    guard: float = DEFAULT_GUARD  # guarded domain λ: the source val accuracy the analogy may lose
    guard_by: str = "ci"  # ... judged by the lower end of its paired 95% CI ("ci") or the point estimate
    finetune_lr: float = 1e-4  # full fine-tuning moves every weight: a smaller step
    n_boot: int = 1000
    grid: tuple[float, ...] = DEFAULT_GRID
    share: float = 0.8
    targets: tuple[str, ...] = ()  # the modules' target patterns; () = the kind's defaults (mocomri.peft.spec)
    rank: int = 4  # LoRA's rank
    head_init: str = "random"  # cross-entropy modules' head: "random" or "probe" (LP-FT); full fine-tuning's stays random
    test_every_lambda: bool = False  # domain: also the test accuracy at every λ of the grid, to read only
    subset: int = 0  # single-image subjects kept per split and class; 0 keeps the whole manifest


QUICK = Budget(steps=3, moco_steps=3, batch_size=8, moco_batch_size=8, n_boot=50, grid=(0.0, 0.5, 1.0), subset=6)


class Lab:
    """What the experiments share: the base encoder, the data, the trained modules on disk, scoring."""

    def __init__(self, args: argparse.Namespace, budget: Budget) -> None:
        self.out, self.encoder, self.device, self.budget = Path(args.out), args.encoder, args.device, budget
        self.base = load_base(args.encoder, encoder_config(args.encoder, args.config, args.set))
        self.config = self.base.config
        self.encoder_sha1 = state_dict_digest(self.base.encoder.state_dict())  # what the modules record as their base
        self.source = Path(args.manifest)
        if budget.subset:
            self.source = self.write("source", subset(read_manifest(self.source), budget.subset))
        self.seconds: dict[str, float] = {}
        self._items: dict[tuple, LabelledItems] = {}
        self._probes: dict[tuple, object] = {}

    def settings(self) -> dict:
        return {"encoder": str(self.encoder), "encoder weights sha1": self.encoder_sha1,
                "source manifest": str(self.source), "device": self.device,
                "budget": dataclasses.asdict(self.budget)}

    def write(self, name: str, manifest: Manifest) -> Path:
        path = self.out / "data" / f"{name}.csv"
        write_manifest(manifest, path)
        return path

    def items(self, manifest: Path, split: str) -> LabelledItems:
        """A split's labelled items, classes in the order of the manifest's training classes."""
        key = (str(manifest), split)
        if key not in self._items:
            classes = tuple(read_manifest(manifest).select("train").labels())
            self._items[key] = labelled_items(manifest, self.config, split, classes)
        return self._items[key]

    def module(self, name: str, manifest: Path, kind: str, seed: int, *, objective: str = "ce",
               init_seed: int | None = None) -> PEM:
        """The module file ``modules/<name>.safetensors``, trained first if it is not on disk."""
        path = self.out / "modules" / f"{name}.safetensors"
        moco = objective == "moco"
        lr = self.budget.moco_lr if moco and self.budget.moco_lr is not None else self.budget.lr
        if not path.is_file():
            spec = PEMSpec(kind, targets=self.budget.targets, rank=self.budget.rank,
                           seed=seed if init_seed is None else init_seed)
            options = TrainOptions(objective=objective, steps=self.budget.moco_steps if moco else self.budget.steps,
                                   batch_size=self.budget.moco_batch_size if moco else self.budget.batch_size,
                                   lr=lr, seed=seed, device=self.device,
                                   head_init="random" if moco else self.budget.head_init)
            start = time.perf_counter()
            save_pem(train_module(self.encoder, manifest, spec, self.config, options), path)
            self.seconds[name] = time.perf_counter() - start
            print(f"  trained {name} in {self.seconds[name]:.0f} s", flush=True)
        pem = load_pem(path)
        # A module left by a run with other targets or rank would be compared as if it were this run's.
        targets = self.budget.targets or default_targets(self.base.encoder, kind)
        options = pem.provenance.get("options", {})
        head_init, made_lr = options.get("head_init", "random"), options.get("lr", lr)
        wanted = "random" if moco else self.budget.head_init
        if (pem.spec.targets != tuple(targets) or (kind == "lora" and pem.spec.rank != self.budget.rank)
                or head_init != wanted or made_lr != lr):
            raise SystemExit(f"{path}: made with targets {list(pem.spec.targets)}, rank {pem.spec.rank}, head "
                             f"{head_init}, lr {made_lr:g}; this run asks for targets {list(targets)}, rank "
                             f"{self.budget.rank}, head {wanted}, lr {lr:g}: use another --out")
        return pem

    def baselines(self, results: Results, section: str, name: str, manifest: Path, seed: int,
                  tests: dict[str, LabelledItems]) -> None:
        """The linear probe and full fine-tuning trained on ``manifest``, scored on each of ``tests``."""
        path = self.out / "baselines" / f"fine_tuned_{name}_s{seed}.pt"
        if not path.is_file():
            start = time.perf_counter()
            options = TrainOptions(steps=self.budget.steps, batch_size=self.budget.batch_size,
                                   lr=self.budget.finetune_lr, seed=seed, device=self.device)
            save_fine_tuned(fine_tune(self.encoder, manifest, self.config, options), path)
            self.seconds[path.stem] = time.perf_counter() - start
        tuned = load_fine_tuned(path)
        model = tuned.build(self.base)
        if (name, seed) not in self._probes:
            self._probes[(name, seed)] = linear_probe(self.base, self.items(manifest, "train"), seed=seed,
                                                      device=self.device)
        for where, items in tests.items():
            order = [tuned.head.labels.index(c) for c in items.classes]
            tuned_proba = predict_with(model, tuned.head, items, device=self.device)[:, order]
            probe = probe_proba(self._probes[(name, seed)], self.base, items, device=self.device)
            results.add(section, f"linear probe{where}", "—", seed, self.score(items, probe))
            results.add(section, f"full fine-tuning{where}", "—", seed, self.score(items, tuned_proba))

    def proba(self, pem: PEM, items: LabelledItems) -> np.ndarray:
        return module_proba(pem, self.base, items, device=self.device)

    def accuracy(self, pem: PEM, items: LabelledItems) -> float:
        return classification_metrics(items.labels, self.proba(pem, items))["accuracy"]

    def choose(self, val_score) -> tuple[float, list[dict]]:
        return choose_lambda(val_score, self.budget.grid)

    def score(self, items: LabelledItems, proba: np.ndarray) -> dict:
        return score(items, proba, n_boot=self.budget.n_boot)["accuracy"]

    def contrast(self, items: LabelledItems, probas: list[np.ndarray], weights: list[float]) -> dict:
        return accuracy_contrast(items.labels, probas, weights, groups=items.subjects, n_boot=self.budget.n_boot)


def subset(manifest: Manifest, per_class: int) -> Manifest:
    """The first ``per_class`` single-image subjects of each split and class (by name): a small, fixed cohort."""
    rows_of: dict[str, list] = {}
    for row in manifest.rows:
        rows_of.setdefault(row.subject, []).append(row)
    kept, counts = [], {}
    for subject in sorted(rows_of):
        rows = rows_of[subject]
        key = (rows[0].split, rows[0].label)
        if len(rows) == 1 and rows[0].label and counts.get(key, 0) < per_class:
            counts[key] = counts.get(key, 0) + 1
            kept.append(rows[0])
    return manifest.replace_rows(kept)


def distribution(lab: Lab, kinds: list[str], seeds: list[int]) -> Results:
    results = Results("distribution", "Modules trained on label-skewed halves of the training subjects "
                      f"({lab.budget.share:.0%} of {' and '.join(FAVOURED)} and {1 - lab.budget.share:.0%} of the "
                      "other classes, and the complement), merged by λ-addition; λ on val, accuracy on test (%).",
                      seeds, lab.settings())
    val, test = lab.items(lab.source, "val"), lab.items(lab.source, "test")
    for seed in seeds:
        halves = label_skewed_halves(read_manifest(lab.source), FAVOURED, lab.budget.share, seed)
        paths = [lab.write(f"half_{h}_s{seed}", m) for h, m in zip("ab", halves)]
        lab.baselines(results, "test accuracy", "source", lab.source, seed, {"": test})
        for kind in kinds:
            print(f"distribution: {kind}, seed {seed}", flush=True)
            a, b = (lab.module(f"{kind}_s{seed}_half_{h}", p, kind, seed) for h, p in zip("ab", paths))
            union = lab.module(f"{kind}_s{seed}_union", lab.source, kind, seed)
            lam, curve = lab.choose(lambda x: lab.accuracy(add(a, b, x), val))
            results.curve(kind, "same init", seed, curve)
            probas = {"half A": lab.proba(a, test), "half B": lab.proba(b, test),
                      "merged": lab.proba(add(a, b, lam), test), "union": lab.proba(union, test)}
            results.add("λ", "λ (same init)", kind, seed, {"value": lam}, scale=1)
            if kind == "lora":  # (IA)³ starts from ones whatever the seed: its inits never differ
                other = lab.module(f"{kind}_s{seed}_half_b_init{seed + DIFFERENT_INIT}", paths[1], kind, seed,
                                   init_seed=seed + DIFFERENT_INIT)
                with warnings.catch_warnings():  # the different-seed warning is the point here
                    warnings.simplefilter("ignore", UserWarning)
                    lam2, curve2 = lab.choose(lambda x: lab.accuracy(add(a, other, x), val))
                    probas["merged, different init"] = lab.proba(add(a, other, lam2), test)
                results.curve(kind, "different init", seed, curve2)
                results.add("λ", "λ (different init)", kind, seed, {"value": lam2}, scale=1)
            for name, proba in probas.items():
                results.add("test accuracy", name, kind, seed, lab.score(test, proba))
            pa, pb, pm, pu = probas["half A"], probas["half B"], probas["merged"], probas["union"]
            results.add("test accuracy", "mean of halves", kind, seed, lab.contrast(test, [pa, pb], [0.5, 0.5]))
            gain = lab.contrast(test, [pm, pa, pb], [1, -0.5, -0.5])
            gap = lab.contrast(test, [pu, pa, pb], [1, -0.5, -0.5])
            results.add("differences (points)", "merged − mean of halves", kind, seed, gain)
            results.add("differences (points)", "union − mean of halves", kind, seed, gap)
            if gap["value"]:  # no gap, nothing to close
                results.add("differences (points)", "share of the gap to the union closed (%)", kind, seed,
                            {"value": gain["value"] / gap["value"]})
            if "merged, different init" in probas:
                results.add("differences (points)", "same init − different init", kind, seed,
                            lab.contrast(test, [pm, probas["merged, different init"]], [1, -1]))
    for kind in kinds:
        gains = results.values("differences (points)", "merged − mean of halves", kind)
        lows = results.lows("differences (points)", "merged − mean of halves", kind)
        results.bar(kind, "merged − mean of halves ≥ 2 points, every CI above 0",
                    statistics.fmean(gains) >= 0.02 and min(lows) > 0,
                    f"{100 * statistics.fmean(gains):+.1f} points on average; lowest CI end {100 * min(lows):+.1f}")
    return results


def multitask(lab: Lab, kinds: list[str], seeds: list[int], lambda_on: str = "mean") -> Results:
    """Merging a presence and a type module. λ maximises the mean of the two val accuracies, or
    (``lambda_on="kept"``) the smaller of the two val accuracies as a share of each task's own
    module's: the merge that loses least on its worse task."""
    chosen_on = ("the mean of the two val accuracies" if lambda_on == "mean" else
                 "the smaller share of an own module's val accuracy kept")
    results = Results("multitask" if lambda_on == "mean" else f"multitask_lambda_{lambda_on}",
                      "A tumour-presence module (notumor vs the three tumour classes) and a "
                      "tumour-type module (three classes, tumour images only), merged by λ-addition with both "
                      f"heads; λ on {chosen_on}; accuracy on each task's test split (%).",
                      seeds, lab.settings())
    source = read_manifest(lab.source)
    tasks = {"presence": lab.write("task_presence", relabel(source, PRESENCE)),
             "type": lab.write("task_type", relabel(source, TYPE))}
    val = {t: lab.items(p, "val") for t, p in tasks.items()}
    test = {t: lab.items(p, "test") for t, p in tasks.items()}
    for seed in seeds:
        for task, path in tasks.items():
            lab.baselines(results, "test accuracy", task, path, seed, {f" on {task}": test[task]})
        for kind in kinds:
            print(f"multitask: {kind}, seed {seed}", flush=True)
            presence, tumour_type = (lab.module(f"{kind}_s{seed}_{t}", p, kind, seed) for t, p in tasks.items())
            own_val = {"presence": lab.accuracy(presence, val["presence"]),
                       "type": lab.accuracy(tumour_type, val["type"])}

            def val_score(x: float) -> float:
                merged = add(presence, tumour_type, x)
                accuracy = [lab.accuracy(merged, val[t]) for t in tasks]
                return statistics.fmean(accuracy) if lambda_on == "mean" else share_kept(accuracy, list(own_val.values()))

            lam, curve = lab.choose(val_score)
            results.curve(kind, "mean of tasks" if lambda_on == "mean" else "smaller share kept", seed, curve)
            results.add("λ", "λ", kind, seed, {"value": lam}, scale=1)
            probas = {}
            for name, x in (("merged", lam), ("presence module for both", 1.0), ("type module for both", 0.0)):
                composed = add(presence, tumour_type, x)
                probas[name] = {t: lab.proba(composed, test[t]) for t in tasks}
                scores = {t: lab.score(test[t], probas[name][t]) for t in tasks}
                for t in tasks:
                    results.add("test accuracy", f"{name} on {t}", kind, seed, scores[t])
                results.add("test accuracy", f"{name}, mean of tasks", kind, seed,
                            {"value": statistics.fmean(s["value"] for s in scores.values())})
            own = {"presence": "presence module for both", "type": "type module for both"}
            for t in tasks:
                results.add("differences (points)", f"merged − own module on {t}", kind, seed,
                            lab.contrast(test[t], [probas["merged"][t], probas[own[t]][t]], [1, -1]))
    for kind in kinds:
        merged = statistics.fmean(results.values("test accuracy", "merged, mean of tasks", kind))
        best = max(statistics.fmean(results.values("test accuracy", f"{n}, mean of tasks", kind))
                   for n in ("presence module for both", "type module for both"))
        kept = min(m / o for t, n in (("presence", "presence module for both"), ("type", "type module for both"))
                   for m, o in zip(results.values("test accuracy", f"merged on {t}", kind),
                                   results.values("test accuracy", f"{n} on {t}", kind)))
        results.bar(kind, "merged mean of tasks > best single module used for both; ≥ 95% of each own-module score",
                    merged > best and kept >= 0.95,
                    f"{100 * merged:.1f} vs {100 * best:.1f}; lowest share of an own-module score kept {100 * kept:.1f}%")
    return results


def domain(lab: Lab, kinds: list[str], seeds: list[int], lambda_on: str = "target") -> Results:
    """Domain transfer by analogy. λ is chosen on the target's val split (``lambda_on="target"``); on
    the mean of the target's and the source's val accuracy (``"both"``: one module for both domains);
    or (``"guarded"``) on the target's val split among the λ whose source val accuracy is at most
    ``--guard`` below the source-only module's (λ = 1;
    :func:`tools.peft_lab.lambda_rules.choose_lambda_guarded`): the target gains only what the source
    scanner can spare."""
    shift = ScannerShift()
    chosen_on = {"target": "the target val split",
                 "both": "the mean of the target and source val splits",
                 "guarded": f"the target val split, among the λ that keep the source val accuracy within "
                            f"{100 * lab.budget.guard:g} point(s) of the source-only module's ("
                            + ("the lower end of the paired 95% CI" if lab.budget.guard_by == "ci"
                               else "point estimate") + ")"}[lambda_on]
    results = Results("domain" if lambda_on == "target" else f"domain_lambda_{lambda_on}",
                      "Domain transfer by analogy to a synthetic scanner shift of the same images "
                      f"(bias field, gamma {shift.gamma}, Rician noise σ = {shift.noise_std}; tools/peft_lab/shift.py): "
                      f"λ θ_source_cls ⊕ (1 − λ)(θ_target_ssl ⊖ θ_source_ssl), λ on {chosen_on}; "
                      "accuracy on the target and source test splits (%).", seeds, lab.settings())
    target = lab.out / "data" / "target" / "manifest.csv"
    if not target.is_file():  # written last: its presence means every shifted image is there
        shifted = shift_manifest(read_manifest(lab.source), target.parent, shift)
        write_manifest(shifted, target)
    val, source_val_items = lab.items(target, "val"), lab.items(lab.source, "val")
    tests = {" on target": lab.items(target, "test"), " on source": lab.items(lab.source, "test")}
    for seed in seeds:
        lab.baselines(results, "test accuracy", "source", lab.source, seed, tests)
        for kind in kinds:
            print(f"domain: {kind}, seed {seed}", flush=True)
            source_cls = lab.module(f"{kind}_s{seed}_union", lab.source, kind, seed)  # the union module of (1)
            source_ssl = lab.module(f"{kind}_s{seed}_source_ssl", lab.source, kind, seed, objective="moco")
            target_ssl = lab.module(f"{kind}_s{seed}_target_ssl", target, kind, seed, objective="moco")

            @functools.cache
            def target_val(x: float) -> float:
                return lab.accuracy(analogy(source_cls, target_ssl, source_ssl, x), val)

            @functools.cache
            def source_proba(x: float) -> np.ndarray:
                return lab.proba(analogy(source_cls, target_ssl, source_ssl, x), source_val_items)

            def source_val(x: float) -> float:
                return classification_metrics(source_val_items.labels, source_proba(x))["accuracy"]

            def source_low(x: float) -> list[float]:  # the lower end of the source val loss's CI
                return [lab.contrast(source_val_items, [source_proba(x), source_proba(1.0)], [1, -1])["ci95"][0]]

            if lambda_on == "guarded":
                lam, curve = choose_lambda_guarded(lambda x: (target_val(x), source_val(x)), lab.budget.grid,
                                                   lab.budget.guard,
                                                   lower_bounds=source_low if lab.budget.guard_by == "ci" else None)
            else:
                lam, curve = lab.choose(target_val if lambda_on == "target"
                                        else lambda x: (target_val(x) + source_val(x)) / 2)
            if lambda_on != "guarded":  # guarded's curve is the two below, the chosen λ marked
                results.curve(kind, "analogy", seed, curve)
            if lambda_on != "target":
                for name, accuracy in (("target val", target_val), ("source val", source_val)):
                    results.curve(kind, name, seed, [{"lambda": float(x), "score": accuracy(x),
                                                      **({"chosen": True} if x == lam else {})}
                                                     for x in lab.budget.grid])
                if lambda_on == "guarded":
                    results.curve(kind, "allowed by the guard", seed, [{"lambda": p["lambda"], "score": p["score"]}
                                                                       for p in curve if p["allowed"]])
            results.add("λ", "λ", kind, seed, {"value": lam}, scale=1)
            if lab.budget.test_every_lambda:  # to read the trade-off the val split chose from; never to choose λ
                for where, items in tests.items():
                    test = {x: lab.accuracy(analogy(source_cls, target_ssl, source_ssl, x), items)
                            for x in lab.budget.grid}
                    for x in lab.budget.grid:
                        results.add(EVERY_LAMBDA, f"λ = {x:.2f}{where}", kind, seed, {"value": test[x] - test[1.0]})
            transferred = analogy(source_cls, target_ssl, source_ssl, lam)
            for where, items in tests.items():
                p_source, p_analogy = lab.proba(source_cls, items), lab.proba(transferred, items)
                results.add("test accuracy", f"source-only module{where}", kind, seed, lab.score(items, p_source))
                results.add("test accuracy", f"analogy{where}", kind, seed, lab.score(items, p_analogy))
                results.add("differences (points)", f"analogy − source-only{where}", kind, seed,
                            lab.contrast(items, [p_analogy, p_source], [1, -1]))
    for kind in kinds:
        gain = results.values("differences (points)", "analogy − source-only on target", kind)
        lows = results.lows("differences (points)", "analogy − source-only on target", kind)
        loss = results.values("differences (points)", "analogy − source-only on source", kind)
        results.bar(kind, "target: analogy − source-only ≥ 1 point, every CI above 0; source: loses ≤ 1 point",
                    statistics.fmean(gain) >= 0.01 and min(lows) > 0 and statistics.fmean(loss) >= -0.01,
                    f"target {100 * statistics.fmean(gain):+.1f} (lowest CI end {100 * min(lows):+.1f}); "
                    f"source {100 * statistics.fmean(loss):+.1f} points")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="the base encoder: a pretraining run directory or encoder.pt")
    parser.add_argument("--manifest", default="data_manifests/brain_tumor_mri.csv")
    parser.add_argument("--config", help="data settings and architecture (default: the run's config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--kinds", default="lora,ia3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--steps", type=int, help="cross-entropy steps (default 600; --quick 3)")
    parser.add_argument("--moco-steps", type=int, help="MoCo steps (default 600; --quick 3)")
    parser.add_argument("--lr", type=float, help="the modules' and heads' learning rate (AdamW; default 1e-3)")
    parser.add_argument("--moco-lr", type=float, help="the MoCo modules' learning rate (default: --lr)")
    parser.add_argument("--guard", type=float, help="--domain-lambda guarded: the source val accuracy the analogy "
                        "may lose against the source-only module (default 0.01, one point)")
    parser.add_argument("--guard-by", choices=GUARD_BY, help="--domain-lambda guarded: judge the "
                        "source val loss by the lower end of its paired 95%% CI by subject (default; "
                        "non-inferiority) or by its point estimate")
    parser.add_argument("--share", type=float, help="the distribution halves' skew: each half's share of its "
                        "favoured classes (default 0.8)")
    parser.add_argument("--targets", help="the modules' target patterns, comma-separated (e.g. 'layer4.*.conv*'; "
                        "default: each kind's own, see mocomri.peft.spec.default_targets)")
    parser.add_argument("--rank", type=int, help="LoRA's rank (default 4)")
    parser.add_argument("--domain-lambda", choices=("target", "both", "guarded"), default="target",
                        help="domain transfer: choose λ on the target's val split (default), on the mean of "
                        "the target's and the source's (writes domain_lambda_both.*), or on the target's among "
                        "the λ that lose at most --guard of source val accuracy (domain_lambda_guarded.*)")
    parser.add_argument("--multitask-lambda", choices=("mean", "kept"), default="mean",
                        help="multi-task: choose λ on the mean of the two tasks' val accuracies (default) or on "
                        "the smaller share of each own module's val accuracy kept (writes multitask_lambda_kept.*)")
    parser.add_argument("--head-init", choices=("random", "probe"), default="random",
                        help="the cross-entropy modules' head starts random (default) or as the linear probe on the "
                        "frozen features (LP-FT); full fine-tuning keeps a random head")
    parser.add_argument("--grid", help="the λ grid, comma-separated (default 0, 0.1, ..., 1)")
    parser.add_argument("--test-every-lambda", action="store_true",
                        help="domain: also report the analogy's test accuracy at every λ of the grid against the "
                        "source-only module (a trade-off to read, never to choose λ from; λ stays chosen on val)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few images, few steps, a coarse λ grid")
    args = parser.parse_args(argv)
    kinds, seeds = args.kinds.split(","), [int(s) for s in args.seeds.split(",")]
    experiments = args.experiments.split(",")
    unknown = sorted(set(experiments) - set(EXPERIMENTS)) + sorted(set(kinds) - {"lora", "ia3"})
    if unknown:
        parser.error(f"unknown experiment(s) or kind(s): {', '.join(unknown)}")
    for name, value in (("--lr", args.lr), ("--moco-lr", args.moco_lr)):
        if value is not None and value <= 0:
            parser.error(f"{name} {value}: a learning rate must be positive")
    if args.guard is not None and args.guard < 0:
        parser.error(f"--guard {args.guard}: the source accuracy the analogy may lose cannot be negative")
    if args.rank is not None and args.rank < 1:
        parser.error(f"--rank {args.rank}: LoRA's rank must be at least 1")
    budget = dataclasses.replace(QUICK if args.quick else Budget(),
                                 **{k: v for k, v in (("steps", args.steps), ("moco_steps", args.moco_steps),
                                                        ("lr", args.lr), ("moco_lr", args.moco_lr),
                                                        ("guard", args.guard), ("guard_by", args.guard_by),
                                                        ("share", args.share),
                                                        ("rank", args.rank), ("head_init", args.head_init)) if v is not None})
    if args.targets:
        budget = dataclasses.replace(budget, targets=tuple(args.targets.split(",")))
    if args.grid:
        budget = dataclasses.replace(budget, grid=tuple(float(x) for x in args.grid.split(",")))
    if args.test_every_lambda:
        if 1.0 not in budget.grid:
            parser.error("--test-every-lambda reads every λ against the source-only module: the grid needs λ = 1")
        budget = dataclasses.replace(budget, test_every_lambda=True)
    if args.domain_lambda == "guarded" and 1.0 not in budget.grid:
        parser.error("--domain-lambda guarded compares every λ with the source-only module: the grid needs λ = 1")
    started = time.perf_counter()
    lab = Lab(args, budget)
    runners = {"distribution": distribution, "multitask": lambda *a: multitask(*a, lambda_on=args.multitask_lambda),
               "domain": lambda *a: domain(*a, lambda_on=args.domain_lambda)}
    for name in EXPERIMENTS:  # in this order: domain reuses distribution's union modules
        if name in experiments:
            before = dict(lab.seconds)
            results = runners[name](lab, kinds, seeds)
            results.seconds = {k: v for k, v in lab.seconds.items() if k not in before}
            paths = results.write(args.out)
            print(f"{name}: {paths['markdown']}", flush=True)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
