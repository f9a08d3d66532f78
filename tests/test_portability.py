"""The package imports on every platform: POSIX- or Windows-only modules are guarded."""

from __future__ import annotations

import ast
from pathlib import Path

import resumable

PLATFORM_MODULES = {"fcntl", "msvcrt", "termios", "pwd", "grp", "resource", "winreg"}


def unguarded_platform_imports(source: str) -> list[str]:
    """Imports of platform-only modules not inside an ``if sys.platform ...`` block."""
    found: list[str] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and "sys.platform" in ast.unparse(node.test):
            guarded = True
        if isinstance(node, ast.Import | ast.ImportFrom) and not guarded:
            names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            found.extend(name for name in names if name.split(".")[0] in PLATFORM_MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), guarded=False)
    return found


def test_the_checker_sees_an_unguarded_import() -> None:
    assert unguarded_platform_imports("import fcntl\n") == ["fcntl"]
    guarded = "import sys\nif sys.platform != 'win32':\n    import fcntl\n"
    assert unguarded_platform_imports(guarded) == []


def test_no_module_imports_a_platform_only_module_unguarded() -> None:
    package = Path(resumable.__file__).parent
    offenders = {
        str(path.relative_to(package)): names
        for path in sorted(package.rglob("*.py"))
        if (names := unguarded_platform_imports(path.read_text()))
    }
    assert offenders == {}
