"""Partner signing keys: only EC P-256 and Ed25519 public keys are registered."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from partners.keys import InvalidPublicKey, KeyTypeNotAllowed, PrivateKeyNotAllowed, load_public_key


def public_pem(private_key: PrivateKeyTypes) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(private_key: PrivateKeyTypes, private_format: serialization.PrivateFormat) -> str:
    return private_key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption()).decode()


def test_ec_p256_public_key_is_es256() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())

    algorithm, public_key = load_public_key(public_pem(private_key))

    assert algorithm == "ES256"
    assert public_key == private_key.public_key()


def test_ed25519_public_key_is_eddsa() -> None:
    private_key = Ed25519PrivateKey.generate()

    algorithm, public_key = load_public_key(public_pem(private_key))

    assert algorithm == "EdDSA"
    assert public_key == private_key.public_key()


@pytest.mark.parametrize(
    "private_key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(public_exponent=65537, key_size=2048)],
    ids=["p384", "rsa"],
)
def test_other_key_types_are_refused(private_key: PrivateKeyTypes) -> None:
    with pytest.raises(KeyTypeNotAllowed) as caught:
        load_public_key(public_pem(private_key))
    assert caught.value.reason == "KEY_TYPE_NOT_ALLOWED"


@pytest.mark.parametrize(
    "private_format",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "sec1"],
)
def test_private_key_is_refused_without_echoing_it(private_format: serialization.PrivateFormat) -> None:
    pem = private_pem(ec.generate_private_key(ec.SECP256R1()), private_format)

    with pytest.raises(PrivateKeyNotAllowed) as caught:
        load_public_key(pem)

    assert caught.value.reason == "PRIVATE_KEY_NOT_ALLOWED"
    body_line = pem.splitlines()[1]
    assert body_line not in str(caught.value)
    assert all(body_line not in value for value in caught.value.metadata.values())


@pytest.mark.parametrize(
    "text",
    [
        "not a key",
        "super-secret-hmac-shared-secret",
        "",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nMFkw\u00e9\n-----END PUBLIC KEY-----\n",
    ],
    ids=["words", "hmac-secret", "empty", "truncated", "non-ascii"],
)
def test_text_that_is_not_a_public_key_is_refused(text: str) -> None:
    with pytest.raises(InvalidPublicKey) as caught:
        load_public_key(text)
    assert caught.value.reason == "INVALID_PUBLIC_KEY"
    assert text not in str(caught.value) or text == ""
