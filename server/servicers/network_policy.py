"""NetworkPolicyService: operator staff read the network policy; admins add versions."""

from __future__ import annotations

import grpc
from loyalty.v1 import network_policy_service_pb2 as pb
from loyalty.v1 import network_policy_service_pb2_grpc

from common.idempotency import RequestKey
from common.uow import UnitOfWork
from programme import services
from server.convert import datetime_of
from server.interceptors import current_principal
from server.policy_convert import policy_of, version_message

ADMIN_ROLE = "admin"
READER_ROLES = ("admin", "finance", "support")


def _reader() -> None:
    current_principal().require_any_role(*READER_ROLES)


class NetworkPolicyServicer(network_policy_service_pb2_grpc.NetworkPolicyServiceServicer):
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def GetNetworkPolicy(
        self, request: pb.GetNetworkPolicyRequest, context: grpc.ServicerContext
    ) -> pb.GetNetworkPolicyResponse:
        _reader()
        at = datetime_of(request.read_time) if request.HasField("read_time") else None
        return pb.GetNetworkPolicyResponse(policy_version=version_message(services.get_policy(self.uow, at)))

    def CreateNetworkPolicyVersion(
        self, request: pb.CreateNetworkPolicyVersionRequest, context: grpc.ServicerContext
    ) -> pb.CreateNetworkPolicyVersionResponse:
        principal = current_principal()
        principal.require_role(ADMIN_ROLE)
        outcome = services.create_policy_version(
            self.uow, RequestKey(principal.idempotency_scope, request.request_id), policy=policy_of(request.policy),
            effective_from=datetime_of(request.effective_time) if request.HasField("effective_time") else None,
            created_by=principal.subject,
        )  # fmt: skip
        return pb.CreateNetworkPolicyVersionResponse(
            policy_version=version_message(outcome.result), idempotent_replay=outcome.is_replay
        )

    def ListNetworkPolicyVersions(
        self, request: pb.ListNetworkPolicyVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ListNetworkPolicyVersionsResponse:
        _reader()
        page = services.list_policy_versions(self.uow, page_size=request.page_size, page_token=request.page_token)
        return pb.ListNetworkPolicyVersionsResponse(
            policy_versions=[version_message(view) for view in page.items], next_page_token=page.next_page_token
        )
