"""`ledger/`, `dispatch/` and `reports/` stay free of Flask and of the web app (STYLE.md §5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("flask", "backoffice", "flask_sqlalchemy", "flask_login")


PACKAGES = [p for p in ("ledger", "dispatch", "reports") if (ROOT / p).is_dir()]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_does_not_import_flask_or_backoffice(package: str) -> None:
    folder = ROOT / package
    offenders = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_the_scan_would_catch_an_offender(tmp_path: Path) -> None:
    source = "from flask import current_app\nimport backoffice.models\n"
    found = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert len(found) == 2
