"""The constraints a shopper states in words: price bounds, availability and the catalog's values.

No model runs here and nothing is guessed: numbers and currencies are parsed ("under 40 euros",
"less than $30", "between 20 and 50 EUR", "max 25€", "moins de 40 €", "unter 40 Euro"), and brand,
category and attribute values are recognised only when a message names one of the catalog's own
values (whole words, case and accents ignored). What is not in the catalog is never a filter.

As in ``conversation``, the latest message wins: "actually under 60" replaces "under 40"; a
message naming another colour replaces the colour; "any price" / "no price limit" and "any brand"
take a constraint away; a negated phrase ("not red") names nothing. Each constraint remembers the
message that stated it last (``at``), so a caller can tell what was said after some moment (a
removed chip stays removed until the shopper says it again).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

from .conversation import _CORRECTION, _negated

PRICE = "price"
AVAILABILITY = "availability"
IN_STOCK = "in_stock"


@dataclass(frozen=True)
class Vocabulary:
    """What a catalog can be filtered by: text facets (brand, category, attribute names) with the
    values its items have, and the currencies it prices in (most used first)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    currencies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Said:
    """One constraint: ``values`` (any of them) for a text facet or availability; ``low``/``high``
    (inclusive) in ``currency`` for the price. ``at``: the message that stated it last."""

    key: str
    values: tuple[str, ...] = ()
    low: Decimal | None = None
    high: Decimal | None = None
    currency: str = ""
    at: int = 0


@dataclass(frozen=True)
class Heard:
    """A dialogue's constraints by key, and the keys a message took away (key -> message)."""

    filters: dict[str, Said]
    cleared: dict[str, int]


# --- money -------------------------------------------------------------------------------------

_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "₩": "KRW", "zł": "PLN"}
_CURRENCY_WORDS = {
    "EUR": "euro euros eur euro's",
    "USD": "dollar dollars usd bucks buck",
    "GBP": "pound pounds gbp quid",
    "JPY": "yen jpy",
    "CHF": "chf franc francs franken",
    "SEK": "sek kronor",
    "NOK": "nok",
    "DKK": "dkk",
    "PLN": "pln zloty zlotych",
    "INR": "inr rupee rupees",
    "CAD": "cad",
    "AUD": "aud",
}
_WORD_CURRENCY = {w: code for code, ws in _CURRENCY_WORDS.items() for w in ws.split()}
_SYMBOL = "|".join(re.escape(s) for s in _SYMBOLS)
_CUR_WORD = "|".join(sorted(_WORD_CURRENCY, key=len, reverse=True))
_NUMBER = r"\d{1,9}(?:[.,]\d{3})*(?:[.,]\d{1,2})?"
# An amount: "€25", "25€", "25 euros", "EUR 25", "$ 30", or a bare number.
_AMOUNT = (
    rf"(?:(?P<{{n}}pre>{_SYMBOL}|\b(?:{_CUR_WORD})\b)\s*(?P<{{n}}a>{_NUMBER})"
    rf"|(?P<{{n}}b>{_NUMBER})\s*(?P<{{n}}post>{_SYMBOL}|(?:{_CUR_WORD})\b)?)"
)


def _amount(name: str) -> str:
    return _AMOUNT.replace("{n}", name)


# Words before an upper bound, in a few languages (English, French, German, Spanish, Italian,
# Dutch); after one ("40 euros or less", "25€ max").
_BELOW = (
    r"under|below|beneath|less than|cheaper than|lower than|no more than|not more than|"
    r"at most|up to|upto|max(?:imum)?\.?|within|budget(?: of| is)?|<=?|≤|"
    r"moins de|en dessous de|jusqu'à|jusqu'a|"
    r"unter|bis|höchstens|hochstens|maximal|weniger als|"
    r"menos de|por debajo de|hasta|máximo|"
    r"meno di|sotto|fino a|massimo|"
    r"onder|minder dan|tot"
)
_BELOW_AFTER = r"or less|or under|or cheaper|max(?:imum)?|tops|at most|at the most|and under"
_ABOVE = (
    r"no less than|not less than|over|above|more than|at least|min(?:imum)?\.?|"
    r"starting (?:at|from)|from|>=?|≥|"
    r"plus de|au moins|à partir de|a partir de|"
    r"über|uber|mehr als|mindestens|ab|"
    r"más de|mas de|al menos|desde|"
    r"più di|piu di|almeno|"
    r"boven|meer dan|vanaf"
)
# Lower-bound words that also start dates and places ("from 2019", "ab Werk").
_FROM = re.compile(
    r"(?:starting (?:at|from)|from|à partir de|a partir de|ab|desde|vanaf)\b", re.IGNORECASE
)
_ABOVE_AFTER = r"or more|and up|and above|or above|\+|plus"
_BETWEEN = r"between|from|entre|zwischen|tra|fra|tussen"
_AND = r"and|to|-|\u2013|\u2014|et|und|y|e|en|bis|a|à"

_RANGE = re.compile(
    rf"(?:\b(?:{_BETWEEN})\s+)?{_amount('x')}\s*(?:{_AND})\s*{_amount('y')}", re.IGNORECASE
)
_HIGH = re.compile(rf"(?:(?<!\w)(?<!no )(?<!not )(?:{_BELOW}))\s*{_amount('x')}", re.IGNORECASE)
_HIGH_AFTER = re.compile(rf"{_amount('x')}\s*(?:{_BELOW_AFTER})(?!\w)", re.IGNORECASE)
_LOW = re.compile(rf"(?:(?<!\w)(?<!no )(?<!not )(?:{_ABOVE}))\s*{_amount('x')}", re.IGNORECASE)
_LOW_AFTER = re.compile(rf"{_amount('x')}\s*(?:{_ABOVE_AFTER})(?!\w)", re.IGNORECASE)
# A unit right after a number makes it something else than a price ("under 40 cm").
_UNIT = re.compile(
    r"\s*(?:cm|mm|m|km|kg|g|mg|l|ml|in|inch|inches|ft|feet|foot|lbs?|oz|%|x|years?|yrs?|months?|"
    r"days?|hours?|min|minutes?|pieces?|pcs|items?|pack|people|persons?|size|sizes|gb|tb|mb|w|"
    r"v|mah|mp|k)\b",
    re.IGNORECASE,
)
_CLEAR_PRICE = re.compile(
    r"\b(?:any|whatever(?: the)?|all) (?:price|prices|budget)\b|\bno (?:price|budget)"
    r"(?: (?:limit|cap|constraint|range|restriction))?\b|\bprice (?:doesn'?t|does not) matter\b|"
    r"\bprice is no (?:object|issue)\b|\bmoney is no object\b|\b(?:forget|ignore|drop|remove)"
    r" (?:the |my )?(?:price|budget)\b|\bregardless of (?:the )?price\b|\bn'importe quel prix\b|"
    r"\begal welcher preis\b",
    re.IGNORECASE,
)
_IN_STOCK = re.compile(
    r"\b(?:in stock|available now|in store|ready to ship|ships now|en stock|auf lager|"
    r"lieferbar|disponible|disponibile|op voorraad)\b",
    re.IGNORECASE,
)
_CLEAR_STOCK = re.compile(
    r"\b(?:any availability|out of stock is (?:fine|ok|okay)|(?:pre-?order|backorder)s? "
    r"(?:is|are) (?:fine|ok|okay)|(?:don'?t|do not) care (?:about|if it'?s in) stock)\b",
    re.IGNORECASE,
)


def parse_number(text: str) -> Decimal | None:
    """ "1,299.50", "1.299,50", "19,99", "40" -> Decimal; a comma or point before one or two final
    digits is the decimal mark, before three a thousands separator."""
    text = text.strip()
    match = re.fullmatch(r"(\d[\d.,]*?)(?:[.,](\d{1,2}))?", text)
    if not match:
        return None
    whole = re.sub(r"[.,]", "", match[1])
    try:
        return Decimal(f"{whole}.{match[2]}" if match[2] else whole)
    except InvalidOperation:
        return None


def _currency(match: re.Match[str], name: str) -> str:
    marks = [match.group(f"{name}pre"), match.group(f"{name}post")]
    for mark in marks:
        if mark:
            mark = mark.strip().lower()
            return _SYMBOLS.get(mark) or _WORD_CURRENCY.get(mark) or mark.upper()
    return ""


def _value(match: re.Match[str], name: str) -> Decimal | None:
    return parse_number(match.group(f"{name}a") or match.group(f"{name}b") or "")


def _bare_unit(text: str, match: re.Match[str], name: str) -> bool:
    """A number with no currency followed by a unit ("under 40 cm") is not a price."""
    if _currency(match, name):
        return False
    return bool(_UNIT.match(text, match.end()))


@dataclass(frozen=True)
class _Bounds:
    low: Decimal | None = None
    high: Decimal | None = None
    currency: str = ""


def price_bounds(text: str) -> _Bounds | None:
    """The price bounds one message states, or None. A range wins over single bounds."""
    for match in _RANGE.finditer(text):
        if _bare_unit(text, match, "y"):
            continue
        currency = _currency(match, "x") or _currency(match, "y")
        # "20-50" alone is not obviously money; it is with a currency or "between".
        said_between = re.match(rf"(?:{_BETWEEN})\b", match.group(0), re.IGNORECASE)
        if not currency and not said_between:
            continue
        low, high = _value(match, "x"), _value(match, "y")
        if low is not None and high is not None:
            return _Bounds(min(low, high), max(low, high), currency)
    low = high = None
    currency = ""
    bounds = ((_HIGH, True), (_HIGH_AFTER, True), (_LOW, False), (_LOW_AFTER, False))
    for pattern, is_high in bounds:
        for match in pattern.finditer(text):
            if _bare_unit(text, match, "x"):
                continue
            value = _value(match, "x")
            if value is None:
                continue
            # "over 20" alone is a lower bound, but "from 2019", "20+" and "20 plus" need a
            # currency to mean money.
            vague = pattern is _LOW_AFTER or (
                pattern is _LOW and _FROM.match(match.group(0)) is not None
            )
            if vague and not _currency(match, "x"):
                continue
            currency = currency or _currency(match, "x")
            if is_high and high is None:
                high = value
            elif not is_high and low is None:
                low = value
    if low is None and high is None:
        return None
    return _Bounds(low, high, currency)


# --- facet values ------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """Lower case without accents: "Crème" and "creme" are the same word."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(fold(text))


# Single words never taken as a facet value on their own: they say too little.
# (Shorter single words never count: "s", "m", "xl" would match too much.)
_TOO_VAGUE = frozenset(("the", "and", "for", "with", "one", "any", "all", "other", "new", "none"))


def _phrases(key: str, value: str) -> list[list[str]]:
    """The word sequences that name a value: the value itself and, for a category path
    ("Apparel > Dresses"), its last part."""
    out = [tokens(value)]
    if key == "category":
        leaf = re.split(r"\s*[>/|]\s*", value)[-1]
        out.append(tokens(leaf))
    usable = []
    for phrase in out:
        if not phrase or all(w.isdigit() for w in phrase):
            continue
        if len(phrase) == 1 and (len(phrase[0]) < 3 or phrase[0] in _TOO_VAGUE):
            continue
        if phrase not in usable:
            usable.append(phrase)
    return usable


def _contains(words: list[str], phrase: list[str]) -> bool:
    """Whole words in order; the last may carry a plural ending ("dresses" names "dress")."""
    n = len(phrase)
    for i in range(len(words) - n + 1):
        if words[i : i + n - 1] != phrase[:-1]:
            continue
        last, want = words[i + n - 1], phrase[-1]
        if (
            last == want
            or last in (want + "s", want + "es")
            or (want.endswith("y") and last == want[:-1] + "ies")
        ):
            return True
    return False


def _named_values(words: list[str], vocabulary: Vocabulary) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for key, values in vocabulary.values.items():
        for value in values:
            if any(_contains(words, phrase) for phrase in _phrases(key, value)):
                named.setdefault(key, []).append(value)
    # "dark blue" names "dark blue", not also "blue": drop values inside a longer match.
    for key, found in named.items():
        folded = [tokens(v) for v in found]
        named[key] = [
            v
            for v, t in zip(found, folded, strict=True)
            if not any(len(o) > len(t) and _contains(o, t) for o in folded)
        ]
    return named


def _clears(text: str, keys: list[str]) -> list[str]:
    """Facets a message takes away: "any brand", "whatever colour", "no brand preference"."""
    gone = []
    folded = fold(text)
    for key in keys:
        names = {fold(key), fold(key).replace("_", " ")}
        if key in ("color", "colour"):
            names |= {"color", "colour"}
        for name in names:
            plural = rf"{re.escape(name)}s?"
            if re.search(
                rf"\b(?:any|whatever(?: the)?|every|all) {plural}\b"
                rf"|\bno {plural} (?:preference|in particular)\b"
                rf"|\b(?:forget|ignore|drop|remove) (?:the )?{plural}\b"
                rf"|\b{plural} (?:doesn'?t|does not) matter\b",
                folded,
            ):
                gone.append(key)
                break
    return gone


# --- the dialogue ------------------------------------------------------------------------------


def extract(messages: list[str], vocabulary: Vocabulary) -> Heard:
    """The constraints of a dialogue (first message first), the latest message winning."""
    found: dict[str, Said] = {}
    cleared: dict[str, int] = {}
    default_currency = vocabulary.currencies[0] if vocabulary.currencies else ""
    for at, message in enumerate(messages):
        body = _CORRECTION.sub("", message)
        # Negations name no value ("not red"); prices and "no price limit" are read from the
        # whole message: "no more than 40" is a negation (and "no" a correction) to
        # ``conversation``.
        kept, _negated_words = _negated(body)
        for key in _clears(message, list(vocabulary.values)):
            found.pop(key, None)
            cleared[key] = at
        if _CLEAR_PRICE.search(message):
            found.pop(PRICE, None)
            cleared[PRICE] = at
        elif vocabulary.currencies:  # a catalog without prices has no price to filter by
            bounds = price_bounds(message)
            if bounds is not None:
                found[PRICE] = _merge_price(found.get(PRICE), bounds, at, default_currency)
        if _CLEAR_STOCK.search(message):
            found.pop(AVAILABILITY, None)
            cleared[AVAILABILITY] = at
        elif _IN_STOCK.search(kept):
            found[AVAILABILITY] = Said(AVAILABILITY, (IN_STOCK,), at=at)
        for key, values in _named_values(tokens(kept), vocabulary).items():
            if values:
                # Single-valued, like a colour in ``conversation``: this message's values replace
                # the earlier ones; several in one message ("red or blue") are alternatives.
                found[key] = Said(key, tuple(values), at=at)
    return Heard(found, cleared)


def _merge_price(before: Said | None, bounds: _Bounds, at: int, default: str) -> Said:
    """A new bound replaces the same bound; the other one stays unless the currency changed or it
    would contradict the new one ("under 40", then "over 50": only "over 50" is left)."""
    currency = bounds.currency or (before.currency if before else "") or default
    low, high = bounds.low, bounds.high
    if before is not None and before.currency == currency:
        if low is None and high is not None and before.low is not None and before.low <= high:
            low = before.low
        if high is None and low is not None and before.high is not None and before.high >= low:
            high = before.high
    return replace(Said(PRICE), low=low, high=high, currency=currency, at=at)
