"""The study layer stays readable: no function in study/ is longer than 60 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONGEST = 60


def long_functions(source: str, name: str) -> list[str]:
    """`name:function (lines)` for each function of `source` longer than LONGEST lines."""
    return [
        f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > LONGEST
    ]


def test_no_function_in_study_is_longer_than_60_lines():
    files = sorted((ROOT / "study").glob("*.py"))
    assert files
    found = [f for path in files for f in long_functions(path.read_text(), path.name)]
    assert found == []


def test_a_long_function_is_found():
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST))
    assert long_functions(f"def long():\n{body}\n", "planted.py") == ["planted.py:long (61 lines)"]
    assert long_functions("def short():\n    return 1\n", "planted.py") == []
