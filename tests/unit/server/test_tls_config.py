"""TLS settings: both halves of a key pair or neither, files that exist, mutual TLS complete; else no start."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from server.config import Settings, describe_settings
from server.tls import client_certificate_policy, server_credentials, write_demo_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    write_demo_certificates(directory, ["p-one", "p-two"])
    return directory


def tls_environment(certificates: Path, **extra: str) -> dict[str, str]:
    return {
        "LOYALTY_TLS_CERT_FILE": str(certificates / "server.crt"),
        "LOYALTY_TLS_KEY_FILE": str(certificates / "server.key"),
    } | extra


def mtls_environment(certificates: Path, **extra: str) -> dict[str, str]:
    return tls_environment(
        certificates,
        LOYALTY_MTLS_LISTEN_ADDRESS="127.0.0.1:0",
        LOYALTY_TLS_CLIENT_CA_FILE=str(certificates / "ca.crt"),
        **extra,
    )


def test_plaintext_by_default() -> None:
    settings = Settings.from_environment({})

    assert settings.is_tls is False
    assert settings.client_cert_partner_ids() == frozenset()
    assert client_certificate_policy(settings) is None


def test_tls_with_a_certificate_and_its_key(certificates: Path) -> None:
    settings = Settings.from_environment(tls_environment(certificates))

    assert settings.is_tls is True
    assert settings.tls_cert_file == str(certificates / "server.crt")
    assert isinstance(server_credentials(settings), grpc.ServerCredentials)
    assert client_certificate_policy(settings) is None


def test_mutual_tls_with_partners_that_must_present_a_certificate(certificates: Path) -> None:
    environ = mtls_environment(certificates, LOYALTY_TLS_CLIENT_CERT_PARTNERS=" p-one, p-two ,,")

    settings = Settings.from_environment(environ)

    assert settings.client_cert_partner_ids() == frozenset({"p-one", "p-two"})
    policy = client_certificate_policy(settings)
    assert policy is not None and policy.required_partners == frozenset({"p-one", "p-two"})
    assert isinstance(server_credentials(settings, require_client_certificate=True), grpc.ServerCredentials)


def test_mutual_tls_without_listed_partners_still_checks_presented_certificates(certificates: Path) -> None:
    policy = client_certificate_policy(Settings.from_environment(mtls_environment(certificates)))

    assert policy is not None and policy.required_partners == frozenset()


@pytest.mark.parametrize("present", ["LOYALTY_TLS_CERT_FILE", "LOYALTY_TLS_KEY_FILE"])
def test_half_a_key_pair_is_refused(certificates: Path, present: str) -> None:
    environ = {present: tls_environment(certificates)[present]}

    with pytest.raises(ValueError, match="both LOYALTY_TLS_CERT_FILE and LOYALTY_TLS_KEY_FILE"):
        Settings.from_environment(environ)


@pytest.mark.parametrize("variable", ["LOYALTY_TLS_CERT_FILE", "LOYALTY_TLS_KEY_FILE", "LOYALTY_TLS_CLIENT_CA_FILE"])
def test_a_missing_file_is_refused_by_name(certificates: Path, variable: str) -> None:
    environ = mtls_environment(certificates) | {variable: str(certificates / "absent.pem")}

    with pytest.raises(ValueError, match=f"{variable}: no such file") as raised:
        Settings.from_environment(environ)
    assert "absent.pem" in str(raised.value)


def test_a_directory_is_not_a_certificate_file(certificates: Path) -> None:
    with pytest.raises(ValueError, match="LOYALTY_TLS_CERT_FILE: no such file"):
        Settings.from_environment(tls_environment(certificates, LOYALTY_TLS_CERT_FILE=str(certificates)))


@pytest.mark.parametrize("dropped", ["LOYALTY_MTLS_LISTEN_ADDRESS", "LOYALTY_TLS_CLIENT_CA_FILE"])
def test_mutual_tls_needs_its_port_and_its_ca(certificates: Path, dropped: str) -> None:
    environ = mtls_environment(certificates)
    del environ[dropped]

    with pytest.raises(ValueError, match="LOYALTY_MTLS_LISTEN_ADDRESS and LOYALTY_TLS_CLIENT_CA_FILE"):
        Settings.from_environment(environ)


def test_mutual_tls_needs_the_server_key_pair(certificates: Path) -> None:
    environ = {
        "LOYALTY_MTLS_LISTEN_ADDRESS": "127.0.0.1:0",
        "LOYALTY_TLS_CLIENT_CA_FILE": str(certificates / "ca.crt"),
    }

    with pytest.raises(ValueError, match="LOYALTY_TLS_CERT_FILE and LOYALTY_TLS_KEY_FILE"):
        Settings.from_environment(environ)


@pytest.mark.parametrize("with_tls", [False, True])
def test_listed_partners_without_mutual_tls_are_refused(certificates: Path, with_tls: bool) -> None:
    environ = {"LOYALTY_TLS_CLIENT_CERT_PARTNERS": "p-one"}
    if with_tls:
        environ |= tls_environment(certificates)

    with pytest.raises(ValueError, match="LOYALTY_TLS_CLIENT_CERT_PARTNERS needs mutual TLS"):
        Settings.from_environment(environ)


def test_overrides_are_validated_too(certificates: Path) -> None:
    with pytest.raises(ValueError, match="both LOYALTY_TLS_CERT_FILE"):
        Settings.from_environment({}, tls_cert_file=str(certificates / "server.crt"))


def test_serve_help_lists_the_tls_variables() -> None:
    description = describe_settings()

    for name in (
        "LOYALTY_TLS_CERT_FILE",
        "LOYALTY_TLS_KEY_FILE",
        "LOYALTY_MTLS_LISTEN_ADDRESS",
        "LOYALTY_TLS_CLIENT_CA_FILE",
        "LOYALTY_TLS_CLIENT_CERT_PARTNERS",
    ):
        assert name in description


# --- the files' contents, read when the server is built --------------------------------------


def test_a_key_of_another_certificate_is_refused(certificates: Path) -> None:
    settings = Settings.from_environment(
        tls_environment(certificates, LOYALTY_TLS_KEY_FILE=str(certificates / "client-p-one.key"))
    )

    with pytest.raises(ValueError, match="LOYALTY_TLS_KEY_FILE is not the key of the first certificate"):
        server_credentials(settings)


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("LOYALTY_TLS_CERT_FILE", "LOYALTY_TLS_CERT_FILE holds no PEM certificate"),
        ("LOYALTY_TLS_KEY_FILE", "LOYALTY_TLS_KEY_FILE holds no unencrypted PEM private key"),
        ("LOYALTY_TLS_CLIENT_CA_FILE", "LOYALTY_TLS_CLIENT_CA_FILE holds no PEM certificate"),
    ],
)
def test_a_file_that_is_not_pem_is_refused(certificates: Path, tmp_path: Path, variable: str, message: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    settings = Settings.from_environment(mtls_environment(certificates) | {variable: str(garbage)})

    with pytest.raises(ValueError, match=message):
        server_credentials(settings, require_client_certificate=True)


def test_a_file_removed_after_start_up_checks_is_reported_by_name(certificates: Path, tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes((certificates / "server.key").read_bytes())
    settings = Settings.from_environment(tls_environment(certificates, LOYALTY_TLS_KEY_FILE=str(key)))
    key.unlink()

    with pytest.raises(ValueError, match="LOYALTY_TLS_KEY_FILE: cannot read"):
        server_credentials(settings)
