"""Repository policies: one module converts units; only designated modules import heavy libraries."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "simulator"
SCALES = {1e3, 1e6, 1e9, 1e12, 1e15, 1024.0, 1024.0**2, 1024.0**3, 1024.0**4, 3600.0}
SCALE_OPERATORS = {"*", "/", "**", "//", "*=", "/="}


def scale_literals(source: str) -> list[str]:
    """Numbers used as unit scale factors: exponent literals of magnitude >= 1e3 anywhere, and
    1000/1024/3600-style factors next to a multiply or divide (strings and comments are ignored)."""
    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)
    ]
    found = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NUMBER or tok.string.endswith("j"):
            continue
        value = abs(float(tok.string.replace("_", ""))) if "x" not in tok.string.lower() else 0.0
        exponent_form = "e" in tok.string.lower() and value >= 1e3  # noqa: policy test's own threshold
        near = {tokens[j].string for j in (i - 1, i + 1) if 0 <= j < len(tokens)}
        factor = value in SCALES and bool(near & SCALE_OPERATORS)
        if exponent_form or factor:
            found.append(f"{tok.start[0]}: {tok.line.strip()}")
    return found


def test_no_scale_literals_outside_units():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "units.py":
            continue
        offenders += [f"{path.name}:{hit}" for hit in scale_literals(path.read_text())]
    assert not offenders, "scale literals outside units.py:\n" + "\n".join(offenders)


def test_the_scan_catches_literals_and_ignores_strings():
    """The policy test must be able to fail."""
    assert scale_literals("x = y * 1e9\n")
    assert scale_literals("x = y / 1024 ** 3\n")
    assert scale_literals("t_ms = t_s * 1000\n")
    assert not scale_literals("s = 'costs 1e9 dollars'  # 1e12 in a comment\n")
    assert not scale_literals("tokens = 1000\n")


ALLOWED = {
    "simpy": {"replica.py", "fleet.py"},
    "matplotlib": {"plots.py"},
    "typer": {"cli.py"},
    "click": {"cli.py"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_heavy_imports_stay_in_their_modules():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        used = _imports(path)
        for lib, allowed in ALLOWED.items():
            if lib in used and path.name not in allowed:
                offenders.append(f"{path.name} imports {lib}")
    assert not offenders


def test_pyarrow_only_in_export_and_trace_reader():
    users = {p.name for p in PACKAGE.glob("*.py") if "pyarrow" in _imports(p)}
    assert users <= {"export.py", "workload.py"}
