"""PartnerAdminService: operator (admin role) onboarding, keys and contract versions."""

from __future__ import annotations

import grpc
from loyalty.v1 import partner_admin_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2_grpc

from common.idempotency import RequestKey
from common.sql import Page
from common.uow import UnitOfWork
from partners import services
from partners.rates import ContractVersionView
from server import admin_convert as convert
from server.convert import datetime_of
from server.interceptors import current_principal

ADMIN_ROLE = "admin"


def admin_request_key(request_id: str = "") -> RequestKey:
    """Requires the caller to be operator staff with the admin role; their scope for ``request_id``."""
    principal = current_principal()
    principal.require_role(ADMIN_ROLE)
    return RequestKey(principal.idempotency_scope, request_id)


class PartnerAdminServicer(partner_admin_service_pb2_grpc.PartnerAdminServiceServicer):
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def CreatePartner(
        self, request: pb.CreatePartnerRequest, context: grpc.ServicerContext
    ) -> pb.CreatePartnerResponse:
        outcome = services.create_partner(
            self.uow, admin_request_key(request.request_id), partner_code=request.partner_id,
            display_name=request.display_name, kind=convert.partner_kind(request.kind),
        )  # fmt: skip
        return pb.CreatePartnerResponse(partner=convert.partner(outcome.result), idempotent_replay=outcome.is_replay)

    def GetPartner(self, request: pb.GetPartnerRequest, context: grpc.ServicerContext) -> pb.GetPartnerResponse:
        admin_request_key()
        return pb.GetPartnerResponse(partner=convert.partner(services.get_partner(self.uow, request.partner_id)))

    def ListPartners(self, request: pb.ListPartnersRequest, context: grpc.ServicerContext) -> pb.ListPartnersResponse:
        admin_request_key()
        page = services.list_partners(self.uow, page_size=request.page_size, page_token=request.page_token)
        return pb.ListPartnersResponse(
            partners=[convert.partner(item) for item in page.items], next_page_token=page.next_page_token
        )

    def SuspendPartner(
        self, request: pb.SuspendPartnerRequest, context: grpc.ServicerContext
    ) -> pb.SuspendPartnerResponse:
        outcome = services.set_partner_suspended(
            self.uow, admin_request_key(request.request_id), request.partner_id, is_suspended=True
        )
        return pb.SuspendPartnerResponse(partner=convert.partner(outcome.result), idempotent_replay=outcome.is_replay)

    def ReactivatePartner(
        self, request: pb.ReactivatePartnerRequest, context: grpc.ServicerContext
    ) -> pb.ReactivatePartnerResponse:
        outcome = services.set_partner_suspended(
            self.uow, admin_request_key(request.request_id), request.partner_id, is_suspended=False
        )
        return pb.ReactivatePartnerResponse(
            partner=convert.partner(outcome.result), idempotent_replay=outcome.is_replay
        )

    def RegisterPartnerKey(
        self, request: pb.RegisterPartnerKeyRequest, context: grpc.ServicerContext
    ) -> pb.RegisterPartnerKeyResponse:
        outcome = services.register_partner_key(
            self.uow, admin_request_key(request.request_id), partner_code=request.partner_id, key_id=request.key_id,
            public_key_pem=request.public_key_pem,
        )  # fmt: skip
        return pb.RegisterPartnerKeyResponse(
            key=convert.partner_key(outcome.result), idempotent_replay=outcome.is_replay
        )

    def RevokePartnerKey(
        self, request: pb.RevokePartnerKeyRequest, context: grpc.ServicerContext
    ) -> pb.RevokePartnerKeyResponse:
        outcome = services.revoke_partner_key(
            self.uow, admin_request_key(request.request_id), partner_code=request.partner_id, key_id=request.key_id
        )
        return pb.RevokePartnerKeyResponse(key=convert.partner_key(outcome.result), idempotent_replay=outcome.is_replay)

    def ListPartnerKeys(
        self, request: pb.ListPartnerKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListPartnerKeysResponse:
        admin_request_key()
        page = services.list_partner_keys(
            self.uow, request.partner_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListPartnerKeysResponse(
            keys=[convert.partner_key(item) for item in page.items], next_page_token=page.next_page_token
        )

    def CreateContractVersion(
        self, request: pb.CreateContractVersionRequest, context: grpc.ServicerContext
    ) -> pb.CreateContractVersionResponse:
        key = admin_request_key(request.request_id)
        outcome = services.create_contract_version(
            self.uow, key, partner_code=request.partner_id, terms=convert.contract_terms(request.terms),
            effective_from=datetime_of(request.effective_time) if request.HasField("effective_time") else None,
            created_by=current_principal().subject,
        )  # fmt: skip
        return pb.CreateContractVersionResponse(
            contract_version=convert.contract_version(outcome.result, request.partner_id),
            idempotent_replay=outcome.is_replay,
        )

    def ListContractVersions(
        self, request: pb.ListContractVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ListContractVersionsResponse:
        admin_request_key()
        page: Page[ContractVersionView] = services.list_contract_versions(
            self.uow, request.partner_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListContractVersionsResponse(
            contract_versions=[convert.contract_version(item, request.partner_id) for item in page.items],
            next_page_token=page.next_page_token,
        )
