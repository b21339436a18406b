"""The layout follows the flow: a stage imports only the stages before it.

Like scikit-learn's test_common, one test over the whole package: each stage
subpackage imports only earlier stages and the shared modules, nothing outside
`usecases/` imports a use case, and every stage has a mirrored tests folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aistack

SRC = Path(aistack.__file__).parent
TESTS = Path(__file__).parent
FLOW = [
    "contract",
    "lake",
    "governance",
    "engine",
    "features",
    "registry",
    "training",
    "serving",
    "monitoring",
]
SHARED = {"errors", "settings", "sql", "htmlpage", "wal", "locks"}
ABOVE = {"workspace": "registry"}  # a shared module sits at the stage it needs


def imported(path: Path) -> set[str]:
    """The `aistack.<top>` packages a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "aistack" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("stage", FLOW)
def test_a_stage_imports_only_the_stages_before_it(stage: str) -> None:
    allowed = {*FLOW[: FLOW.index(stage) + 1], *SHARED}
    allowed |= {
        m for m, level in ABOVE.items() if FLOW.index(level) < FLOW.index(stage)
    }
    wrong = {
        f"{path.relative_to(SRC)} imports aistack.{top}"
        for path in (SRC / stage).rglob("*.py")
        for top in imported(path) - allowed
    }
    assert wrong == set()


def test_nothing_outside_usecases_imports_a_use_case() -> None:
    wrong = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "usecases" not in path.relative_to(SRC).parts
        and "usecases" in imported(path)
    ]
    assert wrong == []


@pytest.mark.parametrize("stage", FLOW)
def test_every_stage_has_a_docstring_and_mirrored_tests(stage: str) -> None:
    init = SRC / stage / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{stage}: no docstring"
    assert any((TESTS / stage).glob("test_*.py")), f"tests/{stage}/ holds no test"
