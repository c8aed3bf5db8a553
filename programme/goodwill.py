"""Support goodwill: staff grant or deduct points with a reason code, a second person approving large ones.

An adjustment of at most the policy's ``approval_threshold_points`` is applied as it is asked for.
A larger one waits as PENDING until someone other than the requester approves (or rejects) it. The
request and its decision are two append-only rows: the audit trail, with both identities.

Bookkeeping (ADJUSTMENT journal transactions):
- A grant is a new lot funded by the operator (no partner pays for goodwill), which repays any debt
  of the member first, like every credit. It lives as long as the policy gives earned points.
- A deduction takes points from the member's spendable lots, first to expire first, never more than
  is available (held points stay), and hands them to the operator. Its lot movements are ADJUSTED:
  settlement reports them at 0 to an issuer billed on redemption, which never pays for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, select

from common.db import table_of
from common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from common.idempotency import Outcome, RequestKey, run_once
from common.ids import new_id
from common.sql import Page, paginate
from common.uow import UnitOfWork
from ledger.errors import InsufficientPoints
from ledger.lots import plan_consumption
from ledger.posting import Ledger, NewLot, Posting
from ledger.repository import LedgerRepository, transactions
from members.identifiers import MemberIdentifier
from members.repository import MemberRepository, members
from members.services import MemberNotFound, find_member
from programme.expiry import HeldPoints
from programme.models import GoodwillAdjustment, GoodwillDecision
from programme.policy import add_months
from programme.services import policy_in_force

adjustments = table_of(GoodwillAdjustment)
decisions = table_of(GoodwillDecision)

GRANT, DEDUCT = "GRANT", "DEDUCT"
PENDING, APPLIED, REJECTED = "PENDING", "APPLIED", "REJECTED"
MAX_NOTE_LENGTH = 500
MAX_POINTS = 10_000_000


class InvalidAdjustment(InvalidArgument):
    reason = "INVALID_ADJUSTMENT"


class UnknownReasonCode(InvalidArgument):
    reason = "UNKNOWN_REASON_CODE"


class AdjustmentNotFound(NotFound):
    reason = "ADJUSTMENT_NOT_FOUND"


class AdjustmentAlreadyDecided(FailedPrecondition):
    reason = "ADJUSTMENT_ALREADY_DECIDED"


class ApproverIsRequester(PermissionDenied):
    reason = "APPROVER_IS_REQUESTER"


@dataclass(frozen=True)
class AdjustmentCommand:
    member: MemberIdentifier
    direction: str
    points: int
    reason_code: str
    note: str


@dataclass(frozen=True)
class AdjustmentView:
    adjustment_id: str
    member_number: str
    direction: str
    points: int
    reason_code: str
    note: str
    requested_by: str
    requested_at: datetime
    needs_approval: bool
    status: str
    decided_by: str
    decided_at: datetime | None
    decision_note: str
    transaction_id: str  # the ADJUSTMENT journal transaction, once applied


class GoodwillDesk:
    """Support's adjustments on one database; ``held_points`` comes from checkout (see server/app.py)."""

    def __init__(self, uow: UnitOfWork, *, identifier_pepper: bytes, held_points: HeldPoints) -> None:
        self.uow = uow
        self.identifier_pepper = identifier_pepper
        self.held_points = held_points

    def request(self, request: RequestKey, command: AdjustmentCommand, requested_by: str) -> Outcome[AdjustmentView]:
        """Records an adjustment; applies it at once when it is within the approval threshold."""
        _validate(command)

        def work(connection: Connection) -> AdjustmentView:
            now = self.uow.clock.now()
            goodwill = policy_in_force(connection, now).policy.goodwill
            if command.reason_code not in goodwill.reason_codes:
                raise UnknownReasonCode(
                    f"reason_code must be one of {list(goodwill.reason_codes)}", field="reason_code"
                )
            member = find_member(MemberRepository(connection), command.member, self.identifier_pepper)
            if member is None:
                raise MemberNotFound("no member has that identifier")
            needs_approval = command.points > goodwill.approval_threshold_points
            adjustment_id = int(
                connection.execute(
                    adjustments.insert().values(
                        public_id=new_id(), member_id=member.id, direction=command.direction, points=command.points,
                        reason_code=command.reason_code, note=command.note.strip(), requested_by=requested_by,
                        requested_at=now, needs_approval=needs_approval,
                    ).returning(adjustments.c.id)
                ).scalar_one()
            )  # fmt: skip
            if not needs_approval:
                self._apply(connection, adjustment_id, decided_by=requested_by, note="", now=now)
            return _view(connection, adjustment_id)

        return run_once(self.uow, request, "CreatePointsAdjustment", command, AdjustmentView, work)

    def approve(self, request: RequestKey, adjustment_id: str, approver: str, note: str) -> Outcome[AdjustmentView]:
        """Applies a pending adjustment; the approver must not be the person who asked for it."""
        _validate_note(note)

        def work(connection: Connection) -> AdjustmentView:
            row = _pending(connection, adjustment_id)
            if row.requested_by == approver:
                raise ApproverIsRequester("an adjustment is approved by someone other than who asked for it")
            self._apply(connection, row.id, decided_by=approver, note=note.strip(), now=self.uow.clock.now())
            return _view(connection, row.id)

        command = {"adjustment_id": adjustment_id, "note": note}
        return run_once(self.uow, request, "ApprovePointsAdjustment", command, AdjustmentView, work)

    def reject(self, request: RequestKey, adjustment_id: str, decider: str, note: str) -> Outcome[AdjustmentView]:
        """Closes a pending adjustment without applying it (the requester may withdraw their own)."""
        _validate_note(note)

        def work(connection: Connection) -> AdjustmentView:
            row = _pending(connection, adjustment_id)
            connection.execute(
                decisions.insert().values(
                    adjustment_id=row.id, outcome=REJECTED, decided_by=decider, decided_at=self.uow.clock.now(),
                    transaction_id=None, note=note.strip(),
                )
            )  # fmt: skip
            return _view(connection, row.id)

        command = {"adjustment_id": adjustment_id, "note": note}
        return run_once(self.uow, request, "RejectPointsAdjustment", command, AdjustmentView, work)

    def get(self, adjustment_id: str) -> AdjustmentView:
        def work(connection: Connection) -> AdjustmentView:
            row_id = connection.execute(
                select(adjustments.c.id).where(adjustments.c.public_id == adjustment_id)
            ).scalar()
            if row_id is None:
                raise AdjustmentNotFound("no adjustment has that id", adjustment_id=adjustment_id)
            return _view(connection, int(row_id))

        return self.uow.run(work)

    def list(self, *, status: str, member_number: str, page_size: int, page_token: str) -> Page[AdjustmentView]:
        """The audit trail, oldest first; ``status`` PENDING, APPLIED or REJECTED ("" for all)."""
        if status not in ("", PENDING, APPLIED, REJECTED):
            raise InvalidAdjustment("status must be PENDING, APPLIED or REJECTED", field="status")

        def fetch(after_id: int, limit: int) -> list[tuple[int, AdjustmentView]]:
            def work(connection: Connection) -> list[tuple[int, AdjustmentView]]:
                query = _VIEW.where(adjustments.c.id > after_id)
                if status == PENDING:
                    query = query.where(decisions.c.adjustment_id.is_(None))
                elif status:
                    query = query.where(decisions.c.outcome == status)
                if member_number:
                    query = query.where(members.c.member_number == member_number.strip().upper())
                rows = connection.execute(query.order_by(adjustments.c.id).limit(limit)).all()
                return [(int(row.id), _view_of(row)) for row in rows]

            return self.uow.run(work)

        page = paginate(page_size, page_token, fetch, lambda item: item[0])
        return Page([view for _, view in page.items], page.next_page_token)

    def _apply(self, connection: Connection, adjustment_id: int, *, decided_by: str, note: str, now: datetime) -> None:
        row = connection.execute(select(adjustments).where(adjustments.c.id == adjustment_id)).one()
        repository = LedgerRepository(connection)
        member = repository.lock_member(row.member_id)
        ledger = Ledger(repository, recorded_at=now)
        posting = Posting(kind="ADJUSTMENT", member_id=row.member_id, partner_id=None, contract_version_id=None,
                          business_time=now)  # fmt: skip
        if row.direction == GRANT:
            policy = policy_in_force(connection, now).policy
            lot = NewLot(
                issuer_partner_id=None, contract_version_id=None, issuance_price=Decimal(0),
                currency=policy.goodwill.currency, earned_at=now, available_at=now,
                expires_at=add_months(now, policy.expiry.lifetime_months),
            )  # fmt: skip
            posted, _, _ = ledger.earn(member, posting, int(row.points), lot)
        else:
            available = repository.spendable(row.member_id, now, now) - self.held_points(connection, row.member_id, now)
            plan = plan_consumption(repository.lots_with_points(row.member_id), int(row.points), now)
            if plan is None or row.points > available:
                raise InsufficientPoints(
                    f"the member has {max(available, 0)} points available; cannot deduct {row.points}",
                    available_points=str(max(available, 0)),
                )  # fmt: skip
            posted = ledger.deduct(member, posting, plan)
        connection.execute(
            decisions.insert().values(
                adjustment_id=adjustment_id, outcome=APPLIED, decided_by=decided_by, decided_at=now,
                transaction_id=posted.transaction_id, note=note,
            )
        )  # fmt: skip


def _validate(command: AdjustmentCommand) -> None:
    if command.direction not in (GRANT, DEDUCT):
        raise InvalidAdjustment("direction must be GRANT or DEDUCT", field="direction")
    if not 0 < command.points <= MAX_POINTS:
        raise InvalidAdjustment(f"points must be 1 to {MAX_POINTS:,}", field="points")
    if not command.note.strip():
        raise InvalidAdjustment("a note saying what happened is required", field="note")
    _validate_note(command.note)


def _validate_note(note: str) -> None:
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidAdjustment(f"notes are at most {MAX_NOTE_LENGTH} characters", field="note")


def _pending(connection: Connection, adjustment_id: str) -> Any:
    """The adjustment, locked against a concurrent decision; it must still be pending."""
    row = connection.execute(
        select(adjustments.c.id, adjustments.c.requested_by)
        .where(adjustments.c.public_id == adjustment_id)
        .with_for_update()
    ).first()
    if row is None:
        raise AdjustmentNotFound("no adjustment has that id", adjustment_id=adjustment_id)
    decided = connection.execute(select(decisions.c.outcome).where(decisions.c.adjustment_id == row.id)).scalar()
    if decided is not None:
        raise AdjustmentAlreadyDecided(f"the adjustment was already {decided.lower()}", status=decided)
    return row


_VIEW = (
    select(
        adjustments, members.c.member_number, decisions.c.outcome, decisions.c.decided_by, decisions.c.decided_at,
        decisions.c.note.label("decision_note"), transactions.c.public_id.label("transaction_public_id"),
    )
    .join(members, members.c.id == adjustments.c.member_id)
    .outerjoin(decisions, decisions.c.adjustment_id == adjustments.c.id)
    .outerjoin(transactions, and_(transactions.c.id == decisions.c.transaction_id))
)  # fmt: skip


def _view(connection: Connection, adjustment_id: int) -> AdjustmentView:
    return _view_of(connection.execute(_VIEW.where(adjustments.c.id == adjustment_id)).one())


def _view_of(row: Any) -> AdjustmentView:
    return AdjustmentView(
        adjustment_id=row.public_id, member_number=row.member_number, direction=row.direction, points=int(row.points),
        reason_code=row.reason_code, note=row.note, requested_by=row.requested_by, requested_at=row.requested_at,
        needs_approval=bool(row.needs_approval), status=row.outcome or PENDING, decided_by=row.decided_by or "",
        decided_at=row.decided_at, decision_note=row.decision_note or "",
        transaction_id=row.transaction_public_id or "",
    )  # fmt: skip
