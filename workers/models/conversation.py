"""What a shopper's messages add up to, by general rules: the latest message wins.

No model runs here: this is the deterministic understanding of a dialogue that the text-first
query, the grounded fallback description and the grounding checks share.

- Additions accumulate: "a heart" then "white" is a white heart.
- A negation removes what it names: "not a plane, it goes to space" drops "plane" (from the whole
  dialogue) and keeps "it goes to space"; the negated words are listed in ``excluded``.
- A correction that names a new thing replaces what came before: "a green frog" then
  "actually I'd rather have a cat" is a cat. A correction that refers back ("actually one with
  stripes", "make it blue") keeps the thing and changes it.
- Single-valued attributes (colour, size) follow the latest message: "a red star" then
  "make it blue" is a blue star; "a black heart" then "lighter, grey" a grey heart.

Parts carry recency weights (the latest message counts most) for the text-first query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .protocols import Dialogue

# Words that start a correction of what was said before.
_CORRECTION = re.compile(
    r"^\s*(?:actually|instead|rather|no|nope|wait|sorry|oops|hmm|well|on second thought|"
    r"scratch that|change of plan|i changed my mind)\b[\s,!.:;-]*",
    re.IGNORECASE,
)
# Phrases that announce a replacement object ("I'd rather have a cat", "instead, a dog").
_REPLACING = re.compile(
    r"^\s*(?:i'?d (?:rather|prefer)(?: have| get| see| like)?|i (?:would )?(?:rather|prefer)"
    r"(?: have| get| see)?|i want|i'?d like|let'?s (?:go with|try|do)|show me|how about|"
    r"what about|change it to|(?:make|turn) it (?:into )?an?|instead of that,?)\s+",
    re.IGNORECASE,
)
# Phrases that keep the thing and change it ("make it blue", "one with stripes").
_MODIFYING = re.compile(
    r"^\s*(?:make it|make them|turn it|change it to|(?:a |the )?(?:one|ones|it|that|those|this)\b|"
    r"with|without|but|and|more|less|a bit|bit|slightly|much|very)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:not|no|without|except|never|isn'?t|aren'?t|don'?t (?:want|like)|do not (?:want|like)|"
    r"rather than|instead of)\s+(?P<rest>[^,.;!?]+)",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"\b(?:a|an|some|the)\s+\w", re.IGNORECASE)
# Filler at the start of a message that says nothing about the product.
_PREAMBLE = re.compile(
    r"^\s*(?:make it|make them|turn it|i'?m looking for|i am looking for|looking for|i need|"
    r"i want|i'?d like|"
    r"i would like|i'?d rather (?:have|get|see)|show me|find me|do you have|"
    r"(?:it|they|he|she) (?:looks?|is|are|'s|has|have|seems?)(?: like)?|it'?s)\s+",
    re.IGNORECASE,
)

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "one",
        "ones",
        "some",
        "any",
        "something",
        "thing",
        "things",
        "i",
        "i'd",
        "i'm",
        "me",
        "my",
        "we",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "their",
        "his",
        "her",
        "there",
        "here",
        "very",
        "really",
        "quite",
        "so",
        "too",
        "just",
        "also",
        "but",
        "if",
        "then",
        "than",
        "more",
        "less",
        "most",
        "much",
        "many",
        "bit",
        "little",
        "like",
        "looks",
        "look",
        "looking",
        "seems",
        "want",
        "would",
        "rather",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "not",
        "no",
        "can",
        "could",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "please",
        "actually",
        "instead",
        "maybe",
        "kind",
        "sort",
        "type",
        "which",
        "who",
        "what",
        "where",
        "when",
        "how",
        "all",
        "each",
        "other",
        "another",
        "same",
        "such",
        "only",
        "own",
        "about",
        "into",
        "over",
        "under",
        "up",
        "down",
        "out",
        "off",
        "again",
        "once",
    ]
)

COLOURS = frozenset(
    [
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "violet",
        "pink",
        "brown",
        "black",
        "white",
        "grey",
        "gray",
        "silver",
        "gold",
        "golden",
        "beige",
        "cyan",
        "magenta",
        "turquoise",
        "teal",
        "navy",
        "maroon",
    ]
)
SIZES = frozenset(
    ["big", "small", "large", "tiny", "huge", "little", "giant", "short", "tall", "long", "mini"]
)
COMPARATIVES = frozenset(
    [
        "lighter",
        "darker",
        "brighter",
        "paler",
        "deeper",
        "bigger",
        "smaller",
        "larger",
        "longer",
        "shorter",
        "taller",
        "wider",
        "narrower",
        "thicker",
        "thinner",
    ]
)
_CHANGE_IT = re.compile(r"^\s*(?:make|turn|change|paint) (?:it|them|that)\b", re.IGNORECASE)
_SINGLE_VALUED = (COLOURS, SIZES)

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def stem(word: str) -> str:
    """A crude English stem, enough to match 'stripes'/'striped', 'cries'/'crying'."""
    w = word.lower()
    for suffix in ("ing", "ied", "ies", "ed", "es", "s", "ly", "er", "est"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]


@dataclass(frozen=True)
class Part:
    """One message's contribution: its cleaned text and its weight in the query."""

    text: str
    weight: float
    index: int


@dataclass(frozen=True)
class Understanding:
    parts: list[Part]
    excluded: list[str] = field(default_factory=list)
    # Index of the message the understanding starts from (a replacing correction's).
    start: int = 0

    @property
    def latest(self) -> Part | None:
        return self.parts[-1] if self.parts else None

    def description(self) -> str:
        """One short, grounded sentence: the parts in order, the shopper's own words."""
        texts = [p.text for p in self.parts if p.text]
        return ", ".join(dict.fromkeys(texts))

    def query_text(self) -> str:
        return self.description()

    def weighted(self) -> list[tuple[str, float]]:
        return [(p.text, p.weight) for p in self.parts if p.text]


def _messages(dialogue: Dialogue) -> list[str]:
    return [m.strip() for m in [dialogue.caption, *dialogue.rounds] if m and m.strip()]


def _negated(text: str) -> tuple[str, list[str]]:
    """The text without its negated phrases, and the content words they named."""
    excluded: list[str] = []

    def drop(match: re.Match[str]) -> str:
        rest = match["rest"]
        # The negation covers the next noun phrase: up to a clause boundary ("it", "but").
        phrase = re.split(r"\b(?:it|but|and|so|because|that|which)\b", rest, maxsplit=1)[0]
        named = content_words(phrase)[:3]
        excluded.extend(named)
        return rest[len(phrase) :] if len(phrase) < len(rest) else ""

    kept = _NEGATION.sub(drop, text)
    return kept, excluded


def _clean(text: str) -> str:
    text = _CORRECTION.sub("", text)
    for _ in range(2):
        text = _PREAMBLE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip(" ,.;:!?-")
    # What a removed negation leaves dangling ("it stings and has [no bones]").
    pieces = text.split(" ")
    while len(pieces) > 1 and pieces[-1].lower().strip(",;:") in STOPWORDS:
        pieces.pop()
    return " ".join(pieces).strip(" ,;:-")


def _drop_words(text: str, remove: set[str]) -> str:
    if not remove:
        return text
    kept = [w for w in re.split(r"(\s+)", text) if w.strip(" ,.;:!?").lower() not in remove]
    return re.sub(r"\s+", " ", "".join(kept)).strip(" ,.;:!?-")


def understand(dialogue: Dialogue, *, decay: float = 0.6) -> Understanding:
    """The dialogue's messages after corrections, negations and attribute changes."""
    raw: list[tuple[int, str]] = []
    excluded: list[str] = []
    start = 0
    for index, message in enumerate(_messages(dialogue)):
        corrected = bool(_CORRECTION.match(message))
        body = _CORRECTION.sub("", message)
        body, named = _negated(body)
        excluded.extend(named)
        replacing = bool(_REPLACING.match(body)) or (corrected and not _MODIFYING.match(body))
        cleaned = _clean(body)
        if index and replacing and _ARTICLE.search(body) and content_words(cleaned):
            # A new thing: what came before is superseded.
            raw = []
            start = index
        new_words = set(content_words(cleaned))
        # "make it blue", "actually blue", "lighter, grey": a change of the thing's attribute. An
        # attribute of a part ("with a white handle") adds to the thing instead.
        changing = (
            corrected
            or bool(_CHANGE_IT.match(body))
            or bool(new_words and new_words <= COLOURS | SIZES | COMPARATIVES)
        )
        for attribute in _SINGLE_VALUED:
            changed = new_words & attribute
            if changed and changing:
                raw = [(i, _drop_words(t, set(attribute) - changed)) for i, t in raw]
        raw.append((index, cleaned))
    gone = set(excluded)
    kept = [(i, _drop_words(t, gone)) for i, t in raw]
    kept = [(i, t) for i, t in kept if content_words(t)]
    n = len(kept)
    parts = [Part(t, round(decay ** (n - 1 - k), 4), i) for k, (i, t) in enumerate(kept)]
    return Understanding(parts=parts, excluded=list(dict.fromkeys(excluded)), start=start)


def supported(word: str, dialogue_words: set[str]) -> bool:
    """Whether a word of a description is backed by the dialogue (same word or stem)."""
    w = word.lower()
    return w in dialogue_words or stem(w) in {stem(d) for d in dialogue_words}
