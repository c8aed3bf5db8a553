"""The demo network `make run` seeds, and the customer journey `coalition demo` plays against it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from loyalty.v1 import checkout_service_pb2 as pb

from checkout.commands import Basket, EarnCommand, RedeemCommand, ReturnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.clock import ManualClock
from common.db import create_engine
from common.errors import AlreadyExists
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from members.identifiers import IdentifierKind, MemberIdentifier
from partners import services
from partners.rates import Billing, ContractTerms
from programme.policy import NetworkPolicy, ReferralPolicy, Tier, TierPolicy
from programme.services import create_policy_version
from sdk.client import CoalitionClient, Credentials
from sdk.tokens import generate_key_pair, load_private_key, write_private_key
from settlement.periods import Period, PeriodLength, period_of

log = logging.getLogger(__name__)

OPERATOR_KEY_ID = "operator-demo"


@dataclass(frozen=True)
class DemoPartner:
    partner_id: str
    display_name: str
    kind: str
    algorithm: str
    terms: ContractTerms


DEMO_PARTNERS = (
    DemoPartner(
        "brightmart-stores", "Brightmart Stores", "STORE_CHAIN", "ES256",
        ContractTerms("GBP", Decimal(2), Decimal("0.005"), Decimal("0.006"), Decimal("0.005")),
    ),
    DemoPartner(
        "northwind-online", "Northwind Online", "ONLINE_SHOP", "EdDSA",
        ContractTerms("EUR", Decimal(1), Decimal("0.01"), Decimal("0.012"), Decimal("0.010"), pending_days=14,
                      max_points_share_of_basket=Decimal("0.5")),
    ),
    DemoPartner(
        "harbor-bank", "Harbor Bank", "CARD_ISSUER", "ES256",
        ContractTerms("EUR", Decimal("0.5"), Decimal("0.01"), Decimal("0.011"), Decimal("0.010"),
                      billing=Billing.ON_REDEMPTION),
    ),
)  # fmt: skip


def operator_key_paths(keys_dir: Path) -> tuple[Path, Path]:
    return keys_dir / f"{OPERATOR_KEY_ID}.pem", keys_dir / f"{OPERATOR_KEY_ID}.pub.pem"


def _key_pair(private_path: Path, public_path: Path, algorithm: str) -> str:
    """The public PEM of the key at ``private_path``, creating the pair on first use."""
    if not private_path.exists():
        private_key, public_pem = generate_key_pair(algorithm)
        write_private_key(private_path, private_key)
        public_path.write_text(public_pem)
    return public_path.read_text()


# The programme the demo network runs: tiers and referrals on top of the defaults.
DEMO_POLICY = NetworkPolicy(
    tiers=TierPolicy(tiers=(Tier("Base", 0, 0), Tier("Silver", 1_000, 50), Tier("Gold", 5_000, 100))),
    referrals=ReferralPolicy(referrer_points=500, referred_points=250),
)


def seed_demo(database_url: str, keys_dir: Path, *, identifier_pepper: bytes, now: datetime | None = None) -> None:
    """Creates the demo partners, their keys (under ``keys_dir``) and contracts. Safe to rerun.

    On the first run the network is dated from the start of last month and plays a little of last
    month's trade, so finance can close that period at once (`coalition settlement close`).
    """
    keys_dir.mkdir(parents=True, exist_ok=True)
    _key_pair(*operator_key_paths(keys_dir), "ES256")
    last_month = period_of(now or datetime.now(UTC), PeriodLength.MONTH).previous()
    clock = ManualClock(last_month.starts_at + timedelta(hours=9))
    engine = create_engine(database_url, pool_size=1)
    uow = UnitOfWork(engine, clock)
    seeded: dict[str, PartnerRef] = {}
    for partner in DEMO_PARTNERS:
        public_pem = _key_pair(
            keys_dir / f"{partner.partner_id}.pem", keys_dir / f"{partner.partner_id}.pub.pem", partner.algorithm
        )
        request = RequestKey("operator:seed-demo", f"seed-{partner.partner_id}")
        try:
            created = services.create_partner(
                uow, request, partner_code=partner.partner_id, display_name=partner.display_name, kind=partner.kind
            )
        except AlreadyExists:
            created = None
        if created is None or created.is_replay:
            print(f"{partner.partner_id} already seeded")
            continue
        services.register_partner_key(
            uow, RequestKey(request.scope, request.key + "-key"), partner_code=partner.partner_id,
            key_id=f"{partner.partner_id}-1", public_key_pem=public_pem,
        )  # fmt: skip
        services.create_contract_version(
            uow, RequestKey(request.scope, request.key + "-contract"), partner_code=partner.partner_id,
            terms=partner.terms, effective_from=None, created_by="seed-demo",
        )  # fmt: skip
        seeded[partner.partner_id] = PartnerRef(created.result.id, f"partner:{partner.partner_id}")
        currency, key_path = partner.terms.currency, keys_dir / f"{partner.partner_id}.pem"
        print(f"seeded {partner.partner_id} ({partner.kind}, {currency}); signing key {key_path}")
    if len(seeded) == len(DEMO_PARTNERS):
        create_policy_version(
            uow, RequestKey("operator:seed-demo", "seed-policy"), policy=DEMO_POLICY, effective_from=None,
            created_by="seed-demo",
        )  # fmt: skip
        print("seeded the network policy: tiers Base, Silver (1,000 points, +50%), Gold (5,000, x2); referrals")
        _play_last_month(CheckoutService(uow, CheckoutSettings(identifier_pepper=identifier_pepper)), clock,
                         last_month, seeded)  # fmt: skip
        print(
            f"played {last_month.label}'s trade: close it with `coalition settlement close --period {last_month.label}`"
        )
    engine.dispose()


def _play_last_month(
    service: CheckoutService, clock: ManualClock, month: Period, partners: dict[str, PartnerRef]
) -> None:
    """Cross-brand trade worth settling: Harbor Bank (billed on redemption) pays for its points when spent."""
    store, shop, bank = partners["brightmart-stores"], partners["northwind-online"], partners["harbor-bank"]
    ana = MemberIdentifier(IdentifierKind.PHONE, "+447700900101")
    ben = MemberIdentifier(IdentifierKind.PHONE, "+447700900102")

    def on_day(day: int) -> str:
        clock.set(month.starts_at + timedelta(days=day - 1, hours=10))
        return f"seed-{month.label}-{day}"

    service.earn_points(store, on_day(2), EarnCommand(ana, "S-1001", Basket("GBP", 12000), enroll_if_unknown=True))
    service.earn_points(bank, on_day(3), EarnCommand(ana, "CARD-77001", Basket("EUR", 40000), enroll_if_unknown=True))
    service.earn_points(shop, on_day(5), EarnCommand(ben, "W-2001", Basket("EUR", 15000), enroll_if_unknown=True))
    service.redeem_points(
        shop, on_day(10), RedeemCommand(ana, 300, "EUR", basket_total_minor=10000, receipt_id="W-2002")
    )
    service.redeem_points(
        store, on_day(21), RedeemCommand(ben, 100, "GBP", basket_total_minor=3000, receipt_id="S-1002")
    )
    service.return_purchase(store, on_day(25), ReturnCommand("S-1001", returned_minor=6000))


def partner_client(target: str, keys_dir: Path, partner_id: str) -> CoalitionClient:
    credentials = Credentials(partner_id, f"{partner_id}-1", load_private_key(keys_dir / f"{partner_id}.pem"))
    return CoalitionClient(target, credentials)


def run_demo(target: str, keys_dir: Path) -> None:
    """Enrol at the store, earn, hold and capture at the online shop, return part, print balances."""
    phone = f"+4477009{uuid.uuid4().int % 100000:05d}"
    member = pb.MemberIdentifier(phone_number=phone)
    store_receipt = f"S-{uuid.uuid4().hex[:8]}"
    with partner_client(target, keys_dir, "brightmart-stores") as store, \
            partner_client(target, keys_dir, "northwind-online") as shop:  # fmt: skip
        enrolled = store.checkout.EnrollMember(pb.EnrollMemberRequest(member=member))
        print(f"1. Brightmart enrols {phone}: member {enrolled.member.member_number}")
        earned = store.checkout.EarnPoints(pb.EarnPointsRequest(
            member=member, receipt_id=store_receipt, channel=pb.CHANNEL_IN_STORE, store_id="leeds-01",
            basket=pb.Basket(currency_code="GBP", total_minor=4250, lines=[
                pb.BasketLine(sku="groceries", amount_minor=4000),
                pb.BasketLine(sku="gift-card", amount_minor=250, excluded=True)]),
        ))  # fmt: skip
        print(f"2. Brightmart receipt {store_receipt} (GBP 42.50, 2.50 gift card excluded): +{earned.points_earned}")
        hold = shop.checkout.HoldPoints(pb.HoldPointsRequest(
            member=member, points=60, currency_code="EUR", basket_total_minor=3000, ttl_seconds=300,
            receipt_id=f"W-{store_receipt}"))  # fmt: skip
        print(f"3. Northwind holds {hold.hold.points} points (worth EUR {hold.hold.value_minor / 100:.2f})")
        capture = shop.checkout.CaptureHold(pb.CaptureHoldRequest(hold_id=hold.hold.hold_id, points=50))
        print(f"4. Northwind captures {capture.points_captured}, releases {capture.points_released}")
        returned = store.checkout.ReturnPurchase(
            pb.ReturnPurchaseRequest(receipt_id=store_receipt, returned_amount_minor=1000)
        )
        print(f"5. Brightmart return of GBP 10.00: -{returned.points_reversed} points")
        for name, client in (("Brightmart", store), ("Northwind", shop)):
            balance = client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
            print(f"6. {name} sees: available {balance.available_points}, pending {balance.pending_points}, "
                  f"held {balance.held_points}, debt {balance.debt_points}; tier {balance.tier.tier_name} "
                  f"({balance.tier.points_to_next_tier} points to {balance.tier.next_tier_name})")  # fmt: skip
