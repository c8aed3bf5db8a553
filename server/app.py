"""The composition root: builds engine, services and the gRPC server from Settings, once."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loyalty.v1 import (
    card_service_pb2,
    card_service_pb2_grpc,
    checkout_service_pb2,
    checkout_service_pb2_grpc,
    household_service_pb2,
    household_service_pb2_grpc,
    member_service_pb2,
    member_service_pb2_grpc,
    network_policy_service_pb2,
    network_policy_service_pb2_grpc,
    partner_admin_service_pb2,
    partner_admin_service_pb2_grpc,
    partner_programme_service_pb2,
    partner_programme_service_pb2_grpc,
    settlement_service_pb2,
    settlement_service_pb2_grpc,
    support_service_pb2,
    support_service_pb2_grpc,
)
from sqlalchemy import Connection, Engine, text

from auth.repository import DatabaseReplayGuard
from auth.tokens import TokenVerifier
from cards.feed import CardSettings
from cards.links import share_a_card
from cards.services import CardService
from checkout.repository import CheckoutRepository
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import Clock, SystemClock
from common.db import create_engine
from common.uow import UnitOfWork
from ledger.checks import LedgerCheck, check_ledger
from programme.expiry import ExpiryRun, expire_lapsed_points
from programme.goodwill import GoodwillDesk
from programme.households import Households
from programme.partner_programme import PartnerProgramme
from programme.tiers import review_tiers
from programme.visibility import MemberReadSettings
from server import metrics, tls
from server.auth_stores import KeyCheckedReplayGuard, PartnerKeySource, load_operator_keys
from server.config import Settings
from server.interceptors import AuthInterceptor, ErrorInterceptor, MetricsInterceptor, PanGuardInterceptor
from server.servicers.cards import CardServicer
from server.servicers.checkout import CheckoutServicer
from server.servicers.households import HouseholdServicer
from server.servicers.members import MemberServicer
from server.servicers.network_policy import NetworkPolicyServicer
from server.servicers.partner_admin import PartnerAdminServicer
from server.servicers.partner_programme import PartnerProgrammeServicer
from server.servicers.settlement import SettlementServicer
from server.servicers.support import SupportServicer
from settlement.periods import PeriodLength
from settlement.services import SettlementPolicy

log = logging.getLogger(__name__)

# A health service name for liveness probes: SERVING from start until shutdown, whatever the database does.
LIVENESS_SERVICE = "liveness"
SERVICE_NAMES = (
    checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name,
    partner_admin_service_pb2.DESCRIPTOR.services_by_name["PartnerAdminService"].full_name,
    settlement_service_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name,
    network_policy_service_pb2.DESCRIPTOR.services_by_name["NetworkPolicyService"].full_name,
    card_service_pb2.DESCRIPTOR.services_by_name["CardService"].full_name,
    member_service_pb2.DESCRIPTOR.services_by_name["MemberService"].full_name,
    support_service_pb2.DESCRIPTOR.services_by_name["SupportService"].full_name,
    partner_programme_service_pb2.DESCRIPTOR.services_by_name["PartnerProgrammeService"].full_name,
    household_service_pb2.DESCRIPTOR.services_by_name["HouseholdService"].full_name,
)
HEALTH_PROBE_SECONDS = 5.0
# Services whose every transaction runs on the RPC's own thread: their token ids are claimed by the
# call's first committed transaction (server.interceptors.AuthInterceptor).
CLAIM_WITH_WORK = ("/" + checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name + "/",)


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
    settlement_policy: SettlementPolicy
    cards: CardService
    goodwill: GoodwillDesk

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Application:
        clock = clock or SystemClock()
        engine = create_engine(
            settings.database_url, pool_size=settings.effective_pool_size,
            statement_timeout_ms=settings.request_timeout_ms,
        )  # fmt: skip
        uow = UnitOfWork(engine, clock)
        replay_guard = KeyCheckedReplayGuard(uow)  # partner keys are cached: it confirms them unrevoked
        verifier = TokenVerifier(
            audience=settings.network_audience, clock=clock, partner_keys=PartnerKeySource(uow),
            operator_keys=load_operator_keys(settings.operator_key_paths()), replay_guard=replay_guard,
            max_lifetime_seconds=settings.token_max_lifetime_seconds, leeway_seconds=settings.token_leeway_seconds,
        )  # fmt: skip
        cards = CardService(uow, CardSettings(identifier_pepper=settings.identifier_pepper.encode()))
        checkout_settings = CheckoutSettings(
            identifier_pepper=settings.identifier_pepper.encode(),
            pending_sources=(cards.feed.pending_points,),
            same_person_checks=(share_a_card,),
        )
        checkout = CheckoutService(uow, checkout_settings)
        goodwill = GoodwillDesk(uow, identifier_pepper=checkout_settings.identifier_pepper, held_points=held_points)
        return cls(
            settings, clock, engine, uow, checkout, verifier, replay_guard, settlement_policy(settings), cards, goodwill
        )

    def database_answers(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


def settlement_policy(settings: Settings) -> SettlementPolicy:
    """How periods are cut and when statements fall due, from LOYALTY_SETTLEMENT_*."""
    lengths = {"month": PeriodLength.MONTH, "week": PeriodLength.WEEK, "day": PeriodLength.DAY}
    length = lengths.get(settings.settlement_period.strip().lower())
    if length is None:
        raise ValueError(f"LOYALTY_SETTLEMENT_PERIOD is {settings.settlement_period!r}; use month, week or day")
    if settings.settlement_payment_due_days < 0:
        raise ValueError("LOYALTY_SETTLEMENT_PAYMENT_DUE_DAYS must not be negative")
    return SettlementPolicy(period_length=length, payment_due_days=settings.settlement_payment_due_days)


@dataclass
class RunningServer:
    """A started gRPC server with its health service and background maintenance."""

    app: Application
    server: grpc.Server
    port: int
    health: health.HealthServicer
    mtls_port: int | None = None  # the port that requires a client certificate, when mutual TLS is on
    # Several processes serving one port share one set of timers: only one of them runs the background jobs.
    runs_background_jobs: bool = True
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.server.start()
        threading.Thread(target=self._maintain, name="maintenance", daemon=True).start()

    def stop(self, grace_seconds: float | None = None, *, drain_seconds: float | None = None) -> None:
        """Drains: health goes NOT_SERVING, new RPCs are refused, in-flight ones get the grace period.

        With a drain period calls are still served for that long after health turns NOT_SERVING: a
        balancer that follows health (HAProxy) sends new calls on its open connections until it sees
        that, and a call sent there once the server refuses new ones would fail as CANCELLED.
        """
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        drain = self.app.settings.shutdown_drain_seconds if drain_seconds is None else drain_seconds
        if drain > 0:
            time.sleep(drain)
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
        jobs = self.runs_background_jobs
        sweep_every = self.app.settings.hold_sweep_seconds if jobs else 0.0
        check_every = self.app.settings.ledger_check_seconds if jobs else 0.0
        expire_every = self.app.settings.expiry_job_seconds if jobs else 0.0
        # The first ledger check and expiry run wait a full interval: a rolling restart must not start
        # every replica's full scans at once.
        next_sweep, next_check, next_expiry = 0.0, check_every, expire_every
        elapsed = 0.0
        while not self._stopping.is_set():
            is_serving = self.app.database_answers()
            self._set_serving(is_serving)
            if is_serving and jobs:
                self._measure_backlog()
            if sweep_every and elapsed >= next_sweep:
                self._sweep()
                next_sweep = elapsed + sweep_every
            if check_every and is_serving and elapsed >= next_check:
                check_ledger_and_report(self.app.uow)
                next_check = elapsed + check_every
            if expire_every and is_serving and elapsed >= next_expiry:
                expire_points_and_report(self.app.uow)
                review_tiers_and_report(self.app.uow)
                next_expiry = elapsed + expire_every
            self._stopping.wait(min(HEALTH_PROBE_SECONDS, sweep_every or HEALTH_PROBE_SECONDS))
            elapsed += min(HEALTH_PROBE_SECONDS, sweep_every or HEALTH_PROBE_SECONDS)

    def _measure_backlog(self) -> None:
        try:
            metrics.HOLDS_EXPIRY_BACKLOG.set(self.app.checkout.overdue_holds())
        except Exception:
            log.exception("measuring the hold expiry backlog failed")

    def _sweep(self) -> None:
        try:
            expired = self.app.checkout.expire_holds()
            metrics.HOLDS_EXPIRED_TOTAL.inc(expired)
            self.app.replay_guard.purge_expired(self.app.clock.now())
        except Exception:
            log.exception("maintenance sweep failed")


def expire_points_and_report(uow: UnitOfWork) -> ExpiryRun | None:
    """Books lapsed points (safe while other replicas do the same) and exports what it booked."""
    try:
        run = expire_lapsed_points(uow, held_points)
    except Exception:
        log.exception("expiry run failed")
        return None
    metrics.POINTS_EXPIRED_TOTAL.inc(run.points_expired)
    metrics.EXPIRY_LAST_RUN_SECONDS.set_to_current_time()
    if run.lots_expired:
        log.info("points expired", extra={"lots": run.lots_expired, "points": run.points_expired})
    return run


def review_tiers_and_report(uow: UnitOfWork) -> int | None:
    """Moves members past their tier's lapse date down (safe from several replicas at once)."""
    try:
        changed = review_tiers(uow)
    except Exception:
        log.exception("tier review failed")
        return None
    metrics.TIER_DEMOTIONS_TOTAL.inc(changed)
    if changed:
        log.info("tiers reviewed", extra={"members_moved": changed})
    return changed


def member_reads(app: Application) -> MemberReadSettings:
    """What member statements count beside the ledger: open holds and open card authorisations."""
    return MemberReadSettings(
        identifier_pepper=app.settings.identifier_pepper.encode(), held_points=held_points,
        pending_sources=(app.cards.feed.pending_points,),
    )  # fmt: skip


def held_points(connection: Connection, member_id: int, now: datetime) -> int:
    return CheckoutRepository(connection).held_points(member_id, now)


def check_ledger_and_report(uow: UnitOfWork) -> list[LedgerCheck]:
    """Runs the ledger invariants, exports how many failed and logs each failure."""
    try:
        results = check_ledger(uow)
    except Exception:
        log.exception("ledger check could not run")
        metrics.LEDGER_CHECK_FAILURES.set(-1)  # not "all good": the alert tells a check that cannot run
        return []
    failed = [result for result in results if not result.passed]
    for result in failed:
        log.error("ledger invariant broken", extra={"check": result.name, "detail": result.detail})
    metrics.LEDGER_CHECK_FAILURES.set(len(failed))
    metrics.LEDGER_CHECK_LAST_RUN_SECONDS.set_to_current_time()
    return results


def create_server(
    app: Application, address: str | None = None, *, shares_port: bool = False, runs_background_jobs: bool = True
) -> RunningServer:
    """Builds (but does not start) the server; bind port 0 to get a free port.

    ``shares_port``: other processes listen on the same port (SO_REUSEPORT); the kernel spreads connections.
    """
    settings = app.settings
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=[
            MetricsInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(app.verifier, tls.client_certificate_policy(settings), claim_with_work=CLAIM_WITH_WORK),
            PanGuardInterceptor(),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            *([("grpc.so_reuseport", 1)] if shares_port else []),
        ],
    )
    checkout_service_pb2_grpc.add_CheckoutServiceServicer_to_server(CheckoutServicer(app.checkout), server)
    partner_admin_service_pb2_grpc.add_PartnerAdminServiceServicer_to_server(PartnerAdminServicer(app.uow), server)
    settlement_service_pb2_grpc.add_SettlementServiceServicer_to_server(
        SettlementServicer(app.uow, app.settlement_policy), server
    )
    card_service_pb2_grpc.add_CardServiceServicer_to_server(CardServicer(app.cards), server)
    network_policy_service_pb2_grpc.add_NetworkPolicyServiceServicer_to_server(NetworkPolicyServicer(app.uow), server)
    member_service_pb2_grpc.add_MemberServiceServicer_to_server(MemberServicer(app.uow, member_reads(app)), server)
    support_service_pb2_grpc.add_SupportServiceServicer_to_server(SupportServicer(app.goodwill), server)
    partner_programme_service_pb2_grpc.add_PartnerProgrammeServiceServicer_to_server(
        PartnerProgrammeServicer(PartnerProgramme(app.uow)), server
    )
    households = Households(app.uow, identifier_pepper=app.settings.identifier_pepper.encode(), held_points=held_points)
    household_service_pb2_grpc.add_HouseholdServiceServicer_to_server(HouseholdServicer(households), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # Liveness says only that the process answers: a database outage must not get replicas restarted.
    health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    if settings.enable_reflection:
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port, mtls_port = _add_ports(server, settings, address or settings.listen_address)
    return RunningServer(app, server, port, health_servicer, mtls_port, runs_background_jobs)


def _add_ports(server: grpc.Server, settings: Settings, address: str) -> tuple[int, int | None]:
    """The main port (TLS only when configured) and, for mutual TLS, a port requiring client certificates."""
    if not settings.is_tls:
        return server.add_insecure_port(address), None
    port = server.add_secure_port(address, tls.server_credentials(settings))
    if not settings.mtls_listen_address:
        return port, None
    credentials = tls.server_credentials(settings, require_client_certificate=True)
    return port, server.add_secure_port(settings.mtls_listen_address, credentials)
