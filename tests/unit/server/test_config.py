"""Settings come from LOYALTY_* variables, once, into a frozen dataclass; bad values stop the start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server.config import DEV_PEPPER, Settings, describe_settings, env_name


def test_defaults_without_any_variable() -> None:
    settings = Settings.from_environment({})

    assert settings == Settings()
    assert settings.workers == 16
    assert settings.token_leeway_seconds == 30
    assert settings.token_max_lifetime_seconds == 300
    assert settings.enable_reflection is False
    assert settings.operator_key_paths() == {}


def test_variables_are_parsed_by_field_type() -> None:
    settings = Settings.from_environment(
        {
            "LOYALTY_DATABASE_URL": "postgresql+psycopg://loyalty@db/loyalty",
            "LOYALTY_LISTEN_ADDRESS": "0.0.0.0:0",
            "LOYALTY_WORKERS": "8",
            "LOYALTY_DB_POOL_SIZE": " 4 ",
            "LOYALTY_MAX_MESSAGE_BYTES": "65536",
            "LOYALTY_REQUEST_TIMEOUT_SECONDS": "2.5",
            "LOYALTY_HOLD_SWEEP_SECONDS": "0",
            "LOYALTY_TOKEN_LEEWAY_SECONDS": "5",
            "LOYALTY_TOKEN_MAX_LIFETIME_SECONDS": "120",
            "LOYALTY_IDENTIFIER_PEPPER": "s3cret",
            "LOYALTY_ENABLE_REFLECTION": "true",
            "LOYALTY_LOG_LEVEL": "DEBUG",
        }
    )

    assert settings.database_url == "postgresql+psycopg://loyalty@db/loyalty"
    assert settings.listen_address == "0.0.0.0:0"
    assert (settings.workers, settings.db_pool_size, settings.max_message_bytes) == (8, 4, 65536)
    assert settings.request_timeout_seconds == 2.5
    assert settings.hold_sweep_seconds == 0.0
    assert isinstance(settings.hold_sweep_seconds, float)
    assert (settings.token_leeway_seconds, settings.token_max_lifetime_seconds) == (5, 120)
    assert settings.identifier_pepper == "s3cret"
    assert settings.enable_reflection is True
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "yes", "on", " on "])
def test_true_spellings(raw: str) -> None:
    assert Settings.from_environment({"LOYALTY_ENABLE_REFLECTION": raw}).enable_reflection is True


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "off", ""])
def test_false_spellings(raw: str) -> None:
    assert Settings.from_environment({"LOYALTY_ENABLE_REFLECTION": raw}).enable_reflection is False


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("LOYALTY_WORKERS", "eight"),
        ("LOYALTY_WORKERS", "8.5"),
        ("LOYALTY_WORKERS", ""),
        ("LOYALTY_REQUEST_TIMEOUT_SECONDS", "soon"),
        ("LOYALTY_TOKEN_LEEWAY_SECONDS", "30s"),
    ],
)
def test_unparseable_numbers_are_refused(name: str, raw: str) -> None:
    with pytest.raises(ValueError):
        Settings.from_environment({name: raw})


def test_other_variables_are_ignored() -> None:
    settings = Settings.from_environment({"WORKERS": "3", "loyalty_workers": "3", "LOYALTY_UNKNOWN": "x"})

    assert settings == Settings()


def test_the_mapping_given_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_WORKERS", "99")

    assert Settings.from_environment({}).workers == 16
    assert Settings.from_environment().workers == 99


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_environment({"LOYALTY_WORKERS": "8"}, workers=2, listen_address="127.0.0.1:0")

    assert (settings.workers, settings.listen_address) == (2, "127.0.0.1:0")


@pytest.mark.parametrize(
    ("leeway", "lifetime"),
    [("31", "300"), ("300", "300"), ("30", "301"), ("30", "3600"), ("31", "301")],
)
def test_token_limits_beyond_the_maximum_are_refused(leeway: str, lifetime: str) -> None:
    environ = {"LOYALTY_TOKEN_LEEWAY_SECONDS": leeway, "LOYALTY_TOKEN_MAX_LIFETIME_SECONDS": lifetime}
    with pytest.raises(ValueError, match="at most"):
        Settings.from_environment(environ)


@pytest.mark.parametrize("overrides", [{"token_leeway_seconds": 31}, {"token_max_lifetime_seconds": 301}], ids=str)
def test_token_limits_are_checked_on_overrides_too(overrides: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at most"):
        Settings.from_environment({}, **overrides)


def test_token_limits_at_the_maximum_are_accepted() -> None:
    settings = Settings.from_environment(
        {"LOYALTY_TOKEN_LEEWAY_SECONDS": "30", "LOYALTY_TOKEN_MAX_LIFETIME_SECONDS": "300"}
    )

    assert (settings.token_leeway_seconds, settings.token_max_lifetime_seconds) == (30, 300)


def test_settings_are_frozen() -> None:
    settings = Settings.from_environment({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 1  # type: ignore[misc]


def test_derived_values() -> None:
    assert Settings(workers=12, db_pool_size=0).effective_pool_size == 12
    assert Settings(workers=12, db_pool_size=5).effective_pool_size == 5
    assert Settings(request_timeout_seconds=2.5).request_timeout_ms == 2500


def test_development_pepper_is_refused_outside_sqlite() -> None:
    with pytest.raises(ValueError, match="LOYALTY_IDENTIFIER_PEPPER") as raised:
        Settings.from_environment({"LOYALTY_DATABASE_URL": "postgresql+psycopg://db/loyalty"})
    assert DEV_PEPPER not in str(raised.value)
    Settings.from_environment({"LOYALTY_DATABASE_URL": "sqlite:///var/dev.db"})
    Settings.from_environment(
        {"LOYALTY_DATABASE_URL": "postgresql+psycopg://db/loyalty", "LOYALTY_IDENTIFIER_PEPPER": "secret"}
    )


# --- operator keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {}),
        (" , ", {}),
        ("operator-main=/etc/coalition/main.pem", {"operator-main": Path("/etc/coalition/main.pem")}),
        (
            "operator-a=keys/a.pem, operator-b=keys/b.pem,",
            {"operator-a": Path("keys/a.pem"), "operator-b": Path("keys/b.pem")},
        ),
        ("operator-eq=keys/a=b.pem", {"operator-eq": Path("keys/a=b.pem")}),
    ],
)
def test_operator_key_paths(raw: str, expected: dict[str, Path]) -> None:
    settings = Settings.from_environment({"LOYALTY_OPERATOR_PUBLIC_KEYS": raw})

    assert settings.operator_key_paths() == expected


@pytest.mark.parametrize(
    "raw",
    [
        "partner-1=/keys/p.pem",
        "main=/keys/main.pem",
        "Operator-main=/keys/main.pem",
        "operator-main",
        "=/keys/main.pem",
        "operator-a=/keys/a.pem,partner-b=/keys/b.pem",
    ],
)
def test_operator_keys_must_be_operator_kid_equals_path(raw: str) -> None:
    # Refused when the settings are read, so a bad entry stops the server at start.
    with pytest.raises(ValueError, match="LOYALTY_OPERATOR_PUBLIC_KEYS"):
        Settings.from_environment({"LOYALTY_OPERATOR_PUBLIC_KEYS": raw})


@pytest.mark.parametrize("raw", ["ture", "enabled", "2"])
def test_an_unrecognised_boolean_is_refused_rather_than_read_as_false(raw: str) -> None:
    with pytest.raises(ValueError, match="not a boolean"):
        Settings.from_environment({"LOYALTY_ENABLE_REFLECTION": raw})


# --- describe_settings ------------------------------------------------------------------------


def test_describe_settings_lists_every_variable_with_its_help_and_default() -> None:
    description = describe_settings()
    lines = description.splitlines()

    assert len(lines) == 1 + len(dataclasses.fields(Settings))
    for setting in dataclasses.fields(Settings):
        name = env_name(setting.name)
        assert name.startswith("LOYALTY_") and name == name.upper()
        (line,) = [line for line in lines if line.split()[0] == name]
        assert setting.metadata["help"] in line
        assert f"(default: {setting.default!r})" in line


def test_every_described_variable_is_read(tmp_path: Path) -> None:
    pem = tmp_path / "file.pem"
    pem.touch()
    # The TLS variables are accepted only together, and their files must exist.
    tls_environ = {
        "LOYALTY_TLS_CERT_FILE": str(pem), "LOYALTY_TLS_KEY_FILE": str(pem), "LOYALTY_TLS_CLIENT_CA_FILE": str(pem),
        "LOYALTY_MTLS_LISTEN_ADDRESS": "127.0.0.1:0",
    }  # fmt: skip
    for setting in dataclasses.fields(Settings):
        default = setting.default
        raw = {bool: "true", int: "7", float: "7.5", str: "value"}[type(default)]
        environ = {env_name(setting.name): raw}
        if setting.name == "operator_public_keys":
            environ = {env_name(setting.name): "operator-x=/k.pem"}
        if setting.name == "database_url":  # a server database needs a real pepper
            environ["LOYALTY_IDENTIFIER_PEPPER"] = "secret"
        if setting.name.startswith(("tls_", "mtls_")):
            environ = tls_environ | {name: value for name, value in environ.items() if not name.endswith("_FILE")}

        settings = Settings.from_environment(environ)

        assert getattr(settings, setting.name) != default, setting.name


def test_an_empty_pepper_is_refused_on_every_database() -> None:
    # A secret file that could not be read must not start a server hashing identifiers with an empty key.
    for url in ("sqlite:///var/c.db", "postgresql+psycopg://db/loyalty"):
        with pytest.raises(ValueError, match="LOYALTY_IDENTIFIER_PEPPER is empty"):
            Settings.from_environment({"LOYALTY_DATABASE_URL": url, "LOYALTY_IDENTIFIER_PEPPER": " "})


def test_server_processes_default_to_one_and_must_be_positive() -> None:
    assert Settings.from_environment({}).server_processes == 1
    assert Settings.from_environment({"LOYALTY_SERVER_PROCESSES": "2"}).server_processes == 2
    with pytest.raises(ValueError, match="LOYALTY_SERVER_PROCESSES"):
        Settings.from_environment({"LOYALTY_SERVER_PROCESSES": "0"})
