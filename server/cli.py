"""The `coalition` command: serve, migrate, seed and play the demo, manage partners, settle, run jobs."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from server.config import Settings, describe_settings

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        parser.print_help()
        return 2
    if argv is None and arguments.run is not _serve and hasattr(signal, "SIGPIPE"):
        # Run as the program, `coalition ... | head` ends quietly like any Unix tool. Never for the server
        # (a closed pipe must not kill it) nor when called in-process (tests).
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    result: int = arguments.run(arguments)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coalition", description="Coalition loyalty network service.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the gRPC server", epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    serve.set_defaults(run=_serve)
    commands.add_parser("migrate", help="apply database migrations (LOYALTY_DATABASE_URL)").set_defaults(run=_migrate)
    commands.add_parser("seed-demo", help="seed the demo network and write its keys").set_defaults(run=_seed)
    demo = commands.add_parser("demo", help="play a customer journey against a running server")
    demo.add_argument("--target", default=None, help="server address (default: LOYALTY_LISTEN_ADDRESS)")
    demo.set_defaults(run=_demo)
    keygen = commands.add_parser("keygen", help="create a partner signing key pair")
    keygen.add_argument("--algorithm", choices=("ES256", "EdDSA"), default="ES256")
    keygen.add_argument("--private-key", type=Path, required=True, help="where to write the private key (0600)")
    keygen.add_argument("--public-key", type=Path, required=True, help="where to write the public key to register")
    keygen.set_defaults(run=_keygen)
    token = commands.add_parser(
        "token", help="print a partner token for one raw call (buf curl, grpcurl)",
        description="Signs a token bound to the method and to the request's protobuf bytes; send exactly --data.",
    )  # fmt: skip
    token.add_argument("--partner", required=True, help="partner id; its key is read from LOYALTY_KEYS_DIR")
    token.add_argument("--key-id", default="", help="key id (default: <partner>-1, as seed-demo registers)")
    token.add_argument("--method", required=True, help="full method, e.g. /loyalty.v1.CheckoutService/GetBalance")
    token.add_argument("--data", required=True, help="the request as JSON, exactly as it will be sent")
    token.set_defaults(run=_token)
    _add_tls_commands(commands)
    jobs = commands.add_parser("jobs", help="scheduled work").add_subparsers(title="jobs", metavar="JOB")
    jobs.add_parser(
        "run",
        help="expire lapsed holds and points, review lapsed tiers, purge old token ids and check the ledger "
        "invariants, once "
        "(exit 1 if something failed)",
    ).set_defaults(run=_jobs)
    from server.partner_cli import add_partner_commands

    add_partner_commands(commands)
    from server.settlement_cli import add_settlement_commands

    add_settlement_commands(commands)
    from server.policy_cli import add_policy_commands

    add_policy_commands(commands)
    from server.support_cli import add_support_commands

    add_support_commands(commands)
    from server.members_cli import add_members_commands

    add_members_commands(commands)
    from server.households_cli import add_households_commands

    add_households_commands(commands)
    from server.cards_cli import add_cards_commands

    add_cards_commands(commands)
    return parser


def _add_tls_commands(commands: Any) -> None:
    health = commands.add_parser(
        "health", help="check the server's gRPC health (no token): exit 0 when SERVING, 1 otherwise",
        description="For container health checks and probes: one grpc.health.v1 Check, no token.",
    )  # fmt: skip
    health.add_argument("--target", default=None, help="host:port (default: LOYALTY_LISTEN_ADDRESS on loopback)")
    health.add_argument("--tls-ca", type=Path, default=None, help="CA certificate to trust: the server speaks TLS")
    health.add_argument("--tls-server-name", default=None, help="host name the server certificate must carry")
    health.add_argument("--service", default="", help="service name to check (default: the whole server)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.set_defaults(run=_health)
    certificates = commands.add_parser(
        "dev-certs", help="write a demo CA, a localhost server certificate and partner client certificates",
        description="For development and demos only. Reuses ca.crt/ca.key if --out already has them.",
    )  # fmt: skip
    certificates.add_argument("--out", type=Path, required=True, help="directory to write into (keys are 0600)")
    certificates.add_argument(
        "--partner", action="extend", nargs="+", default=[], metavar="ID", help="partner ids to certify"
    )
    certificates.add_argument(
        "--server-name", action="extend", nargs="+", default=[], metavar="HOST",
        help="host names for the server certificate besides localhost, 127.0.0.1 and ::1",
    )  # fmt: skip
    certificates.set_defaults(run=_dev_certs)


def _settings() -> Settings:
    settings = Settings.from_environment()
    from server.logs import configure_logging

    configure_logging(settings.log_level)
    return settings


def _migrate(_: argparse.Namespace) -> int:
    from migrations.runner import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print(f"database at head: {settings.database_url.split('@')[-1]}")
    return 0


def _seed(_: argparse.Namespace) -> int:
    from server.demo import seed_demo

    settings = _settings()
    seed_demo(settings.database_url, Path(settings.keys_dir), identifier_pepper=settings.identifier_pepper.encode())
    return 0


def _demo(arguments: argparse.Namespace) -> int:
    from server.demo import run_demo

    settings = _settings()
    run_demo(arguments.target or settings.listen_address, Path(settings.keys_dir))
    return 0


def _keygen(arguments: argparse.Namespace) -> int:
    from sdk.tokens import generate_key_pair, write_private_key

    private_key, public_pem = generate_key_pair(arguments.algorithm)
    write_private_key(arguments.private_key, private_key)
    arguments.public_key.write_text(public_pem)
    print(f"wrote {arguments.private_key} (keep it secret) and {arguments.public_key} (register it)")
    return 0


def _token(arguments: argparse.Namespace) -> int:
    from google.protobuf import descriptor_pool, message_factory
    from loyalty.v1 import checkout_service_pb2, partner_admin_service_pb2  # noqa: F401 - registers the services

    from sdk.tokens import load_private_key, sign_request_token

    settings = Settings.from_environment()
    method = descriptor_pool.Default().FindMethodByName(arguments.method.strip("/").replace("/", "."))
    request = json_format.Parse(arguments.data, message_factory.GetMessageClass(method.input_type)())
    token = sign_request_token(
        private_key=load_private_key(Path(settings.keys_dir) / f"{arguments.partner}.pem"),
        key_id=arguments.key_id or f"{arguments.partner}-1", issuer=arguments.partner,
        audience=settings.network_audience, method=arguments.method, body=request.SerializeToString(),
        lifetime_seconds=settings.token_max_lifetime_seconds,
    )  # fmt: skip
    print(token)
    return 0


def _jobs(_: argparse.Namespace) -> int:
    from server.app import Application, check_ledger_and_report, expire_points_and_report, review_tiers_and_report

    app = Application.build(_settings())
    expired = app.checkout.expire_holds()
    purged = app.replay_guard.purge_expired(app.clock.now())
    print(f"holds expired: {expired}; token ids purged: {purged}")
    lapsed = expire_points_and_report(app.uow)
    if lapsed is None:
        print("FAIL  expiry run (see the log)")
    else:
        print(f"points expired: {lapsed.points_expired} in {lapsed.lots_expired} lots of {lapsed.members} members")
    moved = review_tiers_and_report(app.uow)
    print("FAIL  tier review (see the log)" if moved is None else f"tiers lapsed: {moved} members moved down")
    checks = check_ledger_and_report(app.uow)
    for check in checks:
        print(
            f"{'PASS' if check.passed else 'FAIL'}  ledger: {check.name}"
            + (f" ({check.detail})" if check.detail else "")
        )
    app.engine.dispose()
    ran = lapsed is not None and moved is not None
    return 0 if ran and checks and all(check.passed for check in checks) else 1


def _health(arguments: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sdk.client import TlsOptions, open_channel

    target = arguments.target or _loopback(Settings.from_environment().listen_address)
    tls = TlsOptions(ca_file=arguments.tls_ca, server_name=arguments.tls_server_name) if arguments.tls_ca else None
    with open_channel(target, tls) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=arguments.service), timeout=arguments.timeout
            )
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _loopback(listen_address: str) -> str:
    """Where to reach a server listening on ``listen_address`` from its own host."""
    host, _, port = listen_address.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("", "0.0.0.0", "[::]") else listen_address  # noqa: S104 - not a bind


def _dev_certs(arguments: argparse.Namespace) -> int:
    from server.tls import write_demo_certificates

    written = write_demo_certificates(arguments.out, arguments.partner, arguments.server_name)
    for path in written:
        print(path)
    return 0


def _serve(_: argparse.Namespace) -> int:
    from server.processes import serve_processes, stop_on_signals

    settings = _settings()
    if settings.server_processes > 1:
        return serve_processes(settings)  # imports nothing of gRPC here: the workers are spawned fresh
    from server.app import Application, create_server
    from server.collector import settle_for_serving
    from server.metrics_http import start_metrics_server

    app = Application.build(settings)
    running = create_server(app)
    if settings.metrics_address:
        start_metrics_server(settings.metrics_address)
    settle_for_serving()
    running.start()
    log.info("serving", extra={"address": f"{settings.listen_address.rsplit(':', 1)[0]}:{running.port}"})
    print(f"coalition serving gRPC on port {running.port}", flush=True)
    if running.mtls_port is not None:
        print(f"coalition serving gRPC with client certificates on port {running.mtls_port}", flush=True)
    stopped = threading.Event()
    stop_on_signals(stopped)
    stopped.wait()
    running.stop()
    log.info("stopped")
    return 0


def print_message(message: Message) -> None:
    print(
        json_format.MessageToJson(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    )


def timestamp_argument(text: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp


if __name__ == "__main__":
    sys.exit(main())
