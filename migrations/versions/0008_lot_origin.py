"""lots.origin_lot_id: the lot whose points a transferred lot holds

A lot a household transfer makes names the lot its points were first credited into (through any
number of transfers), so a return of that purchase can take unspent points back from it and
settlement can count it as the purchase's own lot. Nullable: every lot made before, and every lot an
earn, bonus or grant makes, has none. The column is frozen like a lot's other terms: the triggers
from 0002 are replaced by ones that name it too.

SQLite adds and drops the column in place (ALTER TABLE), which keeps the table's triggers; its
foreign key is declared on the column, with the name the naming convention gives it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FROZEN_BEFORE = (
    "member_id", "issuer_partner_id", "source_transaction_id", "contract_version_id", "points", "issuance_price",
    "currency", "earned_at", "available_at", "expires_at",
)  # fmt: skip
FROZEN = (*FROZEN_BEFORE, "origin_lot_id")
INDEX = "ix_lots_origin_lot_id"
FOREIGN_KEY = "fk_lots_origin_lot_id_lots"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("lots", sa.Column("origin_lot_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(FOREIGN_KEY, "lots", "lots", ["origin_lot_id"], ["id"])
    else:
        op.execute(f"ALTER TABLE lots ADD COLUMN origin_lot_id INTEGER CONSTRAINT {FOREIGN_KEY} REFERENCES lots (id)")
    op.create_index(
        INDEX, "lots", ["origin_lot_id"], unique=False,
        postgresql_where=sa.text("origin_lot_id IS NOT NULL"), sqlite_where=sa.text("origin_lot_id IS NOT NULL"),
    )  # fmt: skip
    _freeze(FROZEN)


def downgrade() -> None:
    _freeze(FROZEN_BEFORE)
    op.drop_index(INDEX, table_name="lots")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(FOREIGN_KEY, "lots", type_="foreignkey")
        op.drop_column("lots", "origin_lot_id")
    else:
        op.execute("ALTER TABLE lots DROP COLUMN origin_lot_id")


def _freeze(columns: tuple[str, ...]) -> None:
    """The lots' frozen-column guard (0002), naming ``columns``."""
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{column} IS DISTINCT FROM OLD.{column}" for column in columns)
        op.execute(f"""
CREATE OR REPLACE FUNCTION refuse_lots_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR {changed} THEN
        RAISE EXCEPTION 'lots: % of a frozen column refused', TG_OP USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$""")
        return
    op.execute("DROP TRIGGER lots_frozen")
    op.execute(
        f"CREATE TRIGGER lots_frozen BEFORE UPDATE OF {', '.join(columns)} ON lots "
        "BEGIN SELECT RAISE(ABORT, 'lots: UPDATE of a frozen column refused'); END"
    )
