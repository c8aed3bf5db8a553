"""Support goodwill over a real server and through the CLI: every guard, and the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from loyalty.v1 import checkout_service_pb2 as checkout_pb
from loyalty.v1 import support_service_pb2 as pb

from sdk.client import CoalitionClient, Credentials
from sdk.tokens import write_private_key
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, Partner, reason_of
from tests.e2e.test_cli import COMMAND, REPOSITORY
from tests.factories import phone

CARD_NUMBER = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def staff(target: str, operator_key: OperatorKey) -> Iterator[Callable[..., CoalitionClient]]:
    clients: list[CoalitionClient] = []

    def make(staff_id: str, *roles: str) -> CoalitionClient:
        client = CoalitionClient(target, Credentials.operator(staff_id, OPERATOR_KEY_ID, operator_key.private_key,
                                                              list(roles)))  # fmt: skip
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def member_with_points(shop: Partner, points: int) -> checkout_pb.MemberIdentifier:
    member = checkout_pb.MemberIdentifier(phone_number=phone().value)
    shop.client.checkout.EarnPoints(checkout_pb.EarnPointsRequest(
        member=member, receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=checkout_pb.Basket(currency_code="EUR", total_minor=points * 100),
    ))  # fmt: skip
    return member


def available(shop: Partner, member: checkout_pb.MemberIdentifier) -> int:
    return int(shop.client.checkout.GetBalance(checkout_pb.GetBalanceRequest(member=member)).balance.available_points)


def adjustment(member: checkout_pb.MemberIdentifier, direction: int, points: int, **fields: object) -> (
    pb.CreatePointsAdjustmentRequest
):  # fmt: skip
    values: dict[str, object] = {"reason_code": "SERVICE_RECOVERY", "note": "delivery lost"} | fields
    return pb.CreatePointsAdjustmentRequest(
        request_id=uuid.uuid4().hex,
        member=member,
        direction=direction,
        points=points,
        **values,  # type: ignore[arg-type]
    )


GRANT, DEDUCT = pb.ADJUSTMENT_DIRECTION_GRANT, pb.ADJUSTMENT_DIRECTION_DEDUCT


def test_a_large_adjustment_needs_a_second_person_and_both_stay_on_record(
    onboard: Callable[..., Partner], staff: Callable[..., CoalitionClient]
) -> None:
    shop = onboard()
    member = member_with_points(shop, 2_000)
    alice, bob = staff("alice", "support"), staff("bob", "support")

    granted = alice.support.CreatePointsAdjustment(adjustment(member, GRANT, 500)).adjustment
    assert (granted.state, granted.requester, granted.decider) == (pb.ADJUSTMENT_STATE_APPLIED, "alice", "alice")
    assert available(shop, member) == 2_500

    pending = alice.support.CreatePointsAdjustment(adjustment(member, DEDUCT, 1_500)).adjustment
    assert (pending.state, pending.needs_approval, pending.transaction_id) == (pb.ADJUSTMENT_STATE_PENDING, True, "")
    approve = pb.ApprovePointsAdjustmentRequest(request_id=uuid.uuid4().hex, adjustment_id=pending.adjustment_id)
    assert reason_of(lambda: alice.support.ApprovePointsAdjustment(approve)) == (
        grpc.StatusCode.PERMISSION_DENIED, "APPROVER_IS_REQUESTER"
    )  # fmt: skip
    approve.note = "order checked"
    first = bob.support.ApprovePointsAdjustment(approve)
    again = bob.support.ApprovePointsAdjustment(approve)
    assert (first.adjustment.state, first.adjustment.decider, first.idempotent_replay) == (
        pb.ADJUSTMENT_STATE_APPLIED, "bob", False
    )  # fmt: skip
    assert (again.adjustment, again.idempotent_replay) == (first.adjustment, True)
    assert available(shop, member) == 1_000

    rejected = alice.support.CreatePointsAdjustment(adjustment(member, GRANT, 5_000)).adjustment
    reject = pb.RejectPointsAdjustmentRequest(request_id=uuid.uuid4().hex, adjustment_id=rejected.adjustment_id)
    assert bob.support.RejectPointsAdjustment(reject).adjustment.state == pb.ADJUSTMENT_STATE_REJECTED
    assert reason_of(lambda: bob.support.ApprovePointsAdjustment(pb.ApprovePointsAdjustmentRequest(
        request_id=uuid.uuid4().hex, adjustment_id=rejected.adjustment_id))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ADJUSTMENT_ALREADY_DECIDED"
    )  # fmt: skip
    assert available(shop, member) == 1_000

    trail = (
        staff("fiona", "finance")
        .support.ListPointsAdjustments(pb.ListPointsAdjustmentsRequest(member_number=granted.member_number))
        .adjustments
    )
    assert [(item.points, item.requester, item.decider, item.state) for item in trail] == [
        (500, "alice", "alice", pb.ADJUSTMENT_STATE_APPLIED),
        (1_500, "alice", "bob", pb.ADJUSTMENT_STATE_APPLIED),
        (5_000, "alice", "bob", pb.ADJUSTMENT_STATE_REJECTED),
    ]


def test_every_refusal_has_its_reason_and_writes_nothing(
    onboard: Callable[..., Partner], staff: Callable[..., CoalitionClient]
) -> None:
    shop = onboard()
    member = member_with_points(shop, 300)
    alice, finance = staff("alice", "support"), staff("fiona", "finance")
    refused = {
        "unknown reason": (alice, adjustment(member, GRANT, 10, reason_code="BIRTHDAY")),
        "no note": (alice, adjustment(member, GRANT, 10, note=" ")),
        "no direction": (alice, adjustment(member, pb.ADJUSTMENT_DIRECTION_UNSPECIFIED, 10)),
        "zero points": (alice, adjustment(member, GRANT, 0)),
        "more than available": (alice, adjustment(member, DEDUCT, 301)),
        "unknown member": (alice, adjustment(checkout_pb.MemberIdentifier(phone_number=phone().value), GRANT, 10)),
        "card number in the note": (alice, adjustment(member, GRANT, 10, note=f"card {CARD_NUMBER}")),
        "finance may not adjust": (finance, adjustment(member, GRANT, 10)),
        "partners may not adjust": (shop.client, adjustment(member, GRANT, 10)),
    }
    reasons = {name: reason_of(lambda c=client, r=request: c.support.CreatePointsAdjustment(r))
               for name, (client, request) in refused.items()}  # fmt: skip
    assert reasons == {
        "unknown reason": (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_REASON_CODE"),
        "no note": (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADJUSTMENT"),
        "no direction": (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ENUM_VALUE"),
        "zero points": (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADJUSTMENT"),
        "more than available": (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS"),
        "unknown member": (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND"),
        "card number in the note": (grpc.StatusCode.INVALID_ARGUMENT, "PAN_NOT_ALLOWED"),
        "finance may not adjust": (grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE"),
        "partners may not adjust": (grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE"),
    }
    assert available(shop, member) == 300
    assert reason_of(lambda: finance.support.GetPointsAdjustment(pb.GetPointsAdjustmentRequest(adjustment_id="x"))) == (
        grpc.StatusCode.NOT_FOUND, "ADJUSTMENT_NOT_FOUND"
    )  # fmt: skip


def test_the_cli_adjusts_approves_and_lists(
    onboard: Callable[..., Partner], target: str, operator_key: OperatorKey, tmp_path: Path
) -> None:
    shop = onboard()
    member = member_with_points(shop, 100)
    key_path = tmp_path / "operator.pem"
    write_private_key(key_path, operator_key.private_key)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LOYALTY_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "proto")])

    def support(staff_id: str, *arguments: str) -> dict[str, object]:
        result = subprocess.run(
            [*COMMAND, "support", "--target", target, "--operator-key", str(key_path), "--operator-key-id",
             OPERATOR_KEY_ID, "--staff-id", staff_id, *arguments],
            env=environment, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        answer: dict[str, object] = json.loads(result.stdout)
        return answer

    created = support("carol", "adjust", member.phone_number, "--grant", "2000", "--reason", "MISSING_POINTS",
                      "--note", "receipt R-77 never earned")["adjustment"]  # fmt: skip
    assert isinstance(created, dict) and created["state"] == "ADJUSTMENT_STATE_PENDING"
    approved = support("dave", "approve", str(created["adjustment_id"]), "--note", "receipt found")["adjustment"]
    assert isinstance(approved, dict) and (approved["state"], approved["decider"]) == (
        "ADJUSTMENT_STATE_APPLIED",
        "dave",
    )
    listed = support("dave", "list", "--member", str(created["member_number"]), "--state", "applied")["adjustments"]
    assert isinstance(listed, list) and [item["requester"] for item in listed] == ["carol"]
    assert available(shop, member) == 2_100
