"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 18:10:16.952166
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The ledger's history is immutable: the database itself refuses UPDATE, DELETE (and TRUNCATE).
APPEND_ONLY_TABLES = ("journal_transactions", "journal_entries", "lot_movements", "contract_versions")

POSTGRES_REFUSE_CHANGE = """
CREATE OR REPLACE FUNCTION refuse_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END
$$
"""

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('idempotency_records',
    sa.Column('principal', sa.String(length=120), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('operation', sa.String(length=60), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=10), nullable=False),
    sa.Column('response_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'idempotency_key', name=op.f('pk_idempotency_records'))
    )
    op.create_table('ledger_accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('owner_id', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("kind IN ('MEMBER_POINTS', 'MEMBER_DEBT', 'PARTNER_ISSUED', 'PARTNER_REDEEMED', 'OPERATOR')", name=op.f('ck_ledger_accounts_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts')),
    sa.UniqueConstraint('kind', 'owner_id', name=op.f('uq_ledger_accounts_kind_owner_id'))
    )
    op.create_table('partners',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('partner_code', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('ONLINE_SHOP', 'STORE_CHAIN', 'CARD_ISSUER', 'CHARITY')", name=op.f('ck_partners_kind')),
    sa.CheckConstraint("status IN ('ACTIVE', 'SUSPENDED')", name=op.f('ck_partners_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partners')),
    sa.UniqueConstraint('partner_code', name=op.f('uq_partners_partner_code'))
    )
    op.create_table('used_token_ids',
    sa.Column('issuer', sa.String(length=120), nullable=False),
    sa.Column('jti', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('issuer', 'jti', name=op.f('pk_used_token_ids'))
    )
    with op.batch_alter_table('used_token_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_token_ids_expires_at'), ['expires_at'], unique=False)

    op.create_table('contract_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('earn_rate', sa.String(length=40), nullable=False),
    sa.Column('earn_rounding', sa.String(length=10), nullable=False),
    sa.Column('redeem_value', sa.String(length=40), nullable=False),
    sa.Column('issuance_price', sa.String(length=40), nullable=False),
    sa.Column('reimbursement_rate', sa.String(length=40), nullable=False),
    sa.Column('billing', sa.String(length=20), nullable=False),
    sa.Column('pending_days', sa.Integer(), nullable=False),
    sa.Column('max_points_per_transaction', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('daily_issuance_cap', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('max_points_share_of_basket', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.CheckConstraint("billing IN ('ON_ISSUANCE', 'ON_REDEMPTION')", name=op.f('ck_contract_versions_billing')),
    sa.CheckConstraint("earn_rounding IN ('DOWN', 'HALF_UP', 'UP')", name=op.f('ck_contract_versions_earn_rounding')),
    sa.CheckConstraint('pending_days >= 0', name=op.f('ck_contract_versions_pending_days_not_negative')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_contract_versions_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contract_versions')),
    sa.UniqueConstraint('partner_id', 'version', name=op.f('uq_contract_versions_partner_id_version'))
    )
    op.create_table('members',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('member_number', sa.String(length=20), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enrolled_by_partner_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['enrolled_by_partner_id'], ['partners.id'], name=op.f('fk_members_enrolled_by_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_members')),
    sa.UniqueConstraint('member_number', name=op.f('uq_members_member_number'))
    )
    op.create_table('partner_daily_issuance',
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('points_issued', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_daily_issuance_partner_id_partners')),
    sa.PrimaryKeyConstraint('partner_id', 'day', name=op.f('pk_partner_daily_issuance'))
    )
    op.create_table('partner_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=100), nullable=False),
    sa.Column('algorithm', sa.String(length=10), nullable=False),
    sa.Column('public_key_pem', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("algorithm IN ('ES256', 'EdDSA')", name=op.f('ck_partner_keys_algorithm')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_keys_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_keys')),
    sa.UniqueConstraint('key_id', name=op.f('uq_partner_keys_key_id'))
    )
    with op.batch_alter_table('partner_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_partner_keys_partner_id'), ['partner_id'], unique=False)

    op.create_table('journal_transactions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=True),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contract_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('receipt_id', sa.String(length=100), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('references_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('business_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('EARN', 'REDEEM', 'EARN_REVERSAL', 'REDEMPTION_REFUND', 'EXPIRY', 'ADJUSTMENT')", name=op.f('ck_journal_transactions_kind')),
    sa.CheckConstraint('points > 0', name=op.f('ck_journal_transactions_points_positive')),
    sa.ForeignKeyConstraint(['contract_version_id'], ['contract_versions.id'], name=op.f('fk_journal_transactions_contract_version_id_contract_versions')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_journal_transactions_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_journal_transactions_partner_id_partners')),
    sa.ForeignKeyConstraint(['references_transaction_id'], ['journal_transactions.id'], name=op.f('fk_journal_transactions_references_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_transactions')),
    sa.UniqueConstraint('public_id', name=op.f('uq_journal_transactions_public_id'))
    )
    with op.batch_alter_table('journal_transactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journal_transactions_member_id'), ['member_id'], unique=False)
        batch_op.create_index('ix_journal_transactions_partner_id_business_time', ['partner_id', 'business_time'], unique=False)

    op.create_table('member_balances',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('debt_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points_balance', sa.BigInteger(), nullable=False),
    sa.Column('debt_points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('debt_points >= 0', name=op.f('ck_member_balances_debt_points_not_negative')),
    sa.CheckConstraint('points_balance >= 0', name=op.f('ck_member_balances_points_balance_not_negative')),
    sa.ForeignKeyConstraint(['debt_account_id'], ['ledger_accounts.id'], name=op.f('fk_member_balances_debt_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_balances_member_id_members')),
    sa.ForeignKeyConstraint(['points_account_id'], ['ledger_accounts.id'], name=op.f('fk_member_balances_points_account_id_ledger_accounts')),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_member_balances'))
    )
    op.create_table('member_identifiers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('lookup_hash', sa.String(length=64), nullable=False),
    sa.Column('masked_value', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_identifiers_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_identifiers')),
    sa.UniqueConstraint('kind', 'lookup_hash', name=op.f('uq_member_identifiers_kind_lookup_hash'))
    )
    with op.batch_alter_table('member_identifiers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_identifiers_member_id'), ['member_id'], unique=False)

    op.create_table('member_partner_links',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_partner_links_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_member_partner_links_partner_id_partners')),
    sa.PrimaryKeyConstraint('member_id', 'partner_id', name=op.f('pk_member_partner_links'))
    )
    op.create_table('holds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contract_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('captured_points', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('receipt_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('capture_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint("status IN ('HELD', 'CAPTURED', 'RELEASED', 'EXPIRED')", name=op.f('ck_holds_status')),
    sa.CheckConstraint('captured_points >= 0 AND captured_points <= points', name=op.f('ck_holds_captured_within_held')),
    sa.CheckConstraint('points > 0', name=op.f('ck_holds_points_positive')),
    sa.ForeignKeyConstraint(['capture_transaction_id'], ['journal_transactions.id'], name=op.f('fk_holds_capture_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['contract_version_id'], ['contract_versions.id'], name=op.f('fk_holds_contract_version_id_contract_versions')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_holds_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_holds_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds')),
    sa.UniqueConstraint('public_id', name=op.f('uq_holds_public_id'))
    )
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_holds_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_holds_member_id'), ['member_id'], unique=False)

    op.create_table('journal_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('side', sa.String(length=1), nullable=False),
    sa.Column('amount_points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("side IN ('D', 'C')", name=op.f('ck_journal_entries_side')),
    sa.CheckConstraint('amount_points > 0', name=op.f('ck_journal_entries_amount_points_positive')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_journal_entries_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'], name=op.f('fk_journal_entries_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_entries'))
    )
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journal_entries_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_journal_entries_transaction_id'), ['transaction_id'], unique=False)

    op.create_table('lots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('issuer_partner_id', sa.Integer(), nullable=True),
    sa.Column('source_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contract_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('remaining_points', sa.BigInteger(), nullable=False),
    sa.Column('issuance_price', sa.String(length=40), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('earned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('points > 0', name=op.f('ck_lots_points_positive')),
    sa.CheckConstraint('remaining_points <= points', name=op.f('ck_lots_remaining_within_points')),
    sa.CheckConstraint('remaining_points >= 0', name=op.f('ck_lots_remaining_not_negative')),
    sa.ForeignKeyConstraint(['contract_version_id'], ['contract_versions.id'], name=op.f('fk_lots_contract_version_id_contract_versions')),
    sa.ForeignKeyConstraint(['issuer_partner_id'], ['partners.id'], name=op.f('fk_lots_issuer_partner_id_partners')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_lots_member_id_members')),
    sa.ForeignKeyConstraint(['source_transaction_id'], ['journal_transactions.id'], name=op.f('fk_lots_source_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lots'))
    )
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lots_member_id'), ['member_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lots_source_transaction_id'), ['source_transaction_id'], unique=False)

    op.create_table('purchases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('receipt_id', sa.String(length=100), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('store_id', sa.String(length=100), nullable=True),
    sa.Column('contract_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('earned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('earn_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('points_earned', sa.BigInteger(), nullable=False),
    sa.Column('points_redeemed', sa.BigInteger(), nullable=False),
    sa.Column('returned_minor', sa.BigInteger(), nullable=False),
    sa.Column('points_reversed', sa.BigInteger(), nullable=False),
    sa.Column('points_restored', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('points_restored <= points_redeemed', name=op.f('ck_purchases_restored_within_redeemed')),
    sa.CheckConstraint('points_reversed <= points_earned', name=op.f('ck_purchases_reversed_within_earned')),
    sa.CheckConstraint('returned_minor >= 0 AND returned_minor <= total_minor', name=op.f('ck_purchases_returns_within_total')),
    sa.ForeignKeyConstraint(['contract_version_id'], ['contract_versions.id'], name=op.f('fk_purchases_contract_version_id_contract_versions')),
    sa.ForeignKeyConstraint(['earn_transaction_id'], ['journal_transactions.id'], name=op.f('fk_purchases_earn_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_purchases_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_purchases_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purchases')),
    sa.UniqueConstraint('partner_id', 'receipt_id', name=op.f('uq_purchases_partner_id_receipt_id'))
    )
    op.create_table('lot_movements',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('lot_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('points_delta', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("kind IN ('CONSUMED', 'RESTORED', 'REVERSED', 'DEBT_REPAYMENT', 'EXPIRED')", name=op.f('ck_lot_movements_kind')),
    sa.CheckConstraint('points_delta <> 0', name=op.f('ck_lot_movements_points_delta_not_zero')),
    sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name=op.f('fk_lot_movements_lot_id_lots')),
    sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'], name=op.f('fk_lot_movements_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_movements'))
    )
    with op.batch_alter_table('lot_movements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lot_movements_lot_id'), ['lot_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lot_movements_transaction_id'), ['transaction_id'], unique=False)


    create_append_only_triggers()


def create_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_REFUSE_CHANGE)
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
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS refuse_ledger_change()")
        return
    for table in APPEND_ONLY_TABLES:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")


def downgrade() -> None:
    drop_append_only_triggers()
    with op.batch_alter_table('lot_movements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lot_movements_transaction_id'))
        batch_op.drop_index(batch_op.f('ix_lot_movements_lot_id'))

    op.drop_table('lot_movements')
    op.drop_table('purchases')
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lots_source_transaction_id'))
        batch_op.drop_index(batch_op.f('ix_lots_member_id'))

    op.drop_table('lots')
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journal_entries_transaction_id'))
        batch_op.drop_index(batch_op.f('ix_journal_entries_account_id'))

    op.drop_table('journal_entries')
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_holds_member_id'))
        batch_op.drop_index(batch_op.f('ix_holds_expires_at'))

    op.drop_table('holds')
    op.drop_table('member_partner_links')
    with op.batch_alter_table('member_identifiers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_identifiers_member_id'))

    op.drop_table('member_identifiers')
    op.drop_table('member_balances')
    with op.batch_alter_table('journal_transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_journal_transactions_partner_id_business_time')
        batch_op.drop_index(batch_op.f('ix_journal_transactions_member_id'))

    op.drop_table('journal_transactions')
    with op.batch_alter_table('partner_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_partner_keys_partner_id'))

    op.drop_table('partner_keys')
    op.drop_table('partner_daily_issuance')
    op.drop_table('members')
    op.drop_table('contract_versions')
    with op.batch_alter_table('used_token_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_token_ids_expires_at'))

    op.drop_table('used_token_ids')
    op.drop_table('partners')
    op.drop_table('ledger_accounts')
    op.drop_table('idempotency_records')
