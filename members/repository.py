"""Queries on members, their identifier hashes and partner links."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from common.db import table_of
from common.sql import insert_ignoring_conflict, inserted_id
from members.models import Member, MemberIdentifier, MemberPartnerLink

members = table_of(Member)
identifiers = table_of(MemberIdentifier)
links = table_of(MemberPartnerLink)


@dataclass(frozen=True)
class MemberRow:
    id: int
    member_number: str
    enrolled_at: datetime


class MemberRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def find_by_hash(self, kind: str, hashed: str) -> MemberRow | None:
        row = self.connection.execute(
            select(members.c.id, members.c.member_number, members.c.enrolled_at)
            .join(identifiers, identifiers.c.member_id == members.c.id)
            .where(identifiers.c.kind == kind, identifiers.c.lookup_hash == hashed)
        ).first()
        return MemberRow(*row) if row else None

    def find_by_number(self, member_number: str) -> MemberRow | None:
        row = self.connection.execute(
            select(members.c.id, members.c.member_number, members.c.enrolled_at).where(
                members.c.member_number == member_number
            )
        ).first()
        return MemberRow(*row) if row else None

    def find_by_id(self, member_id: int) -> MemberRow | None:
        row = self.connection.execute(
            select(members.c.id, members.c.member_number, members.c.enrolled_at).where(members.c.id == member_id)
        ).first()
        return MemberRow(*row) if row else None

    def number_exists(self, member_number: str) -> bool:
        return self.find_by_number(member_number) is not None

    def insert_member(self, member_number: str, enrolled_at: datetime, partner_id: int | None) -> int:
        result = self.connection.execute(
            members.insert().values(
                member_number=member_number, enrolled_at=enrolled_at, enrolled_by_partner_id=partner_id
            )
        )
        return inserted_id(result)

    def insert_identifier(self, member_id: int, kind: str, hashed: str, masked: str) -> None:
        # A plain insert: a concurrent enrolment of the same identifier fails here and the retry finds it.
        self.connection.execute(
            identifiers.insert().values(member_id=member_id, kind=kind, lookup_hash=hashed, masked_value=masked)
        )

    def remove_identifier(self, kind: str, hashed: str) -> None:
        """Forgets an identifier (an unlinked card token): it no longer finds the member."""
        self.connection.execute(
            identifiers.delete().where(identifiers.c.kind == kind, identifiers.c.lookup_hash == hashed)
        )

    def masked_identifiers(self, member_id: int) -> list[tuple[str, str]]:
        rows = self.connection.execute(
            select(identifiers.c.kind, identifiers.c.masked_value)
            .where(identifiers.c.member_id == member_id)
            .order_by(identifiers.c.id)
        )
        return [(kind, masked) for kind, masked in rows]

    def link_partner(self, member_id: int, partner_id: int, now: datetime) -> None:
        insert_ignoring_conflict(
            self.connection, links, {"member_id": member_id, "partner_id": partner_id, "first_seen_at": now}
        )

    def is_linked(self, member_id: int, partner_id: int) -> bool:
        row = self.connection.execute(
            select(links.c.member_id).where(links.c.member_id == member_id, links.c.partner_id == partner_id)
        ).first()
        return row is not None
