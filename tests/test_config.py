"""Config loader: config.example.toml, every bad value named by its key, reply templates
checked for length, GSM-7 and the safety text at load time, and secrets that never show."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError, Settings, load_settings, parse_settings, render_template
from bot.crypto import generate_key
from bot.gsm import is_gsm7, sms_segments
from bot.hours import describe_opening
from tests.conftest import ROOT, deep_merge, example_config
from tests.fixtures import ACCOUNT_SID, OUR_NUMBER

EXAMPLE = ROOT / "config.example.toml"
KEY = generate_key()
ENVIRON = {"TRIAGE_ENCRYPTION_KEY": KEY}
SMS_ON = {"sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER}}
TELEGRAM_WEBHOOK = {"telegram": {"enabled": True, "mode": "webhook"}}
# Distinctive values, so a leak cannot hide among other text.
SECRETS = {
    "TRIAGE_ENCRYPTION_KEY": KEY,
    "TRIAGE_SMS_AUTH_TOKEN": "sms-auth-token-SEEKRIT-4711",
    "TRIAGE_TELEGRAM_TOKEN": "123456:telegram-token-SEEKRIT-4712",
    "TRIAGE_TELEGRAM_WEBHOOK_SECRET": "webhook-secret-SEEKRIT-4713",
    "TRIAGE_SESSION_SECRET": "session-secret-SEEKRIT-4714",
    "TRIAGE_METRICS_TOKEN": "metrics-token-SEEKRIT-4715",
}
HOTLINE = "1-888-373-7888"
FIRST_REPLY_MAX_CHARS = 459  # 3 GSM-7 segments of 153
TWO_SEGMENTS = 306  # 2 GSM-7 segments of 153
# Safety text with 911 and the text line, but no hotline number.
NO_HOTLINE = {
    "en": "If you are in danger, call 911, or text 233733.",
    "es": "Si esta en peligro, llame al 911 o escriba al 233733.",
}


def settings(changes: Mapping[str, Any] | None = None, environ: Mapping[str, str] = ENVIRON,
             raw: dict[str, Any] | None = None) -> Settings:
    """The example config with `changes` merged in, parsed against `environ`."""
    base = example_config() if raw is None else raw
    return parse_settings(deep_merge(base, dict(changes or {})), environ)


def config_error(changes: Mapping[str, Any] | None = None, environ: Mapping[str, str] = ENVIRON,
                 raw: dict[str, Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings(changes, environ, raw)
    return info.value


def assert_names_key(error: ConfigError, key: str) -> None:
    assert error.key == key
    assert str(error).startswith(f"{key}: ")


def reply(language: str, key: str, text: str) -> dict[str, Any]:
    return {"replies": {language: {key: text}}}


def example_reply(language: str, key: str) -> str:
    return example_config()["replies"][language][key]


def without(raw: dict[str, Any], *path: str) -> dict[str, Any]:
    """`raw` with the key at `path` removed."""
    table = raw
    for name in path[:-1]:
        table = table[name]
    del table[path[-1]]
    return raw


def longest_opening(language: str) -> str:
    """The longest "staff are back ..." text describe_opening gives over a whole year."""
    zone = ZoneInfo("America/Chicago")
    texts = []
    for offset in range(366):
        day = date(2027, 1, 1) + timedelta(days=offset)
        for at in (time(1, 0), time(10, 59), time(12, 0), time(23, 59)):
            opening = datetime.combine(day, at, tzinfo=zone)
            texts.append(describe_opening(opening, opening - timedelta(days=10), language))
    return max(texts, key=len)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- the example -------------------------------------------------------------------------


def test_example_loads_with_only_the_encryption_key() -> None:
    loaded = load_settings(EXAMPLE, ENVIRON)

    assert loaded.sms.enabled is False
    assert loaded.telegram.enabled is False
    assert loaded.database.url == "sqlite+aiosqlite:///triage.db"
    assert loaded.encryption_key.reveal() == KEY


def test_database_url_defaults_to_sqlite_file() -> None:
    loaded = settings(raw=without(example_config(), "database", "url"))

    assert loaded.database.url == "sqlite+aiosqlite:///triage.db"


# --- bad values name their key -------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "environ", "key"),
    [
        pytest.param({"server": {"port": "x"}}, ENVIRON, "server.port", id="port-not-int"),
        pytest.param({"server": {"port": 70000}}, ENVIRON, "server.port", id="port-too-big"),
        pytest.param({"server": {"public_url": "ftp://x"}}, ENVIRON, "server.public_url",
                     id="public-url-scheme"),
        pytest.param({"server": {"public_url": "https://x:port"}}, ENVIRON, "server.public_url",
                     id="public-url-port-not-a-number"),
        pytest.param({"server": {"public_url": "https://x:99999"}}, ENVIRON,
                     "server.public_url", id="public-url-port-too-big"),
        pytest.param({"hours": {"funday": ["09:00-17:00"]}}, ENVIRON, "hours.funday",
                     id="unknown-weekday"),
        pytest.param({"hours": {"monday": ["9-5"]}}, ENVIRON, "hours.monday[0]",
                     id="bad-interval"),
        pytest.param({"hours": {"tuesday": ["09:00-12:00", "13:00-25:00"]}}, ENVIRON,
                     "hours.tuesday[1]", id="bad-second-interval"),
        pytest.param({"hours": {"timezone": "Mars/Olympus"}}, ENVIRON, "hours.timezone",
                     id="unknown-timezone"),
        pytest.param({"hours": {"holidays": {"2026-02-30": []}}}, ENVIRON,
                     "hours.holidays.2026-02-30", id="impossible-holiday"),
        pytest.param({"telegram": {"mode": "push"}}, ENVIRON, "telegram.mode",
                     id="telegram-mode"),
        pytest.param({"sms": {"enabled": True}}, ENVIRON, "sms.account_sid",
                     id="sms-without-account-sid"),
        pytest.param(SMS_ON, ENVIRON, "TRIAGE_SMS_AUTH_TOKEN", id="sms-without-token"),
        pytest.param({}, {}, "TRIAGE_ENCRYPTION_KEY", id="no-encryption-key"),
        pytest.param({}, {"TRIAGE_ENCRYPTION_KEY": "  "}, "TRIAGE_ENCRYPTION_KEY",
                     id="blank-encryption-key"),
        pytest.param(TELEGRAM_WEBHOOK, {**ENVIRON, "TRIAGE_TELEGRAM_TOKEN": "1:x"},
                     "TRIAGE_TELEGRAM_WEBHOOK_SECRET", id="webhook-without-secret"),
        pytest.param(TELEGRAM_WEBHOOK, ENVIRON, "TRIAGE_TELEGRAM_TOKEN",
                     id="telegram-without-token"),
        pytest.param(reply("en", "greeting", "Hello."), ENVIRON, "replies.en.greeting",
                     id="unknown-template"),
        pytest.param({"server": 5}, ENVIRON, "server", id="table-not-a-table"),
        pytest.param({"metrics": {"enabled": "yes"}}, ENVIRON, "metrics.enabled",
                     id="metrics-enabled-not-a-bool"),
        pytest.param({"metrics": {"allow": ["10.0.0.0/33"]}}, ENVIRON, "metrics.allow",
                     id="metrics-allow-bad-network"),
        pytest.param({"metrics": {"allow": "127.0.0.1"}}, ENVIRON, "metrics.allow",
                     id="metrics-allow-not-a-list"),
        pytest.param({"metrics": {"alow": []}}, ENVIRON, "metrics.alow",
                     id="metrics-unknown-key"),
        pytest.param({}, {**ENVIRON, "TRIAGE_METRICS_TOKEN": "short"}, "TRIAGE_METRICS_TOKEN",
                     id="metrics-token-too-short"),
        pytest.param({}, {**ENVIRON, "TRIAGE_METRICS_TOKEN": "has a space in the middle"},
                     "TRIAGE_METRICS_TOKEN", id="metrics-token-with-space"),
    ],
)
def test_bad_value_error_starts_with_its_key(
    changes: dict[str, Any], environ: dict[str, str], key: str
) -> None:
    assert_names_key(config_error(changes, environ), key)


def test_missing_template_is_named() -> None:
    raw = without(example_config(), "replies", "en", "help")

    assert_names_key(config_error(raw=raw), "replies.en.help")


# --- reply templates ------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "es"])
def test_first_reply_fits_three_gsm7_segments(language: str) -> None:
    templates = settings().replies[language]
    hours_status = max(
        (
            render_template(templates, "hours_closed", next_opening=longest_opening(language)),
            templates["hours_open"],
            templates["hours_unknown"],
        ),
        key=len,
    )

    text = render_template(templates, "first_contact", hours_status=hours_status,
                           intake_question=templates["intake_question"])

    assert is_gsm7(text)
    assert len(text) <= FIRST_REPLY_MAX_CHARS
    assert sms_segments(text) <= 3


@pytest.mark.parametrize("language", ["en", "es"])
def test_first_contact_over_three_segments_is_rejected(language: str) -> None:
    too_long = example_reply(language, "first_contact") + " Thank you." * 20

    error = config_error(reply(language, "first_contact", too_long))

    assert_names_key(error, f"replies.{language}.first_contact")
    assert "segments" in str(error)


@pytest.mark.parametrize(
    ("language", "key"),
    [("en", "after_hours"), ("en", "safe_no"), ("en", "emergency"), ("es", "optout_confirm"),
     ("es", "help"), ("es", "language_set")],
)
def test_other_template_over_two_segments_is_rejected(language: str, key: str) -> None:
    too_long = example_reply(language, key) + " Thank you." * 28

    error = config_error(reply(language, key, too_long))

    assert_names_key(error, f"replies.{language}.{key}")
    assert "segments" in str(error)


def test_two_segment_limit_is_exact() -> None:
    fits = "a" * TWO_SEGMENTS

    assert settings(reply("en", "safe_yes", fits)).replies["en"]["safe_yes"] == fits
    assert_names_key(config_error(reply("en", "safe_yes", fits + "a")), "replies.en.safe_yes")


@pytest.mark.parametrize(
    "char",
    ["\u2019", "\u201c", "\U0001f600", "\u00a0"],
    ids=["curly-apostrophe", "curly-quote", "emoji", "no-break-space"],
)
def test_template_outside_gsm7_is_rejected(char: str) -> None:
    error = config_error(reply("en", "safe_yes", f"Thank you{char} Staff will answer here."))

    assert_names_key(error, "replies.en.safe_yes")
    assert "GSM-7" in str(error)


@pytest.mark.parametrize("letter", ["á", "í", "ó", "ú"])
def test_spanish_accent_outside_gsm7_is_rejected(letter: str) -> None:
    error = config_error(reply("es", "safe_yes", f"Gracias. Aqu{letter} estamos."))

    assert_names_key(error, "replies.es.safe_yes")
    assert "GSM-7" in str(error)


def test_spanish_e_acute_and_enye_are_gsm7() -> None:
    text = "Gracias. Mañana le escribiré."

    assert settings(reply("es", "safe_yes", text)).replies["es"]["safe_yes"] == text


@pytest.mark.parametrize(
    "phrase", ["text 911", "Text  911", "TEXT to 911", "texting 911", "text\n911"]
)
def test_english_template_saying_text_911_is_rejected(phrase: str) -> None:
    error = config_error(reply("en", "after_hours", f"Back {{next_opening}}. Or {phrase}."))

    assert_names_key(error, "replies.en.after_hours")
    assert "911" in str(error)


@pytest.mark.parametrize(
    "phrase",
    ["envie un mensaje al 911", "envie un mensaje de texto al 911", "envie un texto al 911",
     "escriba al 911"],
)
def test_spanish_template_saying_text_911_is_rejected(phrase: str) -> None:
    error = config_error(reply("es", "after_hours", f"Volvemos {{next_opening}}. O {phrase}."))

    assert_names_key(error, "replies.es.after_hours")
    assert "911" in str(error)


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("key", ["first_contact", "emergency", "help"])
def test_safety_template_without_hotline_is_rejected(language: str, key: str) -> None:
    text = example_reply(language, key).replace("{safety}", NO_HOTLINE[language])

    error = config_error(reply(language, key, text))

    assert_names_key(error, f"replies.{language}.{key}")
    assert HOTLINE in str(error)


def test_safety_text_without_hotline_fails_the_first_reply() -> None:
    error = config_error(reply("en", "safety", NO_HOTLINE["en"]))

    assert_names_key(error, "replies.en.first_contact")


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("show", [repr, str])
def test_secrets_never_show(show: Any) -> None:
    loaded = settings(deep_merge(SMS_ON, TELEGRAM_WEBHOOK), SECRETS)
    shown = show(loaded)

    for name, value in SECRETS.items():
        assert value not in shown, name
    assert KEY.partition(":")[2] not in shown
    assert loaded.sms.auth_token.reveal() == SECRETS["TRIAGE_SMS_AUTH_TOKEN"]


SECRET_NAMES = ("TRIAGE_SMS_AUTH_TOKEN", "TRIAGE_TELEGRAM_TOKEN",
                "TRIAGE_TELEGRAM_WEBHOOK_SECRET", "TRIAGE_SESSION_SECRET", "TRIAGE_ENCRYPTION_KEY",
                "TRIAGE_METRICS_TOKEN")


@pytest.mark.parametrize("name", SECRET_NAMES)
@pytest.mark.parametrize("blank", ["   ", "\n", "\t \r\n", "\u00a0"])
def test_whitespace_only_secret_is_a_startup_error(name: str, blank: str) -> None:
    error = config_error(deep_merge(SMS_ON, TELEGRAM_WEBHOOK), {**SECRETS, name: blank})

    assert_names_key(error, name)
    assert "whitespace" in str(error)


def test_whitespace_only_auth_token_is_a_startup_error() -> None:
    error = config_error(SMS_ON, {**ENVIRON, "TRIAGE_SMS_AUTH_TOKEN": "   "})

    assert_names_key(error, "TRIAGE_SMS_AUTH_TOKEN")


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_whitespace_only_secret_is_an_error_even_for_a_disabled_channel(name: str) -> None:
    error = config_error(environ={**ENVIRON, name: "  "})

    assert_names_key(error, name)


def test_whitespace_around_a_secret_is_stripped() -> None:
    padded = {name: f" {value}\n" for name, value in SECRETS.items()}

    loaded = settings(deep_merge(SMS_ON, TELEGRAM_WEBHOOK), padded)

    assert loaded.sms.auth_token.reveal() == SECRETS["TRIAGE_SMS_AUTH_TOKEN"]
    assert loaded.telegram.token.reveal() == SECRETS["TRIAGE_TELEGRAM_TOKEN"]
    assert loaded.telegram.webhook_secret.reveal() == SECRETS["TRIAGE_TELEGRAM_WEBHOOK_SECRET"]
    assert loaded.session_secret.reveal() == SECRETS["TRIAGE_SESSION_SECRET"]
    assert loaded.encryption_key.reveal() == KEY


def test_unset_or_empty_session_secret_is_allowed() -> None:
    assert not settings(environ={**ENVIRON, "TRIAGE_SESSION_SECRET": ""}).session_secret
    assert not settings(environ=ENVIRON).session_secret


# --- the file --------------------------------------------------------------------------------


def test_relative_spool_dir_resolves_against_config_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "etc" / "triage.toml", EXAMPLE.read_text(encoding="utf-8"))

    assert load_settings(path, ENVIRON).database.spool_dir == tmp_path / "etc" / "spool"


def test_absolute_spool_dir_is_kept(tmp_path: Path) -> None:
    spool = tmp_path / "var" / "spool"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'spool_dir = "spool"', f'spool_dir = "{spool}"'
    )
    path = write(tmp_path / "etc" / "triage.toml", text)

    assert load_settings(path, ENVIRON).database.spool_dir == spool


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "triage.toml", "[server\nport = 8080\n")

    with pytest.raises(ConfigError, match=r"^config: "):
        load_settings(path, ENVIRON)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: file not found"):
        load_settings(tmp_path / "nowhere.toml", ENVIRON)


def test_holidays_may_be_a_plain_list_of_closed_dates(env):
    settings = env.settings(hours={"holidays": ["2026-12-25", "2027-01-01"]})
    assert settings.hours.holidays == {date(2026, 12, 25): (), date(2027, 1, 1): ()}


@pytest.mark.parametrize("holidays", [["2026-13-01"], [20261225], "2026-12-25"])
def test_a_bad_holiday_list_names_its_key(env, holidays):
    with pytest.raises(ConfigError) as caught:
        env.settings(hours={"holidays": holidays})
    assert caught.value.key.startswith("hours.holidays")


def test_metrics_are_on_for_loopback_only_by_default() -> None:
    loaded = settings()
    assert loaded.metrics.enabled is True
    assert [str(n) for n in loaded.metrics.allow] == ["127.0.0.1/32", "::1/128"]
    assert not loaded.metrics.token
    on = settings({"metrics": {"allow": ["10.0.0.0/8", "192.0.2.7"]}},
                  {**ENVIRON, "TRIAGE_METRICS_TOKEN": "a.b~c+d/e-f_0123456789=="})
    assert [str(n) for n in on.metrics.allow] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert on.metrics.token.reveal() == "a.b~c+d/e-f_0123456789=="
