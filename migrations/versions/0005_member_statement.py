"""member statement: an index for a member's history and last activity (replacing the member_id one)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Activity history newest first, and each member's last activity for the churn list, without
    # reading the member's whole journal (programme/member_reads.py).
    op.create_index(
        'ix_journal_transactions_member_id_business_time', 'journal_transactions',
        ['member_id', 'business_time', 'kind'], unique=False,
    )
    # Its first column serves every lookup by member: the single-column index only cost writes.
    op.drop_index('ix_journal_transactions_member_id', table_name='journal_transactions')


def downgrade() -> None:
    op.create_index('ix_journal_transactions_member_id', 'journal_transactions', ['member_id'], unique=False)
    op.drop_index('ix_journal_transactions_member_id_business_time', table_name='journal_transactions')
