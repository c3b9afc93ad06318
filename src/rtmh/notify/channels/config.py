"""Channel configuration: a ``notification_channels`` row turned into typed, validated settings.

Validation is strict (unknown keys are errors) so a typo such as ``timeout`` for
``timeout_seconds`` is reported when the channel is saved, not silently ignored at 3 a.m.
Secret values live only inside :class:`Secret` objects, whose ``repr``/``str`` is ``***``, so a
channel can be logged, printed or put in an exception without leaking them; :func:`redact` is the
form the API returns.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit, urlunsplit

ChannelType = Literal["webhook", "slack", "email", "pagerduty", "alertmanager"]
CHANNEL_TYPES: Final[tuple[str, ...]] = get_args(ChannelType)

REDACTED: Final = "***"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
MAX_TIMEOUT_SECONDS: Final = 120.0
DEFAULT_PAGERDUTY_URL: Final = "https://events.pagerduty.com"

# Headers the channel itself sets; letting config override them would break signing or dedup.
_RESERVED_HEADERS: Final = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
#: Standard Webhooks symmetric secrets: ``whsec_`` + base64 of 24 to 64 random bytes
STANDARD_SECRET_PREFIX: Final = "whsec_"
STANDARD_SECRET_BYTES: Final = (24, 64)
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Header names whose values are credentials even when someone put them in config by mistake.
_CREDENTIAL_HEADER: Final = re.compile(r"auth|token|key|secret|cookie|password|signature", re.I)


class ChannelConfigError(ValueError):
    """A channel row that cannot be used; ``field`` names the offending key (``config.url``).

    The message never contains a value, so it is safe to log and to return from the API.
    """

    def __init__(self, channel: str, field: str, problem: str) -> None:
        self.channel = channel
        self.field = field
        self.problem = problem
        super().__init__(f"channel {channel!r}: {field}: {problem}")


class Secret:
    """A secret string that does not print itself. ``reveal()`` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        # Lets a notifier compare a reloaded channel with its cached one; constant-time anyway.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        # Pickling would carry the value to wherever the pickle goes (logs, caches, crash dumps).
        raise TypeError("Secret values cannot be pickled")


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Generic webhook, or Alertmanager-compatible webhook when ``alertmanager_format``."""

    url: str
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    headers: Mapping[str, str] = field(default_factory=dict)
    alertmanager_format: bool = False
    #: key of the ``X-RTMH-Signature`` body signature, from ``secrets.hmac_secret``
    hmac_secret: Secret | None = None
    #: ``whsec_...`` key of the Standard Webhooks signature, from
    #: ``secrets.standard_webhooks_secret``
    standard_webhooks_secret: Secret | None = None
    #: headers that carry credentials (e.g. Authorization), from ``secrets.headers``
    secret_headers: Mapping[str, Secret] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """Slack incoming webhook. Its URL is a credential, so it is held as a Secret."""

    url: Secret
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """SMTP submission through aiosmtplib."""

    host: str
    port: int
    from_addr: str
    to_addrs: tuple[str, ...]
    username: str | None = None
    starttls: bool = False
    use_tls: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class PagerDutySettings:
    """PagerDuty Events API v2."""

    routing_key: Secret
    base_url: str = DEFAULT_PAGERDUTY_URL
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


ChannelSettings = WebhookSettings | SlackSettings | EmailSettings | PagerDutySettings


@dataclass(frozen=True, slots=True)
class Channel:
    """A validated channel. Build with :func:`parse_channel` or :meth:`from_row`."""

    name: str
    type: ChannelType
    settings: ChannelSettings
    #: the row's non-secret config as stored, for :func:`redact`
    config: Mapping[str, Any] = field(repr=False)
    #: names of the row's secrets (values live in ``settings``)
    secret_names: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Channel:
        """From a ``notification_channels`` row (name, type, config, secrets)."""
        return parse_channel(
            row["name"], row["type"], row.get("config") or {}, row.get("secrets") or {}
        )

    def secret_values(self) -> tuple[str, ...]:
        """Every secret string this channel holds: scrubbed from anything it returns or logs."""
        return tuple(value for value in _secret_values(self) if value)

    def __repr__(self) -> str:
        return (
            f"Channel(name={self.name!r}, type={self.type!r}, "
            f"config={_redacted_config(self.type, self.config)!r}, "
            f"secrets={dict.fromkeys(self.secret_names, REDACTED)!r})"
        )

    __str__ = __repr__


def redact(channel: Channel) -> dict[str, Any]:
    """The channel as the API shows it: config (credential-looking parts masked), secrets ***."""
    return {
        "name": channel.name,
        "type": channel.type,
        "config": _redacted_config(channel.type, channel.config),
        "secrets": dict.fromkeys(channel.secret_names, REDACTED),
    }


def parse_channel(
    name: str, type_: str, config: Mapping[str, Any], secrets: Mapping[str, Any]
) -> Channel:
    """Validate one channel; raises :class:`ChannelConfigError` naming the first bad field."""
    if type_ not in CHANNEL_TYPES:
        raise ChannelConfigError(name, "type", f"must be one of {', '.join(CHANNEL_TYPES)}")
    conf = _Fields(name, "config", config)
    secret = _Fields(name, "secrets", secrets)
    settings = _PARSERS[type_](conf, secret, type_)
    conf.finish()
    secret.finish()
    return Channel(
        name=name,
        type=cast(ChannelType, type_),  # checked against CHANNEL_TYPES above
        settings=settings,
        config=copy.deepcopy(dict(config)),
        secret_names=tuple(sorted(secrets)),
    )


# ------------------------------------------------------------------------------------------------
# Per-type parsers
# ------------------------------------------------------------------------------------------------


def _parse_webhook(conf: _Fields, secret: _Fields, type_: str) -> WebhookSettings:
    alertmanager = type_ == "alertmanager"
    alertmanager_format = conf.flag("alertmanager_format", default=alertmanager)
    if alertmanager and not alertmanager_format:
        raise conf.error("alertmanager_format", "is always true for type alertmanager")
    return WebhookSettings(
        url=conf.http_url("url"),
        timeout_seconds=conf.timeout(),
        headers=conf.headers("headers"),
        alertmanager_format=alertmanager_format,
        hmac_secret=_optional_secret(secret, "hmac_secret"),
        standard_webhooks_secret=_standard_secret(secret, "standard_webhooks_secret"),
        secret_headers={k: Secret(v) for k, v in secret.headers("headers").items()},
    )


def _parse_slack(conf: _Fields, secret: _Fields, _type: str) -> SlackSettings:
    # Slack's URL is the credential: secrets.url is the right home, config.url is accepted.
    in_config, in_secrets = conf.has("url"), secret.has("url")
    if in_config == in_secrets:
        raise conf.error("url", "set exactly one of config.url and secrets.url (preferred)")
    source = secret if in_secrets else conf
    return SlackSettings(url=Secret(source.http_url("url")), timeout_seconds=conf.timeout())


def _parse_email(conf: _Fields, secret: _Fields, _type: str) -> EmailSettings:
    use_tls = conf.flag("use_tls", default=False)
    starttls = conf.flag("starttls", default=False)
    if use_tls and starttls:
        raise conf.error("starttls", "cannot be combined with use_tls (implicit TLS)")
    default_port = 465 if use_tls else 587 if starttls else 25
    username = conf.optional_text("username")
    password = _optional_secret(secret, "password")
    if (username is None) != (password is None):
        raise secret.error("password", "username and password must be set together")
    return EmailSettings(
        host=conf.text("host"),
        port=conf.integer("port", default=default_port, low=1, high=65535),
        from_addr=conf.address("from_addr"),
        to_addrs=conf.address_list("to_addrs"),
        username=username,
        starttls=starttls,
        use_tls=use_tls,
        timeout_seconds=conf.timeout(),
        password=password,
    )


def _parse_pagerduty(conf: _Fields, secret: _Fields, _type: str) -> PagerDutySettings:
    base_url = conf.http_url("base_url", default=DEFAULT_PAGERDUTY_URL).rstrip("/")
    return PagerDutySettings(
        routing_key=Secret(secret.text("routing_key")),
        base_url=base_url,
        timeout_seconds=conf.timeout(),
    )


_PARSERS: Final[Mapping[str, Callable[[_Fields, _Fields, str], ChannelSettings]]] = {
    "webhook": _parse_webhook,
    "alertmanager": _parse_webhook,
    "slack": _parse_slack,
    "email": _parse_email,
    "pagerduty": _parse_pagerduty,
}


def _optional_secret(fields: _Fields, key: str) -> Secret | None:
    value = fields.optional_text(key)
    return None if value is None else Secret(value)


def _standard_secret(fields: _Fields, key: str) -> Secret | None:
    value = fields.optional_text(key)
    if value is None:
        return None
    try:
        decode_standard_secret(value)
    except ValueError:
        low, high = STANDARD_SECRET_BYTES
        raise fields.error(
            key,
            f"must be {STANDARD_SECRET_PREFIX} followed by the base64 of {low} to {high} random "
            f"bytes (make one with: echo {STANDARD_SECRET_PREFIX}$(openssl rand -base64 32))",
        ) from None
    return Secret(value)


def decode_standard_secret(value: str) -> bytes:
    """The HMAC key in a Standard Webhooks secret (``whsec_<base64>``); ValueError when it is
    not one. The base64 padding may be left out, as some secret generators do."""
    if not value.startswith(STANDARD_SECRET_PREFIX):
        raise ValueError(f"a Standard Webhooks secret starts with {STANDARD_SECRET_PREFIX}")
    text = value.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is base64 after its prefix") from None
    low, high = STANDARD_SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"a Standard Webhooks key is {low} to {high} bytes long")
    return key


# ------------------------------------------------------------------------------------------------
# Field reader
# ------------------------------------------------------------------------------------------------

_MISSING: Final = object()


class _Fields:
    """Reads typed values out of one JSON object and remembers which keys were used."""

    def __init__(self, channel: str, section: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise ChannelConfigError(channel, section, "must be a JSON object")
        self._channel = channel
        self._section = section
        self._data: Mapping[str, Any] = data
        self._used: set[str] = set()

    def error(self, key: str, problem: str) -> ChannelConfigError:
        return ChannelConfigError(self._channel, f"{self._section}.{key}", problem)

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise self.error(unknown[0], "unknown setting")

    def _get(self, key: str, default: Any = _MISSING) -> Any:
        self._used.add(key)
        value = self._data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        if any(char in value for char in "\r\n\0"):
            raise self.error(key, "must not contain line breaks")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self.has(key) else self._get(key, None)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self._get(key, default)
        # JSON booleans only: the string "false" is truthy and would mean the opposite.
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def number(self, key: str, *, default: float, low: float, high: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        if not math.isfinite(value) or not low < value <= high:
            raise self.error(key, f"must be greater than {low:g} and at most {high:g}")
        return float(value)

    def timeout(self) -> float:
        return self.number(
            "timeout_seconds", default=DEFAULT_TIMEOUT_SECONDS, low=0, high=MAX_TIMEOUT_SECONDS
        )

    def integer(self, key: str, *, default: int, low: int, high: int) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"must be an integer from {low} to {high}")
        return value

    def http_url(self, key: str, default: str | None = None) -> str:
        value = self.text(key) if default is None or self.has(key) else self._get(key, default)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, "must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # Config is returned by the API; credentials belong in secrets.headers.
            raise self.error(key, "must not carry credentials; use secrets.headers")
        return value

    def address(self, key: str) -> str:
        value = self.text(key)
        if not _is_address(value):
            raise self.error(key, "must be an email address")
        return value

    def address_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, "must be a non-empty list of email addresses")
        if not all(isinstance(item, str) and _is_address(item) for item in value):
            raise self.error(key, "must be a non-empty list of email addresses")
        return tuple(value)

    def headers(self, key: str) -> dict[str, str]:
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, "must be an object of header names to string values")
        for name, header_value in value.items():
            self._check_header(key, name, header_value)
        return dict(value)

    def _check_header(self, key: str, name: Any, value: Any) -> None:
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise self.error(key, "header names must be HTTP tokens")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS or lowered.startswith("x-rtmh-"):
            raise self.error(f"{key}.{name}", "is set by RTMH and cannot be overridden")
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise self.error(f"{key}.{name}", "must be a printable ASCII string")


def _is_address(value: str) -> bool:
    address = parseaddr(value)[1]
    local, _, domain = address.rpartition("@")
    return bool(local and domain) and not any(char.isspace() for char in address)


# ------------------------------------------------------------------------------------------------
# Redaction
# ------------------------------------------------------------------------------------------------


def _secret_values(channel: Channel) -> list[str]:
    settings = channel.settings
    values: list[str] = []
    if isinstance(settings, WebhookSettings):
        if settings.hmac_secret is not None:
            values.append(settings.hmac_secret.reveal())
        if settings.standard_webhooks_secret is not None:
            whole = settings.standard_webhooks_secret.reveal()
            # the key part alone too: a receiver may echo the secret without its prefix
            values += [whole, whole.removeprefix(STANDARD_SECRET_PREFIX)]
        values += [secret.reveal() for secret in settings.secret_headers.values()]
    elif isinstance(settings, SlackSettings):
        values.append(settings.url.reveal())
    elif isinstance(settings, EmailSettings):
        values += [settings.password.reveal()] if settings.password else []
    else:
        values.append(settings.routing_key.reveal())
    # Longest first, so scrubbing a secret that contains another replaces the whole of it.
    return sorted(values, key=len, reverse=True)


def _redacted_config(type_: str, config: Mapping[str, Any]) -> dict[str, Any]:
    shown = copy.deepcopy(dict(config))
    if type_ == "slack" and isinstance(shown.get("url"), str):
        shown["url"] = _mask_slack_url(shown["url"])
    if isinstance(shown.get("headers"), dict):
        shown["headers"] = {
            name: REDACTED if _CREDENTIAL_HEADER.search(str(name)) else value
            for name, value in shown["headers"].items()
        }
    return shown


def _mask_slack_url(url: str) -> str:
    # A Slack webhook's path is its token: keep only where it points.
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + REDACTED, "", ""))
