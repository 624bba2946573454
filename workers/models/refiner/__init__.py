"""Dialogue refiners: a local transformers chat model or an OpenAI-compatible HTTP server.

Both ask the same prompts (``prompts``) and share the lenient parser (``llm_output``). Decoding is
greedy so a dialogue always gets the same refinement. A remote server that cannot be reached
raises ``RefinerUnavailable``; ``refine_or_fallback``/``ask_or_none`` turn that into the ChatIR
baseline (the plain dialogue text) so a turn never fails because of the LLM.

One module per part: ``base`` (the shared refine/ask logic, ``RefinerUnavailable`` and the
fallbacks), ``local`` (``HFChatRefiner`` and its batch decoding) and ``openai`` (the HTTP
client). Their settings (token budgets, ``DAR_LLM_*``) come from ``config.model_settings()`` when
a refiner is built, never at import; importing this package imports no ML library.
"""

from __future__ import annotations

from ..config import TokenBudgets
from .base import ChatRefiner, RefinerUnavailable, ask_or_none, refine_or_fallback
from .local import REPETITION_PENALTY, HFChatRefiner, bucket, decoding_config
from .openai import OpenAIChatRefiner

__all__ = [
    "REPETITION_PENALTY",
    "ChatRefiner",
    "HFChatRefiner",
    "OpenAIChatRefiner",
    "RefinerUnavailable",
    "TokenBudgets",
    "ask_or_none",
    "bucket",
    "decoding_config",
    "refine_or_fallback",
]
