"""Settlement statements on the ledger tables: itemise a period, read its items, store and read statements.

Reads of a close stream: a period can hold millions of entries and none of them is kept in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Subquery

from common.db import DecimalString, UtcDateTime, table_of
from common.sql import inserted_id
from ledger.models import JournalEntry, JournalTransaction, LedgerAccount, Lot, LotMovement
from partners.models import ContractVersion, Partner
from settlement.documents import PaymentView
from settlement.models import (
    MatrixCell,
    OperatorMargin,
    Payment,
    SettlementAssignment,
    SettlementPeriod,
    Statement,
    StatementLine,
)

periods = table_of(SettlementPeriod)
assignments = table_of(SettlementAssignment)
statements = table_of(Statement)
lines = table_of(StatementLine)
matrix_cells = table_of(MatrixCell)
margins = table_of(OperatorMargin)
payments = table_of(Payment)
transactions = table_of(JournalTransaction)
entries = table_of(JournalEntry)
accounts = table_of(LedgerAccount)
lots = table_of(Lot)
movements = table_of(LotMovement)
versions = table_of(ContractVersion)
partners = table_of(Partner)

STREAM_BATCH_ROWS = 20_000
# pg_advisory_xact_lock key shared by closes and payments (any constant unique to this use).
SETTLEMENT_LOCK_KEY = 0x5E771E
# The billing the item-by-item path sees for an entry whose transaction has no contract terms.
NO_TERMS = "NO_TERMS"
# A line type for a ledger fact settlement has no rule for: a close that meets one stops.
UNCLASSIFIED = "UNCLASSIFIED"


@dataclass(frozen=True)
class PeriodRow:
    id: int
    label: str
    length: str
    starts_at: datetime
    ends_at: datetime
    status: str
    closed_at: datetime
    closed_by: str
    transaction_count: int
    paid_at: datetime | None
    payments_through_id: int


@dataclass(frozen=True)
class EntryItem:
    """A journal entry on a partner's issued or redeemed account, with the terms its transaction used."""

    entry_id: int
    partner_id: int
    account_kind: str
    transaction_kind: str
    points: int
    currency: str
    billing: str
    issuance_price: Decimal
    reimbursement_rate: Decimal
    business_time: datetime
    transaction_public_id: str
    original_time: datetime | None
    original_public_id: str | None
    own_lot_reversed: int


@dataclass(frozen=True)
class MovementItem:
    """A change to a lot whose issuer is billed on redemption."""

    movement_id: int
    issuer_partner_id: int
    currency: str
    issuance_price: Decimal
    kind: str
    points_delta: int
    is_own_lot_reversal: bool
    business_time: datetime
    transaction_public_id: str
    original_time: datetime | None
    original_public_id: str | None


@dataclass(frozen=True)
class MatrixRow:
    currency: str
    issuer_partner_id: int | None
    redeemer_partner_id: int
    issuance_price: Decimal
    points: int


@dataclass(frozen=True)
class StatementRow:
    id: int
    statement_id: str
    period_label: str
    period_starts_at: datetime
    period_ends_at: datetime
    partner_id: int
    partner_code: str
    partner_name: str
    currency: str
    opening_position_minor: int
    net_minor: int
    closing_position_minor: int
    net_exact: Decimal
    due_date: date
    item_count: int
    items_sha256: str
    csv_sha256: str
    closed_at: datetime
    inbound_minor: int
    outbound_minor: int


@dataclass(frozen=True)
class LineRow:
    line_number: int
    line_type: str
    prior_period: str
    original_reference: str
    points: int
    unit_price: Decimal
    amount_exact: Decimal
    amount_minor: int
    item_count: int


_ORIGINAL = aliased(transactions, name="original")
_PAID_IN = func.coalesce(func.sum(case((payments.c.direction == "INBOUND", payments.c.amount_minor), else_=0)), 0)
_PAID_OUT = func.coalesce(func.sum(case((payments.c.direction == "OUTBOUND", payments.c.amount_minor), else_=0)), 0)


class SettlementRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    # Periods
    def period(self, label: str, *, for_update: bool = False) -> PeriodRow | None:
        query = select(*_period_columns()).where(periods.c.label == label)
        row = self.connection.execute(query.with_for_update() if for_update else query).first()
        return PeriodRow(*row) if row else None

    def list_periods(self, after_id: int, limit: int) -> list[PeriodRow]:
        query = select(*_period_columns()).where(periods.c.id > after_id).order_by(periods.c.id).limit(limit)
        return [PeriodRow(*row) for row in self.connection.execute(query)]

    def latest_transaction_before(self, moment: datetime) -> datetime | None:
        query = select(func.max(transactions.c.business_time)).where(transactions.c.business_time < moment)
        value: datetime | None = self.connection.execute(query).scalar()
        return value

    def insert_period(self, **values: Any) -> int:
        return inserted_id(self.connection.execute(insert(periods).values(**values)))

    def set_transaction_count(self, period_id: int, count: int) -> None:
        self.connection.execute(periods.update().where(periods.c.id == period_id).values(transaction_count=count))

    def mark_paid(self, period_id: int, paid_at: datetime) -> None:
        self.connection.execute(
            periods.update().where(periods.c.id == period_id).values(status="PAID", paid_at=paid_at)
        )

    def assign_transactions(self, period_id: int, ends_at: datetime) -> int:
        """Itemises every transaction before ``ends_at`` that no period holds yet; returns how many.

        One statement, one snapshot: a transaction committed while this runs is wholly in or wholly
        out, and one left out is picked up by the next period's close.
        """
        unassigned = select(transactions.c.id, literal(period_id)).where(
            transactions.c.business_time < ends_at,
            ~exists().where(assignments.c.transaction_id == transactions.c.id),
        )
        self.connection.execute(insert(assignments).from_select(["transaction_id", "period_id"], unassigned))
        # rowcount of INSERT ... SELECT is not reported by every driver: count what the period holds.
        count = select(func.count()).select_from(assignments).where(assignments.c.period_id == period_id)
        return int(self.connection.execute(count).scalar_one())

    # A period's statement items, set-based: what a close sums and hashes (settlement/items.py states
    # the same rules item by item; reconciliation recomputes with those and must agree).
    def statement_items(self, period_id: int, starts_at: datetime) -> Subquery:
        """One row per statement item: partner, currency, line type, unit price, points, its reference
        and prior-period time when it adjusts an earlier period, and its canonical line."""
        account_ids = self.partner_account_ids()
        own_prior = transactions.c.business_time < starts_at
        original_prior = _ORIGINAL.c.business_time < starts_at
        reference = case((own_prior, transactions.c.public_id), (original_prior, _ORIGINAL.c.public_id), else_="")
        prior_time = case(
            (own_prior, transactions.c.business_time), (original_prior, _ORIGINAL.c.business_time), else_=None
        )
        zero = literal(Decimal(0), DecimalString())
        issued, redeemed = accounts.c.kind == "PARTNER_ISSUED", accounts.c.kind == "PARTNER_REDEEMED"
        on_issuance = versions.c.billing == "ON_ISSUANCE"
        entry_line_type = case(
            (versions.c.id.is_(None), UNCLASSIFIED),
            (and_(issued, transactions.c.kind.in_(("EARN", "BONUS"))), "ISSUANCE"),
            (and_(issued, transactions.c.kind == "EARN_REVERSAL"), "ISSUANCE_REVERSAL"),
            (and_(issued, transactions.c.kind == "EXPIRY"), "BREAKAGE"),  # ON_ISSUANCE only, see below
            (and_(redeemed, transactions.c.kind == "REDEEM"), "REDEMPTION"),
            (and_(redeemed, transactions.c.kind == "REDEMPTION_REFUND"), "REDEMPTION_REFUND"),
            else_=UNCLASSIFIED,
        )
        entry_price = case((transactions.c.kind == "EXPIRY", zero), (redeemed, versions.c.reimbursement_rate),
                           (on_issuance, versions.c.issuance_price), else_=zero)  # fmt: skip
        own_lot_reversed = _own_lot_reversed()

        partner_entries = _period_partner_entries(
            select(
                accounts.c.owner_id.label("partner_id"),
                versions.c.currency.label("currency"),
                entry_line_type.label("line_type"),
                entry_price.label("unit_price"),
                entries.c.amount_points.label("points"),
                reference.label("reference"),
                prior_time.label("prior_time"),
                literal(0).label("source_rank"),
                entries.c.id.label("source_id"),
                literal(0).label("sub"),
            ),
            period_id,
            account_ids,
        ).where(
            # The expiry of an ON_REDEMPTION lot is itemised from its EXPIRED movement (lot_movements).
            ~and_(transactions.c.kind == "EXPIRY", func.coalesce(versions.c.billing, "") == "ON_REDEMPTION")
        )

        # An ON_REDEMPTION issuer whose returned points had already been spent is credited for them. Few
        # transactions qualify, so the query starts from them (versions as literals the planner can weigh),
        # and the issuer is the reversal's partner.
        already_spent = entries.c.amount_points - own_lot_reversed
        reversal_credit = (
            select(
                transactions.c.partner_id,
                versions.c.currency,
                literal("CONSUMPTION_REVERSAL"),
                versions.c.issuance_price,
                already_spent,
                reference,
                prior_time,
                literal(0),
                entries.c.id,
                literal(1),
            )
            .select_from(transactions)
            .join(assignments, assignments.c.transaction_id == transactions.c.id)
            .join(entries, entries.c.transaction_id == transactions.c.id)
            .join(versions, versions.c.id == transactions.c.contract_version_id)
            .outerjoin(_ORIGINAL, _ORIGINAL.c.id == transactions.c.references_transaction_id)
            .where(
                transactions.c.kind == "EARN_REVERSAL",
                transactions.c.contract_version_id.in_(self.version_ids(billing="ON_REDEMPTION")),
                assignments.c.period_id == period_id,
                entries.c.account_id.in_(account_ids),
                entries.c.side == "C",
                already_spent > 0,
            )
        )
        movement_line_type = case(
            (movements.c.kind.in_(("RESTORED", "REPAYMENT_RESTORED")), "CONSUMPTION_REVERSAL"),
            (movements.c.kind == "EXPIRED", "BREAKAGE"),
            (movements.c.kind == "ADJUSTED", "ADJUSTMENT"),
            (movements.c.kind.in_(("CONSUMED", "DEBT_REPAYMENT", "REVERSED")), "CONSUMPTION"),
            else_=UNCLASSIFIED,
        )
        lot_movements = select(
            lots.c.issuer_partner_id,
            lots.c.currency,
            movement_line_type,
            case((movements.c.kind.in_(("EXPIRED", "ADJUSTED")), zero), else_=lots.c.issuance_price),
            func.abs(movements.c.points_delta),
            reference,
            prior_time,
            literal(1),
            movements.c.id,
            literal(0),
        )
        lot_movements = _on_redemption_lot_movements(lot_movements, period_id).where(
            # Points a return takes back from the returned purchase's own lot (or a household member's lot
            # they were transferred into) were never spent.
            ~and_(movements.c.kind == "REVERSED", func.coalesce(_IS_OWN_LOT, False)),
            # Points a member transferred changed owner, not issuer: billed when the recipient spends them.
            movements.c.kind != "TRANSFERRED",
        )
        everything = union_all(partner_entries, reversal_credit, lot_movements)
        return everything.subquery("statement_items")

    def line_totals(
        self, items: Subquery | Table
    ) -> list[tuple[int, str, str, Decimal, str, datetime | None, int, int]]:
        """(partner, currency, line type, unit price, reference, prior time, points, items) per line."""
        query = select(
            items.c.partner_id,
            items.c.currency,
            items.c.line_type,
            items.c.unit_price,
            items.c.reference,
            func.max(items.c.prior_time),
            func.sum(items.c.points),
            func.count(),
        ).group_by(items.c.partner_id, items.c.currency, items.c.line_type, items.c.unit_price, items.c.reference)
        rows: Any = self.connection.execute(query)
        return [(*row[:5], _utc(row[5]), int(row[6]), int(row[7])) for row in rows]

    def item_digests(self, items: Subquery | Table) -> dict[tuple[int, str], tuple[int, str]]:
        """(item count, SHA-256 of the canonical item list) per statement."""
        line = (
            case((items.c.source_rank == 0, "E"), else_="M")
            + cast(items.c.source_id, String)
            + ","
            + items.c.line_type
            + ","
            + cast(items.c.points, String)
            + ","
            + cast(items.c.unit_price, String)
            + ","
            + items.c.reference
            + literal_column("'\n'")
        )
        order = (items.c.source_rank, items.c.source_id, items.c.sub)
        if self.connection.dialect.name == "postgresql":
            listing = func.string_agg(line, aggregate_order_by(literal_column("''"), *order))
            digest = func.encode(func.sha256(func.convert_to(listing, "UTF8")), "hex")
            query = select(items.c.partner_id, items.c.currency, func.count(), digest).group_by(
                items.c.partner_id, items.c.currency
            )
            return {(row[0], row[1]): (int(row[2]), str(row[3])) for row in self.connection.execute(query)}
        # SQLite has no SHA-256 and no ordered aggregates: stream the lines in order and hash here.
        hashers: dict[tuple[int, str], Any] = {}
        counts: dict[tuple[int, str], int] = {}
        for partner_id, currency, text in self._stream(
            select(items.c.partner_id, items.c.currency, line).order_by(*order)
        ):
            key = (partner_id, currency)
            if key not in hashers:
                hashers[key], counts[key] = hashlib.sha256(), 0
            hashers[key].update(text.encode())
            counts[key] += 1
        return {key: (counts[key], hasher.hexdigest()) for key, hasher in hashers.items()}

    def materialise_items(self, period_id: int, starts_at: datetime) -> Table:
        """The period's statement items in a temporary table: the joins behind them run once, not per sum."""
        table = Table(
            "settlement_close_items",
            MetaData(),
            Column("partner_id", Integer),
            Column("currency", String(3)),
            Column("line_type", String(25)),
            Column("unit_price", DecimalString()),
            Column("points", BigInteger),
            Column("reference", String(32)),
            Column("prior_time", UtcDateTime()),
            Column("source_rank", Integer),
            Column("source_id", BigInteger),
            Column("sub", Integer),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        table.create(self.connection)
        items = self.statement_items(period_id, starts_at)
        self.connection.execute(insert(table).from_select([column.name for column in table.c], select(items)))
        return table

    def version_ids(self, *, billing: str) -> list[int]:
        query = select(versions.c.id).where(versions.c.billing == billing)
        return [int(value) for value in self.connection.execute(query).scalars()]

    def partner_account_ids(self) -> list[int]:
        """The partners' issued and redeemed accounts (a few per partner; the operator's are owner 0)."""
        query = select(accounts.c.id).where(
            accounts.c.kind.in_(("PARTNER_ISSUED", "PARTNER_REDEEMED")), accounts.c.owner_id != 0
        )
        return [int(value) for value in self.connection.execute(query).scalars()]

    def prepare_for_close(self) -> None:
        """PostgreSQL: no per-request timeouts (a close reads a whole period, and a concurrent one waits for
        it to finish rather than fail), and room to sort a period's items in memory."""
        if self.connection.dialect.name == "postgresql":
            self.connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            self.connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
            self.connection.exec_driver_sql("SET LOCAL work_mem = '256MB'")

    def lock_settlement(self) -> None:
        """Serialises closes and payments (SQLite's single writer already does)."""
        if self.connection.dialect.name == "postgresql":
            self.connection.execute(select(func.pg_advisory_xact_lock(SETTLEMENT_LOCK_KEY)))

    def closed_until(self) -> datetime | None:
        """The end of the latest closed period."""
        return _utc(self.connection.execute(select(func.max(periods.c.ends_at))).scalar())

    def last_payment_id(self) -> int:
        return int(self.connection.execute(select(func.coalesce(func.max(payments.c.id), 0))).scalar_one())

    def analyze_assignments(self) -> None:
        if self.connection.dialect.name == "postgresql":
            # Without statistics the planner takes the just-filled table for empty and picks nested loops.
            self.connection.exec_driver_sql("ANALYZE settlement_assignments")

    # Items of a period
    def entry_items(self, period_id: int) -> Iterator[EntryItem]:
        own_lot_reversed = _own_lot_reversed()
        needs_own = and_(transactions.c.kind == "EARN_REVERSAL", versions.c.billing == "ON_REDEMPTION")
        query = select(
            entries.c.id,
            accounts.c.owner_id,
            accounts.c.kind,
            transactions.c.kind,
            entries.c.amount_points,
            versions.c.currency,
            func.coalesce(versions.c.billing, NO_TERMS),
            versions.c.issuance_price,
            versions.c.reimbursement_rate,
            transactions.c.business_time,
            transactions.c.public_id,
            _ORIGINAL.c.business_time,
            _ORIGINAL.c.public_id,
            case((needs_own, own_lot_reversed), else_=0),
        )
        query = _period_partner_entries(query, period_id, self.partner_account_ids()).order_by(entries.c.id)
        row: Any
        for row in self._stream(query):
            fields = list(row)
            fields[13] = int(fields[13])
            yield EntryItem(*fields)

    def movement_items(self, period_id: int) -> Iterator[MovementItem]:
        query = select(
            movements.c.id,
            lots.c.issuer_partner_id,
            lots.c.currency,
            lots.c.issuance_price,
            movements.c.kind,
            movements.c.points_delta,
            _IS_OWN_LOT,
            transactions.c.business_time,
            transactions.c.public_id,
            _ORIGINAL.c.business_time,
            _ORIGINAL.c.public_id,
        )
        query = _on_redemption_lot_movements(query, period_id).order_by(movements.c.id)
        for row in self._stream(query):
            yield MovementItem(
                movement_id=row[0],
                issuer_partner_id=row[1],
                currency=row[2],
                issuance_price=row[3],
                kind=row[4],
                points_delta=row[5],
                is_own_lot_reversal=bool(row[6]),
                business_time=row[7],
                transaction_public_id=row[8],
                original_time=row[9],
                original_public_id=row[10],
            )

    def matrix_rows(self, period_id: int) -> list[MatrixRow]:
        """Points spent (net of those given back) per issuer and redeeming partner, from lot lineage."""
        points = func.sum(-movements.c.points_delta)
        query = (
            select(lots.c.currency, lots.c.issuer_partner_id, transactions.c.partner_id, lots.c.issuance_price, points)
            .select_from(assignments)
            .join(transactions, transactions.c.id == assignments.c.transaction_id)
            .join(movements, movements.c.transaction_id == transactions.c.id)
            .join(lots, lots.c.id == movements.c.lot_id)
            .where(
                assignments.c.period_id == period_id,
                transactions.c.kind.in_(("REDEEM", "REDEMPTION_REFUND")),
            )
            .group_by(lots.c.currency, lots.c.issuer_partner_id, transactions.c.partner_id, lots.c.issuance_price)
        )
        # SUM of a BIGINT is a NUMERIC on PostgreSQL.
        return [MatrixRow(*row[:4], int(row[4])) for row in self.connection.execute(query)]

    def debt_funded_redemptions(self, period_id: int) -> dict[int, int]:
        """Points of the period's redemptions booked to member debt, less those refunds gave back by
        cancelling that debt, per redeeming partner: an offline redemption the member's points no longer
        covered (Ledger.spend_into_debt) has no lot lineage."""
        signed = case((entries.c.side == "D", entries.c.amount_points), else_=-entries.c.amount_points)
        query = (
            select(transactions.c.partner_id, func.sum(signed))
            .select_from(assignments)
            .join(transactions, transactions.c.id == assignments.c.transaction_id)
            .join(entries, entries.c.transaction_id == transactions.c.id)
            .join(accounts, accounts.c.id == entries.c.account_id)
            .where(
                assignments.c.period_id == period_id,
                transactions.c.kind.in_(("REDEEM", "REDEMPTION_REFUND")),
                accounts.c.kind == "MEMBER_DEBT",
            )
            .group_by(transactions.c.partner_id)
        )
        return {int(partner): int(points) for partner, points in self.connection.execute(query)}

    def _stream(self, query: Any) -> Iterator[Any]:
        # On the statement: Connection.execution_options would switch every later statement to a cursor.
        result = self.connection.execute(query.execution_options(yield_per=STREAM_BATCH_ROWS))
        yield from result

    # Positions carried between periods
    def positions(self) -> dict[tuple[int, str], int]:
        """Per (partner, currency): every closed net so far, less what has been paid (signed).

        Called under the settlement lock, so no payment commits while it reads.
        """
        nets = self.connection.execute(
            select(statements.c.partner_id, statements.c.currency, func.sum(statements.c.net_minor)).group_by(
                statements.c.partner_id, statements.c.currency
            )
        )
        position = {(partner, currency): int(net) for partner, currency, net in nets}
        paid = self.connection.execute(
            select(statements.c.partner_id, statements.c.currency, _PAID_IN, _PAID_OUT)
            .join(payments, payments.c.statement_id == statements.c.id)
            .group_by(statements.c.partner_id, statements.c.currency)
        )
        for partner, currency, paid_in, paid_out in paid:
            position[(partner, currency)] += int(paid_in) - int(paid_out)
        return position

    def partner_codes(self) -> dict[int, tuple[str, str]]:
        rows = self.connection.execute(select(partners.c.id, partners.c.partner_code, partners.c.display_name))
        return {row[0]: (row[1], row[2]) for row in rows}

    def partner_id(self, partner_code: str) -> int | None:
        value = self.connection.execute(select(partners.c.id).where(partners.c.partner_code == partner_code)).scalar()
        return None if value is None else int(value)

    # Writing a close
    def insert_statement(self, **values: Any) -> int:
        return inserted_id(self.connection.execute(insert(statements).values(**values)))

    def insert_lines(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.connection.execute(insert(lines), rows)

    def insert_matrix(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.connection.execute(insert(matrix_cells), rows)

    def insert_margins(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.connection.execute(insert(margins), rows)

    # Reading statements
    def statements(
        self, *, period_id: int | None = None, partner_id: int | None = None, statement_id: str | None = None,
        ended_by: datetime | None = None, after_id: int = 0, limit: int | None = None,
    ) -> list[StatementRow]:  # fmt: skip
        paid = (
            select(payments.c.statement_id, _PAID_IN.label("paid_in"), _PAID_OUT.label("paid_out"))
            .group_by(payments.c.statement_id)
            .subquery()
        )
        query = (
            select(
                statements.c.id,
                statements.c.statement_id,
                periods.c.label,
                periods.c.starts_at,
                periods.c.ends_at,
                statements.c.partner_id,
                partners.c.partner_code,
                partners.c.display_name,
                statements.c.currency,
                statements.c.opening_position_minor,
                statements.c.net_minor,
                statements.c.closing_position_minor,
                statements.c.net_exact,
                statements.c.due_date,
                statements.c.item_count,
                statements.c.items_sha256,
                statements.c.csv_sha256,
                statements.c.closed_at,
                func.coalesce(paid.c.paid_in, 0),
                func.coalesce(paid.c.paid_out, 0),
            )
            .join(periods, periods.c.id == statements.c.period_id)
            .join(partners, partners.c.id == statements.c.partner_id)
            .outerjoin(paid, paid.c.statement_id == statements.c.id)
            .where(statements.c.id > after_id)
            .order_by(statements.c.id)
        )
        if period_id is not None:
            query = query.where(statements.c.period_id == period_id)
        if partner_id is not None:
            query = query.where(statements.c.partner_id == partner_id)
        if statement_id is not None:
            query = query.where(statements.c.statement_id == statement_id)
        if ended_by is not None:
            query = query.where(periods.c.ends_at <= ended_by)
        if limit is not None:
            query = query.limit(limit)
        rows: Any = self.connection.execute(query)
        # Payment sums are NUMERIC on PostgreSQL.
        return [StatementRow(*_with_int_tail(row, 2)) for row in rows]

    def lines_of(self, statement_row_id: int) -> list[LineRow]:
        query = (
            select(
                lines.c.line_number,
                lines.c.line_type,
                lines.c.prior_period,
                lines.c.original_reference,
                lines.c.points,
                lines.c.unit_price,
                lines.c.amount_exact,
                lines.c.amount_minor,
                lines.c.item_count,
            )
            .where(lines.c.statement_id == statement_row_id)
            .order_by(lines.c.line_number)
        )
        return [LineRow(*row) for row in self.connection.execute(query)]

    def matrix_of(self, period_id: int) -> list[tuple[str, int | None, int, int, Decimal, int]]:
        query = (
            select(
                matrix_cells.c.currency,
                matrix_cells.c.issuer_partner_id,
                matrix_cells.c.redeemer_partner_id,
                matrix_cells.c.points,
                matrix_cells.c.issuer_value_exact,
                matrix_cells.c.issuer_value_minor,
            )
            .where(matrix_cells.c.period_id == period_id)
            .order_by(matrix_cells.c.id)
        )
        return [tuple(row) for row in self.connection.execute(query)]

    def margins_of(self, period_id: int) -> list[tuple[str, int, Decimal]]:
        query = (
            select(margins.c.currency, margins.c.margin_minor, margins.c.margin_exact)
            .where(margins.c.period_id == period_id)
            .order_by(margins.c.currency)
        )
        return [(row[0], int(row[1]), row[2]) for row in self.connection.execute(query)]

    # Payments
    def insert_payment(self, **values: Any) -> None:
        self.connection.execute(insert(payments).values(**values))

    def payments_of(self, statement_row_id: int) -> list[PaymentView]:
        query = (
            select(
                payments.c.payment_id,
                statements.c.statement_id,
                payments.c.direction,
                payments.c.amount_minor,
                payments.c.value_date,
                payments.c.bank_reference,
                payments.c.recorded_at,
                payments.c.recorded_by,
            )
            .join(statements, statements.c.id == payments.c.statement_id)
            .where(payments.c.statement_id == statement_row_id)
            .order_by(payments.c.id)
        )
        return [PaymentView(*row) for row in self.connection.execute(query)]

    def payments_between(self, partner_id: int, currency: str, after_id: int, until_id: int) -> int:
        """Signed payments (+ inbound, - outbound) of a partner and currency with ids in (after, until]."""
        query = (
            select(_PAID_IN, _PAID_OUT)
            .join(statements, statements.c.id == payments.c.statement_id)
            .where(
                statements.c.partner_id == partner_id,
                statements.c.currency == currency,
                payments.c.id > after_id,
                payments.c.id <= until_id,
            )
        )
        paid_in, paid_out = self.connection.execute(query).one()
        return int(paid_in) - int(paid_out)

    def unassigned_before(self, moment: datetime, *, recorded_before: datetime | None = None) -> int:
        """Transactions before ``moment`` that no period holds (optionally: recorded before a time)."""
        query = (
            select(func.count())
            .select_from(transactions)
            .where(
                transactions.c.business_time < moment,
                ~exists().where(assignments.c.transaction_id == transactions.c.id),
            )
        )
        if recorded_before is not None:
            query = query.where(transactions.c.recorded_at < recorded_before)
        return int(self.connection.execute(query).scalar_one())

    def assigned_outside(self, period_id: int, ends_at: datetime) -> int:
        """Transactions assigned to a period although their business time is at or after its end."""
        query = (
            select(func.count())
            .select_from(assignments)
            .join(transactions, transactions.c.id == assignments.c.transaction_id)
            .where(assignments.c.period_id == period_id, transactions.c.business_time >= ends_at)
        )
        return int(self.connection.execute(query).scalar_one())

    def latest_statements_before(self, moment: datetime) -> dict[tuple[int, str], StatementRow]:
        """Each (partner, currency)'s latest statement of a period that ended by ``moment``."""
        # Periods close in order and statements are listed by id, so a later period's statement comes later.
        return {(row.partner_id, row.currency): row for row in self.statements(ended_by=moment)}


# The transaction that credited a lot's points: the one that made it, or for a lot a household transfer
# made, the one that made the lot they were first credited into (lots.origin_lot_id).
_ORIGIN_LOT = aliased(lots, name="origin_lot")
_CREDITED_BY = case(
    (lots.c.origin_lot_id.is_(None), lots.c.source_transaction_id),
    else_=select(_ORIGIN_LOT.c.source_transaction_id).where(_ORIGIN_LOT.c.id == lots.c.origin_lot_id).scalar_subquery(),
)
# Whether a lot movement is on a lot holding points of the transaction its transaction refers to: a
# return's own lot, or one its purchase's points were transferred into. Either way never spent.
_IS_OWN_LOT = transactions.c.references_transaction_id == _CREDITED_BY
_LOT_VERSIONS = aliased(versions, name="lot_version")


def _own_lot_reversed() -> Any:
    """Points a reversal took back from the returned purchase's own lot and the lots its points were
    transferred into (correlated to the transaction)."""
    return (
        select(func.coalesce(func.sum(-movements.c.points_delta), 0))
        .join(lots, lots.c.id == movements.c.lot_id)
        .where(movements.c.transaction_id == transactions.c.id, movements.c.kind == "REVERSED", _IS_OWN_LOT)
        .scalar_subquery()
    )


def _period_partner_entries(query: Any, period_id: int, account_ids: list[int]) -> Any:
    """``query`` over the period's entries on the partners' accounts (named as literals, so the planner
    sees how many entries a dozen accounts hold)."""
    return (
        query.select_from(assignments)
        .join(transactions, transactions.c.id == assignments.c.transaction_id)
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .join(accounts, accounts.c.id == entries.c.account_id)
        # Outer: an entry without contract terms must surface as unclassified, not vanish.
        .outerjoin(versions, versions.c.id == transactions.c.contract_version_id)
        .outerjoin(_ORIGINAL, _ORIGINAL.c.id == transactions.c.references_transaction_id)
        .where(assignments.c.period_id == period_id, entries.c.account_id.in_(account_ids))
    )


def _on_redemption_lot_movements(query: Any, period_id: int) -> Any:
    """``query`` over the period's movements of lots whose issuer is billed on redemption."""
    return (
        query.select_from(assignments)
        .join(transactions, transactions.c.id == assignments.c.transaction_id)
        .join(movements, movements.c.transaction_id == transactions.c.id)
        .join(lots, lots.c.id == movements.c.lot_id)
        .join(_LOT_VERSIONS, _LOT_VERSIONS.c.id == lots.c.contract_version_id)
        .outerjoin(_ORIGINAL, _ORIGINAL.c.id == transactions.c.references_transaction_id)
        .where(
            assignments.c.period_id == period_id,
            _LOT_VERSIONS.c.billing == "ON_REDEMPTION",
            lots.c.issuer_partner_id.is_not(None),
        )
    )


def _utc(moment: datetime | None) -> datetime | None:
    """Aggregates bypass the column type: SQLite hands back naive text-parsed times."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _with_int_tail(row: Any, count: int) -> list[Any]:
    values = list(row)
    values[-count:] = [int(value) for value in values[-count:]]
    return values


def _period_columns() -> list[Any]:
    return [
        periods.c.id, periods.c.label, periods.c.length, periods.c.starts_at, periods.c.ends_at, periods.c.status,
        periods.c.closed_at, periods.c.closed_by, periods.c.transaction_count, periods.c.paid_at,
        periods.c.payments_through_id,
    ]  # fmt: skip
