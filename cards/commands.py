"""What a bank asks for and what it gets back: plain dataclasses, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from members.identifiers import MemberIdentifier


class ItemType(StrEnum):
    AUTHORISATION = "AUTHORISATION"
    CLEARING = "CLEARING"
    REFUND = "REFUND"
    CHARGEBACK = "CHARGEBACK"

    @property
    def is_reversal(self) -> bool:
        return self in (ItemType.REFUND, ItemType.CHARGEBACK)


class ItemStatus(StrEnum):
    APPLIED = "APPLIED"  # its effect is on the ledger (or, for an authorisation, pending)
    WAITING = "WAITING"  # a reversal whose clearing has not arrived; applied when it does
    IGNORED = "IGNORED"  # nothing to do, e.g. an authorisation arriving after its clearing
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class LinkCommand:
    card_token: str
    member: MemberIdentifier


@dataclass(frozen=True)
class LinkResult:
    member_number: str
    linked_at: datetime
    is_newly_enrolled: bool


@dataclass(frozen=True)
class UnlinkResult:
    unlinked_at: datetime


@dataclass(frozen=True)
class CardItemCommand:
    """One item of a bank's card feed, keyed by (bank transaction id, item type, item id)."""

    item_type: ItemType
    bank_transaction_id: str
    item_id: str
    card_token: str
    merchant_id: str
    currency: str
    amount_minor: int
    transaction_time: datetime


@dataclass(frozen=True)
class CardItemResult:
    bank_transaction_id: str
    item_type: str
    item_id: str
    status: ItemStatus
    reason: str = ""
    message: str = ""
    pending_points: int = 0
    points_earned: int = 0
    points_reversed: int = 0
    debt_points: int = 0
    is_replay: bool = False


@dataclass(frozen=True)
class MerchantView:
    merchant_id: str
    partner_code: str
    created_at: datetime
