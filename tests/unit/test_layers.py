"""The import direction of corral's subpackages (docs/architecture.md): data flows one way, so
a layer imports only from itself and the layers below it, and nothing imports the composition
root. Read from the source with ast; imports under `if TYPE_CHECKING:` are type hints only and
are not counted (contract.py names policy.document's Document in a signature that way)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "daemon" / "corral"

# layer of each top-level module or subpackage of corral
LAYER = {
    "__init__": "base",
    "config": "base",
    "contract": "base",
    "logs": "base",
    "memory": "base",
    "bpf": "base",
    "kernel": "kernel",
    "identity": "identity",
    "policy": "policy",
    "names": "names",
    "aibom": "aibom",
    "pipeline": "pipeline",
    "node": "node",
    "api": "api",
    "cli": "cli",
    "app": "app",
    "daemon": "app",
}
# what each layer may import besides itself
MAY_IMPORT = {
    "base": set(),
    "kernel": {"base"},
    "identity": {"base", "kernel"},
    "policy": {"base", "kernel"},
    "names": {"base", "policy"},
    "aibom": {"base", "kernel", "policy", "names"},
    "pipeline": {"base", "kernel", "identity", "policy", "names", "aibom"},
    "node": {"base", "kernel", "identity", "policy", "names", "aibom", "pipeline"},
    "api": {"base", "policy"},
    "cli": {"base"},
    "app": {
        "base",
        "kernel",
        "identity",
        "policy",
        "names",
        "aibom",
        "pipeline",
        "node",
        "api",
        "cli",
    },
}


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def dotted(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYER[top]


def _type_only(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every corral module path imports at run time."""
    tree = ast.parse(path.read_text())
    skip = _type_only(tree)
    here = dotted(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if node.lineno in skip if hasattr(node, "lineno") else False:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "corral"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "corral":
                continue
            if mod == "corral":  # from corral import x: x is the module
                out += [(node.lineno, f"corral.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
    return out


def test_every_module_has_a_layer() -> None:
    for path in modules():
        layer_of(dotted(path))  # KeyError names a new subpackage missing from LAYER


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    here = layer_of(dotted(path))
    wrong = []
    for line, mod in imported(path):
        name = mod if mod != "corral.__version__" else "corral"
        there = layer_of(name) if name.count(".") else "base"
        if there != here and there not in MAY_IMPORT[here]:
            wrong.append(f"line {line}: {here} imports {mod} ({there})")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The check itself: a kernel module importing policy is caught."""
    bad = PKG / "kernel" / "_layer_probe_tmp.py"
    bad.write_text("from corral.policy.baseline import Baseline\n")
    try:
        got = imported(bad)
        assert got == [(1, "corral.policy.baseline")]
        assert layer_of("corral.policy.baseline") not in MAY_IMPORT[layer_of(dotted(bad))]
    finally:
        bad.unlink()
