"""statement_lines: references stored as the statement parser stores them since 6f437f8 (no
spaces, upper-case), so a line imported before that is the same transfer as its number in any
letter case; a line whose normal reference is already another line's (the same date and amount:
the unique bank_transaction) is left as it is and reported, never merged or dropped

Revision ID: d8e4a2c6f0b3
Revises: b2d4f6a8c0e3
Create Date: 2026-12-09 16:00:00.000000
"""

import logging
import re

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision = "d8e4a2c6f0b3"
down_revision = "b2d4f6a8c0e3"
branch_labels = None
depends_on = None

log = logging.getLogger(f"alembic.migration.{revision}")

REFERENCE_LENGTH = 64  # statement_lines.reference
LINES = sa.table("statement_lines", sa.column("id", sa.Integer), sa.column("reference", sa.String))
# Another line holding that reference for the same bank transaction (date and amount), as the
# unique constraint compares them.
TWIN = sa.text(
    "SELECT other.id FROM statement_lines AS other JOIN statement_lines AS this"
    " ON other.booked_on = this.booked_on AND other.amount = this.amount"
    " WHERE this.id = :id AND other.id <> this.id AND other.reference = :reference ORDER BY other.id"
)
LEFT = "statement line %s: reference %r left as it is: %s"
SET_ASIDE = (
    "; if they are one bank transaction imported twice, set aside the one not matched to a receipt (忽略 on the"
    " statements page, or `flask --app wsgi finance statement-line ignore ID --reason …`)"
)


def normal_reference(text: str) -> str:
    """reports.bank_statements.normal_reference as of this revision (copied, so that the migration
    does what it did when it was written): without spaces, upper-case."""
    return re.sub(r"\s+", "", text).upper()


# `--sql` (PostgreSQL only, see env.py) has no rows to read: the script does it when it runs, in
# the same order and with the same refusals (messages joined with ||: a % is doubled in the
# script). Only references of ASCII characters are changed there, where the result is exactly
# normal_reference's whatever the server's locale (translate, not upper() or a regular
# expression, which follow it); any other is left and reported. Only lines imported before the
# parser refused such references (46aac7c) can have one, and no receipt's reference is one.
NOT_ASCII = " (the script cannot upper-case it as the application does); no receipt's reference can be the same, so it is matched or set aside by hand as before"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_SPACES = "||".join(f"chr({ord(c)})" for c in sorted(c for c in map(chr, range(128)) if re.fullmatch(r"\s", c)))
OFFLINE = f"""DO $$
DECLARE
    line record;
    normal text;
    twin integer;
BEGIN
    LOCK TABLE statement_lines IN SHARE ROW EXCLUSIVE MODE;
    FOR line IN SELECT id, reference, booked_on, amount FROM statement_lines ORDER BY id LOOP
        IF octet_length(line.reference) <> char_length(line.reference) THEN
            RAISE WARNING USING MESSAGE = 'statement line ' || line.id || ': reference ' || quote_literal(line.reference)
                || ' left as it is: not ASCII{NOT_ASCII.replace("'", "''")}';
            CONTINUE;
        END IF;
        normal := translate(line.reference, '{_LOWER}' || {_SPACES}, '{_LOWER.upper()}');
        CONTINUE WHEN normal = line.reference;
        SELECT id INTO twin FROM statement_lines
            WHERE reference = normal AND booked_on = line.booked_on AND amount = line.amount AND id <> line.id ORDER BY id LIMIT 1;
        IF twin IS NOT NULL THEN
            RAISE WARNING USING MESSAGE = 'statement line ' || line.id || ': reference ' || quote_literal(line.reference)
                || ' left as it is: line ' || twin || ' has ' || quote_literal(normal) || ' for the same date and amount{SET_ASIDE.replace("'", "''")}';
            CONTINUE;
        END IF;
        UPDATE statement_lines SET reference = normal WHERE id = line.id;
    END LOOP;
END $$"""


def upgrade():
    if context.is_offline_mode():
        op.execute(OFFLINE)
        return
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # No import adds a line between a check below and its update (SQLite's run holds the
        # database's write lock already, see env.py); reading the page is not held up.
        bind.exec_driver_sql("LOCK TABLE statement_lines IN SHARE ROW EXCLUSIVE MODE")
    rows = bind.execute(sa.select(LINES.c.id, LINES.c.reference).order_by(LINES.c.id)).all()
    changed = 0
    for ident, reference in rows:
        normal = normal_reference(reference)
        if normal == reference:
            continue
        if not normal or len(normal) > REFERENCE_LENGTH:  # (ß is SS upper-case: a longer text)
            log.warning(LEFT, ident, reference, f"upper-case it would be {len(normal)} characters, not 1 to {REFERENCE_LENGTH}")
            continue
        # Checked row by row, in order: a line changed earlier in this run counts (ab, then aB).
        twin = bind.execute(TWIN, {"id": ident, "reference": normal}).scalar()
        if twin is not None:
            log.warning(LEFT, ident, reference, f"line {twin} has {normal!r} for the same date and amount{SET_ASIDE}")
            continue
        bind.execute(sa.update(LINES).where(LINES.c.id == ident).values(reference=normal))
        changed += 1
    if changed:
        log.info("statement lines: %s references upper-cased", changed)


def downgrade():
    pass  # the case a bank's export wrote is not kept; the code before this reads upper-case ones as well
