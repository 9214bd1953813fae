"""Composing module files: λ chosen on a validation split over a grid, the result and a report written.

λ is the grid point with the best validation accuracy (the mean accuracy over several manifests),
and it is never chosen on the test split: :func:`compose_files` reads only the ``val`` rows of the
manifests it is given, and the report records the whole curve (λ, validation accuracy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocomri.config import Config
from mocomri.eval.metrics import classification_metrics
from mocomri.files import atomic_write, file_digest
from mocomri.peft.arithmetic import add, analogy, check_compatible, negate
from mocomri.peft.evaluate import module_proba
from mocomri.peft.inputs import labelled_items, load_base
from mocomri.peft.module_file import PEM, load_pem, save_pem
from mocomri.peft.spec import PEMError

OPERATIONS = {"add": 2, "negate": 1, "analogy": 3}  # operation -> number of input modules
DEFAULT_GRID = tuple(i / 10 for i in range(11))


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
        device: for the validation forward passes.

    Raises:
        PEMError: incompatible modules (naming the files and field), or λ to choose without
            ``encoder`` and ``val_manifest``.
    """
    pems = [load_pem(m) for m in modules]
    check_compatible(pems)
    curve: list[dict] = []
    validation: dict[str, Any] | None = None
    if operation != "negate" and lam is None:
        if encoder is None or val_manifest is None:
            raise PEMError(f"--lambda auto: {operation} needs --encoder and --val to choose λ on a validation split")
        manifests = [val_manifest] if isinstance(val_manifest, (str, Path)) else list(val_manifest)
        lam, curve = _choose_on_validation(operation, pems, encoder, manifests, config, grid, device)
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
                          device: str) -> tuple[float, list[dict]]:

    base = load_base(encoder, config)
    probe = compose(operation, pems, 0.5)  # the heads (and so the classes) do not depend on λ
    heads = probe.heads
    if not heads:
        raise PEMError(f"{operation} of {', '.join(p.label for p in pems)} has no task head to choose λ with")
    classes = heads[0].labels if len(heads) == 1 else None
    sets = [labelled_items(m, base.config, "val", classes) for m in val_manifests]

    def mean_accuracy(lam: float) -> float:
        module = compose(operation, pems, lam)
        return sum(classification_metrics(items.labels, module_proba(module, base, items, device=device))["accuracy"]
                   for items in sets) / len(sets)

    return choose_lambda(mean_accuracy, grid)


def _markdown(report: dict) -> str:
    lines = [f"# Module {report['operation']}", "",
             f"- inputs: {', '.join(report['inputs'])}", f"- result: {report['module']} ({report['kind']}, "
             f"{report['layers']} layers)", f"- λ: {report['lambda']}"]
    if report["validation"]:
        validation = report["validation"]
        lines += [f"- λ chosen on the '{validation['split']}' rows of {validation['manifest']} "
                  f"({validation.get('score', 'accuracy')})", "", "| λ | validation score |", "|---|---|"]
        lines += [f"| {p['lambda']:.2f} | {p['score']:.4f} |" for p in report["curve"]]
    return "\n".join(lines) + "\n"
