"""Contract templates are data: one folder each under `contracts_templates/`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from backoffice.errors import NotFound

TEMPLATES_ROOT = Path(__file__).resolve().parents[2] / "contracts_templates"

FIELD_TYPES = {
    "text", "textarea", "phone", "mobile", "email", "postcode", "price", "money",
    "count", "date", "bool", "choice", "networks",
}  # fmt: skip

NETWORKS = {"cmcc": "中国移动", "cucc": "中国联通", "ctcc": "中国电信", "cbn": "中国广电"}
PAYMENT_METHODS = {"cheque": "支票", "cash": "现金", "transfer": "转帐"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    type: str
    required: bool = False
    default: Any = None
    help: str = ""
    min: int | None = None
    max: int | None = None
    max_length: int | None = None
    choices: dict[str, str] = field(default_factory=dict)
    pattern: str | None = None
    pattern_message: str | None = None


@dataclass(frozen=True)
class ContractTemplate:
    id: str
    code: str
    title: str
    summary: str
    prints_contract_no: bool
    provider: dict[str, str]
    prints_payment_account: bool  # its text tells the customer to pay into the provider's account (001, 004)
    terms: dict[str, Any]
    fields: tuple[FieldSpec, ...]
    require_one_of: tuple[tuple[str, ...], ...]
    docx: dict[str, Any]
    sample: dict[str, Any]
    folder: Path

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "title": self.title,
            "summary": self.summary,
            "renewal_rule": self.terms.get("term_rule"),
            "credit_policy": self.terms.get("credit_policy"),
            "terms": self.terms,
            "fields": [{k: v for k, v in vars(f).items() if v not in (None, {}, "")} for f in self.fields],
        }


def _load(folder: Path) -> ContractTemplate:
    spec = json.loads((folder / "template.json").read_text(encoding="utf-8"))
    fields = []
    for raw in spec["fields"]:
        f = FieldSpec(**raw)
        if f.type not in FIELD_TYPES:
            raise ValueError(f"{folder.name}: field {f.name} has unknown type {f.type}")
        if f.type == "choice" and not f.choices and f.name == "payment_method":
            f = FieldSpec(**{**raw, "choices": PAYMENT_METHODS})
        fields.append(f)
    if spec["id"] != folder.name:
        raise ValueError(f"template folder {folder.name} declares id {spec['id']}")
    return ContractTemplate(
        id=spec["id"],
        code=spec.get("code", ""),
        title=spec["title"],
        summary=spec.get("summary", ""),
        prints_contract_no=bool(spec.get("prints_contract_no")),
        provider=dict(spec.get("provider", {})),
        prints_payment_account=bool(spec.get("prints_payment_account")),
        terms=dict(spec.get("terms", {})),
        fields=tuple(fields),
        require_one_of=tuple(tuple(group) for group in spec.get("require_one_of", [])),
        docx=dict(spec.get("docx", {})),
        sample=dict(spec.get("sample", {})),
        folder=folder,
    )


@lru_cache(maxsize=4)
def _all(root: Path) -> dict[str, ContractTemplate]:
    found = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(("_", ".")) and (folder / "template.json").exists():
            template = _load(folder)
            found[template.id] = template
    return found


def list_templates(root: Path | None = None) -> list[ContractTemplate]:
    """All templates, ordered by their code (000, 001, …)."""
    return sorted(_all(root or TEMPLATES_ROOT).values(), key=lambda t: (t.code, t.id))


def get_template(template_id: str, root: Path | None = None) -> ContractTemplate:
    try:
        return _all(root or TEMPLATES_ROOT)[template_id]
    except KeyError:
        raise NotFound(f"未知的合同模板：{template_id}") from None
