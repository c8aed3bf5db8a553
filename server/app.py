"""The composition root: builds engine, services and the gRPC server from Settings, once."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loyalty.v1 import (
    checkout_service_pb2,
    checkout_service_pb2_grpc,
    partner_admin_service_pb2,
    partner_admin_service_pb2_grpc,
)
from sqlalchemy import Engine, text

from auth.repository import DatabaseReplayGuard
from auth.tokens import TokenVerifier
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import Clock, SystemClock
from common.db import create_engine
from common.uow import UnitOfWork
from server import metrics
from server.auth_stores import PartnerKeySource, load_operator_keys
from server.config import Settings
from server.interceptors import AuthInterceptor, ErrorInterceptor, MetricsInterceptor, PanGuardInterceptor
from server.servicers.checkout import CheckoutServicer
from server.servicers.partner_admin import PartnerAdminServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name,
    partner_admin_service_pb2.DESCRIPTOR.services_by_name["PartnerAdminService"].full_name,
)
HEALTH_PROBE_SECONDS = 5.0


@dataclass
class Application:
    """Everything the server needs, built once from Settings."""

    settings: Settings
    clock: Clock
    engine: Engine
    uow: UnitOfWork
    checkout: CheckoutService
    verifier: TokenVerifier
    replay_guard: DatabaseReplayGuard

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Application:
        clock = clock or SystemClock()
        engine = create_engine(
            settings.database_url, pool_size=settings.effective_pool_size,
            statement_timeout_ms=settings.request_timeout_ms,
        )  # fmt: skip
        uow = UnitOfWork(engine, clock)
        replay_guard = DatabaseReplayGuard(uow)
        verifier = TokenVerifier(
            audience=settings.network_audience, clock=clock, partner_keys=PartnerKeySource(uow),
            operator_keys=load_operator_keys(settings.operator_key_paths()), replay_guard=replay_guard,
            max_lifetime_seconds=settings.token_max_lifetime_seconds, leeway_seconds=settings.token_leeway_seconds,
        )  # fmt: skip
        checkout_settings = CheckoutSettings(
            identifier_pepper=settings.identifier_pepper.encode(),
            points_lifetime_days=settings.points_lifetime_days,
        )
        return cls(settings, clock, engine, uow, CheckoutService(uow, checkout_settings), verifier, replay_guard)

    def database_answers(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


@dataclass
class RunningServer:
    """A started gRPC server with its health service and background maintenance."""

    app: Application
    server: grpc.Server
    port: int
    health: health.HealthServicer
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.server.start()
        threading.Thread(target=self._maintain, name="maintenance", daemon=True).start()

    def stop(self, grace_seconds: float | None = None) -> None:
        """Drains: health goes NOT_SERVING, new RPCs are refused, in-flight ones get the grace period."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        grace = self.app.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self.server.stop(grace).wait()
        self.app.engine.dispose()

    def _set_serving(self, is_serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if is_serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)
        metrics.DATABASE_UP.set(1 if is_serving else 0)

    def _maintain(self) -> None:
        """Health follows the database; expired holds are swept and old token ids purged."""
        sweep_every = self.app.settings.hold_sweep_seconds
        next_sweep = 0.0
        elapsed = 0.0
        while not self._stopping.is_set():
            self._set_serving(self.app.database_answers())
            if sweep_every and elapsed >= next_sweep:
                self._sweep()
                next_sweep = elapsed + sweep_every
            self._stopping.wait(min(HEALTH_PROBE_SECONDS, sweep_every or HEALTH_PROBE_SECONDS))
            elapsed += min(HEALTH_PROBE_SECONDS, sweep_every or HEALTH_PROBE_SECONDS)

    def _sweep(self) -> None:
        try:
            expired = self.app.checkout.expire_holds()
            metrics.HOLDS_EXPIRED_TOTAL.inc(expired)
            self.app.replay_guard.purge_expired(self.app.clock.now())
        except Exception:
            log.exception("maintenance sweep failed")


def create_server(app: Application, address: str | None = None) -> RunningServer:
    """Builds (but does not start) the server; bind port 0 to get a free port."""
    settings = app.settings
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=[MetricsInterceptor(), ErrorInterceptor(), AuthInterceptor(app.verifier), PanGuardInterceptor()],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ],
    )
    checkout_service_pb2_grpc.add_CheckoutServiceServicer_to_server(CheckoutServicer(app.checkout), server)
    partner_admin_service_pb2_grpc.add_PartnerAdminServiceServicer_to_server(PartnerAdminServicer(app.uow), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.enable_reflection:
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address or settings.listen_address)
    return RunningServer(app, server, port, health_servicer)
