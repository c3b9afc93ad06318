"""The layout's rules (DESIGN.md "Layout"): stages import one way, no import circle, and every
module in src/ stays under ~500 lines unless its docstring says why."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
#: stage of each package; a module may import its own stage and earlier ones only
STAGES = {"rtmh.kafka": 1, "rtmh.ingest": 1, "rtmh.windows": 2, "rtmh.rules": 3, "rtmh.notify": 4}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The rtmh modules ``path`` imports, at any depth of the file (deferred imports count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rtmh"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("rtmh"))
    return out


def stage(module: str) -> int | None:
    for package, number in STAGES.items():
        if module == package or module.startswith(package + "."):
            return number
    return None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) & set(known) for name, path in known.items()}


def test_no_stage_imports_a_later_stage() -> None:
    backwards = [
        f"{module} -> {dep}"
        for module, deps in graph().items()
        for dep in deps
        if stage(module) is not None and (stage(dep) or 0) > (stage(module) or 0)
    ]
    assert not backwards


def test_no_import_circle() -> None:
    edges = graph()
    circles: list[list[str]] = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(edges.get(node, ())):
            if dep in path:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*path, dep], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], done)
    # a package importing its own submodules from __init__ is not a circle of modules
    real = [c for c in circles if not all(c[0].startswith(m) or m.startswith(c[0]) for m in c)]
    assert not real


def test_long_modules_say_why() -> None:
    unexplained = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "lines" not in doc:
                unexplained.append(f"{name}: {text.count(chr(10))} lines")
    assert not unexplained, "over 500 lines without a reason in the docstring"
