"""co-branded cards: card links, merchant table, card transactions and items

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('card_links',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('issuer_partner_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('member_id', _ID, nullable=False),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unlinked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['issuer_partner_id'], ['partners.id'], name=op.f('fk_card_links_issuer_partner_id_partners')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_card_links_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card_links'))
    )
    op.create_index('ix_card_links_issuer_partner_id_token_hash', 'card_links', ['issuer_partner_id', 'token_hash'], unique=False)
    op.create_index(op.f('ix_card_links_member_id'), 'card_links', ['member_id'], unique=False)
    op.create_index('uq_card_links_token_hash_linked', 'card_links', ['token_hash'], unique=True,
                    postgresql_where=sa.text('unlinked_at IS NULL'), sqlite_where=sa.text('unlinked_at IS NULL'))
    op.create_table('card_merchants',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_card_merchants_partner_id_partners')),
    sa.PrimaryKeyConstraint('merchant_id', name=op.f('pk_card_merchants'))
    )
    op.create_index(op.f('ix_card_merchants_partner_id'), 'card_merchants', ['partner_id'], unique=False)
    op.create_table('card_transactions',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('issuer_partner_id', sa.Integer(), nullable=False),
    sa.Column('bank_transaction_id', sa.String(length=64), nullable=False),
    sa.Column('member_id', _ID, nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('merchant_partner_id', sa.Integer(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('authorised_minor', sa.BigInteger(), nullable=True),
    sa.Column('pending_points', sa.BigInteger(), nullable=False),
    sa.Column('authorised_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cleared_minor', sa.BigInteger(), nullable=True),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('merchant_points', sa.BigInteger(), nullable=False),
    sa.Column('bank_points', sa.BigInteger(), nullable=False),
    sa.Column('merchant_earn_transaction_id', _ID, nullable=True),
    sa.Column('bank_earn_transaction_id', _ID, nullable=True),
    sa.Column('reversed_minor', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('cleared_minor IS NULL OR reversed_minor <= cleared_minor', name=op.f('ck_card_transactions_reversed_within_cleared')),
    sa.CheckConstraint('reversed_minor >= 0', name=op.f('ck_card_transactions_reversed_not_negative')),
    sa.ForeignKeyConstraint(['bank_earn_transaction_id'], ['journal_transactions.id'], name=op.f('fk_card_transactions_bank_earn_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['issuer_partner_id'], ['partners.id'], name=op.f('fk_card_transactions_issuer_partner_id_partners')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_card_transactions_member_id_members')),
    sa.ForeignKeyConstraint(['merchant_earn_transaction_id'], ['journal_transactions.id'], name=op.f('fk_card_transactions_merchant_earn_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['merchant_partner_id'], ['partners.id'], name=op.f('fk_card_transactions_merchant_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card_transactions')),
    sa.UniqueConstraint('issuer_partner_id', 'bank_transaction_id', name='uq_card_transactions_key'),
    )
    op.create_index(op.f('ix_card_transactions_member_id'), 'card_transactions', ['member_id'], unique=False)
    op.create_index('ix_card_transactions_member_id_authorised_at', 'card_transactions', ['member_id', 'authorised_at'], unique=False)
    op.create_table('card_items',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('issuer_partner_id', sa.Integer(), nullable=False),
    sa.Column('bank_transaction_id', sa.String(length=64), nullable=False),
    sa.Column('item_type', sa.String(length=20), nullable=False),
    sa.Column('item_id', sa.String(length=64), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=60), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('transaction_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pending_points', sa.BigInteger(), nullable=False),
    sa.Column('points_earned', sa.BigInteger(), nullable=False),
    sa.Column('points_reversed', sa.BigInteger(), nullable=False),
    sa.Column('debt_points', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("item_type IN ('AUTHORISATION', 'CLEARING', 'REFUND', 'CHARGEBACK')", name=op.f('ck_card_items_item_type')),
    sa.CheckConstraint("status IN ('APPLIED', 'WAITING', 'IGNORED', 'REJECTED')", name=op.f('ck_card_items_status')),
    sa.ForeignKeyConstraint(['issuer_partner_id'], ['partners.id'], name=op.f('fk_card_items_issuer_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card_items')),
    sa.UniqueConstraint('issuer_partner_id', 'bank_transaction_id', 'item_type', 'item_id', name='uq_card_items_key'),
    )


def downgrade() -> None:
    op.drop_table('card_items')
    op.drop_index('ix_card_transactions_member_id_authorised_at', table_name='card_transactions')
    op.drop_index(op.f('ix_card_transactions_member_id'), table_name='card_transactions')
    op.drop_table('card_transactions')
    op.drop_index(op.f('ix_card_merchants_partner_id'), table_name='card_merchants')
    op.drop_table('card_merchants')
    op.drop_index('uq_card_links_token_hash_linked', table_name='card_links')
    op.drop_index(op.f('ix_card_links_member_id'), table_name='card_links')
    op.drop_index('ix_card_links_issuer_partner_id_token_hash', table_name='card_links')
    op.drop_table('card_links')
