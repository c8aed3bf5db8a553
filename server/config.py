"""Configuration, read once from LOYALTY_* environment variables into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

DEV_PEPPER = "coalition-development-pepper-not-for-production"


T = TypeVar("T")


def _setting(default: T, help_text: str) -> T:
    # Typed as the default's type so each field declaration stays one readable line.
    described: T = field(default=default, metadata={"help": help_text})
    return described


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        "sqlite:///var/coalition.db", "SQLAlchemy URL: sqlite:///... or postgresql+psycopg://..."
    )
    listen_address: str = _setting("127.0.0.1:50051", "gRPC host:port to listen on (port 0 picks a free one)")
    metrics_address: str = _setting("127.0.0.1:9464", "Prometheus /metrics host:port; empty disables it")
    tls_cert_file: str = _setting("", "Server certificate chain (PEM); with TLS_KEY_FILE the gRPC ports serve TLS only")
    tls_key_file: str = _setting("", "Private key (PEM) of LOYALTY_TLS_CERT_FILE; both or neither")
    mtls_listen_address: str = _setting(
        "", "Second gRPC host:port that requires a client certificate signed by TLS_CLIENT_CA_FILE; empty: none"
    )
    tls_client_ca_file: str = _setting(
        "", "Private CA (PEM) that signs only partner client certificates; needs MTLS_LISTEN_ADDRESS"
    )
    tls_client_cert_partners: str = _setting(
        "", "Partner ids (comma-separated) that must call with a client certificate naming them (CN or DNS SAN)"
    )
    workers: int = _setting(16, "Threads serving RPCs (in each server process)")
    server_processes: int = _setting(
        1,
        "Server processes sharing the gRPC port (SO_REUSEPORT), each with WORKERS threads and its own pool; "
        "one per core lifts the one-core limit of Python's GIL",
    )
    db_pool_size: int = _setting(0, "Database connections (per server process); 0 means one per worker")
    max_concurrent_rpcs: int = _setting(64, "RPCs in flight per server process before new ones get RESOURCE_EXHAUSTED")
    max_message_bytes: int = _setting(1_048_576, "Largest request or response message")
    request_timeout_seconds: float = _setting(10.0, "Server-side deadline for one RPC (statement and lock timeout)")
    network_audience: str = _setting("coalition", "The `aud` every token must name")
    operator_public_keys: str = _setting("", "Operator keys as kid=path.pem,kid2=path2.pem (kids start with operator-)")
    token_max_lifetime_seconds: int = _setting(300, "Longest token lifetime accepted (exp - iat)")
    token_leeway_seconds: int = _setting(30, "Clock skew tolerated on exp and iat (at most 30)")
    identifier_pepper: str = _setting(
        DEV_PEPPER, "Secret key for hashing phones and emails; set it in production (never empty)"
    )
    hold_sweep_seconds: float = _setting(30.0, "How often expired holds are marked EXPIRED; 0 disables")
    ledger_check_seconds: float = _setting(
        3600.0, "How often the ledger invariants are checked (full scans; loyalty_ledger_check_failures); 0 disables"
    )
    expiry_job_seconds: float = _setting(
        3600.0, "How often lapsed points are booked as expiries (network policy); 0 disables (run `jobs run`)"
    )
    enable_reflection: bool = _setting(False, "Serve gRPC reflection (development only)")
    shutdown_grace_seconds: float = _setting(10.0, "On SIGTERM, how long in-flight RPCs may finish")
    shutdown_drain_seconds: float = _setting(
        0.0,
        "On SIGTERM, how long to go on serving while health says NOT_SERVING, before refusing new calls "
        "(for a balancer that follows health, such as HAProxy; Kubernetes' preStop does this instead)",
    )
    settlement_period: str = _setting("month", "Settlement period length: month (UTC calendar), week (ISO) or day")
    settlement_payment_due_days: int = _setting(14, "Days after a period ends that its statements are due")
    keys_dir: str = _setting("var/keys", "Where `seed-demo` writes demo keys and the demo reads them")
    log_level: str = _setting("INFO", "Log level")

    @property
    def effective_pool_size(self) -> int:
        return self.db_pool_size or self.workers

    @property
    def request_timeout_ms(self) -> int:
        return int(self.request_timeout_seconds * 1000)

    @property
    def is_tls(self) -> bool:
        return bool(self.tls_cert_file or self.tls_key_file)

    def client_cert_partner_ids(self) -> frozenset[str]:
        return frozenset(item.strip() for item in self.tls_client_cert_partners.split(",") if item.strip())

    def check_tls(self) -> None:
        """Refuses half a TLS setup, so a mistake stops the start instead of serving plaintext or refusing partners."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("set both LOYALTY_TLS_CERT_FILE and LOYALTY_TLS_KEY_FILE, or neither")
        if bool(self.mtls_listen_address) != bool(self.tls_client_ca_file):
            raise ValueError("mutual TLS needs both LOYALTY_MTLS_LISTEN_ADDRESS and LOYALTY_TLS_CLIENT_CA_FILE")
        if self.mtls_listen_address and not self.is_tls:
            raise ValueError("mutual TLS needs LOYALTY_TLS_CERT_FILE and LOYALTY_TLS_KEY_FILE too")
        if self.client_cert_partner_ids() and not self.mtls_listen_address:
            # Those partners could never call: no port would accept their certificate.
            raise ValueError("LOYALTY_TLS_CLIENT_CERT_PARTNERS needs mutual TLS (LOYALTY_MTLS_LISTEN_ADDRESS)")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{env_name(name)}: no such file {path!r}")

    def operator_key_paths(self) -> dict[str, Path]:
        pairs = [item.strip() for item in self.operator_public_keys.split(",") if item.strip()]
        paths: dict[str, Path] = {}
        for pair in pairs:
            key_id, separator, path = pair.partition("=")
            if not separator or not key_id.startswith("operator-"):
                raise ValueError(f"LOYALTY_OPERATOR_PUBLIC_KEYS entry {pair!r} is not operator-<id>=<path>")
            paths[key_id] = Path(path)
        return paths

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for setting in fields(cls):
            raw = environ.get(env_name(setting.name))
            if raw is not None:
                values[setting.name] = _parse(raw, type(setting.default))
        settings = cls(**(values | overrides))  # type: ignore[arg-type]
        settings.operator_key_paths()  # fail at start, not at the first operator call
        settings.check_tls()
        if settings.server_processes < 1:
            raise ValueError("LOYALTY_SERVER_PROCESSES must be at least 1")
        if settings.token_leeway_seconds > 30 or settings.token_max_lifetime_seconds > 300:
            raise ValueError("token leeway is at most 30 s and token lifetime at most 300 s")
        if not settings.identifier_pepper.strip():
            raise ValueError("LOYALTY_IDENTIFIER_PEPPER is empty: set it to a secret")
        if settings.identifier_pepper == DEV_PEPPER and not settings.database_url.startswith("sqlite"):
            # With a public pepper every E.164 phone's lookup hash can be brute-forced from the table.
            raise ValueError("set LOYALTY_IDENTIFIER_PEPPER to a secret: the development default is public")
        return settings


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_name(setting_name: str) -> str:
    return f"LOYALTY_{setting_name.upper()}"


def _parse(raw: str, kind: type) -> object:
    if kind is bool:
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"{raw!r} is not a boolean; use true or false")
        return word in _TRUE
    if kind in (int, float):
        return kind(raw)
    return raw


def describe_settings() -> str:
    """The LOYALTY_* variables with their defaults, for `coalition serve --help`."""
    lines = ["environment variables (read once at start):"]
    for setting in fields(Settings):
        lines.append(f"  {env_name(setting.name):36} {setting.metadata['help']} (default: {setting.default!r})")
    return "\n".join(lines)
