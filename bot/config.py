"""Settings: one TOML file plus secrets from the environment, read once into frozen data.

Every error names the key it is about, so `check-config` can print one clear line.
Nothing else in the code reads os.environ; the composition root passes `environ` in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.defaults import DEFAULT_EMERGENCY_PHRASES
from bot.gsm import is_gsm7, sms_segments
from bot.hours import BusinessHours, HoursError
from bot.rota import Rota

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///triage.db"
TWILIO_API_BASE_URL = "https://api.twilio.com"
TELEGRAM_API_BASE_URL = "https://api.telegram.org/bot"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
LANGUAGES = ("en", "es")

# Worst case for {next_opening} when checking template length: the longest text
# bot.hours.describe_opening can produce in each language.
LONGEST_OPENING = {
    "en": "Wednesday, September 30 at 12:00 PM",
    "es": "el miercoles 30 de septiembre a las 12:00",
}
SAFETY_MARKERS = ("911", "1-888-373-7888", "233733")
# Templates that open a conversation or answer an emergency must carry the safety text.
SAFETY_TEMPLATES = ("first_contact", "emergency", "help")
FIRST_REPLY_TEMPLATES = ("first_contact",)
FIRST_REPLY_MAX_SEGMENTS = 3
OTHER_REPLY_MAX_SEGMENTS = 2
TEMPLATE_KEYS = (
    "safety",
    "first_contact",
    "hours_open",
    "hours_closed",
    "hours_unknown",
    "intake_question",
    "emergency",
    "after_hours",
    "safe_question",
    "safe_yes",
    "safe_no",
    "help",
    "optout_confirm",
    "optin_confirm",
    "erase_confirm",
    "language_set",
)
# A reply must never suggest texting 911: Telegram and web chat cannot reach it.
TEXT_911 = re.compile(
    r"\btext(ing|o)?\b(\s+\w+){0,3}?\s+911\b"  # text 911, text us at 911, texto al 911
    r"|\bmensaje\b(\s+\w+){0,4}?\s+911\b"  # mensaje de texto al 911
    r"|\bescrib\w*\s+al\s+911\b",  # escriba al 911
    re.IGNORECASE,
)


class ConfigError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class Secret:
    """A secret value whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    public_url: str
    max_body_bytes: int
    # Reverse proxies whose X-Forwarded-For is believed, for the client's own address.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    write_timeout_seconds: float
    spool_dir: Path


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool
    account_sid: str
    from_number: str
    messaging_service_sid: str
    api_base_url: str
    max_per_second: float
    auth_token: Secret


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool
    mode: str
    api_base_url: str
    max_per_second: float
    token: Secret
    webhook_secret: Secret


@dataclass(frozen=True)
class PrivacySettings:
    retention_days: int
    quiet_window_hours: int


@dataclass(frozen=True)
class EscalationSettings:
    repage_after_seconds: int
    everyone_after_seconds: int
    repeats: int
    ack_timeout_seconds: int
    sweep_interval_seconds: int
    include_preview: bool


@dataclass(frozen=True)
class WebchatSettings:
    enabled: bool
    exit_url: str  # where Quick exit goes: an everyday site, replacing the chat in history
    allowed_origins: tuple[str, ...]  # sites that may frame /chat (the coalition's own)
    idle_minutes: int
    max_sessions: int  # open chats at once; beyond it, new ones are asked to wait
    max_message_chars: int
    messages_per_minute: int  # per browser (a keyed hash of its address, kept in memory)


@dataclass(frozen=True)
class ConsoleSettings:
    idle_timeout_minutes: int
    require_2fa: str  # "admins" or "all"
    staff_chat_id: str  # a Telegram chat told of new conversations (no content); "" for none


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool  # off: no /metrics route, and no counter is ever touched
    allow: tuple[IPv4Network | IPv6Network, ...]  # who may scrape without the token
    token: Secret  # TRIAGE_METRICS_TOKEN: a bearer token that may scrape from anywhere


@dataclass(frozen=True)
class OutboxSettings:
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    send_timeout_seconds: float


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    database: DatabaseSettings
    hours: BusinessHours
    sms: SmsSettings
    telegram: TelegramSettings
    privacy: PrivacySettings
    oncall: Rota
    escalation: EscalationSettings
    outbox: OutboxSettings
    console: ConsoleSettings
    webchat: WebchatSettings
    metrics: MetricsSettings
    emergency_phrases: Mapping[str, tuple[str, ...]]
    replies: Mapping[str, Mapping[str, str]]
    encryption_key: Secret
    session_secret: Secret
    source: Path | None = field(default=None, compare=False)


class _Table:
    """Typed reads from one TOML table; every error names the dotted key."""

    def __init__(self, data: Mapping[str, Any], name: str) -> None:
        self.data = data
        self.name = name

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def table(self, key: str) -> _Table:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            raise ConfigError(self.key(key), "must be a table")
        return _Table(value, self.key(key))

    def str(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise ConfigError(self.key(key), "is required")
        if not isinstance(value, str):
            raise ConfigError(self.key(key), "must be a string")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(key), "must be true or false")
        return value

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(key), "must be a number")
        if value < minimum:
            raise ConfigError(self.key(key), f"must be at least {minimum:g}")
        return float(value)

    def int(self, key: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(key), "must be a whole number")
        if value < minimum:
            raise ConfigError(self.key(key), f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.key(key), f"must be at most {maximum}")
        return value

    def str_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self.data.get(key, default)
        if value is None:
            raise ConfigError(self.key(key), "is required")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(key), "must be a list of strings")
        return value


def load_settings(path: str | Path, environ: Mapping[str, str]) -> Settings:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"not valid TOML: {exc}") from None
    return parse_settings(raw, environ, base_dir=path.parent, source=path)


def parse_settings(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    base_dir: Path = Path("."),
    source: Path | None = None,
) -> Settings:
    root = _Table(raw, "")
    hours = _hours(root.table("hours"))
    settings = Settings(
        server=_server(root.table("server")),
        database=_database(root.table("database"), base_dir),
        hours=hours,
        sms=_sms(root.table("sms"), environ),
        telegram=_telegram(root.table("telegram"), environ),
        privacy=_privacy(root.table("privacy")),
        oncall=_oncall(root.table("oncall"), hours),
        escalation=_escalation(root.table("escalation")),
        outbox=_outbox(root.table("outbox")),
        console=_console(root.table("console")),
        webchat=_webchat(root.table("webchat")),
        metrics=_metrics(root.table("metrics"), environ),
        emergency_phrases=_emergency(root.table("emergency")),
        replies=_replies(root.table("replies")),
        encryption_key=_required_secret(environ, "TRIAGE_ENCRYPTION_KEY"),
        session_secret=_secret(environ, "TRIAGE_SESSION_SECRET"),
        source=source,
    )
    return settings


def _secret(environ: Mapping[str, str], name: str) -> Secret:
    """A secret from the environment, "" when unset or empty.

    Whitespace around a secret is stripped: none of these secrets can hold any (tokens,
    keys and the webhook secret are all printable ASCII without spaces), and it is almost
    always the newline at the end of a secrets file. Left in, it would make every Twilio
    signature check fail in silence, so every message would be refused. A value that is
    only whitespace, though, is a mistake (the secret was meant to be there), not an unset
    variable, and the service refuses to start on it."""
    value = environ.get(name, "")
    if value and not value.strip():
        raise ConfigError(name, "is only whitespace; set the secret, or unset the variable")
    return Secret(value.strip())


def _required_secret(environ: Mapping[str, str], name: str) -> Secret:
    secret = _secret(environ, name)
    if not secret:
        raise ConfigError(name, "environment variable is required (see README: keygen)")
    return secret


def _server(t: _Table) -> ServerSettings:
    public_url = t.str("public_url", "http://127.0.0.1:8080").rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", public_url):
        raise ConfigError(t.key("public_url"), "must be an http(s) URL")
    try:
        _ = urlsplit(public_url).port  # twilio's validator reads it on every webhook
    except ValueError:
        raise ConfigError(t.key("public_url"), "has a bad port") from None
    return ServerSettings(
        host=t.str("host", "127.0.0.1"),
        port=t.int("port", 8080, minimum=0, maximum=65535),
        public_url=public_url,
        max_body_bytes=t.int("max_body_bytes", 64 * 1024, minimum=1024),
        trusted_proxies=_networks(t, "trusted_proxies", []),
    )


def _networks(t: _Table, key: str, default: list[str]) -> tuple[IPv4Network | IPv6Network, ...]:
    try:
        return tuple(ip_network(n, strict=False) for n in t.str_list(key, default))
    except ValueError:
        raise ConfigError(t.key(key), "must be a list of addresses or networks, "
                                      'e.g. ["127.0.0.1", "10.0.0.0/8"]') from None


def _database(t: _Table, base_dir: Path) -> DatabaseSettings:
    url = t.str("url", DEFAULT_DATABASE_URL)
    if "://" not in url:
        raise ConfigError(t.key("url"), "must be an SQLAlchemy URL, e.g. " + DEFAULT_DATABASE_URL)
    spool = Path(t.str("spool_dir", "spool"))
    return DatabaseSettings(
        url=url,
        write_timeout_seconds=t.number("write_timeout_seconds", 5, minimum=0.1),
        spool_dir=spool if spool.is_absolute() else base_dir / spool,
    )


def _hours(t: _Table) -> BusinessHours:
    weekly: dict[str, list[str]] = {}
    for day in WEEKDAYS:
        weekly[day] = t.str_list(day, [])
    unknown = set(t.data) - {*WEEKDAYS, "timezone", "holidays"}
    if unknown:
        raise ConfigError(t.key(sorted(unknown)[0]), "unknown key (weekdays are monday..sunday)")
    holidays = t.data.get("holidays", {})
    if isinstance(holidays, list):
        # A plain list of closed dates: ["2026-12-25", "2027-01-01"].
        if not all(isinstance(d, str) for d in holidays):
            raise ConfigError(t.key("holidays"), 'a list of holidays is of dates, "YYYY-MM-DD"')
        holidays = {d: [] for d in holidays}
    if not isinstance(holidays, Mapping):
        raise ConfigError(t.key("holidays"),
                          'must be a list of closed dates, or a table of date = [intervals]')
    try:
        return BusinessHours.from_config(t.str("timezone", "America/Chicago"), weekly, holidays)
    except HoursError as exc:
        raise ConfigError(exc.key, str(exc).removeprefix(f"{exc.key}: ")) from None


def _sms(t: _Table, environ: Mapping[str, str]) -> SmsSettings:
    settings = SmsSettings(
        enabled=t.bool("enabled", False),
        account_sid=t.str("account_sid", ""),
        from_number=t.str("from_number", ""),
        messaging_service_sid=t.str("messaging_service_sid", ""),
        api_base_url=t.str("api_base_url", TWILIO_API_BASE_URL).rstrip("/"),
        max_per_second=t.number("max_per_second", 1, minimum=0.01),
        auth_token=_secret(environ, "TRIAGE_SMS_AUTH_TOKEN"),
    )
    if settings.enabled:
        if not re.fullmatch(r"AC[0-9a-fA-F]{32}", settings.account_sid):
            raise ConfigError(t.key("account_sid"), "must be a Twilio Account SID (AC + 32 hex)")
        if not (settings.from_number or settings.messaging_service_sid):
            raise ConfigError(t.key("from_number"), "set from_number or messaging_service_sid")
        if settings.from_number and not re.fullmatch(r"\+[1-9]\d{6,14}", settings.from_number):
            raise ConfigError(t.key("from_number"), "must be an E.164 number like +13145550100")
        if not settings.auth_token:
            raise ConfigError("TRIAGE_SMS_AUTH_TOKEN", "is required when [sms] enabled = true")
    return settings


def _telegram(t: _Table, environ: Mapping[str, str]) -> TelegramSettings:
    settings = TelegramSettings(
        enabled=t.bool("enabled", False),
        mode=t.str("mode", "polling"),
        api_base_url=t.str("api_base_url", TELEGRAM_API_BASE_URL),
        max_per_second=t.number("max_per_second", 25, minimum=0.01),
        token=_secret(environ, "TRIAGE_TELEGRAM_TOKEN"),
        webhook_secret=_secret(environ, "TRIAGE_TELEGRAM_WEBHOOK_SECRET"),
    )
    if settings.mode not in ("webhook", "polling"):
        raise ConfigError(t.key("mode"), 'must be "webhook" or "polling"')
    if settings.enabled:
        if not settings.token:
            raise ConfigError("TRIAGE_TELEGRAM_TOKEN", "is required when [telegram] enabled")
        secret = settings.webhook_secret.reveal()
        if settings.mode == "webhook" and not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", secret):
            raise ConfigError(
                "TRIAGE_TELEGRAM_WEBHOOK_SECRET",
                "is required in webhook mode: 16-256 characters of A-Z a-z 0-9 _ -",
            )
    return settings


def _privacy(t: _Table) -> PrivacySettings:
    return PrivacySettings(
        retention_days=t.int("retention_days", 90, minimum=1),
        quiet_window_hours=t.int("quiet_window_hours", 72, minimum=1),
    )


def _oncall(t: _Table, hours: BusinessHours) -> Rota:
    handover = t.str("handover", "monday 09:00")
    if not re.fullmatch(r"({}) ([01]\d|2[0-3]):[0-5]\d".format("|".join(WEEKDAYS)), handover):
        raise ConfigError(t.key("handover"), 'must look like "monday 09:00"')
    try:
        start = date.fromisoformat(t.str("start", "2026-01-05"))
    except ValueError:
        raise ConfigError(t.key("start"), "must be a date like 2026-01-05") from None
    rotation = tuple(t.str_list("rotation", []))
    if len(set(rotation)) != len(rotation):
        raise ConfigError(t.key("rotation"), "lists someone twice")
    return Rota.from_config(rotation, handover, t.str("backup", ""), start, hours.timezone,
                            t.int("confirm_minutes", 15, minimum=1, maximum=24 * 60))


def _escalation(t: _Table) -> EscalationSettings:
    return EscalationSettings(
        repage_after_seconds=t.int("repage_after_seconds", 300, minimum=1),
        everyone_after_seconds=t.int("everyone_after_seconds", 600, minimum=1),
        repeats=t.int("repeats", 3, minimum=0),
        ack_timeout_seconds=t.int("ack_timeout_seconds", 1800, minimum=1),
        sweep_interval_seconds=t.int("sweep_interval_seconds", 5, minimum=1),
        include_preview=t.bool("include_preview", False),
    )


def _outbox(t: _Table) -> OutboxSettings:
    return OutboxSettings(
        max_attempts=t.int("max_attempts", 8, minimum=1),
        retry_base_seconds=t.number("retry_base_seconds", 2, minimum=0.01),
        retry_max_seconds=t.number("retry_max_seconds", 600, minimum=0.01),
        send_timeout_seconds=t.number("send_timeout_seconds", 15, minimum=0.1),
    )


def _webchat(t: _Table) -> WebchatSettings:
    exit_url = t.str("exit_url", "https://www.bbc.co.uk/weather")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", exit_url):
        raise ConfigError(t.key("exit_url"), "must be an http(s) URL")
    origins = tuple(o.rstrip("/") for o in t.str_list("allowed_origins", []))
    for origin in origins:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
            raise ConfigError(t.key("allowed_origins"),
                              f"{origin!r} must be an origin like https://www.example.org")
    return WebchatSettings(
        enabled=t.bool("enabled", True),
        exit_url=exit_url,
        allowed_origins=origins,
        idle_minutes=t.int("idle_minutes", 30, minimum=1, maximum=24 * 60),
        max_sessions=t.int("max_sessions", 500, minimum=1),
        max_message_chars=t.int("max_message_chars", 2000, minimum=100, maximum=10_000),
        messages_per_minute=t.int("messages_per_minute", 20, minimum=1),
    )


def _metrics(t: _Table, environ: Mapping[str, str]) -> MetricsSettings:
    unknown = set(t.data) - {"enabled", "allow"}
    if unknown:
        raise ConfigError(t.key(sorted(unknown)[0]), "unknown key (enabled, allow)")
    token = _secret(environ, "TRIAGE_METRICS_TOKEN")
    # RFC 6750's token68 characters, long enough not to be guessed: anything else could not
    # travel in an Authorization header as it is, and would fail every scrape in silence.
    if token and not re.fullmatch(r"[A-Za-z0-9._~+/-]{16,}=*", token.reveal()):
        raise ConfigError("TRIAGE_METRICS_TOKEN",
                          "must be at least 16 characters of A-Z a-z 0-9 . _ ~ + / -")
    return MetricsSettings(
        enabled=t.bool("enabled", True),
        allow=_networks(t, "allow", ["127.0.0.1/32", "::1/128"]),
        token=token,
    )


def _console(t: _Table) -> ConsoleSettings:
    require = t.str("require_2fa", "admins")
    if require not in ("admins", "all"):
        raise ConfigError(t.key("require_2fa"), 'must be "admins" or "all"')
    chat = t.str("staff_chat_id", "")
    if chat and not re.fullmatch(r"-?\d{1,20}", chat):
        raise ConfigError(t.key("staff_chat_id"), "must be a Telegram chat id (a number)")
    return ConsoleSettings(
        idle_timeout_minutes=t.int("idle_timeout_minutes", 30, minimum=1, maximum=24 * 60),
        require_2fa=require,
        staff_chat_id=chat,
    )


def _emergency(t: _Table) -> Mapping[str, tuple[str, ...]]:
    phrases: dict[str, tuple[str, ...]] = {}
    for language in LANGUAGES:
        listed = t.str_list(language, list(DEFAULT_EMERGENCY_PHRASES[language]))
        cleaned = tuple(p.strip() for p in listed)
        if not cleaned or any(not p for p in cleaned):
            raise ConfigError(t.key(language), "must be a non-empty list of non-blank phrases")
        phrases[language] = cleaned
    return phrases


def _replies(t: _Table) -> Mapping[str, Mapping[str, str]]:
    replies: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        lang = t.table(language)
        unknown = set(lang.data) - set(TEMPLATE_KEYS)
        if unknown:
            raise ConfigError(lang.key(sorted(unknown)[0]), "unknown reply template")
        missing = [k for k in TEMPLATE_KEYS if k not in lang.data]
        if missing:
            raise ConfigError(lang.key(missing[0]), "reply template is required")
        replies[language] = {k: lang.str(k) for k in TEMPLATE_KEYS}
        for key in TEMPLATE_KEYS:
            _check_template(lang.key(key), key, replies[language], language)
    return replies


def render_template(templates: Mapping[str, str], key: str, **values: str) -> str:
    """Fill a reply template. {safety} is always available; {hours_status} and
    {intake_question} are filled for the first reply."""
    return templates[key].format(safety=templates["safety"], **values).strip()


def _check_template(config_key: str, key: str, templates: Mapping[str, str], lang: str) -> None:
    worst = {
        "next_opening": LONGEST_OPENING[lang],
        "hours_status": max(
            (
                render_template(templates, "hours_closed", next_opening=LONGEST_OPENING[lang]),
                templates["hours_open"],
                templates["hours_unknown"],
            ),
            key=sms_segments_then_len,
        ),
        "intake_question": templates["intake_question"],
    }
    try:
        text = render_template(templates, key, **worst)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(config_key, f"bad placeholder {exc}") from None
    if not text:
        raise ConfigError(config_key, "must not be empty")
    if not is_gsm7(text):
        bad = "".join(sorted({c for c in text if not is_gsm7(c)}))
        raise ConfigError(config_key, f"must be plain GSM-7 text; remove {bad!r}")
    limit = FIRST_REPLY_MAX_SEGMENTS if key in FIRST_REPLY_TEMPLATES else OTHER_REPLY_MAX_SEGMENTS
    if sms_segments(text) > limit:
        raise ConfigError(
            config_key,
            f"is {len(text)} characters ({sms_segments(text)} SMS segments) at its longest; "
            f"the limit is {limit} segments",
        )
    if key in SAFETY_TEMPLATES and not all(m in text for m in SAFETY_MARKERS):
        raise ConfigError(
            config_key, "must carry the safety text (911 and 1-888-373-7888 / 233733)"
        )
    if TEXT_911.search(text):
        raise ConfigError(config_key, "must not tell anyone to text 911")


def sms_segments_then_len(text: str) -> tuple[int, int]:
    return sms_segments(text), len(text)
