from __future__ import annotations

import pytest

from bot.gsm import is_gsm7, septets, sms_segments, to_gsm7

# The GSM 03.38 default alphabet, in table order, without the 0x1B escape.
BASIC_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION_CHARS = "{}[]\\~^|€\f"


def test_basic_alphabet_is_complete() -> None:
    assert len(BASIC_ALPHABET) == 127
    assert is_gsm7(BASIC_ALPHABET) is True
    assert septets(BASIC_ALPHABET) == 127


@pytest.mark.parametrize("char", list(EXTENSION_CHARS))
def test_extension_chars_are_gsm7_and_count_two_septets(char: str) -> None:
    assert is_gsm7(char) is True
    assert septets(char) == 2


def test_euro_sign_counts_two_septets() -> None:
    assert septets("€") == 2
    assert septets("5€") == 3
    assert septets("Cost: 10€") == 10


@pytest.mark.parametrize(
    "text",
    ["", "Hello, you reached the hotline.", "¿Necesitas ayuda? Responde SI o NO", "ñÑüÜéÉ¡¿",
     "Reply 1, 2, 3 or 4.", "@home $5 £3 ¥1 §2 ¤"],
)
def test_plain_and_gsm_spanish_text_is_gsm7(text: str) -> None:
    assert is_gsm7(text) is True


@pytest.mark.parametrize(
    "char",
    [
        "’",  # right single quotation mark, the curly apostrophe phones insert
        "‘",
        "“",
        "”",
        "á",  # Spanish acute vowels are NOT in the default alphabet
        "í",
        "ó",
        "ú",
        "Á",
        "ç",  # only capital Ç is in the default alphabet
        "—",
        "…",
        "\t",
        "\x1b",  # raw escape is the extension prefix, not a character
        "\u00a0",  # no-break space
        "😀",
        "中",
    ],
)
def test_non_gsm_chars_are_not_gsm7(char: str) -> None:
    assert is_gsm7(char) is False
    assert is_gsm7(f"plain text {char} plain text") is False


def test_curly_quote_is_not_gsm7() -> None:
    assert is_gsm7("I can't leave") is True
    assert is_gsm7("I can’t leave") is False


def test_decomposed_accent_is_not_gsm7() -> None:
    # "é" as e + combining acute: checked as given, not silently normalized.
    assert is_gsm7("e\u0301") is False
    assert is_gsm7("\u00e9") is True


def test_septets_of_empty_text_is_zero() -> None:
    assert septets("") == 0


def test_septets_rejects_non_gsm_text() -> None:
    with pytest.raises(ValueError, match="GSM-7"):
        septets("I can’t")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", 5),
        ("{hi}", 6),
        ("a[b]c", 7),
        ("\\", 2),
        ("~^|", 6),
        ("line\nbreak", 10),
    ],
)
def test_septet_counts(text: str, expected: int) -> None:
    assert septets(text) == expected


# --- segments --------------------------------------------------------------------------------


def test_empty_text_is_one_segment() -> None:
    assert sms_segments("") == 1


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (1, 1),
        (160, 1),
        (161, 2),
        (306, 2),
        (307, 3),
        (459, 3),
        (460, 4),
        (1530, 10),
    ],
)
def test_gsm7_segment_boundaries(length: int, expected: int) -> None:
    assert sms_segments("a" * length) == expected


def test_160_gsm_chars_is_one_segment() -> None:
    assert sms_segments("x" * 160) == 1


def test_161_gsm_chars_is_two_segments() -> None:
    assert sms_segments("x" * 161) == 2


def test_extension_chars_count_double_toward_the_limit() -> None:
    assert sms_segments("€" * 80) == 1  # 160 septets
    assert sms_segments("a" + "€" * 80) == 2  # 161 septets
    assert sms_segments("a" * 159 + "€") == 2  # 161 septets


def test_escape_pair_is_not_split_across_segments() -> None:
    # 152 septets then "€": 154 would overflow part one, so "€" starts part two.
    assert sms_segments("a" * 152 + "€" + "a" * 8) == 2  # 162 septets: 152 | 2 + 8
    # 306 septets fit two parts exactly only if a pair straddles the boundary; it may not.
    assert sms_segments("a" * 152 + "€" * 77) == 3


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (1, 1),
        (70, 1),
        (71, 2),
        (134, 2),
        (135, 3),
        (201, 3),
        (202, 4),
    ],
)
def test_ucs2_segment_boundaries(length: int, expected: int) -> None:
    # One curly quote forces UCS-2 for the whole text.
    assert sms_segments("’" + "a" * (length - 1)) == expected


def test_one_acute_vowel_cuts_the_single_segment_to_70() -> None:
    assert sms_segments("a" * 100) == 1
    assert sms_segments("á" + "a" * 99) == 2


def test_emoji_forces_ucs2() -> None:
    assert is_gsm7("Thanks 🙏") is False
    assert sms_segments("a" * 70) == 1
    assert sms_segments("a" * 69 + "🙂") == 2  # the emoji is 2 UTF-16 units: 71 in all


def test_emoji_counts_two_utf16_units() -> None:
    assert sms_segments("🙂" * 35) == 1  # 70 units
    assert sms_segments("🙂" * 36) == 2  # 72 units


def test_surrogate_pair_is_not_split_across_segments() -> None:
    # 66 units then an emoji: 68 would overflow part one, so the emoji starts part two.
    assert sms_segments("’" + "a" * 65 + "🙂" + "a" * 10) == 2
    # 134 units would fit two parts exactly only by splitting an emoji; it may not.
    assert sms_segments("’" + "a" * 65 + "🙂" * 34) == 3


def test_realistic_spanish_reply() -> None:
    reply = "Gracias por escribir. ¿Es seguro escribirte aquí? Responde SEGURO o NO SEGURO."
    assert is_gsm7(reply) is False  # the "í" in "aquí"
    assert sms_segments(reply) == 2  # 78 UCS-2 units
    assert sms_segments(reply.replace("í", "i")) == 1  # 78 septets as GSM-7


def test_to_gsm7_strips_only_accents_outside_gsm7() -> None:
    assert to_gsm7("sábado miércoles mañana Ávila Él") == "sabado miércoles mañana Avila Él"
    assert to_gsm7("5:00\u202fPM\u00a0hoy") == "5:00 PM hoy"
    assert to_gsm7("“quoted” – it’s…") == '"quoted" - it\'s...'
    assert to_gsm7("help 😊", missing="") == "help "
    assert to_gsm7("€") == "€"  # in the extension table: still GSM-7
