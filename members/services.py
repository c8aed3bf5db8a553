"""Finding and enrolling members by identifier. Called inside a checkout transaction."""

from __future__ import annotations

import secrets
from datetime import datetime

from common.errors import FailedPrecondition, NotFound
from members.identifiers import IdentifierKind, MemberIdentifier, lookup_hash, mask, normalise
from members.repository import MemberRepository, MemberRow


class MemberNotFound(NotFound):
    reason = "MEMBER_NOT_FOUND"


class EnrolmentNeedsPhoneOrEmail(FailedPrecondition):
    reason = "ENROLMENT_NEEDS_PHONE_OR_EMAIL"
    is_business_outcome = False


def find_member(repository: MemberRepository, identifier: MemberIdentifier, pepper: bytes) -> MemberRow | None:
    identifier = normalise(identifier)
    if identifier.kind is IdentifierKind.MEMBER_NUMBER:
        return repository.find_by_number(identifier.value)
    return repository.find_by_hash(identifier.kind, lookup_hash(identifier, pepper))


def enroll_member(
    repository: MemberRepository,
    identifier: MemberIdentifier,
    pepper: bytes,
    *,
    partner_id: int | None,
    now: datetime,
) -> tuple[MemberRow, bool]:
    """The member with this phone or email, enrolling them if new; True when newly enrolled."""
    identifier = normalise(identifier)
    existing = find_member(repository, identifier, pepper)
    if existing is not None:
        return existing, False
    if identifier.kind in (IdentifierKind.MEMBER_NUMBER, IdentifierKind.CARD_TOKEN):
        raise EnrolmentNeedsPhoneOrEmail("members enrol with a phone number or an email address")
    member_number = _new_member_number(repository)
    member_id = repository.insert_member(member_number, now, partner_id)
    repository.insert_identifier(member_id, identifier.kind, lookup_hash(identifier, pepper), mask(identifier))
    return MemberRow(member_id, member_number, now), True


def _new_member_number(repository: MemberRepository) -> str:
    while True:
        candidate = f"M{secrets.randbelow(10**9):09d}"
        if not repository.number_exists(candidate):
            return candidate
