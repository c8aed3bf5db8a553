"""offline stores: per-day counters of points redeemed offline, for the network policy's allowances

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('offline_redemption_days',
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('owner_id', sa.BigInteger(), nullable=False),
    sa.Column('store_id', sa.String(length=100), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('points_redeemed', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("kind IN ('MEMBER', 'STORE')", name=op.f('ck_offline_redemption_days_kind')),
    sa.PrimaryKeyConstraint('kind', 'owner_id', 'store_id', 'day', name=op.f('pk_offline_redemption_days'))
    )


def downgrade() -> None:
    op.drop_table('offline_redemption_days')
