"""TOML configuration -> validated settings. The only module that reads config.

The config file is the admin's whole interface, so every problem in it is collected and reported
at once, each as a sentence that names the file, the line, the table and the key: fixing a config
one error per run, or decoding a validation library's jargon, is what this module exists to spare.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from email.utils import parseaddr
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import phonenumbers
import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from connectors.base import Channel
from desk import redact
from desk.keys import ALL_IDS
from desk.sla import Targets, parse_duration

APP_NAME = "desk"
CONFIG_FILENAME = "config.toml"


class ConfigError(Exception):
    """The configuration cannot be used. `errors` lists every problem found, one sentence each."""

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def default_db_url() -> str:
    """The SQLite database used when `[store] url` is not set."""
    return f"sqlite:///{Path(platformdirs.user_data_dir(APP_NAME)) / 'desk.db'}"


def find_config_path(
    cli_path: str | Path | None = None, env: Mapping[str, str] = os.environ
) -> Path | None:
    """The config file to use: `--config` > $DESK_CONFIG > ./config.toml > the platform config dir.

    A path the user named explicitly must exist (a typo there must not silently fall back to
    another file); the implicit locations are simply skipped. None when there is no config at all.
    """
    if cli_path is not None:
        path = Path(cli_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file (given with --config)")
        return path
    if named := env.get("DESK_CONFIG"):
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file (named by $DESK_CONFIG)")
        return path
    for path in (
        Path(CONFIG_FILENAME),
        Path(platformdirs.user_config_dir(APP_NAME)) / CONFIG_FILENAME,
    ):
        if path.is_file():
            return path
    return None


# --- secrets -------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE_HINT = 'must be a reference like "env:NAME" or "file:/path"'


def _kind_of(value: object) -> str:
    """What sort of TOML value this is, without its content."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__


def _reference_problem(value: object) -> str | None:
    """Why `value` is not a usable secret reference, phrased to follow a key name; None if it is.

    The phrasing never includes the value: if it is not a reference it may well be the secret.
    """
    if not isinstance(value, str):
        return f"{_REFERENCE_HINT}, got {_kind_of(value)}"
    if value.startswith("env:"):
        if not _ENV_NAME.fullmatch(value[4:]):
            return 'must name an environment variable after "env:" (letters, digits and _)'
        return None
    if value.startswith("file:"):
        if not value[5:].strip():
            return 'must give a path after "file:"'
        return None
    return f"{_REFERENCE_HINT}, not an inline secret"


class Secret:
    """A reference to a secret kept outside the config: `env:NAME` or `file:/path`.

    Only the reference is held; the value is read on demand by `reveal()`, so printing or logging
    settings can never leak it. A relative `file:` path is relative to the config file's directory
    (the daemon's working directory is rarely the admin's).
    """

    __slots__ = ("_base_dir", "_reference")

    def __init__(self, reference: str, *, base_dir: Path | None = None) -> None:
        if problem := _reference_problem(reference):
            raise ValueError(f"a secret {problem}")
        self._reference = reference
        self._base_dir = base_dir

    @property
    def reference(self) -> str:
        """The reference as written in the config, e.g. `env:TWILIO_AUTH_TOKEN`."""
        return self._reference

    @property
    def path(self) -> Path | None:
        """The file a `file:` reference reads; None for `env:`."""
        if not self._reference.startswith("file:"):
            return None
        path = Path(self._reference[5:]).expanduser()
        if self._base_dir is not None and not path.is_absolute():
            path = self._base_dir / path
        return path

    def reveal(self, env: Mapping[str, str] = os.environ) -> str:
        """Read the secret. Raises ConfigError when it is unset, empty or unreadable: an empty
        password or token would only fail later, at the provider, with a less helpful message."""
        path = self.path
        if path is None:
            name = self._reference[4:]
            value = env.get(name)
            if value is None:
                raise ConfigError(f"environment variable {name} is not set")
            if not value:
                raise ConfigError(f"environment variable {name} is empty")
            return redact.remember(value)
        try:
            # Bytes, not text mode: newline translation would alter a secret containing \r\n.
            value = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret file {path} is not UTF-8 text") from None
        # Editors add a final newline that is not part of the secret; only one, so a secret
        # that really ends in whitespace survives.
        value = value.removesuffix("\r\n") if value.endswith("\r\n") else value.removesuffix("\n")
        if not value:
            raise ConfigError(f"secret file {path} is empty")
        return redact.remember(value)

    def __repr__(self) -> str:
        # The reference is not secret, but a repr is where values end up by accident (a
        # traceback, a settings dump): it says where the value comes from, never the value.
        return f"Secret({self._reference}: {redact.MASK})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self._reference, self._base_dir) == (other._reference, other._base_dir)

    def __hash__(self) -> int:
        return hash((self._reference, self._base_dir))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Serialising gives the reference back, so dumping settings is safe too.
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(attrgetter("reference")),
        )

    @classmethod
    def _validate(cls, value: Any, info: core_schema.ValidationInfo) -> Secret:
        if isinstance(value, Secret):
            return value
        if problem := _reference_problem(value):
            raise _invalid(problem)
        return cls(value, base_dir=(info.context or {}).get("base_dir"))


# --- field checks ----------------------------------------------------------------------------


def _invalid(reason: str, *, at: str | None = None) -> PydanticCustomError:
    """An error whose `reason` (phrased to follow the key name) is shown to the admin as is;
    `at` names the key whose line to show when the key at fault is absent from the file."""
    return PydanticCustomError("desk", "{reason}", {"reason": reason, "at": at})


def _describe(value: object) -> str:
    """A value as the admin wrote it in TOML, short enough for one error line."""
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _kind_of(value)


def _check_region(value: str) -> str:
    region = value.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise _invalid(
            f'must be a two-letter country code such as "US" or "FR", got {_describe(value)}'
        )
    return region


def _check_db_url(value: str) -> str:
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise _invalid(
            'must be a database URL such as "sqlite:///path/to/desk.db" or '
            f'"postgresql+psycopg://desk@db.example.com/desk", got {_describe(value)}'
        )
    if re.match(r"[^:/]+://[^/@]*:[^/@]*@", value):
        # The URL is printed by desk status and kept in logs; the password is not.
        raise _invalid('must not contain a password: set [store] password = "env:NAME" (or '
                       '"file:/path"), or use the libpq environment (PGPASSWORD, ~/.pgpass)')
    if value.startswith("postgresql") and not value.startswith("postgresql+psycopg://"):
        raise _invalid(f'must use the psycopg driver: "postgresql+psycopg://…", got '
                       f"{_describe(value)}")
    return value


def _check_search_config(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", value):
        raise _invalid('must name a PostgreSQL text search configuration such as "simple" or '
                       f'"english", got {_describe(value)}')
    return value


def _check_http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise _invalid(f"must be an http:// or https:// URL, got {_describe(value)}")
    return value


def _check_oauth_endpoint(value: str) -> str:
    """An OAuth endpoint carries the client secret and the tokens: https, except on this
    machine (a local provider, as the tests run)."""
    _check_http_url(value)
    host = urlsplit(value).hostname or ""
    if value.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
        raise _invalid(f"must be an https:// URL (tokens travel there), got {_describe(value)}")
    return value


def _check_api_base(value: str) -> str:
    # Connectors append API paths; a trailing slash would double it.
    return _check_http_url(value).rstrip("/")


def _check_email_address(value: str) -> str:
    if "@" not in parseaddr(value)[1]:
        raise _invalid(
            'must be an email address such as "Support <support@example.com>", '
            f"got {_describe(value)}"
        )
    return value


def _check_account_sid(value: str) -> str:
    if not value.startswith("AC"):
        raise _invalid(f'must be a Twilio Account SID starting with "AC", got {_describe(value)}')
    return value


def _check_e164(value: str) -> str:
    if not re.fullmatch(r"\+[1-9]\d{1,14}", value):
        raise _invalid(
            f'must be a phone number in E.164 form such as "+15551234567", got {_describe(value)}'
        )
    return value


_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):(\d{1,5})")


def _check_listen(value: str) -> str:
    match = _LISTEN.fullmatch(value)
    if not match or not 1 <= int(match[2]) <= 65535:
        raise _invalid(f'must be "host:port" such as "127.0.0.1:8080", got {_describe(value)}')
    return value


NonEmptyStr = Annotated[str, Field(min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
OAuthEndpoint = Annotated[str, AfterValidator(_check_oauth_endpoint)]
ApiBase = Annotated[str, AfterValidator(_check_api_base)]
Tls = Literal["ssl", "starttls", "none"]


def _default_agent(env: Mapping[str, str]) -> str:
    return env.get("USER") or env.get("USERNAME") or "agent"


# --- settings ----------------------------------------------------------------------------------


class _Model(BaseModel):
    # strict: a TOML file has real types, so "993" for a port is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StoreSettings(_Model):
    url: Annotated[str, AfterValidator(_check_db_url)] | None = None
    password: Secret | None = None  # PostgreSQL; else libpq's PGPASSWORD or ~/.pgpass
    search_config: Annotated[str, AfterValidator(_check_search_config)] = "simple"
    lease_seconds: Annotated[float, Field(ge=1, le=3600, allow_inf_nan=False)] = 30.0
    # What one message may take (text, HTML, raw source, attachments); a larger one is
    # stored truncated and flagged (desk.message_size). 64 KB at least: a message's text.
    max_message_bytes: Annotated[int, Field(ge=65536)] = 50 * 1024 * 1024

    @property
    def db_url(self) -> str:
        return self.url or default_db_url()


class DeskSettings(_Model):
    agent: NonEmptyStr = Field(default_factory=lambda: _default_agent(os.environ))
    agents: list[NonEmptyStr] = []
    default_region: Annotated[str, AfterValidator(_check_region)] = "US"
    reopen_window_days: Annotated[int, Field(ge=0)] = 7
    bell: bool = False
    # Where the app saves attachments (default: "desk" in the downloads folder); `~` is the
    # agent's home.
    attachments_dir: NonEmptyStr | None = None


def _duration(value: object) -> int:
    """A target such as "4h" or "1d 12h", kept as seconds."""
    if not isinstance(value, str):
        raise _invalid(f'must be a duration such as "30m", "4h" or "1d 12h", got '
                       f"{_describe(value)}")
    try:
        return int(parse_duration(value).total_seconds())
    except ValueError:
        if re.fullmatch(r"[\s0wdhms]+", value) and "0" in value:
            raise _invalid(f"must be longer than zero, got {_describe(value)}") from None
        raise _invalid(f'must be a duration such as "30m", "4h" or "1d 12h", got '
                       f"{_describe(value)}") from None


Duration = Annotated[int, BeforeValidator(_duration)]


class PriorityTargets(_Model):
    """One target per priority; a priority left out has none."""

    urgent: Duration | None = None
    high: Duration | None = None
    normal: Duration | None = None
    low: Duration | None = None

    def seconds(self) -> dict[str, int]:
        return {p: s for p in type(self).model_fields if (s := getattr(self, p)) is not None}


class SlaSettings(_Model):
    first_response: PriorityTargets = PriorityTargets()
    resolution: PriorityTargets = PriorityTargets()

    def targets(self) -> Targets:
        return Targets(self.first_response.seconds(), self.resolution.seconds())


class CannedReply(_Model):
    name: NonEmptyStr
    text: NonEmptyStr


class ConnectorSettings(_Model):
    """Keys every connector has. Subclasses narrow `type` and set `poll_interval`'s default."""

    # Keys whose default is computed from another key: an error there would only repeat the
    # error at its source, so it is not reported when the admin did not write the key.
    derived_keys: ClassVar[frozenset[str]] = frozenset()

    name: NonEmptyStr
    type: str
    enabled: bool = True
    poll_interval: float

    @property
    def channel(self) -> Channel:
        raise NotImplementedError


class EmailConnectorSettings(ConnectorSettings):
    derived_keys: ClassVar[frozenset[str]] = frozenset(
        {"imap_port", "smtp_port", "smtp_username", "smtp_password"}
    )

    type: Literal["email"]
    poll_interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    imap_host: NonEmptyStr
    imap_port: Port
    imap_tls: Tls = "ssl"
    username: NonEmptyStr
    # How the mailbox signs in: its password, or OAuth 2.0 tokens from `desk auth login`.
    auth: Literal["password", "oauth2"] = "password"
    password: Secret | None = Field(default=None, validate_default=True)
    folders: Annotated[list[NonEmptyStr], Field(min_length=1)] = ["INBOX"]
    mark_seen: bool = False
    smtp_host: NonEmptyStr
    smtp_port: Port
    smtp_tls: Tls = "starttls"
    smtp_username: NonEmptyStr
    smtp_password: Secret | None = Field(default=None, validate_default=True)
    from_address: Annotated[str, AfterValidator(_check_email_address)]
    sent_folder: NonEmptyStr | None = None
    idle: bool = True
    batch_size: Annotated[int, Field(gt=0)] = 500
    # OAuth 2.0 (auth = "oauth2"): the app registration and, for "custom", its endpoints.
    oauth_provider: Literal["microsoft", "google", "custom"] | None = Field(
        default=None, validate_default=True)
    oauth_client_id: NonEmptyStr | None = Field(default=None, validate_default=True)
    oauth_client_secret: Secret | None = Field(default=None, validate_default=True)
    oauth_tenant: NonEmptyStr | None = Field(default=None, validate_default=True)
    oauth_scopes: list[NonEmptyStr] | None = Field(default=None, validate_default=True)
    oauth_device_endpoint: OAuthEndpoint | None = Field(default=None, validate_default=True)
    oauth_authorize_endpoint: OAuthEndpoint | None = Field(default=None, validate_default=True)
    oauth_token_endpoint: OAuthEndpoint | None = Field(default=None, validate_default=True)

    @field_validator("password", "smtp_password")
    @classmethod
    def _password_with_password_auth(cls, value: Secret | None, info: ValidationInfo
                                     ) -> Secret | None:
        auth = info.data.get("auth")
        if auth == "password" and value is None:
            if info.field_name == "smtp_password":
                return value  # derived from password: its absence is reported there
            raise _invalid('is required (or set auth = "oauth2" and sign in with '
                           "desk auth login)", at="auth" if "auth" in info.data else None)
        if auth == "oauth2" and value is not None:
            raise _invalid('does not apply with auth = "oauth2": the mailbox signs in with '
                           "OAuth tokens; remove it")
        return value

    @field_validator("oauth_provider", "oauth_client_id", "oauth_client_secret",
                     "oauth_tenant", "oauth_scopes", "oauth_device_endpoint",
                     "oauth_authorize_endpoint", "oauth_token_endpoint")
    @classmethod
    def _oauth_keys_with_oauth_auth(cls, value: Any, info: ValidationInfo) -> Any:
        auth, provider = info.data.get("auth"), info.data.get("oauth_provider")
        key = info.field_name
        if auth != "oauth2":
            if value is not None and auth == "password":
                raise _invalid('applies only with auth = "oauth2"; a mailbox signing in with '
                               "a password has no OAuth keys")
            return value
        if key == "oauth_provider" and value is None:
            raise _invalid('is required with auth = "oauth2": microsoft, google or custom',
                           at="auth")
        if key == "oauth_client_id" and value is None:
            raise _invalid('is required with auth = "oauth2": the application (client) id of '
                           "your app registration", at="auth")
        if key == "oauth_client_secret" and value is None and provider == "google":
            raise _invalid('is required with oauth_provider = "google": Google gives a '
                           "desktop app's client a secret and asks for it", at="oauth_provider")
        if key == "oauth_tenant" and value is not None and provider not in (None, "microsoft"):
            raise _invalid('applies only with oauth_provider = "microsoft"')
        if key.endswith("_endpoint") and provider in ("microsoft", "google") and value:
            raise _invalid(f'applies only with oauth_provider = "custom" ({provider}\'s are'
                           " built in)")
        if key == "oauth_token_endpoint" and provider == "custom" and value is None:
            raise _invalid('is required with oauth_provider = "custom"', at="oauth_provider")
        if (key == "oauth_authorize_endpoint" and provider == "custom" and value is None
                and info.data.get("oauth_device_endpoint") is None):
            raise _invalid('or oauth_device_endpoint is required with oauth_provider = "custom":'
                           " how the admin signs in", at="oauth_provider")
        return value

    @model_validator(mode="before")
    @classmethod
    def _derive_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for port_key, tls_key, tls_default, ports in (
            ("imap_port", "imap_tls", "ssl", {"ssl": 993, "starttls": 143, "none": 143}),
            ("smtp_port", "smtp_tls", "starttls", {"ssl": 465, "starttls": 587, "none": 25}),
        ):
            tls = data.get(tls_key, tls_default)
            if isinstance(tls, str) and tls in ports:
                data.setdefault(port_key, ports[tls])
        if "username" in data:
            data.setdefault("smtp_username", data["username"])
        if "password" in data:
            data.setdefault("smtp_password", data["password"])
        return data

    @property
    def channel(self) -> Channel:
        return "email"


class TwilioConnectorSettings(ConnectorSettings):
    type: Literal["twilio"]
    poll_interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    account_sid: Annotated[str, AfterValidator(_check_account_sid)]
    auth_token: Secret
    phone_number: Annotated[str, AfterValidator(_check_e164)]
    api_base: ApiBase = "https://api.twilio.com"
    webhook_listen: Annotated[str, AfterValidator(_check_listen)] | None = None
    # Kept exactly as written: Twilio signs webhook requests with this URL.
    webhook_url: HttpUrl | None = Field(default=None, validate_default=True)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_with_listen(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("webhook_listen") is not None:
            raise _invalid(
                "is required when webhook_listen is set: the public URL Twilio posts to, "
                "used to check the request signatures",
                at="webhook_listen",
            )
        return value

    @property
    def channel(self) -> Channel:
        return "sms"

    @property
    def webhook_address(self) -> tuple[str, int] | None:
        """`webhook_listen` as (host, port) ready for a server to bind; brackets of an IPv6
        host removed."""
        if self.webhook_listen is None:
            return None
        host, _, port = self.webhook_listen.rpartition(":")
        return host.strip("[]"), int(port)


class TelegramConnectorSettings(ConnectorSettings):
    type: Literal["telegram"]
    # 0 means long polling: getUpdates waits on the server, so no pause is needed between calls.
    poll_interval: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    token: Secret
    api_base: ApiBase = "https://api.telegram.org"
    allow_groups: bool = False

    @property
    def channel(self) -> Channel:
        return "telegram"


AnyConnectorSettings = EmailConnectorSettings | TwilioConnectorSettings | TelegramConnectorSettings
CONNECTOR_TYPES: dict[str, type[AnyConnectorSettings]] = {
    "email": EmailConnectorSettings,
    "twilio": TwilioConnectorSettings,
    "telegram": TelegramConnectorSettings,
}


class Settings(_Model):
    store: StoreSettings = StoreSettings()
    desk: DeskSettings = Field(default_factory=DeskSettings)
    connectors: list[AnyConnectorSettings] = []
    canned: list[CannedReply] = []
    keymap: dict[str, str] = {}
    sla: SlaSettings = SlaSettings()
    source: Path | None = None

    def connector(self, name: str) -> AnyConnectorSettings:
        for connector in self.connectors:
            if connector.name == name:
                return connector
        raise KeyError(name)


# --- locating keys in the source -------------------------------------------------------------

# A table as addressed in the source: ("desk",), ("connector", 2), () for the top level.
TableId = tuple[str | int, ...]

_KEY_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_LINE = re.compile(rf"\s*(\[\[|\[)\s*({_DOTTED_KEY})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"\s*({_DOTTED_KEY})\s*=(.*)")


def _key_parts(dotted: str) -> list[str]:
    return [part[1:-1] if part[0] in "\"'" else part for part in re.findall(_KEY_PART, dotted)]


class _SourceMap:
    """Where tables and keys are in the TOML text. tomllib keeps no positions, so this is a
    best-effort scan; a key it cannot place falls back to its table's header line."""

    def __init__(self, text: str) -> None:
        self._headers: dict[TableId, int] = {}
        self._keys: dict[tuple[TableId, str], int] = {}
        array_lengths: dict[str, int] = {}
        table: TableId = ()
        closing: str | None = None  # the delimiter ending the multi-line string we are in
        for number, line in enumerate(text.splitlines(), start=1):
            if closing:
                if closing in line:
                    closing = None
                continue
            if header := _HEADER_LINE.match(line):
                parts = _key_parts(header[2])
                if header[1] == "[[" and len(parts) == 1:
                    array_lengths[parts[0]] = array_lengths.get(parts[0], 0) + 1
                if parts[0] in array_lengths:
                    table = (parts[0], array_lengths[parts[0]] - 1, *parts[1:])
                else:
                    table = tuple(parts)
                self._headers.setdefault(table, number)
            elif key := _KEY_LINE.match(line):
                self._keys.setdefault((table, _key_parts(key[1])[0]), number)
                value = key[2].lstrip()
                for delimiter in ('"""', "'''"):
                    if value.startswith(delimiter) and delimiter not in value[3:]:
                        closing = delimiter

    def line_of(self, table: TableId, key: str | None = None) -> int | None:
        if key is not None:
            for line in (
                self._keys.get((table, key)),
                self._headers.get((*table, key)),
                self._headers.get((*table, key, 0)),
            ):
                if line is not None:
                    return line
        return self._headers.get(table)


# --- loading -----------------------------------------------------------------------------------

_TOP_LEVEL_KEYS = ("store", "desk", "connector", "canned", "keymap", "sla")

_EXPECTED = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be an array",
}


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _fields_at(model: type[BaseModel], path: tuple[int | str, ...]) -> Iterable[str]:
    """The keys allowed in the table at `path` inside `model` (e.g. [sla] resolution)."""
    for part in path:
        field = model.model_fields.get(str(part))
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ()
        model = inner
    return model.model_fields


def _subject(loc: tuple[int | str, ...]) -> str:
    """The key an error is about, e.g. `imap_port` or `entry 2 of folders`."""
    if len(loc) == 2 and isinstance(loc[1], int):
        return f"entry {loc[1] + 1} of {loc[0]}"
    return ".".join(str(part) for part in loc)


def _bound(limit: float) -> str:
    # pydantic reports a float field's bound of 0 as 0.0; the admin wrote, and reads, 0.
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def _sentence(error: ErrorDetails, model: type[BaseModel]) -> str:
    """A pydantic error as the admin should read it: the key, what was expected, what was found."""
    kind, ctx, subject = error["type"], error.get("ctx", {}), _subject(error["loc"])
    if kind == "missing":
        return f"missing required key {subject}"
    if kind == "extra_forbidden":
        return f'unknown key "{subject}"' + _did_you_mean(
            str(error["loc"][-1]), _fields_at(model, error["loc"][:-1]))
    if kind == "desk":
        return f"{subject} {ctx['reason']}"
    if kind in ("too_short", "string_too_short"):
        return f"{subject} must not be empty"
    if kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
        expected = f"must be one of {allowed}"
    elif kind == "greater_than":
        expected = f"must be greater than {_bound(ctx['gt'])}"
    elif kind == "greater_than_equal":
        expected = f"must be at least {_bound(ctx['ge'])}"
    elif kind == "less_than_equal":
        expected = f"must be at most {_bound(ctx['le'])}"
    else:
        expected = _EXPECTED.get(kind, f"is invalid ({error['msg']})")
    return f"{subject} {expected}, got {_describe(error['input'])}"


_M = TypeVar("_M", bound=BaseModel)


class _Loader:
    """Validates parsed TOML table by table, collecting every error with its location."""

    def __init__(self, label: str, source: _SourceMap, base_dir: Path) -> None:
        self._label = label
        self._source = source
        self._context = {"base_dir": base_dir}
        self._errors: list[tuple[int | None, str]] = []

    def error(self, table: TableId, key: str | None, where: str | None, message: str) -> None:
        line = self._source.line_of(table, key)
        prefix = self._label if line is None else f"{self._label}:{line}"
        self._errors.append(
            (line, f"{prefix}: {where}: {message}" if where else f"{prefix}: {message}")
        )

    def raise_errors(self) -> None:
        if self._errors:
            # In file order, so the admin can fix them top to bottom; unplaced ones last.
            ordered = sorted(self._errors, key=lambda item: (item[0] is None, item[0] or 0))
            raise ConfigError(message for _, message in ordered)

    def validate(
        self, model: type[_M], data: dict[str, Any], table: TableId, where: str
    ) -> _M | None:
        try:
            return model.model_validate(data, context=self._context)
        except ValidationError as exc:
            derived: frozenset[str] = getattr(model, "derived_keys", frozenset())
            for error in exc.errors(include_url=False):
                key = str(error["loc"][0]) if error["loc"] else None
                if key in derived and key not in data:
                    continue
                line_key = error.get("ctx", {}).get("at") or key
                self.error(table, line_key, where, _sentence(error, model))
            return None

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if isinstance(value, dict):
            return value
        self.error((), key, None, f"{key} must be a table written [{key}], got {_describe(value)}")
        return {}

    def array_of_tables(self, data: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
        value = data.get(key, [])
        if isinstance(value, dict):
            self.error(
                (key,),
                None,
                None,
                f"[{key}] must be written [[{key}]] (double brackets), one per {key}",
            )
            return []
        if not isinstance(value, list):
            self.error(
                (), key, None, f"{key} must be written as [[{key}]] tables, got {_describe(value)}"
            )
            return []
        tables = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                tables.append((index, item))
            else:
                self.error(
                    (key, index),
                    None,
                    None,
                    f"{key} #{index + 1} must be a table, got {_describe(item)}",
                )
        return tables

    def load(
        self,
        data: dict[str, Any],
        *,
        env: Mapping[str, str],
        check_secrets: bool,
        source: Path,
    ) -> Settings:
        for key, value in data.items():
            if key not in _TOP_LEVEL_KEYS:
                what = "table" if isinstance(value, dict | list) else "top-level key"
                hint = _did_you_mean(key, _TOP_LEVEL_KEYS) or (
                    f" (expected one of {', '.join(_TOP_LEVEL_KEYS)})"
                )
                self.error((), key, None, f'unknown {what} "{key}"{hint}')

        store = self.validate(StoreSettings, self.table(data, "store"), ("store",), "[store]")
        if check_secrets and store is not None and store.password is not None:
            try:
                store.password.reveal(env)
            except ConfigError as exc:
                self.error(("store",), "password", "[store]",
                           f"password ({store.password.reference}): {exc.errors[0]}")
        desk_table = {"agent": _default_agent(env), **self.table(data, "desk")}
        desk = self.validate(DeskSettings, desk_table, ("desk",), "[desk]")
        connectors = self._connectors(data, env, check_secrets)
        canned = self._canned(data)
        keymap = self._keymap(data)
        sla = self.validate(SlaSettings, self.table(data, "sla"), ("sla",), "[sla]")
        self.raise_errors()
        assert store is not None and desk is not None  # no errors means every table validated
        return Settings(
            store=store,
            desk=desk,
            connectors=connectors,
            canned=canned,
            keymap=keymap,
            sla=sla,
            source=source,
        )

    def _connectors(
        self, data: dict[str, Any], env: Mapping[str, str], check_secrets: bool
    ) -> list[AnyConnectorSettings]:
        connectors: list[AnyConnectorSettings] = []
        first_use: dict[str, int] = {}
        for index, table in self.array_of_tables(data, "connector"):
            table_id: TableId = ("connector", index)
            name = table.get("name")
            named = isinstance(name, str) and name != ""
            where = f'connector "{name}"' if named else f"connector #{index + 1}"
            if named and name in first_use:
                # Its name no longer identifies it, so its errors say which one it is.
                where = f'connector #{index + 1} ("{name}")'
                other = first_use[name]
                line = self._source.line_of(("connector", other), "name")
                self.error(
                    table_id,
                    "name",
                    where,
                    f'name "{name}" is already used by connector #{other + 1}'
                    + (f" (line {line})" if line else "")
                    + "; connector names must be unique",
                )
            elif named:
                first_use[name] = index

            kind = table.get("type")
            model = CONNECTOR_TYPES.get(kind) if isinstance(kind, str) else None
            if model is not None:
                connector = self.validate(model, table, table_id, where)
                if connector is not None:
                    connectors.append(connector)
                    if check_secrets and connector.enabled:
                        self._check_secrets(connector, table_id, where, env)
                continue
            # Without a known type there is no schema to check against; still report what
            # every connector needs, so the next run does not reveal one more error.
            if "name" not in table:
                self.error(table_id, None, where, "missing required key name")
            if "type" not in table:
                self.error(table_id, None, where, "missing required key type")
            else:
                self.error(
                    table_id,
                    "type",
                    where,
                    f"type must be one of {', '.join(CONNECTOR_TYPES)}, got {_describe(kind)}"
                    + (_did_you_mean(kind, CONNECTOR_TYPES) if isinstance(kind, str) else ""),
                )
        return connectors

    def _check_secrets(
        self, connector: ConnectorSettings, table: TableId, where: str, env: Mapping[str, str]
    ) -> None:
        checked: set[Secret] = set()
        for key in type(connector).model_fields:
            secret = getattr(connector, key)
            # smtp_password defaults to password: one missing variable is one error.
            if not isinstance(secret, Secret) or secret in checked:
                continue
            checked.add(secret)
            try:
                secret.reveal(env)
            except ConfigError as exc:
                self.error(table, key, where, f"{key} ({secret.reference}): {exc.errors[0]}")

    def _canned(self, data: dict[str, Any]) -> list[CannedReply]:
        replies: list[CannedReply] = []
        first_use: dict[str, int] = {}
        for index, table in self.array_of_tables(data, "canned"):
            name = table.get("name")
            named = isinstance(name, str) and name != ""
            where = f'canned "{name}"' if named else f"canned #{index + 1}"
            if named and name in first_use:
                where = f'canned #{index + 1} ("{name}")'
                self.error(
                    ("canned", index),
                    "name",
                    where,
                    f'name "{name}" is already used by canned #{first_use[name] + 1}; '
                    "canned reply names must be unique",
                )
            elif named:
                first_use[name] = index
            reply = self.validate(CannedReply, table, ("canned", index), where)
            if reply is not None:
                replies.append(reply)
        return replies

    def _keymap(self, data: dict[str, Any]) -> dict[str, str]:
        keymap = self.table(data, "keymap")
        for action, key in keymap.items():
            if isinstance(key, dict):
                self.error(
                    ("keymap",),
                    action,
                    "[keymap]",
                    f'"{action}" must be a key such as "ctrl+r", got a table; an action name '
                    f'containing dots must be quoted: "{action}.{next(iter(key), "name")}" = "…"',
                )
            elif not isinstance(key, str):
                self.error(
                    ("keymap",),
                    action,
                    "[keymap]",
                    f'"{action}" must be a key such as "ctrl+r", got {_describe(key)}',
                )
            elif action not in ALL_IDS:
                self.error(
                    ("keymap",),
                    action,
                    "[keymap]",
                    f'"{action}" is not an action of the app{_did_you_mean(action, ALL_IDS)}; '
                    "`?` in the app lists them",
                )
            elif not key.strip() or any(not part.strip() for part in key.split(",")):
                self.error(("keymap",), action, "[keymap]", f'"{action}" has an empty key')
        return keymap


_TOML_POSITION = re.compile(r"(.*) \(at line (\d+), column (\d+)\)")


def _syntax_error(label: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    if match := _TOML_POSITION.fullmatch(message):
        return f"{label}: line {match[2]}, column {match[3]}: {match[1]}"
    if message.endswith(" (at end of document)"):
        return f"{label}: at the end of the file: {message.removesuffix(' (at end of document)')}"
    return f"{label}: {message}"


def load_config(
    path: str | Path | None,
    *,
    env: Mapping[str, str] = os.environ,
    check_secrets: bool = False,
) -> Settings:
    """Read and validate the config at `path`; defaults (no connectors) when `path` is None.

    Raises ConfigError listing every problem, each prefixed with `path` as given and a line
    number. With `check_secrets`, every env:/file: reference of the enabled connectors must
    also resolve to a non-empty value (values are read, never reported).
    """
    if path is None:
        return Settings(desk=DeskSettings(agent=_default_agent(env)))
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(str(path), exc)) from None
    loader = _Loader(str(path), _SourceMap(text), base_dir=path.resolve().parent)
    return loader.load(data, env=env, check_secrets=check_secrets, source=path)


def exposure_warnings(path: Path, settings: Settings) -> list[str]:
    """What other accounts on this machine could read: the config file (it says where every
    secret lives, and what the mailboxes are) and each `file:` secret. Warnings, not errors:
    the admin may have meant it (a group of operators), but should know."""
    from desk.private import readable_by_others

    warnings = []

    def check(file: Path, what: str) -> None:
        try:
            exposed = readable_by_others(file)
        except OSError:
            return  # a missing secret file is already an error of its own
        if exposed:
            mode = file.stat().st_mode & 0o777
            warnings.append(f"{file}: {what} is readable by other accounts (mode {mode:04o});"
                            f" make it owner-only: chmod 600 {file}")

    check(path, "the config file")
    secrets: dict[Path, str] = {}
    if settings.store.password is not None and settings.store.password.path is not None:
        secrets[settings.store.password.path] = "[store] password"
    for connector in settings.connectors:
        for key in type(connector).model_fields:
            secret = getattr(connector, key)
            if isinstance(secret, Secret) and secret.path is not None:
                secrets.setdefault(secret.path, f'connector "{connector.name}" {key}')
    for file, what in secrets.items():
        check(file, f"the secret file of {what}")
    return warnings
