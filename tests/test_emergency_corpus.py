"""Recall of the default emergency phrase lists on a corpus of realistic messages.

The corpus is in tests/fixtures/emergency/: what someone typing fast on a phone, in a panic
and maybe in secret, sends when they need help (must_escalate.txt), ordinary messages that
must be left alone (must_not_escalate.txt), and the ordinary messages that escalate anyway,
as the accepted price of recall (accepted_over_triggers.txt). Invisible characters are added
here, with escapes, because a text file would hide them from its reader.

The matcher is built the way bot/app.py builds it: one matcher over both languages' lists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.defaults import DEFAULT_EMERGENCY_PHRASES
from handlers.keywords import EmergencyMatcher

CORPUS = Path(__file__).parent / "fixtures" / "emergency"


def corpus(name: str) -> list[str]:
    """One message a line; blank lines and lines starting with "#" are skipped."""
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


MUST_ESCALATE = corpus("must_escalate.txt")
MUST_NOT_ESCALATE = corpus("must_not_escalate.txt")
ACCEPTED_OVER_TRIGGERS = corpus("accepted_over_triggers.txt")

# Invisible format characters as they turn up: copied from a web page, typed by a keyboard
# that joins emoji, or put in on purpose to get a word past a filter.
ZWSP, ZWNJ, ZWJ, WORD_JOINER = "\u200b", "\u200c", "\u200d", "\u2060"
SOFT_HYPHEN, BOM, HANGUL_FILLER = "\u00ad", "\ufeff", "\u3164"
LRM, RLM, RLO, PDF, LRI, PDI = "\u200e", "\u200f", "\u202e", "\u202c", "\u2066", "\u2069"
INVISIBLES = (ZWSP, ZWNJ, ZWJ, WORD_JOINER, SOFT_HYPHEN, BOM, HANGUL_FILLER, LRM, RLM, RLO, LRI)

WRITTEN_WITH_INVISIBLES = [
    f"he{ZWSP}lp me",
    f"HE{ZWSP}LP",
    f"i ne{SOFT_HYPHEN}ed he{SOFT_HYPHEN}lp",
    f"h{ZWJ}e{ZWNJ}l{WORD_JOINER}p",
    f"{BOM}help",
    f"help{ZWSP}me",
    f"in{ZWSP}danger",
    f"he took my pass{ZWSP}port",
    f"can{ZWSP}t lea{ZWJ}ve",
    f"I{ZWSP}can’t{ZWSP}leave",
    f"{RLO}sos{PDF}",
    f"{LRI}he has a gun{PDI}",
    f"ne{WORD_JOINER}cesito ayu{ZWSP}da",
    f"ayú{ZWJ}dame",
    f"no me de{SOFT_HYPHEN}jan sa{SOFT_HYPHEN}lir",
    f"tengo mie{ZWNJ}do",
    f"estoy en peli{LRM}gro",
    f"me quitaron mis pa{RLM}peles",
    f"au{ZWSP}xi{ZWSP}lio",
    f"🙏{ZWJ}help{ZWJ}🙏",
]


def split_every_word(text: str, invisible: str) -> str:
    """An invisible character after the first letter of every word: "he took" -> "h.e t.ook"."""
    return " ".join(word[0] + invisible + word[1:] if len(word) > 1 else word
                    for word in text.split(" "))


def join_every_word(text: str, invisible: str) -> str:
    """The spaces themselves replaced by an invisible character: "in danger" -> "in.danger"."""
    return text.replace(" ", invisible)


@pytest.fixture(scope="module")
def matcher() -> EmergencyMatcher:
    return EmergencyMatcher(
        [phrase for phrases in DEFAULT_EMERGENCY_PHRASES.values() for phrase in phrases]
    )


def test_the_corpus_is_big_enough_and_has_no_repeats() -> None:
    assert len(MUST_ESCALATE) >= 150
    assert len(MUST_NOT_ESCALATE) >= 40
    for messages in (MUST_ESCALATE, MUST_NOT_ESCALATE, ACCEPTED_OVER_TRIGGERS):
        assert len(messages) == len(set(messages))
    assert not set(MUST_ESCALATE) & (set(MUST_NOT_ESCALATE) | set(ACCEPTED_OVER_TRIGGERS))


def test_default_lists_catch_every_message_in_the_corpus(matcher: EmergencyMatcher) -> None:
    missed = [text for text in MUST_ESCALATE if not matcher.matches(text)]
    assert missed == []


def test_default_lists_catch_messages_written_with_invisible_characters(
    matcher: EmergencyMatcher,
) -> None:
    missed = [text for text in WRITTEN_WITH_INVISIBLES if not matcher.matches(text)]
    assert missed == []


@pytest.mark.parametrize("invisible", INVISIBLES, ids=[f"U+{ord(c):04X}" for c in INVISIBLES])
def test_an_invisible_character_inside_or_between_words_changes_nothing(
    matcher: EmergencyMatcher, invisible: str
) -> None:
    inside = [split_every_word(text, invisible) for text in MUST_ESCALATE]
    between = [join_every_word(text, invisible) for text in MUST_ESCALATE]
    missed = [text for text in inside + between if not matcher.matches(text)]
    assert missed == []


def test_default_lists_leave_ordinary_messages_alone(matcher: EmergencyMatcher) -> None:
    paged = [text for text in MUST_NOT_ESCALATE if matcher.matches(text)]
    assert paged == []


def test_accepted_over_triggers_still_escalate(matcher: EmergencyMatcher) -> None:
    """For the record: when one of these stops escalating, a phrase that catches real
    emergencies has probably gone, and the file should be looked at again."""
    quiet = [text for text in ACCEPTED_OVER_TRIGGERS if not matcher.matches(text)]
    assert quiet == []
