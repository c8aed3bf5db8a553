"""Queries on households, their memberships and the point transfers between their members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from common.db import table_of
from common.ids import new_id
from members.repository import members
from programme.models import Household, HouseholdMembership, PointTransfer

households = table_of(Household)
memberships = table_of(HouseholdMembership)
transfers = table_of(PointTransfer)


@dataclass(frozen=True)
class HouseholdRow:
    id: int
    public_id: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class MembershipRow:
    """A member's open membership: which household, since when."""

    household_id: int
    member_id: int
    member_number: str
    joined_at: datetime


class HouseholdRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def insert_household(self, *, created_at: datetime, created_by: str) -> HouseholdRow:
        public_id = new_id()
        household_id = self.connection.execute(
            households.insert()
            .values(public_id=public_id, created_at=created_at, created_by=created_by)
            .returning(households.c.id)
        ).scalar_one()
        return HouseholdRow(int(household_id), public_id, created_at, created_by)

    def by_public_id(self, public_id: str) -> HouseholdRow | None:
        row = self.connection.execute(select(households).where(households.c.public_id == public_id)).first()
        return HouseholdRow(row.id, row.public_id, row.created_at, row.created_by) if row else None

    def by_id(self, household_id: int) -> HouseholdRow:
        row = self.connection.execute(select(households).where(households.c.id == household_id)).one()
        return HouseholdRow(row.id, row.public_id, row.created_at, row.created_by)

    def join(self, household_id: int, member_id: int, joined_at: datetime) -> None:
        # The partial unique index on open memberships refuses a second open one for the member.
        self.connection.execute(
            memberships.insert().values(household_id=household_id, member_id=member_id, joined_at=joined_at)
        )

    def leave(self, member_id: int, left_at: datetime) -> None:
        self.connection.execute(
            memberships.update()
            .where(memberships.c.member_id == member_id, memberships.c.left_at.is_(None))
            .values(left_at=left_at)
        )

    def open_membership(self, member_id: int) -> MembershipRow | None:
        row = self.connection.execute(_OPEN_MEMBERS.where(memberships.c.member_id == member_id)).first()
        return MembershipRow(*row) if row else None

    def current_members(self, household_id: int) -> list[MembershipRow]:
        """The household's members now, in the order they joined."""
        rows = self.connection.execute(
            _OPEN_MEMBERS.where(memberships.c.household_id == household_id).order_by(
                memberships.c.joined_at, memberships.c.id
            )
        )
        return [MembershipRow(*row) for row in rows]

    def insert_transfer(
        self, *, transaction_id: int, household_id: int, sender_member_id: int, recipient_member_id: int, points: int,
        transferred_at: datetime,
    ) -> None:  # fmt: skip
        self.connection.execute(
            transfers.insert().values(
                transaction_id=transaction_id, household_id=household_id, sender_member_id=sender_member_id,
                recipient_member_id=recipient_member_id, points=points, transferred_at=transferred_at,
            )
        )  # fmt: skip

    def points_sent_since(self, sender_member_id: int, since: datetime) -> int:
        """Points the member sent from ``since`` on (the sender's lock keeps this current)."""
        sent = select(func.coalesce(func.sum(transfers.c.points), 0)).where(
            transfers.c.sender_member_id == sender_member_id, transfers.c.transferred_at >= since
        )
        return int(self.connection.execute(sent).scalar_one())

    def senders_since(self, recipient_member_id: int, since: datetime) -> set[int]:
        """Members who sent the recipient points from ``since`` on (the recipient's lock keeps this current)."""
        rows = self.connection.execute(
            select(transfers.c.sender_member_id)
            .where(transfers.c.recipient_member_id == recipient_member_id, transfers.c.transferred_at >= since)
            .distinct()
        )
        return {int(sender) for sender in rows.scalars()}


_OPEN_MEMBERS = (
    select(memberships.c.household_id, memberships.c.member_id, members.c.member_number, memberships.c.joined_at)
    .join(members, members.c.id == memberships.c.member_id)
    .where(memberships.c.left_at.is_(None))
)
