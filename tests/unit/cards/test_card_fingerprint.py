"""The card item fingerprint never changes: stored items are matched by it, so a resend must hash the same."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from cards.commands import CardItemCommand, ItemType
from cards.items import fingerprint
from common import codec

items = st.builds(
    CardItemCommand,
    item_type=st.sampled_from(ItemType),
    bank_transaction_id=st.text(max_size=70),
    item_id=st.text(max_size=70),
    card_token=st.text(max_size=70),
    merchant_id=st.text(max_size=70),
    currency=st.text(max_size=5),
    amount_minor=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    transaction_time=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])),
)


@given(items)
def test_it_is_the_generic_fingerprint_of_the_item_without_its_token(item: CardItemCommand) -> None:
    assert fingerprint(item) == codec.fingerprint(replace(item, card_token=""))


def test_known_items_hash_as_they_always_did() -> None:
    """Values computed by the generic fingerprint before the card one was written out."""
    clearing = CardItemCommand(ItemType.CLEARING, "T-1001", "", "tok_8f2c", "mid-4471", "EUR", 10_000,
                               datetime(2026, 3, 11, 8, 0, tzinfo=UTC))  # fmt: skip
    refund = CardItemCommand(ItemType.REFUND, 'T-\u00e9"\\1', "R-1", "", "", "EUR", 2_000,
                             datetime(2026, 3, 15, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1))))  # fmt: skip
    assert fingerprint(clearing) == "cc97acf550d638a34f8db7a46b86121695dcfd3bc027378d663bf6f768d923d1"
    assert fingerprint(refund) == "28bbb513ea2defd86654f927552d1aba3042afd79ea34f29eaf80327e3f6ba3f"
    assert fingerprint(replace(clearing, card_token="another")) == fingerprint(clearing)
