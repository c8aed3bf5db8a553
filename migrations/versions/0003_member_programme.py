"""member programme: network policy versions, an index for the expiry run

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Policy versions are immutable (refuse_ledger_change() comes from 0001 on PostgreSQL).
APPEND_ONLY_TABLES = ("network_policy_versions",)

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
    create_append_only_triggers()


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
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.drop_index('ix_lots_expires_at_with_points')
    with op.batch_alter_table('network_policy_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_network_policy_versions_effective_from'))
    op.drop_table('network_policy_versions')
