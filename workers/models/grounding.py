"""Keeping the LLM's description grounded in the dialogue, and the fallback when it is not.

A refinement is one short sentence of the visual facts the shopper gave (as in DAR's and PlugIR's
reformulations). ``review`` checks the LLM's description against the dialogue's understanding
(``conversation``):

- too long (more than ``MAX_WORDS`` words, or several sentences): the first sentence is kept when
  that one passes, else the grounded fallback;
- invents content (content words with no support in the dialogue): up to ``MAX_REPAIRS`` such
  words are removed (repaired), more means the fallback;
- drops the latest message (none of its content words), or keeps what the shopper negated or
  replaced: the fallback.

The grounded fallback is the understanding itself, in the shopper's own words. ``GroundedRefiner``
is the no-LLM refiner built on it (``manage.py evaluate_dialogues --compare none``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .conversation import STOPWORDS, Understanding, content_words, stem, understand, words
from .llm_output import DESCRIPTION_MAX_CHARS, PROMPT_MAX_CHARS, cap_text
from .protocols import Dialogue, Refinement

log = logging.getLogger(__name__)

MAX_WORDS = 24
# An article left without its noun once an invented word is removed.
_BROKEN = re.compile(r"\b(?:a|an|the)\s+(?:that|of|which|with|and|but|is|are|[,.;:!?]|$)", re.I)
MAX_REPAIRS = 2
# Words a description of a product photo may use without the shopper having said them.
GENERIC = frozenset(
    [
        "photo",
        "photograph",
        "image",
        "picture",
        "product",
        "item",
        "shown",
        "showing",
        "shows",
        "depicted",
        "depicting",
        "view",
        "background",
        "plain",
        "simple",
        "style",
        "design",
        "colour",
        "color",
        "coloured",
        "colored",
        "object",
        "figure",
        "icon",
        "emoji",
        "illustration",
        "cartoon",
        "drawing",
    ]
)


@dataclass(frozen=True)
class Verdict:
    description: str
    status: str  # "ok", "repaired" or "fallback"
    reason: str = ""


def _stems(ws: Sequence[str]) -> set[str]:
    return {stem(w) for w in ws}


def dialogue_support(dialogue: Dialogue) -> set[str]:
    """Stems of every content word the shopper wrote."""
    return _stems(content_words(" ".join([dialogue.caption, *dialogue.rounds])))


def _removed(dialogue: Dialogue, understood: Understanding) -> set[str]:
    """Stems the shopper negated or replaced: a description must not bring them back."""
    kept = _stems(content_words(understood.description()))
    return (dialogue_support(dialogue) - kept) | _stems(understood.excluded)


def _invented(text: str, support: set[str]) -> list[str]:
    return [w for w in content_words(text) if stem(w) not in support and w not in GENERIC]


def _without(text: str, remove: set[str]) -> str:
    pieces = [p for p in re.split(r"(\s+)", text) if p.strip(" ,.;:!?").lower() not in remove]
    out = re.sub(r"\s+", " ", "".join(pieces))
    out = re.sub(r"\s+([,.;:!?])", r"\1", out)
    out = re.sub(r"([,;:])\s*([,;:.])", r"\2", out).strip(" ,;:-")
    # A dangling function word at the end ("a heart with a") reads as a cut sentence.
    tail = words(out)
    while tail and tail[-1] in STOPWORDS:
        out = out[: out.lower().rfind(tail[-1])].rstrip(" ,;:-")
        tail = words(out)
    return out


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(?:\s|$)", text.strip())
    return match.group(1) if match else text


def review(description: str, dialogue: Dialogue) -> Verdict:
    """The description to use and how it was obtained (see the module docstring)."""
    understood = understand(dialogue)
    grounded = fallback_description(understood)
    text = re.sub(r"\s+", " ", description or "").strip()
    if not text:
        return Verdict(grounded, "fallback", "empty")
    status = "ok"
    reasons = []
    if len(words(text)) > MAX_WORDS or len(re.findall(r"[.!?](?:\s|$)", text)) > 1:
        text = _first_sentence(text)
        status, reasons = "repaired", ["too long: first sentence kept"]
        if len(words(text)) > MAX_WORDS:
            return Verdict(grounded, "fallback", "too long")
    brought_back = _stems(content_words(text)) & _removed(dialogue, understood)
    if brought_back:
        return Verdict(
            grounded, "fallback", f"keeps what the shopper removed: {sorted(brought_back)}"
        )
    support = dialogue_support(dialogue) - _removed(dialogue, understood)
    support |= _stems(content_words(understood.description()))
    invented = _invented(text, support)
    if invented:
        if len(set(invented)) > MAX_REPAIRS:
            return Verdict(grounded, "fallback", f"invented: {', '.join(sorted(set(invented)))}")
        text = _without(text, set(invented))
        if _BROKEN.search(text):
            # The invented word was the thing itself ("A [bird] that flies"): nothing to keep.
            return Verdict(grounded, "fallback", f"invented: {', '.join(sorted(set(invented)))}")
        status = "repaired"
        reasons.append(f"removed invented: {', '.join(sorted(set(invented)))}")
    stems = _stems(content_words(text))
    if not stems:
        return Verdict(grounded, "fallback", "nothing left")
    latest = understood.latest
    wanted = _stems(content_words(latest.text)) if latest is not None else set()
    if wanted and not stems & wanted:
        return Verdict(grounded, "fallback", "drops the latest message")
    return Verdict(text, status, "; ".join(reasons))


def fallback_description(understood: Understanding) -> str:
    text = understood.description()
    if not text:
        return ""
    return cap_text(text[:1].upper() + text[1:], DESCRIPTION_MAX_CHARS)


def grounded_refinement(dialogue: Dialogue, k: int, reason: str = "") -> Refinement:
    """The fallback: the dialogue's understanding as description and as every prompt."""
    text = fallback_description(understand(dialogue)) or dialogue.as_text()
    return Refinement(
        description=text,
        prompts=[cap_text(text, PROMPT_MAX_CHARS)] * k,
        fallback=True,
        note=reason,
    )


def apply(refinement: Refinement, dialogue: Dialogue, k: int, *, source: str = "") -> Refinement:
    """The refinement after ``review``: kept, repaired, or replaced by the grounded fallback."""
    if refinement.fallback:
        return grounded_refinement(dialogue, k, refinement.note or "unusable answer")
    verdict = review(refinement.description, dialogue)
    if verdict.status == "fallback":
        log.info(
            "refiner %s: description %r replaced by the grounded fallback (%s)",
            source,
            refinement.description,
            verdict.reason,
        )
        return grounded_refinement(dialogue, k, verdict.reason)
    if verdict.status == "repaired":
        log.info("refiner %s: description repaired (%s)", source, verdict.reason)
    prompts = [p for p in refinement.prompts if not _invented_prompt(p, dialogue)]
    prompts += [cap_text(verdict.description, PROMPT_MAX_CHARS)] * (k - len(prompts))
    return Refinement(
        description=verdict.description,
        prompts=prompts[:k],
        fallback=False,
        note=verdict.reason,
    )


def usable(refinement: Refinement, dialogue: Dialogue, k: int) -> Refinement:
    """The last clean-up of any refinement, the live turn's and the evaluation's alike: the
    dialogue text when the description is empty, and exactly ``k`` prompts (the LLM may give
    fewer: the ones it gave are cycled)."""
    description = refinement.description.strip() or dialogue.as_text()
    prompts = [p for p in refinement.prompts if p.strip()] or [description]
    return Refinement(
        description=description,
        prompts=[prompts[i % len(prompts)] for i in range(k)],
        fallback=refinement.fallback,
        note=refinement.note,
    )


def _invented_prompt(prompt: str, dialogue: Dialogue) -> bool:
    """An image prompt may add views and backgrounds, not a different product: it must share a
    content word with the understanding and bring back nothing the shopper removed."""
    understood = understand(dialogue)
    stems = _stems(content_words(prompt))
    wanted = _stems(content_words(understood.description()))
    return not (stems & wanted) or bool(stems & _removed(dialogue, understood))


class GroundedRefiner:
    """No LLM: the grounded description of the dialogue, and no question (the benchmark's
    ``none`` variant, and what a deployment without an LLM could run)."""

    name = "grounded"
    translates = False

    def refine(self, dialogue: Dialogue, k: int) -> Refinement:
        return grounded_refinement(dialogue, k, "no LLM")

    def ask(self, dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
        from .questions import question_about

        return question_about(dialogue, candidates)
