"""The house rules of docs/architecture.md that `lint-imports` does not see: no import circle
inside a layer either (lazy imports count), six modules at most at the top of mmae/, and a
top-level namespace that stays free of the training stack."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mmae

PACKAGE = Path(mmae.__file__).parent


def _import_graph() -> dict[str, set[str]]:
    """mmae module -> the mmae modules it imports anywhere in its body."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            # (importing a package's module runs the package's __init__ first: not an edge back)
            graph[name] |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_among_mmae_modules():
    assert _a_cycle(_import_graph()) is None


def test_the_circle_finder_finds_one():
    assert _a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_at_most_six_modules_at_the_top_of_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 6, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == {
        "cli", "config", "training", "evaluation", "data", "artifacts", "modalities", "core"}


@pytest.mark.slow
def test_the_top_level_namespace_loads_no_training_stack():
    code = ("import sys, mmae; mmae.load_encoder; "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'wandb', 'hydra', 'omegaconf') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_module_is_longer_than_450_lines():
    """A module a reader can hold: past 450 lines, one of its concerns wants its own module."""
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"split these modules: {long}"


def _imported(path: Path) -> set[str]:
    """The top-level names of the modules `path` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_test_helpers_import_by_names_nothing_else_on_the_path_shares():
    """Every folder's conftest.py is a module named `conftest`, and the scripts' tests put
    scripts/ on the path: a helper imported as `conftest`, or named like a script, would be
    whichever module pytest happened to load first."""
    tests = Path(__file__).parent
    scripts = {p.stem for p in (tests.parent / "scripts").glob("*.py")}
    helpers = {p.stem for p in tests.glob("*.py") if not p.stem.startswith("test_")} - {"conftest"}
    assert not helpers & scripts, f"rename these test helpers: {sorted(helpers & scripts)}"
    importers = sorted(str(p.relative_to(tests)) for p in tests.rglob("*.py") if "conftest" in _imported(p))
    assert not importers, f"import shared helpers from a module of their own, not conftest: {importers}"
