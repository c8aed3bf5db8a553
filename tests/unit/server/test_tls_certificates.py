"""The client-certificate rule for partners, and the demo certificates `coalition dev-certs` writes."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from auth.principal import Principal, PrincipalKind
from server.tls import (
    ClientCertificateMismatch,
    ClientCertificatePolicy,
    ClientCertificateRequired,
    certificate_names,
    write_demo_certificates,
)

POLICY = ClientCertificatePolicy(required_partners=frozenset({"p-strict"}))
NO_CERTIFICATE = {"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]}


def partner(code: str) -> Principal:
    return Principal(kind=PrincipalKind.PARTNER, subject=code, partner_id=7, partner_code=code, roles=frozenset())


def certificate(common_name: str, *dns_names: str, others: tuple[bytes, ...] = ()) -> dict[str, list[bytes]]:
    """An auth context as gRPC builds it after verifying a client certificate."""
    names = [name.encode() for name in dns_names]
    return NO_CERTIFICATE | {
        "x509_common_name": [common_name.encode()],
        "x509_subject_alternative_name": [*others, *names],
        "peer_dns": names,
    }


OPERATOR = Principal(
    kind=PrincipalKind.OPERATOR, subject="ops", partner_id=None, partner_code=None, roles=frozenset({"admin"})
)


def test_a_listed_partner_without_a_certificate_is_refused() -> None:
    with pytest.raises(ClientCertificateRequired) as raised:
        POLICY.check(partner("p-strict"), NO_CERTIFICATE)

    assert raised.value.reason == "CLIENT_CERTIFICATE_REQUIRED"
    assert raised.value.metadata == {"partner_id": "p-strict"}


@pytest.mark.parametrize(
    "context",
    [certificate("p-strict"), certificate("someone", "p-strict"), certificate("p-strict", "other", "p-strict")],
    ids=["common-name", "dns-name", "both"],
)
def test_a_listed_partner_with_its_own_certificate_passes(context: dict[str, list[bytes]]) -> None:
    POLICY.check(partner("p-strict"), context)


@pytest.mark.parametrize("code", ["p-strict", "p-relaxed"])
def test_a_certificate_naming_another_partner_is_refused(code: str) -> None:
    with pytest.raises(ClientCertificateMismatch) as raised:
        POLICY.check(partner(code), certificate("p-other", "p-other"))

    assert raised.value.reason == "CLIENT_CERTIFICATE_MISMATCH"


def test_only_dns_names_count_among_the_alternative_names() -> None:
    # A URI or e-mail name that happens to spell the partner id is not what the partner was issued.
    context = certificate("someone", others=(b"p-strict", b"spiffe://p-strict"))

    assert certificate_names(context) == frozenset({"someone"})
    with pytest.raises(ClientCertificateMismatch):
        POLICY.check(partner("p-strict"), context)


def test_an_unlisted_partner_needs_no_certificate() -> None:
    POLICY.check(partner("p-relaxed"), NO_CERTIFICATE)
    POLICY.check(partner("p-relaxed"), {})
    POLICY.check(partner("p-relaxed"), certificate("p-relaxed"))


def test_operators_are_not_bound_to_a_certificate() -> None:
    POLICY.check(OPERATOR, NO_CERTIFICATE)
    POLICY.check(OPERATOR, certificate("p-strict", "p-strict"))


def test_certificate_names_are_empty_without_a_verified_certificate() -> None:
    assert certificate_names(NO_CERTIFICATE) == frozenset()
    assert certificate_names(certificate("a", "b", "c")) == frozenset({"a", "b", "c"})


# --- demo certificates -------------------------------------------------------------------------


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_demo_certificates_form_a_chain_with_private_keys(tmp_path: Path) -> None:
    written = write_demo_certificates(tmp_path / "certs", ["p-one", "p-two"])

    names = sorted(path.name for path in written)
    assert names == sorted(
        ["ca.crt", "ca.key", "server.crt", "server.key"]
        + [f"client-{code}.{suffix}" for code in ("p-one", "p-two") for suffix in ("crt", "key")]
    )
    for key in (path for path in written if path.suffix == ".key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    authority = load(tmp_path / "certs" / "ca.crt")
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for name in ("server", "client-p-one", "client-p-two"):
        leaf = load(tmp_path / "certs" / f"{name}.crt")
        leaf.verify_directly_issued_by(authority)
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_the_server_certificate_names_the_loopback_host(tmp_path: Path) -> None:
    write_demo_certificates(tmp_path, [], ["coalition.internal"])

    server = load(tmp_path / "server.crt")
    alternative_names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alternative_names.get_values_for_type(x509.DNSName) == ["localhost", "coalition.internal"]
    assert alternative_names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_a_client_certificate_names_its_partner_twice(tmp_path: Path) -> None:
    write_demo_certificates(tmp_path, ["brightmart-stores"])

    client = load(tmp_path / "client-brightmart-stores.crt")
    assert common_name(client) == "brightmart-stores"
    alternative_names = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alternative_names.get_values_for_type(x509.DNSName) == ["brightmart-stores"]
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert isinstance(client.public_key(), ec.EllipticCurvePublicKey)


def test_a_second_run_keeps_the_ca_so_earlier_certificates_stay_valid(tmp_path: Path) -> None:
    write_demo_certificates(tmp_path, ["p-one"])
    first_authority = (tmp_path / "ca.crt").read_bytes()

    written = write_demo_certificates(tmp_path, ["p-two"])

    assert (tmp_path / "ca.crt").read_bytes() == first_authority
    assert tmp_path / "ca.crt" not in written
    authority = load(tmp_path / "ca.crt")
    for name in ("client-p-one", "client-p-two", "server"):
        load(tmp_path / f"{name}.crt").verify_directly_issued_by(authority)


@pytest.mark.parametrize("partner_id", ["", "P-UPPER", "../escape", "a", "with space", "ca/x"])
def test_a_partner_id_that_is_not_one_is_refused(tmp_path: Path, partner_id: str) -> None:
    with pytest.raises(ValueError, match="is not a partner id"):
        write_demo_certificates(tmp_path / "certs", [partner_id])
    assert not (tmp_path / "certs").exists()


@pytest.mark.parametrize("host", ["", "-leading", "trailing-", "a/b", "a b"])
def test_a_server_name_that_is_not_a_host_name_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        write_demo_certificates(tmp_path, [], [host])
