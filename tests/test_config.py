"""The config file as the admin meets it: what loads, and what each mistake is reported as."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from desk.config import (
    ConfigError,
    EmailConnectorSettings,
    Secret,
    TelegramConnectorSettings,
    TwilioConnectorSettings,
    default_db_url,
    find_config_path,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.toml.example"
EXAMPLE_ENV = {"DESK_MAIL_PASSWORD": "x", "TWILIO_AUTH_TOKEN": "x", "TELEGRAM_BOT_TOKEN": "x",
               "DESK_DB_PASSWORD": "x"}

EMAIL = """
[[connector]]
name = "support-mail"
type = "email"
imap_host = "imap.example.com"
username = "support@example.com"
password = "env:DESK_MAIL_PASSWORD"
smtp_host = "smtp.example.com"
from_address = "Support <support@example.com>"
"""

TWILIO = """
[[connector]]
name = "sms"
type = "twilio"
account_sid = "AC123"
auth_token = "env:TWILIO_AUTH_TOKEN"
phone_number = "+15555550100"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=kwargs.pop("env", {}), **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


def test_example_loads_with_its_secrets_and_documents_the_defaults() -> None:
    settings = load_config(EXAMPLE, env=EXAMPLE_ENV, check_secrets=True)

    mail, sms, chat = settings.connectors
    assert isinstance(mail, EmailConnectorSettings)
    assert isinstance(sms, TwilioConnectorSettings)
    assert isinstance(chat, TelegramConnectorSettings)
    assert [c.channel for c in settings.connectors] == ["email", "sms", "telegram"]
    assert (mail.imap_port, mail.smtp_port, mail.poll_interval) == (993, 587, 60)
    assert (mail.smtp_username, mail.smtp_password) == (mail.username, mail.password)
    assert mail.password.reveal(EXAMPLE_ENV) == "x"
    assert (sms.poll_interval, sms.api_base, sms.webhook_address) == (
        30,
        "https://api.twilio.com",
        None,
    )
    assert (chat.poll_interval, chat.allow_groups) == (0, False)
    assert settings.connector("chat") is chat
    assert {"{customer.name}", "{agent.name}"} <= set(
        re.findall(r"{[\w.]+}", settings.canned[0].text)
    )
    assert settings.store.db_url == default_db_url()
    assert settings.source == EXAMPLE


def test_example_commented_keys_are_valid_when_uncommented(tmp_path: Path) -> None:
    # The commented lines are the documentation of optional keys: they must not rot.
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r'(?m)^# ((?:\[\w+\])|(?:"?[\w.]+"? = .*))$', r"\1", text)
    assert "webhook_listen = " in uncommented and "\n[keymap]" in uncommented
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "smtp-password").write_text("s3cret\n")
    settings = load_config(write(tmp_path, uncommented), env=EXAMPLE_ENV, check_secrets=True)

    mail, sms, _ = settings.connectors
    assert isinstance(mail, EmailConnectorSettings)
    assert isinstance(sms, TwilioConnectorSettings)
    assert mail.smtp_password.reveal() == "s3cret"
    assert sms.webhook_address == ("127.0.0.1", 8080)
    assert settings.keymap["ticket.assign"] == "ctrl+a"


def test_no_config_file_gives_defaults_and_no_connectors() -> None:
    settings = load_config(None, env={"USER": "dana"})
    assert settings.connectors == []
    assert settings.desk.agent == "dana"
    assert (settings.desk.default_region, settings.desk.reopen_window_days) == ("US", 7)
    assert settings.store.db_url.startswith("sqlite:///")
    assert settings.store.db_url.endswith("desk.db")
    assert load_config(None, env={}).desk.agent == "agent"


def test_defaults_follow_the_tls_choice(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        EMAIL.replace(
            'smtp_host = "smtp.example.com"',
            'smtp_host = "smtp.example.com"\n'
            'smtp_tls = "ssl"\nimap_tls = "starttls"\nsmtp_username = "out"',
        ),
    )
    (mail,) = load_config(path, env={}).connectors
    assert isinstance(mail, EmailConnectorSettings)
    assert (mail.imap_port, mail.smtp_port, mail.smtp_username) == (143, 465, "out")


def test_every_mistake_is_reported_at_once_with_connector_key_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        EMAIL.replace('username = "support@example.com"', 'imap_port = "abc"\nusername = "x"')
        + '\n[[connector]]\nname = "x"\ntype = "fax"\n'
        + TWILIO.replace('account_sid = "AC123"\n', ""),
    )
    errors = errors_of(path)

    sms_header = line_of(path, 'name = "sms"') - 1
    assert errors == [
        f'{path}:{line_of(path, "imap_port")}: connector "support-mail": '
        'imap_port must be an integer, got "abc"',
        f'{path}:{line_of(path, "fax")}: connector "x": '
        'type must be one of email, twilio, telegram, got "fax"',
        f'{path}:{sms_header}: connector "sms": missing required key account_sid',
    ]


def test_connector_without_name_is_numbered(tmp_path: Path) -> None:
    path = write(tmp_path, TWILIO + '\n[[connector]]\ntype = "telegram"\ntoken = "env:T"\n')
    (error,) = errors_of(path)
    assert (
        error == f"{path}:{line_of(path, 'telegram') - 1}: connector #2: missing required key name"
    )


@pytest.mark.parametrize(
    ("text", "table", "key"),
    [
        ('[desk]\nagent = "a"\nagnet = "b"\n', "[desk]", "agnet"),
        ('[store]\nurll = "sqlite:///x.db"\n', "[store]", "urll"),
        (EMAIL + "imap_prot = 993\n", 'connector "support-mail"', "imap_prot"),
        ('[[canned]]\nname = "hi"\ntext = "Hi"\ntxet = "x"\n', 'canned "hi"', "txet"),
    ],
)
def test_unknown_key_is_an_error_naming_it(tmp_path: Path, text: str, table: str, key: str) -> None:
    path = write(tmp_path, text)
    (error,) = errors_of(path)
    assert error.startswith(f'{path}:{line_of(path, key)}: {table}: unknown key "{key}"')


def test_unknown_top_level_table_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, '[[connectors]]\nname = "x"\n')
    assert errors_of(path) == [f'{path}:1: unknown table "connectors" (did you mean "connector"?)']


def test_single_bracket_connector_table_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, '[connector]\nname = "x"\n')
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:1: [connector] must be written [[connector]]")


def test_duplicate_connector_names(tmp_path: Path) -> None:
    path = write(tmp_path, TWILIO + TWILIO)
    (error,) = errors_of(path)
    first, second = (n for n, line in enumerate(path.read_text().splitlines(), 1) if "sms" in line)
    assert error == (
        f'{path}:{second}: connector #2 ("sms"): name "sms" is already used by connector #1 '
        f"(line {first}); connector names must be unique"
    )


def test_duplicate_canned_names(tmp_path: Path) -> None:
    canned = '[[canned]]\nname = "hi"\ntext = "Hello"\n'
    (error,) = errors_of(write(tmp_path, canned + canned))
    assert 'name "hi" is already used by canned #1' in error


@pytest.mark.parametrize("value", ['"hunter2"', '"ENV:HUNTER2"', "123456"])
def test_inline_secret_is_rejected_without_showing_it(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, TWILIO.replace('"env:TWILIO_AUTH_TOKEN"', value))
    errors = errors_of(path)
    assert len(errors) == 1
    assert errors[0].startswith(
        f'{path}:{line_of(path, "auth_token")}: connector "sms": auth_token must be a reference '
        'like "env:NAME" or "file:/path"'
    )
    assert value.strip('"') not in errors[0]


def test_inline_email_password_is_one_error_not_two(tmp_path: Path) -> None:
    # smtp_password defaults to password: the admin wrote one secret, so one error.
    path = write(tmp_path, EMAIL.replace("env:DESK_MAIL_PASSWORD", "hunter2"))
    errors = errors_of(path)
    assert len(errors) == 1
    assert "password must be a reference" in errors[0] and "hunter2" not in errors[0]


def test_missing_env_secret_is_named_when_checking(tmp_path: Path) -> None:
    path = write(tmp_path, TWILIO)
    assert load_config(path, env={}).connectors  # not checked unless asked
    (error,) = errors_of(path, env={}, check_secrets=True)
    assert error == (
        f'{path}:{line_of(path, "auth_token")}: connector "sms": auth_token '
        "(env:TWILIO_AUTH_TOKEN): environment variable TWILIO_AUTH_TOKEN is not set"
    )


def test_empty_env_secret_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, TWILIO)
    (error,) = errors_of(path, env={"TWILIO_AUTH_TOKEN": ""}, check_secrets=True)
    assert error.endswith("environment variable TWILIO_AUTH_TOKEN is empty")


def test_disabled_connector_secrets_are_not_required(tmp_path: Path) -> None:
    path = write(tmp_path, TWILIO + "enabled = false\n")
    (sms,) = load_config(path, env={}, check_secrets=True).connectors
    assert not sms.enabled


def test_unreadable_file_secret_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, TWILIO.replace("env:TWILIO_AUTH_TOKEN", "file:missing-token"))
    (error,) = errors_of(path, check_secrets=True)
    assert f"cannot read secret file {tmp_path / 'missing-token'}" in error
    assert 'connector "sms": auth_token' in error


def test_file_secret_is_read_relative_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_bytes(b"tok-123\r\n\r\n")
    path = write(tmp_path, TWILIO.replace("env:TWILIO_AUTH_TOKEN", "file:token"))
    monkeypatch.chdir(tmp_path.parent)
    (sms,) = load_config(path, env={}, check_secrets=True).connectors
    assert isinstance(sms, TwilioConnectorSettings)
    # One trailing newline belongs to the file, not the secret.
    assert sms.auth_token.reveal() == "tok-123\r\n"


def test_secret_never_shows_its_value() -> None:
    secret = Secret("env:API_TOKEN")
    assert secret.reveal({"API_TOKEN": "very-secret"}) == "very-secret"
    assert repr(secret) == str(secret) == "Secret(env:API_TOKEN: ***)"
    assert "very-secret" not in f"{secret} {secret!r}"
    with pytest.raises(ConfigError, match="environment variable API_TOKEN is not set"):
        secret.reveal({})
    with pytest.raises(ValueError, match="not an inline secret"):
        Secret("very-secret")


def test_settings_printout_never_contains_secret_values(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, EMAIL), env={"DESK_MAIL_PASSWORD": "pw-value"})
    dumped = f"{settings!r} {settings.model_dump()} {settings.model_dump_json()}"
    assert "pw-value" not in dumped
    assert "env:DESK_MAIL_PASSWORD" in dumped


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('imap_tls = "tls"', 'imap_tls must be one of ssl, starttls, none, got "tls"'),
        ('mark_seen = "yes"', 'mark_seen must be true or false, got "yes"'),
        ("poll_interval = 0", "poll_interval must be greater than 0, got 0"),
        ("folders = []", "folders must not be empty"),
        ("smtp_port = 70000", "smtp_port must be at most 65535, got 70000"),
        ('from_address = "support"', "from_address must be an email address"),
    ],
)
def test_email_value_errors_say_what_was_expected(tmp_path: Path, line: str, message: str) -> None:
    key = line.split(" =")[0]
    text = re.sub(rf"(?m)^{key} = .*\n", "", EMAIL) + line + "\n"
    path = write(tmp_path, text)
    (error,) = errors_of(path)
    assert error.startswith(f'{path}:{line_of(path, line)}: connector "support-mail": {message}')


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('phone_number = "0612345678"', "phone_number must be a phone number in E.164 form"),
        ('webhook_listen = "127.0.0.1:8080"', "webhook_url is required when webhook_listen"),
        ('webhook_listen = "localhost"', 'webhook_listen must be "host:port"'),
        ('api_base = "api.twilio.com"', "api_base must be an http:// or https:// URL"),
    ],
)
def test_twilio_value_errors(tmp_path: Path, extra: str, message: str) -> None:
    key = extra.split(" =")[0]
    path = write(tmp_path, re.sub(rf"(?m)^{key} = .*\n", "", TWILIO) + extra + "\n")
    (error,) = errors_of(path)
    assert error.startswith(f'{path}:{line_of(path, extra)}: connector "sms": {message}')


def test_desk_section_is_validated(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[desk]\ndefault_region = "XX"\nreopen_window_days = -1\nagents = ["ok", 2]\n'
    )
    assert errors_of(path) == [
        f'{path}:2: [desk]: default_region must be a two-letter country code such as "US" or '
        '"FR", got "XX"',
        f"{path}:3: [desk]: reopen_window_days must be at least 0, got -1",
        f"{path}:4: [desk]: entry 2 of agents must be a string, got 2",
    ]
    ok = load_config(write(tmp_path, '[desk]\ndefault_region = "fr"\n'), env={})
    assert ok.desk.default_region == "FR"


def test_keymap_values_must_be_strings(tmp_path: Path) -> None:
    path = write(tmp_path, '[keymap]\n"ticket.reply" = "r"\n"app.quit" = 3\n')
    assert errors_of(path) == [
        f'{path}:3: [keymap]: "app.quit" must be a key such as "ctrl+r", got 3'
    ]


def test_keymap_names_an_unknown_action_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, '[keymap]\n"ticket.replly" = "r"\n')
    assert errors_of(path) == [
        f'{path}:2: [keymap]: "ticket.replly" is not an action of the app (did you mean '
        '"ticket.reply"?); `?` in the app lists them'
    ]


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[desk]\nagent = "a"\nreopen_window_days = \n')
    (error,) = errors_of(path)
    assert error.startswith(f"{path}: line 3, column 22: ")


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path / "absent.toml")
    assert error.startswith(f"{tmp_path / 'absent.toml'}: cannot read the config file")


def test_find_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert find_config_path(env={}) is None

    platform = tmp_path / "xdg" / "desk" / "config.toml"
    platform.parent.mkdir(parents=True)
    platform.write_text("")
    assert find_config_path(env={}) == platform

    write(tmp_path, "")
    assert find_config_path(env={}) == Path("config.toml")

    from_env = write(tmp_path, "", "env.toml")
    assert find_config_path(env={"DESK_CONFIG": str(from_env)}) == from_env

    from_cli = write(tmp_path, "", "cli.toml")
    assert find_config_path(from_cli, env={"DESK_CONFIG": str(from_env)}) == from_cli


def test_named_config_that_does_not_exist_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ./config.toml exists, but a path the admin named must not be silently swapped for it.
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "")
    with pytest.raises(ConfigError, match="given with --config"):
        find_config_path(tmp_path / "typo.toml", env={})
    with pytest.raises(ConfigError, match=r"named by \$DESK_CONFIG"):
        find_config_path(env={"DESK_CONFIG": str(tmp_path / "typo.toml")})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('url = "postgresql+psycopg://desk:hunter2@db/desk"',
         'url must not contain a password: set [store] password = "env:NAME"'),
        ('url = "postgresql://desk@db/desk"',
         'url must use the psycopg driver: "postgresql+psycopg://…"'),
        ('search_config = "english; drop table message"',
         "search_config must name a PostgreSQL text search configuration"),
        ('password = "hunter2"', "password must be a reference"),
    ],
)
def test_bad_store_keys_are_named(tmp_path: Path, value: str, expected: str) -> None:
    path = write(tmp_path, f"[store]\n{value}\n")
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:2: [store]: {expected}"), error
    assert "hunter2" not in error


def test_the_store_password_is_a_reference_checked_like_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "postgresql+psycopg://desk@db/desk"\n'
                           'password = "env:DESK_DB_PASSWORD"\n')
    (error,) = errors_of(path, check_secrets=True)
    assert error.startswith(f"{path}:3: [store]: password (env:DESK_DB_PASSWORD): ")
    settings = load_config(path, env={"DESK_DB_PASSWORD": "s3cret"}, check_secrets=True)
    assert settings.store.password.reveal({"DESK_DB_PASSWORD": "s3cret"}) == "s3cret"
    assert "s3cret" not in repr(settings.store)


OAUTH = EMAIL.replace('password = "env:DESK_MAIL_PASSWORD"\n', "") + """auth = "oauth2"
oauth_provider = "microsoft"
oauth_client_id = "11111111-2222-3333-4444-555555555555"
oauth_tenant = "contoso.onmicrosoft.com"
"""


def test_an_oauth_mailbox_needs_no_password_and_gets_the_providers_endpoints(
    tmp_path: Path
) -> None:
    from desk.oauth import endpoints

    (mail,) = load_config(write(tmp_path, OAUTH), env={}, check_secrets=True).connectors
    assert isinstance(mail, EmailConnectorSettings)
    assert (mail.auth, mail.password, mail.smtp_password) == ("oauth2", None, None)
    where = endpoints(mail)
    assert where.device == ("https://login.microsoftonline.com/contoso.onmicrosoft.com"
                            "/oauth2/v2.0/devicecode")
    assert where.token.endswith("/contoso.onmicrosoft.com/oauth2/v2.0/token")
    assert "offline_access" in where.scopes
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in where.scopes
    google = OAUTH.replace('"microsoft"', '"google"').replace(
        'oauth_tenant = "contoso.onmicrosoft.com"\n', 'oauth_client_secret = "env:G_SECRET"\n')
    (gmail,) = load_config(write(tmp_path, google), env={}).connectors
    assert endpoints(gmail).device is None  # Google's device grant excludes the Gmail scope
    assert endpoints(gmail).scopes == ("https://mail.google.com/", "openid", "email")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: t.replace('oauth_client_id = "11111111-2222-3333-4444-555555555555"\n', ""),
     'config.toml:9: connector "support-mail": oauth_client_id is required with auth = '
     '"oauth2": the application (client) id of your app registration'),
    (lambda t: t + 'password = "env:DESK_MAIL_PASSWORD"\n',
     'config.toml:13: connector "support-mail": password does not apply with auth = "oauth2":'
     " the mailbox signs in with OAuth tokens; remove it"),
    (lambda t: EMAIL + 'oauth_client_id = "abc"\n',
     'config.toml:10: connector "support-mail": oauth_client_id applies only with auth = '
     '"oauth2"; a mailbox signing in with a password has no OAuth keys'),
    (lambda t: t.replace('"microsoft"', '"custom"').replace(
        'oauth_tenant = "contoso.onmicrosoft.com"\n', ""),
     'config.toml:10: connector "support-mail": oauth_token_endpoint is required with '
     'oauth_provider = "custom"'),
    (lambda t: t + 'oauth_token_endpoint = "https://login.example.com/token"\n',
     'config.toml:13: connector "support-mail": oauth_token_endpoint applies only with '
     'oauth_provider = "custom" (microsoft\'s are built in)'),
    (lambda t: t.replace('"microsoft"', '"google"').replace(
        'oauth_tenant = "contoso.onmicrosoft.com"\n', ""),
     'config.toml:10: connector "support-mail": oauth_client_secret is required with '
     'oauth_provider = "google": Google gives a desktop app\'s client a secret and asks for it'),
    (lambda t: t.replace('"microsoft"', '"custom"').replace(
        'oauth_tenant = "contoso.onmicrosoft.com"\n',
        'oauth_token_endpoint = "http://login.example.com/token"\n'
        'oauth_device_endpoint = "https://login.example.com/device"\n'),
     'config.toml:12: connector "support-mail": oauth_token_endpoint must be an https:// URL'
     ' (tokens travel there), got "http://login.example.com/token"'),
])
def test_oauth_and_password_keys_do_not_mix(tmp_path: Path, change, expected: str) -> None:
    with pytest.raises(ConfigError) as failure:
        load_config(write(tmp_path, change(OAUTH)), env={})
    assert expected in [str(e).replace(f"{tmp_path}/", "") for e in failure.value.errors]
