"""SMS encoding arithmetic: GSM-7 or UCS-2, septet counts, and how many segments a text costs.

Carriers send a text as GSM-7 when every character is in the GSM 03.38 default alphabet or its
extension table, and as UCS-2 otherwise; one curly quote or emoji switches the whole message to
UCS-2 and cuts a segment from 160 to 70 characters. Note that Spanish á í ó ú are NOT in the
default alphabet (é ñ ü ¿ ¡ are), so most Spanish replies go out as UCS-2.

The character table comes from the `gsm0338` package. It is read once through the codec's public
decode: every single byte is a 1-septet character, every escape (0x1B) + byte pair that decodes
is a 2-septet extension character ({ } [ ] \\ ~ ^ | € and form feed).
"""

from __future__ import annotations

import unicodedata

import gsm0338

_ESCAPE = 0x1B

SINGLE_GSM_SEPTETS = 160
MULTI_GSM_SEPTETS = 153  # 7 septets of each part go to the concatenation header
SINGLE_UCS2_UNITS = 70
MULTI_UCS2_UNITS = 67


def _build_septet_table() -> dict[str, int]:
    codec = gsm0338.Codec()
    table: dict[str, int] = {}
    for byte in range(0x80):
        if byte == _ESCAPE:
            # 0x1B is the escape prefix, not a character. The package also maps it to U+001B
            # for encoding, but a raw ESC in a text would be read as an escape on the handset,
            # so it is left out: a text containing ESC is not GSM-7 here.
            continue
        table[codec.decode(bytes((byte,)))[0]] = 1
        try:
            extension = codec.decode(bytes((_ESCAPE, byte)))[0]
        except UnicodeDecodeError:
            continue  # no extension character at this position
        table[extension] = 2
    return table


_SEPTETS = _build_septet_table()


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM 03.38 default alphabet or extension table.

    Checks the text exactly as given: a decomposed "e" + combining accent is not GSM-7 even
    though a precomposed "é" is.
    """
    return all(ch in _SEPTETS for ch in text)


def septets(text: str) -> int:
    """GSM-7 septets needed for `text`; extension characters count 2.

    Raises ValueError when the text is not GSM-7 (see `is_gsm7`).
    """
    try:
        return sum(_SEPTETS[ch] for ch in text)
    except KeyError as error:
        raise ValueError(f"not encodable in GSM-7: {error.args[0]!r}") from None


def _ucs2_units(ch: str) -> int:
    # UTF-16 code units: characters outside the BMP (most emoji) take a surrogate pair.
    return 2 if ord(ch) > 0xFFFF else 1


def sms_segments(text: str) -> int:
    """How many SMS segments `text` is sent as. Empty text is 1.

    GSM-7: up to 160 septets is 1 segment, otherwise parts of up to 153 septets.
    UCS-2: up to 70 UTF-16 code units is 1 segment, otherwise parts of up to 67 units.
    When splitting, an escape pair (GSM-7) or a surrogate pair (UCS-2) is never cut in half,
    as real encoders do, so a long text can need one part more than total / 153 (or / 67).
    """
    if is_gsm7(text):
        costs = [_SEPTETS[ch] for ch in text]
        single, multi = SINGLE_GSM_SEPTETS, MULTI_GSM_SEPTETS
    else:
        costs = [_ucs2_units(ch) for ch in text]
        single, multi = SINGLE_UCS2_UNITS, MULTI_UCS2_UNITS
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments += 1
            used = 0
        used += cost
    return segments


# Typography that phones and word processors put in, and its plain GSM-7 spelling.
_TYPOGRAPHIC = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'",
                              "\u2013": "-", "\u2014": "-", "\u2026": "..."})


def to_gsm7(text: str, missing: str = "?") -> str:
    """Text that goes out as one 7-bit SMS alphabet: typographic quotes and dashes made
    plain, accents outside GSM-7 dropped (á -> a, a no-break space -> space), and any other
    character (emoji) replaced by `missing`."""
    out = []
    for char in text.translate(_TYPOGRAPHIC):
        if is_gsm7(char):
            out.append(char)
            continue
        kept = "".join(c for c in unicodedata.normalize("NFKD", char) if is_gsm7(c))
        out.append(kept or missing)
    return "".join(out)
