"""Clarifying questions that help: about what tells the top candidates apart.

PlugIR asks about the differences between clusters of the current candidates. Here the
candidates' titles are grouped by the words that some of them have and others lack (their
distinguishing terms); a term the dialogue already settled, or that an earlier question already
asked about, is not asked again. ``review`` keeps the LLM's question only when it is neither a
repeat nor already answered, and asks the candidates' difference instead otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from .conversation import content_words, stem
from .protocols import Dialogue

# Words of a question that say nothing about the product.
_QUESTION_WORDS = frozenset(
    [
        "what",
        "which",
        "how",
        "does",
        "do",
        "is",
        "are",
        "it",
        "its",
        "you",
        "would",
        "like",
        "prefer",
        "want",
        "looking",
        "kind",
        "type",
        "sort",
        "any",
        "should",
        "could",
        "there",
        "have",
        "has",
        "one",
        "ones",
        "color",
        "colour",
        "style",
        "shape",
        "size",
        "look",
        "looks",
        # Asking for a taste names no product word: "What's your favorite color?" after "a green
        # frog" asks nothing the candidates differ in (seen on the demo).
        "what's",
        "favorite",
        "favourite",
        "particular",
        "exactly",
    ]
)
MAX_TERMS = 3


def _stems(text: str) -> set[str]:
    return {stem(w) for w in content_words(text)}


def said(dialogue: Dialogue) -> set[str]:
    return _stems(" ".join([dialogue.caption, *dialogue.rounds]))


def asked_about(dialogue: Dialogue) -> set[str]:
    return set().union(*(_stems(q) for q in dialogue.questions)) if dialogue.questions else set()


def distinguishing_terms(dialogue: Dialogue, candidates: Sequence[str]) -> list[str]:
    """Words that split the candidates (in some titles, not all), most even split first,
    leaving out what the dialogue said and what was asked before."""
    titles = [c for c in candidates if c.strip()]
    if len(titles) < 2:
        return []
    known = said(dialogue) | asked_about(dialogue)
    counts: dict[str, tuple[int, str]] = {}
    for title in titles:
        for word in dict.fromkeys(content_words(title)):
            key = stem(word)
            if key in known or word in _QUESTION_WORDS:
                continue
            n, first = counts.get(key, (0, word))
            counts[key] = (n + 1, first)
    half = len(titles) / 2
    splitting = [(abs(n - half), first) for n, first in counts.values() if 0 < n < len(titles)]
    splitting.sort(key=lambda pair: pair[0])
    return [word for _, word in splitting[:MAX_TERMS]]


def question_about(dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
    """A question about the candidates' difference, or None when nothing is left to ask."""
    terms = distinguishing_terms(dialogue, candidates)
    if len(terms) >= 2:
        return f"Should it be {', '.join(terms[:-1])} or {terms[-1]}?"
    if terms:
        return f"Should it be {terms[0]}?"
    return None


def is_repeat(question: str, dialogue: Dialogue) -> bool:
    mine = _stems(question) - _QUESTION_WORDS
    for earlier in dialogue.questions:
        theirs = _stems(earlier) - _QUESTION_WORDS
        if question.strip().lower() == earlier.strip().lower():
            return True
        if mine and theirs and len(mine & theirs) / len(mine | theirs) >= 0.5:
            return True
    return False


def is_answered(question: str, dialogue: Dialogue) -> bool:
    """Every product word of the question is something the shopper already said."""
    mine = {stem(w) for w in content_words(question) if w not in _QUESTION_WORDS}
    return not mine or mine <= said(dialogue)


def review(question: str | None, dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
    """The question to ask: the LLM's when it helps, else one about the candidates' difference;
    never a repeat of an earlier one."""
    if question and not is_repeat(question, dialogue) and not is_answered(question, dialogue):
        return question
    fallback = question_about(dialogue, candidates)
    if fallback and not is_repeat(fallback, dialogue):
        return fallback
    return None
