"""Domain errors: each carries its HTTP status and a message a person can act on (Chinese)."""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(DomainError):
    """Input refused; `errors` maps each field name to what is wrong with it."""

    status = 400
    code = "invalid"

    def __init__(self, errors: dict[str, str], message: str | None = None) -> None:
        self.errors = dict(errors)
        # The messages only, not the fields' internal names: pages flash this summary (found by
        # an exploratory test: finance read "输入有误：bank_reference: …", "reason: 请填写原因").
        # Each message names what is wrong in words; `errors` keeps the fields for forms and JSON.
        summary = "；".join(dict.fromkeys(self.errors.values()))
        super().__init__(message or f"输入有误：{summary}")


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class DamagedDocument(DomainError):
    """A stored document that is not the file the database recorded: not served as valid."""

    status = 500
    code = "damaged_document"
