"""Administration: the outbox of notifications (what was sent, written to the outbox folder,
is waiting or failed), with the written e-mails readable and failed ones sent again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, send_file, url_for

from backoffice.auth import roles_required
from backoffice.errors import DomainError
from backoffice.extensions import db
from backoffice.models import Notification
from backoffice.services.notifications import requeue

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/outbox")
@roles_required("admin")
def outbox() -> Any:
    notes = db.session.scalars(sa.select(Notification).order_by(Notification.id.desc()).limit(200)).all()
    folder = Path(current_app.config["OUTBOX_PATH"])
    files = sorted((p for p in folder.glob("*.eml")), reverse=True)[:200] if folder.is_dir() else []
    return render_template("admin/outbox.html", notes=notes, files=files, folder=folder)


@bp.route("/outbox/<name>")
@roles_required("admin")
def outbox_file(name: str) -> Any:
    folder = Path(current_app.config["OUTBOX_PATH"]).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or path.suffix != ".eml" or not path.is_file():
        abort(404)
    return send_file(path, mimetype="message/rfc822", as_attachment=True, download_name=path.name)


@bp.post("/outbox/<int:note_id>/retry")
@roles_required("admin")
def outbox_retry(note_id: int) -> Any:
    try:
        requeue(db.session, note_id)
        db.session.commit()
        flash(f"通知 {note_id} 将重新发送", "ok")
    except DomainError as error:
        db.session.rollback()
        flash(error.message, "error")
    return redirect(url_for("admin.outbox"))
