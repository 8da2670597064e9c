"""A form's version: a fingerprint of the values it was opened with, carried in a hidden field,
so that a save made on values another administrator has since changed is refused instead of
putting the old ones back unsaid (found by a review, for the provider identity and an account's
sending settings)."""

from __future__ import annotations

import hashlib
import json

from backoffice.errors import ValidationFailed

NO_VERSION = "表单缺少版本信息（可能是更新前打开的页面），请刷新后再改"


def form_version(shown: object) -> str:
    """The fingerprint of what a form shows (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def check_version(given: str | None, current: str, stale: str) -> None:
    """Refuse (error "version") a form opened on other values than the saved ones; `given` None:
    a caller that names only what it changes (the command line), not checked."""
    if given is not None and given != current:
        raise ValidationFailed({"version": stale if given else NO_VERSION})
