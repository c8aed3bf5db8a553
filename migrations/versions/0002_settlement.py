"""settlement: periods, itemised statements, matrix, margins and payments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# What a close writes is immutable (refuse_ledger_change() comes from 0001 on PostgreSQL).
APPEND_ONLY_TABLES = (
    "settlement_assignments",
    "settlement_statements",
    "settlement_statement_lines",
    "settlement_matrix_cells",
    "settlement_operator_margins",
    "settlement_payments",
)

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('settlement_periods',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('label', sa.String(length=10), nullable=False),
    sa.Column('length', sa.String(length=5), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_by', sa.String(length=120), nullable=False),
    sa.Column('transaction_count', sa.BigInteger(), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payments_through_id', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("length IN ('MONTH', 'WEEK', 'DAY')", name=op.f('ck_settlement_periods_length')),
    sa.CheckConstraint("status IN ('CLOSED', 'PAID')", name=op.f('ck_settlement_periods_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_periods')),
    sa.UniqueConstraint('label', name=op.f('uq_settlement_periods_label'))
    )
    op.create_table('settlement_matrix_cells',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('period_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('issuer_partner_id', sa.Integer(), nullable=True),
    sa.Column('redeemer_partner_id', sa.Integer(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('issuer_value_exact', sa.String(length=40), nullable=False),
    sa.Column('issuer_value_minor', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['issuer_partner_id'], ['partners.id'], name=op.f('fk_settlement_matrix_cells_issuer_partner_id_partners')),
    sa.ForeignKeyConstraint(['period_id'], ['settlement_periods.id'], name=op.f('fk_settlement_matrix_cells_period_id_settlement_periods')),
    sa.ForeignKeyConstraint(['redeemer_partner_id'], ['partners.id'], name=op.f('fk_settlement_matrix_cells_redeemer_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_matrix_cells'))
    )
    with op.batch_alter_table('settlement_matrix_cells', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_settlement_matrix_cells_period_id'), ['period_id'], unique=False)

    op.create_table('settlement_operator_margins',
    sa.Column('period_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('margin_minor', sa.BigInteger(), nullable=False),
    sa.Column('margin_exact', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['settlement_periods.id'], name=op.f('fk_settlement_operator_margins_period_id_settlement_periods')),
    sa.PrimaryKeyConstraint('period_id', 'currency', name=op.f('pk_settlement_operator_margins'))
    )
    op.create_table('settlement_statements',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('statement_id', sa.String(length=100), nullable=False),
    sa.Column('period_id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('opening_position_minor', sa.BigInteger(), nullable=False),
    sa.Column('net_minor', sa.BigInteger(), nullable=False),
    sa.Column('closing_position_minor', sa.BigInteger(), nullable=False),
    sa.Column('net_exact', sa.String(length=40), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('item_count', sa.BigInteger(), nullable=False),
    sa.Column('items_sha256', sa.String(length=64), nullable=False),
    sa.Column('csv_sha256', sa.String(length=64), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_settlement_statements_partner_id_partners')),
    sa.ForeignKeyConstraint(['period_id'], ['settlement_periods.id'], name=op.f('fk_settlement_statements_period_id_settlement_periods')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_statements')),
    sa.UniqueConstraint('period_id', 'partner_id', 'currency', name=op.f('uq_settlement_statements_period_id_partner_id_currency')),
    sa.UniqueConstraint('statement_id', name=op.f('uq_settlement_statements_statement_id'))
    )
    with op.batch_alter_table('settlement_statements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_settlement_statements_partner_id'), ['partner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_settlement_statements_period_id'), ['period_id'], unique=False)

    op.create_table('settlement_payments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('payment_id', sa.String(length=32), nullable=False),
    sa.Column('statement_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('value_date', sa.Date(), nullable=False),
    sa.Column('bank_reference', sa.String(length=140), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=120), nullable=False),
    sa.CheckConstraint("direction IN ('INBOUND', 'OUTBOUND')", name=op.f('ck_settlement_payments_direction')),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_settlement_payments_amount_positive')),
    sa.ForeignKeyConstraint(['statement_id'], ['settlement_statements.id'], name=op.f('fk_settlement_payments_statement_id_settlement_statements')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_payments')),
    sa.UniqueConstraint('payment_id', name=op.f('uq_settlement_payments_payment_id'))
    )
    with op.batch_alter_table('settlement_payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_settlement_payments_statement_id'), ['statement_id'], unique=False)

    op.create_table('settlement_statement_lines',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('statement_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('line_type', sa.String(length=25), nullable=False),
    sa.Column('prior_period', sa.String(length=10), nullable=False),
    sa.Column('original_reference', sa.String(length=120), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('unit_price', sa.String(length=40), nullable=False),
    sa.Column('amount_exact', sa.String(length=40), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('item_count', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['statement_id'], ['settlement_statements.id'], name=op.f('fk_settlement_statement_lines_statement_id_settlement_statements')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_statement_lines')),
    sa.UniqueConstraint('statement_id', 'line_number', name=op.f('uq_settlement_statement_lines_statement_id_line_number'))
    )
    with op.batch_alter_table('settlement_statement_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_settlement_statement_lines_statement_id'), ['statement_id'], unique=False)

    op.create_table('settlement_assignments',
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('period_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('transaction_id', name=op.f('pk_settlement_assignments'))
    )
    with op.batch_alter_table('settlement_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_settlement_assignments_period_id'), ['period_id'], unique=False)

    with op.batch_alter_table('journal_transactions', schema=None) as batch_op:
        batch_op.create_index('ix_journal_transactions_business_time', ['business_time'], unique=False)
        batch_op.create_index('ix_journal_transactions_partner_id_receipt_id', ['partner_id', 'receipt_id'], unique=False)

    create_append_only_triggers()


# Closed history the statements rest on: a period's identity and a lot's terms never change (a period
# only moves on to PAID; a lot only has its remaining points changed).
PERIOD_FROZEN_COLUMNS = ("label", "length", "starts_at", "ends_at", "closed_at", "closed_by", "payments_through_id")
LOT_FROZEN_COLUMNS = (
    "member_id", "issuer_partner_id", "source_transaction_id", "contract_version_id", "points", "issuance_price",
    "currency", "earned_at", "available_at", "expires_at",
)


def _postgres_frozen_columns(table: str, columns: tuple[str, ...]) -> None:
    changed = " OR ".join(f"NEW.{column} IS DISTINCT FROM OLD.{column}" for column in columns)
    op.execute(f"""
CREATE FUNCTION refuse_{table}_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR {changed} THEN
        RAISE EXCEPTION '{table}: % of a frozen column refused', TG_OP USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$""")
    op.execute(
        f"CREATE TRIGGER {table}_frozen BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION refuse_{table}_change()"
    )


def _sqlite_frozen_columns(table: str, columns: tuple[str, ...]) -> None:
    op.execute(
        f"CREATE TRIGGER {table}_frozen BEFORE UPDATE OF {', '.join(columns)} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table}: UPDATE of a frozen column refused'); END"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table}: DELETE refused'); END"
    )


def create_append_only_triggers() -> None:
    frozen = _postgres_frozen_columns if op.get_bind().dialect.name == "postgresql" else _sqlite_frozen_columns
    frozen("settlement_periods", PERIOD_FROZEN_COLUMNS)
    frozen("lots", LOT_FROZEN_COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()"
            )
        return
    for table in APPEND_ONLY_TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
            )


def drop_append_only_triggers() -> None:
    for table in ("settlement_periods", "lots"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_frozen ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS refuse_{table}_change()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_frozen")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        return
    for table in APPEND_ONLY_TABLES:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")


def downgrade() -> None:
    drop_append_only_triggers()
    with op.batch_alter_table('journal_transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_journal_transactions_partner_id_receipt_id')
        batch_op.drop_index('ix_journal_transactions_business_time')

    with op.batch_alter_table('settlement_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_settlement_assignments_period_id'))

    op.drop_table('settlement_assignments')
    with op.batch_alter_table('settlement_statement_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_settlement_statement_lines_statement_id'))

    op.drop_table('settlement_statement_lines')
    with op.batch_alter_table('settlement_payments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_settlement_payments_statement_id'))

    op.drop_table('settlement_payments')
    with op.batch_alter_table('settlement_statements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_settlement_statements_period_id'))
        batch_op.drop_index(batch_op.f('ix_settlement_statements_partner_id'))

    op.drop_table('settlement_statements')
    op.drop_table('settlement_operator_margins')
    with op.batch_alter_table('settlement_matrix_cells', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_settlement_matrix_cells_period_id'))

    op.drop_table('settlement_matrix_cells')
    op.drop_table('settlement_periods')
