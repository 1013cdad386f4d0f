"""HTTP is spoken through maintained libraries (uvicorn/Starlette serve, httpx calls), never the standard library's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "sinks", "models", "vpp", "tests", "bench", "scripts", "edge", "console", "cli", "devtools")
FORBIDDEN = ("http.server", "http.client", "urllib.request", "urllib.error")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES if (REPO / package).is_dir() for p in (REPO / package).rglob("*.py"))


def test_the_scan_sees_the_project():
    assert {"devtools/registry/server.py", "devtools/market/api.py", "flows/autobidder/flow.py"} <= \
        {str(p.relative_to(REPO)) for p in sources()}


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_the_standard_library_s_http_server_or_client(path):
    found = sorted(name for name in imported_modules(path) if name in FORBIDDEN or name.startswith(tuple(f"{f}." for f in FORBIDDEN)))
    assert found == [], f"{path.relative_to(REPO)} imports {found}: serve with vpp.asgi (uvicorn), call with httpx"
