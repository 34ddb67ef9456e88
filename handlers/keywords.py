"""Text matching for inbound messages: keywords, intake answers, emergencies, language.

Pure functions over strings; no I/O. Everything here runs on every inbound message.

Two different matching rules live here, on purpose:

* Keywords (STOP, HELP, ES, SAFE, ...) and intake answers (1-4) count only when they are the
  WHOLE message, after `normalize`. "please stop texting me" is a sentence, not an opt-out.
* Emergency phrases match ANYWHERE in the message, on word boundaries (see `EmergencyMatcher`).
  Missing an emergency is worse than paging on-call for nothing, so that side over-triggers.

Both sides fold the same way first: Unicode compatibility forms (NFKC), case, accents and
apostrophe variants, and invisible format characters, which are tried both deleted and as a
space. Only the emergency side also folds repeated letters ("heeelp"): a keyword is a
command with side effects, read the same way as the carrier reads it, while a cry for help
typed in a panic should be caught however it is spelled.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable

from bot.domain import IntakeCategory


class Keyword(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    INFO = "info"
    ERASE = "erase"
    EXIT = "exit"
    LANG_ES = "lang_es"
    LANG_EN = "lang_en"
    SAFE = "safe"
    NOT_SAFE = "not_safe"


# Everything phones and keyboards type where a person means "'": curly quotes, the modifier
# letter apostrophe (iOS in some locales), prime, and the acute accent / backtick that Spanish
# keyboards produce. The acute accent must be mapped before NFKD, which would otherwise turn it
# into a space plus a combining mark and split "can´t" into two words.
_APOSTROPHE_VARIANTS = "\u2018\u2019\u201b\u02bc\u2032\u00b4`"

# Invisible characters that copy/paste, keyboards and people hiding a word from a filter slip
# into messages: every format character (Unicode category Cf, as of Unicode 15: soft hyphen,
# zero-width space and joiners, bidi marks and isolates, word joiner, invisible operators,
# BOM, tags, ...), plus the Hangul fillers, letters that draw nothing and are used the same
# way. Written out so that importing stays cheap; a test checks them against the running
# Python's unicodedata.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0x3164, 0x3164), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_INVISIBLES = "".join(chr(c) for first, last in _INVISIBLE_RANGES for c in range(first, last + 1))
# As ranges: a class of 180 single characters is ten times slower to search.
_INVISIBLE = re.compile(
    "[" + "".join(f"{chr(first)}-{chr(last)}" for first, last in _INVISIBLE_RANGES) + "]"
)

# One translate pass each, before anything else: apostrophes made straight and invisible
# characters deleted; for words inside a sentence also the squared SOS emoji made a word.
_KEYWORD_CHARS = str.maketrans({**dict.fromkeys(_APOSTROPHE_VARIANTS, "'"),
                                **dict.fromkeys(_INVISIBLES)})
_SENTENCE_CHARS = str.maketrans({**dict.fromkeys(_APOSTROPHE_VARIANTS, "'"),
                                 **dict.fromkeys(_INVISIBLES), "\U0001f198": " sos "})


def _invisible_variants(text: str) -> tuple[str, ...]:
    """`text` with its invisible characters deleted and, if it has any, also with each one
    made a space. A zero-width space may stand inside a word ("he<ZWSP>lp") or between two
    ("in<ZWSP>danger"), and which was meant cannot be told, so callers try both."""
    if _INVISIBLE.search(text) is None:
        return (text,)
    return _INVISIBLE.sub("", text), _INVISIBLE.sub(" ", text)


def _fold(text: str, chars: dict[int, str | None] = _KEYWORD_CHARS) -> str:
    """Map `chars` (by default: apostrophes made straight, invisible characters deleted),
    casefold and strip accents, keeping everything else (punctuation, spacing)."""
    text = text.translate(chars).casefold()
    if text.isascii():
        return text  # the common case, and nothing below would change it
    # NFKD is NFKC's compatibility mapping (full-width letters, ligatures, mathematical
    # letters to plain ones) with accents left decomposed: "é" is "e" + combining accent.
    # Dropping nonspacing (Mn) and enclosing (Me) marks removes the accents, and also the
    # variation selector and keycap of the "1️⃣" emoji.
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))
    # Casefold again: a few compatibility characters decompose to capitals (e.g. "ℌ" -> "H").
    return stripped.casefold()


def _is_edge_junk(ch: str) -> bool:
    if ch.isalnum():  # the usual edge of a message, and never space or punctuation
        return False
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """Reduce a message to the form keywords are compared in.

    Casefolded, accents stripped, curly apostrophes made straight, runs of whitespace collapsed
    to one space, and whitespace plus Unicode punctuation (category P*: . ! ? ¡ ¿ # ) and so on)
    removed from both ends. Internal punctuation stays: "not-safe" keeps its hyphen.
    Emoji and other symbols are NOT punctuation and stay: "STOP 🛑" is not "stop".
    Invisible characters are deleted (`match_keyword` also tries them as spaces).
    """
    collapsed = " ".join(_fold(text).split())
    start, end = 0, len(collapsed)
    while start < end and _is_edge_junk(collapsed[start]):
        start += 1
    while end > start and _is_edge_junk(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _table(words: dict[Keyword, tuple[str, ...]]) -> dict[str, Keyword]:
    # Keys go through normalize so the table is written the way people read it ("ESPAÑOL")
    # and still compares equal to normalized messages ("espanol").
    return {normalize(word): keyword for keyword, group in words.items() for word in group}


_KEYWORDS = _table({
    Keyword.OPT_OUT: ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                      "OPTOUT", "PARAR", "BASTA", "ALTO"),
    Keyword.OPT_IN: ("START", "UNSTOP"),
    # HELP and AYUDA may mean "I need help" and are emergencies too; INFO only asks.
    Keyword.HELP: ("HELP", "AYUDA"),
    Keyword.INFO: ("INFO",),
    Keyword.ERASE: ("DELETE", "BORRAR"),
    Keyword.EXIT: ("EXIT", "SALIR"),
    Keyword.LANG_ES: ("ES", "ESPAÑOL", "ESPANOL"),
    Keyword.LANG_EN: ("EN", "ENGLISH"),
    Keyword.SAFE: ("SAFE", "SEGURO"),
    Keyword.NOT_SAFE: ("NOT SAFE", "NO SEGURO", "UNSAFE", "NOT-SAFE"),
})

# "yes" is an everyday word, so it only means "opt back in" to someone who has opted out
# (the carrier-standard re-subscribe reply).
_OPT_IN_WHEN_OPTED_OUT = _table({Keyword.OPT_IN: ("YES", "SI", "SÍ")})


def match_keyword(text: str, opted_out: bool) -> Keyword | None:
    """The keyword the whole message is, or None. `opted_out` enables YES/SI as opt-in.

    An invisible character counts either way: "HE<ZWSP>LP" is HELP, "NOT<ZWSP>SAFE" is
    NOT SAFE. Repeated letters are not folded: "STOPP" is not STOP.
    """
    for variant in _invisible_variants(text):
        word = normalize(variant)
        keyword = _KEYWORDS.get(word)
        if keyword is None and opted_out:
            keyword = _OPT_IN_WHEN_OPTED_OUT.get(word)
        if keyword is not None:
            return keyword
    return None


_INTAKE_ANSWERS = {
    "1": IntakeCategory.NEED_HELP_NOW,
    "2": IntakeCategory.CONNECT_SERVICES,
    "3": IntakeCategory.GET_INVOLVED,
    "4": IntakeCategory.OTHER,
}


def parse_intake_answer(text: str) -> IntakeCategory | None:
    """The intake category when the whole message is 1-4 ("1." "#2" "(3)" "4️⃣" too), else None."""
    # normalize strips the edge punctuation in "#2" / "1)" / "1." and the keycap of "1️⃣",
    # and maps full-width "２" to "2". "12", "1 2" and "I need 1 bed" stay as they are.
    return _INTAKE_ANSWERS.get(normalize(text))


# A "word character" for phrase boundaries: a letter or digit in any script. Underscore is left
# out (unlike \w) so "in_danger" still reads as two words.
_WORD = r"[^\W_]"
_GAP = r"[\W_]+"


# A run of one letter (not digit) repeated: "ll" in "kill".
_REPEATED_LETTER = re.compile(r"([^\W\d_])\1+")


def _word_fold(text: str) -> str:
    """`_fold` for words inside a sentence: 🆘 reads "sos", and apostrophes are deleted,
    which makes them optional: "can't", "can’t" and "cant" all become "cant"."""
    # Deleted after folding, as NFKD makes one of the full-width "＇".
    return _fold(text, _SENTENCE_CHARS).replace("'", "")


# The phrases as a trie of characters, so that the regex shares their common prefixes: with
# some 300 phrases, a flat alternation tries every one at every position of the message, and
# is several times slower. A space stands for the gap between two words (words never hold
# one) and "" marks the end of a phrase.
_Trie = dict[str, "_Trie"]
_GAP_KEY = " "
_END_KEY = ""


def _trie_pattern(node: _Trie) -> str:
    branches = [_char_pattern(key) + _trie_pattern(child)
                for key, child in node.items() if key != _END_KEY]
    if not branches:
        return ""
    if _END_KEY in node:  # a phrase may end here, or go on into a longer one
        return f"(?:{'|'.join(branches)})?"
    return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"


def _char_pattern(key: str) -> str:
    # A letter stands for a run of itself: the phrase's runs are folded at construction and
    # the message's in the search, with no pass over the message to fold them. Digits stay
    # exact: "911" does not match "9111".
    if key == _GAP_KEY:
        return _GAP
    return re.escape(key) if key.isdecimal() else re.escape(key) + "+"


class EmergencyMatcher:
    """Finds configured emergency phrases anywhere in a message.

    Matching rules (kept deliberately simple so operators can predict them):

    * A phrase matches on word boundaries only: "kill" matches "he will kill me!" but not
      "skills"; "911" matches "call 911" but not "9115".
    * Case- and accent-insensitive in both directions ("peligro" matches "PELIGRÓ" and a
      configured "ayúdenme" matches "ayudenme"), after Unicode compatibility normalisation
      (NFKC): full-width "ＨＥＬＰ" and mathematical "𝐡𝐞𝐥𝐩" are "help".
    * Apostrophes are optional: "can't leave" matches "cant leave", "can’t leave".
    * Repeated letters count once, in the phrase and in the message: "help me" matches
      "heeelp meee" and "helppp me"; "kill" matches "kil" (and "skills" still does not
      match). Digits are never folded: "911" does not match "9111".
    * Invisible characters (zero-width space, soft hyphen, joiners, bidi marks, ...) count
      both as nothing and as a space: "he<ZWSP>lp me" and "in<ZWSP>danger" both match.
    * The 🆘 emoji reads as the word "sos".
    * Between the words of a phrase, any run of spaces, newlines or punctuation is accepted:
      "in danger" matches "in\\ndanger" and "in... danger"; "9-1-1" matches "9 1 1".
    * No stemming and no fuzzy matching: "kill" does not match "killed". Variants belong in the
      configured phrase lists. Numbers are not reassembled either: "911" does not match "9 1 1"
      unless "9-1-1" (or "9 1 1") is also configured. It DOES match "555-911-2345"; that
      over-trigger is accepted.

    All phrases are compiled into one regular expression at construction time, and a message
    is searched once (twice when it holds an invisible character).
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        if isinstance(phrases, str):
            # A bare string would be iterated letter by letter and match almost everything.
            raise TypeError("phrases must be an iterable of phrases, not a single string")
        trie: _Trie = {}
        for phrase in phrases:
            words = re.findall(_WORD + "+", _REPEATED_LETTER.sub(r"\1", _word_fold(phrase)))
            if not words:
                raise ValueError(f"emergency phrase has no words to match: {phrase!r}")
            node = trie
            for key in _GAP_KEY.join(words):
                node = node.setdefault(key, {})
            node[_END_KEY] = {}
        self._pattern: re.Pattern[str] | None = None
        if trie:
            # An empty alternation would match every message; with no phrases, nothing matches.
            self._pattern = re.compile(rf"(?<!{_WORD}){_trie_pattern(trie)}(?!{_WORD})")

    def matches(self, text: str) -> bool:
        if self._pattern is None:
            return False
        pattern = self._pattern
        for variant in _invisible_variants(text):
            if pattern.search(_word_fold(variant)) is not None:
                return True
        return False


# Language guess for a first message. Words are compared after _word_fold, so they are
# written here without accents or apostrophes. Words common to both languages or too short to
# tell ("no", "si", "me", "a", "ok") are in neither set. "en" is left out as well because "EN"
# on its own is the switch-to-English keyword.
_SPANISH_WORDS = frozenset({
    "hola", "buenas", "buenos", "dias", "tardes", "noches", "gracias", "favor", "porfa", "ayuda",
    "ayudame", "ayudenme", "ayudar", "auxilio", "socorro", "necesito", "necesita", "necesitamos",
    "estoy", "esta", "estan", "estamos", "tengo", "tiene", "tienen", "quiero", "quiere", "puedo",
    "puede", "pueden", "puedes", "soy", "somos", "eres", "hay", "hablo", "habla", "hablar",
    "espanol", "yo", "mi", "mis", "tu", "usted", "ustedes", "el", "ella", "ellos", "ellas",
    "nosotros", "que", "donde", "como", "cuando", "porque", "pero", "para", "con", "sin", "por",
    "muy", "aqui", "ahora", "alguien", "nada", "tambien", "es", "son", "y", "o", "de", "del", "la",
    "las", "los", "un", "una", "al", "lo", "le", "les", "se", "su", "sus", "te", "nos", "algo",
    "trabajo", "casa", "jefe", "patron", "dinero", "pasaporte", "papeles", "peligro", "miedo",
    "salir", "llamo", "senor", "senora", "senorita", "hija", "hijo", "familia", "esposo", "novio",
    "informacion", "llamar", "mensaje"
})

_ENGLISH_WORDS = frozenset({
    "hi", "hello", "hey", "thanks", "thank", "please", "i", "im", "ive", "id", "my", "mine", "you",
    "your", "youre", "we", "they", "he", "she", "it", "its", "the", "an", "is", "am", "are", "was",
    "were", "be", "been", "this", "that", "what", "where", "when", "how", "who", "why", "can",
    "cant", "could", "will", "wont", "would", "need", "needs", "want", "wanted", "have", "has",
    "had", "get", "got", "help", "from", "with", "for", "of", "to", "in", "on", "at", "and", "but",
    "not", "dont", "do", "does", "did", "just", "about", "know", "call", "text", "work", "job",
    "safe", "danger", "someone", "yes", "there", "here", "if", "or", "any", "some"
})

# Characters that English text practically never has and Spanish text often does.
_SPANISH_CHARS = frozenset("¿¡ñáéíóúü")


def looks_spanish(text: str) -> bool:
    """Guess whether a first message is written in Spanish.

    A marker count, not a language model: Spanish words (plus one point per distinct ¿ ¡ ñ or
    accented vowel) against English words. True only when Spanish strictly wins, so ties,
    empty and ambiguous messages ("ok", "si", "no") default to English.
    """
    # NFC so a decomposed "a" + combining accent still counts as "á".
    lowered = unicodedata.normalize("NFC", text.casefold())
    spanish = len(_SPANISH_CHARS.intersection(lowered))
    english = 0
    for word in re.findall(_WORD + "+", _word_fold(text)):
        if word in _SPANISH_WORDS:
            spanish += 1
        elif word in _ENGLISH_WORDS:
            english += 1
    return spanish > english
