"""`ledger/`, `dispatch/` and `reports/` stay free of Flask and of the web app (STYLE.md §5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("flask", "backoffice", "flask_sqlalchemy", "flask_login")


PACKAGES = [p for p in ("ledger", "dispatch", "reports") if (ROOT / p).is_dir()]


def forbidden_imports(source: str, label: str) -> list[str]:
    offenders = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        offenders += [f"{label}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    return offenders


@pytest.mark.parametrize("package", PACKAGES)
def test_package_does_not_import_flask_or_backoffice(package: str) -> None:
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        offenders += forbidden_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_scan_catches_an_offender() -> None:
    source = "import os\nfrom flask import current_app\nimport backoffice.models\nfrom .x import y\n"
    assert forbidden_imports(source, "m.py") == ["m.py: flask", "m.py: backoffice.models"]
