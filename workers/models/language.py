"""Is a shopper's message English? A small stop-word vote, no model.

The offline encoders (MiniLM, the CLIP stand-in) and SmolLM2 understand English only: a message
in another language is then searched with its own words (names are often shared: "un dragon") and
the page says that the search understands English, instead of letting the LLM turn it into
something else. A refiner that ``translates`` (the standard LLM, an OpenAI-compatible server) is
asked to write the description in English instead.
"""

from __future__ import annotations

import re

# Frequent function words that English does not have (or rarely writes in a product query).
_MARKERS: dict[str, frozenset[str]] = {
    "French": frozenset(
        [
            "un",
            "une",
            "le",
            "la",
            "les",
            "des",
            "du",
            "de",
            "avec",
            "sans",
            "pour",
            "est",
            "et",
            "très",
            "qui",
            "je",
            "veux",
            "cherche",
            "voudrais",
            "mais",
            "plutôt",
            "grand",
            "grande",
            "petit",
            "petite",
            "rouge",
            "vert",
            "verte",
            "bleu",
            "bleue",
            "noir",
            "noire",
            "blanc",
            "blanche",
        ]
    ),
    "German": frozenset(
        [
            "ein",
            "eine",
            "einen",
            "einem",
            "einer",
            "der",
            "die",
            "das",
            "den",
            "dem",
            "des",
            "und",
            "mit",
            "ohne",
            "für",
            "ist",
            "sehr",
            "ich",
            "möchte",
            "suche",
            "nicht",
            "kein",
            "keine",
            "aber",
            "groß",
            "große",
            "klein",
            "kleine",
            "rot",
            "rote",
            "grün",
            "grüne",
            "blau",
            "blaue",
            "schwarz",
            "schwarze",
            "weiß",
            "weiße",
        ]
    ),
    "Spanish": frozenset(
        [
            "un",
            "una",
            "unos",
            "unas",
            "el",
            "los",
            "las",
            "del",
            "con",
            "sin",
            "para",
            "es",
            "muy",
            "quiero",
            "busco",
            "pero",
            "más",
            "grande",
            "pequeño",
            "pequeña",
            "rojo",
            "roja",
            "verde",
            "azul",
            "negro",
            "negra",
            "blanco",
            "blanca",
        ]
    ),
    "Italian": frozenset(
        [
            "un",
            "una",
            "uno",
            "il",
            "lo",
            "gli",
            "della",
            "con",
            "senza",
            "per",
            "è",
            "molto",
            "voglio",
            "cerco",
            "ma",
            "più",
            "grande",
            "piccolo",
            "piccola",
            "rosso",
            "rossa",
            "verde",
            "azzurro",
            "nero",
            "nera",
            "bianco",
            "bianca",
        ]
    ),
    "Dutch": frozenset(
        [
            "een",
            "het",
            "de",
            "en",
            "met",
            "zonder",
            "voor",
            "is",
            "erg",
            "ik",
            "wil",
            "zoek",
            "maar",
            "groot",
            "grote",
            "klein",
            "kleine",
            "rood",
            "rode",
            "groen",
            "groene",
            "blauw",
            "blauwe",
            "zwart",
            "zwarte",
            "wit",
            "witte",
        ]
    ),
    "Portuguese": frozenset(
        [
            "um",
            "uma",
            "os",
            "as",
            "do",
            "da",
            "dos",
            "das",
            "com",
            "sem",
            "para",
            "é",
            "muito",
            "quero",
            "procuro",
            "mas",
            "grande",
            "pequeno",
            "pequena",
            "vermelho",
            "vermelha",
            "verde",
            "azul",
            "preto",
            "preta",
            "branco",
            "branca",
        ]
    ),
}
_ENGLISH = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "with",
        "without",
        "for",
        "is",
        "are",
        "it",
        "its",
        "this",
        "that",
        "one",
        "some",
        "i",
        "want",
        "looking",
        "something",
        "very",
        "not",
        "no",
        "but",
        "in",
        "on",
        "to",
        "like",
        "has",
        "have",
    ]
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def detect(text: str) -> str | None:
    """The language a message is written in when it is clearly not English, else None."""
    tokens = [w.lower() for w in _WORD.findall(text)]
    if not tokens:
        return None
    letters = [c for c in text if c.isalpha()]
    if sum(not _latin(c) for c in letters) > len(letters) / 2:
        return "a language other than English"  # another script (Cyrillic, CJK, Arabic...)
    english = sum(w in _ENGLISH for w in tokens)
    scores = {
        lang: sum(w in m and w not in _ENGLISH for w in tokens) for lang, m in _MARKERS.items()
    }
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] and scores[best] > english:
        return best
    return None


def _latin(char: str) -> bool:
    return char.isascii() or "\u00c0" <= char <= "\u024f"
