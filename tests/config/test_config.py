"""Settings from ``tokenbroker.toml`` and the environment: validation, overrides, secrecy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenbroker.config import (
    ConnectSettings,
    ProviderSection,
    Settings,
    load_settings,
    parse_settings,
)
from tokenbroker.errors import ConfigError
from tokenbroker.secret import Secret

PUBLIC = "https://broker.example.com"
ADMIN_KEY = "admin-key-0123456789abcdef"
CANARY = "canary-SECRET-7f3a9c1e5b2d"


def parse(
    raw: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    base_dir: Path | None = None,
) -> Settings:
    doc: dict[str, Any] = {"public_url": PUBLIC}
    doc.update(raw or {})
    return parse_settings(doc, env or {}, base_dir=base_dir or Path("/tmp/tb-config"))


def provider(name: str = "acme", **table: Any) -> dict[str, Any]:
    return {"providers": {name: {"client_id": "client-1", **table}}}


# --- load_settings: the file itself -------------------------------------------------------


def test_missing_file_points_to_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.toml", {})
    assert "tokenbroker init" in info.value.message
    assert "nope.toml" in info.value.message


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokenbroker.toml"
    path.write_text('public_url = "https://x.example.com\n[[[broken', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, {})


def test_load_settings_reads_file_and_records_source(tmp_path: Path) -> None:
    path = tmp_path / "tokenbroker.toml"
    path.write_text(
        f'public_url = "{PUBLIC}/"\n[server]\nhost = "127.0.0.1"\nport = 9123\n',
        encoding="utf-8",
    )
    settings = load_settings(path, {})
    assert settings.public_url == PUBLIC  # trailing slash removed
    assert settings.port == 9123
    assert settings.host == "127.0.0.1"
    assert settings.source == path
    assert settings.key_file == tmp_path / "tokenbroker.keys"


def test_load_settings_uses_given_environ_not_process_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBROKER_DATABASE_URL", "postgresql://from-process-env/db")
    path = tmp_path / "tokenbroker.toml"
    path.write_text(
        f'public_url = "{PUBLIC}"\ndatabase_url = "postgresql://from-file/db"\n', encoding="utf-8"
    )
    assert load_settings(path, {}).database_url == "postgresql://from-file/db"


# --- unknown keys ------------------------------------------------------------------------


def test_unknown_top_level_key_is_refused_listing_allowed_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"pubilc_url": "typo"})
    message = info.value.message
    assert "pubilc_url" in message
    assert "allowed:" in message
    for key in ("public_url", "database_url", "providers", "connect", "admin", "tenants"):
        assert key in message


def test_unknown_connect_key_is_refused_listing_allowed_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"connect": {"user_verifier": "https://v.example.com"}})
    message = info.value.message
    assert "user_verifier" in message
    assert "[connect]" in message
    for key in (
        "user_verifier_url",
        "require_verification",
        "allowed_return_origins",
        "session_ttl_seconds",
        "state_ttl_seconds",
    ):
        assert key in message


def test_unknown_key_in_tenant_connect_is_refused() -> None:
    raw = {"tenants": {"b": {"connect": {"bogus": 1}}}}
    with pytest.raises(ConfigError, match=r"bogus.*tenants\.b\.connect"):
        parse(raw)


def test_public_url_is_required() -> None:
    with pytest.raises(ConfigError, match="public_url is required"):
        parse_settings({}, {}, base_dir=Path("/tmp"))


# --- provider client secrets --------------------------------------------------------------


def test_inline_client_secret_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse(provider(client_secret=CANARY))
    assert "acme" in info.value.message
    assert "client_secret_env" in info.value.message
    assert CANARY not in info.value.message


def test_client_secret_env_is_read_from_env() -> None:
    settings = parse(provider(client_secret_env="ACME_SECRET"), {"ACME_SECRET": CANARY})
    section = settings.providers["acme"]
    assert section.name == "acme"
    assert section.client_secret is not None
    assert section.client_secret.reveal() == CANARY
    assert "client_secret_env" not in section.section
    assert section.section["client_id"] == "client-1"


def test_client_secret_env_missing_names_the_provider() -> None:
    with pytest.raises(ConfigError) as info:
        parse(provider("acme-corp", client_secret_env="ACME_SECRET"), {})
    assert "'acme-corp'" in info.value.message
    assert "ACME_SECRET" in info.value.message


def test_client_secret_env_empty_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="acme"):
        parse(provider(client_secret_env="ACME_SECRET"), {"ACME_SECRET": ""})


def test_client_secret_file_is_read_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "acme.secret").write_text(f"{CANARY}\n", encoding="utf-8")
    settings = parse(provider(client_secret_file="acme.secret"), base_dir=tmp_path)
    section = settings.providers["acme"]
    assert section.client_secret is not None
    assert section.client_secret.reveal() == CANARY  # surrounding whitespace stripped
    assert "client_secret_file" not in section.section


def test_empty_client_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "acme.secret").write_text("  \n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        parse(provider(client_secret_file="acme.secret"), base_dir=tmp_path)
    assert "empty" in info.value.message
    assert "acme" in info.value.message


def test_missing_client_secret_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read secret file"):
        parse(provider(client_secret_file="absent.secret"), base_dir=tmp_path)


def test_provider_env_override_wins_over_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "file.secret").write_text("from-file", encoding="utf-8")
    env = {
        "TOKENBROKER_PROVIDER_MY_CORP_CLIENT_SECRET": CANARY,
        "MY_CORP_SECRET": "from-named-env",
    }
    raw = {
        "providers": {
            "my-corp": {"client_id": "c", "client_secret_env": "MY_CORP_SECRET"},
            "other": {"client_id": "c", "client_secret_file": "file.secret"},
        }
    }
    env["TOKENBROKER_PROVIDER_OTHER_CLIENT_SECRET"] = "override-other"
    settings = parse(raw, env, base_dir=tmp_path)
    my_corp = settings.providers["my-corp"].client_secret
    other = settings.providers["other"].client_secret
    assert my_corp is not None
    assert my_corp.reveal() == CANARY
    assert other is not None
    assert other.reveal() == "override-other"


def test_provider_override_satisfies_a_missing_named_env_var() -> None:
    env = {"TOKENBROKER_PROVIDER_ACME_CLIENT_SECRET": CANARY}
    settings = parse(provider(client_secret_env="UNSET_VAR"), env)
    secret = settings.providers["acme"].client_secret
    assert secret is not None
    assert secret.reveal() == CANARY


def test_provider_without_secret_settings_has_none() -> None:
    assert parse(provider()).providers["acme"].client_secret is None


def test_provider_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[providers\.acme\] must be a table"):
        parse({"providers": {"acme": "github"}})


# --- database, public url, keys -----------------------------------------------------------


def test_database_url_env_overrides_file() -> None:
    settings = parse(
        {"database_url": "postgresql://file/db"},
        {"TOKENBROKER_DATABASE_URL": "postgresql://env/db"},
    )
    assert settings.database_url == "postgresql://env/db"


def test_public_url_env_overrides_file() -> None:
    settings = parse({}, {"TOKENBROKER_PUBLIC_URL": "https://env.example.org/"})
    assert settings.public_url == "https://env.example.org"


def test_relative_sqlite_path_resolves_against_config_folder(tmp_path: Path) -> None:
    settings = parse({"database_url": "sqlite:///data/tb.db"}, base_dir=tmp_path)
    assert settings.database_url == "sqlite:///" + str((tmp_path / "data" / "tb.db").resolve())


def test_default_database_is_sqlite_next_to_the_config(tmp_path: Path) -> None:
    settings = parse(base_dir=tmp_path)
    assert settings.database_url == "sqlite:///" + str((tmp_path / "tokenbroker.db").resolve())


def test_absolute_sqlite_and_memory_urls_are_kept(tmp_path: Path) -> None:
    assert (
        parse({"database_url": "sqlite:////var/lib/tb.db"}, base_dir=tmp_path).database_url
        == "sqlite:////var/lib/tb.db"
    )
    assert (
        parse({"database_url": "sqlite:///:memory:"}, base_dir=tmp_path).database_url
        == "sqlite:///:memory:"
    )


def test_relative_sqlite_from_env_also_resolves(tmp_path: Path) -> None:
    settings = parse({}, {"TOKENBROKER_DATABASE_URL": "sqlite:///env.db"}, base_dir=tmp_path)
    assert settings.database_url == "sqlite:///" + str((tmp_path / "env.db").resolve())


def test_keys_in_env_means_no_key_file() -> None:
    settings = parse({}, {"TOKENBROKER_KEYS": CANARY})
    assert settings.key_file is None
    assert settings.keys_env_value is not None
    assert settings.keys_env_value.reveal() == CANARY


def test_keys_env_name_is_configurable(tmp_path: Path) -> None:
    settings = parse({"keys_env": "MY_KEYS"}, {"MY_KEYS": CANARY}, base_dir=tmp_path)
    assert settings.key_file is None
    without = parse({"keys_env": "MY_KEYS"}, {"TOKENBROKER_KEYS": CANARY}, base_dir=tmp_path)
    assert without.keys_env_value is None
    assert without.key_file == tmp_path / "tokenbroker.keys"


def test_key_file_relative_to_config_folder(tmp_path: Path) -> None:
    settings = parse({"key_file": "secrets/tb.keys"}, base_dir=tmp_path)
    assert settings.keys_env_value is None
    assert settings.key_file == tmp_path / "secrets" / "tb.keys"


# --- tenants and admin keys ---------------------------------------------------------------


def test_default_admin_key_from_tokenbroker_admin_key() -> None:
    settings = parse({}, {"TOKENBROKER_ADMIN_KEY": ADMIN_KEY})
    assert list(settings.tenants) == ["default"]
    keys = settings.tenant("default").admin_keys
    assert [k.reveal() for k in keys] == [ADMIN_KEY]


def test_no_admin_key_configured_gives_no_keys() -> None:
    assert parse().tenant("default").admin_keys == ()


def test_admin_key_env_setting_replaces_the_default_variable() -> None:
    env = {"TOKENBROKER_ADMIN_KEY": "ignored-default-key-000", "MY_ADMIN": ADMIN_KEY}
    settings = parse({"admin": {"key_env": "MY_ADMIN"}}, env)
    assert [k.reveal() for k in settings.tenant("default").admin_keys] == [ADMIN_KEY]


def test_admin_key_env_accepts_a_list() -> None:
    env = {"K1": ADMIN_KEY, "K2": ADMIN_KEY + "-two"}
    settings = parse({"admin": {"key_env": ["K1", "K2", "K3_UNSET"]}}, env)
    assert [k.reveal() for k in settings.tenant("default").admin_keys] == [
        ADMIN_KEY,
        ADMIN_KEY + "-two",
    ]


def test_admin_key_file(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text(ADMIN_KEY + "\n", encoding="utf-8")
    settings = parse({"admin": {"key_file": "admin.key"}}, base_dir=tmp_path)
    assert [k.reveal() for k in settings.tenant("default").admin_keys] == [ADMIN_KEY]


def test_admin_key_file_empty_is_refused(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        parse({"admin": {"key_file": "admin.key"}}, base_dir=tmp_path)


def test_admin_key_file_and_default_env_combine(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("file-admin-key-0123456789", encoding="utf-8")
    settings = parse(
        {"admin": {"key_file": "admin.key"}},
        {"TOKENBROKER_ADMIN_KEY": ADMIN_KEY},
        base_dir=tmp_path,
    )
    assert {k.reveal() for k in settings.tenant("default").admin_keys} == {
        ADMIN_KEY,
        "file-admin-key-0123456789",
    }


def test_short_admin_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="shorter than 16"):
        parse({}, {"TOKENBROKER_ADMIN_KEY": "x" * 15})
    assert parse({}, {"TOKENBROKER_ADMIN_KEY": "x" * 16}).tenant("default").admin_keys


def test_short_tenant_admin_key_is_refused_naming_the_tenant() -> None:
    with pytest.raises(ConfigError, match=r"'b'.*shorter than 16"):
        parse({"tenants": {"b": {"admin_key_env": "B_KEY"}}}, {"B_KEY": "short"})


@pytest.mark.parametrize("key", ["key", "admin_key"])
def test_inline_admin_key_is_refused(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"admin": {key: CANARY}})
    assert CANARY not in info.value.message


def test_inline_tenant_admin_key_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"tenants": {"b": {"admin_key": CANARY}}})
    assert CANARY not in info.value.message


def test_second_tenant_with_own_key_and_inherited_connect() -> None:
    raw = {
        "connect": {
            "user_verifier_url": "https://verify.example.com/check",
            "allowed_return_origins": ["https://app.example.com/"],
            "session_ttl_seconds": 900,
        },
        "tenants": {
            "b": {
                "admin_key_env": "B_ADMIN_KEY",
                "connect": {"state_ttl_seconds": 120, "require_verification": False},
            }
        },
    }
    env = {"TOKENBROKER_ADMIN_KEY": ADMIN_KEY, "B_ADMIN_KEY": "tenant-b-admin-key-42"}
    settings = parse(raw, env)
    assert set(settings.tenants) == {"default", "b"}
    default, b = settings.tenant("default"), settings.tenant("b")
    assert [k.reveal() for k in default.admin_keys] == [ADMIN_KEY]
    assert [k.reveal() for k in b.admin_keys] == ["tenant-b-admin-key-42"]
    assert b.name == "b"
    # inherited from the top-level [connect]
    assert b.connect.user_verifier_url == "https://verify.example.com/check"
    assert b.connect.allowed_return_origins == ("https://app.example.com",)
    assert b.connect.session_ttl_seconds == 900
    # its own
    assert b.connect.state_ttl_seconds == 120
    assert b.connect.require_verification is False
    # the default tenant keeps the top-level values
    assert default.connect.state_ttl_seconds == 600
    assert default.connect.require_verification is True


def test_tenant_does_not_fall_back_to_tokenbroker_admin_key() -> None:
    settings = parse({"tenants": {"b": {}}}, {"TOKENBROKER_ADMIN_KEY": ADMIN_KEY})
    assert settings.tenant("b").admin_keys == ()
    assert settings.tenant("b").connect == ConnectSettings()


def test_tenant_admin_key_file(tmp_path: Path) -> None:
    (tmp_path / "b.key").write_text("tenant-b-file-key-0001", encoding="utf-8")
    settings = parse({"tenants": {"b": {"admin_key_file": "b.key"}}}, base_dir=tmp_path)
    assert [k.reveal() for k in settings.tenant("b").admin_keys] == ["tenant-b-file-key-0001"]


def test_tenants_default_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[admin\]"):
        parse({"tenants": {"default": {"admin_key_env": "X"}}})


def test_tenant_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[tenants\.b\] must be a table"):
        parse({"tenants": {"b": "nope"}})


def test_unknown_admin_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="allowed:"):
        parse({"admin": {"keyenv": "X"}})


# --- URL safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://broker.example.com", "http://10.0.0.5:8000", "ftp://broker.example.com"],
)
def test_insecure_public_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="public_url"):
        parse({"public_url": url})


def test_insecure_public_url_from_env_is_refused() -> None:
    with pytest.raises(ConfigError, match="public_url"):
        parse({}, {"TOKENBROKER_PUBLIC_URL": "http://broker.example.com"})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000/"])
def test_http_public_url_on_loopback_is_allowed(url: str) -> None:
    assert parse({"public_url": url}).public_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript://example.com/%0aalert(1)",
        "http://verifier.example.com/check",
        "data:text/html,hi",
    ],
)
def test_unsafe_user_verifier_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="user_verifier_url"):
        parse({"connect": {"user_verifier_url": url}})


def test_unsafe_tenant_user_verifier_url_is_refused() -> None:
    raw = {"tenants": {"b": {"connect": {"user_verifier_url": "javascript:alert(1)"}}}}
    with pytest.raises(ConfigError, match=r"tenants\.b\.connect\.user_verifier_url"):
        parse(raw)


# --- secrecy ------------------------------------------------------------------------------


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text(CANARY + "-file-admin", encoding="utf-8")
    (tmp_path / "p.secret").write_text(CANARY + "-file-provider", encoding="utf-8")
    raw = {
        "admin": {"key_file": "admin.key"},
        "tenants": {"b": {"admin_key_env": "B_KEY"}},
        "providers": {
            "from-env": {"client_id": "c1", "client_secret_env": "P_SECRET"},
            "from-file": {"client_id": "c2", "client_secret_file": "p.secret"},
            "overridden": {"client_id": "c3"},
        },
    }
    env = {
        "TOKENBROKER_ADMIN_KEY": CANARY + "-admin",
        "TOKENBROKER_KEYS": CANARY + "-keys",
        "B_KEY": CANARY + "-tenant-b",
        "P_SECRET": CANARY + "-provider-env",
        "TOKENBROKER_PROVIDER_OVERRIDDEN_CLIENT_SECRET": CANARY + "-override",
    }
    settings = parse(raw, env, base_dir=tmp_path)
    # the secrets were really loaded
    assert len(settings.tenant("default").admin_keys) == 2
    assert all(s.client_secret for s in settings.providers.values())
    texts = [repr(settings), str(settings)]
    for tenant in settings.tenants.values():
        texts += [repr(tenant), str(tenant)]
    for section in settings.providers.values():
        assert isinstance(section, ProviderSection)
        texts += [repr(section), str(section), repr(section.section)]
    for text in texts:
        assert CANARY not in text


def test_provider_section_repr_hides_secret() -> None:
    section = ProviderSection("acme", {"client_id": "c"}, Secret(CANARY))
    assert CANARY not in repr(section)
    assert CANARY not in str(section)
    assert "acme" in repr(section)


def test_config_types_are_checked_not_coerced(tmp_path: Path) -> None:
    from tokenbroker.config import parse_settings
    from tokenbroker.errors import ConfigError

    base = {"public_url": "https://broker.example.com"}
    for bad in (
        {"server": {"port": "abc"}},
        {"server": {"prot": 9000}},
        {"connect": {"require_verification": "false"}},
        {"connect": {"session_ttl_seconds": "x"}},
        {"connect": {"allowed_return_origins": "https://app.example.com"}},
        {"connect": {"allowed_return_origins": ["javascript:alert(1)"]}},
        {"connect": {"allowed_return_origins": ["https://app.example.com/path"]}},
        {"providers": {"My_Corp": {"template": "github", "client_id": "x"}}},
    ):
        with pytest.raises(ConfigError):
            parse_settings({**base, **bad}, {}, base_dir=tmp_path)


def test_inline_admin_key_gets_the_specific_message(tmp_path: Path) -> None:
    from tokenbroker.config import parse_settings
    from tokenbroker.errors import ConfigError

    raw = {"public_url": "https://broker.example.com", "admin": {"key": "x" * 20}}
    with pytest.raises(ConfigError, match="never inline"):
        parse_settings(raw, {}, base_dir=tmp_path)


def test_refresh_timings_must_keep_a_request_bounded_and_an_attempt_inside_its_lease() -> None:
    assert parse().refresh.request_wait_ms == 1500
    assert parse({"refresh": {"request_wait_ms": 250}}).refresh.request_wait_ms == 250
    with pytest.raises(ConfigError, match="request_wait_ms must be at least 1"):
        parse({"refresh": {"request_wait_ms": 0}})
    with pytest.raises(ConfigError, match="attempt_timeout_seconds must be at most half"):
        parse({"refresh": {"attempt_timeout_seconds": 20, "lease_seconds": 30}})
