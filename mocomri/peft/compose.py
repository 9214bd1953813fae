"""Composing module files: λ chosen on a validation split over a grid, the result and a report written.

λ is never chosen on the test split: :func:`compose_files` reads only the ``val`` rows of the
manifest it is given, and the report records the whole curve (λ, validation accuracy).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocomri.config import Config
from mocomri.files import atomic_write, file_digest
from mocomri.peft.arithmetic import add, analogy, check_compatible, negate
from mocomri.peft.module_file import PEM, load_pem, save_pem
from mocomri.peft.spec import PEMError

OPERATIONS = {"add": 2, "negate": 1, "analogy": 3}  # operation -> number of input modules
DEFAULT_GRID = tuple(i / 10 for i in range(11))
# How the validation sets score a λ: their mean accuracy; the smallest share of the better input
# module's accuracy kept on any one set (a merge for several tasks that loses least on its worst); or
# the first set's accuracy among the λ that keep every other set within a guard of the first input
# module's accuracy (a target domain gains only what the source can spare).
LAMBDA_SCORES = ("mean", "kept", "guarded")
DEFAULT_GUARD = 0.01  # guarded: the accuracy the guarded sets may lose (one point, the domain bar's tolerance)
# guarded: a λ's loss on a guarded set judged by the lower end of its paired 95% CI by subject
# (non-inferiority), or by the point estimate.
GUARD_BY = ("ci", "estimate")


def share_kept(accuracy: Sequence[float], reference: Sequence[float]) -> float:
    """The smallest ``accuracy[i] / reference[i]``: how much of each reference accuracy is kept, on
    the set where least is. A reference of 0 leaves nothing to lose: that set counts as fully kept."""
    if len(accuracy) != len(reference) or not accuracy:
        raise ValueError(f"{len(accuracy)} accuracies and {len(reference)} references: give one of each per set")
    return min(a / r if r > 0 else 1.0 for a, r in zip(accuracy, reference))


def choose_lambda(score: Callable[[float], float], grid: Sequence[float] = DEFAULT_GRID) -> tuple[float, list[dict]]:
    """The λ of ``grid`` with the highest ``score`` (the first of ties), and the curve.

    Returns:
        ``(λ, [{"lambda": λ, "score": s}, ...])`` in grid order.
    """
    if not grid:
        raise ValueError("the λ grid is empty")
    curve = [{"lambda": float(lam), "score": float(score(lam))} for lam in grid]
    best = max(curve, key=lambda point: point["score"])  # max keeps the first of equal scores
    return best["lambda"], curve


def choose_lambda_guarded(accuracies: Callable[[float], Sequence[float]], grid: Sequence[float] = DEFAULT_GRID,
                          guard: float = DEFAULT_GUARD, *,
                          lower_bounds: Callable[[float], Sequence[float]] | None = None) -> tuple[float, list[dict]]:
    """The λ of ``grid`` with the best first accuracy among those that lose at most ``guard`` on
    every other set against λ = 1 (the first input module alone); the first of ties.

    A λ loses at most ``guard`` on a set when its accuracy there is at least the reference's minus
    ``guard`` (``lower_bounds`` None: point estimates), or, given ``lower_bounds``, when the lower
    end of the confidence interval of its difference from the reference is at least ``−guard``: a
    non-inferiority test, which does not let a small validation split's noise pass a λ that loses
    more (choosing the best of many λ favours those whose loss the split underestimates).

    Args:
        accuracies: λ -> (accuracy on the set to improve, accuracy on each guarded set, ...).
        grid: the λ values tried; must hold 1, the reference (always allowed).
        guard: the accuracy a guarded set may lose against the reference, e.g. 0.01.
        lower_bounds: λ -> for each guarded set, the lower confidence bound of
            ``accuracy(λ) − accuracy(1)`` on it.

    Returns:
        ``(λ, [{"lambda": λ, "score": first accuracy, "guarded": [others], "allowed": bool}, ...])``
        in grid order; with ``lower_bounds``, each point also has ``"lower": [bounds]``.

    Raises:
        ValueError: an empty grid, a grid without λ = 1, fewer than two accuracies, or a negative guard.
    """
    if not grid:
        raise ValueError("the λ grid is empty")
    if 1.0 not in grid:
        raise ValueError("the guarded λ score compares every λ with the first module alone: the grid needs λ = 1")
    if guard < 0:
        raise ValueError(f"guard {guard}: the accuracy a guarded set may lose cannot be negative")
    reference = list(accuracies(1.0))
    if len(reference) < 2:
        raise ValueError("the guarded λ score needs a set to improve and at least one set to guard")
    curve = []
    for lam in grid:
        first, *others = (float(a) for a in accuracies(lam))
        point = {"lambda": float(lam), "score": first, "guarded": others}
        if float(lam) == 1.0:
            allowed = True
        elif lower_bounds is None:
            allowed = all(a >= r - guard for a, r in zip(others, reference[1:]))
        else:
            point["lower"] = [float(b) for b in lower_bounds(lam)]
            allowed = all(b >= -guard for b in point["lower"])
        curve.append({**point, "allowed": allowed})
    best = max((point for point in curve if point["allowed"]), key=lambda point: point["score"])
    return best["lambda"], curve


def compose(operation: str, pems: Sequence[PEM], lam: float | None = None) -> PEM:
    """``add`` (λ θ₁ ⊕ (1 − λ) θ₂), ``negate`` (−θ) or ``analogy`` (source_cls, target_ssl, source_ssl).

    Raises:
        PEMError: an unknown operation, the wrong number of modules, or a missing λ.
    """
    if operation not in OPERATIONS:
        raise PEMError(f"unknown operation {operation!r}; known: {', '.join(OPERATIONS)}")
    if len(pems) != OPERATIONS[operation]:
        raise PEMError(f"{operation} takes {OPERATIONS[operation]} module(s), got {len(pems)}")
    if operation == "negate":
        return negate(pems[0])
    if lam is None:
        raise PEMError(f"{operation} needs λ")
    return add(*pems, lam) if operation == "add" else analogy(*pems, lam)


@dataclass
class ComposeResult:
    module: Path
    report: Path
    lam: float | None
    curve: list[dict] = field(default_factory=list)


def compose_files(operation: str, modules: Sequence[str | Path], out: str | Path, *, lam: float | None = None,
                  encoder: str | Path | None = None,
                  val_manifest: str | Path | Sequence[str | Path] | None = None,
                  config: Config | None = None, grid: Sequence[float] = DEFAULT_GRID,
                  lambda_score: str = "mean", guard: float = DEFAULT_GUARD, guard_by: str = "ci",
                  device: str = "auto") -> ComposeResult:
    """Composes module files into ``out`` and writes ``<out>.report.json`` and ``.report.md``.

    Args:
        operation: ``add``, ``negate`` or ``analogy``.
        modules: the input module files, in the operation's order.
        out: the composed module file.
        lam: λ; None chooses it on the ``val`` rows of ``val_manifest`` over ``grid`` by the
            accuracy of the composed module's task head on the merged ``encoder``.
        encoder: the base encoder (run directory or ``encoder.pt``), for choosing λ.
        val_manifest: a manifest with labelled ``val`` rows, for choosing λ; or several (e.g. a
            source and a target domain), each scored alone and λ chosen on their mean accuracy.
        config: data settings; default: the run's config.
        grid: the λ values tried.
        lambda_score: ``mean``: λ maximises the mean accuracy over the ``val_manifest`` sets;
            ``kept`` (addition only): λ maximises the smallest share, over the sets, of the better
            input module's accuracy on that set (λ = 0 or 1) that the merge keeps; ``guarded``
            (two or more manifests): λ maximises the accuracy on the first manifest among the λ
            whose accuracy on every other manifest is at most ``guard`` below the first input
            module's (λ = 1), e.g. ``--val TARGET SOURCE`` for an analogy that must keep the source.
        guard: ``guarded``'s tolerance (default one point).
        guard_by: ``guarded``: ``ci`` (default) allows a λ when the lower end of the paired 95%
            bootstrap CI (by subject) of its accuracy minus the first module's is at least
            ``−guard`` on every other manifest (non-inferiority); ``estimate``, when the point
            estimate is.
        device: for the validation forward passes.

    Raises:
        PEMError: incompatible modules (naming the files and field), λ to choose without
            ``encoder`` and ``val_manifest``, an unknown ``lambda_score`` (or ``kept`` for
            another operation than addition, ``guarded`` with one manifest, a grid without 1 or a
            negative ``guard``).
    """
    if lambda_score not in LAMBDA_SCORES:
        raise PEMError(f"unknown λ score {lambda_score!r}; known: {', '.join(LAMBDA_SCORES)}")
    if lambda_score == "kept" and operation != "add":
        raise PEMError(f"the 'kept' λ score compares a merge with its inputs: it needs add, not {operation}")
    if guard_by not in GUARD_BY:
        raise PEMError(f"unknown guard test {guard_by!r}; known: {', '.join(GUARD_BY)}")
    if guard < 0:
        raise PEMError(f"--guard {guard}: the accuracy a guarded manifest may lose cannot be negative")
    if lambda_score == "guarded":
        if val_manifest is None or isinstance(val_manifest, (str, Path)) or len(val_manifest) < 2:
            raise PEMError("the 'guarded' λ score needs two or more --val manifests: the one to improve first, "
                           "then those to guard")
        if 1.0 not in grid:
            raise PEMError("the 'guarded' λ score compares every λ with the first module alone: "
                           "the grid needs λ = 1")
    pems = [load_pem(m) for m in modules]
    check_compatible(pems)
    curve: list[dict] = []
    validation: dict[str, Any] | None = None
    if operation != "negate" and lam is None:
        if encoder is None or val_manifest is None:
            raise PEMError(f"--lambda auto: {operation} needs --encoder and --val to choose λ on a validation split")
        manifests = [val_manifest] if isinstance(val_manifest, (str, Path)) else list(val_manifest)
        lam, curve = _choose_on_validation(operation, pems, encoder, manifests, config, grid, lambda_score,
                                           guard, guard_by, device)
        if lambda_score == "kept":
            score = "smallest share, over the manifests, of the better input module's accuracy kept"
        elif lambda_score == "guarded":
            judged = "the lower end of its 95% CI" if guard_by == "ci" else "its point estimate"
            score = (f"accuracy on the first manifest, among the λ losing at most {100 * guard:g} point(s) of "
                     f"the first module's accuracy on each other manifest ({judged})")
        else:
            score = "accuracy" if len(manifests) == 1 else "mean accuracy over the manifests"
        validation = {"manifest": ", ".join(map(str, manifests)), "manifest_sha1": ", ".join(file_digest(m) for m in manifests),
                      "split": "val", "score": score}
    result = compose(operation, pems, lam)
    out = save_pem(result, out)
    report = {"operation": operation, "lambda": lam, "inputs": [str(m) for m in modules], "module": str(out),
              "kind": result.spec.kind, "layers": len(result.layers), "heads": [list(h.labels) for h in result.heads],
              "validation": validation, "curve": curve}
    report_path = out.with_name(out.name + ".report.json")
    atomic_write(report_path, lambda f: f.write(json.dumps(report, indent=2).encode()))
    atomic_write(out.with_name(out.name + ".report.md"), lambda f: f.write(_markdown(report).encode()))
    return ComposeResult(out, report_path, lam, curve)


def _choose_on_validation(operation: str, pems: Sequence[PEM], encoder: str | Path,
                          val_manifests: Sequence[str | Path], config: Config | None, grid: Sequence[float],
                          lambda_score: str, guard: float, guard_by: str, device: str) -> tuple[float, list[dict]]:
    from mocomri.eval.metrics import classification_metrics
    from mocomri.peft.compare import accuracy_contrast
    from mocomri.peft.evaluate import module_proba
    from mocomri.peft.inputs import labelled_items, load_base

    base = load_base(encoder, config)
    probe = compose(operation, pems, 0.5)  # the heads (and so the classes) do not depend on λ
    heads = probe.heads
    if not heads:
        raise PEMError(f"{operation} of {', '.join(p.label for p in pems)} has no task head to choose λ with")
    classes = heads[0].labels if len(heads) == 1 else None
    sets = [labelled_items(m, base.config, "val", classes) for m in val_manifests]

    @functools.cache  # λ = 0 and 1 serve as the references and as grid points: one forward pass each
    def probas(lam: float) -> tuple:
        module = compose(operation, pems, lam)
        return tuple(module_proba(module, base, items, device=device) for items in sets)

    def accuracies(lam: float) -> tuple[float, ...]:
        return tuple(classification_metrics(items.labels, p)["accuracy"] for items, p in zip(sets, probas(lam)))

    def lower_bounds(lam: float) -> list[float]:
        return [accuracy_contrast(items.labels, [p, p1], [1, -1], groups=items.subjects)["ci95"][0]
                for items, p, p1 in zip(sets[1:], probas(lam)[1:], probas(1.0)[1:])]

    if lambda_score == "kept":
        reference = [max(pair) for pair in zip(accuracies(0.0), accuracies(1.0))]  # the better input on each set
        return choose_lambda(lambda lam: share_kept(accuracies(lam), reference), grid)
    if lambda_score == "guarded":
        return choose_lambda_guarded(accuracies, grid, guard, lower_bounds=lower_bounds if guard_by == "ci" else None)
    return choose_lambda(lambda lam: sum(accuracies(lam)) / len(sets), grid)


def _markdown(report: dict) -> str:
    lines = [f"# Module {report['operation']}", "",
             f"- inputs: {', '.join(report['inputs'])}", f"- result: {report['module']} ({report['kind']}, "
             f"{report['layers']} layers)", f"- λ: {report['lambda']}"]
    if report["validation"]:
        validation = report["validation"]
        lines += [f"- λ chosen on the '{validation['split']}' rows of {validation['manifest']} "
                  f"({validation.get('score', 'accuracy')})", "", "| λ | validation score |", "|---|---|"]
        if report["curve"] and "guarded" in report["curve"][0]:
            lines[-2:] = ["| λ | first manifest | other manifests | lower CI end of the loss | allowed |",
                          "|---|---|---|---|---|"]
            lines += [f"| {p['lambda']:.2f} | {p['score']:.4f} | {', '.join(f'{a:.4f}' for a in p['guarded'])} | "
                      f"{', '.join(f'{b:+.4f}' for b in p.get('lower', [])) or '—'} | "
                      f"{'yes' if p['allowed'] else 'no'} |" for p in report["curve"]]
        else:
            lines += [f"| {p['lambda']:.2f} | {p['score']:.4f} |" for p in report["curve"]]
    return "\n".join(lines) + "\n"
