"""The package's shape: no import cycles, a core that names no workload, light predict path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, subprocess_env

PACKAGE = REPO / "tagifai"
CORE = [p for p in PACKAGE.glob("*.py")]  # everything outside workloads/


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """tagifai modules a file imports, at any level (lazy imports in functions included).

    ``from package import module`` counts as importing the module, not the package.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
    return {name for name in found if name in modules}


def test_no_module_imports_another_that_imports_it_back():
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    cycles.append(" -> ".join([*trail, dep]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*trail, dep]))
    assert cycles == []


def test_the_core_names_no_workload_or_architecture():
    words = ("text", "images", "linear", "ngram", "cnn", "mlp", "resnet18")
    offenders = []
    for path in CORE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in words:
                        offenders.append(f"{path.name}:{node.lineno} compares with {side.value!r}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("tagifai.workloads.text", "tagifai.workloads.images")
            ):
                offenders.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert offenders == []


def test_loading_the_text_predict_path_imports_neither_optuna_nor_sklearn():
    code = (
        "import sys\n"
        "import tagifai.cli, tagifai.predict, tagifai.pyfunc, tagifai.logged_models\n"
        "from tagifai.workloads import get_workload\n"
        "get_workload('text'); get_workload('images')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'sklearn', "
        "'optuna_integration', 'iterstrat'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_local_environment_or_store_is_tracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".venv", "mlflow.db", "experiments/optuna.db"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == []  # a fresh clone makes its own venv and stores
