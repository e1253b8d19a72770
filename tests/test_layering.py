"""The package's imports run one way (ops ← nn ← models; data beside models; eval and train on them; MAG on
those; serving and the CLI on top), and no module imports another package's private name."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "agiformer"
# A package may import from packages of a lower rank only; rank 0 is the shared top-level modules.
RANK = {"errors": 0, "validation": 0, "serialization": 0, "precision": 0, "ops": 1, "nn": 2, "models": 3,
        "data": 3, "eval": 4, "train": 5, "mag": 6, "serve": 7, "cli": 8}


def imports() -> list[tuple[str, str, str, str]]:
    """(importing file, its package, imported package, imported name) for every import of agiformer."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if len(parts) == 1:
            continue  # agiformer/__init__.py and __main__.py: the entry points sit above every package
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "agiformer":
                found += [(str(path), parts[0], alias.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("agiformer."):
                found += [(str(path), parts[0], node.module.split(".")[1], alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(str(path), parts[0], alias.name.split(".")[1], "") for alias in node.names
                          if alias.name.startswith("agiformer.")]
    return found


def layering_violations(edges) -> list[str]:
    return [f"{path}: {package} imports {target}" for path, package, target, _ in edges
            if package != target and RANK[target] >= RANK[package]]


def test_every_package_has_a_rank():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules == set(RANK)


def test_imports_run_one_way():
    edges = imports()
    assert len(edges) > 100  # the walk found the package's imports
    assert layering_violations(edges) == []


def test_layering_check_flags_an_upward_import():
    assert layering_violations([("agiformer/ops/x.py", "ops", "nn", "Block")]) == ["agiformer/ops/x.py: ops imports nn"]
    assert layering_violations([("agiformer/eval/x.py", "eval", "train", "f")]) != []


def private_imports(edges) -> list[str]:
    return [f"{path} imports {name} from {target}" for path, package, target, name in edges
            if package != target and name.startswith("_")]


def test_no_private_name_crosses_a_package():
    assert private_imports(imports()) == []
    assert private_imports([("agiformer/nn/x.py", "nn", "ops", "_helper")]) == ["agiformer/nn/x.py imports _helper from ops"]
