"""member programme: tiers, bonuses, referrals, households and point transfers

New journal kinds BONUS (points a partner or the operator awards beyond a purchase's earn) and
TRANSFER (points moved between two members of a household), and the TRANSFERRED lot movement.
SQLite cannot alter a CHECK: journal_transactions and lot_movements are rebuilt from the
definitions below (SQLite does not reflect CHECKs), and their append-only triggers put back.
Migrations run with SQLite's foreign keys off (migrations/env.py), so the tables that reference
journal_transactions keep pointing at the rebuilt one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

TRANSACTION_KINDS_BEFORE = ("EARN", "REDEEM", "EARN_REVERSAL", "REDEMPTION_REFUND", "EXPIRY", "ADJUSTMENT")
TRANSACTION_KINDS = (*TRANSACTION_KINDS_BEFORE, "BONUS", "TRANSFER")
MOVEMENT_KINDS_BEFORE = ("CONSUMED", "RESTORED", "REVERSED", "DEBT_REPAYMENT", "EXPIRED", "ADJUSTED")
# REPAYMENT_RESTORED: points that repaid a member's debt, given back when the redemption that made the
# debt is refunded (checkout/returns.py).
MOVEMENT_KINDS = (*MOVEMENT_KINDS_BEFORE, "TRANSFERRED", "REPAYMENT_RESTORED")
# Audit trails and the records behind bonuses and transfers (refuse_ledger_change() comes from 0001).
APPEND_ONLY_TABLES = (
    "tier_changes", "bonus_awards", "activity_definitions", "point_transfers", "tier_points_withdrawn",
)

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "households",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_households")),
        sa.UniqueConstraint("public_id", name=op.f("uq_households_public_id")),
    )
    op.create_table(
        "activity_definitions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("max_awards_per_member", sa.Integer(), nullable=False),
        sa.Column("limit_period", sa.String(length=10), nullable=False),
        sa.Column("retired", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "limit_period IN ('DAY', 'MONTH', 'YEAR', 'LIFETIME')", name=op.f("ck_activity_definitions_limit_period")
        ),
        sa.CheckConstraint("max_awards_per_member > 0", name=op.f("ck_activity_definitions_max_awards_positive")),
        sa.CheckConstraint("points > 0", name=op.f("ck_activity_definitions_points_positive")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_activity_definitions_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity_definitions")),
        sa.UniqueConstraint(
            "partner_id", "code", "version", name=op.f("uq_activity_definitions_partner_id_code_version")
        ),
    )
    op.create_table(
        "promotions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("bonus_percent", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_early_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("bonus_percent > 0", name=op.f("ck_promotions_bonus_percent_positive")),
        sa.CheckConstraint("ends_at >= starts_at", name=op.f("ck_promotions_ends_after_start")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_promotions_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotions")),
        sa.UniqueConstraint("public_id", name=op.f("uq_promotions_public_id")),
    )
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.create_index("ix_promotions_partner_id_starts_at", ["partner_id", "starts_at"], unique=False)

    op.create_table(
        "household_memberships",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("household_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_household_memberships_household_id_households")
        ),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_household_memberships_member_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_household_memberships")),
    )
    with op.batch_alter_table("household_memberships", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_household_memberships_household_id"), ["household_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_household_memberships_member_id"), ["member_id"], unique=False)
        batch_op.create_index(
            "ux_household_memberships_open_member_id",
            ["member_id"],
            unique=True,
            postgresql_where=sa.text("left_at IS NULL"),
            sqlite_where=sa.text("left_at IS NULL"),
        )

    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tier", sa.String(length=40), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lapses_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_tiers_member_id_members")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_tiers")),
    )
    with op.batch_alter_table("member_tiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_tiers_lapses_at"), ["lapses_at"], unique=False)

    op.create_table(
        "referral_codes",
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_referral_codes_member_id_members")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_referral_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_referral_codes_code")),
    )
    op.create_table(
        "referrals",
        sa.Column("referred_member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("referrer_member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal_reason", sa.String(length=40), nullable=True),
        sa.CheckConstraint("status IN ('PENDING', 'REWARDED', 'REFUSED')", name=op.f("ck_referrals_status")),
        sa.ForeignKeyConstraint(
            ["referred_member_id"], ["members.id"], name=op.f("fk_referrals_referred_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["referrer_member_id"], ["members.id"], name=op.f("fk_referrals_referrer_member_id_members")
        ),
        sa.PrimaryKeyConstraint("referred_member_id", name=op.f("pk_referrals")),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referrals_referrer_member_id"), ["referrer_member_id"], unique=False)
        batch_op.create_index(
            "ix_referrals_referrer_member_id_decided_at", ["referrer_member_id", "decided_at"], unique=False
        )

    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_tier", sa.String(length=40), nullable=False),
        sa.Column("to_tier", sa.String(length=40), nullable=False),
        sa.Column("qualifying_points", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.String(length=10), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("cause IN ('EARN', 'REVIEW')", name=op.f("ck_tier_changes_cause")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_tier_changes_member_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_changes")),
    )
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tier_changes_member_id"), ["member_id"], unique=False)

    op.create_table(
        "bonus_awards",
        sa.Column("transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bonus_kind", sa.String(length=12), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("earn_transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("detail", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "bonus_kind IN ('TIER', 'SIGN_UP', 'ACTIVITY', 'PROMOTION', 'REFERRAL')",
            name=op.f("ck_bonus_awards_bonus_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["earn_transaction_id"],
            ["journal_transactions.id"],
            name=op.f("fk_bonus_awards_earn_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_bonus_awards_member_id_members")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.id"],
            name=op.f("fk_bonus_awards_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_bonus_awards")),
    )
    with op.batch_alter_table("bonus_awards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bonus_awards_earn_transaction_id"), ["earn_transaction_id"], unique=False)
        batch_op.create_index("ix_bonus_awards_member_id_bonus_kind", ["member_id", "bonus_kind"], unique=False)

    op.create_table(
        "point_transfers",
        sa.Column("transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("household_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sender_member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("recipient_member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("transferred_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_point_transfers_points_positive")),
        sa.CheckConstraint("sender_member_id <> recipient_member_id", name=op.f("ck_point_transfers_not_to_self")),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_point_transfers_household_id_households")
        ),
        sa.ForeignKeyConstraint(
            ["recipient_member_id"], ["members.id"], name=op.f("fk_point_transfers_recipient_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["sender_member_id"], ["members.id"], name=op.f("fk_point_transfers_sender_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.id"],
            name=op.f("fk_point_transfers_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_point_transfers")),
    )
    with op.batch_alter_table("point_transfers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_point_transfers_recipient_member_id_transferred_at",
            ["recipient_member_id", "transferred_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_point_transfers_sender_member_id_transferred_at", ["sender_member_id", "transferred_at"], unique=False
        )
    op.create_table('tier_points_withdrawn',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('earn_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('points > 0', name=op.f('ck_tier_points_withdrawn_points_positive')),
    sa.ForeignKeyConstraint(['earn_transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_tier_points_withdrawn_earn_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_tier_points_withdrawn_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_points_withdrawn'))
    )  # fmt: skip
    with op.batch_alter_table('tier_points_withdrawn', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tier_points_withdrawn_member_id'), ['member_id'], unique=False)
    allow_kinds(TRANSACTION_KINDS, MOVEMENT_KINDS)
    create_append_only_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    # Fails once a BONUS or TRANSFER transaction exists: the ledger is append-only.
    allow_kinds(TRANSACTION_KINDS_BEFORE, MOVEMENT_KINDS_BEFORE)
    op.drop_table('tier_points_withdrawn')
    with op.batch_alter_table("point_transfers", schema=None) as batch_op:
        batch_op.drop_index("ix_point_transfers_sender_member_id_transferred_at")
        batch_op.drop_index("ix_point_transfers_recipient_member_id_transferred_at")

    op.drop_table("point_transfers")
    with op.batch_alter_table("bonus_awards", schema=None) as batch_op:
        batch_op.drop_index("ix_bonus_awards_member_id_bonus_kind")
        batch_op.drop_index(batch_op.f("ix_bonus_awards_earn_transaction_id"))

    op.drop_table("bonus_awards")
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tier_changes_member_id"))

    op.drop_table("tier_changes")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index("ix_referrals_referrer_member_id_decided_at")
        batch_op.drop_index(batch_op.f("ix_referrals_referrer_member_id"))

    op.drop_table("referrals")
    op.drop_table("referral_codes")
    with op.batch_alter_table("member_tiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_tiers_lapses_at"))

    op.drop_table("member_tiers")
    with op.batch_alter_table("household_memberships", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_household_memberships_open_member_id",
            postgresql_where=sa.text("left_at IS NULL"),
            sqlite_where=sa.text("left_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_household_memberships_member_id"))
        batch_op.drop_index(batch_op.f("ix_household_memberships_household_id"))

    op.drop_table("household_memberships")
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_index("ix_promotions_partner_id_starts_at")

    op.drop_table("promotions")
    op.drop_table("activity_definitions")
    op.drop_table("households")


def allow_kinds(transaction_kinds: tuple[str, ...], movement_kinds: tuple[str, ...]) -> None:
    """Replaces the CHECKs on journal_transactions.kind and lot_movements.kind."""
    transaction_check = "kind IN (" + ", ".join(f"'{kind}'" for kind in transaction_kinds) + ")"
    movement_check = "kind IN (" + ", ".join(f"'{kind}'" for kind in movement_kinds) + ")"
    if op.get_bind().dialect.name == "postgresql":
        for table, check in (("journal_transactions", transaction_check), ("lot_movements", movement_check)):
            op.drop_constraint(op.f(f"ck_{table}_kind"), table, type_="check")
            op.create_check_constraint(op.f(f"ck_{table}_kind"), table, sa.text(check))
        return
    transactions = sa.Table('journal_transactions', sa.MetaData(),
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column('public_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('partner_id', sa.Integer(), nullable=True),
        sa.Column('member_id', sa.Integer(), nullable=False),
        sa.Column('contract_version_id', sa.Integer(), nullable=True),
        sa.Column('points', sa.BigInteger(), nullable=False),
        sa.Column('receipt_id', sa.String(length=100), nullable=True),
        sa.Column('amount_minor', sa.BigInteger(), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('references_transaction_id', sa.Integer(), nullable=True),
        sa.Column('business_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_journal_transactions'),
        sa.CheckConstraint(transaction_check, name='ck_journal_transactions_kind'),
        sa.CheckConstraint('points > 0', name='ck_journal_transactions_points_positive'),
        sa.ForeignKeyConstraint(['contract_version_id'], ['contract_versions.id'],
                                name='fk_journal_transactions_contract_version_id_contract_versions'),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name='fk_journal_transactions_member_id_members'),
        sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name='fk_journal_transactions_partner_id_partners'),
        sa.ForeignKeyConstraint(['references_transaction_id'], ['journal_transactions.id'],
                                name='fk_journal_transactions_references_transaction_id_journal_transactions'),
        sa.UniqueConstraint('public_id', name='uq_journal_transactions_public_id'),
        sa.Index('ix_journal_transactions_partner_id_business_time', 'partner_id', 'business_time'),
        sa.Index('ix_journal_transactions_business_time', 'business_time'),
        sa.Index('ix_journal_transactions_partner_id_receipt_id', 'partner_id', 'receipt_id'),
        sa.Index('ix_journal_transactions_member_id_business_time', 'member_id', 'business_time', 'kind'),
    )  # fmt: skip
    movements = sa.Table('lot_movements', sa.MetaData(),
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column('lot_id', sa.Integer(), nullable=False),
        sa.Column('transaction_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('points_delta', sa.BigInteger(), nullable=False),
        sa.CheckConstraint(movement_check, name='ck_lot_movements_kind'),
        sa.CheckConstraint('points_delta <> 0', name='ck_lot_movements_points_delta_not_zero'),
        sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name='fk_lot_movements_lot_id_lots'),
        sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'],
                                name='fk_lot_movements_transaction_id_journal_transactions'),
        sa.Index('ix_lot_movements_lot_id', 'lot_id'),
        sa.Index('ix_lot_movements_transaction_id', 'transaction_id'),
    )  # fmt: skip
    for definition in (transactions, movements):
        table = definition.name
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
        with op.batch_alter_table(table, recreate="always", copy_from=definition):
            pass
        _sqlite_append_only(table)


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
        _sqlite_append_only(table)


def _sqlite_append_only(table: str) -> None:
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
        )
