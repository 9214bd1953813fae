"""The package's shape, read from its source: layers that only point down, imports at the top of
modules, functions that fit a screen or two, and no module that only the lab or the tests use.

These read the code as text (``ast``), so they fail the moment a change breaks the shape, whatever
the change computes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mocomri"

# Lower layers never import higher ones. config and its sections are the bottom; data, augment
# and models build on them; training, then evaluation (it runs training: probes, fine-tuning),
# then the parameter-efficient modules (they train and evaluate); then the experiments made of
# those (ablation, crossfit, export); then the command line.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "validation", "files", "timing"),
    ("config", "run_dir", "data.settings", "augment.settings", "data.manifest.schema"),
    ("data", "augment", "models", "losses"),
    ("train",),
    ("eval",),
    ("peft",),
    ("ablation", "crossfit", "export", "api"),
    ("commands", "cli", "__main__", "__init__"),
]
# config validates choice-valued keys against the values their implementations define (defined
# once, beside the code); those modules import nothing of the config at run time, so this edge
# up cannot close a cycle (test below).
ALLOWED_VALUES = ("models.encoders", "models.norm", "models.momentum", "models.shuffle_bn",
                  "train.optimizer", "train.runtime")
MAX_FUNCTION_LINES = 100
MAX_LOCAL_IMPORTS = 20


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        out[name] = path
    return out


def _layer(module: str) -> int:
    best, best_len = None, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    assert best is not None, f"mocomri.{module} has no layer in LAYERS"
    return best


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, module)`` of every import from mocomri, skipping ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(sub) for sub in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "mocomri":  # from mocomri import validation
            out.extend((node.lineno, f"mocomri.{a.name}") for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mocomri"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names if a.name.startswith("mocomri"))
    return out


def _strip(module: str) -> str:
    return module.removeprefix("mocomri").removeprefix(".") or "__init__"


def test_layers__no_module_imports_a_higher_layer() -> None:
    wrong = []
    for name, path in _modules().items():
        for line, target in _runtime_imports(ast.parse(path.read_text())):
            target = _strip(target)
            if name == "config" and target in ALLOWED_VALUES:
                continue
            if _layer(target) > _layer(name):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports mocomri.{target}")
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


@pytest.mark.parametrize("module", ALLOWED_VALUES)
def test_layers__allowed_values_modules_do_not_import_the_config(module: str) -> None:
    path = _modules()[module]
    targets = {_strip(t) for _, t in _runtime_imports(ast.parse(path.read_text()))}
    assert "config" not in targets


def test_imports__at_the_top_outside_commands_with_a_reason() -> None:
    local, unexplained = [], []
    for name, path in _modules().items():
        if name.startswith("commands"):
            continue  # commands import their work when run: `mocomri --help` stays fast
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    where = f"{path.relative_to(ROOT)}:{sub.lineno}"
                    local.append(where)
                    if "#" not in lines[sub.lineno - 1] and not lines[sub.lineno - 2].strip().startswith("#"):
                        unexplained.append(where)
    assert len(set(local)) <= MAX_LOCAL_IMPORTS, sorted(set(local))
    assert not unexplained, "function-local imports without a comment giving the reason: " + ", ".join(unexplained)


def test_functions__none_over_a_hundred_lines() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_pretrain__the_loop_fits_a_screen() -> None:
    tree = ast.parse((PACKAGE / "train" / "pretrain.py").read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "pretrain"]
    assert fn.end_lineno - fn.lineno + 1 <= 60


def test_package__every_module_serves_the_package() -> None:
    """A module that only tools/ or tests/ import belongs in the lab (or is a test oracle)."""
    modules = _modules()
    imported: set[str] = set()
    for name, path in modules.items():
        for _, target in _runtime_imports(ast.parse(path.read_text())):
            target = _strip(target)
            if target != name:
                imported.add(target)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # from mocomri.x import y, where y is a module
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mocomri"):
                base = _strip(node.module)
                imported.update(a.name if base == "__init__" else f"{base}.{a.name}" for a in node.names)
    entry = ("cli", "__main__", "__init__", "commands", "api")  # api: what `import mocomri` offers
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    unused = [m for m in modules if m not in imported and m not in packages and not m.startswith(entry)]
    assert not unused, f"modules no package code imports: {unused}"
