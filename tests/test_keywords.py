from __future__ import annotations

import random
import re
import sys
import unicodedata

import pytest

from bot.defaults import DEFAULT_EMERGENCY_PHRASES
from bot.domain import IntakeCategory
from handlers.keywords import (
    EmergencyMatcher,
    Keyword,
    looks_spanish,
    match_keyword,
    normalize,
    parse_intake_answer,
)

# --- normalize -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", "stop"),
        ("  Stop!! ", "stop"),
        ("stop.", "stop"),
        ("¡¿Ayuda?!", "ayuda"),
        ("ESPAÑOL", "espanol"),
        ("Sí", "si"),
        ("NOT    SAFE", "not safe"),
        ("not\t\nsafe", "not safe"),
        ("not-safe", "not-safe"),
        ("can’t", "can't"),
        ("can‘t", "can't"),
        ("can´t", "can't"),
        ("\u200bSTOP\u200b", "stop"),
        ("ＳＴＯＰ", "stop"),
        ("Straße", "strasse"),
        ("#2", "2"),
        ("1)", "1"),
        ("...", ""),
        ("", ""),
        ("STOP 🛑", "stop 🛑"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


# --- match_keyword ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", Keyword.OPT_OUT),
        ("stopall", Keyword.OPT_OUT),
        ("Unsubscribe", Keyword.OPT_OUT),
        ("cancel", Keyword.OPT_OUT),
        ("END", Keyword.OPT_OUT),
        ("quit", Keyword.OPT_OUT),
        ("revoke", Keyword.OPT_OUT),
        ("OPTOUT", Keyword.OPT_OUT),
        ("parar", Keyword.OPT_OUT),
        ("Basta", Keyword.OPT_OUT),
        ("ALTO", Keyword.OPT_OUT),
        ("START", Keyword.OPT_IN),
        ("unstop", Keyword.OPT_IN),
        ("HELP", Keyword.HELP),
        ("info", Keyword.INFO),
        ("Ayuda", Keyword.HELP),
        ("DELETE", Keyword.ERASE),
        ("borrar", Keyword.ERASE),
        ("EXIT", Keyword.EXIT),
        ("Salir", Keyword.EXIT),
        ("ES", Keyword.LANG_ES),
        ("Español", Keyword.LANG_ES),
        ("espanol", Keyword.LANG_ES),
        ("EN", Keyword.LANG_EN),
        ("English", Keyword.LANG_EN),
        ("SAFE", Keyword.SAFE),
        ("seguro", Keyword.SAFE),
        ("NOT SAFE", Keyword.NOT_SAFE),
        ("no seguro", Keyword.NOT_SAFE),
        ("Unsafe", Keyword.NOT_SAFE),
        ("not-safe", Keyword.NOT_SAFE),
    ],
)
def test_every_keyword_matches_as_whole_message(text: str, expected: Keyword) -> None:
    assert match_keyword(text, opted_out=False) == expected


@pytest.mark.parametrize("text", ["stop.", "  Stop!! ", "STOP!", "stop?", "¡Stop!", "(stop)"])
def test_stop_with_trailing_punctuation_is_opt_out(text: str) -> None:
    assert match_keyword(text, opted_out=False) == Keyword.OPT_OUT


@pytest.mark.parametrize("text", ["ÁLTO", "álto", "PARAR", "parar", "¡Basta!", "¡¡BASTA!!"])
def test_spanish_opt_out_is_case_and_accent_insensitive(text: str) -> None:
    assert match_keyword(text, opted_out=False) == Keyword.OPT_OUT


@pytest.mark.parametrize(
    "text",
    ["please stop texting me", "stop it", "STOP STOP", "don't stop", "why did you stop?"],
)
def test_stop_inside_sentence_is_not_a_keyword(text: str) -> None:
    assert match_keyword(text, opted_out=False) is None


@pytest.mark.parametrize("text", ["stopping", "stops", "unstoppable", "s top", "helpful", "ends"])
def test_keyword_inside_a_longer_word_is_not_a_keyword(text: str) -> None:
    assert match_keyword(text, opted_out=False) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HE\u200bLP", Keyword.HELP),  # an invisible character inside the word
        ("ST\u00adOP", Keyword.OPT_OUT),
        ("\u202eAYUDA\u202c", Keyword.HELP),
        ("NOT\u200bSAFE", Keyword.NOT_SAFE),  # ... or standing for the space
        ("ＨＥＬＰ", Keyword.HELP),
    ],
)
def test_keywords_fold_invisible_characters_either_way(text: str, expected: Keyword) -> None:
    assert match_keyword(text, opted_out=False) == expected


@pytest.mark.parametrize("text", ["STOPP", "HELPPP", "AYUDAAA", "infoo"])
def test_keywords_do_not_fold_repeated_letters(text: str) -> None:
    # A keyword is a command, read as the carrier reads it. "HELPPP" still escalates: it is
    # a cry for help to the emergency matcher.
    assert match_keyword(text, opted_out=False) is None


def test_info_is_its_own_keyword_and_help_is_not_info() -> None:
    assert match_keyword("INFO", opted_out=False) is Keyword.INFO
    assert match_keyword("Help!", opted_out=False) is Keyword.HELP
    assert match_keyword("¡Ayuda!", opted_out=False) is Keyword.HELP


def test_internal_whitespace_is_collapsed() -> None:
    assert match_keyword("  not \n\t  safe  ", opted_out=False) == Keyword.NOT_SAFE


def test_inverted_punctuation_and_accents_do_not_block_keywords() -> None:
    assert match_keyword("¿ESPAÑOL?", opted_out=False) == Keyword.LANG_ES
    assert match_keyword("¿Español?", opted_out=True) == Keyword.LANG_ES


@pytest.mark.parametrize("text", ["YES", "yes!", "Si", "SÍ", "sí."])
def test_yes_is_opt_in_only_when_opted_out(text: str) -> None:
    assert match_keyword(text, opted_out=True) == Keyword.OPT_IN
    assert match_keyword(text, opted_out=False) is None


@pytest.mark.parametrize("text", ["START", "unstop"])
def test_start_is_opt_in_whether_or_not_opted_out(text: str) -> None:
    assert match_keyword(text, opted_out=False) == Keyword.OPT_IN
    assert match_keyword(text, opted_out=True) == Keyword.OPT_IN


def test_stop_is_opt_out_even_when_already_opted_out() -> None:
    assert match_keyword("STOP", opted_out=True) == Keyword.OPT_OUT


@pytest.mark.parametrize("text", ["", "   ", "!!!", "ok", "hello", "yes please", "1", "STOP 🛑"])
def test_non_keywords_return_none(text: str) -> None:
    assert match_keyword(text, opted_out=False) is None


# --- parse_intake_answer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", IntakeCategory.NEED_HELP_NOW),
        ("2", IntakeCategory.CONNECT_SERVICES),
        ("3", IntakeCategory.GET_INVOLVED),
        ("4", IntakeCategory.OTHER),
        ("1.", IntakeCategory.NEED_HELP_NOW),
        ("#2", IntakeCategory.CONNECT_SERVICES),
        (" 3 ", IntakeCategory.GET_INVOLVED),
        ("1)", IntakeCategory.NEED_HELP_NOW),
        ("(4)", IntakeCategory.OTHER),
        ("2!", IntakeCategory.CONNECT_SERVICES),
        ("\n1\n", IntakeCategory.NEED_HELP_NOW),
        ("１", IntakeCategory.NEED_HELP_NOW),  # full-width digit
        ("1️⃣", IntakeCategory.NEED_HELP_NOW),  # keycap emoji
    ],
)
def test_intake_answer_accepts_a_lone_digit(text: str, expected: IntakeCategory) -> None:
    assert parse_intake_answer(text) == expected


@pytest.mark.parametrize(
    "text", ["12", "1 2", "I need 1 bed", "0", "5", "", "one", "1 please", "1.5", "#", "1,2"]
)
def test_intake_answer_rejects_anything_but_a_lone_digit(text: str) -> None:
    assert parse_intake_answer(text) is None


# --- EmergencyMatcher ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matcher() -> EmergencyMatcher:
    return EmergencyMatcher(["kill", "911", "9-1-1", "can't leave", "in danger", "peligro",
                             "ayúdenme", "no puedo salir"])


@pytest.mark.parametrize(
    "text",
    ["he will kill me", "KILL", "kill!", "Kill.me", "I think he'll kill me tonight", "kill_me"],
)
def test_kill_matches_as_a_word(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is True


@pytest.mark.parametrize("text", ["skills", "I have skills", "killer app", "overkill", "killed"])
def test_kill_does_not_match_skills(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is False


@pytest.mark.parametrize("text", ["call 911!", "911", "(911)", "dial 911 now", "9-1-1", "9 1 1"])
def test_911_matches_as_a_number(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is True


@pytest.mark.parametrize("text", ["9115", "19110", "room 9112"])
def test_911_does_not_match_inside_a_longer_number(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is False


def test_911_inside_a_phone_number_over_triggers(matcher: EmergencyMatcher) -> None:
    # Documented and accepted: digits separated by punctuation are separate words.
    assert matcher.matches("my number is 555-911-2345") is True


@pytest.mark.parametrize(
    "text",
    ["I can't leave", "cant leave", "I can’t leave", "CAN'T  LEAVE", "can‘t leave", "can´t leave",
     "can't\nleave", "i cant... leave"],
)
def test_cant_leave_matches_curly_apostrophe(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is True


def test_apostrophe_in_text_is_optional_when_phrase_has_none() -> None:
    assert EmergencyMatcher(["cant leave"]).matches("I can’t leave") is True


@pytest.mark.parametrize(
    "text",
    ["I am in danger", "in\ndanger", "in... danger", "IN DANGER!!", "in - danger", "in_danger"],
)
def test_in_danger_matches_across_whitespace_and_punctuation(
    matcher: EmergencyMatcher, text: str
) -> None:
    assert matcher.matches(text) is True


@pytest.mark.parametrize("text", ["indanger", "in the danger zone", "danger", "within danger"])
def test_in_danger_needs_both_words_in_order(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is False


@pytest.mark.parametrize(
    "text", ["PELIGRÓ", "estoy en peligro", "Peligro!", "ayudenme", "AYÚDENME por favor",
             "No puedo salir de la casa", "no   puedo\nsalir"]
)
def test_spanish_phrases_match_accent_insensitively(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is True


@pytest.mark.parametrize(
    "text", ["", "hello", "I need a bed", "peligroso", "no puedo salirme", "9 11", "Hi, it's me"]
)
def test_unrelated_messages_do_not_match(matcher: EmergencyMatcher, text: str) -> None:
    assert matcher.matches(text) is False


@pytest.mark.parametrize("phrase", ["", "   ", "!!!", "'"])
def test_blank_phrase_is_rejected(phrase: str) -> None:
    with pytest.raises(ValueError, match="no words"):
        EmergencyMatcher(["gun", phrase])


def test_single_string_instead_of_list_is_rejected() -> None:
    with pytest.raises(TypeError):
        EmergencyMatcher("gun")


def test_no_phrases_matches_nothing() -> None:
    assert EmergencyMatcher([]).matches("anything at all") is False


def test_regex_metacharacters_in_phrases_are_literal() -> None:
    matcher = EmergencyMatcher(["help (now)", "a.b"])
    assert matcher.matches("please help now") is True
    assert matcher.matches("a b") is True
    assert matcher.matches("axb") is False


def test_matcher_accepts_any_iterable() -> None:
    matcher = EmergencyMatcher(phrase for phrase in ("gun", "knife"))
    assert matcher.matches("he has a knife") is True


@pytest.mark.parametrize(
    "text",
    ["heeelp meee", "helppp meee", "HEEELLLPPP ME", "hhelp mme", "heelp   me!!", "help me"],
)
def test_repeated_letters_count_once(text: str) -> None:
    assert EmergencyMatcher(["help me"]).matches(text) is True


def test_repeated_letters_fold_in_the_phrase_too() -> None:
    # The same rule on both sides, so a phrase typed with a double letter still matches.
    matcher = EmergencyMatcher(["kill", "socorro", "pleease help"])
    for text in ("kil", "KIIILL", "socoro", "SOCORROOO", "please help", "plz", "pls help"):
        assert matcher.matches(text) is (text not in ("plz", "pls help")), text


@pytest.mark.parametrize("text", ["skills", "skkills", "kiln", "killed", "overkill"])
def test_folding_repeats_keeps_word_boundaries(text: str) -> None:
    assert EmergencyMatcher(["kill"]).matches(text) is False


@pytest.mark.parametrize("text", ["9111", "99111", "room 9911", "call 9111"])
def test_repeated_digits_are_not_folded(text: str) -> None:
    assert EmergencyMatcher(["911"]).matches(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "he\u200blp me",  # zero-width space inside a word
        "help\u200bme",  # ... and between two words
        "he\u00adlp me",  # soft hyphen
        "h\u200de\u200cl\u2060p me",  # joiners and word joiner
        "\ufeffhelp me",  # byte-order mark
        "help\u200e me\u200f",  # bidi marks
        "\u202ehelp me\u202c",  # right-to-left override
        "\u2066help me\u2069",  # isolates
        "he\u3164lp me",  # Hangul filler, a "letter" that draws nothing
        "help\U000e0041 me",  # a tag character
    ],
)
def test_invisible_characters_count_as_nothing_or_as_a_space(text: str) -> None:
    assert EmergencyMatcher(["help me"]).matches(text) is True


def test_every_format_character_is_invisible() -> None:
    """Every Unicode Cf character this Python knows is in the written-out list (a newer
    Unicode adds some: the list must follow)."""
    missing = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf"
        and not EmergencyMatcher(["help"]).matches(f"he{chr(code)}lp")
    ]
    assert missing == []


@pytest.mark.parametrize(
    "text", ["ＨＥＬＰ ＭＥ", "𝐡𝐞𝐥𝐩 𝐦𝐞", "𝓱𝓮𝓵𝓹 𝓶𝓮", "ⓗⓔⓛⓟ ⓜⓔ", "ｈｅｅｅｌｐ ｍｅ"]
)
def test_compatibility_forms_are_plain_letters(text: str) -> None:
    assert EmergencyMatcher(["help me"]).matches(text) is True


@pytest.mark.parametrize("text", ["🆘", "🆘🆘 please", "I'm 🆘"])
def test_the_sos_emoji_reads_as_sos(text: str) -> None:
    assert EmergencyMatcher(["sos"]).matches(text) is True
    assert EmergencyMatcher(["help"]).matches(text) is False


def test_shared_prefixes_match_like_separate_phrases() -> None:
    """The phrases are compiled as a trie. Against a plain reference (one pattern a phrase,
    over the text with runs of letters folded), random phrases over a small alphabet match
    the same random texts."""
    rng = random.Random(7)

    def words(alphabet: str, most: int) -> str:
        return " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
                        for _ in range(rng.randint(1, most)))

    def reference(phrases: list[str], text: str) -> bool:
        def fold(s: str) -> str:
            return re.sub(r"([a-z])\1+", r"\1", s.lower().replace("'", ""))

        folded = fold(text)
        for phrase in phrases:
            pattern = r"[\W_]+".join(re.findall(r"[a-z0-9]+", fold(phrase)))
            if re.search(rf"(?<![a-z0-9]){pattern}(?![a-z0-9])", folded):
                return True
        return False

    for _ in range(300):
        phrases = [words("aab1", 3) for _ in range(rng.randint(1, 6))]
        matcher = EmergencyMatcher(phrases)
        for _ in range(20):
            text = words("aAb1'-", 5).replace(" ", rng.choice([" ", "-", "!! ", "\n"]))
            assert matcher.matches(text) is reference(phrases, text), (phrases, text)


# --- default phrase lists --------------------------------------------------------------------


def test_default_phrase_lists_cover_both_languages() -> None:
    assert set(DEFAULT_EMERGENCY_PHRASES) == {"en", "es"}
    assert all(DEFAULT_EMERGENCY_PHRASES.values())


ALL_DEFAULT_PHRASES = [
    (language, phrase)
    for language, phrases in DEFAULT_EMERGENCY_PHRASES.items()
    for phrase in phrases
]


@pytest.fixture(scope="module")
def default_matchers() -> dict[str, EmergencyMatcher]:
    return {language: EmergencyMatcher(phrases)
            for language, phrases in DEFAULT_EMERGENCY_PHRASES.items()}


@pytest.mark.parametrize(("language", "phrase"), ALL_DEFAULT_PHRASES)
def test_every_default_phrase_matches_inside_a_sentence(
    default_matchers: dict[str, EmergencyMatcher], language: str, phrase: str
) -> None:
    matcher = default_matchers[language]
    assert matcher.matches(f"please {phrase} now") is True
    assert matcher.matches(f"{phrase.upper()}!!") is True
    assert matcher.matches(f"ok\n{phrase}\nok") is True


@pytest.mark.parametrize(("language", "phrase"), ALL_DEFAULT_PHRASES)
def test_default_phrases_are_lowercase_and_trimmed(language: str, phrase: str) -> None:
    assert phrase == phrase.lower().strip()
    assert "  " not in phrase


@pytest.mark.parametrize("language", ["en", "es"])
def test_default_phrases_have_no_duplicates_after_normalizing(language: str) -> None:
    phrases = DEFAULT_EMERGENCY_PHRASES[language]
    folded = [normalize(phrase).replace("'", "") for phrase in phrases]
    assert len(folded) == len(set(folded))


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "he has a gun"),
        ("en", "I can’t leave the house"),
        ("en", "They took my passport and I'm locked in"),
        ("en", "he said he's going to kill me"),
        ("en", "please help me now"),
        ("en", "I think I'm being held against my will"),
        ("en", "call 9-1-1"),
        ("es", "Estoy en PELIGRO"),
        ("es", "ayudenme por favor"),
        ("es", "me quiere matar"),
        ("es", "no me dejan salir de la casa"),
        ("es", "Me quitaron el pasaporte"),
        ("es", "tiene una pistola"),
    ],
)
def test_default_phrases_catch_realistic_emergencies(
    default_matchers: dict[str, EmergencyMatcher], language: str, text: str
) -> None:
    assert default_matchers[language].matches(text) is True


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "Hi, I'd like to volunteer"),
        ("en", "Where can I get job skills training?"),
        ("en", "Do you have information about shelters?"),
        ("en", "Thank you so much"),
        ("es", "Hola, quiero ser voluntaria"),
        ("es", "¿Tienen información sobre albergues?"),
        ("es", "Muchas gracias"),
    ],
)
def test_default_phrases_leave_ordinary_messages_alone(
    default_matchers: dict[str, EmergencyMatcher], language: str, text: str
) -> None:
    assert default_matchers[language].matches(text) is False


# --- looks_spanish ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hola",
        "hola necesito ayuda",
        "estoy en peligro",
        "Necesito ayuda por favor",
        "¿Me pueden ayudar?",
        "Buenas noches",
        "Gracias",
        "tengo miedo",
        "No puedo salir",
        "Mi jefe tiene mi pasaporte",
        "Hi, hablo español",
        "me llamo María y necesito información",
        "ES",
        "sí",
    ],
)
def test_spanish_first_messages_look_spanish(text: str) -> None:
    assert looks_spanish(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "Hello I need help",
        "ok",
        "si",
        "no",
        "",
        "EN",
        "I am in danger",
        "Can you help me?",
        "Is this the hotline?",
        "Hi, this is José",
        "Hola, I need help",
        "I can't leave, he took my ID",
        "Where are you located",
        "STOP",
        "👍",
    ],
)
def test_english_or_ambiguous_first_messages_do_not_look_spanish(text: str) -> None:
    assert looks_spanish(text) is False
