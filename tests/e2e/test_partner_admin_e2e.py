"""The operator's partner administration over a real server: onboarding, suspension, keys and contracts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from sdk.client import CoalitionClient, Credentials
from sdk.tokens import generate_key_pair
from tests.e2e.conftest import DEFAULT_TERMS, Partner, reason_of
from tests.factories import phone


def new_partner_id() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def earn(client: CoalitionClient, total_minor: int = 10_000) -> pb.EarnPointsResponse:
    request = pb.EarnPointsRequest(
        member=pb.MemberIdentifier(phone_number=phone().value),
        receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=total_minor),
    )  # fmt: skip
    response: pb.EarnPointsResponse = client.checkout.EarnPoints(request)
    return response


def terms_with(**changes: object) -> admin_pb.ContractTerms:
    terms = admin_pb.ContractTerms()
    terms.CopyFrom(DEFAULT_TERMS)
    for name, value in changes.items():
        setattr(terms, name, value)
    return terms


def all_partner_ids(operator: CoalitionClient, page_size: int) -> list[str]:
    """Walks ListPartners through next_page_token; every page but the last is full."""
    partner_ids: list[str] = []
    page_token = ""
    while True:
        page = operator.partner_admin.ListPartners(
            admin_pb.ListPartnersRequest(page_size=page_size, page_token=page_token)
        )
        partner_ids += [partner.partner_id for partner in page.partners]
        if not page.next_page_token:
            return partner_ids
        assert len(page.partners) == page_size
        page_token = page.next_page_token


def test_create_get_and_list_partners_page_by_page(operator: CoalitionClient) -> None:
    created = [new_partner_id() for _ in range(3)]
    for partner_id in created:
        response = operator.partner_admin.CreatePartner(
            admin_pb.CreatePartnerRequest(
                partner_id=partner_id, display_name=f"Shop {partner_id}", kind=admin_pb.PARTNER_KIND_STORE_CHAIN
            )
        )
        assert not response.idempotent_replay
        assert (response.partner.partner_id, response.partner.state) == (partner_id, admin_pb.PARTNER_STATE_ACTIVE)

    fetched = operator.partner_admin.GetPartner(admin_pb.GetPartnerRequest(partner_id=created[1])).partner
    assert (fetched.display_name, fetched.kind) == (f"Shop {created[1]}", admin_pb.PARTNER_KIND_STORE_CHAIN)
    assert fetched.HasField("create_time") and not fetched.HasField("suspend_time")

    listed = all_partner_ids(operator, page_size=2)
    assert len(listed) == len(set(listed))
    assert [partner_id for partner_id in listed if partner_id in created] == created  # oldest first
    assert listed == all_partner_ids(operator, page_size=1000)
    assert reason_of(
        lambda: operator.partner_admin.GetPartner(admin_pb.GetPartnerRequest(partner_id=new_partner_id()))
    ) == (grpc.StatusCode.NOT_FOUND, "PARTNER_NOT_FOUND")
    assert reason_of(
        lambda: operator.partner_admin.ListPartners(admin_pb.ListPartnersRequest(page_token="not-a-token"))
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


def test_create_partner_is_idempotent_per_request_id(operator: CoalitionClient) -> None:
    partner_id = new_partner_id()
    request = admin_pb.CreatePartnerRequest(
        request_id=f"onboard-{partner_id}", partner_id=partner_id, display_name="Acme",
        kind=admin_pb.PARTNER_KIND_ONLINE_SHOP,
    )  # fmt: skip
    first = operator.partner_admin.CreatePartner(request)
    again = operator.partner_admin.CreatePartner(request)
    assert not first.idempotent_replay and again.idempotent_replay
    assert again.partner == first.partner

    changed = admin_pb.CreatePartnerRequest()
    changed.CopyFrom(request)
    changed.display_name = "Acme Renamed"
    assert reason_of(lambda: operator.partner_admin.CreatePartner(changed)) == (
        grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_REUSED",
    )  # fmt: skip
    fresh_key = admin_pb.CreatePartnerRequest()
    fresh_key.CopyFrom(request)
    fresh_key.request_id = f"onboard-{partner_id}-again"
    assert reason_of(lambda: operator.partner_admin.CreatePartner(fresh_key)) == (
        grpc.StatusCode.ALREADY_EXISTS, "PARTNER_ALREADY_EXISTS",
    )  # fmt: skip


def test_a_suspended_partner_cannot_transact_until_reactivated(
    onboard: Callable[..., Partner], operator: CoalitionClient
) -> None:
    shop = onboard()
    assert earn(shop.client).points_earned == 100

    suspended = operator.partner_admin.SuspendPartner(admin_pb.SuspendPartnerRequest(partner_id=shop.partner_id))
    assert suspended.partner.state == admin_pb.PARTNER_STATE_SUSPENDED and suspended.partner.HasField("suspend_time")
    assert reason_of(lambda: earn(shop.client)) == (grpc.StatusCode.FAILED_PRECONDITION, "PARTNER_SUSPENDED")

    reactivated = operator.partner_admin.ReactivatePartner(
        admin_pb.ReactivatePartnerRequest(partner_id=shop.partner_id)
    )
    assert reactivated.partner.state == admin_pb.PARTNER_STATE_ACTIVE
    assert not reactivated.partner.HasField("suspend_time")
    assert earn(shop.client).points_earned == 100


def _rsa_public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def _p384_public_pem() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def _private_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode("ascii")


@pytest.mark.parametrize(
    ("make_pem", "reason"),
    [
        (_rsa_public_pem, "KEY_TYPE_NOT_ALLOWED"),
        (_p384_public_pem, "KEY_TYPE_NOT_ALLOWED"),
        (_private_key_pem, "PRIVATE_KEY_NOT_ALLOWED"),
        (lambda: "correct-horse-battery-staple-hmac-secret", "INVALID_PUBLIC_KEY"),
    ],
    ids=["rsa-public-key", "p384-public-key", "private-key-pem", "hmac-secret"],
)
def test_register_partner_key_refuses_what_is_not_an_es256_or_eddsa_public_key(
    make_pem: Callable[[], str], reason: str, onboard: Callable[..., Partner], operator: CoalitionClient
) -> None:
    shop = onboard()
    request = admin_pb.RegisterPartnerKeyRequest(
        partner_id=shop.partner_id, key_id=f"{shop.partner_id}-bad", public_key_pem=make_pem()
    )
    assert reason_of(lambda: operator.partner_admin.RegisterPartnerKey(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT, reason,
    )  # fmt: skip
    keys = operator.partner_admin.ListPartnerKeys(admin_pb.ListPartnerKeysRequest(partner_id=shop.partner_id)).keys
    assert [key.key_id for key in keys] == [shop.key_id]


def test_key_rotation_keeps_the_partner_working(
    onboard: Callable[..., Partner], operator: CoalitionClient, target: str
) -> None:
    shop = onboard()
    second_private, second_public = generate_key_pair("EdDSA")
    second_key_id = f"{shop.partner_id}-k2"
    registered = operator.partner_admin.RegisterPartnerKey(
        admin_pb.RegisterPartnerKeyRequest(
            partner_id=shop.partner_id, key_id=second_key_id, public_key_pem=second_public
        )
    ).key
    assert (registered.algorithm, registered.partner_id) == (admin_pb.KEY_ALGORITHM_EDDSA, shop.partner_id)
    with CoalitionClient(target, Credentials(shop.partner_id, second_key_id, second_private)) as rotated:
        assert earn(shop.client).points_earned == 100
        assert earn(rotated).points_earned == 100

        revoked = operator.partner_admin.RevokePartnerKey(
            admin_pb.RevokePartnerKeyRequest(partner_id=shop.partner_id, key_id=shop.key_id)
        ).key
        assert revoked.HasField("revoke_time")
        assert reason_of(lambda: earn(shop.client)) == (grpc.StatusCode.UNAUTHENTICATED, "KEY_REVOKED")
        assert earn(rotated).points_earned == 100

    first_page = operator.partner_admin.ListPartnerKeys(
        admin_pb.ListPartnerKeysRequest(partner_id=shop.partner_id, page_size=1)
    )
    second_page = operator.partner_admin.ListPartnerKeys(
        admin_pb.ListPartnerKeysRequest(partner_id=shop.partner_id, page_size=1, page_token=first_page.next_page_token)
    )
    assert first_page.next_page_token and not second_page.next_page_token
    (first,), (second,) = first_page.keys, second_page.keys
    assert (first.key_id, first.algorithm, first.HasField("revoke_time")) == (
        shop.key_id, admin_pb.KEY_ALGORITHM_ES256, True,
    )  # fmt: skip
    assert (second.key_id, second.algorithm, second.HasField("revoke_time")) == (
        second_key_id, admin_pb.KEY_ALGORITHM_EDDSA, False,
    )  # fmt: skip
    assert second.public_key_pem.strip() == second_public.strip()


@pytest.mark.parametrize(
    "terms",
    [
        terms_with(earn_rate="abc"),
        terms_with(earn_rate=""),
        terms_with(earn_rate="1,5"),
        terms_with(earn_rate="NaN"),
        terms_with(issuance_price="Infinity"),
        terms_with(reimbursement_rate="-0.01"),
        terms_with(redeem_value="0"),
        terms_with(max_points_share_of_basket="1.5"),
        terms_with(earn_rate="1e999999"),
        terms_with(issuance_price="0." + "0" * 40 + "1"),
    ],
    ids=[
        "not-a-number", "empty", "decimal-comma", "nan", "infinite", "negative", "zero-redeem-value",
        "share-above-one", "absurd-exponent", "more-digits-than-stored",
    ],
)  # fmt: skip
def test_contract_version_with_invalid_decimals_is_refused(
    terms: admin_pb.ContractTerms, onboard: Callable[..., Partner], operator: CoalitionClient
) -> None:
    shop = onboard()
    request = admin_pb.CreateContractVersionRequest(partner_id=shop.partner_id, terms=terms)
    assert reason_of(lambda: operator.partner_admin.CreateContractVersion(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONTRACT_TERMS",
    )  # fmt: skip
    versions = operator.partner_admin.ListContractVersions(
        admin_pb.ListContractVersionsRequest(partner_id=shop.partner_id)
    ).contract_versions
    assert [version.version for version in versions] == [1]


def test_a_new_contract_version_prices_new_earns_and_is_reported(
    onboard: Callable[..., Partner], operator: CoalitionClient
) -> None:
    shop = onboard()
    first = earn(shop.client)
    assert (first.points_earned, first.contract_version) == (100, 1)

    created = operator.partner_admin.CreateContractVersion(
        admin_pb.CreateContractVersionRequest(partner_id=shop.partner_id, terms=terms_with(earn_rate="2.5"))
    ).contract_version
    assert (created.partner_id, created.version, created.terms.earn_rate) == (shop.partner_id, 2, "2.5")
    second = earn(shop.client)
    assert (second.points_earned, second.contract_version) == (250, 2)

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    future = admin_pb.CreateContractVersionRequest(partner_id=shop.partner_id, terms=terms_with(earn_rate="5"))
    future.effective_time.FromDatetime(tomorrow)
    assert operator.partner_admin.CreateContractVersion(future).contract_version.version == 3
    third = earn(shop.client)
    assert (third.points_earned, third.contract_version) == (250, 2)  # version 3 is not in force yet

    pages = [
        operator.partner_admin.ListContractVersions(
            admin_pb.ListContractVersionsRequest(partner_id=shop.partner_id, page_size=2)
        )
    ]
    pages.append(
        operator.partner_admin.ListContractVersions(
            admin_pb.ListContractVersionsRequest(
                partner_id=shop.partner_id, page_size=2, page_token=pages[0].next_page_token
            )
        )
    )
    assert pages[0].next_page_token and not pages[1].next_page_token
    versions = [version for page in pages for version in page.contract_versions]
    assert [(version.version, version.terms.earn_rate) for version in versions] == [(1, "1"), (2, "2.5"), (3, "5")]
    assert versions[2].effective_time.ToSeconds() == int(tomorrow.timestamp())
