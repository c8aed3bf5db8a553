"""TLS for the gRPC ports, the client-certificate rule for partners that asked for mutual TLS, and demo certificates.

gRPC Python can either not ask for a client certificate or require one on a port; it cannot ask and
accept a refusal. So mutual TLS gets a port of its own (LOYALTY_MTLS_LISTEN_ADDRESS) that requires and
verifies a certificate, next to the TLS port that asks for none, and the partners listed in
LOYALTY_TLS_CLIENT_CERT_PARTNERS are refused unless they came through it with a certificate naming them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from auth.principal import Principal, PrincipalKind
from common.errors import Unauthenticated
from sdk.tokens import write_private_key
from server.config import Settings

# Keys gRPC puts in a call's auth context once the handshake has verified a client certificate.
COMMON_NAME_KEY = "x509_common_name"
DNS_NAMES_KEY = "peer_dns"  # the DNS entries of the subject alternative name, and only those

DEMO_VALIDITY = timedelta(days=365)
_PARTNER_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}$")  # as partners.services accepts them
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class ClientCertificateRequired(Unauthenticated):
    reason = "CLIENT_CERTIFICATE_REQUIRED"


class ClientCertificateMismatch(Unauthenticated):
    reason = "CLIENT_CERTIFICATE_MISMATCH"


@dataclass(frozen=True)
class ClientCertificatePolicy:
    """Which partners must prove themselves with a client certificate as well as their token."""

    required_partners: frozenset[str]

    def check(self, principal: Principal, auth_context: Mapping[str, Iterable[bytes]]) -> None:
        """Refuses a listed partner without a verified certificate, and any partner whose certificate names another.

        Operators are not bound to a certificate: their tokens are checked against operator keys only.
        """
        if principal.kind is not PrincipalKind.PARTNER or principal.partner_code is None:
            return
        names = certificate_names(auth_context)
        if not names:
            if principal.partner_code in self.required_partners:
                raise ClientCertificateRequired(
                    "this partner must call the mutual-TLS port with its client certificate",
                    partner_id=principal.partner_code,
                )
            return
        if principal.partner_code not in names:
            raise ClientCertificateMismatch(
                "the client certificate names another partner than the token", partner_id=principal.partner_code
            )


def certificate_names(auth_context: Mapping[str, Iterable[bytes]]) -> frozenset[str]:
    """The subject common name and DNS names of the verified client certificate; empty without one."""
    values = [*auth_context.get(COMMON_NAME_KEY, ()), *auth_context.get(DNS_NAMES_KEY, ())]
    return frozenset(value.decode("utf-8", "replace") for value in values)


def client_certificate_policy(settings: Settings) -> ClientCertificatePolicy | None:
    """None when no port verifies client certificates: then no call can carry one."""
    if not settings.mtls_listen_address:
        return None
    return ClientCertificatePolicy(settings.client_cert_partner_ids())


def server_credentials(settings: Settings, *, require_client_certificate: bool = False) -> grpc.ServerCredentials:
    """TLS credentials from LOYALTY_TLS_*; the files are read and checked now, so a bad one stops the start."""
    certificate_chain = _read(settings.tls_cert_file, "LOYALTY_TLS_CERT_FILE")
    private_key = _read(settings.tls_key_file, "LOYALTY_TLS_KEY_FILE")
    _check_key_pair(certificate_chain, private_key)
    client_ca = None
    if require_client_certificate:
        client_ca = _read(settings.tls_client_ca_file, "LOYALTY_TLS_CLIENT_CA_FILE")
        _load_certificates(client_ca, "LOYALTY_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials(
        [(private_key, certificate_chain)], root_certificates=client_ca, require_client_auth=require_client_certificate
    )


def _read(path: str, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{variable}: cannot read {path!r}: {error.strerror}") from None


def _load_certificates(pem: bytes, variable: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{variable} holds no PEM certificate") from None


def _check_key_pair(certificate_chain: bytes, private_key_pem: bytes) -> None:
    leaf = _load_certificates(certificate_chain, "LOYALTY_TLS_CERT_FILE")[0]
    try:
        private_key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("LOYALTY_TLS_KEY_FILE holds no unencrypted PEM private key") from None
    public_format = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*public_format) != leaf.public_key().public_bytes(*public_format):
        raise ValueError("LOYALTY_TLS_KEY_FILE is not the key of the first certificate in LOYALTY_TLS_CERT_FILE")


# --- demo certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issuer:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def write_demo_certificates(
    directory: Path, partner_ids: Sequence[str], server_names: Sequence[str] = ()
) -> list[Path]:
    """A demo CA (kept if ``directory`` has one), a server certificate and one client certificate per partner.

    Writes ca.crt/ca.key, server.crt/server.key naming localhost, 127.0.0.1, ::1 and ``server_names``, and
    client-<partner>.crt/.key naming the partner in the common name and a DNS SAN. Keys are 0600.
    """
    for partner_id in partner_ids:
        if not _PARTNER_ID.match(partner_id):
            raise ValueError(f"{partner_id!r} is not a partner id")
    for host in server_names:
        if not _HOST_NAME.match(host):
            raise ValueError(f"{host!r} is not a host name")
    directory.mkdir(parents=True, exist_ok=True)
    issuer, written = _demo_ca(directory)
    hosts: list[x509.GeneralName] = [x509.DNSName(name) for name in ("localhost", *server_names)]
    hosts += [x509.IPAddress(ipaddress.ip_address(address)) for address in ("127.0.0.1", "::1")]
    written += _write_leaf(directory / "server", issuer, "localhost", hosts, ExtendedKeyUsageOID.SERVER_AUTH)
    for partner_id in partner_ids:
        names = [x509.DNSName(partner_id)]
        stem = directory / f"client-{partner_id}"
        written += _write_leaf(stem, issuer, partner_id, names, ExtendedKeyUsageOID.CLIENT_AUTH)
    return written


def _demo_ca(directory: Path) -> tuple[_Issuer, list[Path]]:
    certificate_path, key_path = directory / "ca.crt", directory / "ca.key"
    if certificate_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC key written by dev-certs")
        return _Issuer(x509.load_pem_x509_certificate(certificate_path.read_bytes()), key), []
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Coalition demo CA")])
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    certificate = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private_key(key_path, key)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return _Issuer(certificate, key), [certificate_path, key_path]


def _write_leaf(
    stem: Path, issuer: _Issuer, common_name: str, names: Sequence[x509.GeneralName], usage: x509.ObjectIdentifier
) -> list[Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(subject, issuer.certificate.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(issuer.private_key, hashes.SHA256())
    )
    certificate_path, key_path = stem.parent / f"{stem.name}.crt", stem.parent / f"{stem.name}.key"
    write_private_key(key_path, key)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return [certificate_path, key_path]


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a little clock skew between hosts
        .not_valid_after(now + DEMO_VALIDITY)
    )
