"""member programme: network policy versions, goodwill adjustments, an index for the expiry run

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Policy versions are immutable (refuse_ledger_change() comes from 0001 on PostgreSQL).
APPEND_ONLY_TABLES = ("network_policy_versions", "goodwill_adjustments", "goodwill_decisions")
MOVEMENT_KINDS_BEFORE = ('CONSUMED', 'RESTORED', 'REVERSED', 'DEBT_REPAYMENT', 'EXPIRED')
MOVEMENT_KINDS = (*MOVEMENT_KINDS_BEFORE, 'ADJUSTED')  # support deductions take points out of lots

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('network_policy_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_network_policy_versions')),
    sa.UniqueConstraint('version', name=op.f('uq_network_policy_versions_version'))
    )
    with op.batch_alter_table('network_policy_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_network_policy_versions_effective_from'), ['effective_from'], unique=False)
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.create_index('ix_lots_expires_at_with_points', ['expires_at'], unique=False,
                              postgresql_where=sa.text('remaining_points > 0'),
                              sqlite_where=sa.text('remaining_points > 0'))
    op.create_table('goodwill_adjustments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('direction', sa.String(length=10), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('reason_code', sa.String(length=40), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=100), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('needs_approval', sa.Boolean(), nullable=False),
    sa.CheckConstraint("direction IN ('GRANT', 'DEDUCT')", name=op.f('ck_goodwill_adjustments_direction')),
    sa.CheckConstraint('points > 0', name=op.f('ck_goodwill_adjustments_points_positive')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_goodwill_adjustments_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_goodwill_adjustments')),
    sa.UniqueConstraint('public_id', name=op.f('uq_goodwill_adjustments_public_id'))
    )
    with op.batch_alter_table('goodwill_adjustments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_goodwill_adjustments_member_id'), ['member_id'], unique=False)
    op.create_table('goodwill_decisions',
    sa.Column('adjustment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('outcome', sa.String(length=10), nullable=False),
    sa.Column('decided_by', sa.String(length=100), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.CheckConstraint("outcome IN ('APPLIED', 'REJECTED')", name=op.f('ck_goodwill_decisions_outcome')),
    sa.CheckConstraint("(outcome = 'APPLIED') = (transaction_id IS NOT NULL)",
                       name=op.f('ck_goodwill_decisions_applied_has_transaction')),
    sa.ForeignKeyConstraint(['adjustment_id'], ['goodwill_adjustments.id'],
                            name=op.f('fk_goodwill_decisions_adjustment_id_goodwill_adjustments')),
    sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_goodwill_decisions_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('adjustment_id', name=op.f('pk_goodwill_decisions'))
    )
    allow_movement_kinds(MOVEMENT_KINDS)
    create_append_only_triggers()


def allow_movement_kinds(kinds: tuple[str, ...]) -> None:
    """Replaces lot_movements' CHECK on kind. SQLite cannot alter a CHECK: the table is rebuilt (from
    the definition below, since SQLite does not reflect CHECKs) and loses its append-only triggers,
    which are put back."""
    check = "kind IN (" + ", ".join(f"'{kind}'" for kind in kinds) + ")"
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f('ck_lot_movements_kind'), 'lot_movements', type_='check')
        op.create_check_constraint(op.f('ck_lot_movements_kind'), 'lot_movements', sa.text(check))
        return
    for operation in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS lot_movements_no_{operation}")
    definition = sa.Table('lot_movements', sa.MetaData(),
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column('lot_id', sa.Integer(), nullable=False),
        sa.Column('transaction_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('points_delta', sa.BigInteger(), nullable=False),
        sa.CheckConstraint(check, name='ck_lot_movements_kind'),
        sa.CheckConstraint('points_delta <> 0', name='ck_lot_movements_points_delta_not_zero'),
        sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name='fk_lot_movements_lot_id_lots'),
        sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'],
                                name='fk_lot_movements_transaction_id_journal_transactions'),
        sa.Index('ix_lot_movements_lot_id', 'lot_id'),
        sa.Index('ix_lot_movements_transaction_id', 'transaction_id'),
    )  # fmt: skip
    with op.batch_alter_table('lot_movements', recreate='always', copy_from=definition):
        pass
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER lot_movements_no_{operation.lower()} BEFORE {operation} ON lot_movements "
            f"BEGIN SELECT RAISE(ABORT, 'lot_movements is append-only: {operation} refused'); END"
        )


def create_append_only_triggers() -> None:
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


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    allow_movement_kinds(MOVEMENT_KINDS_BEFORE)
    op.drop_table('goodwill_decisions')
    with op.batch_alter_table('goodwill_adjustments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_goodwill_adjustments_member_id'))
    op.drop_table('goodwill_adjustments')
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.drop_index('ix_lots_expires_at_with_points')
    with op.batch_alter_table('network_policy_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_network_policy_versions_effective_from'))
    op.drop_table('network_policy_versions')
