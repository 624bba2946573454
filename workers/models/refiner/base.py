"""What every refiner shares: the refine/ask logic around a backend's raw answer, and the
fallbacks that keep a turn going when the backend cannot answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..config import TokenBudgets, model_settings
from ..llm_output import fallback_refinement, parse_question, parse_refinement
from ..protocols import Dialogue, Refinement, Refiner

log = logging.getLogger(__name__)


class RefinerUnavailable(RuntimeError):
    """The LLM backend cannot answer (server down, timeout, HTTP error, malformed envelope)."""


class ChatRefiner:
    """Shared refine/ask logic; subclasses implement ``_refine_raw`` and ``_ask_raw``.

    ``budgets`` are the token budgets of the answers' fields, read at call time (tests shorten
    them on a loaded refiner).
    """

    name: str
    translates: bool = False
    budgets: TokenBudgets

    def __init__(self, budgets: TokenBudgets | None = None) -> None:
        # None: this process's DAR_LLM_*_TOKENS.
        self.budgets = budgets or model_settings().llm_tokens

    def _refine_raw(self, dialogue: Dialogue, k: int) -> str:
        raise NotImplementedError

    def _ask_raw(self, dialogue: Dialogue, candidates: Sequence[str]) -> str:
        raise NotImplementedError

    def refine(self, dialogue: Dialogue, k: int) -> Refinement:
        result = parse_refinement(self._refine_raw(dialogue, k), k, dialogue)
        if result.fallback:
            log.info("refiner %s gave an unusable answer, using the dialogue text", self.name)
        return result

    def ask(self, dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
        return parse_question(self._ask_raw(dialogue, candidates))


def refine_or_fallback(refiner: Refiner, dialogue: Dialogue, k: int) -> Refinement:
    """``refiner.refine`` or, when the backend is down, the plain dialogue text."""
    try:
        return refiner.refine(dialogue, k)
    except RefinerUnavailable as err:
        log.warning("refiner unavailable, using the dialogue text: %s", err)
        return fallback_refinement(dialogue, k)


def ask_or_none(refiner: Refiner, dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
    """``refiner.ask`` or None (no question this turn) when the backend is down."""
    try:
        return refiner.ask(dialogue, candidates)
    except RefinerUnavailable as err:
        log.warning("refiner unavailable, asking no question: %s", err)
        return None
